"""An ASGI app served by uvicorn in a background thread (the local site, the retrieval service), and free ports."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

__all__ = ["free_port", "ThreadedASGIServer"]


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ThreadedASGIServer:
    """``app`` on ``host:port`` (port 0: a free one) in a daemon thread; ``start()`` waits until it accepts."""

    what = "the server"   # named in the start-up error

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, lifespan: str = "off",
                 thread_name: str = "forage-asgi") -> None:
        import uvicorn

        self.app = app
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                                     access_log=False, lifespan=lifespan))
        self._thread = threading.Thread(target=self._server.run, daemon=True, name=f"{thread_name}-{self.port}")

    def start(self, timeout: float = 30.0) -> Any:
        """Start and wait until it accepts connections; returns ``self``."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.what} did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
