"""Start ``forage serve env`` as a real subprocess on 127.0.0.1 with a free port, and always stop it.

Also the remote tests' module fixtures: the server and the in-process env it is checked against.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any, Iterator

import gymnasium as gym
import httpx
import pytest

from forage.asgi_thread import free_port


class EnvServerProcess:
    """A ``forage serve env`` child process."""

    def __init__(self, env_id: str, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-c", "import sys; from forage.cli import main; sys.argv[0] = 'forage'; main()", "serve", "env", env_id, "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"env server exited with {self.proc.returncode}: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"env server at {self.url} not healthy after {timeout} s")

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stderr:
            self.proc.stderr.close()


@contextlib.contextmanager
def env_server(env_id: str = "forage/LookupQA-v0", *args: str) -> Iterator[EnvServerProcess]:
    server = EnvServerProcess(env_id, *args)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def remote_fixtures(env_id: str, *server_args: str) -> tuple[Any, Any]:
    """Module-scoped fixtures: ``server`` (``forage serve env ENV_ID SERVER_ARGS``), ``local`` (the env in process).

    In a test module: ``server, local = remote_fixtures(ENV_ID)``.
    """

    @pytest.fixture(scope="module")
    def server() -> Iterator[EnvServerProcess]:
        with env_server(env_id, *server_args) as s:
            yield s

    @pytest.fixture(scope="module")
    def local() -> Iterator[Any]:
        env = gym.make(env_id).unwrapped
        yield env
        env.close()

    return server, local
