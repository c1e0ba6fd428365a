"""The flows API, one module per resource: `flows` (list, create, read, change, delete), `versions` (a flow's
versions), `runs` (starting a stored flow's run), `validate` (checking a definition), `execute` (the
flow-manager-compatible inline run), `examples` (what the OpenAPI document shows).

Everything here acts in one team, the acting team (agentrunner.api.TeamPermissions: the `X-Team` header, or
the user's only team): its members read its flows (viewer), its editors create, change and delete them, its
runners start runs of them (`/flows/{slug}/runs`) and of inline definitions (`/flow/execute`), and any member may
validate a definition. Another team's flow answers the 404 of a flow that does not exist.
"""
