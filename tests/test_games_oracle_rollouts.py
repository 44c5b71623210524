"""Each game's oracle driven through the real agents stack (ScriptedPolicy + RolloutEngine + SmolLM2's tokenizer)."""

from __future__ import annotations

import pytest

from _agents_helpers import tokenizer
from forage.agents.rollout import RolloutConfig, RolloutEngine
from forage.agents.scripted import ScriptedPolicy
from forage.envs.games.babyai import BabyAIEnv, babyai_unavailable
from forage.envs.games.game24 import Game24Env
from forage.envs.games.textworld_games import TextWorldEnv, textworld_unavailable


def _run(make_env, tasks, reward_key):
    tok = tokenizer()
    oracle_env = make_env()
    engine = RolloutEngine(ScriptedPolicy.from_oracle(oracle_env, tok), tok,
                           RolloutConfig(concurrency=2, max_context=16384, max_new_tokens=128))
    try:
        trajs = engine.run_sync(make_env, tasks)
    finally:
        oracle_env.close()
    for t in trajs:
        assert t.error is None, t.error
        assert t.terminated and t.reward_components.get(reward_key) == 1.0, (t.task_id, t.reward_components)
    return trajs


@pytest.mark.slow  # loads SmolLM2's tokenizer
def test_game24_oracle_rollouts():
    env = Game24Env()
    ids = [t.id for t in env.tasks[::300]]
    _run(Game24Env, ids, "correct")


@pytest.mark.skipif(bool(babyai_unavailable()), reason=f"minigrid unavailable: {babyai_unavailable()}")
def test_babyai_oracle_rollouts():
    def make():
        return BabyAIEnv(num_tasks=2)

    ids = [t.id for t in make().tasks]
    _run(make, ids, "won")


@pytest.mark.skipif(bool(textworld_unavailable()), reason=f"TextWorld unavailable: {textworld_unavailable()}")
def test_textworld_oracle_rollouts():
    def make():
        return TextWorldEnv(num_games=2)

    trajs = _run(make, ["tw-simple-L1-train-0000", "tw-simple-L1-train-0001"], "won")
    assert all(t.reward_components["score"] == pytest.approx(1.0) for t in trajs)
