"""The schedules API, one module per resource: `schedules` (list, create, read, change, delete, pause,
resume), `fires` (a schedule's slot history), `examples` (what the OpenAPI document shows).

Everything here acts in one team, the acting team (agentrunner.api.TeamPermissions): its members read its
schedules (viewer), its editors create, change, pause, resume and delete them. A schedule starts one of its
team's flows (or an agent) and its runs belong to that team; another team's schedule answers the 404 of a schedule
that does not exist, another team's flow the 400 of a flow that does not exist. Every write goes through
`schedules.services`.
"""
