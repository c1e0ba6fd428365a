"""`llm`: send a prompt (a template filled from `variables`) through the LLM gateway; optionally demand JSON."""

from __future__ import annotations

import json
import string
from typing import Any

from agentrunner.agents.base import Agent, AsyncAgentContext, NonRetryableAgentError
from agentrunner.agents.registry import register
from agentrunner.llm import acomplete

MAX_PROMPT_CHARS = 200_000
MAX_OUTPUT_TOKENS = 8192
DEFAULT_MAX_TOKENS = 512
_FORMATTER = string.Formatter()


def render_prompt(template: str, variables: dict[str, Any]) -> str:
    """Fill `{name}` placeholders from `variables` (str.format_map); refuse anything but plain names.

    `{{` and `}}` are literal braces; `{name:>10}` and `{name!r}` work as in str.format. Attribute and
    index access (`{a.b}`, `{a[0]}`), positional (`{}`, `{0}`) and nested (`{a:{width}}`) placeholders
    are refused: a template must not reach into objects. Objects and lists are inserted as JSON.
    """
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise NonRetryableAgentError(
            f"The prompt template is malformed ({exc}); write a literal brace as {{{{ or }}}}."
        )
    missing = []
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise NonRetryableAgentError("The prompt template has a positional placeholder ({} or {0}); name it.")
        if "." in name or "[" in name:
            raise NonRetryableAgentError(
                f"The prompt template's placeholder {{{name}}} uses attribute or index access; only plain "
                "names of `variables` are allowed."
            )
        if spec and "{" in spec:
            raise NonRetryableAgentError(f"The prompt template's placeholder {{{name}}} has a nested placeholder.")
        if name not in variables and name not in missing:
            missing.append(name)
    if missing:
        listed = ", ".join(missing)
        raise NonRetryableAgentError(f"The prompt template uses variables that `variables` does not define: {listed}.")
    values = {
        name: json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list | bool) or value is None else value
        for name, value in variables.items()
    }
    try:
        return template.format_map(values)
    except (ValueError, TypeError) as exc:  # a format spec that does not suit the value, e.g. {name:.2f}
        raise NonRetryableAgentError(f"The prompt template could not be filled in ({exc}).")


@register
class LLMAgent(Agent):
    name = "llm"
    description = (
        'Asks a large language model the question in "prompt", whose {name} placeholders are filled in from '
        '"variables". Optional: "system" instructions, a "model", "max_tokens", "temperature", and a '
        '"json_schema" the answer must match (it then comes back as JSON). When one provider does not answer, '
        "the next one is asked (OpenAI, Anthropic, a local server). The token budgets of the run and of the "
        "person it runs for apply."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS},
            "variables": {"type": "object"},
            "system": {"type": "string", "maxLength": MAX_PROMPT_CHARS},
            "model": {"type": "string", "minLength": 1, "maxLength": 200},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_OUTPUT_TOKENS},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "json_schema": {"type": "object"},
        },
        "required": ["prompt"],
        "additionalProperties": False,
    }
    # A run is retried on temporary failures: no provider answered, or the answer did not match json_schema.
    max_attempts = 3

    async def run(self, context: AsyncAgentContext) -> dict:
        data = context.input
        prompt = render_prompt(data["prompt"], data.get("variables") or {})
        json_schema = data.get("json_schema")
        completion = await acomplete(
            messages=[{"role": "user", "content": prompt}],
            system=data.get("system"),
            model=data.get("model"),
            max_tokens=data.get("max_tokens", DEFAULT_MAX_TOKENS),
            temperature=data.get("temperature"),  # None: the provider's default
            json_schema=json_schema,
            context=context,
        )
        output = {
            "text": completion.text,
            "provider": completion.provider,
            "model": completion.model,
            "usage": completion.usage(),
            "cost_usd": completion.cost_usd_text,
            "latency_ms": completion.latency_ms,
        }
        if json_schema is not None:
            output["json"] = completion.parsed_json
        context.log.info(
            "llm_agent_answered",
            provider=completion.provider,
            model=completion.model,
            total_tokens=completion.total_tokens,
        )
        return output
