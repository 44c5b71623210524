"""One docker daemon vs two behind one sandbox pool: sessions started/s and calls/s at N concurrent sessions.

Both daemons are scratch ``dockerd``s started here on their own sockets, alike in every way (same
niceness, fresh roots; the machine's own dockerd is not used, so neither side has an advantage). They
share this machine's cores: the figures show what spreading costs or gains on one box; a real second
host brings its cores along. Each round runs both set-ups back to back, alternating which goes first,
and the ratio is taken per round (two daemons / one daemon), so load from other work hits both alike.

    sudo python benchmarks/sandbox_hosts.py [--sessions 8] [--calls 30] [--rounds 3] [--json out.json]

``sessions/s``: N sessions acquired at once from an empty pool (each a new container: create, attach,
start, interpreter greeting). ``calls/s``: the N sessions each run ``--calls`` small cells in turn,
all sessions at once. The baseline is the same pool on the one daemon with the same N and the same
start concurrency (N: the pool does not throttle either set-up): one daemon, the fastest alternative
that needs no second host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forage.sandboxes.code import SandboxConfig, SandboxPool  # noqa: E402
from forage.sandboxes.code.daemon import ScratchDockerd  # noqa: E402

CELL = "s = sum(i * i for i in range(2000))\nprint(s)"
EXPECTED = f"{sum(i * i for i in range(2000))}\n"


async def one_round(hosts: list, n: int, calls: int) -> dict[str, float]:
    """Start ``n`` sessions at once on ``hosts`` and run ``calls`` cells in each; return the rates."""
    pool = SandboxPool("docker", size=0, max_size=n, start_concurrency=n, hosts=hosts,
                       config=SandboxConfig(timeout=60, start_timeout=120))
    try:
        t0 = time.perf_counter()
        boxes = await asyncio.gather(*(pool.acquire() for _ in range(n)))
        started = time.perf_counter() - t0
        placed = dict(pool.stats().hosts)

        async def session(sb) -> None:
            for _ in range(calls):
                r = await sb.run(CELL)
                assert r.stdout == EXPECTED, r

        t0 = time.perf_counter()
        await asyncio.gather(*(session(sb) for sb in boxes))
        ran = time.perf_counter() - t0
        for sb in boxes:
            await pool.release(sb)
    finally:
        await pool.close()
    return {"sessions_per_s": n / started, "calls_per_s": n * calls / ran, "start_s": started, "calls_s": ran,
            "placed": placed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", default="8,16", help="concurrent sessions N (comma-separated: several runs)")
    ap.add_argument("--calls", type=int, default=30, help="cells each session runs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default="", help="also write the figures here")
    args = ap.parse_args()

    ns = [int(x) for x in args.sessions.split(",")]
    daemons = [ScratchDockerd(), ScratchDockerd()]
    out: dict = {"calls": args.calls, "rounds": args.rounds, "cell": CELL, "runs": []}
    try:
        for d in daemons:
            d.start()
        setups = {"1 daemon": [daemons[0].url], "2 daemons": [d.url for d in daemons]}
        asyncio.run(one_round(setups["2 daemons"], 2, 1))  # outside the timing: the pool imports the image
        for n in ns:
            rows: dict[str, list[dict]] = {k: [] for k in setups}
            for r in range(args.rounds):
                order = list(setups) if r % 2 == 0 else list(reversed(setups))
                for name in order:
                    res = asyncio.run(one_round(setups[name], n, args.calls))
                    rows[name].append(res)
                    print(f"N={n} round {r + 1} {name:>9}: {res['sessions_per_s']:6.2f} sessions/s  "
                          f"{res['calls_per_s']:7.1f} calls/s  placed {list(res['placed'].values())}", flush=True)
            run: dict = {"sessions": n}
            for metric in ("sessions_per_s", "calls_per_s"):
                base = statistics.median(x[metric] for x in rows["1 daemon"])
                two = statistics.median(x[metric] for x in rows["2 daemons"])
                ratio = statistics.median(b[metric] / a[metric] for a, b in zip(rows["1 daemon"], rows["2 daemons"]))
                run[metric] = {"1 daemon": base, "2 daemons": two, "ratio": ratio}
            run["rounds_detail"] = rows
            out["runs"].append(run)
    finally:
        for d in daemons:
            forced = d.cleanup()
            if forced:
                print(f"cleanup of {d.url} had to force: {forced}")

    print(f"\n{args.calls} cells per session, {args.rounds} rounds, medians; ratio = 2 daemons / 1 daemon per round")
    for run in out["runs"]:
        for metric in ("sessions_per_s", "calls_per_s"):
            m = run[metric]
            print(f"N={run['sessions']:>3} {metric:>15}: 1 daemon {m['1 daemon']:7.2f}   2 daemons {m['2 daemons']:7.2f}"
                  f"   ratio {m['ratio']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
