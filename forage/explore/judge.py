"""Intelligent Go-Explore's filter: a model judges whether a newly found state is interesting enough to archive."""

from __future__ import annotations

import re
from typing import Any, Protocol, Sequence

import httpx

__all__ = ["InterestJudge", "OpenAIJudge", "JudgeError", "judge_prompt"]

MAX_STATE_CHARS = 1200


class JudgeError(RuntimeError):
    """The judge's endpoint failed or answered something that is not a verdict."""


class InterestJudge(Protocol):
    """Decides whether ``observation`` is an interestingly new state, given examples from the archive."""

    def interesting(self, observation: str, archived: Sequence[str]) -> bool: ...


def judge_prompt(observation: str, archived: Sequence[str], goal: str = "") -> list[dict[str, str]]:
    """The chat messages asking whether a new state is interestingly different from the archived ones."""
    shown = "\n\n".join(f"[{i + 1}] {a[:MAX_STATE_CHARS]}" for i, a in enumerate(archived))
    goal_line = f"The agent's task: {goal[:600]}\n\n" if goal else ""
    return [
        {"role": "system", "content": "You help an exploring agent keep an archive of interesting states. Answer "
                                      "with one word: YES if the new state is interestingly new (it could lead to "
                                      "progress that the archived states could not), NO otherwise."},
        {"role": "user", "content": f"{goal_line}Archived states:\n{shown or '(none)'}\n\nNew state:\n"
                                    f"{observation[:MAX_STATE_CHARS]}\n\nIs the new state interestingly new? "
                                    "Answer YES or NO."},
    ]


class OpenAIJudge:
    """A judge backed by any OpenAI-compatible ``/v1/chat/completions`` endpoint (a vLLM server, a hosted model)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 max_examples: int = 8, goal: str = "", on_error: str = "keep") -> None:
        if on_error not in ("keep", "drop", "raise"):
            raise ValueError("on_error must be 'keep', 'drop' or 'raise'")
        base = base_url.rstrip("/")
        self.url = (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"
        self.model, self.max_examples, self.goal, self.on_error = model, max_examples, goal, on_error
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), headers=headers)
        self.calls = 0
        self.errors = 0

    def interesting(self, observation: str, archived: Sequence[str]) -> bool:
        """The model's verdict; on a failure ``on_error`` decides (keep the state by default)."""
        self.calls += 1
        try:
            return self._ask(observation, list(archived)[-self.max_examples:])
        except JudgeError:
            self.errors += 1
            if self.on_error == "raise":
                raise
            return self.on_error == "keep"

    def _ask(self, observation: str, archived: list[str]) -> bool:
        body: dict[str, Any] = {"model": self.model, "messages": judge_prompt(observation, archived, self.goal),
                                "max_tokens": 4, "temperature": 0.0}
        try:
            r = self._client.post(self.url, json=body)
        except httpx.HTTPError as e:
            raise JudgeError(f"{self.url} failed: {e}") from e
        if r.status_code != 200:
            raise JudgeError(f"{self.url} answered {r.status_code}: {r.text[:200]}")
        try:
            text = r.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise JudgeError(f"malformed chat completion: {e}") from e
        m = re.search(r"\b(yes|no)\b", text.lower())
        if m is None:
            raise JudgeError(f"the judge answered neither YES nor NO: {text[:80]!r}")
        return m.group(1) == "yes"

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()
