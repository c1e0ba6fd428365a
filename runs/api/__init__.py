"""The runs API, one module per resource: `runs` (list, start, read, cancel, resume), `steps` (a run's
timeline and metrics), `agents` (agent types and the runner-compatible endpoints), `examples` (what the
OpenAPI document shows)."""
