"""The schedules API, one module per resource: `schedules` (list, create, read, change, delete, pause,
resume), `fires` (a schedule's slot history), `examples` (what the OpenAPI document shows).

Django's model permissions on Schedule decide who reads (a schedule's input may hold what staff wrote into it)
and who writes, as for flows (agentrunner.api.ModelPermissions). Every write goes through `schedules.services`.
"""
