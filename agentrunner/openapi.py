"""OpenAPI additions that every team-acting operation shares: the `X-Team` header and its errors.

A postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]) rather than a parameter on each
`@extend_schema`: whether an operation acts in a team is decided by its permission classes (TeamPermissions, the
API's default), so the documentation is decided by the same thing and cannot be forgotten on a new view.
"""

from agentrunner.api import TeamPermissions, error_body
from agentrunner.teams.selectors import TEAM_HEADER

TEAM_PARAMETER = {
    "in": "header",
    "name": TEAM_HEADER,
    "required": False,
    "schema": {"type": "string", "pattern": r"^[-a-zA-Z0-9_]+$"},
    "description": "The slug of the team to act in (GET /api/v1/teams lists yours). Needed only if you belong to "
    "several teams; a token made by a team's token endpoint acts in that team without it.",
    "example": "claims-ops",
}

# (status, example name, description, answer): what TeamPermissions answers before the operation itself runs.
TEAM_ERRORS = [
    (
        "400",
        "TeamRequired",
        f"You belong to several teams and sent no `{TEAM_HEADER}` header.",
        error_body(
            f"You belong to several teams (acme, globex): say which one in the {TEAM_HEADER} header.", "team_required"
        ),
    ),
    (
        "403",
        "NoTeam",
        "You belong to no team.",
        error_body("You belong to no team: a team admin must add you to one.", "no_team"),
    ),
    (
        "404",
        "TeamNotFound",
        f"The `{TEAM_HEADER}` header names no team of yours (one that does not exist answers the same).",
        error_body("No team 'acme'.", "not_found"),
    ),
]
ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}


def acts_in_a_team(callback, method: str) -> bool:
    """Whether the view answering `method` resolves an acting team: it checks TeamPermissions."""
    callback = getattr(callback, "schema_operations", {}).get(method, callback)
    view_class = getattr(callback, "cls", None)
    classes = getattr(view_class, "permission_classes", ())
    return any(isinstance(p, type) and issubclass(p, TeamPermissions) and p.reads_team_header for p in classes)


def _add_error(responses: dict, status: str, name: str, description: str, answer: dict) -> None:
    response = responses.get(status)
    if response is None:
        responses[status] = {
            "content": {
                "application/json": {
                    "schema": ERROR_SCHEMA,
                    "examples": {name: {"value": answer, "summary": answer["code"]}},
                }
            },
            "description": description,
        }
        return
    content = response.get("content", {}).get("application/json")
    if content is not None and content.get("schema") == ERROR_SCHEMA and "example" not in content:
        content.setdefault("examples", {})[name] = {"value": answer, "summary": answer["code"]}
    if description not in response.get("description", ""):
        response["description"] = " Or: ".join(
            filter(None, [response.get("description", ""), description[0].lower() + description[1:]])
        )


def team_header_hook(result, generator, request, public, **kwargs):
    """Document `X-Team` and its 400 team_required, 403 no_team and 404 on every operation that acts in a team."""
    paths = result.get("paths", {})
    for path, _, method, callback in generator.endpoints:
        if not acts_in_a_team(callback, method):
            continue
        path = generator.coerce_path(path, method, generator.create_view(callback, method))
        operation = paths.get(path, {}).get(method.lower())
        if operation is None:  # left out of the schema (e.g. excluded by @extend_schema)
            continue
        parameters = operation.setdefault("parameters", [])
        if not any(p.get("in") == "header" and p.get("name") == TEAM_HEADER for p in parameters):
            parameters.append(TEAM_PARAMETER)
        responses = operation.setdefault("responses", {})
        for status, name, description, answer in TEAM_ERRORS:
            _add_error(responses, status, name, description, answer)
    return result
