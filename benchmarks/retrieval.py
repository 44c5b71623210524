"""Retrieval benchmark: the HTTP service at 1/8/64 concurrent clients vs raw in-process encoder+FAISS.

Prints queries/s, p50/p99 latency and queries per encoder call per concurrency level through
``POST /retrieve`` (``forage serve retriever`` in a process of its own by default, as it is deployed, with
``--server thread``: a uvicorn server in this process's thread; dynamic batching on, the clients one
request of one query each, through the product's ``HTTPBackend``), beside the baselines measured in the
same run: the same queries through
``Encoder.encode_queries`` + ``DenseIndex.search`` directly, one at a time (the latency baseline), in one
batch (the throughput ceiling) and in batches of each concurrency level (the most that level's clients can
have in flight, so the most a batcher can join); each baseline is measured before and after the service
runs and the faster figure is kept. Then the goals: at 64 clients >= 0.8x the raw batch q/s and >= 16
queries per encoder call; p50 at 1 client <= 1.2x the raw p50. Also prints index build throughput
(docs/s) on a sample of the corpus. The query cache is off so every query is encoded.

Why the server runs in its own process: torch and FAISS each keep an OpenMP team of worker threads per
calling thread, which spin for a while after each call; a service thread beside this process's own
(baseline) torch calls means two torch teams competing for the cores (single-query latency 10.7 -> 13-14 ms
on 2 cores), which a deployed server does not have.

    python benchmarks/retrieval.py [--queries 256] [--build-docs 512] [--server process|thread]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np


def pct(xs: list[float], q: float) -> float:
    """The q-th percentile (0-100) of xs, in ms."""
    return float(np.percentile(np.asarray(xs) * 1000, q))


async def through_service(url: str, queries: list[str], concurrency: int, k: int) -> tuple[float, list[float]]:
    """Send every query as its own request with ``concurrency`` clients through the product's client
    (:class:`HTTPBackend`, what a SearchEnv uses: its httpx clients are sharded, see forage/http_shards.py);
    (queries/s, latencies)."""
    from forage.sandboxes.retrieval.backends import HTTPBackend

    lat: list[float] = []
    it = iter(queries)
    backend = HTTPBackend(url, timeout=300)

    async def client() -> None:
        for q in it:
            t = time.perf_counter()
            hits = await backend.asearch([q], k)
            assert len(hits) == 1 and len(hits[0]) == k
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await backend.aclose()
    return len(queries) / wall, lat


def raw_one_at_a_time(r, queries: list[str], k: int) -> tuple[float, list[float]]:
    """Encoder + FAISS directly, one query per call: (queries/s, latencies)."""
    lat = []
    t0 = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        r.dense.search(r.encoder.encode_queries([q]), k)
        lat.append(time.perf_counter() - t)
    return len(queries) / (time.perf_counter() - t0), lat


def raw_in_batches(r, queries: list[str], k: int, size: int) -> float:
    """Encoder + FAISS directly, ``size`` queries a call: queries/s."""
    t0 = time.perf_counter()
    for start in range(0, len(queries), size):
        chunk = queries[start:start + size]
        r.dense.search(r.encoder.encode_queries(chunk), k)
    return len(queries) / (time.perf_counter() - t0)


@contextlib.contextmanager
def service_process(timeout: float = 180.0):
    """``forage serve retriever`` (default index, query cache off) in a child process; yields its URL."""
    from forage.asgi_thread import free_port

    port = free_port()
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", "from forage.cli import main; main()", "serve", "retriever",
                             "--port", str(port), "--cache-size", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"forage serve retriever exited with {proc.returncode}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise TimeoutError("forage serve retriever did not answer /health")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def service_thread(r):
    """The service on a uvicorn thread of this process (query cache off); yields its URL."""
    from forage.sandboxes.retrieval.service import ServiceConfig, ThreadedServer

    with ThreadedServer(r, config=ServiceConfig(cache_size=0)) as server:
        yield server.url


def raw_one_batch(r, queries: list[str], k: int) -> tuple[float, float, float]:
    """Encoder + FAISS directly, all queries in one call: (queries/s, encoding s, FAISS s)."""
    t0 = time.perf_counter()
    vecs = r.encoder.encode_queries(queries)
    enc_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    r.dense.search(vecs, k)
    s_s = time.perf_counter() - t1
    return len(queries) / (time.perf_counter() - t0), enc_s, s_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--build-docs", type=int, default=512)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--server", choices=["process", "thread"], default="process",
                    help="the service in its own process (as deployed) or on a thread of this one")
    args = ap.parse_args()

    from forage.sandboxes.retrieval import DenseIndexConfig, Retriever, load_default_retriever

    r = load_default_retriever(log=print)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(r.docs), args.queries, replace=False)
    queries = [r.docs[i].text.split(". ")[0][:200] for i in picks]  # realistic question-length queries
    print(f"index: {len(r.docs)} docs, {r.meta.kind}, encoder {r.encoder.path.name} on {r.encoder.device}, "
          f"max_seq_length {r.encoder.config.max_seq_length}; {len(queries)} queries, k={args.k}")

    r.search(queries[:8], args.k)  # warm-up
    raw_one = raw_one_at_a_time(r, queries, args.k)
    raw_batch = raw_one_batch(r, queries, args.k)
    raw_level = {c: raw_in_batches(r, queries, args.k, c) for c in args.concurrency if c > 1}
    levels = {}
    with (service_process() if args.server == "process" else service_thread(r)) as url:
        asyncio.run(through_service(url, queries[:8], 1, args.k))  # warm-up
        for conc in args.concurrency:
            before = httpx.get(url + "/health").json()
            qps, lat = asyncio.run(through_service(url, queries, conc, args.k))
            after = httpx.get(url + "/health").json()
            per_call = (after["encoded"] - before["encoded"]) / max(after["encoder_calls"] - before["encoder_calls"], 1)
            levels[conc] = (qps, lat, per_call)
    raw_one = min(raw_one, raw_one_at_a_time(r, queries, args.k), key=lambda x: pct(x[1], 50))  # the faster run
    raw_batch = max(raw_batch, raw_one_batch(r, queries, args.k))
    raw_level = {c: max(v, raw_in_batches(r, queries, args.k, c)) for c, v in raw_level.items()}
    print(f"service: {'forage serve retriever in its own process' if args.server == 'process' else 'a thread of this process'}")
    raw_one_qps, lat_raw = raw_one
    raw_p50 = pct(lat_raw, 50)
    print(f"raw in-process, one query at a time: {raw_one_qps:8.1f} q/s  p50 {raw_p50:7.1f} ms  "
          f"p99 {pct(lat_raw, 99):7.1f} ms")
    print(f"raw in-process, one batch of {len(queries)}:   {raw_batch[0]:8.1f} q/s  "
          f"(encoding {raw_batch[1]:.3f} s vs FAISS {raw_batch[2]:.4f} s)")
    for conc, (qps, lat, per_call) in levels.items():
        print(f"service, {conc:3d} concurrent clients:     {qps:8.1f} q/s  p50 {pct(lat, 50):7.1f} ms  "
              f"p99 {pct(lat, 99):7.1f} ms  {per_call:5.1f} queries per encoder call | vs raw batch "
              f"x{qps / raw_batch[0]:5.2f} q/s, p50 x{pct(lat, 50) / raw_p50:5.2f} the raw one-at-a-time p50"
              + (f" | raw in batches of {conc}: {raw_level[conc]:6.1f} q/s, service x{qps / raw_level[conc]:4.2f}"
                 if conc in raw_level else ""))
    if 64 in levels and 1 in levels:
        qps, lat, per_call = levels[64]
        p50_1 = pct(levels[1][1], 50)
        print(f"goals: @64 clients x{qps / raw_batch[0]:.2f} the raw batch q/s (goal >= 0.8: "
              f"{'met' if qps >= 0.8 * raw_batch[0] else 'NOT met'}), {per_call:.1f} queries per encoder call "
              f"(goal >= 16: {'met' if per_call >= 16 else 'NOT met'}); @1 client p50 x{p50_1 / raw_p50:.2f} the raw "
              f"p50 (goal <= 1.2: {'met' if p50_1 <= 1.2 * raw_p50 else 'NOT met'})")

    sample = [r.docs[i] for i in rng.choice(len(r.docs), min(args.build_docs, len(r.docs)), replace=False)]
    t0 = time.perf_counter()
    built = Retriever.build(sample, r.encoder, DenseIndexConfig(kind="flat"), corpus_name="bench")
    wall = time.perf_counter() - t0
    print(f"index build ({len(sample)} docs, flat+BM25): {len(sample) / wall:.1f} docs/s "
          f"(encoding alone {built.meta.encode_docs_per_s} docs/s); default index build recorded: "
          f"{r.meta.encode_docs_per_s} docs/s, {r.meta.build_seconds} s")


if __name__ == "__main__":
    main()
