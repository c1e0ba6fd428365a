import pytest

from flows.references import (
    Reference,
    ReferenceNotFound,
    ReferenceSyntaxError,
    as_text,
    format_location,
    iter_templates,
    parse_reference,
    parse_template,
    resolve,
)

RUN_INPUT = {"document": "Policy No: P-1", "amount": 1200, "customer": {"id": "c-7", "tags": ["gold", "eu"]}}
STEPS = {
    "extract": {"status": "success", "output": {"fields": {"premium": 10.5}, "items": [{"name": "a"}, {"name": "b"}]}},
    "check": {"status": "failure", "output": None},
    "manual review": {"status": "success", "output": {"ok": True}},
}


def fill(template):
    return resolve(template, run_input=RUN_INPUT, steps=STEPS)


def test_parse_reference__input_path_with_dots_and_brackets():
    ref = parse_reference("input.customer.tags[1]")
    assert ref == Reference(text="input.customer.tags[1]", root="input", segments=("customer", "tags", 1))


def test_parse_reference__steps_output_with_dotted_index():
    ref = parse_reference(" steps.extract.output.items.0.name ")
    assert (ref.root, ref.task, ref.field, ref.segments) == ("steps", "extract", "output", ("items", "0", "name"))


def test_parse_reference__quoted_task_name_and_key():
    ref = parse_reference("""steps['manual review'].output["a key"]""")
    assert (ref.task, ref.field, ref.segments) == ("manual review", "output", ("a key",))


def test_parse_reference__steps_status():
    assert parse_reference("steps.check.status").field == "status"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty reference"),
        ("   ", "empty reference"),
        ("inputs.document", "must start with 'input' or 'steps.<task>'"),
        ("run.id", "must start with 'input' or 'steps.<task>'"),
        ("steps", "must name a task"),
        ("steps.extract", "must continue with .output or .status"),
        ("steps.extract.data", "must continue with .output or .status"),
        ("steps.check.status.code", "takes no further path"),
        ("input..document", "not a dotted path"),
        ("input.a b", "not a dotted path"),
        ("input[-1]", "not a dotted path"),
        ("input.a + 1", "not a dotted path"),
        ('input["\\q"]', "bad escape"),
    ],
)
def test_parse_reference__rejects_what_is_not_a_dotted_path(text, fragment):
    with pytest.raises(ReferenceSyntaxError, match=fragment.replace(".", r"\.").replace("[", r"\[")):
        parse_reference(text)


def test_parse_template__plain_text_has_no_template():
    assert parse_template("just text, { not } a template") is None


def test_parse_template__exact_template_is_one_reference():
    assert parse_template("{{input.amount}}") == parse_reference("input.amount")


def test_parse_template__embedded_templates_keep_the_text_around_them():
    parts = parse_template("Dear {{ input.customer.id }}, you owe {{ input.amount }}.")
    assert parts == ["Dear ", parse_reference("input.customer.id"), ", you owe ", parse_reference("input.amount"), "."]


def test_parse_template__unclosed_braces_are_an_error():
    with pytest.raises(ReferenceSyntaxError, match="unclosed"):
        parse_template("{{ input.amount }} and {{ input.document")


def test_parse_template__empty_braces_are_an_error():
    with pytest.raises(ReferenceSyntaxError, match="empty reference"):
        parse_template("{{ }}")


def test_iter_templates__walks_objects_and_lists_and_gives_locations():
    value = {"a": "{{ input.x }}", "b": ["plain", {"c": "x {{ input.y }}"}], "d": 3}
    assert list(iter_templates(value)) == [(("a",), "{{ input.x }}"), (("b", 1, "c"), "x {{ input.y }}")]


def test_format_location__renders_keys_dotted_and_indexes_in_brackets():
    assert format_location(("items", 0, "name")) == "items[0].name"
    assert format_location(("items", 0), "tasks[2].input") == "tasks[2].input.items[0]"
    assert format_location(()) == ""


def test_resolve__exact_template_keeps_the_value_type():
    assert fill("{{ input.amount }}") == 1200
    assert fill("{{ input.customer }}") == RUN_INPUT["customer"]
    assert fill("{{ steps.extract.output.fields }}") == {"premium": 10.5}
    assert fill("{{ steps['manual review'].output.ok }}") is True
    assert fill("{{ steps.check.output }}") is None
    assert fill("{{ input }}") == RUN_INPUT


def test_resolve__embedded_templates_are_interpolated_as_text():
    assert fill("Doc: {{ input.document }}") == "Doc: Policy No: P-1"
    assert fill("{{ input.amount }} EUR") == "1200 EUR"
    assert fill("tags={{ input.customer.tags }}, ok={{ steps.check.output }}") == 'tags=["gold", "eu"], ok=null'
    assert fill("status: {{ steps.check.status }}") == "status: failure"


def test_resolve__walks_nested_objects_and_lists():
    template = {"a": {"b": ["{{ input.amount }}", "x{{ input.customer.id }}", 7]}, "c": None, "d": False}
    assert fill(template) == {"a": {"b": [1200, "xc-7", 7]}, "c": None, "d": False}


def test_resolve__list_index_as_dot_or_brackets():
    assert fill("{{ input.customer.tags.1 }}") == "eu"
    assert fill("{{ input.customer.tags[0] }}") == "gold"
    assert fill("{{ steps.extract.output.items[1].name }}") == "b"


def test_resolve__digit_segment_on_an_object_is_a_key():
    assert resolve("{{ input.codes.0 }}", run_input={"codes": {"0": "zero"}}, steps={}) == "zero"


def test_resolve__does_not_change_the_template():
    template = {"a": ["{{ input.amount }}"]}
    fill(template)
    assert template == {"a": ["{{ input.amount }}"]}


def test_resolve__result_shares_no_objects_with_the_run_input():
    resolved = fill({"customer": "{{ input.customer }}"})
    resolved["customer"]["tags"].append("new")
    assert RUN_INPUT["customer"]["tags"] == ["gold", "eu"]


def test_resolve__text_without_templates_is_unchanged():
    assert fill({"a": "no refs } here {", "n": 1.5}) == {"a": "no refs } here {", "n": 1.5}


@pytest.mark.parametrize(
    ("template", "path", "ref", "reason"),
    [
        ({"text": "{{ input.missing }}"}, "text", "input.missing", "input has no key 'missing'"),
        ({"x": ["{{ input.customer.tags.5 }}"]}, "x[0]", "input.customer.tags.5", "input.customer.tags has 2 items"),
        ("{{ steps.later.output }}", "", "steps.later.output", "task 'later' has not run yet"),
        ({"r": "{{ steps.check.output.reasons }}"}, "r", "steps.check.output.reasons", "steps.check.output is null"),
        ({"d": "a {{ input.document.x }}"}, "d", "input.document.x", "input.document is a string"),
        ({"t": "{{ input.customer.tags.gold }}"}, "t", "input.customer.tags.gold", "is a list, not an object"),
    ],
)
def test_resolve__missing_reference_raises_reference_not_found(template, path, ref, reason):
    with pytest.raises(ReferenceNotFound) as caught:
        fill(template)
    assert (caught.value.path, caught.value.ref) == (path, ref)
    assert reason in str(caught.value)
    assert f"{{{{ {ref} }}}}" in str(caught.value)


def test_as_text__strings_as_they_are_others_as_json():
    assert as_text("é") == "é"
    assert as_text({"a": [1, None, True]}) == '{"a": [1, null, true]}'
