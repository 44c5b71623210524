"""Forage beside its peers, measured side by side in one run: the env step with a dict-backed tool, and remote envs.

Rows (each side does the same work, on the same machine, in the same invocation):

* one tool call with a dict-backed search/lookup tool, per step, and the episode reset:
  Forage ``LookupQAEnv`` (``xml`` tags like the peers, and the default ``hermes`` JSON calls),
  GEM (``gem-llm`` 0.1.0) ``ToolEnvWrapper(QaEnv)`` with its ``SearchTool`` answering from the dict,
  SkyRL-gym (``skyrl-gym`` 0.4.0) ``SearchEnv`` with its ``search`` tool answering from the dict
  (SkyRL-gym has no reset: a new env per trajectory, so its reset is the constructor plus ``init``);
  the dict is the same LookupQA knowledge base (entity name -> description) for all three.
* a trivial echo env served over WebSocket, at the same client counts: OpenEnv's server
  (``openenv-core`` 0.2.1, ``create_fastapi_app`` + uvicorn, its ``GenericEnvClient`` per client
  thread) vs ``forage serve env`` with a one-tool echo ``ToolEnv`` (``RemoteEnv`` sessions sharing
  one pipelined connection on one event loop). Each server runs in its own process.

The peers are installed from PyPI into their own venv (``benchmarks/.peers-venv``, gitignored) on
first use; a peer that cannot be installed or imported is skipped with the reason printed. Each
figure is the best of ``--repeat`` rounds, the contenders alternating within a round.

    .venv/bin/python benchmarks/peers.py [--steps 20000] [--clients 1 16] [--repeat 3] [--no-setup]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS_VENV = HERE / ".peers-venv"
PEERS = {"gem-llm": "0.1.0", "skyrl-gym": "0.4.0", "openenv-core": "0.2.1"}
PEER_EXTRAS = ["datasets==5.2.0"]   # GEM's QaEnv imports it (not among gem-llm's own requirements)
STEPS_PER_EPISODE = 3
ECHO_ID = "bench/Echo-v0"


# -- the peers' venv ---------------------------------------------------------------------------

def peers_python(setup: bool) -> tuple[str | None, str]:
    """The peers venv's python (made and filled on first use), or None and the reason."""
    py = PEERS_VENV / "bin" / "python"
    if not py.exists():
        if not setup:
            return None, f"no {PEERS_VENV} (run without --no-setup to make it)"
        base = getattr(sys, "_base_executable", None) or sys.executable
        r = subprocess.run([base, "-m", "venv", str(PEERS_VENV)], capture_output=True, text=True)
        if r.returncode != 0:
            return None, f"could not make the venv: {r.stderr.strip()[-300:]}"
    wanted = [f"{name}=={version}" for name, version in PEERS.items()] + PEER_EXTRAS
    check = "import importlib.metadata as m; print(' '.join(f'{n}=={m.version(n)}' for n in " + repr(list(PEERS)) + "))"
    have = subprocess.run([str(py), "-c", check], capture_output=True, text=True)
    if have.returncode != 0 or have.stdout.split() != wanted[: len(PEERS)]:
        if not setup:
            return None, "the peers venv lacks " + ", ".join(wanted)
        print(f"installing {' '.join(wanted)} into {PEERS_VENV} (from PyPI) ...", flush=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", *wanted], capture_output=True, text=True)
        if r.returncode != 0:
            return None, f"pip install failed: {r.stderr.strip()[-500:]}"
    return str(py), ""


def run_worker(py: str, *args: str, timeout: float = 900) -> tuple[dict | None, str]:
    """Run this file as a worker under ``py``; its last stdout line is a JSON result."""
    r = subprocess.run([py, __file__, "--worker", *args], capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        return None, (r.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return json.loads(lines[-1]), ""


# -- shared workload ---------------------------------------------------------------------------

def workload(path: str) -> None:
    """Write the dict (LookupQA's knowledge base) and the lookups each episode makes."""
    from forage.envs.lookup import LookupQAEnv

    env = LookupQAEnv()
    kb = {name: ent.describe() for name, ent in env.kb.entities.items()}
    episodes = [{"question": t.prompt, "answer": str(t.answer),
                 "names": (t.metadata["path"] * STEPS_PER_EPISODE)[:STEPS_PER_EPISODE]} for t in env.tasks]
    Path(path).write_text(json.dumps({"kb": kb, "episodes": episodes}))


def timed_episodes(reset, step, actions_of, episodes, n_steps: int) -> dict:
    """Mean µs per reset and per step over episodes of ``STEPS_PER_EPISODE`` steps, until ``n_steps``."""
    clock = time.perf_counter
    t_reset = t_step = 0.0
    resets = steps = 0
    i = 0
    while steps < n_steps:
        ep = episodes[i % len(episodes)]
        i += 1
        actions = actions_of(ep)
        t0 = clock()
        reset(ep, i)
        t_reset += clock() - t0
        resets += 1
        for a in actions:
            t0 = clock()
            step(a)
            t_step += clock() - t0
            steps += 1
    return {"reset_us": t_reset / resets * 1e6, "step_us": t_step / steps * 1e6, "steps": steps}


def best_of(results: list[dict]) -> dict:
    return min(results, key=lambda r: r["step_us"])


# -- workers (these run in the peers venv, without forage) ---------------------------------------

def worker_gem(data: dict, n_steps: int) -> dict:
    from datasets import Dataset
    from gem.envs.qa_env import QaEnv
    from gem.tools.search_tool import SearchTool
    from gem.tools.tool_env_wrapper import ToolEnvWrapper

    kb = data["kb"]

    class DictSearchTool(SearchTool):
        """GEM's SearchTool (its parsing and result formatting), answering from the dict, not over HTTP."""

        def _search(self, query: str) -> str:
            text = kb.get(query)
            return self._passages2string([{"document": {"contents": text}}]) if text else "No results.\n"

    episodes = data["episodes"]
    dataset = Dataset.from_list([{"question": e["question"], "answer": e["answer"]} for e in episodes])
    env = ToolEnvWrapper(QaEnv(dataset=dataset), tools=[DictSearchTool(search_url="http://unused")], max_tool_uses=None)
    env.reset()
    probe = env.step(f"<search>{episodes[0]['names'][0]}</search>")
    assert "<information>" in probe[0] and episodes[0]["names"][0] in probe[0], probe
    return timed_episodes(lambda ep, i: env.reset(), env.step,
                          lambda ep: [f"<search>{n}</search>" for n in ep["names"]], episodes, n_steps)


def worker_skyrl(data: dict, n_steps: int) -> dict:
    from skyrl_gym.envs.search.env import SearchEnv, SearchEnvConfig

    kb = data["kb"]
    cfg = SearchEnvConfig()

    def make(ep: dict) -> SearchEnv:
        env = SearchEnv(cfg, extras={"reward_spec": {"ground_truth": {"target": ep["answer"]}}, "max_turns": 1 << 30})
        env.tool_group._tool_registry["search"] = lambda query: kb.get(query, "No results.")
        env.init([{"role": "user", "content": ep["question"]}])
        return env

    episodes = data["episodes"]
    box: dict = {}

    def reset(ep: dict, i: int) -> None:
        box["env"] = make(ep)

    probe = make(episodes[0]).step(f"<search>{episodes[0]['names'][0]}</search>")
    assert episodes[0]["names"][0] in probe["observations"][0]["content"], probe
    return timed_episodes(reset, lambda a: box["env"].step(a),
                          lambda ep: [f"<search>{n}</search>" for n in ep["names"]], episodes, n_steps)


def worker_openenv_server(port: int) -> None:
    import uvicorn
    from openenv.core.env_server.http_server import create_fastapi_app
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import Action, ConcurrencyConfig, Observation, State

    class EchoAction(Action):
        message: str = ""

    class EchoObservation(Observation):
        text: str = ""

    class Echo(Environment):
        SUPPORTS_CONCURRENT_SESSIONS = True

        def __init__(self) -> None:
            super().__init__()
            self._state = State(episode_id="0", step_count=0)

        def reset(self, seed=None, episode_id=None, **kwargs):
            self._state = State(episode_id=episode_id or "0", step_count=0)
            return EchoObservation(text="ready", done=False, reward=0.0)

        def step(self, action, timeout_s=None, **kwargs):
            self._state.step_count += 1
            return EchoObservation(text=action.message, done=False, reward=0.0)

        @property
        def state(self):
            return self._state

    app = create_fastapi_app(Echo, EchoAction, EchoObservation,
                             concurrency_config=ConcurrencyConfig(max_concurrent_envs=1024))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def worker_openenv_client(url: str, clients: int, n_steps: int) -> dict:
    from openenv.core.generic_client import GenericEnvClient

    per = max(1, n_steps // clients)
    conns = [GenericEnvClient(base_url=url, message_timeout_s=60) for _ in range(clients)]
    for c in conns:
        c.reset()
        assert c.step({"message": "hi"}).observation["text"] == "hi"
    barrier = threading.Barrier(clients + 1)
    done = [0] * clients

    def run(i: int) -> None:
        c = conns[i]
        barrier.wait()
        for k in range(per):
            c.step({"message": "hi"})
            done[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    for c in conns:
        c.close()
    return {"steps_per_s": sum(done) / secs, "steps": sum(done)}


# -- Forage rows (main venv) ---------------------------------------------------------------------

def forage_step(data: dict, n_steps: int, tool_format: str) -> dict:
    from forage.envs.lookup import LookupQAEnv

    env = LookupQAEnv(tool_format=tool_format, max_turns=1 << 30)
    episodes = data["episodes"]
    env.reset(seed=0)
    probe = env.step(env.format_call("lookup", name=episodes[0]["names"][0]))
    assert episodes[0]["names"][0] in probe[0] and not probe[4]["tool_errors"], probe
    calls = {n: env.format_call("lookup", name=n) for ep in episodes for n in ep["names"]}
    out = timed_episodes(lambda ep, i: env.reset(seed=i), env.step,
                         lambda ep: [calls[n] for n in ep["names"]], episodes, n_steps)
    env.close()
    return out


def make_echo_env(**kwargs):
    """The trivial env: one sync ``echo`` tool, episodes that never end by themselves."""
    from forage.envs.base import Task, ToolEnv
    from forage.tools import tool

    @tool
    def echo(message: str) -> str:
        """Say it back."""
        return message

    return ToolEnv([Task("echo", "ready")], [echo], max_turns=1 << 30, **kwargs)


def serve_forage_echo(port: int) -> None:
    import gymnasium as gym

    from forage.envs.server import EnvServerConfig, serve_env

    gym.register(ECHO_ID, entry_point=make_echo_env)
    serve_env(EnvServerConfig(ECHO_ID, max_sessions=1024), port=port)


def forage_remote(url: str, clients: int, n_steps: int) -> dict:
    import asyncio

    from forage.envs import RemoteEnv

    per = max(1, n_steps // clients)
    envs = [RemoteEnv(url, ECHO_ID) for _ in range(clients)]
    action = make_echo_env().format_call("echo", message="hi")

    async def main() -> float:
        await asyncio.gather(*(e.areset(seed=0) for e in envs))
        first = await envs[0].astep(action)
        assert "hi" in first[0] and not first[4]["tool_errors"], first

        async def run(e) -> None:
            for _ in range(per):
                await e.astep(action)

        t0 = time.perf_counter()
        await asyncio.gather(*(run(e) for e in envs))
        secs = time.perf_counter() - t0
        await asyncio.gather(*(e.aclose() for e in envs))
        return secs

    secs = asyncio.run(main())
    return {"steps_per_s": per * clients / secs, "steps": per * clients}


# -- servers ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                time.sleep(0.3)
                return proc
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise TimeoutError(f"no server on port {port}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stderr:
        proc.stderr.close()


# -- main ----------------------------------------------------------------------------------------------

def worker_main(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "openenv-server":
        worker_openenv_server(int(argv[1]))
        return
    if kind == "openenv-client":
        print(json.dumps(worker_openenv_client(argv[1], int(argv[2]), int(argv[3]))))
        return
    data = json.loads(Path(argv[1]).read_text())
    fn = {"gem": worker_gem, "skyrl": worker_skyrl}[kind]
    print(json.dumps(fn(data, int(argv[2]))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="tool steps per step measurement")
    parser.add_argument("--remote-steps", type=int, default=6_000, help="steps per remote measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-setup", action="store_true", help="do not make/fill the peers venv")
    args = parser.parse_args()
    py, why = peers_python(setup=not args.no_setup)
    skipped: list[str] = []
    if py is None:
        skipped.append(f"all peers: {why}")

    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "workload.json")
        workload(data_path)
        data = json.loads(Path(data_path).read_text())

        # 1. one tool call with a dict-backed tool
        step_rows: dict[str, list[dict]] = {}
        for _ in range(args.repeat):
            for fmt in ("xml", "hermes"):
                step_rows.setdefault(f"Forage LookupQA ({fmt})", []).append(forage_step(data, args.steps, fmt))
            for name, kind in (("GEM QaEnv+SearchTool", "gem"), ("SkyRL-gym SearchEnv", "skyrl")):
                if py is None or any(s.startswith(name) for s in skipped):
                    continue
                result, err = run_worker(py, kind, data_path, str(args.steps))
                if result is None:
                    skipped.append(f"{name}: {err}")
                else:
                    step_rows.setdefault(name, []).append(result)

        # 2. trivial env over WebSocket
        remote_rows: dict[int, dict[str, float]] = {}
        fport = free_port()
        forage_srv = start([sys.executable, __file__, "--serve-forage-echo", str(fport)], fport)
        openenv_srv = None
        if py is not None:
            oport = free_port()
            try:
                openenv_srv = start([py, __file__, "--worker", "openenv-server", str(oport)], oport)
            except Exception as e:
                skipped.append(f"OpenEnv server: {type(e).__name__}: {e}")
        try:
            for c in args.clients:
                row = remote_rows.setdefault(c, {})
                for _ in range(args.repeat):
                    sps = forage_remote(f"http://127.0.0.1:{fport}", c, args.remote_steps)["steps_per_s"]
                    row["forage"] = max(row.get("forage", 0.0), sps)
                    if openenv_srv is not None:
                        result, err = run_worker(py, "openenv-client", f"http://127.0.0.1:{oport}", str(c),
                                                 str(args.remote_steps))
                        if result is None:
                            skipped.append(f"OpenEnv client @{c}: {err}")
                        else:
                            row["openenv"] = max(row.get("openenv", 0.0), result["steps_per_s"])
        finally:
            stop(forage_srv)
            if openenv_srv is not None:
                stop(openenv_srv)

    print(f"{os.cpu_count()} CPUs; best of {args.repeat} alternating rounds; peers: "
          + ", ".join(f"{k} {v}" for k, v in PEERS.items()))
    print(f"\none tool call with a dict-backed tool ({STEPS_PER_EPISODE} calls an episode, {args.steps} steps)")
    print(f"{'env':<28}{'step us':>10}{'reset us':>10}{'step time / Forage xml':>24}")
    best = {name: best_of(results) for name, results in step_rows.items()}
    base = best["Forage LookupQA (xml)"]
    for name, r in best.items():
        print(f"{name:<28}{r['step_us']:>10.2f}{r['reset_us']:>10.2f}{r['step_us'] / base['step_us']:>23.2f}x")
    peer_names = [n for n in best if not n.startswith("Forage")]
    if peer_names:
        fastest = min(peer_names, key=lambda n: best[n]["step_us"])
        print(f"Forage xml step = {base['step_us'] / best[fastest]['step_us']:.1f}x the fastest peer's ({fastest}); "
              f"Forage speed / peer speed = {best[fastest]['step_us'] / base['step_us']:.2f}")
    print(f"\ntrivial echo env over WebSocket, steps/s ({args.remote_steps} steps)")
    print(f"{'clients':>8}{'Forage':>12}{'OpenEnv':>12}{'Forage/OpenEnv':>16}")
    for c, row in remote_rows.items():
        f, o = row["forage"], row.get("openenv")
        shown = f"{o:.0f}" if o else "skipped"
        ratio = f"{f / o:.2f}" if o else "-"
        print(f"{c:>8}{f:>12.0f}{shown:>12}{ratio:>16}")
    for s in dict.fromkeys(skipped):
        print(f"skipped: {s}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--serve-forage-echo":
        serve_forage_echo(int(sys.argv[2]))
    else:
        main()
