"""CEL expressions (https://cel.dev) for flow conditions, compiled once per text and evaluated safely.

Values come in as JSON (dicts, lists, str, int, float, bool, None) and are converted with
`celpy.json_to_cel`. CEL does not mix int and double: with `output.score == 1` (an int in JSON),
`output.score > 0.5` is an evaluation error; write `double(output.score) > 0.5`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import celpy
import lark
from celpy.evaluation import CELEvalError, CELUnsupportedError

COMPILED_CACHE_SIZE = 1024  # expressions, not bytes

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


@dataclass(frozen=True)
class CompiledExpression:
    text: str
    program: celpy.Runner
    variables: frozenset[str]  # the free variables the expression reads, e.g. {"output", "status"}


_environment = celpy.Environment()


def compile_expression(text: str) -> CompiledExpression:
    """Parse a CEL expression (cached by text); raise ExpressionError with a readable syntax error."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be a string, not {type(text).__name__}")
    if not text.strip():
        raise ExpressionError("empty expression")
    return _compile(text)


@functools.lru_cache(maxsize=COMPILED_CACHE_SIZE)
def _compile(text: str) -> CompiledExpression:
    try:
        ast = _environment.compile(text)
    except celpy.CELParseError as exc:
        raise ExpressionError(_syntax_error_message(text, exc)) from None
    return CompiledExpression(text=text, program=_environment.program(ast), variables=_free_variables(ast))


def evaluate(text: str, variables: dict[str, Any]) -> bool:
    """Evaluate a boolean CEL expression over JSON values; raise ExpressionError on any failure."""
    compiled = compile_expression(text)
    try:
        activation = {name: celpy.json_to_cel(value) for name, value in variables.items()}
        result = compiled.program.evaluate(activation)
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
