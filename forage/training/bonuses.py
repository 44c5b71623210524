"""The pieces of reward shaping that read an episode: its tool calls, its novelty keys and OTC's tool efficiency.

Everything here is a pure function of one episode (or of a batch of them and a read-only
history); :class:`forage.training.shaping.RewardShaper` combines them per step and updates the
history only after the step (``commit``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from typing import Any, Mapping, Sequence

from ..agents.trajectory import Trajectory

__all__ = ["tool_turns", "non_terminal_tool_calls", "episode_keys", "novelty_values", "otc_reward",
           "otc_optimal_calls", "NOVELTY_REDUCE"]

NOVELTY_REDUCE = ("sum", "mean")
_TERMINAL_NAMES = ("answer", "submit", "final_answer")


def _h(s: str) -> str:
    return hashlib.blake2b(s.encode("utf-8", "replace"), digest_size=8).hexdigest()


def _ended_by_terminal_call(traj: Trajectory, tool_msgs: list[dict[str, Any]]) -> bool:
    last = tool_msgs[-1].get("tool_calls") if tool_msgs else None
    return bool(traj.terminated and traj.stop_reason == "answer" and any(isinstance(c, dict) for c in last or []))


def tool_turns(traj: Trajectory) -> list[tuple[list[dict[str, Any]], str, bool]]:
    """Per tool turn: (its non-terminal calls, its observation, whether the turn held the terminal call).

    The call that ended the episode (``answer``, ``submit``: the terminal tool) is left out. It is
    the last call of the final turn of an episode that stopped with ``stop_reason == "answer"``
    and a tool call in that turn; when that turn holds several calls, the last one named
    answer/submit/final_answer is taken as terminal (else the last call). An episode answered in
    plain text (``on_no_tool_call="answer"``) has no terminal call to leave out.
    """
    msgs = [m for m in traj.messages if m.get("role") == "tool"]
    out = []
    terminal_turn = len(msgs) - 1 if _ended_by_terminal_call(traj, msgs) else -1
    for i, m in enumerate(msgs):
        calls = [c for c in (m.get("tool_calls") or []) if isinstance(c, dict)]
        if i == terminal_turn:
            idx = max((j for j, c in enumerate(calls) if c.get("name") in _TERMINAL_NAMES), default=len(calls) - 1)
            calls.pop(idx)
        out.append((calls, str(m.get("content", "")), i == terminal_turn))
    return out


def non_terminal_tool_calls(traj: Trajectory) -> int:
    """k: the tool calls the policy wrote, not counting the final answer call (SPEAR's and OTC's count).

    Counted from the recorded tool turns (every parsed call, also one the tool rejected), so it
    does not depend on how an env counts; a trajectory without tool messages falls back to
    ``num_tool_calls``.
    """
    turns = tool_turns(traj)
    if not turns:
        return int(traj.num_tool_calls)
    return sum(len(calls) for calls, _, _ in turns)


def episode_keys(traj: Trajectory) -> list[str]:
    """What the agent did and saw, in order: one key per non-terminal tool call (name + arguments)
    and one per observation of a turn that ran such a call (repeats kept: counts need them)."""
    keys: list[str] = []
    for calls, content, _ in tool_turns(traj):
        for c in calls:
            keys.append("call:" + _h(json.dumps([c.get("name"), c.get("arguments")], sort_keys=True, default=str)))
        if calls:
            keys.append("out:" + _h(content))
    return keys


def novelty_values(keys_per_episode: Sequence[Sequence[str]], history: Mapping[str, int],
                   reduce: str = "sum") -> list[dict[str, float]]:
    """Count-based episodic, global and product novelty of each episode of one batch.

    For the t-th key s_t of an episode (Henaff et al. 2023, "A Study of Global and Episodic
    Bonuses for Exploration in Contextual MDPs", count-based bonuses, multiplicative combination):

    - episodic  b_e(s_t) = 1/sqrt(N_e(s_t)), N_e = occurrences of s_t in this episode up to t;
    - global    b_g(s_t) = 1/sqrt(N(s_t)), N = ``history`` count (earlier steps) + occurrences of
      s_t in the whole batch, so every episode of the batch sees the same count (a function of
      the batch as a set; the history is only updated after the step);
    - product   b_e(s_t) * b_g(s_t), per key, then combined over the episode.

    ``reduce`` "sum" adds the per-key bonuses (the paper's per-step intrinsic rewards summed into
    the return); "mean" averages them (keeps each bonus in [0, 1]). No keys: all 0.
    """
    if reduce not in NOVELTY_REDUCE:
        raise ValueError(f"novelty reduce must be one of {NOVELTY_REDUCE}, got {reduce!r}")
    batch = Counter(k for keys in keys_per_episode for k in keys)
    out = []
    for keys in keys_per_episode:
        seen: Counter[str] = Counter()
        e_sum = g_sum = p_sum = 0.0
        for k in keys:
            seen[k] += 1
            be = 1.0 / math.sqrt(seen[k])
            bg = 1.0 / math.sqrt(history.get(k, 0) + batch[k])
            e_sum, g_sum, p_sum = e_sum + be, g_sum + bg, p_sum + be * bg
        d = max(1, len(keys)) if reduce == "mean" else 1
        out.append({"episodic_novelty": e_sum / d, "global_novelty": g_sum / d, "novelty_product": p_sum / d})
    return out


def otc_reward(calls: int, optimal: int, c: float = 1.0) -> float:
    """OTC-GRPO's tool-efficiency factor r_tool(m, n) in [0, 1] (Wang et al. 2025, "Acting Less is Reasoning More").

    With m calls and the optimum n: 1 when m = n = 0; cos(m·π/(2m + c)) when n = 0; otherwise
    sin(f(m, n)·π/(2n)) with f(m, n) = 2nm/(m + n), which is 1 at m = n and falls off on both sides.
    """
    m, n = max(0, int(calls)), max(0, int(optimal))
    if n == 0:
        return 1.0 if m == 0 else math.cos(m * math.pi / (2 * m + c))
    f = 2 * n * m / (m + n)
    return math.sin(f * math.pi / (2 * n))


def otc_optimal_calls(groups: Sequence[str], calls: Sequence[int], correct: Sequence[bool],
                      history: Mapping[str, int], use_history: bool = True) -> dict[str, int]:
    """OTC's optimum n per group: the fewest calls among the group's correct episodes in this batch,
    combined (min) with the fewest seen for that group at earlier steps when ``use_history``; a group
    with no correct episode now falls back to its history. Groups with neither are absent."""
    best: dict[str, int] = {}
    for g, m, ok in zip(groups, calls, correct):
        if ok:
            best[g] = min(best.get(g, m), m)
    if use_history:
        for g in set(groups):
            if g in history:
                best[g] = min(best.get(g, history[g]), history[g])
    return best

