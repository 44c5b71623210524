"""BabyAI-v0: text descriptions checked against minigrid's own geometry, the bot oracle, snapshots, junk input."""

from __future__ import annotations

import numpy as np
import pytest

from forage.envs.games.babyai import COMMANDS, BabyAIEnv, babyai_unavailable, describe_view

_REASON = babyai_unavailable()
if _REASON:
    print(f"skipping BabyAI tests: {_REASON}")
pytestmark = pytest.mark.skipif(bool(_REASON), reason=f"minigrid unavailable: {_REASON}")


def play(env, actions):
    out = []
    for a in actions:
        out.append(env.step(a))
        if out[-1][2] or out[-1][3]:
            break
    return out


def test_hand_built_view():
    from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

    image = np.zeros((7, 7, 3), dtype=np.uint8)
    image[:, :, 0] = OBJECT_TO_IDX["empty"]
    image[1, 5] = (OBJECT_TO_IDX["ball"], COLOR_TO_IDX["red"], 0)    # 2 left, 1 forward
    image[3, 2] = (OBJECT_TO_IDX["wall"], COLOR_TO_IDX["grey"], 0)   # 4 straight ahead
    image[3, 0] = (OBJECT_TO_IDX["wall"], COLOR_TO_IDX["grey"], 0)   # behind the nearer wall: not listed
    image[6, 3] = (OBJECT_TO_IDX["door"], COLOR_TO_IDX["blue"], 2)   # 3 right, 3 forward, locked
    image[4, 6] = (OBJECT_TO_IDX["wall"], COLOR_TO_IDX["grey"], 0)   # 1 right
    assert describe_view(image) == [
        "You see a red ball 2 steps left and 1 step forward",
        "You see a locked blue door 3 steps right and 3 steps forward",
        "You see a wall 4 steps forward",
        "You see a wall 1 step right",
    ]


@pytest.mark.parametrize("lateral,forward", [(-2, 1), (1, 3), (0, 2), (3, 0)])
def test_offsets_follow_minigrid_geometry(lateral, forward):
    """An object put at agent_pos + forward*dir_vec + lateral*right_vec is described at that offset."""
    import gymnasium as gym
    from minigrid.core.world_object import Ball

    env = gym.make("BabyAI-GoToRedBallNoDists-v0").unwrapped
    env.reset(seed=4)
    env.grid = type(env.grid)(env.width, env.height)
    env.grid.wall_rect(0, 0, env.width, env.height)
    env.agent_pos = np.array((env.width // 2, env.height // 2))
    for direction in range(4):
        env.agent_dir = direction
        pos = env.agent_pos + forward * env.dir_vec + lateral * env.right_vec
        env.grid.set(*pos, Ball("purple"))
        lines = describe_view(env.gen_obs()["image"])
        env.grid.set(*pos, None)
        side = f"{abs(lateral)} step{'s' if abs(lateral) != 1 else ''} {'right' if lateral > 0 else 'left'}"
        fwd = f"{forward} step{'s' if forward != 1 else ''} forward"
        where = " and ".join(p for p, n in ((side, lateral), (fwd, forward)) if n)
        assert f"You see a purple ball {where}" in lines, (direction, lines)
    env.close()


def test_bot_oracle_solves_every_default_level():
    env = BabyAIEnv(num_tasks=4)
    try:
        for task in env.tasks:
            obs, info = env.reset(options={"task_id": task.id})
            assert "Mission:" in obs
            steps = play(env, env.oracle_actions(task))
            info = steps[-1][4]
            assert steps[-1][2] and info["won"], task.id  # minigrid's own success (reward > 0)
            assert info["rewards"]["won"] == 1.0 and 0.0 < info["rewards"]["score"] <= 1.0
    finally:
        env.close()


def test_junk_commands_are_errors_and_cost_no_step():
    env = BabyAIEnv(levels="GoToLocal", num_tasks=2)
    try:
        env.reset(options={"task_index": 0})
        obs, r, term, trunc, info = env.step(env.format_call("command", command="fly to the moon"))
        assert "Error" in obs and "turn left" in obs and info["moves"] == 0 and not term
        obs, r, term, trunc, info = env.step("go forward")  # plain text works too
        assert "Error" not in obs and info["moves"] == 1
        assert info["admissible_commands"] == list(COMMANDS)
    finally:
        env.close()


def test_snapshot_restore_and_cells():
    env = BabyAIEnv(levels="PutNextLocal", num_tasks=2)
    other = BabyAIEnv(levels="PutNextLocal", num_tasks=2)
    try:
        env.reset(options={"task_index": 1})
        bot = env.oracle_actions(env.episode.task)
        play(env, bot[:5])
        snap = env.get_state()
        reference = play(env, bot[5:])
        other.reset(options={"start_state": snap})
        restored = play(other, bot[5:])
        assert [s[0] for s in restored] == [s[0] for s in reference] and restored[-1][4]["won"]
        env.reset(options={"task_index": 0})
        before = env.cell()
        env.step("turn left")
        assert env.cell() == before  # turning in place: the same cell
        start = tuple(env._backend.env.agent_pos)
        for _ in range(4):  # find a free square ahead and step onto it
            env.step("go forward")
            if tuple(env._backend.env.agent_pos) != start:
                break
            env.step("turn left")
        assert tuple(env._backend.env.agent_pos) != start and env.cell() != before
    finally:
        env.close()
        other.close()


def test_env_checker():
    from gymnasium.utils.env_checker import check_env

    env = BabyAIEnv(num_tasks=3)
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()
