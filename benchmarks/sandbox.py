"""Warm sandbox latency and throughput vs a new interpreter per call.

Measures ``print(1)`` round trips through the warm docker and bwrap sandboxes (p50/p99 latency
and execs/s at concurrency 1 and 8) beside the baselines measured in the same run: a new
interpreter per call, started the fastest honest way — the real python3 binaries, not a version
manager's shim (``/usr/bin/python3`` and ``sys.executable``, each resolved with ``realpath``),
each with ``-c`` and with ``-S -c`` (no ``site``) — and ``docker run`` per call. The ratios are
against the fastest of those interpreters, named in the output; ``python3`` as ``PATH`` finds it
(e.g. a pyenv shim) is shown for reference only.

    python benchmarks/sandbox.py [--calls 300] [--backends bwrap,docker,gvisor] [--json out.json]
    python benchmarks/sandbox.py --seccomp-ab [--rounds 3]   # what the syscall filter costs a warm call

``gvisor`` is the docker backend on gVisor's ``runsc`` runtime (when dockerd has it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forage.sandboxes.code import SandboxConfig, SandboxPool  # noqa: E402


def pct(values: list[float], q: float) -> float:
    """The q-quantile of ``values`` (nearest rank), in milliseconds."""
    s = sorted(values)
    return 1000 * s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


async def timed_calls(call, n: int, concurrency: int) -> tuple[list[float], float]:
    """Run ``n`` calls with ``concurrency`` workers; return per-call latencies and the wall time."""
    lat: list[float] = []
    per_worker = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]

    async def worker(k: int, count: int) -> None:
        for _ in range(count):
            t = time.perf_counter()
            await call(k)
            lat.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker(k, c) for k, c in enumerate(per_worker)))
    return lat, time.perf_counter() - start


async def bench_sandbox(backend: str, n: int) -> dict[str, float]:
    config = SandboxConfig(timeout=30, docker_runtime="runsc" if backend == "gvisor" else None)
    pool = SandboxPool("docker" if backend == "gvisor" else backend, size=8, max_size=8, config=config)
    await pool.start()
    boxes = [await pool.acquire() for _ in range(8)]
    try:
        for sb in boxes:  # warm-up
            for _ in range(5):
                assert (await sb.run("print(1)")).stdout == "1\n"

        async def call(k: int) -> None:
            r = await boxes[k].run("print(1)")
            assert r.stdout == "1\n", r

        lat1, wall1 = await timed_calls(call, n, 1)
        lat8, wall8 = await timed_calls(call, n, 8)
        t = time.perf_counter()
        await boxes[0].restart()
        restart = time.perf_counter() - t
        return {"p50_ms": pct(lat1, 0.5), "p99_ms": pct(lat1, 0.99), "execs_s_c1": n / wall1, "execs_s_c8": n / wall8,
                "p50_ms_c8": pct(lat8, 0.5), "restart_ms": restart * 1000}
    finally:
        for sb in boxes:
            await pool.release(sb)
        await pool.close()


async def bench_process(argv: list[str], n: int) -> dict[str, float]:
    async def call(k: int) -> None:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert out == b"1\n", (out, err)

    await call(0)  # warm-up (page cache)
    lat1, wall1 = await timed_calls(call, n, 1)
    lat8, wall8 = await timed_calls(call, n, 8)
    return {"p50_ms": pct(lat1, 0.5), "p99_ms": pct(lat1, 0.99), "execs_s_c1": n / wall1, "execs_s_c8": n / wall8,
            "p50_ms_c8": pct(lat8, 0.5)}


def interpreter_baselines() -> dict[str, list[str]]:
    """Name -> argv of each new-interpreter baseline: the real python3 binaries (shims resolved), -c and -S -c."""
    binaries: list[str] = []
    for candidate in ("/usr/bin/python3", sys.executable):
        if candidate and os.path.exists(candidate):
            real = os.path.realpath(candidate)
            if os.access(real, os.X_OK) and real not in binaries:
                binaries.append(real)
    out: dict[str, list[str]] = {}
    for real in binaries:
        out[f"{real} -c"] = [real, "-c", "print(1)"]
        out[f"{real} -S -c"] = [real, "-S", "-c", "print(1)"]
    return out


async def seccomp_ab(rounds: int, n: int) -> dict[str, list[float]]:
    """Warm bwrap ``print(1)`` p50 (ms) with and without ``--seccomp``, interleaved rounds of ``n`` calls."""
    from forage.sandboxes.code.bwrap import BwrapSandbox

    class Unfiltered(BwrapSandbox):
        def _argv(self, seccomp_fd: int, root: str) -> list[str]:
            argv = super()._argv(seccomp_fd, root)
            i = argv.index("--seccomp")
            return argv[:i] + argv[i + 2:]

    out: dict[str, list[float]] = {"with seccomp": [], "without": []}
    for _ in range(rounds):
        for name, cls in (("with seccomp", BwrapSandbox), ("without", Unfiltered)):
            async with cls(SandboxConfig(timeout=30)) as sb:
                for _ in range(20):
                    await sb.run("print(1)")

                async def call(k: int) -> None:
                    await sb.run("print(1)")

                lat, _ = await timed_calls(call, n, 1)
                out[name].append(round(pct(lat, 0.5), 3))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300, help="warm calls per backend and concurrency level")
    ap.add_argument("--baseline-calls", type=int, default=40, help="calls per baseline (they are slow)")
    ap.add_argument("--backends", default="bwrap,docker")
    ap.add_argument("--json", default="", help="also write the figures to this file")
    ap.add_argument("--seccomp-ab", action="store_true", help="only compare bwrap with and without the syscall filter")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --seccomp-ab")
    args = ap.parse_args()
    if args.seccomp_ab:
        res = asyncio.run(seccomp_ab(args.rounds, args.calls))
        for name, p50s in res.items():
            print(f"warm bwrap {name:<14} p50 ms per round: {', '.join(f'{v:.3f}' for v in p50s)}")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return
    backends = [b for b in args.backends.split(",") if b]
    results: dict[str, dict[str, float]] = {}

    for b in backends:
        print(f"warm {b} ...", flush=True)
        results[f"warm {b}"] = asyncio.run(bench_sandbox(b, args.calls))
    interpreters = interpreter_baselines()
    for name, argv in interpreters.items():
        print(f"baseline: a new interpreter per call, {name} ...", flush=True)
        results[name] = asyncio.run(bench_process(argv, args.baseline_calls))
    on_path = shutil.which("python3")
    if on_path and os.path.realpath(on_path) not in {argv[0] for argv in interpreters.values()}:
        shown = f"python3 on PATH ({on_path})"
        print(f"reference only: {shown} ...", flush=True)
        results[shown] = asyncio.run(bench_process([on_path, "-c", "print(1)"], max(8, args.baseline_calls // 4)))
    fastest = min(interpreters, key=lambda name: results[name]["p50_ms"])
    if "docker" in backends or "gvisor" in backends:
        from forage.sandboxes.code.image import docker_image_tag

        print("baseline: docker run per call ...", flush=True)
        argv = ["docker", "run", "--rm", "--network", "none", "--log-driver", "none", docker_image_tag(),
                "python3", "-c", "print(1)"]
        results["docker run"] = asyncio.run(bench_process(argv, max(8, args.baseline_calls // 4)))

    width = max(24, *(len(name) + 2 for name in results))
    print()
    print(f"{'':<{width}}{'p50 ms':>9}{'p99 ms':>9}{'p50@8 ms':>10}{'execs/s c1':>12}{'execs/s c8':>12}")
    for name, r in results.items():
        print(f"{name:<{width}}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['p50_ms_c8']:>10.2f}{r['execs_s_c1']:>12.1f}"
              f"{r['execs_s_c8']:>12.1f}")
    print()
    print(f"fastest new-interpreter baseline: {fastest}")
    base = results[fastest]
    for b in backends:
        w = results[f"warm {b}"]
        for ref_name in [fastest] + (["docker run"] if b in ("docker", "gvisor") and "docker run" in results else []):
            ref = results[ref_name]
            print(f"warm {b} vs {ref_name}: p50 {ref['p50_ms'] / w['p50_ms']:.1f}x lower, "
                  f"{w['execs_s_c1'] / ref['execs_s_c1']:.1f}x the execs/s at c=1, "
                  f"{w['execs_s_c8'] / ref['execs_s_c8']:.1f}x at c=8")
        print(f"warm {b}: restart after a timeout {w['restart_ms']:.0f} ms")
    for name in results:
        if name not in interpreters and not name.startswith("warm ") and name != "docker run":
            print(f"(reference: {name} p50 {results[name]['p50_ms']:.1f} ms, "
                  f"{results[name]['p50_ms'] / base['p50_ms']:.1f}x the fastest baseline's)")
    if args.json:
        Path(args.json).write_text(json.dumps({"fastest_baseline": fastest, "results": results}, indent=1))


if __name__ == "__main__":
    main()
