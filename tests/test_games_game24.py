"""Game24-v0: the enumerated instances, the exact grader and the env, checked against independent oracles."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import gymnasium as gym
import pytest

import forage  # noqa: F401
from forage.envs.games.arith import ExpressionError, all_instances, evaluate, solve24
from forage.envs.games.game24 import Game24Env, game24_tasks, grade24


def pairwise_solvable(values: list[Fraction]) -> bool:
    """The classic "pick two numbers, replace them by a result" search (a different algorithm from solve24's)."""
    if len(values) == 1:
        return values[0] == 24
    for i, j in itertools.permutations(range(len(values)), 2):
        rest = [v for k, v in enumerate(values) if k not in (i, j)]
        a, b = values[i], values[j]
        results = [a + b, a - b, a * b] + ([a / b] if b else [])
        if any(pairwise_solvable(rest + [r]) for r in results):
            return True
    return False


def test_instance_count_matches_the_published_table():
    # 4nums.com's table (used by Tree of Thoughts): 1362 of the 1820 multisets of 1..13 are solvable.
    assert len(list(itertools.combinations_with_replacement(range(1, 14), 4))) == 1820
    assert len(all_instances()) == 1362


def test_solver_agrees_with_an_independent_search_on_a_sample():
    rng = random.Random(0)
    solvable = {c for c, _ in all_instances()}
    combos = list(itertools.combinations_with_replacement(range(1, 14), 4))
    for combo in rng.sample(combos, 120) + [(1, 1, 1, 1), (3, 3, 8, 8), (1, 5, 5, 5), (1, 1, 1, 8)]:
        assert (combo in solvable) == pairwise_solvable([Fraction(x) for x in combo]), combo
    for combo, solution in all_instances():
        assert evaluate(solution) == 24 and sorted(int(t) for t in solution.replace("(", " ").replace(")", " ")
                                                   .replace("+", " ").replace("-", " ").replace("*", " ")
                                                   .replace("/", " ").split()) == list(combo)


def test_grader_uses_exact_rationals():
    # In floating point 8/(3-8/3) is 23.999999999999996: a float grader rejects the only solution.
    assert 8 / (3 - 8 / 3) != 24
    assert grade24("8/(3-8/3)", [3, 3, 8, 8]) == (True, "correct")
    assert grade24("8 / (3 - 8 / 3) = 24", [8, 3, 8, 3])[0]
    assert grade24("5*(5-1/5)", [1, 5, 5, 5])[0]
    assert solve24([1, 1, 1, 1]) is None and solve24([3, 3, 8, 8]) is not None


@pytest.mark.parametrize("expr,reason", [
    ("8*3", "uses [3, 8]"),                      # not every number
    ("8*3*1*1*1", "uses [1, 1, 1, 3, 8]"),        # a number twice
    ("(-1+5)*(1+5)", "signs"),                      # unary minus would smuggle a sign in
    ("12*2.0*1*1", "whole numbers"),
    ("__import__('os')", "whole numbers"),
    ("(2**3)*3*1", "only + - * /"),
    ("6/(1-1)*4", "division by zero"),
    ("((((", "cannot parse"),
    ("", "empty"),
])
def test_grader_refuses_bad_answers(expr, reason):
    numbers = {"8*3": [1, 1, 3, 8], "8*3*1*1*1": [1, 1, 3, 8], "(-1+5)*(1+5)": [1, 1, 5, 5]}.get(expr, [1, 1, 2, 12])
    ok, why = grade24(expr, numbers)
    assert not ok and reason in why


def test_calculator_limits():
    with pytest.raises(ExpressionError):
        evaluate("9" * 400)
    with pytest.raises(ExpressionError):
        evaluate("(" * 100 + "1" + ")" * 100 + "*" + "99999999*" * 25 + "1")
    assert evaluate("-3 + 1/2") == Fraction(-5, 2)


def test_splits_are_disjoint_and_cover_all():
    train = {t.id for t in game24_tasks("train")}
    test = {t.id for t in game24_tasks("test")}
    assert not train & test and len(train | test) == 1362 and 200 < len(test) < 350


def test_oracle_solves_and_junk_scores_zero():
    env = gym.make("forage/Game24-v0").unwrapped
    try:
        for task in env.tasks[::60]:
            env.reset(options={"task_id": task.id})
            total = 0.0
            for action in env.oracle_actions(task):
                obs, r, term, trunc, info = env.step(action)
                total += r
            assert term and info["rewards"]["correct"] == 1.0 and total == 1.0
        env.reset(options={"task_id": "game24-03-03-08-08"})
        obs, r, *_ = env.step(env.format_call("calculator", expression="8/(3"))
        assert "Error" in obs and r == 0.0
        obs, r, term, _, info = env.step(env.format_call("answer", expression="3*8+8-8"))
        assert term and info["rewards"]["correct"] == 0.0
    finally:
        env.close()


def test_env_checker():
    from gymnasium.utils.env_checker import check_env

    env = Game24Env(split="test")
    check_env(env, skip_render_check=True)
    env.close()
