import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentrunner.agents import get_agent
from agentrunner.agents.base import AgentContext, InvalidAgentInput, NonRetryableAgentError, OnBusy
from agentrunner.agents.builtin.document_extractor import extract_fields
from agentrunner.agents.builtin.policy_checker import PolicyCheckerAgent

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

POLICY = {
    "policy_number": "PL-2025-004211",
    "insured_name": "Acme Logistics GmbH",
    "effective_date": "2025-01-01",
    "expiry_date": "2025-12-31",
    "premium": 12450.0,
    "coverage_limit": 2000000.0,
    "currency": "EUR",
}
DEFAULT_REQUIRED = "policy_number, insured_name, effective_date, expiry_date, coverage_limit, currency"
ALL_MISSING = f"missing required fields: {DEFAULT_REQUIRED}"


def check(**data) -> dict:
    agent = PolicyCheckerAgent()
    context = AgentContext(run_id=uuid.uuid4(), step_name="x", attempt=1, input=agent.validate_input(data))
    output = agent.run(context)
    json.dumps(output)  # the engine stores outputs as JSON
    return output


def policy(**changes) -> dict:
    return {**POLICY, **changes}


def rules(output: dict) -> dict[str, bool]:
    return {c["rule"]: c["passed"] for c in output["checks"]}


def test_policy_checker__is_registered_with_one_run_at_a_time_rejecting_others():
    agent = get_agent("policy-checker")

    assert isinstance(agent, PolicyCheckerAgent)
    assert agent.concurrency.limit == 1
    assert agent.concurrency.on_busy == OnBusy.REJECT


def test_policy_checker__valid_claim_on_an_active_policy_is_approved():
    output = check(fields=POLICY, check_date="2025-06-15", claim_amount=48500, claim_currency="EUR")

    assert output["decision"] == "approved"
    assert output["reasons"] == []
    assert output["check_date"] == "2025-06-15"
    assert rules(output) == {
        "required_fields": True,
        "valid_dates": True,
        "policy_active": True,
        "claim_within_limit": True,
        "claim_currency": True,
    }
    assert all(c["detail"] for c in output["checks"])


def test_policy_checker__active_policy_without_a_claim_is_approved_without_claim_checks():
    output = check(fields=POLICY, check_date="2025-06-15")

    assert output["decision"] == "approved"
    assert rules(output) == {"required_fields": True, "valid_dates": True, "policy_active": True}


@pytest.mark.parametrize("data", [{"fields": {}}, {}, {"fields": None}], ids=["empty", "absent", "null"])
def test_policy_checker__no_fields_is_rejected_listing_the_missing_fields(data):
    output = check(**data, check_date="2025-06-15")

    assert output["decision"] == "rejected"
    assert output["reasons"] == [ALL_MISSING]
    assert rules(output) == {"required_fields": False}


def test_policy_checker__null_and_blank_values_count_as_missing():
    output = check(fields=policy(coverage_limit=None, currency="  "), check_date="2025-06-15")

    assert output["decision"] == "rejected"
    assert output["reasons"] == ["missing required fields: coverage_limit, currency"]


def test_policy_checker__required_fields_can_be_chosen():
    fields = {"policy_number": "PL-1", "effective_date": "2025-01-01", "expiry_date": "2025-12-31"}

    approved = check(fields=fields, check_date="2025-06-15", required_fields=["policy_number"])
    rejected = check(fields=fields, check_date="2025-06-15", required_fields=["policy_number", "broker"])

    assert approved["decision"] == "approved"
    assert rejected["reasons"] == ["missing required fields: broker"]


def test_policy_checker__policy_dates_are_needed_even_when_not_listed_as_required():
    output = check(fields={"policy_number": "PL-1"}, check_date="2025-06-15", required_fields=[])

    assert output["decision"] == "rejected"
    assert output["reasons"] == ["missing required fields: effective_date, expiry_date"]


def test_policy_checker__policy_not_yet_effective_is_rejected():
    output = check(fields=policy(effective_date="2025-02-01"), check_date="2025-01-01")

    assert output["decision"] == "rejected"
    assert output["reasons"] == ["policy not yet effective on 2025-01-01 (effective 2025-02-01)"]
    assert rules(output)["policy_active"] is False


def test_policy_checker__expired_policy_is_rejected():
    output = check(fields=POLICY, check_date="2026-01-05")

    assert output["decision"] == "rejected"
    assert output["reasons"] == ["policy expired on 2025-12-31 (check date 2026-01-05)"]


@pytest.mark.parametrize("check_date", ["2025-01-01", "2025-12-31"])
def test_policy_checker__first_and_last_days_of_the_policy_are_covered(check_date):
    assert check(fields=POLICY, check_date=check_date)["decision"] == "approved"


@pytest.mark.parametrize("written", ["31/12/2025", "2025-02-30", "next year"])
def test_policy_checker__invalid_date_is_rejected_and_the_period_is_not_checked(written):
    output = check(fields=policy(expiry_date=written), check_date="2025-06-15")

    assert output["decision"] == "rejected"
    assert output["reasons"] == [f"invalid dates: expiry_date {written!r} is not a valid YYYY-MM-DD date"]
    assert "policy_active" not in rules(output)


def test_policy_checker__expiry_before_effective_is_rejected():
    output = check(fields=policy(expiry_date="2024-12-31"), check_date="2025-06-15")

    assert output["decision"] == "rejected"
    assert output["reasons"] == ["invalid dates: expiry_date 2024-12-31 is before effective_date 2025-01-01"]
    assert "policy_active" not in rules(output)


def test_policy_checker__claim_over_limit_is_rejected():
    output = check(fields=POLICY, check_date="2025-06-15", claim_amount=2500000, claim_currency="EUR")

    assert output["decision"] == "rejected"
    assert output["reasons"] == ["claim amount EUR 2,500,000.00 exceeds coverage limit EUR 2,000,000.00"]
    assert rules(output)["claim_within_limit"] is False


def test_policy_checker__claim_equal_to_the_limit_is_approved():
    output = check(fields=POLICY, check_date="2025-06-15", claim_amount=2000000)

    assert output["decision"] == "approved"
    assert rules(output)["claim_within_limit"] is True


def test_policy_checker__claim_amount_needs_a_coverage_limit():
    fields = policy(coverage_limit=None)

    output = check(fields=fields, check_date="2025-06-15", claim_amount=10, required_fields=["policy_number"])

    assert output["decision"] == "rejected"
    assert output["reasons"] == ["missing required fields: coverage_limit"]
    assert "claim_within_limit" not in rules(output)


def test_policy_checker__claim_currency_mismatch_is_rejected():
    output = check(fields=POLICY, check_date="2025-06-15", claim_amount=100, claim_currency="USD")

    assert output["decision"] == "rejected"
    assert output["reasons"] == ["claim currency USD does not match policy currency EUR"]


def test_policy_checker__claim_currency_is_compared_ignoring_case():
    output = check(fields=policy(currency="eur"), check_date="2025-06-15", claim_currency="Eur")

    assert output["decision"] == "approved"


def test_policy_checker__claim_currency_needs_a_policy_currency():
    fields = policy(currency=None)

    output = check(fields=fields, check_date="2025-06-15", claim_currency="EUR", required_fields=[])

    assert output["reasons"] == ["missing required fields: currency"]


def test_policy_checker__every_failed_rule_gives_a_reason_in_rule_order():
    fields = policy(insured_name=None)

    output = check(fields=fields, check_date="2026-03-01", claim_amount=3000000, claim_currency="GBP")

    assert output["reasons"] == [
        "missing required fields: insured_name",
        "policy expired on 2025-12-31 (check date 2026-03-01)",
        "claim amount GBP 3,000,000.00 exceeds coverage limit EUR 2,000,000.00",
        "claim currency GBP does not match policy currency EUR",
    ]


def test_policy_checker__check_date_defaults_to_today_in_utc():
    before = datetime.now(UTC).date().isoformat()
    output = check(fields=POLICY)
    after = datetime.now(UTC).date().isoformat()

    assert output["check_date"] in {before, after}


def test_policy_checker__impossible_check_date_is_a_non_retryable_error():
    with pytest.raises(NonRetryableAgentError, match="check_date"):
        check(fields=POLICY, check_date="2025-02-30")


@pytest.mark.parametrize(
    "data",
    [
        {"claim_amount": -1},
        {"claim_amount": "100"},
        {"claim_currency": "EURO"},
        {"check_date": "15/06/2025"},
        {"fields": {"coverage_limit": "2,000,000"}},
        {"fields": {"effective_date": 20250101}},
        {"fields": []},
        {"required_fields": "policy_number"},
        {"fields": POLICY, "confidence": {}},
    ],
)
def test_policy_checker__input_schema_rejects_malformed_input(data):
    with pytest.raises(InvalidAgentInput):
        PolicyCheckerAgent().validate_input(data)


def test_policy_checker__sample_claim_is_approved():
    claim = json.loads((SAMPLES / "claim.json").read_text())

    assert check(**claim)["decision"] == "approved"


def test_policy_checker__accepts_the_document_extractors_fields():
    fields, _ = extract_fields((SAMPLES / "policy.txt").read_text())

    output = check(fields=fields, check_date="2025-03-01", claim_amount=12000, claim_currency="EUR")

    assert output["decision"] == "approved"
