"""A plain socket in front of an attach stream asyncio cannot take as is (TLS, ssh's ``dial-stdio`` pipe)."""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable

__all__ = ["plain_socket"]

_CHUNK = 1 << 16


def _reader(stream: Any) -> Callable[[int], bytes]:
    """A ``recv`` that returns what is there (the docker SDK's ssh socket reads a pipe that ``read(n)`` would fill)."""
    proc = getattr(stream, "proc", None)
    if proc is not None and hasattr(getattr(proc, "stdout", None), "read1"):
        return proc.stdout.read1
    return stream.recv


def _close(stream: Any) -> None:
    for how in ("shutdown", "close"):
        try:
            getattr(stream, how)(*((socket.SHUT_RDWR,) if how == "shutdown" else ()))
        except Exception:  # noqa: BLE001 - already closed, or not a socket at all
            pass


def plain_socket(stream: Any) -> socket.socket:
    """``stream`` itself when it is a plain socket, else one end of a socketpair two threads pump to and from it.

    Closing the returned socket closes ``stream``; the end of ``stream`` is an EOF on the returned socket.
    """
    if type(stream) is socket.socket:
        return stream
    try:
        stream.settimeout(None)  # an idle interpreter is not a dead connection
    except Exception:  # noqa: BLE001
        pass
    ours, theirs = socket.socketpair()
    recv = _reader(stream)

    def down() -> None:  # container -> us
        try:
            while data := recv(_CHUNK):
                theirs.sendall(data)
        except Exception:  # noqa: BLE001 - the stream or our end went away: both mean EOF
            pass
        try:
            theirs.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def up() -> None:  # us -> container
        try:
            while data := theirs.recv(_CHUNK):
                stream.sendall(data)
        except Exception:  # noqa: BLE001
            pass
        _close(stream)
        theirs.close()

    for target in (down, up):
        threading.Thread(target=target, daemon=True, name="forage-docker-bridge").start()
    return ours
