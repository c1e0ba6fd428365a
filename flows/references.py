"""References and templates in task inputs: `{{ input.document }}`, `{{ steps.extract.output.fields[0] }}`.

A reference is a dotted path, never evaluated code:

    reference := root segment*
    root      := "input" | "steps" task ("output" | "status")
    task      := "." name | "[" quoted "]"
    segment   := "." (name | digits) | "[" digits "]" | "[" quoted "]"

`name` is letters, digits, `_` and `-` (not starting with a digit or `-`); `quoted` is a JSON string
or a single-quoted one, for keys and task names that are not names (`steps['manual review'].output`).
A digit segment indexes a list, or is a key on an object. `status` takes no further segments.

A string that is exactly one template (`"{{ input.amount }}"`) is replaced by the referenced value,
whatever its type; templates inside other text are interpolated as text (strings as they are, anything
else JSON-encoded). Objects and lists are walked recursively; object keys are never templates.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

INPUT = "input"
STEPS = "steps"
STEP_FIELDS = ("output", "status")

Segment = str | int  # str: a key (or a dotted digit string, an index on lists); int: a bracketed index
Location = tuple[str | int, ...]  # where a value sits inside a task's input

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_DOT_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*|[0-9]+)")
_INDEX = re.compile(r"\[\s*([0-9]+)\s*\]")
_QUOTED = re.compile(r"""\[\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*\]""")


class TemplateError(Exception):
    """A template in a task's input is wrong or cannot be filled in."""


class ReferenceSyntaxError(TemplateError, ValueError):
    """A reference is not a valid dotted path."""


class ReferenceNotFound(TemplateError, LookupError):
    """A reference points at something the run does not have."""

    def __init__(self, path: str, ref: str, reason: str = "not found"):
        self.path = path  # where the template sits (e.g. "fields" in a task's input), "" for the whole value
        self.ref = ref
        self.reason = reason
        where = f" (at {path})" if path else ""
        super().__init__(f"Cannot resolve {{{{ {ref} }}}}{where}: {reason}.")


@dataclass(frozen=True)
class Reference:
    text: str  # as written, without the braces
    root: str  # INPUT or STEPS
    task: str | None = None  # for STEPS
    field: str | None = None  # "output" or "status", for STEPS
    segments: tuple[Segment, ...] = ()  # after `input` or after `steps.<task>.output`


def parse_reference(text: str) -> Reference:
    """Parse `input.a.b[0]` or `steps.<task>.output...` / `steps.<task>.status`; raise ReferenceSyntaxError."""
    text = text.strip()
    if not text:
        raise ReferenceSyntaxError("empty reference: write {{ input.<field> }} or {{ steps.<task>.output }}")
    root_match = _NAME.match(text)
    root = root_match.group() if root_match else ""
    if root not in (INPUT, STEPS):
        raise ReferenceSyntaxError(
            f"reference {text!r} must start with 'input' or 'steps.<task>' (found {root or text[:1]!r})"
        )
    segments = _parse_segments(text, root_match.end())
    if root == INPUT:
        return Reference(text=text, root=INPUT, segments=segments)
    if not segments:
        raise ReferenceSyntaxError(f"reference {text!r} must name a task: steps.<task>.output")
    task = str(segments[0])
    if len(segments) < 2 or segments[1] not in STEP_FIELDS:
        raise ReferenceSyntaxError(f"reference {text!r} must continue with .output or .status after steps.{task}")
    field = str(segments[1])
    if field == "status" and len(segments) > 2:
        raise ReferenceSyntaxError(f"reference {text!r}: status is a string and takes no further path")
    return Reference(text=text, root=STEPS, task=task, field=field, segments=segments[2:])


def _parse_segments(text: str, position: int) -> tuple[Segment, ...]:
    segments: list[Segment] = []
    while position < len(text):
        if match := _DOT_SEGMENT.match(text, position):
            segments.append(match.group(1))
        elif match := _INDEX.match(text, position):
            segments.append(int(match.group(1)))
        elif match := _QUOTED.match(text, position):
            segments.append(_unquote(match.group(1)))
        else:
            raise ReferenceSyntaxError(
                f"reference {text!r} is not a dotted path: unexpected {text[position:]!r} "
                "(use .name, .0, [0] or ['any key'])"
            )
        position = match.end()
    return tuple(segments)


def _unquote(quoted: str) -> str:
    if quoted.startswith('"'):
        try:
            return json.loads(quoted)
        except json.JSONDecodeError as exc:
            raise ReferenceSyntaxError(f"bad escape in {quoted}: {exc.msg}")
    return re.sub(r"\\(.)", r"\1", quoted[1:-1])


def parse_template(value: str) -> Reference | list[str | Reference] | None:
    """Return None for plain text, a Reference for an exact `{{ ref }}`, else text and references in order."""
    if "{{" not in value:
        return None
    parts: list[str | Reference] = []
    position = 0
    for match in _TEMPLATE.finditer(value):
        if match.start() > position:
            parts.append(value[position : match.start()])
        parts.append(parse_reference(match.group(1)))
        position = match.end()
    rest = value[position:]
    if "{{" in rest:
        raise ReferenceSyntaxError(f"unclosed '{{{{' in {value!r}: a reference is written {{{{ input.<field> }}}}")
    if rest:
        parts.append(rest)
    if len(parts) == 1 and isinstance(parts[0], Reference):
        return parts[0]
    return parts


def iter_templates(value: Any, location: Location = ()) -> Iterator[tuple[Location, str]]:
    """Yield (location, string) for every string containing `{{`, walking objects and lists."""
    if isinstance(value, str):
        if "{{" in value:
            yield location, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_templates(item, (*location, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iter_templates(item, (*location, index))


def references_in(text: str) -> list[Reference]:
    """Return the references in one string (raise ReferenceSyntaxError)."""
    parsed = parse_template(text)
    if parsed is None:
        return []
    if isinstance(parsed, Reference):
        return [parsed]
    return [part for part in parsed if isinstance(part, Reference)]


def format_location(location: Location, prefix: str = "") -> str:
    """Render ("items", 0, "name") as "items[0].name", after `prefix` if given."""
    text = prefix
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def lookup(ref: Reference, *, run_input: Any, steps: dict, path: str = "") -> Any:
    """Return the value `ref` points at; raise ReferenceNotFound saying which part is missing."""
    if ref.root == INPUT:
        value, walked = run_input, INPUT
    else:
        step = steps.get(ref.task)
        if not isinstance(step, dict):
            raise ReferenceNotFound(path, ref.text, f"task {ref.task!r} has not run yet")
        if ref.field not in step:
            raise ReferenceNotFound(path, ref.text, f"task {ref.task!r} has no {ref.field}")
        value, walked = step[ref.field], f"steps.{ref.task}.{ref.field}"
    for segment in ref.segments:
        value = _step_into(value, segment, walked=walked, ref=ref, path=path)
        walked += f"[{segment}]" if isinstance(segment, int) else f".{segment}"
    return value


def _step_into(value: Any, segment: Segment, *, walked: str, ref: Reference, path: str) -> Any:
    if isinstance(value, dict):
        key = str(segment)
        if key not in value:
            raise ReferenceNotFound(path, ref.text, f"{walked} has no key {key!r}")
        return value[key]
    if isinstance(value, list):
        if isinstance(segment, str) and not segment.isdigit():
            raise ReferenceNotFound(path, ref.text, f"{walked} is a list, not an object (no key {segment!r})")
        index = int(segment)
        if index >= len(value):
            raise ReferenceNotFound(path, ref.text, f"{walked} has {len(value)} items, no index {index}")
        return value[index]
    raise ReferenceNotFound(path, ref.text, f"{walked} is {json_kind(value)}, not an object or list")


def json_kind(value: Any) -> str:
    """How a JSON value is named in messages: "null", "a number", "a list", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def as_text(value: Any) -> str:
    """Render a value for interpolation into text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def resolve(template: Any, *, run_input: Any, steps: dict, location: Location = ()) -> Any:
    """Return a copy of `template` with every reference replaced by its value."""
    if isinstance(template, dict):
        return {
            key: resolve(item, run_input=run_input, steps=steps, location=(*location, key))
            for key, item in template.items()
        }
    if isinstance(template, list):
        return [
            resolve(item, run_input=run_input, steps=steps, location=(*location, index))
            for index, item in enumerate(template)
        ]
    if not isinstance(template, str):
        return template
    parsed = parse_template(template)
    if parsed is None:
        return template
    path = format_location(location)
    if isinstance(parsed, Reference):
        # A copy: the step's input must not share objects with the run input or another step's output.
        return copy.deepcopy(lookup(parsed, run_input=run_input, steps=steps, path=path))
    return "".join(
        part if isinstance(part, str) else as_text(lookup(part, run_input=run_input, steps=steps, path=path))
        for part in parsed
    )
