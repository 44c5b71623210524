"""ScienceWorld-v0: the gold path scored 100 by ScienceWorld's scorer, its own splits, junk input, replay-only
Go-Explore, and the JVM reaped on close."""

from __future__ import annotations

import pytest

from forage.envs.games.scienceworld_games import ScienceWorldEnv, scienceworld_unavailable, variation_table

_REASON = scienceworld_unavailable()
if _REASON:
    print(f"skipping ScienceWorld tests: {_REASON}")
pytestmark = pytest.mark.skipif(bool(_REASON), reason=f"ScienceWorld unavailable: {_REASON}")

TASKS = ["find-living-thing", "boil"]


@pytest.fixture(scope="module")
def env():
    e = ScienceWorldEnv(task_names=TASKS, max_variations=2)
    yield e
    e.close()


def test_splits_are_scienceworlds_own_and_disjoint():
    table = variation_table(TASKS)
    for name, splits in table.items():
        train, dev, test = (set(splits[k]) for k in ("train", "dev", "test"))
        assert train and dev and test and not (train & dev or train & test or dev & test), name
    ids = {s: {t.id for t in ScienceWorldEnv(task_names=TASKS, split=s, max_variations=3).tasks}
           for s in ("train", "test")}
    assert not ids["train"] & ids["test"]


@pytest.mark.slow  # starts ScienceWorld's JVM (several seconds)
def test_gold_path_completes_the_task(env):
    task = next(t for t in env.tasks if t.metadata["task"] == "find-living-thing")
    env.reset(options={"task_id": task.id})
    total, steps = 0.0, 0
    for action in env.oracle_actions(task):
        obs, r, term, trunc, info = env.step(action)
        total += r
        steps += 1
        if term or trunc:
            break
    assert term and info["won"] and info["game_score"] == 100.0  # ScienceWorld's own scorer
    assert total == pytest.approx(2.0)  # score gains sum to 1 (100/100), plus the win


@pytest.mark.slow  # starts ScienceWorld's JVM (several seconds)
def test_junk_and_oracle_do_not_disturb_the_episode(env):
    task = next(t for t in env.tasks if t.metadata["task"] == "boil")
    env.reset(options={"task_id": task.id})
    obs, r, term, *_ = env.step(env.format_call("command", command="xyzzy"))
    assert "No known action" in obs and r == 0.0 and not term
    obs, r, term, *_ , info = env.step('<tool_call>{"name": "command", "arguments": {}}</tool_call>')
    assert "Error" in obs and info["rewards"]["format"] == -1.0
    env.step("open door to kitchen")
    before = env.cell()
    task.metadata.pop("gold", None)
    assert len(env.oracle_actions(task)) > 5  # reloads the simulator with the gold path...
    assert env.cell() == before  # ...and the running episode is replayed back to where it was


@pytest.mark.slow  # starts ScienceWorld's JVM (several seconds)
def test_go_explore_returns_by_replay(env):
    from forage.explore import GoExploreConfig, RandomCommandPolicy, cell_of, go_explore

    task = env.tasks[0]
    res = go_explore(env, RandomCommandPolicy(0), GoExploreConfig(budget=24, explore_steps=4, seed=0),
                     task_id=task.id)
    assert res.steps == 24 and res.return_steps > 0 and res.cells > 1
    cell = max(res.archive.cells.values(), key=lambda c: len(c.actions))
    obs, _ = env.reset(options={"task_id": task.id, "replay_actions": [
        a.split('"command": "', 1)[1].split('"', 1)[0] for a in cell.actions]})
    assert cell_of(env, obs) == cell.key


@pytest.mark.slow  # starts ScienceWorld's JVM (several seconds)
def test_close_reaps_the_jvm():
    e = ScienceWorldEnv(task_names=TASKS[:1], max_variations=1)
    e.reset(seed=0)
    proc = e.jvm.sw._gateway.java_process
    assert proc.poll() is None
    e.close()
    assert proc.poll() is not None
