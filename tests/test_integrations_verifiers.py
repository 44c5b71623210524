"""A Forage env as a `verifiers` environment: its own evaluate() and its `vf-eval` entry point.

A scripted OpenAI-compatible endpoint (a real HTTP server on 127.0.0.1) makes the rollouts exact;
the slow test runs `vf-eval` against the session's vLLM server (tool parsing on).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

vf = pytest.importorskip("verifiers", reason="verifiers is not installed (pip install 'forage-gym[verifiers]')")
from openai import AsyncOpenAI  # noqa: E402

import forage  # noqa: E402,F401
from forage.asgi_thread import ThreadedASGIServer  # noqa: E402
from forage.integrations import session as session_module  # noqa: E402
from forage.integrations.verifiers import load_environment  # noqa: E402

ENV = "forage/LookupQA-1hop-v0"


def _tasks(n: int):
    env = gym.make(ENV).unwrapped
    try:
        return env.tasks[:n]
    finally:
        env.close()


class _Script:
    """The assistant's turns, per task: a chatty turn (no tool call), a bad call, a lookup, then an answer.

    The second rollout of each task answers wrong, so the rubric must tell them apart.
    """

    def __init__(self, tasks):
        self.tasks = tasks
        self.rollouts: dict[str, int] = {}
        self.seen_tools: list = []

    def reply(self, body: dict) -> dict:
        msgs = body["messages"]
        self.seen_tools.append(body.get("tools"))
        user = next(m["content"] for m in msgs if m["role"] == "user")
        task = next(t for t in self.tasks if t.prompt == user)
        turn = sum(1 for m in msgs if m["role"] == "assistant")
        if turn == 0:
            n = self.rollouts[task.id] = self.rollouts.get(task.id, 0) + 1
            return {"role": "assistant", "content": f"Let me think about where to look (rollout {n})."}
        if turn == 1:
            call = {"name": "lookup", "arguments": json.dumps({"nam": "typo"})}
        elif turn == 2:
            call = {"name": "lookup", "arguments": json.dumps({"name": task.metadata["path"][0]})}
        else:
            first = next(m["content"] for m in msgs if m["role"] == "assistant")
            answer = task.answer if first.endswith("(rollout 1).") else "not this"
            call = {"name": "answer", "arguments": json.dumps({"answer": answer})}
        return {"role": "assistant", "content": None,
                "tool_calls": [{"id": f"call{turn}", "type": "function", "function": call}]}


def _native_reward(task, answer: str) -> float:
    """Oracle: the same four turns as text on a plain gym env."""
    env = gym.make(ENV)
    try:
        env.reset(options={"task_id": task.id})
        total = 0.0
        for action in ["Let me think about where to look (rollout 1).",
                       '<tool_call>{"name": "lookup", "arguments": {"nam": "typo"}}</tool_call>',
                       '<tool_call>' + json.dumps({"name": "lookup", "arguments": {"name": task.metadata["path"][0]}})
                       + '</tool_call>',
                       '<tool_call>' + json.dumps({"name": "answer", "arguments": {"answer": answer}}) + '</tool_call>']:
            total += env.step(action)[1]
        return total
    finally:
        env.close()


@pytest.fixture()
def scripted():
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    script = _Script(_tasks(2))

    async def chat(request: Request):
        body = await request.json()
        return JSONResponse({"id": "s", "object": "chat.completion", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "message": script.reply(body), "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    with ThreadedASGIServer(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])) as srv:
        yield srv.url + "/v1", script


def test_evaluate_scores_with_the_env_reward(scripted, monkeypatch):
    url, script = scripted
    opened, closed = [], []
    init, close = session_module.EnvSession.__init__, session_module.EnvSession.close
    monkeypatch.setattr(session_module.EnvSession, "__init__", lambda self, *a, **k: (opened.append(1), init(self, *a, **k))[1])
    monkeypatch.setattr(session_module.EnvSession, "close", lambda self: (closed.append(1), close(self))[1])

    env = load_environment(ENV, num_tasks=2)
    native_env = gym.make(ENV).unwrapped
    assert env.oai_tools == native_env.tool_schemas()              # the env's own schemas, as OpenAI tools
    native_env.close()
    res = env.evaluate_sync(AsyncOpenAI(base_url=url, api_key="unused"), "scripted", num_examples=2,
                            rollouts_per_example=2, max_concurrent=2)
    outs = res["outputs"]
    assert len(outs) == 4 and all(o["error"] is None for o in outs)
    assert all(tools for tools in script.seen_tools)                # tools went out with every request
    tasks = {t.id: t for t in script.tasks}
    for o in outs:
        task = tasks[o["info"]["task_id"]]
        right = _native_reward(task, task.answer)
        wrong = _native_reward(task, "not this")
        assert o["reward"] in (pytest.approx(right), pytest.approx(wrong))
        assert o["stop_condition"] == "has_final_env_response"
        tool_texts = [m["content"] for m in o["completion"] if m["role"] in ("tool", "user")]
        assert "no tool call found" in tool_texts[0]                 # the chatty turn, judged by the env
        assert tool_texts[1].startswith("Error: invalid arguments for lookup")
    assert right == pytest.approx(1.0 - 0.2) and wrong == pytest.approx(-0.2)
    assert sorted(o["reward"] for o in outs) == [pytest.approx(wrong)] * 2 + [pytest.approx(right)] * 2
    assert {o["metrics"]["forage_correct"] for o in outs} == {0.0, 1.0}
    assert len(closed) == len(opened)                                # every rollout's env was released


@pytest.mark.vllm
@pytest.mark.slow
def test_vf_eval_against_the_session_vllm_server(tmp_path):
    from _agents_helpers import vllm_server

    server = vllm_server()
    model = __import__("httpx").get(server.url + "/v1/models", timeout=30).json()["data"][0]["id"]
    env = dict(os.environ, OPENAI_API_KEY="unused", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cmd = [str(Path(sys.executable).with_name("vf-eval")), "forage.integrations.verifiers",
           "-a", json.dumps({"forage_env": ENV, "num_tasks": 2}), "-m", model, "-b", server.url + "/v1",
           "-k", "OPENAI_API_KEY", "-n", "2", "-r", "1", "-t", "48", "-T", "0", "-s", "-p", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = list(tmp_path.rglob("results.jsonl"))
    assert results, (proc.stdout[-1500:], sorted(p.name for p in tmp_path.rglob("*")))
    rows = [json.loads(line) for line in results[0].read_text().splitlines() if line.strip()]
    assert len(rows) == 2
    for row in rows:
        assert -10.0 <= row["reward"] <= 1.0 and row["info"]["task_id"].startswith("lookup-1hop-")
