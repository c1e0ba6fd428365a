"""Start-up checks: configurations that would break the engine's guarantees."""

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_queue_timing(app_configs, **kwargs):
    """django-q2 must never re-deliver a step that is still running: retry > timeout >= longest step."""
    errors = []
    q = settings.Q_CLUSTER
    timeout, retry = q.get("timeout"), q.get("retry")
    if not timeout or not retry or retry <= timeout:
        errors.append(
            Error(
                f"Q_CLUSTER retry ({retry}) must be longer than timeout ({timeout}), or the broker re-delivers "
                "steps that are still running.",
                hint="Set Q_RETRY above STEP_MAX_SECONDS.",
                id="agentrunner.E001",
            )
        )
    if timeout and timeout < settings.STEP_MAX_SECONDS:
        errors.append(Error("Q_CLUSTER timeout is shorter than STEP_MAX_SECONDS.", id="agentrunner.E002"))
    if settings.RUN_LEASE_SECONDS <= settings.CANCEL_POLL_SECONDS * 2:
        errors.append(Error("RUN_LEASE_SECONDS must be well above CANCEL_POLL_SECONDS.", id="agentrunner.E003"))
    return errors
