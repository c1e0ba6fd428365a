"""Why a request cannot act in a team, or a team change cannot be made."""

from agentrunner.errors import ServiceError


class TeamNotFound(ServiceError):
    """No such team, or not one of yours."""

    status_code = 404
    code = "not_found"


class TeamRequired(ServiceError):
    """You belong to several teams: say which one in the X-Team header."""

    status_code = 400
    code = "team_required"


class NoTeam(ServiceError):
    """You belong to no team: a team admin must add you to one."""

    status_code = 403
    code = "no_team"


class RoleTooLow(ServiceError):
    """Your role in this team does not allow this."""

    status_code = 403
    code = "permission_denied"


class MemberNotFound(ServiceError):
    """No such member of this team."""

    status_code = 404
    code = "not_found"


class UserNotFound(ServiceError):
    """No user with this username."""

    status_code = 400
    code = "invalid"


class AlreadyMember(ServiceError):
    """This user is already a member of the team."""

    status_code = 409
    code = "already_member"


class LastAdmin(ServiceError):
    """A team keeps at least one admin: make another member admin first."""

    status_code = 409
    code = "last_admin"


class TeamTaken(ServiceError):
    """A team with this name or slug exists."""

    status_code = 400
    code = "invalid"


class TokenNameTaken(ServiceError):
    """The team has a token with this name."""

    status_code = 400
    code = "invalid"
