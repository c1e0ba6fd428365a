"""The admin's "Start a run" page: pick an agent, give its input (JSON or a document), start.

`?from=<run id>` fills the form in from an earlier run of an agent ("Re-run with changes" on a run page); its
documents stay out of the text area (runs.admin.documents). The run goes into a team where the user is at least
a runner: a "Team" choice when there are several, none when there is one."""

from __future__ import annotations

import json

from django import forms
from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from agentrunner.adminkit import JSONObjectFormField, teams_where
from agentrunner.agents import InvalidAgentInput, all_agents
from agentrunner.agents.builtin.document_extractor import input_from_upload
from agentrunner.errors import ServiceError
from agentrunner.logging import current_request_id
from agentrunner.models import Role, Team
from agentrunner.ratelimit import refusal_message, run_start_acquire
from runs import services
from runs.admin.display import run_link
from runs.admin.documents import KeptDocumentsForm, visible_run

MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class RunStartForm(KeptDocumentsForm):
    team = forms.ModelChoiceField(
        label="Team",
        queryset=Team.objects.none(),
        empty_label=None,
        help_text="The team the run belongs to: its members see it, and it counts against its limits.",
    )
    agent_type = forms.ChoiceField(label="Agent", help_text="What should run.")
    input = JSONObjectFormField(
        label="Input (JSON)",
        initial=dict,
        example='{"seconds": 5}',
        help_text='An object matching the agent\'s input schema (shown below), e.g. {"seconds": 5} for wait.',
    )
    document = forms.FileField(
        label="Document",
        required=False,
        help_text="For document-extractor: a PDF or text file instead of typing its text into the input.",
    )
    user_id = forms.UUIDField(
        label="User id", required=False, help_text="Optional: the end user this run is for (a UUID)."
    )

    field_order = ["team", "agent_type", "input", "keep", "document", "user_id", "from_run"]

    def __init__(self, *args, teams, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agent_type"].choices = [(name, name) for name in all_agents()]
        teams = list(teams)
        self.only_team = teams[0] if len(teams) == 1 else None
        if self.only_team is not None:
            del self.fields["team"]  # nothing to choose
        else:
            self.fields["team"].queryset = Team.objects.filter(pk__in=[team.pk for team in teams])

    def chosen_team(self) -> Team:
        return self.only_team or self.cleaned_data["team"]

    def clean_document(self):
        upload = self.cleaned_data["document"]
        if upload is not None and upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The document is too large (at most {MAX_UPLOAD_BYTES // 2**20} MB).")
        return upload

    def agent_input(self) -> dict:
        upload = self.cleaned_data.get("document")
        # A chosen file replaces the earlier run's documents: the extractor takes one document.
        data = self.input_with_documents(dict(self.cleaned_data["input"]), replaced_at="" if upload else None)
        if upload is not None:
            try:
                data.update(input_from_upload(filename=upload.name, content=upload.read()))
            except ValueError as exc:
                self.add_error("document", str(exc))
        return data


def run_start_view(model_admin: ModelAdmin, request):
    """Show the form; on POST start the run through the service and go to its page."""
    if not model_admin.has_operate_permission(request):
        raise PermissionDenied
    source = visible_run(request, request.POST.get("from_run") if request.method == "POST" else request.GET.get("from"))
    if source is not None and source.flow_version_id:
        source = None  # a flow run starts again from its flow's Run now page
    teams = teams_where(request, Role.RUNNER)
    initial = {key: value for key, value in request.GET.items() if key != "from"}
    if source is not None:
        initial.update(
            agent_type=source.agent_type,
            input=KeptDocumentsForm.initial_input(source),
            user_id=source.user_id,
            team=source.team_id,
        )
    form = RunStartForm(request.POST or None, request.FILES or None, initial=initial, source=source, teams=teams)
    if request.method == "POST" and form.is_valid():
        data = form.agent_input()
        if form.is_valid() and not (decision := run_start_acquire(user=request.user, team=form.chosen_team())).allowed:
            form.add_error(None, refusal_message(decision))
        if form.is_valid():
            try:
                run, _ = services.run_create(
                    agent_type=form.cleaned_data["agent_type"],
                    input=data,
                    user_id=form.cleaned_data["user_id"],
                    created_by=request.user,
                    team=form.chosen_team(),
                    request_id=current_request_id(),
                )
            except InvalidAgentInput as exc:
                for path, errors in exc.errors.items():
                    form.add_error("input", f"{path}: {'; '.join(errors)}")
            except ServiceError as exc:  # e.g. the agent is busy and rejects new runs
                form.add_error(None, str(exc))
            else:
                model_admin.log_addition(request, run, "Started from the admin.")
                model_admin.message_user(request, format_html("Started run {}.", run_link(run.pk)), messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:runs_run_change", args=[run.pk]))
    schemas = {name: json.dumps(cls.input_schema, indent=2) for name, cls in all_agents().items()}
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Start a run",
        "form": form,
        "source": source,
        "schemas": schemas,
        "descriptions": {name: cls.description for name, cls in all_agents().items()},
    }
    return TemplateResponse(request, "admin/runs/run/start.html", context)
