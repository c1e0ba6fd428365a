"""Reads: the team a request acts in, the teams a user may see or change, a team's members and tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value

from agentrunner.models import ROLE_ORDER, Membership, Role, Team
from agentrunner.teams.exceptions import NoTeam, TeamNotFound, TeamRequired, UserNotFound

# The request header that names the team a request acts in (its slug).
TEAM_HEADER = "X-Team"
_SLUG = re.compile(rf"[-a-zA-Z0-9_]{{1,{Team._meta.get_field('slug').max_length}}}")


def role_at_least(role: str | None, needed: str) -> bool:
    """Whether `role` includes `needed` (an admin may do what an editor may, and so on)."""
    return role is not None and ROLE_ORDER.index(Role(role)) >= ROLE_ORDER.index(Role(needed))


@dataclass(frozen=True)
class Acting:
    """The team a request acts in and the user's role there (a superuser acts as an admin of every team)."""

    team: Team
    role: str

    def allows(self, needed: str) -> bool:
        return role_at_least(self.role, needed)


def team_acting(*, user, slug: str | None) -> Acting:
    """The team `user` acts in: the one `slug` names (an X-Team header), else their only team.

    A team that does not exist and one the user is not a member of are the same 404, so that a team's existence
    does not leak. A superuser may act in any team; without a header, in their only team, else the default team.
    """
    if slug:
        if not _SLUG.fullmatch(slug):  # nothing to look up (and text such as NUL that PostgreSQL refuses outright)
            raise TeamNotFound(f"No team {slug!r}.")
        if user.is_superuser:
            team = Team.objects.filter(slug=slug).first()
            if team is None:
                raise TeamNotFound(f"No team {slug!r}.")
            return Acting(team=team, role=Role.ADMIN)
        membership = Membership.objects.select_related("team").filter(user=user, team__slug=slug).first()
        if membership is None:
            raise TeamNotFound(f"No team {slug!r}.")
        return Acting(team=membership.team, role=membership.role)
    memberships = list(Membership.objects.select_related("team").filter(user=user)[:2])
    if len(memberships) == 1:
        role = Role.ADMIN if user.is_superuser else memberships[0].role
        return Acting(team=memberships[0].team, role=role)
    if user.is_superuser:
        from agentrunner.teams.services import team_default

        return Acting(team=team_default(), role=Role.ADMIN)
    if not memberships:
        raise NoTeam()
    slugs = ", ".join(sorted(Membership.objects.filter(user=user).values_list("team__slug", flat=True)))
    raise TeamRequired(f"You belong to several teams ({slugs}): say which one in the {TEAM_HEADER} header.")


def team_ids_of(user, *, role: str = Role.VIEWER) -> list[int] | None:
    """Ids of the teams where `user` has at least `role`; None for a superuser, who has every role everywhere."""
    if user.is_superuser:
        return None
    needed = ROLE_ORDER[ROLE_ORDER.index(Role(role)) :]
    return list(Membership.objects.filter(user=user, role__in=needed).values_list("team_id", flat=True))


def role_in(user, team_id: int | None) -> str | None:
    """`user`'s role in the team (admin for a superuser); None if not a member."""
    if user.is_superuser:
        return Role.ADMIN
    if team_id is None:
        return None
    return Membership.objects.filter(user=user, team_id=team_id).values_list("role", flat=True).first()


def team_list(*, user) -> QuerySet[Team]:
    """The teams `user` belongs to (every team for a superuser)."""
    ids = team_ids_of(user)
    return Team.objects.all() if ids is None else Team.objects.filter(pk__in=ids)


def team_list_with_role(*, user) -> QuerySet[Team]:
    """The teams `user` belongs to (every team for a superuser), each with `my_role`: the user's role there."""
    if user.is_superuser:
        return Team.objects.annotate(my_role=Value(Role.ADMIN.value, output_field=CharField()))
    role = Membership.objects.filter(team=OuterRef("pk"), user=user).values("role")[:1]
    return team_list(user=user).annotate(my_role=Subquery(role))


# Each team limit and the setting that is its value when the team has none (null).
LIMIT_DEFAULTS = {
    "run_starts_per_minute": "RUN_STARTS_PER_TEAM_PER_MINUTE",
    "run_starts_per_user_per_minute": "RUN_STARTS_PER_USER_PER_MINUTE",
    "llm_requests_per_minute": "LLM_REQUESTS_PER_TEAM_PER_MINUTE",
    "monthly_token_limit": "TEAM_MONTHLY_TOKEN_BUDGET",
    "run_retention_days": "RUN_RETENTION_DAYS",
}


def team_limits_effective(*, team: Team) -> dict[str, int]:
    """The limits that apply to the team: its own, or the setting's default where it has none (0 = no limit)."""
    limits = {}
    for field, setting in LIMIT_DEFAULTS.items():
        value = getattr(team, field)
        limits[field] = getattr(settings, setting) if value is None else value
    return limits


def user_joinable(*, username: str):
    """The user a team admin may add to a team; UserNotFound for no such user and for another team's token account."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None or Membership.objects.filter(user=user, is_token=True).exists():
        # A token account acts in its own team only; adding it elsewhere would widen its token. Refused as
        # unknown, so a team admin does not learn another team's token names either.
        raise UserNotFound(errors={"username": [f"No user {username!r}."]})
    return user


def team_get(*, user, slug: str) -> Team:
    """A team `user` belongs to (any, for a superuser); TeamNotFound otherwise."""
    team = team_list(user=user).filter(slug=slug).first()
    if team is None:
        raise TeamNotFound(f"No team {slug!r}.")
    return team


def member_list(*, team: Team) -> QuerySet[Membership]:
    """The team's people (not its token accounts), by username."""
    return team.memberships.filter(is_token=False).select_related("user").order_by("user__username")


def token_list(*, team: Team) -> QuerySet[Membership]:
    """The team's API token accounts, with their token when they have one."""
    return team.memberships.filter(is_token=True).select_related("user", "user__auth_token").order_by("pk")
