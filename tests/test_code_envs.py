"""HumanEval-v0 and MathPython-v0 on real sandboxes: grading, hostile submissions, answer normalisation."""

from __future__ import annotations

import asyncio

import gymnasium as gym
import pytest
from _sandbox_helpers import make_pool, require

import forage  # noqa: F401
from forage.envs.code import HumanEvalEnv, load_humaneval, solution_program
from forage.envs.math import answer_variants, answers_match, load_champ
from forage.sandboxes.code import SandboxConfig, make_sandbox

TASKS = load_humaneval()


def test_task_sets_load():
    assert len(TASKS) == 164 and TASKS[0].id == "HumanEval/0"
    champ = load_champ()
    assert len(champ) == 270 and all(t.answer for t in champ)
    assert {t.metadata["category"] for t in champ} >= {"Combinatorics", "Number-Theory", "Polynomial"}


@pytest.mark.slow
async def test_all_164_canonical_solutions_pass_and_empty_ones_fail():
    pool = make_pool("bwrap", size=2, max_size=2, config=SandboxConfig(timeout=20))
    env = HumanEvalEnv(sandbox=pool)
    try:
        good = await asyncio.gather(*(env.grade(t, t.answer) for t in TASKS))
        failed = [t.id for t, g in zip(TASKS, good) if not g["passed"]]
        assert failed == [], [g for g in good if not g["passed"]][:3]
        empty = await asyncio.gather(*(env.grade(t, "") for t in TASKS[:40]))
        assert not any(g["passed"] for g in empty)
    finally:
        env.close()
        await pool.close()


def test_solution_program_accepts_a_body_or_a_whole_function():
    t = TASKS[0]
    assert solution_program(t.prompt, "has_close_elements", t.answer) == t.prompt + t.answer
    full_prog = solution_program(t.prompt, "has_close_elements", t.prompt + t.answer)
    assert "    pass\n\n" in full_prog and full_prog.endswith(t.answer)


@pytest.mark.parametrize("backend", ["bwrap", "docker"])
def test_humaneval_episode_through_gymnasium(backend):
    require(backend)
    env = gym.make("forage/HumanEval-v0", sandbox=backend, sandbox_config={"timeout": 5})
    try:
        base = env.unwrapped
        obs, info = env.reset(seed=0, options={"task_id": "HumanEval/2"})
        assert "truncate_number" in obs and {t["function"]["name"] for t in info["tools"]} == {"python", "submit"}
        obs, r, term, trunc, info = env.step(base.format_call("python", code="print(3.5 % 1.0)\nstate = 'kept'"))
        assert "0.5" in obs and not term
        obs, r, term, trunc, info = env.step(base.format_call("python", code="state"))
        assert "'kept'" in obs
        full = base.episode.task.prompt + base.episode.task.answer
        obs, r, term, trunc, info = env.step(base.format_call("submit", code=full))
        assert term and info["rewards"]["passed"] == 1.0 and r == 1.0
        # a wrong solution
        env.reset(options={"task_id": "HumanEval/2"})
        _, r, term, _, info = env.step(base.format_call("submit", code="def truncate_number(number):\n    return 0.0\n"))
        assert term and info["rewards"]["passed"] == 0.0
    finally:
        env.close()


HACKS = [
    # exit before the tests run: the grader wants its secret marker printed after check()
    "import sys\nsys.exit(0)\ndef truncate_number(number):\n    return 0.0\n",
    "import os\nos._exit(0)\n",
    # make every assert pass by patching the builtins: still needs a correct answer to print the marker
    "import builtins\nbuiltins.AssertionError = SystemExit\ndef truncate_number(number):\n    return 0.0\n",
    # hang the grader
    "def truncate_number(number):\n    while True:\n        pass\n",
    "",
]


@pytest.mark.parametrize("hack", HACKS)
def test_reward_hacks_score_zero(hack):
    require("bwrap")
    env = HumanEvalEnv(sandbox="bwrap", test_timeout=2.0)
    try:
        base = env.unwrapped
        env.reset(options={"task_id": "HumanEval/2"})
        # the agent also tampers with its own sandbox first: the grader runs in a fresh one
        env.step(base.format_call("python", code="import builtins\nbuiltins.print = lambda *a, **k: None\n"
                                                   "open('/work/check.py', 'w').write('x')"))
        _, r, term, _, info = env.step(base.format_call("submit", code=hack))
        assert term and info["rewards"]["passed"] == 0.0 and r == 0.0
    finally:
        env.close()


def test_env_accepts_a_pool_or_a_single_sandbox():
    require("bwrap")
    pool = make_pool("bwrap", size=1, max_size=3)
    sb = make_sandbox("bwrap")
    try:
        for target in (pool, sb):
            env = gym.make("forage/MathPython-v0", sandbox=target)
            base = env.unwrapped
            env.reset(options={"task_id": "P_Combinatorics_2"})
            obs, *_ = env.step(base.format_call("python", code="from math import comb\ncomb(10, 5)"))
            assert "252" in obs
            _, r, term, _, info = env.step(base.format_call("answer", answer="252"))
            assert term and info["rewards"]["correct"] == 1.0
            env.close()
        assert not sb.closed and not pool.closed  # the caller owns them
    finally:
        sb.close_sync()
        pool.close_sync()


@pytest.mark.parametrize("pred, ref", [
    ("239", "239"), ("  239. ", "239"), ("\\boxed{239}", "239"), ("The answer is 239", "239"), ("$239$", "239"),
    ("0.5", "1/2"), ("2/4", "1/2"), ("\\frac{1}{2}", "1/2"), ("1,000", "1000"), ("x = 3", "3"),
    ("x^2 + 2x + 1", "(x+1)^2"), ("(x+1)**2", "x^2+2*x+1"), ("2*sqrt(2)", "sqrt(8)"), ("n!", "n!"),
    ("all numbers", "100 (i.e., all numbers)"), ("100", "100 (i.e., all numbers)"), ("no", "No"),
    ("(x^2+x+1)(x^2-x+1)", "x^4+x^2+1"), ("252", "C(10, 5), or equivalently 252"), ("C(10,5)", "252"),
    ("n(n-1)(n-2)(n-3)/24", "C(n, 4), or an equivalent form such as n(n-1)(n-2)(n-3)/4!"), ("5/14", "5/14, or approximately 35.7%"), ("2/3", "The limit exists and is equal to 2/3 (i.e., 2/3)"),
])
def test_math_answers_match(pred, ref):
    assert answers_match(pred, ref)


@pytest.mark.parametrize("pred, ref", [
    ("240", "239"), ("", "239"), (None, "239"), ("1/3", "1/2"), ("x^2+1", "(x+1)^2"), ("yes", "No"),
    ("__import__('os').system('touch /tmp/pwned')", "0"), ("().__class__.__bases__", "1"), ("9" * 5000, "1"),
])
def test_math_answers_do_not_match(pred, ref):
    assert not answers_match(pred, ref)


def test_math_answers_are_checked_in_a_time_limited_worker():
    require("bwrap")
    from forage.envs.math import MathPythonEnv

    env = MathPythonEnv(sandbox="bwrap", check_timeout=2.0)
    try:
        base = env.unwrapped
        for hostile in ["9^9^9^9^9", "99999999!"]:  # refused by the parser, never computed
            env.reset(options={"task_id": "P_Combinatorics_2"})
            _, r, term, _, info = env.step(base.format_call("answer", answer=hostile))
            assert term and info["rewards"]["correct"] == 0.0
        env.reset(options={"task_id": "P_Combinatorics_29"})  # reference "C(n, 4), or ... n(n-1)(n-2)(n-3)/4!"
        _, r, term, _, info = env.step(base.format_call("answer", answer="n*(n-1)*(n-2)*(n-3)/24"))
        assert info["rewards"]["correct"] == 1.0  # needs sympy: checked in the worker
    finally:
        env.close()


def test_answer_variants():
    assert answer_variants("100 (i.e., all numbers)") == ["100", "all numbers"]
    assert answer_variants("n!") == ["n!"]
    assert answer_variants("C(10, 5), or equivalently 252") == ["C(10, 5)", "252"]


def test_math_oracle_scores_every_problem():
    for t in load_champ():
        assert answers_match(str(t.answer), str(t.answer)), t.id


@pytest.mark.slow
def test_code_env_in_a_forked_async_vector_env():
    require("bwrap")
    parent = make_sandbox("bwrap")  # the parent already runs sandboxes when it forks its workers
    try:
        assert parent.run_sync("print('parent')").stdout == "parent\n"
        envs = gym.vector.AsyncVectorEnv([lambda: gym.make("forage/MathPython-v0", sandbox="bwrap")] * 2,
                                         context="fork", shared_memory=False)
        try:
            envs.reset(seed=[0, 1])
            call = '<tool_call>{"name": "python", "arguments": {"code": "6 * 7"}}</tool_call>'
            obs, *_ = envs.step([call, call])
            assert all("42" in o for o in obs)
        finally:
            envs.close()
        assert parent.run_sync("print('still fine')").stdout == "still fine\n"
    finally:
        parent.close_sync()
