"""A real SMTP server on 127.0.0.1 for the tests (aiosmtpd), with switches to fail or hang."""

from __future__ import annotations

import asyncio
import socket
import threading
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """Collects every accepted message; `fail_next` transient failures; `hang` makes DATA never answer."""

    def __init__(self):
        self.messages = []
        self.recipients = []
        self.data_commands = 0
        self.fail_next = 0
        self.fail_reply = "451 4.3.0 Mailbox busy, try again later"
        self.hang = False
        self.hung = threading.Event()
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.data_commands += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_reply
            hang = self.hang
        if hang:
            self.hung.set()
            await asyncio.sleep(3600)  # the sender is killed meanwhile; nothing is accepted
            return "451 4.3.0 too late"
        with self.lock:
            self.messages.append(
                message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
            )
            self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class SMTPServer:
    def __init__(self):
        self.inbox = Inbox()
        self.port = free_port()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SMTPServer:
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop(no_assert=True)

    @property
    def env(self) -> dict:
        """Environment for a worker cluster that mails here."""
        return {"EMAIL_URL": f"smtp://127.0.0.1:{self.port}"}
