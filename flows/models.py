"""Flows: staff-defined chains of agents, with immutable versions that runs pin."""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models


class Flow(models.Model):
    """A named flow; its definition lives in versions, the newest being current."""

    slug = models.SlugField(
        max_length=100, help_text="Identifier used in the API and URLs, e.g. claim-intake; unique in its team."
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True, help_text="Disabled flows cannot be started.")
    team = models.ForeignKey(
        "agentrunner.Team",
        on_delete=models.PROTECT,
        related_name="flows",
        db_index=False,  # the unique (team, slug) index below serves its lookups
        help_text="The team the flow belongs to: only its members see it and run it.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="flows"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            # A flow is found by its team and slug (API URLs, runs started by slug).
            models.UniqueConstraint(fields=["team", "slug"], name="flow_team_slug_unique"),
        ]

    def __str__(self):
        return self.name or self.slug

    @property
    def current_version(self) -> "FlowVersion | None":
        # Uses prefetched versions when the caller prefetched them (lists), else one query.
        if "versions" in getattr(self, "_prefetched_objects_cache", {}):
            return max(self.versions.all(), key=lambda v: v.number, default=None)
        return self.versions.order_by("-number").first()


class FlowVersion(models.Model):
    """One immutable definition of a flow. Inline flows (POST /flow/execute) have no Flow."""

    flow = models.ForeignKey(Flow, null=True, blank=True, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField(default=1)
    definition = models.JSONField(help_text="Tasks and conditions (flow-manager format, extended).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    digest = models.CharField(
        max_length=64,
        validators=[RegexValidator(r"^[0-9a-f]{64}$")],
        help_text="SHA-256 of the canonical definition; identical inline flows share a version.",
        db_index=True,
    )

    class Meta:
        ordering = ["flow_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["flow", "number"], name="flowversion_flow_number_unique"),
        ]

    def __str__(self):
        return f"{self.flow or 'inline flow'} v{self.number}"
