"""Game of 24: combine four numbers with + - * / to make 24, graded by exact rational arithmetic."""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

from ...tools import Tool, ToolError, tool
from ..base import Episode, Task, ToolEnv
from .arith import ExpressionError, all_instances, evaluate, expression_numbers

__all__ = ["Game24Env", "game24_tasks", "grade24", "split_of"]

SPLITS = ("all", "train", "test")


def split_of(numbers: tuple[int, ...]) -> str:
    """``"test"`` for a fixed fifth of the instances (by a hash of the numbers), else ``"train"``."""
    digest = hashlib.blake2b(" ".join(map(str, numbers)).encode(), digest_size=4).digest()
    return "test" if int.from_bytes(digest, "big") % 5 == 0 else "train"


def game24_tasks(split: str = "all", low: int = 1, high: int = 13) -> list[Task]:
    """Every solvable instance with numbers in ``[low, high]`` (1362 for 1..13), optionally one split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    tasks = []
    for numbers, solution in all_instances(low, high):
        if split != "all" and split_of(numbers) != split:
            continue
        shown = " ".join(map(str, numbers))
        tasks.append(Task(
            id="game24-" + "-".join(f"{n:02d}" for n in numbers),
            prompt=f"Numbers: {shown}\nUse each of these four numbers exactly once, with + - * / and parentheses, "
                   "to make 24.",
            answer=solution,
            metadata={"numbers": list(numbers), "split": split_of(numbers)},
        ))
    return tasks


def grade24(expression: str, numbers: Iterable[int], target: int = 24) -> tuple[bool, str]:
    """Whether ``expression`` uses exactly ``numbers`` and equals ``target``; with the reason when not.

    A trailing ``= 24`` (as models often write) is ignored. Signs are not allowed: ``-3`` would
    let an expression use a number that is not among the four.
    """
    text = str(expression).strip()
    if "=" in text:
        text = text.split("=", 1)[0]
    try:
        used = expression_numbers(text)
        value = evaluate(text, allow_unary=False)
    except ExpressionError as e:
        return False, str(e)
    want = sorted(int(n) for n in numbers)
    if used != want:
        return False, f"the expression uses {used}, but it must use each of {want} exactly once"
    if value != target:
        return False, f"the expression equals {value}, not {target}"
    return True, "correct"


def _value_text(value: Any) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator} (≈ {float(value):.6g})"


class Game24Env(ToolEnv):
    """Make 24 from four numbers with + - * /, using a calculator; graded by exact rational arithmetic.

    ## Description
    The Game of 24 as in Tree of Thoughts and Intelligent Go-Explore: four whole numbers from 1 to
    13 must be combined, each exactly once, with addition, subtraction, multiplication, division
    and parentheses into an expression equal to 24. The task set is every solvable multiset of
    four numbers in 1..13, enumerated by a complete search (1362 of the 1820 multisets). An agent
    explores with the calculator and commits with ``answer``.

    ## Action Space
    Text with tool calls in the env's ``tool_format`` (Hermes ``<tool_call>`` JSON by default).

    ## Observation Space
    Text: the four numbers on reset, then the tool results (calculator values, the verdict).

    ## Tools
    ``calculator(expression)`` evaluates arithmetic on whole numbers exactly (fractions stay
    fractions); ``answer(expression)`` submits the final expression and ends the episode.

    ## Rewards
    ``correct``: 1 if the answer uses exactly the four numbers (no signs) and equals 24 as an
    exact rational (``8/(3-8/3)`` counts), else 0 (weight 1). ``format``: -1 on a malformed turn
    (weight 0.1).

    ## Starting State
    An instance drawn with the reset seed, or ``options["task_id"]`` (``game24-03-03-08-08``).

    ## Episode End
    Terminated by ``answer``; truncated after ``max_turns`` turns (default 8) or a budget.

    ## Arguments
    ``split`` (``"all"`` default, ``"train"`` or ``"test"``: a fixed hash split, one fifth test),
    plus every ``ToolEnv`` option.
    """

    default_reward_weights = {"format": 0.1, "correct": 1.0}
    default_system_prompt = ("You play the Game of 24. Combine the four given numbers, each exactly once, with + - * / "
                             "and parentheses to make 24. Use the calculator to try ideas, then call answer with the "
                             "expression.")

    def __init__(self, split: str = "all", max_turns: int = 8, **kwargs: Any) -> None:
        self.split = split
        super().__init__(max_turns=max_turns, **kwargs)

    def load_tasks(self) -> list[Task]:
        return game24_tasks(self.split)

    def make_tools(self) -> list[Tool]:
        @tool
        def calculator(expression: str) -> str:
            """Evaluate an arithmetic expression on whole numbers exactly (+ - * / and parentheses).

            Args:
                expression: e.g. "(13 - 9) * (2 + 4)" or "8 / (3 - 8/3)"
            """
            try:
                return f"{expression.strip()[:200]} = {_value_text(evaluate(expression))}"
            except ExpressionError as e:
                raise ToolError(str(e)) from None

        def answer(expression: str, episode: Episode | None = None) -> str:
            if episode is not None:
                episode.answer = str(expression)
            return "Answer recorded."

        answer_tool = Tool(
            "answer", "Submit the expression that makes 24 (uses each number once). Ends the episode.",
            {"type": "object", "properties": {"expression": {"type": "string", "description": "e.g. (13-9)*(2+4)"}},
             "required": ["expression"], "additionalProperties": False},
            answer, terminal=True, episode_arg="episode")
        return [calculator, answer_tool]

    def score(self, episode: Episode) -> dict[str, float]:
        if episode.answer is None:
            return {"correct": 0.0}
        ok, _ = grade24(episode.answer, episode.task.metadata["numbers"])
        return {"correct": float(ok)}

    def oracle_actions(self, task: Task) -> list[str]:
        """A perfect agent's turns: check the solution with the calculator, then answer it."""
        return [self.format_call("calculator", expression=task.answer),
                self.format_call("answer", expression=task.answer)]


