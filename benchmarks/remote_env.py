"""Steps/s of LookupQA-v0 in-process vs through RemoteEnv over loopback, at 1 and 64 concurrent sessions.

The remote side is a real ``forage serve env forage/LookupQA-v0`` subprocess on 127.0.0.1; the
policy is the env's oracle (so every step does real tool work). Baseline, measured side by side in
the same run: the same episodes stepped in-process (sync loop at 1, 64 envs on one event loop at 64).
Both RemoteEnv transports are measured: ``ws`` (one pipelined WebSocket shared by the sessions of a
loop, the default) and ``http`` (one request per call). Resets are timed too (both sides), steps
are counted; sessions/envs are made before the clock starts. Each row is the best of ``--repeat``
rounds, the in-process and remote runs alternating within a round (the machine may be shared).

    .venv/bin/python benchmarks/remote_env.py [--steps 3000] [--concurrency 1 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import httpx

import forage  # noqa: F401
from forage.asgi_thread import free_port
from forage.envs import RemoteEnv
from forage.envs.lookup import LookupQAEnv

ENV_ID = "forage/LookupQA-v0"


class Oracle:
    """Oracle turns by task id (the client cannot see the remote env's task objects)."""

    def __init__(self) -> None:
        self.env = LookupQAEnv()
        self.tasks = {t.id: t for t in self.env.tasks}

    def actions(self, task_id: str) -> list[str]:
        return self.env.oracle_actions(self.tasks[task_id])


async def drive(envs: list, oracle: Oracle, n_steps: int, remote: bool) -> tuple[float, int]:
    """Run oracle episodes on every env concurrently until ~n_steps steps in total."""
    per_env = max(1, n_steps // len(envs))
    counts = [0] * len(envs)

    async def one(i: int, env) -> None:
        seed = i * 100_000
        while counts[i] < per_env:
            _, info = await env.areset(seed=seed)
            seed += 1
            for action in oracle.actions(info["task_id"]):
                await env.astep(action)
                counts[i] += 1

    await asyncio.gather(*(e.areset(seed=0) for e in envs))   # sessions exist before the clock starts
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i, e) for i, e in enumerate(envs)))
    return time.perf_counter() - t0, sum(counts)


def drive_sync(env, oracle: Oracle, n_steps: int) -> tuple[float, int]:
    """One env, plain sync Gymnasium calls."""
    steps, seed = 0, 0
    env.reset(seed=0)                       # the session exists before the clock starts
    t0 = time.perf_counter()
    while steps < n_steps:
        _, info = env.reset(seed=seed)
        seed += 1
        for action in oracle.actions(info["task_id"]):
            env.step(action)
            steps += 1
    return time.perf_counter() - t0, steps


def start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from forage.cli import main; sys.argv[0] = 'forage'; main()",
                             "serve", "env", ENV_ID, "--port", str(port), "--max-sessions", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_server(proc)
    raise TimeoutError("env server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def measure(url: str, oracle: Oracle, c: int, steps: int, transport: str | None) -> float:
    """Steps/s of ``c`` concurrent sessions, in-process when ``transport`` is None."""
    if c == 1:
        env = gym.make(ENV_ID).unwrapped if transport is None else RemoteEnv(url, ENV_ID, transport=transport)
        try:
            secs, n = drive_sync(env, oracle, steps)
        finally:
            env.close()
        return n / secs
    if transport is None:
        secs, n = asyncio.run(drive([LookupQAEnv() for _ in range(c)], oracle, steps, remote=False))
        return n / secs
    remotes = [RemoteEnv(url, ENV_ID, transport=transport) for _ in range(c)]

    async def remote_run() -> tuple[float, int]:
        try:
            return await drive(remotes, oracle, steps, remote=True)
        finally:
            await asyncio.gather(*(e.aclose() for e in remotes))
    secs, n = asyncio.run(remote_run())
    return n / secs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="steps per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--transports", nargs="+", default=["ws", "http"], choices=["ws", "http"])
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each row is the best round")
    args = parser.parse_args()
    oracle = Oracle()
    proc, url = start_server()
    rows = []
    try:
        for c in args.concurrency:
            best: dict[str | None, float] = {}
            for _ in range(args.repeat):
                for transport in (None, *args.transports):
                    sps = measure(url, oracle, c, args.steps, transport)
                    best[transport] = max(best.get(transport, 0.0), sps)
            rows.append((c, best))
    finally:
        stop_server(proc)
    print(f"LookupQA-v0, oracle policy, {os.cpu_count()} CPUs; remote = RemoteEnv -> forage serve env on 127.0.0.1; "
          f"best of {args.repeat} alternating rounds")
    print(f"{'sessions':>8} {'in-process steps/s':>20}" + "".join(f" {t + ' steps/s':>14} {t + '/in-process':>15}"
                                                          for t in args.transports))
    for c, best in rows:
        line = f"{c:>8} {best[None]:>20.0f}"
        for t in args.transports:
            line += f" {best[t]:>14.0f} {best[t] / best[None]:>15.3f}"
        print(line)


if __name__ == "__main__":
    main()
