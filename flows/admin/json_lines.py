"""Where a JSON path ("tasks[2].agent") is in a JSON text: its line and column, for the editor to mark.

Paths are those `flows.definition.validate_definition` gives (rendered by `flows.references.format_location`):
a key is ".key" (just "key" at the top), an array element "[2]". Rather than parse a path (a key may hold a dot
or a bracket), the text is walked once and every place in it is named the same way, so a lookup is exact.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re
from dataclasses import dataclass

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# The last step of a path: "[2]" or ".key" (what is left of it is the place that holds it).
_LAST_STEP = re.compile(r"(\[\d+\]|\.[^.\[]*)$")


@dataclass(frozen=True)
class Place:
    line: int  # 1-based, as editors count
    column: int  # 1-based


class JSONPlaces:
    """Every place in a JSON text, by path: a member at its key, an array element at its value."""

    def __init__(self, text: str):
        self.text = text
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.places: dict[str, Place] = {}
        try:
            json.loads(text)
        except (json.JSONDecodeError, TypeError, RecursionError):
            return  # nothing to locate in: the syntax error has its own line
        with contextlib.suppress(RecursionError):  # nested deeper than Python recurses: keep what was found
            self._value(self._skip(0), "")

    def _place(self, index: int) -> Place:
        line = bisect.bisect_right(self._line_starts, index)
        return Place(line=line, column=index - self._line_starts[line - 1] + 1)

    def _skip(self, index: int) -> int:
        return _WHITESPACE.match(self.text, index).end()

    def _value(self, index: int, path: str) -> int:
        """Record the places inside the value at `index` (the text is valid JSON); return where it ends."""
        self.places.setdefault(path, self._place(index))
        char = self.text[index]
        if char == "{":
            index = self._skip(index + 1)
            while self.text[index] != "}":
                key_at = index
                key, index = json.decoder.scanstring(self.text, index + 1)
                member = f"{path}.{key}" if path else key
                self.places[member] = self._place(key_at)  # a repeated key: the last wins, as in json.loads
                index = self._skip(self._skip(index) + 1)  # past the colon
                index = self._skip(self._value(index, member))
                if self.text[index] == ",":
                    index = self._skip(index + 1)
            return index + 1
        if char == "[":
            index = self._skip(index + 1)
            position = 0
            while self.text[index] != "]":
                element = f"{path}[{position}]"
                self.places[element] = self._place(index)
                index = self._skip(self._value(index, element))
                if self.text[index] == ",":
                    index = self._skip(index + 1)
                position += 1
            return index + 1
        _, end = _DECODER.raw_decode(self.text, index)
        return end

    def locate(self, path: str) -> Place | None:
        """The place of `path`, or of the nearest place that holds it (a missing key is marked at its object)."""
        while True:
            if path in self.places:
                return self.places[path]
            if not path:
                return None
            shorter = _LAST_STEP.sub("", path)
            path = "" if shorter == path else shorter
