"""The run page's downloads: a document in a run's (or a step's) input or output as the file it encodes, a long
text as a text file, anything else as a JSON file. Addressed by run, which value (`of`) and where in it (`at`,
a JSON pointer); opened by whoever may see the run page, and read-only."""

from __future__ import annotations

import json
import re

from django.contrib.admin import ModelAdmin
from django.http import Http404, HttpResponse
from django.utils.http import content_disposition_header

from runs.admin.values import as_document, parent_at, value_at
from runs.admin.viewing import run_for_viewer
from runs.models import Run, Step

STEP_VALUE = re.compile(r"step-(?P<step>\d+)-(?P<part>input|output)")
# A name from the input ("filename") keeps letters, digits and a few signs; the rest becomes "_".
UNSAFE_NAME = re.compile(r"[^\w.\- ()]+")
MAX_NAME_CHARS = 120


def value_of(run: Run, of: str):
    """The run's input or result, or one of its steps' input or output (`step-<id>-input`); Http404 if none."""
    if of == "input":
        return run.input
    if of == "result":
        return run.result
    match = STEP_VALUE.fullmatch(of)
    if match is None:
        raise Http404("No such value.")
    part = match["part"]
    values = Step.objects.filter(run=run, pk=int(match["step"])).values_list(part, flat=True)
    if not values:
        raise Http404("No such step in this run.")
    return values[0]


def _file_name(source, at: str, *, run: Run, of: str, extension: str, document: bool) -> str:
    """A document's name as its input gives it (a "filename" beside it), else run-<short id>-<value>-<key>."""
    parent = parent_at(source, at) if at and document else None
    given = parent.get("filename") if isinstance(parent, dict) else None
    if isinstance(given, str):
        name = UNSAFE_NAME.sub("_", given.replace("\\", "/").rsplit("/", 1)[-1]).strip(" ._")
        if name:
            return name[:MAX_NAME_CHARS]
    stem = f"run-{str(run.pk)[:8]}-{of}" + (f"-{at.rsplit('/', 1)[-1]}" if at else "")
    return UNSAFE_NAME.sub("_", stem)[:MAX_NAME_CHARS] + extension


def run_value_view(model_admin: ModelAdmin, request, object_id):
    """The value at `at` in the run's `of` (query parameters) as a file to save."""
    run = run_for_viewer(model_admin, request, object_id)
    if run is None:
        raise Http404("No such run.")
    of, at = request.GET.get("of", "input"), request.GET.get("at", "")
    source = value_of(run, of)
    try:
        value = value_at(source, at)
    except (KeyError, TypeError):
        raise Http404("Nothing at that place in the value.") from None
    key = at.rsplit("/", 1)[-1] if at else None
    document = as_document(value, key=key)
    if document is not None:
        content, media_type, extension = document.content(), document.media_type, document.extension
    elif isinstance(value, str):
        content, media_type, extension = value.encode(), "text/plain; charset=utf-8", ".txt"
    else:
        text = json.dumps(value, indent=2, ensure_ascii=False)
        content, media_type, extension = text.encode(), "application/json", ".json"
    response = HttpResponse(content, content_type=media_type)
    name = _file_name(source, at, run=run, of=of, extension=extension, document=document is not None)
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=name)
    response["X-Content-Type-Options"] = "nosniff"  # never shown in the browser as something else
    return response
