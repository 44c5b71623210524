"""Go-Explore: selection weights (closed form), the archive's update rule, return by snapshot and by replay
(checked against the env itself), start states for a trainer, the IGE judge over real HTTP, and the CLI."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from forage.envs.games.babyai import BabyAIEnv, babyai_unavailable
from forage.explore import (Archive, Cell, GoExploreConfig, OpenAIJudge, RandomCommandPolicy, SelectionWeights,
                            cell_of, go_explore, plain_explore)

_REASON = babyai_unavailable()
needs_babyai = pytest.mark.skipif(bool(_REASON), reason=f"minigrid unavailable: {_REASON}")


def test_selection_weight_closed_form():
    w = SelectionWeights()
    assert w.weight(Cell("a", "t", (), 0.0, times_seen=0)) == pytest.approx(1.0 + 1e-6)
    assert w.weight(Cell("a", "t", (), 0.0, times_seen=3)) == pytest.approx(0.5 + 1e-6)  # 1/sqrt(3+1)
    assert w.weight(Cell("a", "t", (), 0.0, terminal=True)) == 0.0
    w2 = SelectionWeights(seen=0.0, chosen=2.0, chosen_power=1.0, eps=0.0)
    assert w2.weight(Cell("a", "t", (), 0.0, times_chosen=1)) == pytest.approx(1.0)  # 2/(1+1)
    with pytest.raises(ValueError):
        SelectionWeights(seen=0.0)
    with pytest.raises(ValueError):
        SelectionWeights(seen=-1.0)


def test_selection_frequencies_follow_the_weights():
    archive = Archive()
    archive.visit(Cell("fresh", "t", (), 0.0))           # seen once: weight 1/sqrt(2)
    old = Cell("old", "t", (), 0.0)
    archive.visit(old)
    archive.get("t", "old").times_seen = 7                # weight 1/sqrt(8)
    rng = np.random.default_rng(0)
    n = 6000
    picks = sum(archive.select(rng).key == "fresh" for _ in range(n))
    expected = (1 / np.sqrt(2)) / (1 / np.sqrt(2) + 1 / np.sqrt(8))  # = 2/3
    assert abs(picks / n - expected) < 0.03


def test_archive_keeps_the_best_trajectory():
    a = Archive()
    assert a.visit(Cell("k", "t", tuple("abcde"), 1.0)) == (True, False)
    assert a.visit(Cell("k", "t", tuple("abc"), 1.0)) == (False, True)      # same score, shorter
    assert a.visit(Cell("k", "t", tuple("a"), 0.5)) == (False, False)       # shorter but worse
    assert a.visit(Cell("k", "t", tuple("abcdefghij"), 2.0)) == (False, True)  # better score
    cell = a.get("t", "k")
    assert cell.actions == tuple("abcdefghij") and cell.score == 2.0 and cell.times_seen == 4
    a.visit(Cell("k", "other-task", (), 0.0))
    assert len(a) == 2 and len(a.candidates("t")) == 1


def _replay(env, task_id, actions):
    obs, info = env.reset(options={"task_id": task_id})
    total = 0.0
    for act in actions:
        obs, r, term, trunc, info = env.step(act)
        total += r
    return obs, total


@needs_babyai
@pytest.mark.parametrize("return_by", ["snapshot", "replay"])
def test_every_archived_cell_is_reached_by_its_trajectory(return_by):
    env = BabyAIEnv(levels="GoToLocal", num_tasks=2)
    try:
        res = go_explore(env, RandomCommandPolicy(1), GoExploreConfig(budget=500, explore_steps=15, seed=1,
                                                                       return_by=return_by), task_id=env.tasks[1].id)
        assert res.steps == 500 and res.cells == len(res.archive) > 10
        assert (res.return_steps > 0) == (return_by == "replay")
        for cell in list(res.archive.cells.values())[:40]:
            obs, total = _replay(env, cell.task_id, cell.actions)   # the env itself is the oracle
            assert cell_of(env, obs) == cell.key
            assert total == pytest.approx(cell.score)
            if cell.snapshot is not None:
                env.reset(options={"start_state": cell.snapshot})
                assert env.cell() == cell.key
    finally:
        env.close()


@needs_babyai
def test_go_explore_finds_more_cells_than_plain_exploration():
    env = BabyAIEnv(levels="GoToLocal", num_tasks=2)
    try:
        g = go_explore(env, RandomCommandPolicy(0), GoExploreConfig(budget=800, seed=0), task_id=env.tasks[0].id)
        p = plain_explore(env, RandomCommandPolicy(0), 800, seed=0, task_id=env.tasks[0].id)
        assert p.steps == g.steps == 800
        assert g.cells > p.cells
    finally:
        env.close()


@needs_babyai
def test_sample_starts_for_a_trainer():
    env = BabyAIEnv(levels="GoToLocal", num_tasks=2)
    try:
        res = go_explore(env, RandomCommandPolicy(2), GoExploreConfig(budget=300, seed=2), task_id=env.tasks[0].id)
        starts = res.archive.sample_starts(6, np.random.default_rng(0))
        assert len(starts) == 6
        for s in starts:
            env.reset(options=s.options)
            for a in s.prefix:
                env.step(a)
            assert env.cell() == s.cell_key and not s.prefix and "start_state" in s.options
        res2 = go_explore(env, RandomCommandPolicy(2), GoExploreConfig(budget=300, seed=2, return_by="replay"),
                          task_id=env.tasks[0].id)
        for s in res2.archive.sample_starts(4, np.random.default_rng(0)):
            obs, info = env.reset(options=s.options)
            for a in s.prefix:
                obs, *_ = env.step(a)
            assert env.cell() == s.cell_key and "start_state" not in s.options
        from forage.envs.games.textgame import GameSnapshot

        env.reset(options={"task_id": env.tasks[0].id})
        snap = env.get_state()
        finished = GameSnapshot(snap.task_id, snap.state, type(snap.view)(**{**snap.view.__dict__, "won": True}))
        with pytest.raises(ValueError):
            env.reset(options={"start_state": finished})
        with pytest.raises(TypeError):
            env.reset(options={"start_state": "not a snapshot"})
    finally:
        env.close()


class _JudgeHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint whose model says YES exactly when the new state mentions a key."""

    requests: list = []
    fail = False

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if type(self).fail:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"boom")
            return
        new_state = body["messages"][-1]["content"].split("New state:\n", 1)[1]
        verdict = "YES" if " key " in new_state else "NO"
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": verdict}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def judge_server():
    _JudgeHandler.requests, _JudgeHandler.fail = [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JudgeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@needs_babyai
def test_intelligent_go_explore_archives_only_what_the_judge_accepts(judge_server):
    env = BabyAIEnv(levels="GoToLocal", num_tasks=2)
    judge = OpenAIJudge(judge_server, "fake-model")
    try:
        res = go_explore(env, RandomCommandPolicy(3), GoExploreConfig(budget=300, seed=3), task_id=env.tasks[0].id,
                         judge=judge)
        assert res.method == "intelligent-go-explore" and res.judge_rejected > 0
        yes = sum(" key " in r["messages"][-1]["content"].split("New state:\n", 1)[1] for r in _JudgeHandler.requests)
        terminal = sum(c.terminal for c in res.archive.cells.values())  # game-over states are not judged
        assert yes > 0 and len(res.archive) == 1 + yes + terminal  # the root, then exactly the accepted states
        assert res.judge_rejected == len(_JudgeHandler.requests) - yes
        assert judge.calls == len(_JudgeHandler.requests) > 0 and judge.errors == 0
        assert "Archived states:" in _JudgeHandler.requests[-1]["messages"][-1]["content"]
        _JudgeHandler.fail = True  # a failing endpoint: the state is kept (on_error="keep"), nothing crashes
        assert judge.interesting("You see a red ball", []) is True and judge.errors == 1
        strict = OpenAIJudge(judge_server, "fake-model", on_error="raise")
        with pytest.raises(Exception):
            strict.interesting("x", [])
        strict.close()
    finally:
        judge.close()
        env.close()


@needs_babyai
def test_cli_explore_json(tmp_path):
    from typer.testing import CliRunner

    from forage.cli import app

    out = CliRunner().invoke(app, ["explore", "forage/BabyAI-GoToLocal-v0", "--budget", "120", "--json",
                                   "--plot", str(tmp_path / "c.png")])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output.splitlines()[0])
    methods = {r["method"]: r for r in data["results"]}
    assert set(methods) == {"go-explore", "plain"} and methods["plain"]["steps"] == 120
    assert (tmp_path / "c.png").stat().st_size > 1000
    bad = CliRunner().invoke(app, ["explore", "forage/BabyAI-GoToLocal-v0", "--budget", "0"])
    assert bad.exit_code != 0


def test_any_env_without_snapshots_returns_by_replay():
    """LookupQA has no get_state and no cell(): cells are hashed observations, return replays the actions."""
    from forage.envs import LookupQAEnv

    env = LookupQAEnv(hops=2, num_tasks=5)
    try:
        task = env.tasks[0]
        names = task.metadata["path"] + ["Nobody Atall"]
        policy = RandomCommandPolicy(0, commands=names, tool="lookup", arg="name")
        res = go_explore(env, policy, GoExploreConfig(budget=60, explore_steps=3, seed=0), task_id=task.id)
        assert res.return_steps > 0 and all(c.snapshot is None for c in res.archive.cells.values())
        assert res.cells >= 3  # the question, each entity's facts, the "no entity" error
        for cell in res.archive.cells.values():
            obs, total = _replay(env, cell.task_id, cell.actions)
            assert cell_of(env, obs) == cell.key and total == pytest.approx(cell.score)
    finally:
        env.close()


@needs_babyai
def test_start_sampler_in_reset_options_starts_a_fraction_from_the_archive():
    """What a trainer does: RolloutConfig.reset_options = {"start_sampler": sampler}."""
    from forage.explore import ArchiveStartSampler

    env = BabyAIEnv(levels="GoToLocal", num_tasks=1)
    try:
        task = env.tasks[0].id
        res = go_explore(env, RandomCommandPolicy(4), GoExploreConfig(budget=300, seed=4), task_id=task)
        sampler = ArchiveStartSampler(res.archive, fraction=0.5, seed=0)
        from_archive = 0
        for i in range(200):
            obs, info = env.reset(seed=i, options={"start_sampler": sampler})
            if info["archive_start"] is not None:
                from_archive += 1
                assert env.cell() == info["archive_start"]["cell"]
            else:
                assert env.episode.state["actions"] == []
        assert from_archive == sampler.starts and abs(from_archive / 200 - 0.5) < 0.12
        assert ArchiveStartSampler(res.archive, 0.0)(task) is None
        with pytest.raises(ValueError):
            ArchiveStartSampler(res.archive, 1.5)
        # a replay-only archive goes through replay_actions
        res2 = go_explore(env, RandomCommandPolicy(4), GoExploreConfig(budget=200, seed=4, return_by="replay"),
                          task_id=task)
        always = ArchiveStartSampler(res2.archive, fraction=1.0, seed=1)
        for i in range(10):
            obs, info = env.reset(seed=i, options={"start_sampler": always})
            assert env.cell() == info["archive_start"]["cell"]
    finally:
        env.close()


class _ChatHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that always calls the command tool with "go forward"."""

    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        call = {"id": "c1", "type": "function",
                "function": {"name": "command", "arguments": json.dumps({"command": "go forward"})}}
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": "", "tool_calls": [call]},
                                           "finish_reason": "tool_calls"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@needs_babyai
def test_chat_model_explores_through_openai_tool_calls():
    from forage.agents.openai_api import OpenAIPolicy
    from forage.explore import ChatExplorePolicy

    _ChatHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = BabyAIEnv(levels="GoToLocal", num_tasks=1)
    policy = ChatExplorePolicy(OpenAIPolicy(f"http://127.0.0.1:{server.server_address[1]}", "stub"), history=2)
    try:
        res = go_explore(env, policy, GoExploreConfig(budget=12, explore_steps=4, seed=0), task_id=env.tasks[0].id)
        assert res.steps == 12 and len(_ChatHandler.requests) == 12
        first = _ChatHandler.requests[0]
        assert first["messages"][0]["role"] == "system" and "Mission:" in first["messages"][1]["content"]
        assert first["tools"][0]["function"]["name"] == "command"
        assert all(len(r["messages"]) <= 2 + 2 * 2 for r in _ChatHandler.requests)  # the history window
        cell = max(res.archive.cells.values(), key=lambda c: len(c.actions))
        assert cell.actions and all(a == env.format_call("command", command="go forward") for a in cell.actions)
    finally:
        policy.close()
        env.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


@needs_babyai
def test_archive_save_and_load(tmp_path):
    env = BabyAIEnv(levels="GoToLocal", num_tasks=1)
    try:
        res = go_explore(env, RandomCommandPolicy(5), GoExploreConfig(budget=200, seed=5), task_id=env.tasks[0].id)
        path = res.archive.save(tmp_path / "a.pkl")
        loaded = Archive.load(path)
        assert set(loaded.cells) == set(res.archive.cells)
        assert [c.times_seen for c in loaded.cells.values()] == [c.times_seen for c in res.archive.cells.values()]
        for s in loaded.sample_starts(5, np.random.default_rng(0)):
            env.reset(options=s.options)
            assert env.cell() == s.cell_key
        (tmp_path / "bad.pkl").write_bytes(__import__("pickle").dumps({"format": "other"}))
        with pytest.raises(ValueError):
            Archive.load(tmp_path / "bad.pkl")
    finally:
        env.close()
