"""Writes on flows: create, edit (a new immutable version), delete, and inline definitions."""

from __future__ import annotations

import hashlib
import json

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from agentrunner.models import Role, Team
from agentrunner.teams.selectors import role_at_least, role_in, team_ids_of
from agentrunner.teams.services import team_or_default
from flows.definition import MAX_MAX_STEPS, InvalidFlowDefinition, validate_definition
from flows.exceptions import FlowInUse, FlowSlugTaken
from flows.models import Flow, FlowVersion

log = structlog.get_logger("agentrunner.flows")


def definition_digest(definition) -> str:
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def max_steps_allowed(*, user, team: Team | None = None) -> int:
    """The most steps `user` may give a flow in `team`: editors and admins of the team (and superusers) up to
    the format's limit, others the operator's setting. Without a team: editors of any of their teams."""
    # Stored flows are defined by editors, whom the team trusts with its flows; inline flows are written by
    # runners too: a runaway loop of theirs stops long before 10,000 steps.
    if user is None:
        return settings.FLOW_MAX_STEPS_NON_STAFF
    if team is not None:
        trusted = role_at_least(role_in(user, team.pk), Role.EDITOR)
    else:
        editor_of = team_ids_of(user, role=Role.EDITOR)
        trusted = editor_of is None or bool(editor_of)
    return MAX_MAX_STEPS if trusted else settings.FLOW_MAX_STEPS_NON_STAFF


def definition_check(definition, *, max_steps_limit: int = MAX_MAX_STEPS) -> list:
    """Validate a definition; raise InvalidFlowDefinition with every problem if it has errors; return warnings."""
    problems = validate_definition(definition, max_steps_limit=max_steps_limit)
    if any(p.severity == "error" for p in problems):
        raise InvalidFlowDefinition(problems)
    return problems


@transaction.atomic
def flow_create(
    *,
    slug: str,
    name: str,
    definition,
    description: str = "",
    enabled: bool = True,
    owner=None,
    team: Team | None = None,
) -> Flow:
    """Create a flow of `team` (the default team if None) and its version 1; slugs are unique in a team."""
    definition_check(definition)
    team = team_or_default(team)
    try:
        with transaction.atomic():
            flow = Flow.objects.create(
                team=team, slug=slug, name=name, description=description, enabled=enabled, owner=owner
            )
    except IntegrityError:
        # Only the team's own flows can clash ((team, slug) is unique): the message says nothing of others.
        message = f"The team already has a flow with the slug {slug!r}."
        raise FlowSlugTaken(message, errors={"slug": [message]}) from None
    _version_add(flow=flow, definition=definition, created_by=owner)
    log.info("flow_created", flow=slug, team=team.slug)
    return flow


EDITABLE_FIELDS = {"name", "description", "enabled"}


@transaction.atomic
def flow_update(*, flow: Flow, user=None, definition=None, **fields) -> Flow:
    """Change a flow's name, description or enabled flag; a changed definition becomes a new version."""
    unknown = set(fields) - EDITABLE_FIELDS
    if unknown:
        raise TypeError(f"flow_update cannot change {', '.join(sorted(unknown))}")
    if definition is not None:
        definition_check(definition)  # before touching anything
    for name, value in fields.items():
        setattr(flow, name, value)
    flow.save()
    if definition is not None:
        current = flow.current_version
        if current is None or current.digest != definition_digest(definition):
            version = _version_add(flow=flow, definition=definition, created_by=user)
            log.info("flow_version_created", flow=flow.slug, version=version.number)
    return flow


def _version_add(*, flow: Flow, definition, created_by) -> FlowVersion:
    # Lock the flow row: two concurrent edits must not both take the same number.
    Flow.objects.select_for_update().filter(pk=flow.pk).first()
    last = flow.versions.order_by("-number").values_list("number", flat=True).first() or 0
    return FlowVersion.objects.create(
        flow=flow, number=last + 1, definition=definition, digest=definition_digest(definition), created_by=created_by
    )


@transaction.atomic
def flow_delete(*, flow: Flow) -> None:
    """Delete a flow that has never run and nothing (a schedule) uses; one with runs must be disabled instead."""
    if FlowVersion.objects.filter(flow=flow, runs__isnull=False).exists():
        raise FlowInUse()
    try:
        flow.delete()
    except ProtectedError as exc:
        # Whatever protects the flow (its schedules; runs started since the check above) is named, without
        # this app importing the apps that point at it. Django refuses before deleting anything.
        users = sorted(f"{obj._meta.verbose_name} {str(obj)!r}" for obj in exc.protected_objects)
        raise FlowInUse(
            f"The flow is in use by {', '.join(users)}: delete or change {'them' if len(users) > 1 else 'it'} "
            "first, or disable the flow instead."
        ) from None


def inline_version(*, definition, created_by=None, team: Team | None = None) -> FlowVersion:
    """The version for an inline definition (POST /flow/execute) run in `team`; identical definitions run in one
    team share one.

    An inline version belongs to no team (its runs do). It is shared only with the team's own runs: a version id
    another team's run already had would tell that team ran the same definition.
    """
    team = team_or_default(team)
    definition_check(definition, max_steps_limit=max_steps_allowed(user=created_by, team=team))
    digest = definition_digest(definition)
    version = FlowVersion.objects.filter(flow__isnull=True, digest=digest, runs__team=team).order_by("pk").first()
    if version is None:
        version = FlowVersion.objects.create(
            flow=None, number=1, definition=definition, digest=digest, created_by=created_by
        )
    return version
