"""The schedule form: the services' own check runs in clean(), so every problem shows at its field before saving."""

from __future__ import annotations

import copy

from django import forms
from django.utils import timezone

from agentrunner.adminkit import JSONObjectFormField, add_service_errors
from agentrunner.agents import all_agents
from schedules import services
from schedules.exceptions import ScheduleInvalid
from schedules.models import Schedule
from schedules.timing import time_zones

FORM_FIELDS = list(services.EDITABLE)
# How the services' error keys map onto the form's fields.
FORM_FIELD = {"target": "flow", "kind": "cron"}


class ScheduleForm(forms.ModelForm):
    agent_type = forms.ChoiceField(label="Agent", required=False, help_text="Or an agent to start.")
    input = JSONObjectFormField(
        label="Input",
        initial=dict,
        rows=8,
        example='{"document": "…"}',
        help_text='The input every run starts with, as a JSON object, e.g. {"document": "…"}. Empty = {}.',
    )
    timezone = forms.ChoiceField(
        label="Time zone", initial="UTC", help_text="Cron times are read in this zone, e.g. Europe/Paris."
    )

    class Meta:
        model = Schedule
        fields = FORM_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        agents = sorted(all_agents())
        zones = sorted(time_zones())
        # A value saved before an agent was removed (or a zone renamed) stays visible; the check then says why.
        if self.instance.agent_type and self.instance.agent_type not in agents:
            agents.append(self.instance.agent_type)
        if self.instance.timezone and self.instance.timezone not in zones:
            zones.append(self.instance.timezone)
        if "flow" not in self.fields:
            return  # a page the user may only read: every field is shown as text, none is in the form
        self.fields["agent_type"].choices = [("", "— (none: start the flow)"), *((a, a) for a in agents)]
        self.fields["timezone"].choices = [(z, z) for z in zones]
        self.fields["flow"].empty_label = "— (none: start the agent)"

    def clean(self):
        data = super().clean()
        # The services' own check, on a copy: the form shows every problem before anything is written.
        candidate = copy.copy(self.instance)
        for name in FORM_FIELDS:
            if name in data:
                setattr(candidate, name, data[name])
        team, flow, name = data.get("team"), data.get("flow"), data.get("name")
        owner = team if "team" in self.fields else (self.instance.team if self.instance.team_id else None)
        others = Schedule.objects.exclude(pk=self.instance.pk)
        if owner and name and others.filter(team=owner, name=name).exists():
            # At the name, before saving; the model's (team, name) constraint would say it above the form.
            self.add_error("name", f"A schedule named {name!r} already exists in this team.")
        if "team" in self.fields:  # a new schedule: its team is chosen here (or is the user's only one)
            candidate.team = team or (flow.team if flow else None)  # no team chosen: that error is enough
            if team and flow and flow.team_id != team.pk:
                # The services refuse another team's flow as one that does not exist; here both teams are the
                # user's, so say which is which.
                self.add_error(
                    "flow", f"This flow is of team {flow.team}: a schedule of team {team} can start only its flows."
                )
        try:
            services.schedule_check(candidate)
            services.schedule_timing(candidate).next_after(timezone.now())
        except ScheduleInvalid as exc:
            add_service_errors(self, exc.errors, names=FORM_FIELD)
            return data
        # What the services would store: a normalised cron, the unused timing field cleared, a checked input.
        data.update(cron=candidate.cron, interval_seconds=candidate.interval_seconds, input=candidate.input)
        return data
