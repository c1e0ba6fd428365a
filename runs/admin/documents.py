"""Start forms filled in from an earlier run keep its documents out of the JSON text area.

A document (a PDF as base64, say) is thousands of lines of noise in a text area, and easy to break. So when a
start form ("Start a run", a flow's "Run now") is filled in from an earlier run, the documents are taken out of
the JSON and listed under it instead: "PDF, 37 KB (document → pdf_base64) — download", each with a tick box,
ticked. A ticked document is put back at its place when the run starts, read again from the earlier run (the
form carries only that run's id); an unticked one is left out; a file chosen in the form's upload field
replaces them. Nothing large goes through the browser twice.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html

from agentrunner.adminkit import team_ids_for
from runs.admin.values import documents_in, place_label, put_at, value_at, value_url, without_documents
from runs.models import Run

KEEP_HELP = (
    "To keep the text above readable, these documents of the run it was filled in from are not shown in it. "
    "Ticked ones go back to their place when the run starts; untick one to leave it out, or choose a file "
    "below to use another document instead."
)


def visible_run(request, run_id) -> Run | None:
    """The run `run_id` if the user may see it (staff of its team, as its run page); None otherwise, if it is
    another team's or if there is none."""
    user = request.user
    if not run_id or not (user.is_active and (user.is_superuser or user.is_staff)):
        return None
    runs = Run.objects.only("pk", "agent_type", "input", "user_id", "flow_version", "created_at", "team")
    ids = team_ids_for(request)
    if ids is not None:
        runs = runs.filter(team__in=ids)
    try:
        return runs.get(pk=run_id)
    except (Run.DoesNotExist, ValidationError, ValueError):  # no such run, or not a run id
        return None


class KeptDocumentsForm(forms.Form):
    """A start form that can be filled in from an earlier run (`source`): its input without documents goes in
    the `input` text area, its documents are the `keep` choices. Subclasses call `input_with_documents`."""

    from_run = forms.UUIDField(required=False, widget=forms.HiddenInput)
    keep = forms.MultipleChoiceField(
        label="Documents", required=False, widget=forms.CheckboxSelectMultiple, help_text=KEEP_HELP
    )

    def __init__(self, *args, source: Run | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.source = source
        self.source_documents = documents_in(source.input) if source is not None else []
        if not self.source_documents:
            del self.fields["keep"]
            return
        url = reverse("admin:runs_run_value", args=[source.pk])
        self.fields["keep"].choices = [
            (
                at,
                format_html(
                    '{} <span style="color:var(--body-quiet-color)">(at {})</span> — <a href="{}">download</a>',
                    document.description,
                    place_label(at),
                    value_url(url, of="input", at=at),
                ),
            )
            for at, document in self.source_documents
        ]
        self.fields["keep"].label = f"Documents of run {str(source.pk)[:8]}"
        if not self.is_bound:
            self.initial["from_run"] = source.pk
            self.initial["keep"] = [at for at, _ in self.source_documents]

    @staticmethod
    def initial_input(source: Run) -> dict:
        """What the input text area starts with: the earlier run's input without its documents."""
        rest, _ = without_documents(source.input if isinstance(source.input, dict) else {})
        return rest

    def input_with_documents(self, data: dict, *, replaced_at: str | None = None) -> dict:
        """`data` (the text area's object) with the ticked documents put back, but those at or under
        `replaced_at` (a JSON pointer; "" for the whole input), where a chosen file goes instead. A place that
        cannot take its document back is an error at "keep"."""
        kept = set(self.cleaned_data.get("keep") or ())
        for at, _ in self.source_documents:
            if at not in kept or (replaced_at is not None and (at + "/").startswith(replaced_at + "/")):
                continue
            try:
                put_at(data, at, value_at(self.source.input, at))
            except KeyError:
                self.add_error(
                    "keep",
                    f"The document at {place_label(at)} has no place to go back to in the input above: "
                    "untick it, or put its place back.",
                )
        return data
