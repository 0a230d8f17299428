"""A tiny, safe arithmetic evaluator for expressions written by spec authors.

Supported: int and float literals, names (bound by the caller), unary ``-`` and ``+``, the binary
operators ``+ - * / // %``, parentheses, and calls to ``min``, ``max``, ``int`` and ``abs``.
Anything else -- attribute access, subscripts, strings, comparisons, ``**``, lambdas,
comprehensions, other calls -- is rejected with an :class:`ExprError` naming the construct.
The text is parsed with :mod:`ast` and walked against a strict whitelist; nothing is ever
passed to ``eval``.

:func:`rfc868_now` (the current time as an RFC 868 Time Protocol value) also lives here: it is the
only helper of the judge layer that is not pure.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Callable, Collection, Mapping

__all__ = ["RFC868_OFFSET", "ExprError", "evaluate", "rfc868_now", "validate"]

Number = int | float

# Seconds from 1900-01-01 (RFC 868's epoch) to 1970-01-01 (the Unix epoch).
RFC868_OFFSET = 2208988800

_MAX_LENGTH = 1000


class ExprError(ValueError):
    """The expression is invalid, uses something not allowed, or cannot be evaluated."""


def _int(value: Number) -> Number:
    return int(value)


def _abs(value: Number) -> Number:
    return abs(value)


def _min(*values: Number) -> Number:
    return min(values)


def _max(*values: Number) -> Number:
    return max(values)


# name -> (function, minimum arguments, maximum arguments or None)
_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int | None]] = {
    "abs": (_abs, 1, 1),
    "int": (_int, 1, 1),
    "max": (_max, 2, None),
    "min": (_min, 2, None),
}

_BINARY: dict[type[ast.operator], tuple[str, Callable[[Number, Number], Number]]] = {
    ast.Add: ("+", lambda a, b: a + b),
    ast.Sub: ("-", lambda a, b: a - b),
    ast.Mult: ("*", lambda a, b: a * b),
    ast.Div: ("/", lambda a, b: a / b),
    ast.FloorDiv: ("//", lambda a, b: a // b),
    ast.Mod: ("%", lambda a, b: a % b),
}

_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.USub: lambda a: -a,
    ast.UAdd: lambda a: +a,
}

_OPERATOR_NAMES: dict[type[ast.AST], str] = {
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.Not: "not",
    ast.Invert: "~",
}

_CONSTRUCT_NAMES: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.ListComp: "list comprehension",
    ast.SetComp: "set comprehension",
    ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression",
    ast.Compare: "comparison",
    ast.BoolOp: "boolean operator",
    ast.IfExp: "conditional expression",
    ast.NamedExpr: "assignment expression (:=)",
    ast.List: "list",
    ast.Tuple: "tuple",
    ast.Set: "set",
    ast.Dict: "dict",
    ast.JoinedStr: "f-string",
    ast.Starred: "starred argument",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slice",
}


def _source(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse handles every node ast.parse produces
        return "?"
    return text if len(text) <= 60 else text[:57] + "..."


def _not_allowed(what: str, node: ast.AST, text: str) -> ExprError:
    return ExprError(f"{what} is not allowed in expressions: {_source(node)!r} in {text!r}")


def _parse(text: str) -> ast.Expression:
    if len(text) > _MAX_LENGTH:
        raise ExprError(f"expression too long ({len(text)} characters, at most {_MAX_LENGTH})")
    try:
        return ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        column = f" at column {exc.offset}" if exc.offset else ""
        raise ExprError(f"syntax error in expression {text!r}{column}: {exc.msg}") from None


def _check(node: ast.AST, text: str, allowed_names: Collection[str]) -> None:
    """Raise ExprError unless ``node`` only uses whitelisted constructs (and known names)."""
    if isinstance(node, ast.Expression):
        _check(node.body, text, allowed_names)
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "string literal" if isinstance(value, (str, bytes)) else f"{type(value).__name__} literal"
            raise _not_allowed(kind, node, text)
    elif isinstance(node, ast.Name):
        if node.id not in allowed_names:
            raise ExprError(_unknown_name(node.id, allowed_names, text))
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise _not_allowed(f"operator {_OPERATOR_NAMES.get(type(node.op), '?')!s}", node, text)
        _check(node.operand, text, allowed_names)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise _not_allowed(f"operator {_OPERATOR_NAMES.get(type(node.op), '?')!s}", node, text)
        _check(node.left, text, allowed_names)
        _check(node.right, text, allowed_names)
    elif isinstance(node, ast.Call):
        _check_call(node, text, allowed_names)
    else:
        what = _CONSTRUCT_NAMES.get(type(node), type(node).__name__)
        raise _not_allowed(what, node, text)


def _check_call(node: ast.Call, text: str, allowed_names: Collection[str]) -> None:
    allowed = ", ".join(sorted(_FUNCTIONS))
    if not isinstance(node.func, ast.Name):
        _check(node.func, text, allowed_names)  # names the construct (lambda, attribute access...)
        raise _not_allowed(f"calling {_source(node.func)!r} (allowed functions: {allowed})", node, text)
    name = node.func.id
    if name not in _FUNCTIONS:
        raise _not_allowed(f"calling {name!r} (allowed functions: {allowed})", node, text)
    if node.keywords:
        raise _not_allowed(f"keyword argument to {name}()", node, text)
    for argument in node.args:
        _check(argument, text, allowed_names)
    _, least, most = _FUNCTIONS[name]
    count = len(node.args)
    if count < least or (most is not None and count > most):
        wanted = f"exactly {least}" if least == most else f"at least {least}"
        raise ExprError(f"{name}() takes {wanted} argument(s), got {count}: {_source(node)!r} in {text!r}")


def _unknown_name(name: str, known: Collection[str], text: str) -> str:
    listed = ", ".join(sorted(known)) if known else "none"
    return f"unknown name {name!r} in expression {text!r} (known names: {listed})"


def _eval(node: ast.AST, names: Mapping[str, Number], text: str) -> Number:
    if isinstance(node, ast.Expression):
        return _eval(node.body, names, text)
    if isinstance(node, ast.Constant):
        value = node.value
        assert isinstance(value, (int, float))  # guaranteed by _check
        return value
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, names, text))
    if isinstance(node, ast.BinOp):
        symbol, operation = _BINARY[type(node.op)]
        left = _eval(node.left, names, text)
        right = _eval(node.right, names, text)
        try:
            return operation(left, right)
        except ZeroDivisionError:
            raise ExprError(
                f"division by zero in {_source(node)!r} (= {left} {symbol} {right}) in {text!r}"
            ) from None
        except OverflowError:
            raise ExprError(f"number too large in {_source(node)!r} in {text!r}") from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        function = _FUNCTIONS[node.func.id][0]
        arguments = [_eval(argument, names, text) for argument in node.args]
        try:
            return function(*arguments)
        except (ValueError, OverflowError) as exc:
            raise ExprError(f"cannot evaluate {_source(node)!r} in {text!r}: {exc}") from None
    raise _not_allowed(type(node).__name__, node, text)  # pragma: no cover - rejected by _check


def validate(text: str, allowed_names: Collection[str]) -> None:
    """Check ``text`` without evaluating it: syntax, whitelist, and that every name is allowed.

    Meant for spec load time. Raises :class:`ExprError`.
    """
    _check(_parse(text), text, allowed_names)


def evaluate(text: str, names: Mapping[str, Number]) -> Number:
    """Evaluate the arithmetic expression ``text`` with ``names`` bound. Raises :class:`ExprError`."""
    tree = _parse(text)
    _check(tree, text, names.keys())
    return _eval(tree, names, text)


def rfc868_now() -> int:
    """The current time as RFC 868 (Time Protocol) counts it: seconds since 1900-01-01 00:00 UTC."""
    return int(time.time()) + RFC868_OFFSET
