"""Tests for grader.judge.expr: the whitelisted arithmetic evaluator."""

from __future__ import annotations

import time

import pytest

from grader.judge.expr import RFC868_OFFSET, ExprError, evaluate, rfc868_now, validate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("-x + 10", 5),
        ("+x", 5),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("7 / 2", 3.5),
        ("min(x, 3, 9)", 3),
        ("max(x, 3)", 5),
        ("int(7 / 2)", 3),
        ("abs(-x)", 5),
        ("now - 2", 98),
        ("1.5 * 2", 3.0),
        ("  x  ", 5),
    ],
)
def test_evaluate(text: str, expected: float) -> None:
    assert evaluate(text, {"x": 5, "now": 100}) == expected


@pytest.mark.parametrize(
    ("text", "construct"),
    [
        ("__import__('os')", "calling '__import__'"),
        ("os.system", "attribute access"),
        ("(1).__class__", "attribute access"),
        ("x.real", "attribute access"),
        ("(lambda: 1)()", "lambda"),
        ("lambda: 1", "lambda"),
        ("[i for i in x]", "list comprehension"),
        ("sum(i for i in x)", "calling 'sum'"),
        ("max(i for i in x)", "generator expression"),
        ("{i: i for i in x}", "dict comprehension"),
        ("x ** 2", "operator **"),
        ("x < 1", "comparison"),
        ("x and 1", "boolean operator"),
        ("1 if x else 2", "conditional expression"),
        ("'abc'", "string literal"),
        ("x[0]", "subscript"),
        ("True", "bool literal"),
        ("int(x, base=2)", "keyword argument"),
        ("~x", "operator ~"),
        ("eval('1')", "calling 'eval'"),
    ],
)
def test_rejects_everything_not_whitelisted(text: str, construct: str) -> None:
    with pytest.raises(ExprError) as info:
        evaluate(text, {"x": 5})
    assert construct in str(info.value)
    with pytest.raises(ExprError):
        validate(text, ["x"])


def test_expr_error_is_a_value_error() -> None:
    assert issubclass(ExprError, ValueError)


@pytest.mark.parametrize("text", ["1 +", "(1", "", "x y"])
def test_syntax_errors(text: str) -> None:
    with pytest.raises(ExprError, match="syntax error"):
        evaluate(text, {"x": 1})
    with pytest.raises(ExprError, match="syntax error"):
        validate(text, ["x"])


def test_unknown_names() -> None:
    with pytest.raises(ExprError, match="unknown name 'y'"):
        evaluate("x + y", {"x": 1})
    with pytest.raises(ExprError, match="unknown name 'y'"):
        validate("x + y", ["x"])
    with pytest.raises(ExprError, match="unknown name 'max'"):
        validate("max + 1", ["x"])
    validate("min(x, now) + 1", ["x", "now"])


def test_argument_counts() -> None:
    with pytest.raises(ExprError, match="at least 2"):
        evaluate("max(1)", {})
    with pytest.raises(ExprError, match="exactly 1"):
        evaluate("abs(1, 2)", {})


def test_runtime_errors() -> None:
    with pytest.raises(ExprError, match="division by zero"):
        evaluate("x // (x - 5)", {"x": 5})
    with pytest.raises(ExprError, match="division by zero"):
        evaluate("1 % 0", {})
    with pytest.raises(ExprError):
        evaluate("int(1e400)", {})


def test_too_long() -> None:
    with pytest.raises(ExprError, match="too long"):
        evaluate("+".join(["1"] * 1000), {})


def test_rfc868_now() -> None:
    before = int(time.time()) + RFC868_OFFSET
    value = rfc868_now()
    after = int(time.time()) + RFC868_OFFSET
    assert before <= value <= after
    assert RFC868_OFFSET == 2208988800
