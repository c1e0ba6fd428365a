"""Validators every app shares, in API serializers, admin forms and services: what the database and email accept."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError

# PostgreSQL's `integer` (Django's PositiveIntegerField there): the most a stored count or limit may be.
# SQLite would take more; refusing it on both keeps one behaviour.
INT32_MAX = 2_147_483_647
RETENTION_MAX_DAYS = 36500

# PostgreSQL text and jsonb cannot hold U+0000, and UTF-8 cannot encode a surrogate code point (json.loads
# joins a valid \ud83d\ude00 pair into one character, so any left is unpaired).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# In an email header CR and LF start a new header (Django refuses them at send time, too late); the other
# C0 controls, DEL, the C1 controls (NEL among them) and the Unicode line separators are no better.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def validate_retention_days(value: int | None) -> None:
    """A number of days to keep finished runs: 0 (keep every run), or enough for a weekly digest to read its runs."""
    from django.conf import settings

    if value is None or value == 0:
        return
    if not settings.RUN_RETENTION_MIN_DAYS <= value <= RETENTION_MAX_DAYS:
        raise ValidationError(
            f"Must be 0 (keep every run) or from {settings.RUN_RETENTION_MIN_DAYS} to {RETENTION_MAX_DAYS} days: "
            "a weekly digest reads the runs of its last 7 days.",
            code="retention_days",
        )


def _escaped(text: str) -> str:
    """The text with its unstorable characters written as \\uXXXX, safe to quote in an error message."""
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _describe(char: str) -> str:
    if char == "\x00":
        return "a NUL character (\\u0000)"
    return f"a lone surrogate (\\u{ord(char):04x})"


def _path(node: tuple | None) -> str:
    parts: list[str | int] = []
    while node is not None:
        node, part = node
        parts.append(part)
    out = ""
    for part in reversed(parts):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def validate_storable_json(value: Any) -> None:
    """Refuse JSON with a NUL character or a lone surrogate in any key or string, however deep."""
    # Iterative, as the value may be nested as deep as the JSON parser allows. A path is a linked list
    # (parent, key or index), spelled out only for the error: copying it for every item would cost
    # depth x items.
    pending: list[tuple[Any, tuple | None]] = [(value, None)]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            if found := _UNSTORABLE.search(item):
                _refuse(found.group(), f"the value at {_path(path)}" if path else "the value")
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and (found := _UNSTORABLE.search(key)):
                    _refuse(found.group(), f"the key '{_escaped(key)}'" + (f" at {_path(path)}" if path else ""))
                pending.append((child, (path, _escaped(str(key)))))
        elif isinstance(item, list | tuple):
            pending.extend((child, (path, index)) for index, child in enumerate(item))


def _refuse(char: str, where: str) -> None:
    raise ValidationError(
        f"Contains {_describe(char)} in {where}: text in JSON must not contain NUL characters or unpaired "
        "surrogates (the database cannot store them).",
        code="unstorable_text",
    )


def validate_header_text(value: str) -> None:
    """Refuse text with a control character (CR, LF, tab, …): it goes into an email header."""
    if found := _CONTROL.search(value):
        raise ValidationError(
            f"Must not contain control characters such as line breaks or tabs (found U+{ord(found.group()):04X} "
            f"at position {found.start() + 1}): it goes into an email header.",
            code="control_character",
        )
