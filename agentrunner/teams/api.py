"""Team management: teams and their limits, members and roles, API tokens (`/teams`, `/teams/{slug}/...`).

The team these operations act on is the one the URL names, not the `X-Team` header: a member of several teams
manages each without choosing an acting team first. A team the user does not belong to answers 404, as one that
does not exist (superusers belong everywhere).
"""

from datetime import date

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import generics, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agentrunner.api import (
    UNAUTHORIZED,
    IsSuperuser,
    LimitOffsetPagination,
    TeamPermissions,
    error_response,
    role_response,
)
from agentrunner.llm.selectors import team_usage, team_usage_by_member
from agentrunner.models import Membership, Role, Team
from agentrunner.teams import selectors, services
from agentrunner.validators import INT32_MAX, RETENTION_MAX_DAYS, validate_retention_days

BIGINT_MAX = 2**63 - 1
# Longest token name: its account's username is "<name>@<team slug>" (slugs up to 100, usernames up to 150).
TOKEN_NAME_MAX_LENGTH = 40


# --- who may do what --------------------------------------------------------------------------------------------


class TeamInPathPermissions(TeamPermissions):
    """Acting in the team the URL's `{slug}` names (not the X-Team header's), with the role the operation needs.

    Not a member (and not a superuser): the team is a 404, whatever the method, as a team that does not exist.
    A member whose role is too low: a 403 naming the role. Reads need the view's `read_role` (viewer unless
    set), writes its `write_role` (admin unless set).
    """

    reads_team_header = False

    def team_slug(self, request, view) -> str | None:
        return view.kwargs["slug"]

    def needed_role(self, request, view) -> str:
        if request.method in permissions.SAFE_METHODS:
            return getattr(view, "read_role", Role.VIEWER)
        return getattr(view, "write_role", Role.ADMIN)


class CreatesTeams(IsSuperuser):
    """Superusers only: teams are made by whoever runs the service."""

    message = "Only a superuser may create a team."


class ChangesTeamSettings(CreatesTeams):
    """Superusers only: a team's limits protect the whole service, so its own admins do not set them."""

    message = "Only a superuser may change a team's name and limits: they protect the whole service."


SUPERUSER_ONLY_TO_CREATE = error_response("You are not a superuser.", CreatesTeams.message, "permission_denied")
SUPERUSER_ONLY_TO_CHANGE = error_response("You are not a superuser.", ChangesTeamSettings.message, "permission_denied")
TEAM_NOT_FOUND = error_response(
    "No such team, or one you do not belong to (the same answer, so a team's existence does not leak).",
    "No team 'acme'.",
    "not_found",
)
BAD_PAGE = error_response(
    "A `limit` or `offset` that is not a whole number in range.",
    "Invalid request: limit: Must be a whole number from 1 to 1000.",
    "invalid",
    {"limit": ["Must be a whole number from 1 to 1000."]},
)


# --- teams ------------------------------------------------------------------------------------------------------


def limit_field(*, maximum: int = INT32_MAX, help_text: str, validators=()) -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=0,
        max_value=maximum,
        allow_null=True,
        required=False,
        validators=list(validators),
        help_text=f"{help_text} Null: the default.",
    )


def limit_fields() -> dict[str, serializers.IntegerField]:
    """The team limits a superuser may set (fresh fields for each serializer: a field belongs to one)."""
    return {
        "run_starts_per_minute": limit_field(help_text="Run starts the whole team may make in any 60 s; 0 = none."),
        "run_starts_per_user_per_minute": limit_field(help_text="Run starts one member may make in any 60 s."),
        "llm_requests_per_minute": limit_field(help_text="LLM requests the team's runs may send in any 60 s."),
        "monthly_token_limit": limit_field(
            maximum=BIGINT_MAX, help_text="LLM tokens the team's runs may use per calendar month (UTC)."
        ),
        "run_retention_days": limit_field(
            maximum=RETENTION_MAX_DAYS,
            help_text="Days finished runs are kept, then deleted with their steps (their LLM costs stay); "
            "0 = keep every run, otherwise at least 8.",
            validators=[validate_retention_days],
        ),
    }


class TeamOutputSerializer(serializers.ModelSerializer):
    role = serializers.CharField(
        source="my_role", help_text="Your role in the team (admin in every team for a superuser)."
    )

    class Meta:
        model = Team
        ref_name = "Team"
        fields = ["id", "slug", "name", "role", "created_at"]
        read_only_fields = fields


class EffectiveLimitsSerializer(serializers.Serializer):
    run_starts_per_minute = serializers.IntegerField()
    run_starts_per_user_per_minute = serializers.IntegerField()
    llm_requests_per_minute = serializers.IntegerField()
    monthly_token_limit = serializers.IntegerField()
    run_retention_days = serializers.IntegerField()

    class Meta:
        ref_name = "TeamEffectiveLimits"


class TeamDetailSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="Your role in the team (admin for a superuser).")
    effective_limits = serializers.SerializerMethodField(
        help_text="The limits that apply: the team's own, or the service's default where the team's is null. "
        "0 = no limit."
    )

    class Meta:
        model = Team
        ref_name = "TeamDetail"
        fields = [
            "id",
            "slug",
            "name",
            "role",
            "created_at",
            "run_starts_per_minute",
            "run_starts_per_user_per_minute",
            "llm_requests_per_minute",
            "monthly_token_limit",
            "run_retention_days",
            "effective_limits",
        ]
        read_only_fields = fields

    def get_role(self, team) -> str:
        return self.context["role"]

    @extend_schema_field(EffectiveLimitsSerializer)
    def get_effective_limits(self, team):
        return selectors.team_limits_effective(team=team)


class TeamCreateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=100, help_text="The team's identifier in URLs and the X-Team header.")
    admin = serializers.CharField(
        max_length=150, required=False, help_text="Username of an existing user who becomes the team's first admin."
    )

    class Meta:
        ref_name = "TeamCreateRequest"

    def get_fields(self):
        return {**super().get_fields(), **limit_fields()}


class TeamUpdateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)

    class Meta:
        ref_name = "TeamUpdateRequest"

    def get_fields(self):
        return {**super().get_fields(), **limit_fields()}


def team_detail(team: Team, role: str) -> dict:
    return TeamDetailSerializer(team, context={"role": role}).data


TEAM_DETAIL_EXAMPLE = {
    "id": 3,
    "slug": "claims-ops",
    "name": "Claims operations",
    "role": "admin",
    "created_at": "2026-11-21T09:30:00Z",
    "run_starts_per_minute": None,
    "run_starts_per_user_per_minute": 10,
    "llm_requests_per_minute": None,
    "monthly_token_limit": 5000000,
    "run_retention_days": 90,
    "effective_limits": {
        "run_starts_per_minute": 100,
        "run_starts_per_user_per_minute": 10,
        "llm_requests_per_minute": 0,
        "monthly_token_limit": 5000000,
        "run_retention_days": 90,
    },
}


class TeamListApi(generics.ListAPIView):
    # Any signed-in user, with no acting team: a member of several teams lists them to choose one for X-Team.
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = TeamOutputSerializer
    pagination_class = LimitOffsetPagination

    queryset = Team.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        return selectors.team_list_with_role(user=self.request.user)

    @extend_schema(
        operation_id="teams_list",
        summary="List your teams",
        description="The teams you belong to, by name, with your role in each (a superuser: every team, as "
        "admin). Needs no `X-Team` header: send one of these slugs there to act in that team.",
        responses={200: TeamOutputSerializer(many=True), 400: BAD_PAGE, 401: UNAUTHORIZED},
        examples=[
            OpenApiExample(
                "two teams",
                response_only=True,
                value={
                    "count": 2,
                    "next": None,
                    "previous": None,
                    "results": [
                        {
                            "id": 3,
                            "slug": "claims-ops",
                            "name": "Claims operations",
                            "role": "admin",
                            "created_at": "2026-11-21T09:30:00Z",
                        },
                        {
                            "id": 1,
                            "slug": "default",
                            "name": "Default team",
                            "role": "viewer",
                            "created_at": "2026-10-01T08:00:00Z",
                        },
                    ],
                },
            )
        ],
        tags=["teams"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class TeamCreateApi(APIView):
    permission_classes = [CreatesTeams]

    @extend_schema(
        operation_id="teams_create",
        summary="Create a team",
        description="Superusers only. `admin`, if given, names an existing user who becomes the team's first "
        "admin (a token account of another team cannot be). Limits left out are null: the service's defaults.",
        request=TeamCreateInputSerializer,
        responses={
            201: TeamDetailSerializer,
            400: error_response(
                "Invalid fields, a name or slug already taken, or no such user for `admin`.",
                "Invalid request: slug: A team with this name or slug exists.",
                "invalid",
                {"slug": ["A team with this name or slug exists."]},
            ),
            401: UNAUTHORIZED,
            403: SUPERUSER_ONLY_TO_CREATE,
        },
        examples=[
            OpenApiExample(
                "claims team",
                request_only=True,
                value={"name": "Claims operations", "slug": "claims-ops", "admin": "maria"},
            ),
            OpenApiExample("created", response_only=True, status_codes=["201"], value=TEAM_DETAIL_EXAMPLE),
        ],
        tags=["teams"],
    )
    def post(self, request):
        data = TeamCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        username = values.pop("admin", None)
        admin = selectors.user_joinable(username=username) if username else None
        team = services.team_create(admin=admin, **values)
        return Response(team_detail(team, Role.ADMIN), status=status.HTTP_201_CREATED)


class TeamDetailApi(APIView):
    permission_classes = [TeamInPathPermissions]

    @extend_schema(
        operation_id="teams_retrieve",
        summary="Get a team and its limits",
        description="Any member. Each limit is the team's own (null: the service's default); `effective_limits` "
        "are the values that apply (0 = no limit).",
        responses={200: TeamDetailSerializer, 401: UNAUTHORIZED, 404: TEAM_NOT_FOUND},
        examples=[OpenApiExample("claims team", response_only=True, value=TEAM_DETAIL_EXAMPLE)],
        tags=["teams"],
    )
    def get(self, request, slug):
        return Response(team_detail(request.acting.team, request.acting.role))


class TeamUpdateApi(APIView):
    # Membership first (a non-member gets the 404 of a missing team), then the superuser check.
    permission_classes = [TeamInPathPermissions, ChangesTeamSettings]
    write_role = Role.VIEWER

    @extend_schema(
        operation_id="teams_partial_update",
        summary="Change a team's name or limits",
        description="Superusers only: the limits protect the whole service. A limit set to null goes back to the "
        "service's default; 0 means no limit.",
        request=TeamUpdateInputSerializer,
        responses={
            200: TeamDetailSerializer,
            400: error_response(
                "Invalid fields (a limit must be a whole number, 0 or more, or null), or a name already taken.",
                "Invalid request: run_starts_per_minute: Ensure this value is greater than or equal to 0.",
                "invalid",
                {"run_starts_per_minute": ["Ensure this value is greater than or equal to 0."]},
            ),
            401: UNAUTHORIZED,
            403: SUPERUSER_ONLY_TO_CHANGE,
            404: TEAM_NOT_FOUND,
        },
        examples=[
            OpenApiExample(
                "members start at most 10 runs a minute",
                request_only=True,
                value={"run_starts_per_user_per_minute": 10, "monthly_token_limit": 5000000},
            ),
            OpenApiExample("changed", response_only=True, value=TEAM_DETAIL_EXAMPLE),
        ],
        tags=["teams"],
    )
    def patch(self, request, slug):
        data = TeamUpdateInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        team = services.team_update(team=request.acting.team, **data.validated_data)
        return Response(team_detail(team, request.acting.role))


# --- LLM usage --------------------------------------------------------------------------------------------------


class UsageQuerySerializer(serializers.Serializer):
    month = serializers.RegexField(
        r"^(19|20)\d\d-(0[1-9]|1[0-2])$",
        required=False,
        error_messages={"invalid": "Use YYYY-MM, e.g. 2026-11."},
        help_text="The calendar month (UTC), YYYY-MM; default: this month.",
    )


class UsageFiguresSerializer(serializers.Serializer):
    calls = serializers.IntegerField(help_text="Requests sent to a provider (answered or failed).")
    failed_calls = serializers.IntegerField()
    refused_calls = serializers.IntegerField(help_text="Requests a budget refused before any provider.")
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cost_usd = serializers.CharField(help_text="USD with 8 decimals, from the LLM_PRICES setting.")
    llm_latency_ms = serializers.IntegerField(help_text="Time spent waiting for providers, added up.")


class MemberUsageSerializer(UsageFiguresSerializer):
    username = serializers.CharField(allow_null=True, help_text="Null for an account deleted since.")
    total_tokens = serializers.IntegerField()

    class Meta:
        ref_name = "TeamMemberUsage"


class TeamUsageSerializer(UsageFiguresSerializer):
    team = serializers.CharField(help_text="The team's slug.")
    month = serializers.CharField(help_text="YYYY-MM (UTC).")
    limit = serializers.IntegerField(help_text="The team's monthly token limit that applies; 0 = unlimited.")
    limit_source = serializers.ChoiceField(
        choices=["team", "default"], help_text="team: its own limit; default: TEAM_MONTHLY_TOKEN_BUDGET."
    )
    used_tokens = serializers.IntegerField(help_text="Prompt plus completion tokens: what the budget counts.")
    remaining_tokens = serializers.IntegerField(allow_null=True, help_text="Null when unlimited.")
    used_ratio = serializers.FloatField(allow_null=True, help_text="used / limit; 1 or more: exceeded.")
    members = MemberUsageSerializer(many=True, help_text="Each account's share, most tokens first.")

    class Meta:
        ref_name = "TeamUsage"


USAGE_EXAMPLE = {
    "team": "claims-ops",
    "month": "2026-11",
    "limit": 5000000,
    "limit_source": "team",
    "used_tokens": 1250000,
    "remaining_tokens": 3750000,
    "used_ratio": 0.25,
    "calls": 412,
    "failed_calls": 3,
    "refused_calls": 0,
    "prompt_tokens": 1000000,
    "completion_tokens": 250000,
    "cost_usd": "0.30000000",
    "llm_latency_ms": 309000,
    "members": [
        {
            "username": "maria",
            "calls": 400,
            "failed_calls": 3,
            "refused_calls": 0,
            "prompt_tokens": 980000,
            "completion_tokens": 245000,
            "total_tokens": 1225000,
            "cost_usd": "0.29400000",
            "llm_latency_ms": 300000,
        }
    ],
}


class TeamUsageApi(APIView):
    permission_classes = [TeamInPathPermissions]

    @extend_schema(
        operation_id="teams_usage",
        summary="A team's LLM usage in a month",
        description="Any member. Tokens, calls and cost of the team's runs in a calendar month (UTC) against its "
        "monthly token limit, and each account's share. Calls deleted by LLM_CALL_RETENTION_DAYS are not counted.",
        parameters=[UsageQuerySerializer],
        responses={
            200: TeamUsageSerializer,
            400: error_response(
                "A month that is not YYYY-MM.",
                "Invalid request: month: Use YYYY-MM, e.g. 2026-11.",
                "invalid",
                {"month": ["Use YYYY-MM, e.g. 2026-11."]},
            ),
            401: UNAUTHORIZED,
            404: TEAM_NOT_FOUND,
        },
        examples=[OpenApiExample("a month", response_only=True, value=USAGE_EXAMPLE)],
        tags=["teams"],
    )
    def get(self, request, slug):
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        month = None
        if raw := query.validated_data.get("month"):
            month = date(int(raw[:4]), int(raw[5:]), 1)
        team = request.acting.team
        usage = {k: v for k, v in team_usage(team, month).items() if k != "team_id"}
        return Response({"team": team.slug, **usage, "members": team_usage_by_member(team, month)})


# --- members ----------------------------------------------------------------------------------------------------


class MemberOutputSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    joined_at = serializers.DateTimeField(source="created_at")

    class Meta:
        model = Membership
        ref_name = "TeamMember"
        fields = ["username", "role", "joined_at"]
        read_only_fields = fields


class MemberAddInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="An existing user's username.")
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        ref_name = "TeamMemberAddRequest"


class MemberRoleInputSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        ref_name = "TeamMemberRoleRequest"


MEMBER_EXAMPLE = {"username": "maria", "role": "editor", "joined_at": "2026-11-21T09:30:00Z"}
MEMBER_NOT_FOUND = error_response(
    "No such team you belong to, or no such member of it.", "No member 'maria' in claims-ops.", "not_found"
)
LAST_ADMIN = error_response(
    "The team's last admin cannot be demoted or removed.",
    "A team keeps at least one admin: make another member admin first.",
    "last_admin",
)
ADMINS_ONLY = "Team admins (and superusers) only."


class MemberListApi(generics.ListAPIView):
    permission_classes = [TeamInPathPermissions]
    serializer_class = MemberOutputSerializer
    pagination_class = LimitOffsetPagination

    queryset = Membership.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        return selectors.member_list(team=self.request.acting.team)

    @extend_schema(
        operation_id="teams_members_list",
        summary="List a team's members",
        description="Any member; by username. Token accounts are not listed here (see /tokens).",
        responses={200: MemberOutputSerializer(many=True), 400: BAD_PAGE, 401: UNAUTHORIZED, 404: TEAM_NOT_FOUND},
        examples=[
            OpenApiExample(
                "members",
                response_only=True,
                value={"count": 1, "next": None, "previous": None, "results": [MEMBER_EXAMPLE]},
            )
        ],
        tags=["teams"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class MemberAddApi(APIView):
    permission_classes = [TeamInPathPermissions]

    @extend_schema(
        operation_id="teams_members_create",
        summary="Add a user to a team",
        description=f"{ADMINS_ONLY} The user must exist; they act in the team with `role` from now on.",
        request=MemberAddInputSerializer,
        responses={
            201: MemberOutputSerializer,
            400: error_response(
                "Invalid fields, or no user with this username.",
                "Invalid request: username: No user 'maria'.",
                "invalid",
                {"username": ["No user 'maria'."]},
            ),
            401: UNAUTHORIZED,
            403: role_response(Role.ADMIN),
            404: TEAM_NOT_FOUND,
            409: error_response(
                "The user is a member already (change their role instead).",
                "maria is already a member of claims-ops.",
                "already_member",
            ),
        },
        examples=[
            OpenApiExample("an editor", request_only=True, value={"username": "maria", "role": "editor"}),
            OpenApiExample("added", response_only=True, status_codes=["201"], value=MEMBER_EXAMPLE),
        ],
        tags=["teams"],
    )
    def post(self, request, slug):
        data = MemberAddInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.member_add(team=request.acting.team, **data.validated_data)
        return Response(MemberOutputSerializer(membership).data, status=status.HTTP_201_CREATED)


class MemberRoleApi(APIView):
    permission_classes = [TeamInPathPermissions]

    @extend_schema(
        operation_id="teams_members_partial_update",
        summary="Change a member's role",
        description=f"{ADMINS_ONLY} The team's last admin stays an admin (409).",
        request=MemberRoleInputSerializer,
        responses={
            200: MemberOutputSerializer,
            400: error_response(
                "Not a role.",
                'Invalid request: role: "owner" is not a valid choice.',
                "invalid",
                {"role": ['"owner" is not a valid choice.']},
            ),
            401: UNAUTHORIZED,
            403: role_response(Role.ADMIN),
            404: MEMBER_NOT_FOUND,
            409: LAST_ADMIN,
        },
        examples=[
            OpenApiExample("make admin", request_only=True, value={"role": "admin"}),
            OpenApiExample("changed", response_only=True, value={**MEMBER_EXAMPLE, "role": "admin"}),
        ],
        tags=["teams"],
    )
    def patch(self, request, slug, username):
        data = MemberRoleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.member_role_set(
            team=request.acting.team, username=username, role=data.validated_data["role"]
        )
        return Response(MemberOutputSerializer(membership).data)


class MemberRemoveApi(APIView):
    permission_classes = [TeamInPathPermissions]

    @extend_schema(
        operation_id="teams_members_destroy",
        summary="Remove a member from a team",
        description=f"{ADMINS_ONLY} The user stays, and so do the runs they started (they belong to the team). "
        "The team's last admin stays (409).",
        responses={
            204: None,
            401: UNAUTHORIZED,
            403: role_response(Role.ADMIN),
            404: MEMBER_NOT_FOUND,
            409: LAST_ADMIN,
        },
        tags=["teams"],
    )
    def delete(self, request, slug, username):
        services.member_remove(team=request.acting.team, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- tokens -----------------------------------------------------------------------------------------------------


class TokenOutputSerializer(serializers.ModelSerializer):
    name = serializers.SerializerMethodField(help_text="The token's name in the team.")

    class Meta:
        model = Membership
        ref_name = "TeamToken"
        fields = ["id", "name", "role", "created_at"]
        read_only_fields = fields

    def get_name(self, membership) -> str:
        return membership.user.username.rpartition("@")[0]


class TokenCreatedSerializer(TokenOutputSerializer):
    key = serializers.SerializerMethodField(
        help_text="Send it as `Authorization: Token <key>`. Shown this once: it cannot be read again."
    )

    class Meta(TokenOutputSerializer.Meta):
        ref_name = "TeamTokenCreated"
        fields = [*TokenOutputSerializer.Meta.fields, "key"]
        read_only_fields = fields

    def get_key(self, membership) -> str:
        return self.context["key"]


class TokenCreateInputSerializer(serializers.Serializer):
    name = serializers.SlugField(
        max_length=TOKEN_NAME_MAX_LENGTH, help_text="Unique in the team: letters, digits, - and _."
    )
    role = serializers.ChoiceField(choices=Role.choices, help_text="What the token may do in the team.")

    class Meta:
        ref_name = "TeamTokenCreateRequest"


TOKEN_EXAMPLE = {"id": 12, "name": "nightly-ci", "role": "runner", "created_at": "2026-11-21T09:30:00Z"}


class TokenListApi(generics.ListAPIView):
    permission_classes = [TeamInPathPermissions]
    read_role = Role.ADMIN  # a team's tokens are its admins' business
    serializer_class = TokenOutputSerializer
    pagination_class = LimitOffsetPagination

    queryset = Membership.objects.none()  # for the schema generator; requests use get_queryset

    def get_queryset(self):
        return selectors.token_list(team=self.request.acting.team)

    @extend_schema(
        operation_id="teams_tokens_list",
        summary="List a team's API tokens",
        description=f"{ADMINS_ONLY} Oldest first; keys are never shown again after creation.",
        responses={
            200: TokenOutputSerializer(many=True),
            400: BAD_PAGE,
            401: UNAUTHORIZED,
            403: role_response(Role.ADMIN),
            404: TEAM_NOT_FOUND,
        },
        examples=[
            OpenApiExample(
                "tokens",
                response_only=True,
                value={"count": 1, "next": None, "previous": None, "results": [TOKEN_EXAMPLE]},
            )
        ],
        tags=["teams"],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class TokenCreateApi(APIView):
    permission_classes = [TeamInPathPermissions]

    @extend_schema(
        operation_id="teams_tokens_create",
        summary="Create an API token for a team",
        description=f"{ADMINS_ONLY} The token acts in this team only, with `role`, for scripts and services: "
        "`Authorization: Token <key>`, no `X-Team` needed. The key is in this answer only.",
        request=TokenCreateInputSerializer,
        responses={
            201: TokenCreatedSerializer,
            400: error_response(
                "Invalid fields, or the team has a token with this name.",
                "Invalid request: name: The team has a token named 'nightly-ci'.",
                "invalid",
                {"name": ["The team has a token named 'nightly-ci'."]},
            ),
            401: UNAUTHORIZED,
            403: role_response(Role.ADMIN),
            404: TEAM_NOT_FOUND,
        },
        examples=[
            OpenApiExample("for CI", request_only=True, value={"name": "nightly-ci", "role": "runner"}),
            OpenApiExample(
                "created",
                response_only=True,
                status_codes=["201"],
                value={**TOKEN_EXAMPLE, "key": "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"},
            ),
        ],
        tags=["teams"],
    )
    def post(self, request, slug):
        data = TokenCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership, key = services.token_create(team=request.acting.team, **data.validated_data)
        return Response(TokenCreatedSerializer(membership, context={"key": key}).data, status=status.HTTP_201_CREATED)


class TokenDeleteApi(APIView):
    permission_classes = [TeamInPathPermissions]

    @extend_schema(
        operation_id="teams_tokens_destroy",
        summary="Revoke a team's API token",
        description=f"{ADMINS_ONLY} The key stops working at once; runs it started stay, without a creator.",
        responses={
            204: None,
            401: UNAUTHORIZED,
            403: role_response(Role.ADMIN),
            404: error_response(
                "No such team you belong to, or no such token in it.", "No token 12 in claims-ops.", "not_found"
            ),
        },
        tags=["teams"],
    )
    def delete(self, request, slug, token_id):
        services.token_delete(team=request.acting.team, token_id=token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
