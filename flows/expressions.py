"""CEL expressions (https://cel.dev) for flow conditions, compiled once per text and evaluated safely.

Values come in as JSON (dicts, lists, str, int, float, bool, None) and are converted with
`celpy.json_to_cel`. CEL does not mix int and double: with `output.score == 1` (an int in JSON),
`output.score > 0.5` is an evaluation error; write `double(output.score) > 0.5`.

Conditions come from users, and celpy is an interpreter in our process: a short expression can
ask for billions of steps (four comprehensions nested over a list of thirty is 810,000 inner
evaluations). So an expression is refused when it is written if it is too long, too deep or nests
comprehensions more than twice, and every evaluation has a budget of interpreter steps and of
time; going over it raises ExpressionTooCostly, which fails the run rather than quietly choosing
another branch.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from typing import Any

import celpy
import lark
from celpy.evaluation import CELEvalError, CELUnsupportedError, Evaluator

COMPILED_CACHE_SIZE = 1024  # expressions, not bytes
# Refused when written (measured: 2,000 characters compile in ~10 ms; an `&&` chain of a few hundred
# terms is too deep for the interpreter's recursion).
MAX_EXPRESSION_CHARS = 2_000
MAX_EXPRESSION_DEPTH = 150  # parse-tree levels (~5 interpreter frames each; celpy sets the recursion limit to 2,500)
MAX_NESTED_COMPREHENSIONS = 2  # e.g. `a.exists(x, x.tags.exists(t, t == "b"))`, not a third inside
# The budget of one evaluation: interpreter steps (parse-tree nodes visited, ~5-10 us each) and time.
MAX_EVALUATION_STEPS = 50_000
MAX_EVALUATION_SECONDS = 0.5

# Comprehension macros: their first argument names a variable bound inside the call.
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
# Names CEL resolves without a variable: type names and the protobuf package.
_BUILTIN_NAMES = frozenset(
    {"bool", "bytes", "double", "duration", "dyn", "int", "list", "map", "null_type", "string", "timestamp"}
    | {"type", "uint", "google"}
)
# Lark terminal names of punctuation, for "expected ')'" in syntax errors.
_PUNCTUATION = {
    "RPAR": ")",
    "LPAR": "(",
    "RSQB": "]",
    "LSQB": "[",
    "RBRACE": "}",
    "LBRACE": "{",
    "COLON": ":",
    "COMMA": ",",
    "DOT": ".",
}
_OPERATORS = {
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_in": "in",
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
}


class ExpressionError(ValueError):
    """The expression is not valid CEL, or failed when evaluated."""


class ExpressionTooCostly(ExpressionError):
    """The evaluation went over its budget of steps or time."""


class _OverBudget(Exception):  # noqa: N818 (internal signal; not a ValueError or TypeError, which celpy catches)
    pass


class _Budget:
    def __init__(self):
        self.steps = 0
        self.deadline = time.monotonic() + MAX_EVALUATION_SECONDS

    def spend(self) -> None:
        self.steps += 1
        if self.steps > MAX_EVALUATION_STEPS or (self.steps % 256 == 0 and time.monotonic() > self.deadline):
            raise _OverBudget


class _BudgetedEvaluator(Evaluator):
    """celpy's evaluator, counting every node it visits (comprehension bodies included) against a budget."""

    def __init__(self, ast: lark.Tree, activation, budget: _Budget):
        super().__init__(ast, activation)
        self.budget = budget

    def visit(self, tree: lark.Tree):
        self.budget.spend()
        return super().visit(tree)

    def sub_evaluator(self, ast: lark.Tree) -> Evaluator:
        return _BudgetedEvaluator(ast, self.activation, self.budget)


class _BudgetedRunner(celpy.InterpretedRunner):
    def evaluate(self, context):
        return _BudgetedEvaluator(self.ast, self.new_activation(), _Budget()).evaluate(context)


@dataclass(frozen=True)
class CompiledExpression:
    text: str
    program: celpy.Runner
    variables: frozenset[str]  # the free variables the expression reads, e.g. {"output", "status"}


@functools.cache
def _environment() -> celpy.Environment:
    # Built on first use, not at import: building CEL's parser takes ~0.5-1 s, which every Django start-up
    # (each manage.py command, web and worker process) paid although most never evaluate a condition.
    return celpy.Environment(runner_class=_BudgetedRunner)


def compile_expression(text: str) -> CompiledExpression:
    """Parse a CEL expression (cached by text); raise ExpressionError with a readable syntax error."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, not {type(text).__name__}")
    if not text.strip():
        raise ExpressionError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"too long: {len(text):,} characters; at most {MAX_EXPRESSION_CHARS:,}")
    return _compile(text)


@functools.lru_cache(maxsize=COMPILED_CACHE_SIZE)
def _compile(text: str) -> CompiledExpression:
    try:
        ast = _environment().compile(text)
    except celpy.CELParseError as exc:
        raise ExpressionError(_syntax_error_message(text, exc)) from None
    except RecursionError:
        raise ExpressionError(f"too deeply nested: at most {MAX_EXPRESSION_DEPTH} levels") from None
    depth, comprehensions = _nesting(ast)
    if depth > MAX_EXPRESSION_DEPTH:
        raise ExpressionError(
            f"too deeply nested: {depth} levels, at most {MAX_EXPRESSION_DEPTH} (split a long chain of && or ||)"
        )
    if comprehensions > MAX_NESTED_COMPREHENSIONS:
        raise ExpressionError(
            f"too costly: {comprehensions} comprehensions (map, filter, all, exists, exists_one) nested in each "
            f"other; at most {MAX_NESTED_COMPREHENSIONS}"
        )
    return CompiledExpression(text=text, program=_environment().program(ast), variables=_free_variables(ast))


def _nesting(ast: lark.Tree) -> tuple[int, int]:
    """The depth of the parse tree, and the most comprehension macros nested in one another."""
    deepest, most = 0, 0
    stack = [(ast, 1, 0)]
    while stack:
        tree, depth, comprehensions = stack.pop()
        if _is_comprehension(tree):
            comprehensions += 1
        deepest, most = max(deepest, depth), max(most, comprehensions)
        stack.extend((child, depth + 1, comprehensions) for child in tree.children if isinstance(child, lark.Tree))
    return deepest, most


def _is_comprehension(tree: lark.Tree) -> bool:
    return tree.data == "member_dot_arg" and len(tree.children) == 3 and str(tree.children[1]) in _MACROS


def evaluate(text: str, variables: dict[str, Any]) -> bool:
    """Evaluate a boolean CEL expression over JSON values; raise ExpressionError on any failure."""
    compiled = compile_expression(text)
    try:
        activation = {name: celpy.json_to_cel(value) for name, value in variables.items()}
        result = compiled.program.evaluate(activation)
    except _OverBudget:
        raise ExpressionTooCostly(
            f"too costly to evaluate: over {MAX_EVALUATION_STEPS:,} steps or {MAX_EVALUATION_SECONDS:g} s"
        ) from None
    except (CELEvalError, CELUnsupportedError) as exc:
        raise ExpressionError(_evaluation_error_message(exc)) from None
    except Exception as exc:  # celpy's interpreter on user input: any crash is the expression's failure
        raise ExpressionError(f"evaluation failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(result, celpy.celtypes.BoolType):
        raise ExpressionError(f"the result must be true or false, not a value of type {_cel_type_name(type(result))}")
    return bool(result)


def _syntax_error_message(text: str, exc: celpy.CELParseError) -> str:
    cause = exc.__context__  # celpy raises its error while handling lark's, which knows what was expected
    if isinstance(cause, lark.exceptions.UnexpectedToken):
        readable = [_readable_terminal(name) for name in cause.expected]
        hint = ""
        if len(readable) <= 3 and all(readable):
            hint = f"; expected {' or '.join(repr(e) for e in sorted(readable))}"
        if cause.token.type == "$END":
            return f"syntax error: unexpected end of expression{hint}"
        return f"syntax error at line {cause.line}, column {cause.column}: unexpected {cause.token.value!r}{hint}"
    if isinstance(cause, lark.exceptions.UnexpectedCharacters):
        return f"syntax error at line {cause.line}, column {cause.column}: unexpected character {cause.char!r}"
    if exc.line is not None:
        return f"syntax error at line {exc.line}, column {exc.column}"
    return f"syntax error: {str(exc).splitlines()[0] if str(exc) else text!r}"


def _readable_terminal(name: str) -> str | None:
    if name in _PUNCTUATION:
        return _PUNCTUATION[name]
    if len(name) > 2 and name.startswith('"') and name.endswith('"'):
        return name[1:-1]
    return None


def _evaluation_error_message(exc: Exception) -> str:
    message = str(exc.args[0]) if exc.args else type(exc).__name__
    # An undeclared name's message carries a dump of every variable: keep the first clause only.
    message = message.split(" (in activation", 1)[0]
    message = re.sub(r"Token\('RULE', '(\w+)'\)", lambda m: repr(_OPERATORS.get(m.group(1), m.group(1))), message)
    message = re.sub(r"<class '[\w.]+\.(\w+)'>", lambda m: _cel_type_name_from(m.group(1)), message)
    if "no matching overload" in message and "int" in message and "double" in message:
        message += " (CEL does not mix int and double: write 1.0 or double(x))"
    return message


def _cel_type_name(cls: type) -> str:
    return _cel_type_name_from(cls.__name__)


def _cel_type_name_from(class_name: str) -> str:
    if class_name == "NoneType":
        return "null"
    return class_name.removesuffix("Type").lower() or class_name


def _free_variables(ast: lark.Tree) -> frozenset[str]:
    """Return the top-level names the expression reads, less comprehension variables and built-in names."""
    names: set[str] = set()
    bound: set[str] = set()
    for tree in ast.iter_subtrees():
        if tree.data in ("ident", "dot_ident"):
            names.add(str(tree.children[0]))
        elif tree.data == "member_dot_arg" and len(tree.children) == 3 and str(tree.children[1]) in _MACROS:
            arguments = tree.children[2]
            if isinstance(arguments, lark.Tree) and arguments.children:
                variable = _bare_identifier(arguments.children[0])
                if variable:
                    bound.add(variable)
    return frozenset(names - bound - _BUILTIN_NAMES)


def _bare_identifier(tree: Any) -> str | None:
    """Return the name if `tree` is nothing but one identifier (a chain of single-child nodes)."""
    while isinstance(tree, lark.Tree):
        if tree.data == "ident":
            return str(tree.children[0])
        if len(tree.children) != 1:
            return None
        tree = tree.children[0]
    return None
