"""Admin for agent types and their concurrency policy."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils.html import format_html

from agentrunner.adminkit import EMPTY, nowrap, pretty_json
from agentrunner.agents import ConcurrencyPolicy, all_agents
from runs import selectors, services
from runs.admin.display import BUSY_SHORT
from runs.models import AgentPolicy, OnBusyChoice

# The list shows this much of an agent's description, the whole text on hover.
LIST_DESCRIPTION_CHARS = 110


class AgentPolicyForm(forms.ModelForm):
    concurrency_limit = forms.IntegerField(
        label="At most this many at once",
        min_value=1,
        required=False,
        help_text="How many runs of this agent may run at the same time. Leave empty for no limit.",
    )

    class Meta:
        model = AgentPolicy
        fields = ["override", "concurrency_limit", "on_busy"]
        help_texts = {
            "override": "Tick to use the limit and busy behaviour below instead of the agent's built-in "
            "default. Untick to go back to the default (the values below are then ignored).",
            "on_busy": "What happens to a new run when every slot is taken.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        policy = selectors.agent_policy_of(self.instance)
        if policy is not None:
            # Start from the policy in effect, so ticking "override" changes only what the operator then
            # edits (rows created from the registry hold placeholder values).
            self.initial["concurrency_limit"] = policy.limit
            self.initial["on_busy"] = str(policy.on_busy)

    def clean(self):
        data = super().clean()
        if self.instance.agent_type not in all_agents():
            raise forms.ValidationError("This agent is no longer installed, so its policy cannot be changed.")
        return data


@admin.register(AgentPolicy)
class AgentPolicyAdmin(admin.ModelAdmin):
    form = AgentPolicyForm
    list_display_links = ["agent_type_display"]
    list_display = [
        "agent_type_display",
        "description_short",
        "effective_limit",
        "when_busy",
        "overridden",
        "running_now",
        "waiting",
    ]
    empty_value_display = EMPTY
    fieldsets = [
        (
            "About this agent",
            {"fields": ["agent_type", "description", "default_policy", "max_attempts", "effective_policy"]},
        ),
        (
            "Concurrency policy",
            {
                "fields": ["override", "concurrency_limit", "on_busy"],
                "description": "Saving applies at once: if the limit goes up (or is removed), runs that are "
                "waiting for a slot start now.",
            },
        ),
        ("Input the agent accepts (JSON Schema)", {"fields": ["input_schema"]}),
    ]
    readonly_fields = [
        "agent_type",
        "description",
        "default_policy",
        "max_attempts",
        "effective_policy",
        "input_schema",
    ]

    def has_add_permission(self, request):
        return False  # one row per registered agent, created from the registry

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        # Reads only: the rows are made by `manage.py migrate` (runs.signals) and by saving a policy.
        registered = set(all_agents())
        listed = set(AgentPolicy.objects.filter(agent_type__in=registered).values_list("agent_type", flat=True))
        extra_context = {**(extra_context or {}), "agents_without_row": sorted(registered - listed)}
        return super().changelist_view(request, extra_context)

    def get_queryset(self, request):
        return selectors.agent_policy_list()

    def save_model(self, request, obj, form, change):
        # Through the service, which also releases waiting runs when the limit rises.
        data = form.cleaned_data
        services.agent_policy_update(
            agent_type=obj.agent_type,
            limit=data.get("concurrency_limit"),
            on_busy=data.get("on_busy") or OnBusyChoice.REJECT,
            override=bool(data.get("override")),
        )
        obj.refresh_from_db()

    @staticmethod
    def _agent(obj: AgentPolicy):
        return all_agents().get(obj.agent_type)

    @admin.display(description="agent type", ordering="agent_type")
    def agent_type_display(self, obj: AgentPolicy):
        return nowrap(obj.agent_type)

    @admin.display(description="description")
    def description(self, obj: AgentPolicy):
        agent = self._agent(obj)
        if agent is None:
            return "— (this agent is no longer installed)"
        return agent.description or EMPTY

    @admin.display(description="what it does")
    def description_short(self, obj: AgentPolicy):
        # The list shows the beginning; the whole text is on hover and on the agent's page.
        agent = self._agent(obj)
        if agent is None:
            return "— (this agent is no longer installed)"
        text = agent.description or EMPTY
        short = text if len(text) <= LIST_DESCRIPTION_CHARS else text[:LIST_DESCRIPTION_CHARS].rsplit(" ", 1)[0] + "…"
        return format_html('<span title="{}">{}</span>', text, short)

    @admin.display(description="limit")
    def effective_limit(self, obj: AgentPolicy):
        policy = selectors.agent_policy_of(obj)
        if policy is None:
            return EMPTY
        return f"{policy.limit} at once" if policy.limit else "unlimited"

    @admin.display(description="when all are busy")
    def when_busy(self, obj: AgentPolicy):
        policy = selectors.agent_policy_of(obj)
        if policy is None or not policy.limit:
            return EMPTY  # no limit: never busy
        return BUSY_SHORT.get(str(policy.on_busy), str(policy.on_busy))

    @admin.display(description="policy from", ordering="override")
    def overridden(self, obj: AgentPolicy):
        # Words, not a tick or a cross: a red cross for "uses its default" read as an error.
        if obj.override:
            return format_html("<strong>{}</strong>", "your override")
        return format_html('<span style="color:var(--body-quiet-color)">{}</span>', "built-in default")

    @admin.display(description="running now", ordering="running_count")
    def running_now(self, obj: AgentPolicy):
        return obj.running_count

    @admin.display(description="waiting", ordering="waiting_count")
    def waiting(self, obj: AgentPolicy):
        return obj.waiting_count

    @admin.display(description="built-in default")
    def default_policy(self, obj: AgentPolicy):
        agent = self._agent(obj)
        if agent is None:
            return EMPTY
        return _policy_text(agent.concurrency)

    @admin.display(description="in effect now")
    def effective_policy(self, obj: AgentPolicy):
        policy = selectors.agent_policy_of(obj)
        if policy is None:
            return EMPTY
        source = "your override" if obj.override else "the built-in default"
        return f"{_policy_text(policy)} (from {source})"

    @admin.display(description="attempts per step")
    def max_attempts(self, obj: AgentPolicy):
        agent = self._agent(obj)
        return agent.max_attempts if agent else EMPTY

    @admin.display(description="input schema")
    def input_schema(self, obj: AgentPolicy):
        agent = self._agent(obj)
        return pretty_json(agent.input_schema) if agent else EMPTY


def _policy_text(policy: ConcurrencyPolicy) -> str:
    if not policy.limit:
        return "no limit"
    then = "new runs are rejected" if str(policy.on_busy) == OnBusyChoice.REJECT else "new runs wait in a queue"
    return f"at most {policy.limit} at once; when all are busy, {then}"
