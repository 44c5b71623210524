"""What runs in the solution's sandbox while it is graded: load the program as a module, answer calls.

Stdlib only. Shipped as text after :mod:`wire`'s source into a fresh sandbox; nothing here is
trusted by the grader: whatever this process prints can only *claim* a return value, which the
hidden tests (in another process) then judge. Output the solution writes goes to /dev/null, so
no print can push a reply past the sandbox's output cap. Each reply is framed as
``<NONCE>LENGTH:PAYLOAD</NONCE>``; a payload longer than one frame is fetched in pieces.
"""

try:  # in the sandbox these come from wire.py's source, shipped just before this one
    encode, decode  # noqa: B018
except NameError:
    from .wire import decode, encode

_forage = {"entry": None, "out": ""}


def _quiet():
    """Send fds 1 and 2 and sys.stdout/sys.stderr to /dev/null; return what :func:`_loud` needs to undo it."""
    import os
    import sys

    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass
    saved = (os.dup(1), os.dup(2), sys.stdout, sys.stderr)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    sys.stdout = sys.stderr = open(os.devnull, "w")
    return saved


def _loud(saved):
    import os
    import sys

    sink = sys.stdout
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:
            pass
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    os.close(saved[0])
    os.close(saved[1])
    sys.stdout, sys.stderr = saved[2], saved[3]
    try:
        sink.close()
    except BaseException:
        pass


def _send(nonce, payload, room):
    """Write the first frame of ``payload`` straight to fd 1 and keep the rest for :func:`forage_more`."""
    _forage["out"] = payload
    forage_more(nonce, 0, room)


def forage_more(nonce, start, room):
    """Write the frame of the stored payload that starts at ``start`` (at most ``room`` characters)."""
    import os

    out = _forage["out"]
    frame = ("<%s>%d:%s</%s>\n" % (nonce, len(out), out[start:start + room], nonce)).encode("ascii")
    while frame:
        frame = frame[os.write(1, frame):]


def _why(e):
    return ("error:" + type(e).__name__ + ": " + str(e)[:300]).encode("ascii", "replace").decode().replace("<", "(")


def forage_load(nonce, source, entry, room, reply=True):
    """Run the solution as the module ``solution`` (not ``__main__``); reply ``ok`` or ``error:...``."""
    import sys
    import types

    saved = _quiet()
    try:
        mod = types.ModuleType("solution")
        mod.__file__ = "solution.py"
        sys.modules["solution"] = mod
        exec(compile(source, "solution.py", "exec"), mod.__dict__)
        if not callable(mod.__dict__.get(entry)):
            raise NameError("the program defines no function " + entry)
        _forage["entry"] = entry
        payload = "ok"
    except BaseException as e:  # a crash or sys.exit at module level fails, as in the official harness
        payload = _why(e)
    finally:
        _loud(saved)
    if reply:
        _send(nonce, payload, room)


def forage_call(nonce, call, room):
    """Call the solution's function with the tagged ``[args, kwargs]``; reply ``return:<tagged value>`` or ``error:``."""
    import sys

    saved = _quiet()
    try:
        args, kwargs = decode(call)
        fn = sys.modules["solution"].__dict__[_forage["entry"]]
        payload = "return:" + encode(fn(*args, **kwargs))
    except BaseException as e:
        payload = _why(e)
    finally:
        _loud(saved)
    _send(nonce, payload, room)
