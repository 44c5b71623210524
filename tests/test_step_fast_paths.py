"""The env step's fast paths: the flat-schema yes-check, the inline (eager) runner, the lookup caches.

Each fast path is checked against the slow path it replaces (jsonschema itself, the event loop),
and is counted, so a fast path that silently stopped engaging fails too.
"""

from __future__ import annotations

import asyncio

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forage.envs.base import Task, ToolEnv, _LoopRunner, answer_tool
from forage.envs.lookup import LookupQAEnv
from forage.tools import Tool, tool
from forage.tools.base import flat_schema_check

TYPES = ["string", "integer", "number", "boolean", "object", "array", "null"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
names = st.sampled_from(["a", "b", "c", "name", "k"])


@st.composite
def flat_schemas(draw):
    props = draw(st.dictionaries(names, st.one_of(
        st.builds(lambda t: {"type": t}, st.sampled_from(TYPES)),
        st.just({}),
        st.builds(lambda t: {"type": t, "description": "d", "default": 1}, st.sampled_from(TYPES)),
    ), max_size=4))
    schema = {"type": "object", "properties": props}
    if draw(st.booleans()):
        schema["required"] = draw(st.lists(names, max_size=3))
    if draw(st.booleans()):
        schema["additionalProperties"] = draw(st.booleans())
    return schema


@settings(max_examples=400, deadline=None)
@given(flat_schemas(), st.dictionaries(names, json_values, max_size=4))
def test_flat_check_never_accepts_what_jsonschema_rejects(schema, arguments):
    check = flat_schema_check(schema)
    assert check is not None, schema              # every schema drawn here is flat
    oracle = jsonschema.Draft202012Validator(schema).is_valid(arguments)
    if check(arguments):
        assert oracle, (schema, arguments)
    # and Tool.validate (fast path, then jsonschema for the message) agrees with jsonschema exactly
    t = Tool("t", "d", schema, lambda **kw: "ok")
    assert (t.validate(arguments) is None) == oracle


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"type": "string", "minLength": 2}}},
    {"type": "object", "properties": {"a": {"type": ["string", "null"]}}},
    {"type": "object", "properties": {"a": {"enum": [1, 2]}}},
    {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}},
    {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
    {"type": "object", "anyOf": [{"required": ["a"]}]},
    {"type": "array"},
    {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"},
])
def test_schemas_beyond_flat_use_jsonschema(schema):
    assert flat_schema_check(schema) is None
    t = Tool("t", "d", schema, lambda **kw: "ok")
    for args in ({}, {"a": "x"}, {"a": 1}, {"a": [1, "x"]}, {"a": None, "b": 3}):
        assert (t.validate(args) is None) == jsonschema.Draft202012Validator(schema).is_valid(args)


def test_valid_lookup_calls_skip_jsonschema(monkeypatch):
    """The LookupQA tools' valid calls never reach jsonschema; invalid ones still get its message."""
    env = LookupQAEnv()
    calls = []

    class Counting:
        def __init__(self, real):
            self.real = real

        def iter_errors(self, args):
            calls.append(args)
            return self.real.iter_errors(args)

    for t in env.tools.values():
        monkeypatch.setattr(t, "_validator", Counting(t._validator))
    env.reset(seed=0)
    for action in env.oracle_actions(env.episode.task):
        env.step(action)
    assert calls == []
    env.reset(seed=0)
    obs, *_ , info = env.step(env.format_call("lookup", name=7))
    assert len(calls) == 1 and "is not of type 'string'" in obs
    env.close()


class _CountingLoop:
    """Counts run_until_complete calls on the runner's loop."""

    def __init__(self, runner: _LoopRunner) -> None:
        runner.run(asyncio.sleep(0))
        self.loop = runner._loop
        self.real = self.loop.run_until_complete
        self.calls = 0
        self.loop.run_until_complete = self._count  # type: ignore[method-assign]

    def _count(self, coro):
        self.calls += 1
        return self.real(coro)


def test_sync_tools_step_without_the_loop():
    env = LookupQAEnv()
    counter = _CountingLoop(env._runner)
    local = LookupQAEnv()
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        want = asyncio.run(local.areset(seed=seed))
        assert obs == want[0] and info["task_id"] == want[1]["task_id"]
        for action in env.oracle_actions(env.episode.task):
            got = env.step(action)
            exp = asyncio.run(local.astep(action))
            assert got[:4] == exp[:4] and got[4]["rewards"] == exp[4]["rewards"]
    assert counter.calls == 0                      # every reset and step ran inline
    env.close()


def test_async_tools_and_timeouts_still_use_the_loop():
    @tool
    async def slow(x: str) -> str:
        """Sleep a little, then echo."""
        await asyncio.sleep(0.001)
        return x

    env = ToolEnv([Task("t", "go", "x")], [slow, answer_tool()], on_no_tool_call="error")
    counter = _CountingLoop(env._runner)
    env.reset(seed=0)
    obs, *_ = env.step(env.format_call("slow", x="hi"))
    assert "hi" in obs and counter.calls == 1
    env.close()

    @tool
    def quick(x: str) -> str:
        """Echo."""
        return x

    env = ToolEnv([Task("t", "go", "x")], [quick, answer_tool()], tool_timeout=5.0)
    counter = _CountingLoop(env._runner)
    env.reset(seed=0)
    assert counter.calls == 0                      # reset has no tool: inline
    obs, *_ = env.step(env.format_call("quick", x="hi"))
    assert "hi" in obs and counter.calls == 1      # a timeout needs the loop


def test_eager_runner_finishes_coroutines_that_suspend():
    runner = _LoopRunner()

    async def work(n: int) -> int:
        loop = asyncio.get_running_loop()
        total = 0
        for i in range(n):
            await asyncio.sleep(0)                     # a bare yield
            total += await loop.run_in_executor(None, lambda i=i: i)   # a real future
        await asyncio.wait_for(asyncio.sleep(0.001), 5)
        return total

    assert runner.run(work(5), eager=True) == sum(range(5))

    async def boom() -> None:
        await asyncio.sleep(0)
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        runner.run(boom(), eager=True)

    async def immediate() -> str:
        return "now"

    assert runner.run(immediate(), eager=True) == "now"
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()                     # no loop left marked as running
    runner.close()


def test_lookup_caches_give_the_uncached_answers():
    env = LookupQAEnv()
    kb = env.kb
    from forage.envs.rewards import normalize_answer

    for name, ent in list(kb.entities.items())[:50]:
        assert kb.get(name) is kb._by_key[normalize_answer(name)]
        assert kb.get(name.upper() + "!") is kb._by_key[normalize_answer(name)]
        first = env.tools["lookup"](name=name).content
        assert first == ent.describe() == env.tools["lookup"](name=name).content
    assert kb.get("x" * 300) is None
    env.close()


def test_xml_plan_follows_a_tool_replaced_under_the_same_name():
    """The XML format works out each tool's argument shape once per tool set: a new tool object under an
    old name (one string parameter -> two required ones) must be parsed by its own schema, not the cached one."""
    from forage.tools.formats import get_format

    fmt = get_format("xml")
    one = Tool("f", "one", {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}, lambda q: q)
    assert fmt.parse("<f>hello</f>", {"f": one}).calls[0].arguments == {"q": "hello"}
    two = Tool("f", "two", {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
                            "required": ["a", "b"]}, lambda a, b: a)
    parsed = fmt.parse('<f>{"a": "x", "b": 2}</f>', {"f": two})
    assert parsed.calls[0].arguments == {"a": "x", "b": 2} and not parsed.errors
    assert fmt.parse("<f>hello</f>", {"f": two}).errors          # a bare string no longer fits
    assert fmt.parse("<f>hello</f>", {"f": one}).calls[0].arguments == {"q": "hello"}


def test_inline_calls_report_failures_as_the_loop_path_does():
    """``call_inline`` (plain functions, no loop) gives the same results and error kinds as ``acall`` through a loop."""
    from forage.tools import ToolError

    def boom(x: str) -> str:
        if x == "tool":
            raise ToolError("no such page")
        if x == "bug":
            raise ZeroDivisionError("oops")
        return x.upper()

    inline = Tool("boom", "d", {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}, boom)

    class Looped(Tool):                      # the same function behind the async run(): not inline
        async def run(self, episode=None, **arguments):
            return boom(**arguments)

    looped = Looped("boom", "d", inline.parameters)
    assert inline.inline and not looped.inline
    for args in ({"x": "ok"}, {"x": "tool"}, {"x": "bug"}, {"x": 3}, {}):
        got, want = inline.call_inline(args), asyncio.run(looped.acall(args))
        assert (got.content, got.error, got.name) == (want.content, want.error, want.name), args
    assert asyncio.run(inline.acall({"x": "ok"})).content == "OK"
    with pytest.raises(TypeError):
        looped.call_inline({"x": "ok"})


def test_a_tool_that_overrides_acall_is_not_bypassed():
    """The inline path skips ``acall``: a subclass that overrides it (logging, caching...) must still be called."""
    seen = []

    class Logged(Tool):
        async def acall(self, arguments, episode=None):
            seen.append(arguments)
            return await super().acall(arguments, episode)

    echo = Logged("echo", "Echo.", {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
                  lambda x: x.upper())
    assert not echo.inline
    env = ToolEnv([Task("t", "go", "x")], [echo, answer_tool()])
    env.reset(seed=0)
    obs, *_ = env.step(env.format_call("echo", x="hi"))
    assert "HI" in obs and seen == [{"x": "hi"}]
    env.close()
