"""Every tool-call format's parser is total (never raises) and linear (n vs 16n characters), fuzzed with hypothesis."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forage.envs import answer_tool
from forage.tools import FORMATS, ParsedAction, ToolCall, get_format, tool
from forage.tools.formats import MAX_ERRORS, MAX_JSON_DEPTH
from _fuzz_helpers import FAMILIES, GROWTH, hostile_texts, json_values, scaling_ratio


@tool
def search(query: str) -> str:
    """Search."""
    return query


@tool
def python(code: str, timeout: float = 5.0) -> str:
    """Run code."""
    return code


@tool
def move(x: int, y: int) -> str:
    """Two required parameters: the XML body must be a JSON object."""
    return f"{x},{y}"


TOOLS = {t.name: t for t in (search, python, move, answer_tool())}
FORMAT_NAMES = sorted(FORMATS)


def check_parsed(p: ParsedAction) -> None:
    """The parser's output contract: calls with a str name and dict arguments, str problems, capped."""
    assert isinstance(p, ParsedAction) and isinstance(p.text, str)
    assert all(isinstance(c, ToolCall) and isinstance(c.name, str) and isinstance(c.arguments, dict) for c in p.calls)
    assert all(isinstance(e, str) for e in p.errors) and len(p.errors) <= MAX_ERRORS
    json.dumps([c.arguments for c in p.calls])  # what the env puts in info must serialise


@pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
@settings(max_examples=150, deadline=None)
@given(text=hostile_texts())
def test_parsers_are_total(fmt_name, text):
    check_parsed(get_format(fmt_name).parse(text, TOOLS))


@pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
@settings(max_examples=60, deadline=None)
@given(args=st.dictionaries(st.sampled_from(["query", "x", "k", "deep"]), json_values, min_size=1, max_size=3))
def test_written_calls_parse_back(fmt_name, args):
    """A call written by the format parses back to the same arguments (json.loads of json.dumps as the oracle)."""
    fmt = get_format(fmt_name)
    call = ToolCall("move", args)   # two required parameters: every format carries the JSON object
    parsed = fmt.parse(fmt.format_call(call), TOOLS)
    assert not parsed.errors and [c.name for c in parsed.calls] == ["move"]
    assert parsed.calls[0].arguments == json.loads(json.dumps(args))


def test_depth_limit_is_exact():
    """MAX_JSON_DEPTH levels of nesting parse; one more is a readable problem, not a RecursionError."""
    fmt = get_format("hermes")
    ok = "[" * (MAX_JSON_DEPTH - 2) + "]" * (MAX_JSON_DEPTH - 2)   # two levels: the call object, its arguments
    deep = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    wrap = '<tool_call>{{"name": "python", "arguments": {{"code": "x", "n": {}}}}}</tool_call>'
    assert fmt.parse(wrap.format(ok), TOOLS).calls[0].arguments["n"] == json.loads(ok)
    p = fmt.parse(wrap.format(deep), TOOLS)
    assert not p.calls and "nested more than" in p.errors[0]


@pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_parse_time_is_linear(fmt_name, family):
    fmt = get_format(fmt_name)
    n, raw, rel = scaling_ratio(lambda s: fmt.parse(s, TOOLS), FAMILIES[family])
    print(f"{fmt_name}/{family}: n={n}, {GROWTH}x the text: {raw:.1f}x the time, {rel:.2f}x a copy's growth "
          f"(linear ~1, quadratic ~{GROWTH})")
    assert rel < GROWTH / 2, f"{fmt_name} on {family}: {GROWTH}x the input took {raw:.1f}x the time ({rel:.2f}x a copy's growth)"
