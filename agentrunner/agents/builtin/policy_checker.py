"""`policy-checker`: approve or reject a claim against a policy's extracted fields, giving reasons."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime

from agentrunner.agents.base import Agent, AgentContext, ConcurrencyPolicy, NonRetryableAgentError, OnBusy
from agentrunner.agents.registry import register

DEFAULT_REQUIRED_FIELDS = (
    "policy_number",
    "insured_name",
    "effective_date",
    "expiry_date",
    "coverage_limit",
    "currency",
)
DATE_FIELDS = ("effective_date", "expiry_date")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


@dataclass(frozen=True)
class Check:
    rule: str
    passed: bool
    detail: str


def check_policy(
    *,
    fields: dict,
    check_date: date,
    claim_amount: float | None = None,
    claim_currency: str | None = None,
    required_fields: tuple[str, ...] | list[str] = DEFAULT_REQUIRED_FIELDS,
) -> list[Check]:
    """Run every rule that applies; a field whose value is None or blank counts as missing.

    The dates are always needed (no policy is active without them), the coverage limit when a claim
    amount is given, the currency when a claim currency is; a rule whose data is missing or invalid is
    not run, the missing or invalid data being the reason given.
    """
    implied = [*DATE_FIELDS]
    if claim_amount is not None:
        implied.append("coverage_limit")
    if claim_currency is not None:
        implied.append("currency")
    required = list(dict.fromkeys([*required_fields, *implied]))
    checks = [_check_required(fields, required)]

    dates_check, dates = _check_dates(fields)
    if dates_check is not None:
        checks.append(dates_check)
    dates_usable = dates_check is None or dates_check.passed
    if dates_usable and "effective_date" in dates and "expiry_date" in dates:
        checks.append(_check_active(dates["effective_date"], dates["expiry_date"], check_date))

    currency = _text(fields.get("currency"))
    currency = currency.upper() if currency else None
    limit = fields.get("coverage_limit")
    if claim_amount is not None and isinstance(limit, int | float):
        claim_code = claim_currency.upper() if claim_currency else currency
        checks.append(_check_claim_amount(claim_amount, claim_code, limit, currency))
    if claim_currency is not None and currency:
        checks.append(_check_claim_currency(claim_currency.upper(), currency))
    return checks


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _check_required(fields: dict, required: list[str]) -> Check:
    missing = [name for name in required if _text(fields.get(name)) is None]
    if missing:
        return Check("required_fields", False, f"missing required fields: {', '.join(missing)}")
    return Check("required_fields", True, f"required fields present: {', '.join(required)}")


def _check_dates(fields: dict) -> tuple[Check | None, dict[str, date]]:
    """Parse the date fields that are present; None if there are none to check."""
    dates, problems = {}, []
    present = [name for name in DATE_FIELDS if _text(fields.get(name)) is not None]
    for name in present:
        parsed = parse_iso_date(str(fields[name]).strip())
        if parsed is None:
            problems.append(f"{name} {str(fields[name]).strip()!r} is not a valid YYYY-MM-DD date")
        else:
            dates[name] = parsed
    effective, expiry = dates.get("effective_date"), dates.get("expiry_date")
    if effective and expiry and expiry < effective:
        problems.append(f"expiry_date {expiry.isoformat()} is before effective_date {effective.isoformat()}")
    if not present:
        return None, dates
    if problems:
        return Check("valid_dates", False, "invalid dates: " + "; ".join(problems)), dates
    valid = ", ".join(f"{name} {value.isoformat()}" for name, value in dates.items())
    return Check("valid_dates", True, f"dates valid: {valid}"), dates


def _check_active(effective: date, expiry: date, check_date: date) -> Check:
    on, since, until = check_date.isoformat(), effective.isoformat(), expiry.isoformat()
    if check_date < effective:
        return Check("policy_active", False, f"policy not yet effective on {on} (effective {since})")
    if check_date > expiry:
        return Check("policy_active", False, f"policy expired on {until} (check date {on})")
    return Check("policy_active", True, f"policy active on {on} ({since} to {until})")


def _check_claim_amount(amount: float, code: str | None, limit: float, currency: str | None) -> Check:
    claim, cover = _money(amount, code), _money(limit, currency)
    if amount > limit:
        return Check("claim_within_limit", False, f"claim amount {claim} exceeds coverage limit {cover}")
    return Check("claim_within_limit", True, f"claim amount {claim} is within coverage limit {cover}")


def _check_claim_currency(claim_currency: str, currency: str) -> Check:
    if claim_currency != currency:
        return Check(
            "claim_currency",
            False,
            f"claim currency {claim_currency} does not match policy currency {currency}",
        )
    return Check("claim_currency", True, f"claim currency {claim_currency} matches policy currency")


def _money(amount: float, currency: str | None) -> str:
    return f"{currency} {amount:,.2f}" if currency else f"{amount:,.2f}"


def parse_iso_date(value: str) -> date | None:
    """Return the date a strict YYYY-MM-DD string names, else None."""
    if not _ISO_DATE.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


@register
class PolicyCheckerAgent(Agent):
    name = "policy-checker"
    description = (
        'Approves or rejects a claim against a policy\'s fields (the "fields" the document extractor returns): '
        'the required fields are there, the policy is in force on "check_date" (today if not given), '
        '"claim_amount" is within the coverage limit and "claim_currency" is the policy\'s currency. The '
        "policy's start and end dates are always required. Returns the decision, the reasons and every check."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "fields": {
                "type": ["object", "null"],
                "properties": {
                    "policy_number": {"type": ["string", "null"]},
                    "insured_name": {"type": ["string", "null"]},
                    "effective_date": {"type": ["string", "null"]},
                    "expiry_date": {"type": ["string", "null"]},
                    "premium": {"type": ["number", "null"], "minimum": 0},
                    "coverage_limit": {"type": ["number", "null"], "minimum": 0},
                    "currency": {"type": ["string", "null"]},
                },
            },
            "check_date": {"type": "string", "pattern": _ISO_DATE_PATTERN},
            "claim_amount": {"type": "number", "minimum": 0},
            "claim_currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
            "required_fields": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "uniqueItems": True,
            },
        },
        "additionalProperties": False,
    }
    concurrency = ConcurrencyPolicy(limit=1, on_busy=OnBusy.REJECT)

    def run(self, context: AgentContext) -> dict:
        data = context.input
        if "check_date" in data:
            check_date = parse_iso_date(data["check_date"])
            if check_date is None:  # the schema's pattern lets 2025-02-30 through
                raise NonRetryableAgentError(f"check_date {data['check_date']!r} is not a valid date.")
        else:
            check_date = datetime.now(UTC).date()
        checks = check_policy(
            fields=data.get("fields") or {},
            check_date=check_date,
            claim_amount=data.get("claim_amount"),
            claim_currency=data.get("claim_currency"),
            required_fields=data.get("required_fields", DEFAULT_REQUIRED_FIELDS),
        )
        reasons = [check.detail for check in checks if not check.passed]
        decision = "rejected" if reasons else "approved"
        context.log.info("policy_checked", decision=decision, failed=[c.rule for c in checks if not c.passed])
        return {
            "decision": decision,
            "reasons": reasons,
            "checks": [asdict(check) for check in checks],
            "check_date": check_date.isoformat(),
        }
