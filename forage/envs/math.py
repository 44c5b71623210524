"""MathPython: competition math (CHAMP) with a Python sandbox; answers compared by meaning (:mod:`.mathcheck`)."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import select
import signal
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

from ..tools import Tool, ToolResult, tool
from . import mathcheck
from .base import Episode, Task
from .mathcheck import reference_forms
from .sandboxed import SandboxedToolEnv, make_python_tool

__all__ = ["MathPythonEnv", "load_champ", "answers_match", "answer_variants", "AnswerChecker"]


def load_champ(path: str | Path | None = None) -> list[Task]:
    """The 270 CHAMP problems as tasks (answer = the reference final answer; category and hints in metadata)."""
    if path is None:
        from ..assets import champ_json

        path = champ_json()
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    hints = data.get("hints", {})
    tasks = []
    for pid, p in data["problems"].items():
        tasks.append(Task(id=pid, prompt=p["_text"], answer=p["_answer"], metadata={
            "category": p.get("category"),
            "hints": [hints[h]["_text"] for h in p.get("ch_list", []) if h in hints],
        }))
    return tasks


def answer_variants(answer: str) -> list[str]:
    """The forms a reference answer spells out, e.g. ``"100 (i.e., all numbers)"`` -> ``["100", "all numbers"]``."""
    return reference_forms(answer)


_WORKER_LOOP = r"""
def _serve():
    import json, os, resource, sys
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY << 20, MEMORY << 20))
    except (ValueError, OSError):
        pass
    out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    import sympy  # noqa: F401  (imported before the first request, not during it)
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        try:
            req = json.loads(line)
            ok = answers_equivalent(str(req["p"]), str(req["r"]))
        except BaseException:
            ok = False
        out.write(b"1\n" if ok else b"0\n")
        out.flush()


_serve()
"""


def _kill(proc: subprocess.Popen, owner: int | None = None) -> None:
    if owner is not None and owner != os.getpid():
        return  # a forked child's copy of the parent's worker: the parent's to stop
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        try:
            if f is not None:
                f.close()
        except OSError:
            pass


class AnswerChecker:
    """:func:`~forage.envs.mathcheck.answers_equivalent` in a worker process with a time and memory limit.

    The parser never evaluates code; the worker exists because sympy can take unbounded time or
    memory on some inputs. A check that runs past ``timeout`` kills the worker (a new one starts on
    the next check) and counts as "not equivalent". Thread-safe; a forked child starts its own worker.
    """

    def __init__(self, timeout: float = 10.0, memory_mb: int = 2048, python: str | None = None) -> None:
        if timeout <= 0 or memory_mb < 256:
            raise ValueError("timeout must be > 0 and memory_mb >= 256")
        self.timeout, self.memory_mb, self.python = timeout, memory_mb, python or sys.executable
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._pid = 0
        self._finalizer: Any = None

    def _start(self) -> subprocess.Popen:
        src = inspect.getsource(mathcheck).replace("from __future__ import annotations\n", "")
        src += _WORKER_LOOP.replace("MEMORY", str(int(self.memory_mb)))
        proc = subprocess.Popen([self.python, "-I", "-c", src], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True, env={}, cwd="/")
        if not self._wait_line(proc, max(30.0, self.timeout)) == b"ready":
            _kill(proc)
            raise RuntimeError("the answer-checking worker did not start")
        self._finalizer = weakref.finalize(self, _kill, proc, os.getpid())
        self._pid = os.getpid()
        return proc

    @staticmethod
    def _wait_line(proc: subprocess.Popen, timeout: float) -> bytes | None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = proc.stdout.readline()
        return line.strip() if line else None

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._pid == os.getpid():
            if self._finalizer is not None:
                self._finalizer.detach()
            _kill(proc)

    def check(self, prediction: str | None, reference: str, timeout: float | None = None) -> bool:
        """True when ``prediction`` means the same as the CHAMP ``reference`` (False on timeout or any failure)."""
        if prediction is None or not str(prediction).strip():
            return False
        msg = (json.dumps({"p": str(prediction)[:10_000], "r": str(reference)}) + "\n").encode()
        with self._lock:
            if self._proc is not None and self._pid != os.getpid():
                self._proc = None  # the parent's worker: leave it to the parent
            try:
                if self._proc is None or self._proc.poll() is not None:
                    self._proc = self._start()
                assert self._proc.stdin is not None
                self._proc.stdin.write(msg)
                self._proc.stdin.flush()
                line = self._wait_line(self._proc, timeout if timeout is not None else self.timeout)
            except (OSError, RuntimeError, ValueError):
                line = None
            if line not in (b"0", b"1"):
                self._stop()
                return False
            return line == b"1"

    def close(self) -> None:
        """Stop the worker (idempotent; a later check starts a new one)."""
        with self._lock:
            self._stop()


_default: AnswerChecker | None = None
_default_lock = threading.Lock()


def _default_checker() -> AnswerChecker:
    global _default
    with _default_lock:
        if _default is None:
            _default = AnswerChecker()
        return _default


def answers_match(prediction: str | None, reference: str, timeout: float = 10.0) -> bool:
    """True when ``prediction`` means the same as ``reference``: same number (exactly), expression, set,
    tuple, interval or assignment, or the same words (see :mod:`forage.envs.mathcheck`). Runs in the
    shared time-limited worker; False on timeout."""
    return _default_checker().check(prediction, reference, timeout)


class MathPythonEnv(SandboxedToolEnv):
    """Solve competition math problems (CHAMP) with a Python sandbox, then give the final answer.

    ## Description
    The 270 problems of CHAMP (``champ-dataset``): combinatorics, number theory, polynomials,
    sequences and inequalities, each with a short reference answer. The agent may compute with
    the ``python`` tool (numpy and sympy are installed in the sandbox; state persists) and ends
    with ``answer``. Answers are compared by meaning (:mod:`forage.envs.mathcheck`): exact
    integers and rationals (``0.5`` = ``1/2``, but ``...295`` is not ``...294``), expressions
    (``(x+1)^2`` = ``x^2+2x+1``, LaTeX ``\\frac12``, ``\\sqrt[n]{2}``, ``\\binom``, ``√2``, Unicode
    minus), sets in any order (``376 and 625`` = ``{625, 376}``), tuples in order, intervals with
    their ends (``[-1, 1]`` is not ``(-1, 1)``), assignments (``x=6, y=5`` = ``(x, y) = (6, 5)``,
    ``x=±1`` = ``-1 and 1``), a number inside a short sentence ("The minimum is -9."), yes/no, and
    CHAMP's reference templates ("3 is the only possible value", "The limit exists and is equal
    to 2", "C(10, 5), or equivalently 252"). Signs, operators and brackets always matter. Other
    free-text answers ("No integer solutions") match only as the same words. The answer is read
    by a parser that never evaluates code, in a worker process with a time limit
    (``check_timeout``) and a memory limit, restarted after a timeout.

    Reference grader: none is published for CHAMP; the checker was measured on labelled answers
    built from CHAMP's references (``tests/data/champ_answers_*.json``, ``tests/test_graders_math.py``):
    on 375 answers written while developing it (131 wrong), 0 wrong answers accepted and 0
    equivalent forms rejected (the normaliser it replaced: 27/131 and 100/244); on 115 held-out
    answers (52 wrong), 0/52 and 8/63 at the first run, 0/52 and 2/63 after the fixes that run
    prompted (a product against a "..." reference and "f(x)=0 for all x" still fail). ``math-verify`` 0.9.0 on the same
    sets: 2/131 and 27/244, 0/52 and 6/63; it was not adopted: it rejects more, its plain-text
    path uses sympy's ``parse_expr`` (``eval``), and its signal-based timeout needs the main thread.
    A reference with floor/ceiling/factorial/binomial is compared as a function of integers.

    ## Action Space
    Text: the model's turn with tool calls in the env's ``tool_format`` (Hermes by default).

    ## Observation Space
    Text: the problem on reset, then the output of each tool call.

    ## Tools
    ``python(code)`` runs code in the episode's sandbox; ``answer(answer)`` gives the final answer.

    ## Rewards
    ``correct``: 1 when the answer matches the reference, else 0 (weight 1).
    ``format``: -1 on a turn with a malformed/unknown tool call or none (weight 0.1).

    ## Starting State
    A problem drawn with the reset seed, or ``options["task_id"]`` (e.g. ``"P_Combinatorics_1"``).

    ## Episode End
    Terminated by ``answer``; truncated after ``max_turns`` (default 8) or a tool/token budget.

    ## Arguments
    ``sandbox`` (``"bwrap"`` default, ``"docker"``, ``"local"``, a ``SandboxPool`` or a
    ``Sandbox``), ``sandbox_config``, ``pool_size``, ``categories`` (keep only these CHAMP
    categories), ``with_hints`` (append the dataset's hints to the prompt, default False),
    ``check_timeout`` (seconds for one answer check, default 10), ``path`` (another CHAMP-format
    JSON), plus every ``ToolEnv`` option.
    """

    default_reward_weights = {"format": 0.1, "correct": 1.0}
    default_system_prompt = (
        "You are a careful mathematician. Use the python tool to explore and check your reasoning "
        "(numpy and sympy are available), then call answer with only the final answer."
    )

    def __init__(self, sandbox: Any = "bwrap", *, path: str | Path | None = None,
                 categories: list[str] | None = None, with_hints: bool = False, max_turns: int = 8,
                 check_timeout: float = 10.0, **kwargs: Any) -> None:
        self.path, self.categories, self.with_hints = path, categories, with_hints
        self.check_timeout = check_timeout
        super().__init__(sandbox=sandbox, max_turns=max_turns, **kwargs)

    def load_tasks(self) -> list[Task]:
        tasks = load_champ(self.path)
        if self.categories:
            tasks = [t for t in tasks if t.metadata.get("category") in set(self.categories)]
        return tasks

    def format_prompt(self, task: Task) -> str:
        text = task.prompt
        if self.with_hints and task.metadata.get("hints"):
            text += "\n\nHints:\n" + "\n".join(f"- {h}" for h in task.metadata["hints"])
        return text + "\n\nGive the final answer with the answer tool (a number, expression or short phrase)."

    def make_tools(self) -> list[Tool]:
        env = self

        @tool(terminal=True, timeout=None, concurrent=False)
        async def answer(answer: str, episode: Episode | None = None) -> ToolResult:
            """Give the final answer (a number, expression or short phrase). Ends the episode.

            Args:
                answer: the final answer
            """
            if episode is not None:
                episode.answer = answer
                episode.state["correct"] = await env.check(answer, str(episode.task.answer))
            return ToolResult("Answer recorded.")

        return [make_python_tool(), answer]

    async def check(self, prediction: str, reference: str) -> bool:
        """Is ``prediction`` right? Compared by meaning in the time-limited worker (never in the agent's sandbox)."""
        return await asyncio.to_thread(_default_checker().check, prediction, reference, self.check_timeout)

    def score(self, episode: Episode) -> dict[str, float]:
        return {"correct": float(bool(episode.state.get("correct")))}

    def oracle_actions(self, task: Task) -> list[str]:
        """A perfect agent's turns: one python call, then the reference answer."""
        return [self.format_call("python", code="print('checking')"),
                self.format_call("answer", answer=str(task.answer))]
