"""The flows API, one module per resource: `flows` (list, create, read, change, delete), `versions` (a flow's
versions), `runs` (starting a stored flow's run), `validate` (checking a definition), `execute` (the
flow-manager-compatible inline run), `examples` (what the OpenAPI document shows).

Stored flows are read, run and changed with Django's model permissions on Flow (ModelPermissions): a definition
may hold what staff wrote into task inputs (tokens, internal addresses), and a run's steps show those inputs, so
running a stored flow needs what reading it needs. Validating and running an inline definition is for everyone.
"""
