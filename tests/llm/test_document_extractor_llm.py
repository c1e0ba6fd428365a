"""document-extractor's LLM mode: fields from the gateway as JSON, falling back to the rules when it fails."""

import json

import pytest
from asgiref.sync import async_to_sync

from agentrunner.agents.base import BudgetExceededError, InvalidAgentInput
from agentrunner.agents.builtin.document_extractor import (
    CONFIDENCE_LLM_ONLY,
    FIELDS,
    LLM_MAX_DOCUMENT_CHARS,
    DocumentExtractorAgent,
    extract_fields,
)
from tests.llm.fake_providers import ok, status

pytestmark = pytest.mark.django_db

DOCUMENT = "\n".join(
    [
        "Nordhafen Versicherung AG - Policy Schedule",
        "Policy Number: PL-2025-004211",
        "Named Insured: Acme Logistics GmbH",
        "Effective Date: 2025-01-01",
        "Expiry Date: 31 December 2025",
        "Total Premium: EUR 12,450.00",
        "Currency: EUR",
        "Cover: the sum of two million euros for each occurrence.",  # the rules cannot read this limit
    ]
)
LLM_FIELDS = {
    "policy_number": "PL-2025-004211",
    "insured_name": " Acme Logistics  GmbH ",
    "effective_date": "2025-01-01",
    "expiry_date": "2025-12-31",
    "premium": 12450,
    "coverage_limit": 2000000,
    "currency": "EUR",
}


def run_extractor(make_context, data: dict) -> dict:
    agent = DocumentExtractorAgent()
    # async_to_sync: the agent's database work (through the gateway) comes back to this test's thread.
    output = async_to_sync(agent.run)(make_context(input=agent.validate_input(data), asynchronous=True))
    json.dumps(output, allow_nan=False)
    return output


def test_document_extractor_llm__reads_the_fields_from_the_models_json(openai_server, make_context):
    openai_server.push(ok(json.dumps(LLM_FIELDS), prompt_tokens=400, completion_tokens=60))

    output = run_extractor(make_context, {"text": DOCUMENT, "mode": "llm"})

    assert output["method"] == "llm"
    assert "fallback_reason" not in output
    assert output["fields"] == {
        "policy_number": "PL-2025-004211",
        "insured_name": "Acme Logistics GmbH",  # whitespace normalised like the rules'
        "effective_date": "2025-01-01",
        "expiry_date": "2025-12-31",
        "premium": 12450.0,
        "coverage_limit": 2000000.0,
        "currency": "EUR",
    }
    assert output["missing"] == []
    # Values the rules read the same way keep the rules' confidence; the limit only the model found.
    assert output["confidence"]["policy_number"] == 0.95
    assert output["confidence"]["coverage_limit"] == CONFIDENCE_LLM_ONLY
    assert output["llm"]["provider"] == "openai"
    assert output["llm"]["usage"]["total_tokens"] == 460
    assert output["source"] == "text" and output["characters"] == len(DOCUMENT)
    body = openai_server.requests[0].body
    assert DOCUMENT in body["messages"][1]["content"]
    assert body["temperature"] == 0.0
    assert body["response_format"] == {"type": "json_object"}


def test_document_extractor_llm__falls_back_to_the_rules_when_no_provider_answers(
    openai_server, anthropic_server, make_context
):
    openai_server.default = status(500)
    anthropic_server.default = status(503)

    output = run_extractor(make_context, {"text": DOCUMENT, "mode": "llm"})

    fields, confidence = extract_fields(DOCUMENT)
    assert output["method"] == "rules"
    assert "openai: HTTP 500" in output["fallback_reason"] and "anthropic: HTTP 503" in output["fallback_reason"]
    assert output["fields"] == fields and output["confidence"] == confidence
    assert output["missing"] == ["coverage_limit"]


def test_document_extractor_llm__falls_back_when_the_answer_does_not_match_the_schema(openai_server, make_context):
    openai_server.push(ok('{"policy_number": "PL-1"}'))

    output = run_extractor(make_context, {"text": DOCUMENT, "mode": "llm"})

    assert output["method"] == "rules"
    assert "does not match the JSON schema" in output["fallback_reason"]
    assert output["fields"] == extract_fields(DOCUMENT)[0]


def test_document_extractor_llm__falls_back_when_no_provider_is_configured(llm_settings, make_context):
    output = run_extractor(make_context, {"text": DOCUMENT, "mode": "llm"})

    assert output["method"] == "rules"
    assert "No LLM provider is configured" in output["fallback_reason"]


def test_document_extractor_llm__a_refused_budget_is_not_a_reason_to_fall_back(openai_server, make_context):
    agent = DocumentExtractorAgent()
    data = agent.validate_input({"text": DOCUMENT, "mode": "llm"})
    context = make_context(token_budget=10, input=data, asynchronous=True)

    with pytest.raises(BudgetExceededError):
        async_to_sync(agent.run)(context)

    assert openai_server.count == 0


def test_document_extractor_llm__an_impossible_date_from_the_model_is_missing(openai_server, make_context):
    openai_server.push(ok(json.dumps({**LLM_FIELDS, "expiry_date": "2025-02-30"})))

    output = run_extractor(make_context, {"text": DOCUMENT, "mode": "llm"})

    assert output["fields"]["expiry_date"] is None
    assert output["confidence"]["expiry_date"] == 0.0
    assert "expiry_date" in output["missing"]


def test_document_extractor_llm__sends_only_the_beginning_of_a_long_document(openai_server, make_context):
    openai_server.push(ok(json.dumps(LLM_FIELDS)))
    long_document = DOCUMENT + "\n" + "x" * (2 * LLM_MAX_DOCUMENT_CHARS)

    output = run_extractor(make_context, {"text": long_document, "mode": "llm"})

    assert output["llm"]["characters_sent"] == LLM_MAX_DOCUMENT_CHARS
    assert len(openai_server.requests[0].body["messages"][1]["content"]) < LLM_MAX_DOCUMENT_CHARS + 200


def test_document_extractor_auto__uses_the_llm_when_a_provider_is_configured(openai_server, make_context):
    openai_server.push(ok(json.dumps(LLM_FIELDS)))

    assert run_extractor(make_context, {"text": DOCUMENT, "mode": "auto"})["method"] == "llm"


def test_document_extractor_auto__uses_the_rules_without_a_provider(llm_settings, make_context):
    output = run_extractor(make_context, {"text": DOCUMENT, "mode": "auto"})

    assert output["method"] == "rules"
    assert "fallback_reason" not in output


@pytest.mark.parametrize("data", [{"text": DOCUMENT}, {"text": DOCUMENT, "mode": "rules"}])
def test_document_extractor_rules__never_calls_the_gateway_and_keeps_its_output(openai_server, make_context, data):
    output = run_extractor(make_context, data)

    assert openai_server.count == 0
    assert set(output) == {"fields", "confidence", "missing", "source", "characters"}
    assert list(output["fields"]) == list(FIELDS)


@pytest.mark.parametrize("data", [{"text": "x", "mode": "llm"}, {"pdf_base64": "JVBERi0=", "mode": "auto"}])
def test_document_extractor__input_schema_accepts_a_mode(data):
    assert DocumentExtractorAgent().validate_input(data) == data


def test_document_extractor__input_schema_refuses_an_unknown_mode():
    with pytest.raises(InvalidAgentInput):
        DocumentExtractorAgent().validate_input({"text": "x", "mode": "magic"})
