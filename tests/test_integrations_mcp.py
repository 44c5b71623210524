"""MCP both ways, with the real `mcp` SDK: our server under the official client, our client against an SDK server."""

from __future__ import annotations

import asyncio
import json
import time

import gymnasium as gym
import pytest

mcp = pytest.importorskip("mcp", reason="the mcp package is not installed (pip install 'forage-gym[mcp]')")
from mcp import Client  # noqa: E402

import forage  # noqa: E402,F401
from forage.asgi_thread import ThreadedASGIServer, free_port  # noqa: E402
from forage.integrations.mcp import EPISODE_META_KEY, MCPEnvConfig, create_mcp_app  # noqa: E402

ENV = "forage/LookupQA-1hop-v0"


@pytest.fixture(scope="module")
def server():
    app = create_mcp_app(MCPEnvConfig(ENV, session_timeout=600.0))
    srv = ThreadedASGIServer(app, port=0, lifespan="on", thread_name="test-mcp").start()
    yield srv, app
    srv.stop()
    assert not app.episodes.held          # shutdown closed every episode


def _native(task_id: str, calls: list[tuple[str, dict]]) -> list[tuple[str, float]]:
    """Oracle: the same calls, written by hand in Hermes format, on a plain gym env."""
    env = gym.make(ENV)
    out = []
    try:
        env.reset(options={"task_id": task_id})
        for name, args in calls:
            obs, reward, *_ = env.step("<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>")
            out.append((obs, reward))
    finally:
        env.close()
    return out


def _task(index: int):
    env = gym.make(ENV).unwrapped
    try:
        return env.tasks[index]
    finally:
        env.close()


@pytest.mark.parametrize("mode", ["legacy", "auto"])     # 2025 session handshake, and stateless 2026-07-28
async def test_official_client_plays_an_episode(server, mode):
    srv, app = server
    task = _task(3)
    entity = task.metadata["path"][0]
    calls = [("lookup", {"name": entity}), ("lookup", {"nam": "x"}), ("answer", {"answer": task.answer})]
    want = _native(task.id, calls)
    async with Client(srv.url + "/mcp", mode=mode) as c:
        listed = {t.name: t for t in (await c.list_tools()).tools}
        env = gym.make(ENV).unwrapped
        assert set(listed) == {"reset"} | set(env.tools)
        for name, t in env.tools.items():
            assert listed[name].input_schema == t.parameters and listed[name].description == t.description
        env.close()
        early = await c.call_tool("lookup", {"name": entity})
        assert early.is_error and "call reset first" in early.content[0].text
        r = await c.call_tool("reset", {"task_id": task.id})
        assert not r.is_error and r.content[0].text == task.prompt
        meta = {EPISODE_META_KEY: r.structured_content["episode"]} if mode == "auto" else None
        total = 0.0
        for (name, args), (native_obs, native_reward) in zip(calls, want):
            out = await c.call_tool(name, args, meta=meta)
            text = out.content[0].text
            assert text in native_obs and native_obs.replace("<tool_response>\n", "").replace("\n</tool_response>", "") == text
            assert out.structured_content["reward"] == pytest.approx(native_reward)
            assert out.is_error == text.startswith("Error:")
            total += native_reward
        assert out.structured_content["terminated"] and out.structured_content["episode_reward"] == pytest.approx(total)
        bad = await c.call_tool("reset", {"seed": "zero"}, meta=meta)
        assert bad.is_error and "seed must be an integer" in bad.content[0].text


async def test_each_mcp_session_has_its_own_episode(server):
    srv, app = server
    a_task, b_task = _task(0), _task(1)
    async with Client(srv.url + "/mcp", mode="legacy") as a, Client(srv.url + "/mcp", mode="legacy") as b:
        await a.call_tool("reset", {"task_id": a_task.id})
        await b.call_tool("reset", {"task_id": b_task.id})
        ra = await a.call_tool("answer", {"answer": a_task.answer})
        rb = await b.call_tool("answer", {"answer": "wrong on purpose"})
        assert ra.structured_content["reward"] == pytest.approx(1.0)
        assert rb.structured_content["reward"] == pytest.approx(0.0)
        held_during = len(app.episodes.held)
    assert held_during >= 2
    assert not any(k.startswith("sid:") for k in app.episodes.held)   # the clients' DELETE closed both


async def test_a_client_that_disappears_leaks_nothing():
    app = create_mcp_app(MCPEnvConfig(ENV, session_timeout=0.5))
    torn_down: list[str] = []
    srv = ThreadedASGIServer(app, port=0, lifespan="on", thread_name="test-mcp-idle").start()
    try:
        c = Client(srv.url + "/mcp", mode="auto")          # stateless: no DELETE will ever come
        await c.__aenter__()
        r = await c.call_tool("reset", {"seed": 1})
        key = "ep:" + r.structured_content["episode"]
        held = app.episodes.held[key]
        original = held.session.env.teardown_episode

        async def spy(ep):
            torn_down.append(ep.task.id)
            await original(ep)

        held.session.env.teardown_episode = spy
        await c.__aexit__(None, None, None)                # gone mid-episode
        time.sleep(0.8)
        async with Client(srv.url + "/mcp", mode="auto") as other:   # any later request reaps idle episodes
            await other.list_tools()
            await other.call_tool("lookup", {"name": "x"})
        assert key not in app.episodes.held and len(torn_down) == 1       # its episode was torn down
    finally:
        srv.stop()


# -- our client: forage.tools.mcp_tools against an SDK MCPServer -------------------------------------------

@pytest.fixture(scope="module")
def sdk_server():
    from mcp.server.mcpserver import MCPServer

    s = MCPServer("calc")

    @s.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @s.tool()
    def fail(reason: str) -> str:
        """Always fails."""
        from mcp.server.mcpserver.exceptions import ToolError

        raise ToolError(f"refused: {reason}")   # the SDK passes a ToolError's message on, hides other exceptions

    srv = ThreadedASGIServer(s.streamable_http_app(), port=0, lifespan="on", thread_name="test-mcp-sdk").start()
    yield srv.url + "/mcp"
    srv.stop()


def test_mcp_tools_in_a_tool_env(sdk_server):
    from forage.envs import Task, ToolEnv
    from forage.envs.base import answer_tool
    from forage.tools import mcp_tools

    tools = mcp_tools(sdk_server)
    assert {t.name for t in tools} == {"add", "fail"}
    add = next(t for t in tools if t.name == "add")
    assert add.required == ["a", "b"] and add.properties["a"]["type"] == "integer"
    env = ToolEnv([Task("t", "What is 1234 + 4321?", "5555")], [*tools, answer_tool()],
                  score_fn=lambda ep: {"correct": float(ep.answer == ep.task.answer)})
    try:
        env.reset(seed=0)
        obs, *_ , info = env.step(env.format_call("add", a=1234, b=4321))
        assert "5555" in obs and not info["tool_errors"]                # 1234 + 4321, worked by hand
        obs, *_ , info = env.step(env.format_call("add", a="x", b=1))   # the env validates before calling out
        assert "invalid arguments for add" in obs
        obs, *_ , info = env.step(env.format_call("fail", reason="because"))
        assert "Error:" in obs and "refused: because" in obs and info["tool_errors"]
        obs, reward, terminated, *_ = env.step(env.format_call("answer", answer="5555"))
        assert terminated
    finally:
        env.close()


def test_mcp_tools_unreachable_server_is_a_clear_error():
    from forage.tools import mcp_tools

    with pytest.raises(ConnectionError, match="cannot list the tools"):
        mcp_tools(f"http://127.0.0.1:{free_port()}/mcp", timeout=5)


async def test_amcp_tools_inside_a_loop(sdk_server):
    from forage.tools import amcp_tools, mcp_tools

    tools = {t.name: t for t in await amcp_tools(sdk_server)}
    res = await tools["add"].acall({"a": 2, "b": 40})
    assert res.ok and res.content.strip() == "42"
    with pytest.raises(RuntimeError, match="amcp_tools"):
        mcp_tools(sdk_server)


def test_cli_serve_mcp_unknown_env_is_a_clear_error():
    from typer.testing import CliRunner

    from forage.cli import app

    r = CliRunner().invoke(app, ["serve", "mcp", "forage/NoSuchEnv-v0", "--port", str(free_port())])
    assert r.exit_code == 2 and "error" in r.output.lower()
