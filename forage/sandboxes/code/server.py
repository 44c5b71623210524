"""The long-lived interpreter that runs inside a sandbox (stdlib only; Python >= 3.8).

It reads length-prefixed JSON requests on stdin and answers on stdout, so one process serves
many calls. Requests: ``{"op": "exec", "code": ..., "limit": bytes}``, ``{"op": "reset"}``,
``{"op": "ping"}``. Code runs in a persistent namespace like a notebook cell: the value of a
final expression is printed. Output written to fd 1 and 2 (also by child processes) is
captured through pipes and capped. With ``--kill-strays`` (only inside a pid namespace) every
other process is killed after each call, so nothing keeps running between calls.
"""

import _ast  # the C node types: ``import ast`` would cost ~15 ms at every start
import builtins
import gc
import json
import os
import signal
import struct
import sys
import threading
import time

_HDR = struct.Struct(">I")
KILL_STRAYS = "--kill-strays" in sys.argv
WORKDIR = os.getcwd()
SERVER_PID = os.getpid()


def _open_protocol():
    """Move the protocol streams off fds 0/1/2 so user code cannot write into the protocol."""
    pin = os.fdopen(os.dup(0), "rb", buffering=0)
    pout = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return pin, pout


def _read_exact(f, n):
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _recv(f):
    hdr = _read_exact(f, 4)
    if hdr is None:
        return None
    body = _read_exact(f, _HDR.unpack(hdr)[0])
    return None if body is None else json.loads(body.decode("utf-8"))


def _send(f, obj):
    data = json.dumps(obj).encode("utf-8", "surrogatepass")
    f.write(_HDR.pack(len(data)) + data)


class _Drain(threading.Thread):
    """Drain one capture pipe for the whole life of the server, splitting its bytes into calls.

    The pipe's write end stays on fd 1 (or 2) across calls, so a call needs no new file
    descriptor (code that used up the fd limit cannot break the next call). A call ends when
    the server writes a random marker after every other process is gone: what came before it
    is that call's output, at most ``limit`` bytes kept and the rest counted.
    """

    def __init__(self, read_fd):
        super().__init__(daemon=True)
        self.fd = read_fd
        self.cond = threading.Condition()
        self.begin(16384)

    def begin(self, limit):
        with self.cond:
            self.limit, self.kept, self.dropped = limit, bytearray(), 0
            self.marker, self.pending, self.done = None, bytearray(), False

    def _keep(self, data):
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))

    def _feed(self, chunk):
        if self.done:
            return  # after the marker: a leftover writer of the last call; nobody reads it
        if self.marker is None:
            self._keep(chunk)
            return
        self.pending += chunk
        at = self.pending.find(self.marker)
        if at >= 0:
            self._keep(bytes(self.pending[:at]))
            self.pending = bytearray()
            self.done = True
            self.cond.notify_all()
        elif len(self.pending) > len(self.marker):
            cut = len(self.pending) - len(self.marker)
            self._keep(bytes(self.pending[:cut]))
            del self.pending[:cut]

    def run(self):
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except InterruptedError:
                continue
            except OSError:
                return
            if not chunk:
                return
            with self.cond:
                self._feed(chunk)

    def finish(self, write_fd, timeout):
        """Mark the end of the call on ``write_fd``; return (kept bytes, dropped count)."""
        marker = b"\0forage-end-" + os.urandom(12).hex().encode() + b"\0"
        with self.cond:
            self.marker = marker
            if self.pending:  # cannot hold the marker yet: it is written below
                self._keep(bytes(self.pending))
                self.pending = bytearray()
        try:
            os.write(write_fd, marker)
        except OSError:
            pass
        with self.cond:
            self.cond.wait_for(lambda: self.done, timeout)
            self.done = True
            return bytes(self.kept), self.dropped


_DRAINS = []  # (drain, write fd) for stdout and stderr, made by _open_capture()


def _open_capture():
    """Point fds 1 and 2 at two capture pipes for good and start their drains."""
    for target in (1, 2):
        r, w = os.pipe()
        os.dup2(w, target)
        d = _Drain(r)
        d.start()
        _DRAINS.append((d, w))


def _kill_strays():
    """SIGKILL every other process in the sandbox (not pid 1) and reap our dead children."""
    if not KILL_STRAYS:
        return
    deadline = time.monotonic() + 2.0
    while True:
        try:
            os.kill(-1, signal.SIGKILL)  # every process we may signal, except ourselves and pid 1
            alone = False
        except ProcessLookupError:
            alone = True
        except OSError:
            alone = True
        while True:  # reap what has died so far
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if alone or time.monotonic() > deadline:
            return
        time.sleep(0.0005)


def _fresh_namespace():
    return {"__name__": "__main__", "__builtins__": builtins}


def _run_cell(code, ns):
    """Compile and run ``code``; print the value of a trailing expression. Return the exit code."""
    tree = compile(code, "<cell>", "exec", _ast.PyCF_ONLY_AST)
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        last = _ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<cell>", "exec"), ns)
    if last is not None:
        value = eval(compile(last, "<cell>", "eval"), ns)
        if value is not None:
            print(repr(value))
    return 0


def _print_exception():
    etype, value, tb = sys.exc_info()
    while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
        tb = tb.tb_next  # hide this server's frames
    try:
        import traceback

        traceback.print_exception(etype, value, tb)
    except Exception:  # e.g. no file descriptor left to import with: the C printer needs none
        sys.__excepthook__(etype, value.with_traceback(tb), tb)


def _exec(req, ns):
    limit = int(req.get("limit", 16384))
    for d, w in _DRAINS:
        d.begin(limit)
    for target, (_, w) in zip((1, 2), _DRAINS):
        try:
            os.dup2(w, target)  # code may have closed or replaced fd 1/2; dup2 needs no free slot
        except OSError:
            pass
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    status, exit_code = "ok", 0
    started = time.perf_counter()
    try:
        exit_code = _run_cell(req["code"], ns)
    except SystemExit as e:
        exit_code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        status = "ok" if exit_code == 0 else "error"
    except BaseException:
        _print_exception()
        status, exit_code = "error", 1
    duration = time.perf_counter() - started
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass
    if os.getpid() != SERVER_PID:  # a child forked by the cell reached its end: it must not serve
        os._exit(exit_code if isinstance(exit_code, int) else 1)
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    _kill_strays()  # nothing else writes to the pipes once the end marker is written
    out, dropped = [], []
    for d, w in _DRAINS:
        kept, n = d.finish(w, 2.0)
        out.append(kept.decode("utf-8", "replace"))
        dropped.append(n)
    return {"status": status, "exit_code": exit_code, "stdout": out[0], "stderr": out[1],
            "stdout_dropped": dropped[0], "stderr_dropped": dropped[1], "duration": duration}


def _wipe_workdir():
    try:
        import shutil

        os.chdir(WORKDIR)
        names = os.listdir(WORKDIR)
    except (OSError, ImportError):  # no fd left (the dropped namespace's files close at the next collection)
        return
    for name in names:
        path = os.path.join(WORKDIR, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        except OSError:
            pass


def main():
    pin, pout = _open_protocol()
    _open_capture()
    ns = _fresh_namespace()
    _send(pout, {"ready": True, "pid": os.getpid(), "python": sys.version.split()[0]})
    while True:
        req = _recv(pin)
        if req is None:
            return
        op = req.get("op")
        if op == "exec":
            reply = _exec(req, ns)
        elif op == "reset":
            _kill_strays()
            ns = _fresh_namespace()
            gc.collect()  # close the files the old namespace held, so the wipe has fds to work with
            _wipe_workdir()
            reply = {"status": "ok"}
        elif op == "ping":
            reply = {"status": "ok"}
        else:
            reply = {"status": "error", "stderr": "unknown op %r" % (op,)}
        reply["seq"] = req.get("seq")   # the host matches replies to requests by it
        _send(pout, reply)


if __name__ == "__main__":
    main()
