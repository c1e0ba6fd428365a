"""Secrets out of provider errors: a provider or proxy may echo our request, credentials included.

An error text from a provider ends up in a run's `error` (which its owner reads), in the LLMCall rows and
in the logs; `redact` is applied where the gateway turns a provider's error into its own
(`providers.call`), so none of them ever holds the operator's key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.conf import settings

REDACTED = "[redacted]"
# Settings whose values are credentials of a provider.
SECRET_SETTINGS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LOCAL_LLM_API_KEY")
# A configured value shorter than this is a placeholder (LOCAL_LLM_API_KEY's default is "local"), not a
# key: replacing it would garble ordinary words in the message and hide nothing.
MIN_SECRET_CHARS = 8

# A credential header written out, as a proxy echoes it: `Authorization: Bearer …`, `x-api-key=…`,
# `'api-key': '…'` (a dict of headers). The name and scheme stay, to keep the message readable. The
# scheme is possessive (`?+`) and a value already redacted is left alone: "Bearer [redacted]" must not
# become "[redacted] [redacted]".
_HEADER = re.compile(
    r"""(?ix)
    (?P<name>\b(?:proxy-)?authorization|\bx-api-key|\bapi[-_]key)
    (?P<separator>["']?\s*[:=]\s*["']?)
    (?:(?P<scheme>bearer|basic|token)\s+)?+
    (?!\[redacted\])[^\s"',;}\]]+
    """
)
# 8+ characters: a token, not prose ("Bearer auth").
_BEARER = re.compile(r"(?i)\b(bearer)\s+[\w.~+/=-]{8,}")
_KEY_SHAPE = re.compile(r"\bsk-[\w-]{8,}")  # OpenAI (sk-…, sk-proj-…) and Anthropic (sk-ant-…) keys
_URL_PASSWORD = re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@")  # user:password@ in a base URL


def redact(text: str, *, secrets: Iterable[str] = ()) -> str:
    """Return `text` with the configured secrets, `secrets` and anything shaped like a credential replaced."""
    known = {value for value in (*configured_secrets(), *secrets) if value and len(value) >= MIN_SECRET_CHARS}
    for secret in sorted(known, key=len, reverse=True):  # a key that contains another goes first
        text = text.replace(secret, REDACTED)
    text = _HEADER.sub(_redacted_header, text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    text = _KEY_SHAPE.sub(REDACTED, text)
    return _URL_PASSWORD.sub(f"{REDACTED}@", text)


def configured_secrets() -> list[str]:
    """Every provider credential in the settings (read now), configured provider or not."""
    return [str(getattr(settings, name, "") or "") for name in SECRET_SETTINGS]


def _redacted_header(match: re.Match) -> str:
    scheme = f"{match['scheme']} " if match["scheme"] else ""
    return f"{match['name']}{match['separator']}{scheme}{REDACTED}"
