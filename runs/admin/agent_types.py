"""Admin for agent types and their concurrency policy."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import CharField, Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce, Concat

from agentrunner.adminkit import EMPTY, nowrap, pretty_json
from agentrunner.agents import all_agents
from runs import services
from runs.admin.display import AGENT_KEY_PREFIX, BUSY_SHORT
from runs.models import (
    WAITING_QUEUE,
    AgentPolicy,
    OnBusyChoice,
    Slot,
    Step,
)


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
        agent = all_agents().get(self.instance.agent_type)
        if agent is not None and not self.instance.override:
            # Start from the agent's built-in policy, so ticking "override" changes only what the
            # operator then edits (rows created from the registry hold placeholder values).
            self.initial["concurrency_limit"] = agent.concurrency.limit
            self.initial["on_busy"] = str(agent.concurrency.on_busy)

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
        "description",
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
        services.agent_policies_sync()
        return super().changelist_view(request, extra_context)

    def get_queryset(self, request):
        key = Concat(Value(AGENT_KEY_PREFIX), OuterRef("agent_type"), output_field=CharField())
        running = (
            Slot.objects.filter(key_id=key)
            .exclude(holder="")
            .order_by()
            .values("key_id")
            .annotate(n=Count("pk"))
            .values("n")
        )
        waiting = (
            Step.objects.filter(WAITING_QUEUE, concurrency_key=key)
            .order_by()
            .values("concurrency_key")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                running_count=Coalesce(Subquery(running, output_field=IntegerField()), 0),
                waiting_count=Coalesce(Subquery(waiting, output_field=IntegerField()), 0),
            )
        )

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

    def _policy(self, obj: AgentPolicy):
        if obj.override:
            return obj.concurrency_limit, obj.on_busy
        agent = self._agent(obj)
        if agent is None:
            return None
        return agent.concurrency.limit, str(agent.concurrency.on_busy)

    @admin.display(description="agent type", ordering="agent_type")
    def agent_type_display(self, obj: AgentPolicy):
        return nowrap(obj.agent_type)

    @admin.display(description="description")
    def description(self, obj: AgentPolicy):
        agent = self._agent(obj)
        if agent is None:
            return "— (this agent is no longer installed)"
        return agent.description or EMPTY

    @admin.display(description="limit in effect")
    def effective_limit(self, obj: AgentPolicy):
        policy = self._policy(obj)
        if policy is None:
            return EMPTY
        return f"{policy[0]} at once" if policy[0] else "unlimited"

    @admin.display(description="when all slots are taken")
    def when_busy(self, obj: AgentPolicy):
        policy = self._policy(obj)
        if policy is None or not policy[0]:
            return EMPTY  # no limit: never busy
        return BUSY_SHORT.get(policy[1], policy[1])

    @admin.display(description="overridden?", boolean=True, ordering="override")
    def overridden(self, obj: AgentPolicy):
        return obj.override

    @admin.display(description="running now", ordering="running_count")
    def running_now(self, obj: AgentPolicy):
        return obj.running_count

    @admin.display(description="waiting for a slot", ordering="waiting_count")
    def waiting(self, obj: AgentPolicy):
        return obj.waiting_count

    @admin.display(description="built-in default")
    def default_policy(self, obj: AgentPolicy):
        agent = self._agent(obj)
        if agent is None:
            return EMPTY
        return _policy_text(agent.concurrency.limit, str(agent.concurrency.on_busy))

    @admin.display(description="in effect now")
    def effective_policy(self, obj: AgentPolicy):
        policy = self._policy(obj)
        if policy is None:
            return EMPTY
        source = "your override" if obj.override else "the built-in default"
        return f"{_policy_text(*policy)} (from {source})"

    @admin.display(description="attempts per step")
    def max_attempts(self, obj: AgentPolicy):
        agent = self._agent(obj)
        return agent.max_attempts if agent else EMPTY

    @admin.display(description="input schema")
    def input_schema(self, obj: AgentPolicy):
        agent = self._agent(obj)
        return pretty_json(agent.input_schema) if agent else EMPTY


def _policy_text(limit: int | None, on_busy: str) -> str:
    if not limit:
        return "no limit"
    then = "new runs are rejected" if on_busy == OnBusyChoice.REJECT else "new runs wait in a queue"
    return f"at most {limit} at once; when all are busy, {then}"


# --- Concurrency slots (read-only, for operators) -----------------------------------------------
