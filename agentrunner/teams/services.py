"""Writes: the default team, teams and their limits, members and roles, API token accounts."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from agentrunner.models import DEFAULT_TEAM_SLUG, Membership, Role, Team
from agentrunner.teams.exceptions import (
    AlreadyMember,
    LastAdmin,
    MemberNotFound,
    TeamTaken,
    TokenNameTaken,
)
from agentrunner.teams.selectors import user_joinable

# What a superuser may change on a team (`team_update`): its name and its limits.
TEAM_FIELDS = (
    "name",
    "run_starts_per_minute",
    "run_starts_per_user_per_minute",
    "llm_requests_per_minute",
    "monthly_token_limit",
    "run_retention_days",
)


def team_default() -> Team:
    """The team that code outside any request (tests, commands, the demo) and superusers without a team use."""
    team, _ = Team.objects.get_or_create(slug=DEFAULT_TEAM_SLUG, defaults={"name": "Default team"})
    return team


def team_or_default(team: Team | None) -> Team:
    return team if team is not None else team_default()


def team_create(*, name: str, slug: str, admin=None, **limits) -> Team:
    """Create a team; `admin`, if given, becomes its first admin."""
    try:
        with transaction.atomic():
            team = Team.objects.create(name=name, slug=slug, **limits)
            if admin is not None:
                Membership.objects.create(team=team, user=admin, role=Role.ADMIN)
    except IntegrityError:
        raise TeamTaken(errors={"slug": ["A team with this name or slug exists."]}) from None
    return team


def team_update(*, team: Team, **fields) -> Team:
    """Change a team's name or limits (a superuser's decision: the limits protect the whole service)."""
    unknown = set(fields) - set(TEAM_FIELDS)
    if unknown:
        raise ValueError(f"Not a team setting: {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        setattr(team, name, value)
    try:
        with transaction.atomic():
            team.save(update_fields=[*fields])
    except IntegrityError:
        raise TeamTaken(errors={"name": ["A team with this name exists."]}) from None
    return team


def _admins_left_after(team: Team, membership: Membership) -> int:
    return team.memberships.filter(role=Role.ADMIN).exclude(pk=membership.pk).count()


def member_add(*, team: Team, username: str, role: str) -> Membership:
    """Add an existing user to the team with `role`."""
    user = user_joinable(username=username)
    try:
        with transaction.atomic():
            return Membership.objects.create(team=team, user=user, role=role)
    except IntegrityError:
        raise AlreadyMember(f"{username} is already a member of {team.slug}.") from None


def _member(team: Team, username: str, *, lock: bool = False) -> Membership:
    rows = Membership.objects.select_related("user").filter(team=team, user__username=username, is_token=False)
    membership = (rows.select_for_update(of=("self",)) if lock else rows).first()
    if membership is None:
        raise MemberNotFound(f"No member {username!r} in {team.slug}.")
    return membership


@transaction.atomic
def member_role_set(*, team: Team, username: str, role: str) -> Membership:
    """Change a member's role; the team's last admin stays an admin."""
    # Why the locks: two admins demoting each other at once must not both succeed and leave no admin.
    Team.objects.select_for_update().filter(pk=team.pk).first()
    membership = _member(team, username, lock=True)
    if membership.role == Role.ADMIN and role != Role.ADMIN and not _admins_left_after(team, membership):
        raise LastAdmin()
    Membership.objects.filter(pk=membership.pk).update(role=role)
    membership.role = role
    return membership


@transaction.atomic
def member_remove(*, team: Team, username: str) -> None:
    """Take a member out of the team (the user stays); the team's last admin stays."""
    Team.objects.select_for_update().filter(pk=team.pk).first()  # as in member_role_set
    membership = _member(team, username, lock=True)
    if membership.role == Role.ADMIN and not _admins_left_after(team, membership):
        raise LastAdmin()
    membership.delete()


def token_username(*, team: Team, name: str) -> str:
    return f"{name}@{team.slug}"


@transaction.atomic
def token_create(*, team: Team, name: str, role: str) -> tuple[Membership, str]:
    """Make an API token for the team: a user of its own that belongs to this team only, with `role`.

    Returns the token account and its key; the key is shown once, here. A token account cannot sign in to the
    admin (it has no password) and cannot be added to another team by the team's admins, so its token acts in
    this team only.
    """
    User = get_user_model()
    username = token_username(team=team, name=name)
    try:
        with transaction.atomic():
            user = User.objects.create(username=username)
    except IntegrityError:
        raise TokenNameTaken(errors={"name": [f"The team has a token named {name!r}."]}) from None
    user.set_unusable_password()
    user.save(update_fields=["password"])
    membership = Membership.objects.create(team=team, user=user, role=role, is_token=True)
    token = Token.objects.create(user=user)
    return membership, token.key


def token_delete(*, team: Team, token_id: int) -> None:
    """Revoke a team's token: its account, token and membership are deleted (its runs stay, without creator)."""
    membership = Membership.objects.filter(team=team, pk=token_id, is_token=True).select_related("user").first()
    if membership is None:
        raise MemberNotFound(f"No token {token_id} in {team.slug}.")
    membership.user.delete()
