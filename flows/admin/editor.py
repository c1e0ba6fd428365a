"""The flow form: the definition as pretty-printed JSON in a code editor, every problem listed at its JSON
path and marked at its line.

The editor is CodeMirror 5 (vendored under flows/static/flows/vendor/codemirror, served locally) laid over the
text area by flows/static/flows/definition_editor.js; without it the text area works as it is, and the form
always posts the text area.
"""

from __future__ import annotations

import json
import re

from django import forms
from django.template.loader import render_to_string
from django.urls import reverse

from agentrunner.adminkit import EDITOR_STYLE, PrettyJSONField
from flows.admin.json_lines import JSONPlaces
from flows.definition import ERROR, WARNING, Problem, validate_definition
from flows.models import Flow

CODEMIRROR_VERSION = "5.65.21"  # flows/static/flows/vendor/codemirror/README.md
_CODEMIRROR = "flows/vendor/codemirror/"

# What a new flow's editor starts with: the smallest valid flow, to edit rather than to write from nothing.
STARTER_DEFINITION = {
    "name": "My flow",
    "start_task": "first",
    "tasks": [{"name": "first", "agent": "pass", "input": {"text": "{{ input.text }}"}}],
    "conditions": [],
}


def pretty(definition) -> str:
    return json.dumps(definition, indent=2, ensure_ascii=False)


class DefinitionEditor(forms.Textarea):
    """The text area (a code editor once its script runs), then every problem of the definition at its JSON path
    and line, then a "Check" button (a template)."""

    class Media:
        css = {"all": [_CODEMIRROR + "codemirror.css", _CODEMIRROR + "lint.css", "flows/definition_editor.css"]}
        js = [
            _CODEMIRROR + "codemirror.js",
            _CODEMIRROR + "javascript.js",
            _CODEMIRROR + "lint.js",
            _CODEMIRROR + "matchbrackets.js",
            _CODEMIRROR + "closebrackets.js",
            "flows/definition_editor.js",
        ]

    def __init__(self):
        super().__init__(attrs={"rows": 30, "spellcheck": "false", "style": EDITOR_STYLE, "class": "flow-definition"})
        self.problems: list[Problem] = []
        self.definition = None  # the definition the problems are about, to name the tasks they are in

    def render(self, name, value, attrs=None, renderer=None):
        text = value if isinstance(value, str) else ""
        problems = problem_dicts(self.problems, self.definition, JSONPlaces(text))
        syntax = syntax_problem(text)  # the form's own error says it in words; the editor marks its line
        return render_to_string(
            "admin/flows/includes/definition_editor.html",
            {
                "editor": super().render(name, value, attrs, renderer),
                "problem_groups": problem_groups(problems),
                # The editor marks these at their lines until the text changes (then it asks check_url).
                "problems": [syntax] if syntax else problems,
                "problems_id": f"{(attrs or {}).get('id') or name}-problems",
                "check_url": reverse("admin:flows_flow_check"),
            },
        )


_ITEM_PATH = re.compile(r"(tasks|conditions)\[(\d+)\]")


def item_name(path: str, definition) -> str:
    """ "task 'check'" for "tasks[1].agent": a path's place said with the name people know it by."""
    match = _ITEM_PATH.match(path)
    items = definition.get(match[1]) if match and isinstance(definition, dict) else None
    if not isinstance(items, list) or int(match[2]) >= len(items) or not isinstance(items[int(match[2])], dict):
        return ""
    name = items[int(match[2])].get("name")
    if not isinstance(name, str) or not name.strip():
        return ""
    return f"{'task' if match[1] == 'tasks' else 'condition'} {name!r}"


# Errors first, then warnings, as the check button's script lists them (admin/flows/flow/change_form.html).
PROBLEM_GROUPS = (
    (ERROR, "Errors (the flow cannot be saved until they are fixed)", "#ba2121"),
    (WARNING, "Warnings (the flow can be saved)", "#8a6100"),
)


def problem_dicts(problems: list[Problem], definition, places: JSONPlaces) -> list[dict]:
    """Each problem with the item it is in and its line and column in the text (None where it has none)."""
    found = []
    for problem in problems:
        place = places.locate(problem.path)
        found.append(
            {
                **problem.as_dict(),
                "item": item_name(problem.path, definition),
                "line": place.line if place else None,
                "column": place.column if place else None,
            }
        )
    return found


def problem_groups(problems: list[dict]) -> list[dict]:
    """What admin/flows/includes/problems.html lists: each severity that has problems (problem_dicts)."""
    groups = []
    for severity, title, colour in PROBLEM_GROUPS:
        found = [p for p in problems if p["severity"] == severity]
        if found:
            groups.append({"severity": severity, "title": title, "colour": colour, "problems": found})
    return groups


def syntax_problem(text: str) -> dict | None:
    """The text's JSON syntax error as a problem at its line (None if the text is JSON)."""
    problem = {"path": "", "item": "", "severity": ERROR, "line": None, "column": None}
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return {**problem, "message": f"This is not valid JSON: {exc.msg}.", "line": exc.lineno, "column": exc.colno}
    except RecursionError:
        return {**problem, "message": "This JSON is nested too deeply to read."}
    return None


def definition_text_check(text: str, *, max_steps_limit: int) -> dict:
    """What the editor's check answers for its text: every problem, with its item, line and column."""
    syntax = syntax_problem(text)
    if syntax:
        return {"valid": False, "problems": [syntax]}
    definition = json.loads(text)
    problems = validate_definition(definition, max_steps_limit=max_steps_limit)
    return {
        "valid": not any(p.severity == ERROR for p in problems),
        "problems": problem_dicts(problems, definition, JSONPlaces(text)),
    }


class FlowForm(forms.ModelForm):
    definition = PrettyJSONField(
        widget=DefinitionEditor(),
        help_text=(
            "The flow's tasks and conditions, in JSON. Saving a changed definition creates a new version; "
            "runs that already started keep theirs."
        ),
    )

    class Meta:
        model = Flow
        fields = ["slug", "name", "description", "enabled"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "definition" not in self.initial:
            current = self.instance.current_version if self.instance.pk else None
            self.initial["definition"] = current.definition if current else STARTER_DEFINITION
        if self.instance.pk is None and not self.is_bound:
            self.fields["definition"].widget.problems = []
        elif not self.is_bound:
            # Warnings of the saved definition (e.g. an unreachable task) are shown from the start.
            self.fields["definition"].widget.problems = validate_definition(self.initial["definition"])
            self.fields["definition"].widget.definition = self.initial["definition"]

    def clean(self):
        data = super().clean()
        team, slug = data.get("team"), data.get("slug")
        # Said at the slug, in words; the model's (team, slug) constraint would say it above the form, naming
        # a team field the user may not even see.
        if "team" in self.fields and team and slug and Flow.objects.filter(team=team, slug=slug).exists():
            self.add_error("slug", f"A flow with the slug {slug!r} already exists in this team.")
        return data

    def clean_definition(self):
        definition = self.cleaned_data["definition"]
        problems = validate_definition(definition)
        self.fields["definition"].widget.problems = problems
        self.fields["definition"].widget.definition = definition
        errors = [p for p in problems if p.severity == ERROR]
        if errors:
            raise forms.ValidationError(
                "The definition has %(count)s error(s), listed under the editor with their place in the JSON "
                "(e.g. %(first)s). Nothing was saved.",
                code="invalid_definition",
                params={"count": len(errors), "first": errors[0].path or "the whole definition"},
            )
        return definition
