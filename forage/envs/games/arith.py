"""Exact rational arithmetic on small expressions: a safe parser and the Game of 24 solver."""

from __future__ import annotations

import ast
import functools
import itertools
from fractions import Fraction

__all__ = ["ExpressionError", "evaluate", "expression_numbers", "solve24", "all_instances"]

MAX_EXPRESSION_CHARS = 300
_MAX_MAGNITUDE = 10**12  # keeps ``calculator`` results (and their Fraction parts) small


class ExpressionError(ValueError):
    """The expression is not plain arithmetic on integers, or it cannot be evaluated."""


def _parse(expression: str) -> ast.expr:
    if not isinstance(expression, str):
        raise ExpressionError("the expression must be a string")
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("−", "-")
    if not text:
        raise ExpressionError("the expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        return ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise ExpressionError(f"cannot parse {text[:80]!r} as arithmetic") from None


_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


def _eval(node: ast.expr, allow_unary: bool) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Fraction(node.value)
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, allow_unary), _eval(node.right, allow_unary)
        if isinstance(node.op, ast.Div):
            if b == 0:
                raise ExpressionError("division by zero")
            out = a / b
        elif type(node.op) in _OPS:
            out = _OPS[type(node.op)](a, b)
        else:
            raise ExpressionError("only + - * / and parentheses are allowed")
        if abs(out.numerator) > _MAX_MAGNITUDE or out.denominator > _MAX_MAGNITUDE:
            raise ExpressionError("a number in the expression grew too large")
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        if not allow_unary:
            raise ExpressionError("signs (unary + or -) are not allowed; combine the numbers with + - * /")
        v = _eval(node.operand, allow_unary)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Constant):
        raise ExpressionError(f"only whole numbers are allowed, not {node.value!r}"[:120])
    raise ExpressionError("only whole numbers, + - * / and parentheses are allowed")


def evaluate(expression: str, allow_unary: bool = True) -> Fraction:
    """The exact value of an arithmetic expression on whole numbers (+ - * / and parentheses)."""
    try:
        return _eval(_parse(expression), allow_unary)
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply") from None


def expression_numbers(expression: str) -> list[int]:
    """The whole numbers written in ``expression``, in order."""
    out: list[int] = []
    stack = [_parse(expression)]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Constant) and type(node.value) is int:
            out.append(node.value)
        stack.extend(ast.iter_child_nodes(node))
    return sorted(out)


def _splits(nums: tuple[int, ...]):
    """Every way to cut the multiset ``nums`` into two non-empty parts (each unordered pair once)."""
    n = len(nums)
    seen = set()
    for mask in range(1, (1 << n) - 1):
        left = tuple(nums[i] for i in range(n) if mask >> i & 1)
        right = tuple(nums[i] for i in range(n) if not mask >> i & 1)
        key = (left, right) if left <= right else (right, left)
        if key not in seen:
            seen.add(key)
            yield key


def _p(e: str) -> str:
    return e if e.isdigit() else f"({e})"


def _combine(a: Fraction, ea: str, b: Fraction, eb: str):
    yield a + b, f"{ea} + {eb}"
    yield a * b, f"{_p(ea)} * {_p(eb)}"
    yield a - b, f"{ea} - {_p(eb)}"
    yield b - a, f"{eb} - {_p(ea)}"
    if b != 0:
        yield a / b, f"{_p(ea)} / {_p(eb)}"
    if a != 0:
        yield b / a, f"{_p(eb)} / {_p(ea)}"


@functools.lru_cache(maxsize=20_000)
def _reach(nums: tuple[int, ...]) -> dict[Fraction, str]:
    """Every value an expression using each of ``nums`` once can take, with one expression for each."""
    if len(nums) == 1:
        return {Fraction(nums[0]): str(nums[0])}
    out: dict[Fraction, str] = {}
    for left, right in _splits(nums):
        for a, ea in _reach(left).items():
            for b, eb in _reach(right).items():
                for v, e in _combine(a, ea, b, eb):
                    out.setdefault(v, e)
    return out


def solve24(numbers: tuple[int, ...] | list[int], target: int = 24) -> str | None:
    """One expression using every number once that equals ``target`` exactly, or None if there is none.

    A complete search: every expression is a binary tree, so its root splits the numbers in two
    parts whose reachable values are combined with one of the four operations.
    """
    nums = tuple(sorted(int(n) for n in numbers))
    if len(nums) == 1:
        return str(nums[0]) if nums[0] == target else None
    t = Fraction(target)
    for left, right in _splits(nums):
        rv = _reach(right)
        for a, ea in _reach(left).items():
            wants = [t - a, a - t, t + a]
            if a != 0:
                wants.append(t / a)
            if t != 0:
                wants.append(a / t)
            wants.append(t * a)
            for b in wants:
                if b in rv:
                    for v, e in _combine(a, ea, b, rv[b]):
                        if v == t:
                            return e
    return None


@functools.lru_cache(maxsize=4)
def all_instances(low: int = 1, high: int = 13, target: int = 24) -> tuple[tuple[tuple[int, ...], str], ...]:
    """Every multiset of four numbers in ``[low, high]`` that can make ``target``, with one solution each."""
    out = []
    for combo in itertools.combinations_with_replacement(range(low, high + 1), 4):
        sol = solve24(combo, target)
        if sol is not None:
            out.append((combo, sol))
    return tuple(out)
