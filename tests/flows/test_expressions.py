import pytest

from flows.expressions import ExpressionError, compile_expression, evaluate

VARIABLES = {
    "output": {"decision": "approved", "score": 0.9, "count": 3, "reasons": ["late", "limit"]},
    "status": "success",
    "error": "",
    "input": {"customer_id": "c-1", "amount": 100},
    "steps": {"extract": {"status": "success", "output": {"fields": {"currency": "EUR"}}}},
}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("output.decision ==", "syntax error: unexpected end of expression"),
        ("(status", "syntax error: unexpected end of expression; expected ')'"),
        ("status success", "syntax error at line 1, column 8: unexpected 'success'"),
        ("output.x = 1", "syntax error at line 1, column 10: unexpected character '='"),
    ],
)
def test_compile_expression__syntax_error_is_readable(text, message):
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("text", ["", "   ", None, 5])
def test_compile_expression__rejects_empty_or_non_string(text):
    with pytest.raises(ExpressionError):
        compile_expression(text)


def test_compile_expression__is_cached_by_text():
    assert compile_expression('status == "success"') is compile_expression('status == "success"')


def test_compile_expression__lists_free_variables_without_comprehension_variables_or_type_names():
    compiled = compile_expression('output.reasons.exists(r, r == "late") && type(input.amount) == int && has(steps.x)')
    assert compiled.variables == {"output", "input", "steps"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('output.decision == "approved"', True),
        ('output.decision != "approved"', False),
        ("output.count >= 3 && output.score > 0.5", True),
        ('"late" in output.reasons', True),
        ("size(output.reasons) == 2", True),
        ('steps.extract.output.fields.currency == "EUR"', True),
        ('input.customer_id.startsWith("c-")', True),
        ('status == "success" && error == ""', True),
        ("has(output.missing)", False),
        ('output.reasons.exists(r, r == "limit")', True),
        ("double(input.amount) > 99.5", True),
    ],
)
def test_evaluate__returns_the_boolean_result(text, expected):
    assert evaluate(text, VARIABLES) is expected


def test_evaluate__null_output_compares_with_null():
    assert evaluate("output == null", {**VARIABLES, "output": None}) is True


def test_evaluate__missing_key_is_an_error():
    with pytest.raises(ExpressionError, match="no such member in mapping: 'missing'"):
        evaluate("output.missing == 1", VARIABLES)


def test_evaluate__non_boolean_result_is_an_error():
    with pytest.raises(ExpressionError, match="must be true or false, not a value of type string"):
        evaluate("output.decision", VARIABLES)


def test_evaluate__int_compared_with_double_explains_the_fix():
    with pytest.raises(ExpressionError) as caught:
        evaluate("input.amount > 99.5", VARIABLES)
    assert "'>' applied to '(int, double)'" in str(caught.value)
    assert "double(x)" in str(caught.value)


def test_evaluate__undeclared_variable_message_is_short():
    with pytest.raises(ExpressionError) as caught:
        evaluate("nosuch == 1", VARIABLES)
    assert str(caught.value) == "undeclared reference to 'nosuch'"


def test_evaluate__division_by_zero_is_an_error():
    with pytest.raises(ExpressionError, match="divide by zero"):
        evaluate("output.count / 0 == 1", VARIABLES)


def test_evaluate__short_circuit_skips_the_failing_side():
    assert evaluate('has(output.missing) && output.missing == 1 || status == "success"', VARIABLES) is True


L30 = "[" + ",".join(["1"] * 30) + "]"


@pytest.mark.parametrize(
    "text,message",
    [
        # The probe's expression: four comprehensions over thirty items, 810,000 inner evaluations.
        (f"size({L30}.map(a, {L30}.map(b, {L30}.map(c, {L30}.map(d, d))))) > 0", "4 comprehensions"),
        (f"size({L30}.map(a, {L30}.map(b, {L30}.map(c, c)))) > 0", "3 comprehensions"),
        (" && ".join(["true"] * 200), "too deeply nested"),
        ("(" * 30 + "true" + ")" * 30, "too deeply nested"),
        (" && ".join(["true"] * 25_000), "too long: 199,996 characters"),
    ],
)
def test_compile_expression__refuses_what_is_too_costly_to_run_when_it_is_written(text, message):
    with pytest.raises(ExpressionError, match=message):
        compile_expression(text)


def test_compile_expression__two_nested_comprehensions_and_long_chains_are_fine():
    compile_expression('input.items.exists(i, i.tags.exists(t, t == "urgent"))')
    assert evaluate(" && ".join(["true"] * 100), {}) is True


def test_evaluate__stops_over_its_budget_with_expression_too_costly():
    from flows.expressions import ExpressionTooCostly

    with pytest.raises(ExpressionTooCostly, match="too costly to evaluate"):
        evaluate("input.items.map(a, input.items.map(b, a + b)).size() > 0", {"input": {"items": list(range(3000))}})
