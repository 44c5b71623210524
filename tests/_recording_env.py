"""A tiny ToolEnv that records when it is scored and torn down (shared by the turn-limit and remote tests)."""

from __future__ import annotations

from typing import Any

from forage.envs import Task, ToolEnv, answer_tool
from forage.tools import tool

THINK_CALL = '<tool_call>{"name": "think", "arguments": {"note": "hm"}}</tool_call>'


@tool
def think(note: str) -> str:
    """Think out loud."""
    return "ok"


class RecordingEnv(ToolEnv):
    """One task ("What is 2+2?"); ``log`` gets ``score:<stop reason>`` and ``teardown`` as they happen.

    ``effort_per_call`` > 0 adds an ``effort`` reward of that much per tool call (a reward the turn count moves).
    """

    def __init__(self, effort_per_call: float = 0.0, **kwargs: Any) -> None:
        self.log: list[str] = []
        self.effort_per_call = effort_per_call
        super().__init__([Task("t0", "What is 2+2?", "4")], [think, answer_tool()], **kwargs)

    def score(self, episode) -> dict[str, float]:
        self.log.append(f"score:{episode.stop_reason}")
        out = {"correct": float(episode.answer == "4")}
        if self.effort_per_call:
            out["effort"] = self.effort_per_call * episode.tool_calls
        return out

    async def teardown_episode(self, episode) -> None:
        self.log.append("teardown")
