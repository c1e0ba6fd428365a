"""Start-up checks: configurations that would break the engine's guarantees."""

from django.conf import settings
from django.core.checks import Error, register

from agentrunner.netpolicy import Allowlist


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


@register()
def check_http_agent_allowlist(app_configs, **kwargs):
    """A malformed HTTP_AGENT_ALLOWLIST entry would fail every http-request run: refuse it at start-up instead."""
    entries = settings.HTTP_AGENT_ALLOWLIST
    if isinstance(entries, str):
        entries = entries.split(",")
    errors = []
    for entry in entries:
        try:
            Allowlist.parse([entry])
        except ValueError as exc:
            errors.append(
                Error(
                    f"HTTP_AGENT_ALLOWLIST: {exc}.",
                    hint="Entries are host names, *.suffix, IP addresses or CIDRs, each optionally with :port "
                    "([IPv6]:port for IPv6), separated by commas; e.g. api.internal:8443,10.20.0.0/16.",
                    id="agentrunner.E004",
                )
            )
    return errors


@register(deploy=True)
def check_email(app_configs, **kwargs):
    """Digests need a real mail server in production; the console backend only prints them."""
    from django.core.checks import Warning

    warnings = []
    if settings.EMAIL_BACKEND.endswith("console.EmailBackend"):
        warnings.append(
            Warning(
                "Email goes to the console: digests are printed by the workers, not mailed.",
                hint="Set EMAIL_URL (e.g. smtp+tls://user:password@smtp.example.com:587) or EMAIL_HOST.",
                id="agentrunner.W010",
            )
        )
    if settings.SITE_URL.startswith(("http://127.0.0.1", "http://localhost")):
        warnings.append(
            Warning(
                "SITE_URL points to this machine: links in digest emails will not open for their readers.",
                hint="Set SITE_URL to the admin's public address, e.g. https://runner.example.com.",
                id="agentrunner.W011",
            )
        )
    return warnings
