"""Reward shaping against hand-worked values: SPEAR's tool-call rules, count-based novelty, OTC, Knapsack-RL,
the ZeroSearch noise curriculum; every shaping term is a function of the batch as a set."""

from __future__ import annotations

import asyncio
import json
import math

import gymnasium as gym
import pytest
from hypothesis import given
from hypothesis import strategies as st

import forage  # noqa: F401
from forage.agents import RolloutConfig, RolloutEngine, ScriptedPolicy
from forage.agents.trajectory import Trajectory
from forage.sandboxes.retrieval.simulated import NOISY_PROMPT, NoiseCurriculum, SimulatedSearchBackend
from forage.training.advantages import group_advantages
from forage.training.bonuses import episode_keys, non_terminal_tool_calls, novelty_values, otc_reward
from forage.training.budget import TaskStats, allocate, info_gain, task_value, zero_variance_groups
from forage.training.config import (BonusConfig, BudgetConfig, ConfigError, CurriculumConfig, ScheduleConfig,
                                    config_from_dict)
from forage.training.schedules import EntropyScaler, tool_call_reward
from forage.training.shaping import RewardShaper

S2 = 1 / math.sqrt(2)


def _traj(calls: list[str], *, answer: bool = True, reward: float = 1.0, group: str = "t",
          outputs: dict[str, str] | None = None) -> Trajectory:
    """An episode as the rollout engine records it: one search per turn, then (maybe) the answer call."""
    msgs: list[dict] = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    for c in calls:
        msgs.append({"role": "assistant", "content": f"search {c}"})
        msgs.append({"role": "tool", "content": (outputs or {}).get(c, f"docs about {c}"),
                     "tool_calls": [{"id": "call_0", "name": "search", "arguments": {"query": c}}]})
    if answer:
        msgs.append({"role": "assistant", "content": "answer"})
        msgs.append({"role": "tool", "content": "Answer recorded.",
                     "tool_calls": [{"id": "call_0", "name": "answer", "arguments": {"answer": "x"}}]})
    return Trajectory(env_id="e", task_id=group, group=group, messages=msgs, reward=reward,
                      num_tool_calls=len(calls) + int(answer), num_turns=len(calls) + int(answer),
                      terminated=answer, truncated=not answer, stop_reason="answer" if answer else "max_turns")


# -- k: the tool calls without the final answer call -----------------------------------------------------------
@pytest.fixture(scope="module")
def tok():
    from _agents_helpers import tokenizer

    return tokenizer()


def test_k_leaves_out_the_terminal_answer_call_in_real_rollouts(tok):
    """Real LookupQA episodes through the rollout engine: the env counts the answer call, k does not."""
    env = gym.make("forage/LookupQA-v0").unwrapped
    oracle = ScriptedPolicy.from_oracle(env, tok)
    trajs = RolloutEngine(oracle, tok, RolloutConfig(concurrency=4)).run_sync("forage/LookupQA-v0", [0, 1, 2, 3])
    for t in trajs:
        assert t.stop_reason == "answer" and t.num_tool_calls == t.num_turns
        assert non_terminal_tool_calls(t) == t.num_turns - 1   # the lookups; the answer call is not one
    fmt = env.format_call

    def respond(prompt: str, turn: int) -> str:   # two lookups, then a lookup and the answer in one turn
        if turn < 2:
            return fmt("lookup", name=f"Nobody {turn}")
        return fmt("lookup", name="Nobody 2") + "\n" + fmt("answer", answer="x")

    t = RolloutEngine(ScriptedPolicy(tok, respond), tok).run_sync("forage/LookupQA-v0", [0])[0]
    assert t.stop_reason == "answer" and t.num_tool_calls == 4 and non_terminal_tool_calls(t) == 3
    keys = episode_keys(t)
    assert [k.split(":")[0] for k in keys] == ["call", "out"] * 3   # 3 lookups and their observations, no answer

    def never_answers(prompt: str, turn: int) -> str:
        return fmt("lookup", name=f"Nobody {turn}")

    t = RolloutEngine(ScriptedPolicy(tok, never_answers), tok, RolloutConfig(max_turns=3)).run_sync(
        "forage/LookupQA-v0", [0])[0]
    assert not t.terminated and non_terminal_tool_calls(t) == t.num_tool_calls == 3


def test_k_for_a_text_answer_and_a_bare_trajectory():
    t = _traj(["a", "b"], answer=False)   # then answered in plain text (on_no_tool_call="answer"): no call
    t.messages += [{"role": "assistant", "content": "Paris"}, {"role": "tool", "content": "", "tool_calls": []}]
    t.terminated, t.truncated, t.stop_reason = True, False, "answer"
    assert non_terminal_tool_calls(t) == 2
    assert non_terminal_tool_calls(Trajectory(env_id="e", task_id="t", num_tool_calls=5)) == 5


# -- SPEAR's tool-call rules ------------------------------------------------------------------------------------
def test_spear_rule_all_gives_every_episode_min_one_tenth_k_with_cosine_decay():
    cfg = CurriculumConfig(tool_call_reward=True)   # rule all, 0.1 per call, cap 1, cosine over 200 steps
    assert tool_call_reward(3, False, 0, cfg) == pytest.approx(0.3)
    assert tool_call_reward(3, True, 0, cfg) == pytest.approx(0.3)       # successes too (Qwen2.5 scripts)
    assert tool_call_reward(30, True, 0, cfg) == pytest.approx(1.0)      # min(1, 3.0)
    assert tool_call_reward(3, False, 50, cfg) == pytest.approx(0.3 * (math.cos(math.pi / 4) + 1) / 2)
    assert tool_call_reward(3, False, 100, cfg) == pytest.approx(0.15)
    assert tool_call_reward(3, False, 200, cfg) == 0.0 and tool_call_reward(3, False, 300, cfg) == 0.0
    assert tool_call_reward(3, False, 0, cfg, scale=1.5) == pytest.approx(0.45)
    assert tool_call_reward(3, False, 0, CurriculumConfig()) == 0.0      # switched off


def test_spear_rule_qwen3_failures_by_count_successes_by_indicator():
    cfg = CurriculumConfig(tool_call_reward=True, rule="qwen3")
    assert tool_call_reward(3, False, 0, cfg) == pytest.approx(0.3)
    assert tool_call_reward(3, True, 0, cfg) == pytest.approx(1.0)       # 1[k > 0]
    assert tool_call_reward(1, True, 100, cfg) == pytest.approx(0.5)
    assert tool_call_reward(0, True, 0, cfg) == 0.0 and tool_call_reward(0, False, 0, cfg) == 0.0


def test_shaper_tool_call_bonus_counts_only_non_terminal_calls():
    """[search, search, answer]: k = 2, so 0.2 at step 0 (0.3 if the answer counted, as before)."""
    sh = RewardShaper(CurriculumConfig(tool_call_reward=True), BonusConfig())
    ts = [_traj(["a", "b"], reward=1.0), _traj(["a", "b"], reward=0.0)]
    assert sh.shape(ts, ["t", "t"], [True, False], 0) == pytest.approx([1.2, 0.2])
    assert ts[0].reward_components["shaping/tool_call_bonus"] == pytest.approx(0.2)
    assert ts[1].metadata["shaped_reward"] == pytest.approx(0.2)
    q3 = RewardShaper(CurriculumConfig(tool_call_reward=True, rule="qwen3"), BonusConfig())
    assert q3.shape(ts, ["t", "t"], [True, False], 100) == pytest.approx([1.5, 0.1])
    sc = EntropyScaler(target=2.0, gain=1.0)
    sc.observe(1.0)
    assert sh.shape(ts[1:], ["t"], [False], 0, tool_scale=sc.factor()) == pytest.approx([0.3])


# -- count-based novelty ---------------------------------------------------------------------------------------
def test_novelty_per_key_counts_by_hand():
    a, ab = _traj(["A"]), _traj(["A", "B"], outputs={"B": "docs about B"})
    vals = novelty_values([episode_keys(a), episode_keys(ab)], {}, "sum")
    # keys: a = [call A, out A]; ab = [call A, out A, call B, out B]. Batch counts: A-keys 2, B-keys 1.
    assert vals[0] == pytest.approx({"episodic_novelty": 2.0, "global_novelty": 2 * S2, "novelty_product": 2 * S2})
    assert vals[1] == pytest.approx({"episodic_novelty": 4.0, "global_novelty": 2 * S2 + 2, "novelty_product": 2 * S2 + 2})
    mean = novelty_values([episode_keys(ab)], {k: 3 for k in episode_keys(a)}, "mean")[0]   # A seen 3 times before
    assert mean["global_novelty"] == pytest.approx((2 * 0.5 + 2) / 4)


def test_product_is_per_key_not_mean_times_mean():
    """Searches [A, A, B], A new, B's keys seen 99 times before: per key b_e·b_g, then the mean."""
    rep = _traj(["A", "A", "B"])
    old = episode_keys(_traj(["B"]))
    v = novelty_values([episode_keys(rep)], {k: 99 for k in old}, "mean")[0]
    # keys: call A, out A, call A, out A, call B, out B; N(A keys) = 2 (this batch), N(B keys) = 99 + 1
    e = [1, 1, S2, S2, 1, 1]
    g = [S2, S2, S2, S2, 0.1, 0.1]
    assert v["episodic_novelty"] == pytest.approx(sum(e) / 6)
    assert v["global_novelty"] == pytest.approx(sum(g) / 6)
    assert v["novelty_product"] == pytest.approx((S2 + S2 + 0.5 + 0.5 + 0.1 + 0.1) / 6)
    assert v["novelty_product"] != pytest.approx(v["episodic_novelty"] * v["global_novelty"])


def test_four_identical_episodes_get_identical_shaped_rewards_and_zero_advantages():
    """Before: global novelty counted while scoring, shaped 1.10/1.07/1.06/1.05 and advantages +1.38 .. -0.89."""
    b = BonusConfig(episodic_novelty=0.1, global_novelty=0.1, novelty_product=0.1, otc=1.0)
    sh = RewardShaper(CurriculumConfig(tool_call_reward=True), b)
    ts = [_traj(["Ann", "Bob"]) for _ in range(4)]
    shaped = sh.shape(ts, ["g"] * 4, [True] * 4, 3)
    assert len(set(shaped)) == 1
    assert group_advantages(shaped, ["g"] * 4).abs().max().item() == 0.0
    assert zero_variance_groups(shaped, ["g"] * 4) == {"g"}


def test_shape_is_pure_and_commit_updates_the_history_after_the_step():
    sh = RewardShaper(CurriculumConfig(), BonusConfig(global_novelty=1.0, otc=1.0))
    ts = [_traj(["A"]), _traj(["A", "B"])]
    first = sh.shape(ts, ["g", "g"], [True, True], 0)
    assert sh.shape(ts, ["g", "g"], [True, True], 0) == first and sh.key_counts == {} and sh.otc_best == {}
    sh.commit(ts, ["g", "g"], [True, True])
    assert sh.otc_best == {"g": 1} and sum(sh.key_counts.values()) == 6
    again = RewardShaper(CurriculumConfig(), BonusConfig(global_novelty=1.0, otc=1.0))
    again.load_state_dict(sh.state_dict())
    later = again.shape([_traj(["A"])], ["g"], [True], 1)
    # A's keys: 2 earlier + 1 now = 3 -> global 2/sqrt(3); OTC n = min(now 1, history 1) -> r_tool 1
    assert later == pytest.approx([1.0 + 2 / math.sqrt(3)])


# -- OTC -------------------------------------------------------------------------------------------------------
def test_otc_factor_by_hand():
    assert otc_reward(1, 1) == pytest.approx(1.0) and otc_reward(0, 0) == 1.0
    assert otc_reward(3, 1) == pytest.approx(math.sin(1.5 * math.pi / 2))       # f = 2·1·3/4 = 1.5
    assert otc_reward(2, 3) == pytest.approx(math.sin(2.4 * math.pi / 6))       # f = 12/5
    assert otc_reward(0, 2) == 0.0
    assert otc_reward(2, 0) == pytest.approx(math.cos(2 * math.pi / 5))         # c = 1
    assert otc_reward(2, 0, c=3) == pytest.approx(math.cos(2 * math.pi / 7))


def test_otc_optimum_is_per_group_whatever_the_order():
    """Before: a running minimum, so [3 calls, 1 call] scored [1, 1] but [1 call, 3 calls] scored [1, 0.707]."""
    sh = RewardShaper(CurriculumConfig(), BonusConfig(otc=1.0))       # OTC-GRPO: r = α · r_tool · r_correct
    three, one = _traj(["a", "b", "c"]), _traj(["a"])
    assert sh.shape([three, one], ["g", "g"], [True, True], 0) == pytest.approx([S2, 1.0])
    assert sh.shape([one, three], ["g", "g"], [True, True], 0) == pytest.approx([1.0, S2])
    assert three.reward_components["shaping/otc"] == pytest.approx(S2)
    wrong = _traj(["a"], reward=0.0)       # a wrong episode with fewer calls does not set the optimum
    assert sh.shape([three, wrong], ["g", "g"], [True, False], 0) == pytest.approx([1.0, 0.0])
    other = _traj(["a", "b"], group="h")   # another group has its own optimum
    assert sh.shape([three, one, other], ["g", "g", "h"], [True] * 3, 0) == pytest.approx([S2, 1.0, 1.0])


def test_otc_history_and_additive_form():
    sh = RewardShaper(CurriculumConfig(), BonusConfig(otc=1.0))
    sh.commit([_traj(["a"])], ["g"], [True])                         # earlier: 1 call sufficed
    two = _traj(["a", "b"])
    assert sh.shape([two], ["g"], [True], 1) == pytest.approx([math.sin((4 / 3) * math.pi / 2)])   # n = 1
    no_hist = RewardShaper(CurriculumConfig(), BonusConfig(otc=1.0, otc_history=False))
    no_hist.commit([_traj(["a"])], ["g"], [True])
    assert no_hist.shape([two], ["g"], [True], 1) == pytest.approx([1.0])                          # n = 2
    add = RewardShaper(CurriculumConfig(), BonusConfig(otc=0.5, otc_mode="add",
                                                       schedule=ScheduleConfig(kind="constant", value=0.5)))
    three, one = _traj(["a", "b", "c"]), _traj(["a"], reward=0.0)
    assert add.shape([three, one], ["g", "g"], [True, False], 0) == pytest.approx([1 + 0.25 * 1.0, 0.0])


# -- permutation invariance of every term ----------------------------------------------------------------------
_CONFIGS = [
    (CurriculumConfig(tool_call_reward=True), BonusConfig(episodic_novelty=0.3, global_novelty=0.2, novelty_product=0.5,
                                                          otc=1.0)),
    (CurriculumConfig(tool_call_reward=True, rule="qwen3"),
     BonusConfig(novelty_product=1.0, novelty_reduce="mean", otc=0.7, otc_mode="add", otc_history=False)),
]

episode = st.tuples(st.lists(st.sampled_from("ABCD"), max_size=4), st.booleans(), st.sampled_from(["g", "h", "i"]),
                    st.booleans())


@given(st.lists(episode, min_size=1, max_size=7), st.permutations(range(7)), st.integers(0, 250),
       st.dictionaries(st.sampled_from(["A", "B", "C"]), st.integers(1, 5)), st.sampled_from([0, 1]))
def test_every_shaping_term_is_a_function_of_the_batch_as_a_set(eps, perm, step, hist_calls, which):
    curriculum, bonus = _CONFIGS[which]
    perm = [i for i in perm if i < len(eps)]

    def batch():
        return [_traj(c, answer=ans, reward=float(ok), group=g) for c, ok, g, ans in eps]

    sh = RewardShaper(curriculum, bonus)
    past = [_traj([c] * n, group=g) for (c, n), g in zip(sorted(hist_calls.items()), "ghi")]
    sh.commit(past, [t.group for t in past], [True] * len(past))
    a, b = batch(), batch()
    b = [b[i] for i in perm]
    ra = sh.shape(a, [t.group for t in a], [t.reward > 0 for t in a], step)
    rb = sh.shape(b, [t.group for t in b], [t.reward > 0 for t in b], step)
    assert rb == pytest.approx([ra[i] for i in perm])
    for i, j in enumerate(perm):
        assert b[i].reward_components == pytest.approx(a[j].reward_components)
    assert sh.shape(a, [t.group for t in a], [t.reward > 0 for t in a], step) == ra   # pure


# -- Knapsack-RL -----------------------------------------------------------------------------------------------
def test_knapsack_value_is_nonzero_gradient_probability_times_p_one_minus_p_squared():
    assert info_gain(1 / 3) == pytest.approx(4 / 27) and info_gain(2 / 3) == pytest.approx(2 / 27)
    assert task_value(0.5, 4) == pytest.approx((1 - 2 / 16) * 0.5 * 0.25)
    assert task_value(0.25, 2) == pytest.approx((1 - 1 / 16 - 9 / 16) * 0.25 * 0.75 ** 2)
    assert task_value(0.0, 8) == 0.0 and task_value(1.0, 8) == 0.0 and task_value(0.5, 0) == 0.0


def test_knapsack_gives_the_harder_of_two_mirror_tasks_more_samples():
    """p(1-p) is symmetric, p(1-p)^2 is not: at p = 0.25 vs 0.75 the harder task is worth more."""
    stats = TaskStats()
    stats.record(["hard"] * 4 + ["easy"] * 4, [1, 0, 0, 0] + [1, 1, 1, 0])
    assert stats.p("hard") == 0.25 and stats.p("easy") == 0.75
    alloc = allocate(["hard", "easy"], 16, stats, BudgetConfig(min_group=2, max_group=16))
    assert sum(alloc.values()) == 16 and alloc["hard"] > alloc["easy"] >= 2


def test_knapsack_spreads_by_value_and_falls_back_to_unsolved_tasks():
    stats = TaskStats()
    stats.record(["easy"] * 4 + ["hard"] * 4 + ["mid"] * 4, [1] * 4 + [0] * 4 + [1, 0, 1, 0])
    alloc = allocate(["easy", "hard", "mid"], 12, stats, BudgetConfig(min_group=2, max_group=8))
    assert alloc == {"easy": 2, "hard": 2, "mid": 8}
    alloc = allocate(["easy", "hard", "mid"], 20, stats, BudgetConfig(min_group=2, max_group=8))
    assert alloc == {"easy": 4, "hard": 8, "mid": 8}   # mid is full: the spare goes to the unsolved task first


def test_task_success_estimate_forgets_old_groups():
    """Before: counts over all of training (20 failures then 4 successes: p 0.19). Window 1: the last group."""
    stats = TaskStats()
    for _ in range(5):
        stats.record(["t"] * 4, [0, 0, 0, 0])
    stats.record(["t"] * 4, [1, 1, 1, 1])
    assert stats.p("t") == 1.0 and stats.p("never seen") == 0.5
    w2 = TaskStats(window=2, prior=1.0)
    for s in ([0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]):
        w2.record(["t"] * 4, s)
    assert w2.p("t") == pytest.approx((3 + 1) / (8 + 2))
    back = TaskStats(window=2, prior=1.0)
    back.load_state_dict(w2.state_dict())
    assert back.p("t") == w2.p("t")


def test_shaping_and_budget_configs_are_validated():
    for bad, key in [({"curriculum": {"rule": "qwen2"}}, "curriculum.rule"),
                     ({"curriculum": {"per_call": -1}}, "curriculum.per_call"),
                     ({"bonus": {"otc_mode": "times"}}, "bonus.otc_mode"),
                     ({"bonus": {"novelty_reduce": "max"}}, "bonus.novelty_reduce"),
                     ({"bonus": {"otc_c": 0}}, "bonus.otc_c"),
                     ({"budget": {"window": 0}}, "budget.window"),
                     ({"budget": {"min_group": 4, "max_group": 2}}, "budget.max_group")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            config_from_dict(bad)
    assert config_from_dict({"curriculum": {"rule": "qwen3"}}).curriculum.rule == "qwen3"


# -- ZeroSearch's noise curriculum -----------------------------------------------------------------------------
def _echo_generator(prompts: list[str]) -> list[str]:
    """Stands in for the simulator LLM: a document that says which prompt wrote it."""
    return [("Noisy\nnoisy text" if p.startswith(NOISY_PROMPT[:40]) else "Useful\nuseful text") for p in prompts]


def test_zerosearch_noise_is_drawn_per_query_not_per_document():
    sim = SimulatedSearchBackend(_echo_generator, p_noise=0.5, seed=0)
    results = asyncio.run(sim.asearch([f"query {i}" for i in range(200)], k=5))
    kinds = [{h.id.split("-")[1] for h in hits} for hits in results]
    assert all(len(k) == 1 for k in kinds)                        # a query's documents share one kind
    assert all({h.title for h in hits} == {"Noisy" if k == {"noisy"} else "Useful"} for hits, k in zip(results, kinds))
    noisy = sum(k == {"noisy"} for k in kinds)
    assert 70 <= noisy <= 130                                    # ~ Binomial(200, 0.5)
    assert sim.stats == {"useful": 5 * (200 - noisy), "noisy": 5 * noisy, "failed": 0}


def test_zerosearch_curriculum_follows_the_trainers_step_through_reset(tmp_path):
    c = NoiseCurriculum(start=0.0, end=0.5, steps=100, base=4.0)
    assert c(50) == pytest.approx((4 ** 0.5 - 1) / 3 * 0.5) and c(100) == 0.5 and c(400) == 0.5 and c(0) == 0.0
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "What is the capital of France?", "answers": ["Paris"]}) + "\n")
    sim = SimulatedSearchBackend(_echo_generator, curriculum=c, seed=0)
    env = gym.make("forage/SearchQA-v0", backend=sim, qa_file=str(qa))
    env.reset(seed=0, options={"train_step": 50})
    assert sim.step == 50 and sim.noise_probability() == pytest.approx(c(50))
    env.reset(seed=1)                                            # no step given: the curriculum stays put
    assert sim.step == 50
    env.reset(seed=2, options={"train_step": 100})
    assert sim.noise_probability() == 0.5
    env.unwrapped.set_train_step(0)
    obs, *_ = env.step(env.unwrapped.format_call("search", query="capital of France", k=2))
    assert "Useful" in obs and "Noisy" not in obs and sim.stats["noisy"] == 0   # step 0: no noise
    env.close()
