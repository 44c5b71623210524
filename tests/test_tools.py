"""Tools: schema derivation, validation, calling, and the three tool-call formats."""

from __future__ import annotations

import asyncio
import json
from typing import Literal, Optional

import pytest

from forage.tools import (
    HermesFormat,
    OpenAIFormat,
    Tool,
    ToolCall,
    ToolError,
    ToolResult,
    XMLTagFormat,
    get_format,
    tool,
    truncate_text,
)


@tool
def search(query: str, k: int = 3, mode: Literal["fast", "exact"] = "fast", tags: Optional[list[str]] = None) -> str:
    """Search the corpus.

    Args:
        query: what to look for
        k: how many results
    """
    return f"{query}|{k}|{mode}|{tags}"


@tool(terminal=True)
async def answer(text: str) -> str:
    """Give the final answer."""
    return f"got {text}"


@tool
def needs_episode(x: int, episode=None) -> str:
    """Uses the episode state."""
    return f"{x}:{episode}"


def test_schema_from_typed_function():
    s = search.schema()
    assert s["type"] == "function"
    fn = s["function"]
    assert fn["name"] == "search"
    assert fn["description"] == "Search the corpus."
    props = fn["parameters"]["properties"]
    assert props["query"] == {"type": "string", "description": "what to look for"}
    assert props["k"] == {"type": "integer", "description": "how many results", "default": 3}
    assert props["mode"]["enum"] == ["fast", "exact"]
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert fn["parameters"]["required"] == ["query"]
    assert answer.terminal and not search.terminal


def test_episode_parameter_is_hidden_and_injected():
    assert "episode" not in needs_episode.parameters["properties"]
    res = asyncio.run(needs_episode.acall({"x": 2}, episode="EP"))
    assert res.ok and res.content == "2:EP"


def test_validation_errors_are_results_not_exceptions():
    bad = asyncio.run(search.acall({"k": "three"}))
    assert not bad.ok and bad.error == "invalid_arguments"
    assert "query" in bad.content and "required" in bad.content
    extra = asyncio.run(search.acall({"query": "q", "nope": 1}))
    assert extra.error == "invalid_arguments" and "nope" in extra.content
    not_obj = asyncio.run(search.acall(["q"]))  # type: ignore[arg-type]
    assert not_obj.error == "invalid_arguments"


def test_sync_and_async_call():
    assert search(query="cats").content == "cats|3|fast|None"
    assert asyncio.run(answer.acall({"text": "42"})).content == "got 42"


def test_tool_failures_become_results():
    @tool
    def boom() -> str:
        """Fails."""
        raise RuntimeError("kaput")

    @tool
    def refuses() -> str:
        """Refuses."""
        raise ToolError("not allowed")

    @tool(timeout=0.05)
    async def slow() -> str:
        """Sleeps."""
        await asyncio.sleep(5)
        return "late"

    r = boom()
    assert r.error == "exception" and "kaput" in r.content
    assert refuses().error == "tool_error" and refuses().content == "Error: not allowed"
    assert slow().error == "timeout"


def test_tool_subclass_and_bad_name():
    class Echo(Tool):
        name = "echo"
        description = "Echo back."
        parameters = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}

        async def run(self, episode=None, **args):
            return ToolResult(args["text"].upper())

    assert Echo()(text="hi").content == "HI"
    with pytest.raises(ValueError):
        Tool("bad name!", "x", {"type": "object"})


TOOLS = {"search": search, "answer": answer}


def test_hermes_parse_and_roundtrip():
    fmt = HermesFormat()
    text = ('Let me look.\n<tool_call>\n{"name": "search", "arguments": {"query": "x", "k": 2}}\n</tool_call>\n'
            '<tool_call>{"name": "answer", "arguments": "{\\"text\\": \\"y\\"}"}</tool_call>')
    p = fmt.parse(text, TOOLS)
    assert [c.name for c in p.calls] == ["search", "answer"]
    assert p.calls[0].arguments == {"query": "x", "k": 2}
    assert p.calls[1].arguments == {"text": "y"}  # arguments given as a JSON string
    assert p.text == "Let me look." and not p.errors
    call = ToolCall("search", {"query": "ünïcode ✓"})
    assert fmt.parse(fmt.format_call(call), TOOLS).calls[0].arguments == call.arguments
    results = fmt.format_results([ToolResult("a"), ToolResult("b")])
    assert results == "<tool_response>\na\n</tool_response>\n<tool_response>\nb\n</tool_response>"


@pytest.mark.parametrize("text,needle", [
    ("<tool_call>{not json}</tool_call>", "not valid JSON"),
    ('<tool_call>{"arguments": {}}</tool_call>', "no 'name'"),
    ('<tool_call>{"name": "search", "arguments": [1]}</tool_call>', "JSON object"),
    ('<tool_call>{"name": "search", "arguments": {"query": "x"}', "never closed"),
    ('<tool_call>"just a string"</tool_call>', "JSON object"),
])
def test_hermes_malformed_calls_are_reported(text, needle):
    p = HermesFormat().parse(text, TOOLS)
    assert not p.calls
    assert any(needle in e for e in p.errors), p.errors


def test_xml_format():
    fmt = XMLTagFormat()
    p = fmt.parse("<think>hmm</think><search>capital of France</search> then <answer>Paris</answer>", TOOLS)
    assert [(c.name, c.arguments) for c in p.calls] == [("search", {"query": "capital of France"}), ("answer", {"text": "Paris"})]
    assert fmt.parse('<search>{"query": "q", "k": 5}</search>', TOOLS).calls[0].arguments == {"query": "q", "k": 5}
    unclosed = fmt.parse("<search>never closed", TOOLS)
    assert not unclosed.calls and "never closed" in unclosed.errors[0]
    assert fmt.format_results([ToolResult("doc")]) == "<information>doc</information>"
    assert fmt.format_call(ToolCall("answer", {"text": "Paris"})) == "<answer>Paris</answer>"
    assert "<search>query</search>" in fmt.instructions([search, answer])


def test_openai_format():
    fmt = OpenAIFormat()
    msg = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{\"query\": \"q\"}"}}]}
    p = fmt.parse(json.dumps(msg), TOOLS)
    assert p.calls[0].name == "search" and p.calls[0].arguments == {"query": "q"} and p.calls[0].id == "c1"
    assert fmt.parse(json.dumps(msg["tool_calls"]), TOOLS).calls[0].name == "search"
    assert fmt.parse("{broken", TOOLS).errors
    assert fmt.parse("plain words", TOOLS).text == "plain words"
    out = json.loads(fmt.format_results([ToolResult("r", name="search", call_id="c1")]))
    assert out == [{"role": "tool", "tool_call_id": "c1", "name": "search", "content": "r"}]


def test_get_format_and_truncation():
    assert isinstance(get_format("xml"), XMLTagFormat)
    with pytest.raises(ValueError):
        get_format("yaml")
    text, cut = truncate_text("x" * 10_000, 1000)
    assert cut and len(text) <= 1000 and "truncated" in text
    assert truncate_text("short", 1000) == ("short", False)


# -- stops: each format says where a turn ends, so the model never writes the results itself ----------

def cut_at_stops(text: str, stops: tuple[str, ...]) -> str:
    """What a server returns with ``include_stop_str_in_output``: the text up to and with the first stop."""
    ends = [text.find(s) + len(s) for s in stops if s in text]
    return text[: min(ends)] if ends else text


@pytest.mark.parametrize("fmt_name", ["hermes", "xml", "openai"])
def test_each_format_declares_its_stops(fmt_name):
    fmt = get_format(fmt_name)
    expected = {"hermes": ("</tool_call>",), "xml": ("</search>", "</answer>"), "openai": ()}[fmt_name]
    assert fmt.stop_strings(TOOLS) == expected == fmt.stop_strings(list(TOOLS.values()))
    # a search, results the model made up, and an answer based on them, all in one turn
    fake = fmt.format_results([ToolResult("Paris is the capital.", name="search", call_id="call_0")])
    turn = fmt.format_call(ToolCall("search", {"query": "capital of France"})) + fake + \
        fmt.format_call(ToolCall("answer", {"text": "Paris"}))
    cut = cut_at_stops(turn, fmt.stop_strings(TOOLS))
    p = fmt.parse(cut, TOOLS)
    if fmt_name == "openai":   # no stop string: the made-up results make the message invalid JSON
        assert not p.calls and p.errors
    else:                      # the turn ends with the search call, complete (the stop string kept)
        assert cut.endswith(expected[0]) and "Paris" not in cut
        assert [c.name for c in p.calls] == ["search"] and not p.errors


@pytest.mark.parametrize("text,calls", [
    ('<tool_call>{"name": "search", "arguments": {"query": "q"}}</tool_call>\n<tool_response>\nParis\n'
     '</tool_response>\n<tool_call>{"name": "answer", "arguments": {"text": "Paris"}}</tool_call>', ["search"]),
    ('<tool_response>x</tool_response><tool_call>{"name": "answer", "arguments": {"text": "x"}}</tool_call>', []),
])
def test_hermes_ignores_what_follows_results_the_model_wrote(text, calls):
    p = HermesFormat().parse(text, TOOLS)
    assert [c.name for c in p.calls] == calls
    assert any("<tool_response>" in e and "results come only from the tools" in e for e in p.errors)


def test_xml_ignores_what_follows_results_the_model_wrote():
    text = "<search>capital of France</search><information>Paris is the capital.</information><answer>Paris</answer>"
    p = XMLTagFormat().parse(text, TOOLS)
    assert [c.name for c in p.calls] == ["search"]
    assert any("<information>" in e for e in p.errors)
    # a tool that is itself named like the result tag is a tool, not an imagined result
    info = Tool("information", "Info.", {"type": "object", "properties": {"topic": {"type": "string"}},
                                          "required": ["topic"]}, lambda topic: topic)
    p = XMLTagFormat().parse("<information>x</information><answer>y</answer>", {**TOOLS, "information": info})
    assert [c.name for c in p.calls] == ["information", "answer"] and not p.errors


def test_markdown_fences_around_hermes_json():
    p = HermesFormat().parse('<tool_call>\n```json\n{"name": "search", "arguments": {"query": "q"}}\n```\n</tool_call>', TOOLS)
    assert [(c.name, c.arguments) for c in p.calls] == [("search", {"query": "q"})]


# -- totality: inputs that used to raise out of parse() (and so out of env.step) -------------------------

@pytest.mark.parametrize("fmt_name", ["hermes", "xml", "openai"])
@pytest.mark.parametrize("body,needle", [
    ("[" * 20_000, "nested more than"),                      # json.loads: RecursionError
    ('{"a":' * 20_000, "nested more than"),
    ("7" * 5_000, "digits"),                                  # int(): ValueError past 4,300 digits
    ('{"name": "search", "arguments": {"query": ' + "9" * 5_000 + "}}", "digits"),
])
def test_hostile_json_is_an_error_not_an_exception(fmt_name, body, needle):
    @tool
    def move(x: int, y: int) -> str:
        """Two required parameters: an XML body must be their JSON object."""
        return f"{x},{y}"

    wrap = {"hermes": "<tool_call>{}</tool_call>", "xml": "<move>{}</move>", "openai": "[{}]"}[fmt_name]
    p = get_format(fmt_name).parse(wrap.replace("{}", body, 1), {**TOOLS, "move": move})
    assert not p.calls and any(needle in e for e in p.errors), p.errors


def test_problems_are_capped():
    from forage.tools.formats import MAX_ERRORS

    p = HermesFormat().parse("<tool_call>nope</tool_call>" * 10_000, TOOLS)
    assert len(p.errors) == MAX_ERRORS and p.errors[-1] == f"... and {10_000 - MAX_ERRORS + 1} more problems like these"
