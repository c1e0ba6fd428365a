"""The failed-run queue in the admin: the "needs attention" filter, retry and dismiss (one run or many), decisions."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from agentrunner.adminkit import choice_label
from agentrunner.agents import InvalidAgentInput, UnknownAgentType
from agentrunner.errors import ServiceError
from agentrunner.logging import current_request_id
from agentrunner.ratelimit import refusal_message, run_start_acquire
from runs import selectors, services
from runs.admin.display import run_link, run_links
from runs.models import DecisionKind, Run, RunStatus

ATTENTION_HELP = (
    "A failed run needs attention until someone retries it or dismisses it with a reason. A retried flow run "
    "that fails again needs attention again; a retried agent run starts a new run, and that one is watched instead."
)


class NeedsAttentionFilter(admin.SimpleListFilter):
    """Failed runs that nobody retried or dismissed since they (last) failed, and those someone did."""

    title = "attention"
    parameter_name = "attention"
    NEEDS = "needs"
    DECIDED = "decided"

    def lookups(self, request, model_admin):
        return [(self.NEEDS, "Failed, needs attention"), (self.DECIDED, "Failed, retried or dismissed")]

    def queryset(self, request, queryset):
        if self.value() == self.NEEDS:
            return selectors.runs_needing_attention(queryset)
        if self.value() == self.DECIDED:
            return queryset.filter(decisions__isnull=False).distinct()
        return queryset


def needs_attention(run: Run) -> bool:
    """For a row of the admin list (annotated by selectors.runs_with_attention)."""
    return run.status == RunStatus.FAILED and getattr(run, "answered_as", "") is None


def attention_note(run: Run) -> str:
    """Under a failed run's status badge: "needs attention" and its error class, or that it was dealt with."""
    if run.status != RunStatus.FAILED:
        return ""
    if not hasattr(run, "answered_as"):  # a run not read through RunAdmin.get_queryset
        one = selectors.runs_with_attention(Run.objects.filter(pk=run.pk))
        run.answered_as = one.values_list("answered_as", flat=True).first()
    return render_to_string(
        "admin/runs/includes/attention_note.html",
        {
            "needs": needs_attention(run),
            "answered_as": choice_label(DecisionKind, run.answered_as) if getattr(run, "answered_as", None) else "",
            "error_code": run.error_code,
            "error_class": selectors.error_class(run.error_code),
        },
    )


def decisions_html(run: Run) -> str:
    decisions = list(selectors.run_decisions(run=run))
    if not decisions:
        return "Nobody has retried or dismissed this run."
    rows = [{"decision": d, "new_run": run_link(d.new_run_id) if d.new_run_id else None} for d in decisions]
    return render_to_string("admin/runs/includes/decisions.html", {"rows": rows})


def _retry_one(model_admin, request, run: Run) -> Run | None:
    """Retry one failed run through the service; on a refusal, say why and return None. Returns the run to follow."""
    short = str(run.pk)[:8]
    if not (decision := run_start_acquire(user=request.user, team=run.team)).allowed:
        model_admin.message_user(request, f"Run {short} was not retried: {refusal_message(decision)}", messages.ERROR)
        return None
    try:
        decision = services.run_retry(run_id=run.pk, decided_by=request.user, request_id=current_request_id())
    except UnknownAgentType:
        reason = f"the agent {run.agent_type!r} is no longer installed"
    except InvalidAgentInput as exc:
        reason = f"its input no longer matches the agent's input schema ({exc})"
    except ServiceError as exc:
        reason = str(exc)
    else:
        if decision.new_run_id:
            model_admin.log_change(request, run, f"Retried from the admin as {decision.new_run_id}.")
            return decision.new_run
        model_admin.log_change(request, run, "Retried from the admin: resumed from its failed step.")
        return run
    model_admin.message_user(request, f"Run {short} was not retried: {reason}.", messages.ERROR)
    return None


def retry_runs(model_admin, request, queryset) -> None:
    """The "Retry" list action: every failed run of the selection that needs attention, in the user's teams."""
    allowed = model_admin.operable(request, queryset)
    model_admin._skipped_message(request, queryset.count() - allowed.count())
    runs = list(selectors.runs_needing_attention(allowed).select_related("team"))
    skipped = allowed.count() - len(runs)
    retried = [r for r in (_retry_one(model_admin, request, run) for run in runs) if r is not None]
    if retried:
        message = format_html("{} run(s) retried; follow them here: {}", len(retried), run_links(r.pk for r in retried))
        model_admin.message_user(request, message, messages.SUCCESS)
    if skipped:
        model_admin.message_user(
            request,
            f"{skipped} run(s) skipped: only failed runs that nobody retried or dismissed yet can be retried.",
            messages.WARNING,
        )


def retry_view(model_admin, request, run: Run):
    """The run page's "Retry" button."""
    follow = _retry_one(model_admin, request, run)
    if follow is not None and follow.pk != run.pk:
        model_admin.message_user(
            request, format_html("Retried as a new run: {}", run_link(follow.pk)), messages.SUCCESS
        )
    elif follow is not None:
        model_admin.message_user(request, "The run resumes from its failed step.", messages.SUCCESS)
    return HttpResponseRedirect(reverse("admin:runs_run_change", args=[run.pk]))


class DismissForm(forms.Form):
    reason = forms.CharField(
        label="Why dismiss",
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        help_text="Kept with the decision and shown on each run's page, e.g. "
        "\u201cThe insurer's API was down; the claim was entered by hand.\u201d",
    )


def _dismiss_page(model_admin, request, *, runs, form, skipped, read_only, action=None, selected=()):
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Dismiss failed runs" if action else "Dismiss this failed run",
        "subtitle": None,
        "runs": [
            {
                "run": r,
                "link": run_link(r.pk),
                "error_code": r.error_code,
                "error_class": selectors.error_class(r.error_code),
            }
            for r in runs
        ],
        "form": form,
        "skipped": skipped,
        "read_only": read_only,
        "action": action,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "selected": selected,
    }
    return TemplateResponse(request, "admin/runs/run/dismiss.html", context)


def _dismiss(model_admin, request, runs, reason: str) -> int:
    count = 0
    for run in runs:
        try:
            services.run_dismiss(run_id=run.pk, reason=reason, decided_by=request.user)
        except ServiceError as exc:
            model_admin.message_user(request, f"Run {str(run.pk)[:8]} was not dismissed: {exc}", messages.WARNING)
            continue
        model_admin.log_change(request, run, f"Dismissed from the admin: {reason}")
        count += 1
    return count


def dismiss_runs(model_admin, request, queryset):
    """The "Dismiss…" list action: a page asking for the reason, then every eligible run is dismissed with it."""
    allowed = model_admin.operable(request, queryset)
    read_only = queryset.count() - allowed.count()
    runs = list(selectors.runs_needing_attention(allowed))
    skipped = allowed.count() - len(runs)
    form = DismissForm(request.POST if request.POST.get("post") == "yes" else None)
    if not runs or not form.is_valid():
        selected = [str(pk) for pk in allowed.values_list("pk", flat=True)]
        return _dismiss_page(
            model_admin,
            request,
            runs=runs,
            form=form,
            skipped=skipped,
            read_only=read_only,
            action="dismiss_runs",
            selected=selected,
        )
    count = _dismiss(model_admin, request, runs, form.cleaned_data["reason"])
    model_admin._skipped_message(request, read_only)
    if count:
        model_admin.message_user(request, f"{count} run(s) dismissed.", messages.SUCCESS)
    if skipped:
        model_admin.message_user(
            request,
            f"{skipped} run(s) skipped: only failed runs that need attention can be dismissed.",
            messages.WARNING,
        )
    return None


def dismiss_view(model_admin, request, object_id):
    """The run page's "Dismiss" button: a page asking for the reason (GET), then the dismissal (POST)."""
    run = model_admin.get_object(request, unquote(object_id))  # team-scoped: another team's run is a 404
    if run is None:
        raise Http404("No such run.")
    if not model_admin.has_operate_permission(request, run):
        raise PermissionDenied
    change_url = reverse("admin:runs_run_change", args=[run.pk])
    eligible = selectors.runs_needing_attention(Run.objects.filter(pk=run.pk)).exists()
    if not eligible:
        model_admin.message_user(
            request, "Only a failed run that nobody retried or dismissed yet can be dismissed.", messages.WARNING
        )
        return HttpResponseRedirect(change_url)
    form = DismissForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        if _dismiss(model_admin, request, [run], form.cleaned_data["reason"]):
            model_admin.message_user(request, "The run was dismissed.", messages.SUCCESS)
        return HttpResponseRedirect(change_url)
    return _dismiss_page(model_admin, request, runs=[run], form=form, skipped=0, read_only=0)
