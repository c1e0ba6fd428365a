"""The `llm` agent: prompt templating, JSON output validated against a schema, output shape."""

import json

import pytest
from asgiref.sync import async_to_sync

from agentrunner.agents import get_agent
from agentrunner.agents.base import InvalidAgentInput, NonRetryableAgentError, RetryableAgentError
from agentrunner.agents.builtin.llm import LLMAgent, render_prompt
from agentrunner.llm import LLMOutputInvalid
from agentrunner.models import LLMCall
from tests.llm.fake_providers import ok

PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


def run_llm(make_context, data: dict) -> dict:
    agent = LLMAgent()
    # async_to_sync, as the engine runs an async step outside a worker: its database work comes back to
    # this thread, inside the test's transaction.
    output = async_to_sync(agent.run)(make_context(input=agent.validate_input(data), asynchronous=True))
    json.dumps(output, allow_nan=False)  # the engine stores outputs as JSON
    return output


def test_llm_agent__is_registered_with_three_attempts_and_no_concurrency_limit():
    agent = get_agent("llm")

    assert isinstance(agent, LLMAgent)
    assert agent.is_async()
    assert agent.max_attempts == 3
    assert agent.concurrency.limit is None


def test_render_prompt__fills_named_placeholders():
    assert render_prompt("Hello {name}, you are {age}.", {"name": "Ada", "age": 36}) == "Hello Ada, you are 36."


def test_render_prompt__keeps_doubled_braces_literal_and_applies_format_specs():
    assert render_prompt("{{x}} {price:.2f} {name!r}", {"price": 3.14159, "name": "Ada"}) == "{x} 3.14 'Ada'"


def test_render_prompt__inserts_objects_and_lists_as_json():
    rendered = render_prompt("Data: {data} {flag} {nothing}", {"data": {"a": [1, "é"]}, "flag": True, "nothing": None})

    assert rendered == 'Data: {"a": [1, "é"]} true null'


def test_render_prompt__a_missing_variable_is_a_non_retryable_error_naming_it():
    with pytest.raises(NonRetryableAgentError, match="does not define: customer, order_id"):
        render_prompt("Dear {customer}, about {order_id} and {customer} again", {"other": 1})


@pytest.mark.parametrize("template", ["{user.name}", "{items[0]}", "{user.__class__}", "{x.__init__.__globals__}"])
def test_render_prompt__attribute_and_index_access_are_refused(template):
    with pytest.raises(NonRetryableAgentError, match="attribute or index access"):
        render_prompt(template, {"user": {"name": "x"}, "items": [1], "x": 1})


@pytest.mark.parametrize("template", ["{}", "{0}", "{name:{width}}", "unbalanced {", "{name!z}", "{name:.2f}"])
def test_render_prompt__other_bad_templates_are_non_retryable_errors(template):
    with pytest.raises(NonRetryableAgentError):
        render_prompt(template, {"name": "text", "width": 5})


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"prompt": ""},
        {"prompt": "x", "max_tokens": 8193},
        {"prompt": "x", "max_tokens": 0},
        {"prompt": "x", "temperature": 2.1},
        {"prompt": "x", "temperature": -0.1},
        {"prompt": "x", "variables": []},
        {"prompt": "x", "json_schema": "object"},
        {"prompt": "x", "colour": "blue"},
    ],
)
def test_llm_agent__input_schema_refuses_bad_input(data):
    with pytest.raises(InvalidAgentInput):
        LLMAgent().validate_input(data)


@pytest.mark.django_db
def test_llm_agent__answers_with_text_usage_and_cost(openai_server, make_context):
    openai_server.push(ok("Bonjour Ada", prompt_tokens=12, completion_tokens=4))

    output = run_llm(
        make_context,
        {"prompt": "Greet {name} in French.", "variables": {"name": "Ada"}, "system": "Be brief.", "max_tokens": 20},
    )

    assert output["text"] == "Bonjour Ada"
    assert (output["provider"], output["model"]) == ("openai", "gpt-test")
    assert output["usage"] == {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
    assert output["cost_usd"] == "0.00002000"
    assert "json" not in output
    body = openai_server.requests[0].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Greet Ada in French."},
    ]
    assert body["max_completion_tokens"] == 20
    assert "temperature" not in body  # the provider's default


@pytest.mark.django_db
def test_llm_agent__a_model_without_a_price_costs_zero(local_server, make_context):
    output = run_llm(make_context, {"prompt": "Hi", "model": "local:tiny"})

    assert (output["provider"], output["model"], output["cost_usd"]) == ("local", "tiny", "0.00000000")
    assert local_server.requests[0].body["model"] == "tiny"


@pytest.mark.django_db
def test_llm_agent__a_missing_variable_fails_before_any_call(openai_server, make_context):
    with pytest.raises(NonRetryableAgentError, match="name"):
        run_llm(make_context, {"prompt": "Hi {name}"})

    assert openai_server.count == 0
    assert not LLMCall.objects.exists()


@pytest.mark.django_db
def test_llm_agent__json_matching_the_schema_is_returned_parsed(openai_server, make_context):
    openai_server.push(ok('```json\n{"name": "Ada", "age": 36}\n```'))

    output = run_llm(make_context, {"prompt": "Who?", "json_schema": PERSON_SCHEMA})

    assert output["json"] == {"name": "Ada", "age": 36}
    assert openai_server.requests[0].body["response_format"] == {"type": "json_object"}
    assert '"required":["name","age"]' in openai_server.requests[0].body["messages"][0]["content"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("Ada is 36.", "not JSON"),
        ('{"name": "Ada"}', "'age' is a required property"),
        ('{"name": "Ada", "age": -1}', "age: -1 is less than the minimum of 0"),
    ],
)
def test_llm_agent__output_not_matching_the_schema_is_a_retryable_error(openai_server, make_context, answer, problem):
    openai_server.push(ok(answer))

    with pytest.raises(LLMOutputInvalid, match=problem) as caught:
        run_llm(make_context, {"prompt": "Who?", "json_schema": PERSON_SCHEMA})

    assert isinstance(caught.value, RetryableAgentError)
    assert caught.value.completion.text == answer
    call = LLMCall.objects.get()
    assert call.outcome == "success" and call.total_tokens == 15  # paid for, even if unusable
    assert call.error.startswith("answer rejected:")


@pytest.mark.django_db
def test_llm_agent__an_invalid_json_schema_is_a_non_retryable_error(openai_server, make_context):
    with pytest.raises(NonRetryableAgentError, match="not a valid JSON Schema"):
        run_llm(make_context, {"prompt": "Who?", "json_schema": {"type": 5}})

    assert openai_server.count == 0
