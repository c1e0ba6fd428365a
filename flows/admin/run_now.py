"""The admin's "Run now" page for a flow: its input (JSON, or a document), then the run starts.

The form is filled in from the flow's latest run, or from the run `?from=<run id>` names ("Re-run with changes"
on a run page); that run's documents stay out of the text area (runs.admin.documents)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from agentrunner.adminkit import JSONObjectFormField
from agentrunner.agents import InvalidAgentInput
from agentrunner.agents.builtin.document_extractor import input_from_upload
from agentrunner.errors import ServiceError
from agentrunner.logging import current_request_id
from agentrunner.ratelimit import refusal_message, run_start_acquire
from flows import selectors
from flows.models import FlowVersion
from flows.references import INPUT, Reference, ReferenceSyntaxError, iter_templates, parse_template, references_in
from runs import services as run_services
from runs.admin.display import flow_graph, run_link
from runs.admin.documents import KeptDocumentsForm, visible_run
from runs.admin.values import pointer
from runs.models import Run

DOCUMENT_AGENT = "document-extractor"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024


def flow_run_view(model_admin: ModelAdmin, request, object_id):
    """Show the form; on POST start a run of the flow's current version through the service and go to its page.

    Starting needs the runner role in the flow's team; the run belongs to that team (flow_run_create)."""
    flow = model_admin.team_object(request, object_id)  # another team's flow is a 404
    if not model_admin.has_run_permission(request, flow):
        raise PermissionDenied
    version = flow.current_version
    document_field = document_input_field(version.definition) if version else None
    latest = _source_run(request, flow)
    skeleton = input_skeleton(version.definition if version else {})
    initial = {"input": KeptDocumentsForm.initial_input(latest) if latest else skeleton}
    form = FlowRunForm(
        request.POST or None, request.FILES or None, initial=initial, document_field=document_field, source=latest
    )
    if request.method == "POST" and form.is_valid():
        run_input = form.run_input()
        if form.is_valid():
            run = _start(request, form, version, run_input)
            if run is not None:
                model_admin.log_addition(request, run, f"Started from the admin: flow {flow.slug} v{version.number}.")
                model_admin.message_user(
                    request,
                    format_html("Started run {} of {} v{}.", run_link(run.pk), flow.slug, version.number),
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:runs_run_change", args=[run.pk]))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "original": flow,
        "title": f"Run {flow}",
        "subtitle": None,
        "flow": flow,
        "version": version,
        "form": form,
        "graph": flow_graph(version.definition) if version else None,
        "input_fields": input_fields(version.definition) if version else [],
        "prefilled_from": latest,
        "prefilled_chosen": latest is not None and str(latest.pk) == request.GET.get("from"),
    }
    return TemplateResponse(request, "admin/flows/flow/run.html", context)


def _source_run(request, flow) -> Run | None:
    """The run the form is filled in from: the one named (`from` in the address, then `from_run` in the form) if
    it is a run of this flow, else on a first visit the flow's latest run."""
    run_id = request.POST.get("from_run") if request.method == "POST" else request.GET.get("from")
    if run_id:
        source = visible_run(request, run_id)
        of_this_flow = FlowVersion.objects.filter(pk=getattr(source, "flow_version_id", None), flow=flow)
        if source is not None and source.flow_version_id and of_this_flow.exists():
            return source
    if request.method == "POST":
        return None
    return selectors.flow_run_latest(flow=flow)


def _start(request, form: FlowRunForm, version: FlowVersion | None, run_input: dict) -> Run | None:
    if version is None:
        form.add_error(None, "This flow has no version to run.")
        return None
    if not (decision := run_start_acquire(user=request.user, team=version.flow.team)).allowed:
        form.add_error(None, refusal_message(decision))
        return None
    try:
        run, _ = run_services.flow_run_create(
            version=version,
            input=run_input,
            user_id=form.cleaned_data["user_id"],
            created_by=request.user,
            request_id=current_request_id(),
        )
    except InvalidAgentInput as exc:
        for where, errors in exc.errors.items():
            prefix = "" if where == "input" else f"{where}: "
            form.add_error("input", prefix + "; ".join(errors))
    except ServiceError as exc:  # the flow is busy (AgentBusy) or disabled (FlowDisabled)
        form.add_error(None, str(exc))
    else:
        return run
    return None


def _input_references(definition) -> list[Reference]:
    """Every `{{ input... }}` reference in the tasks' inputs; a malformed one is skipped (the flow is saved valid)."""
    found = []
    tasks = definition.get("tasks") if isinstance(definition, dict) else None
    for task in tasks if isinstance(tasks, list) else []:
        if not isinstance(task, dict):
            continue
        for _, text in iter_templates(task.get("input")):
            try:
                found += [r for r in references_in(text) if r.root == INPUT]
            except ReferenceSyntaxError:
                continue
    return found


def input_fields(definition) -> list[str]:
    """The run input's top-level fields that the flow's tasks read, in order."""
    names = (str(r.segments[0]) for r in _input_references(definition) if r.segments)
    return list(dict.fromkeys(names))


def input_skeleton(definition) -> dict:
    return {name: "" for name in input_fields(definition)}


def document_input_field(definition) -> str | None:
    """The input field a document-extractor task takes whole (`"input": "{{ input.document }}"`), if any."""
    tasks = definition.get("tasks") if isinstance(definition, dict) else None
    for task in tasks if isinstance(tasks, list) else []:
        if not isinstance(task, dict) or task.get("agent") != DOCUMENT_AGENT or not isinstance(task.get("input"), str):
            continue
        try:
            ref = parse_template(task["input"])
        except ReferenceSyntaxError:
            continue
        if isinstance(ref, Reference) and ref.root == INPUT and len(ref.segments) == 1:
            return str(ref.segments[0])
    return None


class FlowRunForm(KeptDocumentsForm):
    input = JSONObjectFormField(
        label="Input (JSON)",
        rows=12,
        example='{"document": "…"}',
        help_text="A JSON object; the tasks read its fields as {{ input.<field> }}.",
    )
    document = forms.FileField(label="Document", required=False)
    user_id = forms.UUIDField(
        label="User id", required=False, help_text="Optional: the end user this run is for (a UUID)."
    )

    field_order = ["input", "keep", "document", "user_id", "from_run"]

    def __init__(self, *args, document_field: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.document_field = document_field
        if document_field is None:
            del self.fields["document"]
        else:
            self.fields[
                "document"
            ].help_text = (
                f"Optional: a PDF or text file, put into the input as {document_field!r} (replacing what is there)."
            )
        self.fields["input"].widget.attrs["placeholder"] = '{"field": "value"}'

    def clean_document(self):
        upload = self.cleaned_data.get("document")
        if upload is not None and upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The document is too large (at most {MAX_UPLOAD_BYTES // 2**20} MB).")
        return upload

    def run_input(self) -> dict:
        upload = self.cleaned_data.get("document")
        replaced = pointer([self.document_field]) if upload is not None and self.document_field else None
        data = self.input_with_documents(dict(self.cleaned_data["input"]), replaced_at=replaced)
        if upload is not None and self.document_field:
            try:
                data[self.document_field] = input_from_upload(filename=upload.name, content=upload.read())
            except ValueError as exc:
                self.add_error("document", str(exc))
        return data
