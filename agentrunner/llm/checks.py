"""Start-up checks of the LLM gateway's settings: a typo fails `manage.py check`, not the first LLM call."""

from django.conf import settings
from django.core.checks import Error, register

from agentrunner.llm.providers import KNOWN_PROVIDERS


@register()
def check_llm_settings(app_configs, **kwargs):
    errors = []
    unknown = [name for name in settings.LLM_PROVIDERS if name not in KNOWN_PROVIDERS]
    if unknown:
        errors.append(
            Error(
                f"LLM_PROVIDERS names unknown providers: {', '.join(unknown)}.",
                hint=f"Use some of {', '.join(KNOWN_PROVIDERS)}, in failover order.",
                id="agentrunner.E101",
            )
        )
    prices = settings.LLM_PRICES
    bad = (
        ["(not a JSON object)"]
        if not isinstance(prices, dict)
        else [
            model
            for model, price in prices.items()
            if not (
                isinstance(price, list | tuple)
                and len(price) == 2
                and all(isinstance(p, int | float) and p >= 0 for p in price)
            )
        ]
    )
    if bad:
        errors.append(
            Error(
                "LLM_PRICES entries must be [USD per 1M prompt tokens, USD per 1M completion tokens]: "
                f"{', '.join(bad)}.",
                id="agentrunner.E102",
            )
        )
    if not 0 < settings.LLM_BUDGET_WARNING_RATIO <= 1:
        errors.append(Error("LLM_BUDGET_WARNING_RATIO must be above 0 and at most 1.", id="agentrunner.E103"))
    for name in ("LLM_TIMEOUT_SECONDS", "LLM_BREAKER_RESET_SECONDS"):
        if getattr(settings, name) <= 0:
            errors.append(Error(f"{name} must be positive.", id="agentrunner.E104"))
    for name in ("LLM_MAX_RETRIES", "LLM_RETRY_BACKOFF_SECONDS", "LLM_MONTHLY_TOKEN_BUDGET"):
        if getattr(settings, name) < 0:
            errors.append(Error(f"{name} must not be negative.", id="agentrunner.E105"))
    if settings.LLM_BREAKER_FAILURES < 1:
        errors.append(Error("LLM_BREAKER_FAILURES must be at least 1.", id="agentrunner.E106"))
    return errors
