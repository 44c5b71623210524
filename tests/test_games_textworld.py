"""TextWorld-v0: generated games (cached), the walkthrough oracle, exact snapshots, junk input, disjoint splits."""

from __future__ import annotations

import os

import pytest

from forage.envs.games.textgame import GameSnapshot
from forage.envs.games.textworld_games import (TextWorldEnv, game_metadata, game_spec, generate_game,
                                               textworld_unavailable)

_REASON = textworld_unavailable()
if _REASON:
    print(f"skipping TextWorld tests: {_REASON}")
pytestmark = pytest.mark.skipif(bool(_REASON), reason=f"TextWorld unavailable: {_REASON}")


@pytest.fixture(scope="module")
def env():
    e = TextWorldEnv(challenge="simple", level=1, num_games=2)
    yield e
    e.close()


def play(env, actions):
    out = []
    for a in actions:
        out.append(env.step(a))
        if out[-1][2] or out[-1][3]:
            break
    return out


@pytest.mark.parametrize("challenge,level", [("simple", 1), ("coin", 5)])
def test_walkthrough_wins_with_the_games_own_score(challenge, level):
    env = TextWorldEnv(challenge=challenge, level=level, num_games=1)
    try:
        obs, info = env.reset(options={"task_index": 0})
        assert "TextWorld game" in obs and info["game_score"] == 0 and info["admissible_commands"]
        task = env.episode.task
        steps = play(env, env.oracle_actions(task))
        obs, reward, terminated, truncated, info = steps[-1]
        assert terminated and not truncated and info["won"]
        assert info["game_score"] == info["max_score"]  # the game's own scorer says: full marks
        gains = sum(s[4]["rewards"].get("score", 0.0) for s in steps)
        assert gains == pytest.approx(1.0)  # score gains are normalised by the game's max score
        assert steps[-1][4]["rewards"]["won"] == 1.0
        assert sum(s[1] for s in steps) == pytest.approx(2.0)  # score 1 + won 1, no format penalty
    finally:
        env.close()


def test_snapshot_restores_the_exact_game_in_a_fresh_env(env):
    env.reset(options={"task_index": 0})
    walk = env.walkthrough(env.episode.task)
    k = 3
    play(env, walk[:k])
    snap = env.get_state()
    assert isinstance(snap, GameSnapshot) and snap.actions == tuple(walk[:k]) and snap.view.score > 0
    reference = play(env, walk[k:])
    other = TextWorldEnv(challenge="simple", level=1, num_games=2)
    try:
        obs, info = other.reset(options={"start_state": snap})
        assert info["game_score"] == snap.view.score and info["admissible_commands"] == snap.view.admissible
        restored = play(other, walk[k:])
        assert [s[0] for s in restored] == [s[0] for s in reference]
        assert [s[4]["rewards"] for s in restored] == [s[4]["rewards"] for s in reference]
        assert [s[4]["admissible_commands"] for s in restored] == [s[4]["admissible_commands"] for s in reference]
        assert restored[-1][4]["won"]
        # the same snapshot twice: the second restore is not disturbed by the first episode
        other.reset(options={"start_state": snap})
        assert [s[0] for s in play(other, walk[k:])] == [s[0] for s in reference]
    finally:
        other.close()


def test_replay_actions_reach_the_same_state_as_the_snapshot(env):
    env.reset(options={"task_index": 0})
    walk = env.walkthrough(env.episode.task)
    play(env, walk[:4])
    snap = env.get_state()
    env.reset(options={"task_index": 0, "replay_actions": walk[:4]})
    assert env.cell() == snap.cell and env.episode.state["view"].score == snap.view.score
    env.reset(options={"task_index": 0})
    assert env.cell() != snap.cell  # the cell (world facts) tells these states apart


def test_junk_is_an_error_observation(env):
    env.reset(options={"task_index": 0})
    obs, r, term, trunc, info = env.step('<tool_call>{"name": "command", "arguments": {"command": ""}}</tool_call>')
    assert "Error" in obs and not term and r == 0.0
    obs, r, *_ , info = env.step('<tool_call>{"name": "command", "arguments": {"cmd": 3}}</tool_call>')
    assert "Error" in obs and info["rewards"]["format"] == -1.0
    obs, r, term, *_ = env.step("go " + "north " * 40)  # longer than the interpreter takes: refused, not cut
    assert "limit" in obs and not term
    for meta in ("restart", "RESTORE", "quit", "undo"):  # would desync TextWorld's state tracking
        obs, r, term, *_ = env.step(meta)
        assert "meta-command" in obs and r == 0.0 and not term
    obs, r, *_ , info = env.step(env.format_call("command", command="xyzzy plugh"))
    assert "Error" not in obs and info["rewards"].get("score", 0.0) == 0.0 and info["game_score"] == 0


def test_admissible_commands_in_the_prompt_on_request():
    env = TextWorldEnv(num_games=1, show_admissible=True)
    try:
        obs, info = env.reset(options={"task_index": 0})
        assert "Valid commands: " in obs and all(c in obs for c in info["admissible_commands"])
        obs, *_ , info = env.step("look")
        assert "Valid commands: " + ", ".join(info["admissible_commands"]) in obs
    finally:
        env.close()


def test_plain_text_is_a_command(env):
    env.reset(options={"task_index": 0})
    first = env.walkthrough(env.episode.task)[0]
    plain = env.step(first)
    env.reset(options={"task_index": 0})
    called = env.step(env.format_call("command", command=first))
    assert plain[0] == called[0] and plain[4]["rewards"] == called[4]["rewards"] and plain[4]["rewards"]["score"] > 0


def test_games_are_cached_and_train_eval_are_disjoint():
    train = game_spec("simple", 1, "train", 0)
    path = generate_game(train)
    mtime = os.stat(path).st_mtime_ns
    assert generate_game(train) == path and os.stat(path).st_mtime_ns == mtime  # no second tw-make
    evalg = generate_game(game_spec("simple", 1, "eval", 0))
    assert evalg != path and "--test" in game_spec("simple", 1, "eval", 0).args
    assert game_metadata(evalg)["content_hash"] != game_metadata(path)["content_hash"]
    assert game_spec("simple", 1, "train", 0).key != game_spec("simple", 2, "train", 0).key
    with pytest.raises(ValueError):
        game_spec("coin", 301, "train", 0)


def test_env_checker():
    from gymnasium.utils.env_checker import check_env

    env = TextWorldEnv(num_games=1)
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


@pytest.mark.slow
def test_in_process_generation_matches_the_tw_make_command(tmp_path):
    """The cached game is the game the official ``tw-make`` command makes with the same arguments and seed."""
    import shutil
    import subprocess
    import sys

    spec = game_spec("simple", 1, "train", 1)
    tw_make = shutil.which("tw-make", path=os.path.dirname(sys.executable))
    if tw_make is None:
        print("skipping: no tw-make next to this interpreter")
        pytest.skip("no tw-make next to this interpreter")
    subprocess.run([tw_make, *spec.args, "--output", str(tmp_path / "g.z8"), "--silent", "-f"], check=True,
                   timeout=300, capture_output=True)
    ours, theirs = game_metadata(generate_game(spec)), game_metadata(tmp_path / "g.z8")
    assert ours["content_hash"] == theirs["content_hash"] and ours["walkthrough"] == theirs["walkthrough"]
