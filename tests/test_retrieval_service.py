"""The retrieval HTTP service on 127.0.0.1: Search-R1 shape, bad requests, batching, caching, 64 clients, client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from _retrieval_helpers import default_retriever, live_service, tiny_corpus, tiny_index  # noqa: F401
from forage.asgi_thread import free_port
from forage.sandboxes.retrieval.backends import BackendError, HTTPBackend, InProcessBackend


def test_retrieve_has_search_r1_shape(live_service, default_retriever):
    r = httpx.post(live_service.url + "/retrieve", json={"queries": ["capital of France", "largest planet"],
                                                         "topk": 3, "return_scores": True}, timeout=60)
    assert r.status_code == 200
    result = r.json()["result"]
    assert len(result) == 2 and all(len(row) == 3 for row in result)
    item = result[0][0]
    assert set(item) == {"document", "score"} and isinstance(item["score"], float)
    doc = item["document"]
    title, _, text = doc["contents"].partition("\n")
    assert title == f'"{doc["title"]}"' and text == doc["text"] and doc["id"]
    want = default_retriever.search(["capital of France"], 3)[0]
    assert [d["document"]["id"] for d in result[0]] == [h.id for h in want]
    # without scores: a list of documents, as Search-R1's server returns
    plain = httpx.post(live_service.url + "/retrieve", json={"queries": ["capital of France"], "topk": 2}, timeout=60).json()
    assert set(plain["result"][0][0]) >= {"id", "contents"} and "score" not in plain["result"][0][0]


def test_health_reports_index_and_counters(live_service):
    h = httpx.get(live_service.url + "/health", timeout=10).json()
    assert h["status"] == "ok" and h["n_docs"] == 10033 and h["kind"] == "flat"
    for key in ("requests", "queries", "batches", "cache_hits"):
        assert key in h


@pytest.mark.parametrize("body,status,fragment", [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({"queries": "x" * 10, "topk": -1}).encode(), 422, "topk"),
    (json.dumps({"queries": ["x"], "topk": 10_001}).encode(), 422, "topk"),
    (json.dumps({"queries": ["x"], "topk": 2.5}).encode(), 422, "topk"),
    (json.dumps({"queries": ["x"], "topk": "3"}).encode(), 422, "topk"),
    (json.dumps({"queries": ["x"], "topk": True}).encode(), 422, "topk"),
    (json.dumps({"queries": [1, 2]}).encode(), 422, "list of strings"),
    (json.dumps({"queries": ["x"] * 65_537}).encode(), 413, "at most"),
    (json.dumps({"queries": ["x"] * 2_000, "topk": 100}).encode(), 413, "hits"),
    (json.dumps({"queries": ["x"], "method": "magic"}).encode(), 422, "method"),
    (json.dumps([1, 2, 3]).encode(), 422, "JSON object"),
])
def test_bad_requests_get_clear_errors(live_service, body, status, fragment):
    r = httpx.post(live_service.url + "/retrieve", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status and fragment in r.json()["error"]
    assert httpx.get(live_service.url + "/health", timeout=10).json()["status"] == "ok"  # still serving


def test_odd_queries_are_answered(live_service):
    # A lone surrogate and a NUL escaped in JSON, a 100 KB query, an empty one, and an empty batch.
    raw = b'{"queries": ["\\ud800 lone", "nul\\u0000byte", "", "' + b"a" * 100_000 + b'"], "topk": 2}'
    r = httpx.post(live_service.url + "/retrieve", content=raw, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    assert [len(row) for row in r.json()["result"]] == [2, 2, 2, 2]
    assert httpx.post(live_service.url + "/retrieve", json={"queries": []}, timeout=10).json() == {"result": []}
    for method in ("bm25", "hybrid"):
        r = httpx.post(live_service.url + "/retrieve", json={"queries": ["volcano", ""], "topk": 4, "method": method},
                       timeout=60)
        assert r.status_code == 200 and len(r.json()["result"][0]) == 4


def test_64_concurrent_clients_each_get_their_own_answer(live_service, default_retriever):
    rng = np.random.default_rng(1)
    docs = [default_retriever.docs[i] for i in rng.choice(len(default_retriever.docs), 64, replace=False)]
    queries = [d.text.split(". ")[0][:300] for d in docs]
    ks = [int(k) for k in rng.integers(1, 6, size=64)]
    expected = default_retriever.search(queries, 5)
    before = httpx.get(live_service.url + "/health", timeout=10).json()

    async def one(client, q, k):
        r = await client.post(live_service.url + "/retrieve", json={"queries": [q], "topk": k, "return_scores": True})
        r.raise_for_status()
        return r.json()["result"][0]

    async def all_of_them():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*(one(client, q, k) for q, k in zip(queries, ks)))

    results = asyncio.run(all_of_them())
    assert len(results) == 64
    for got, want, k in zip(results, expected, ks):
        assert [d["document"]["id"] for d in got] == [h.id for h in want[:k]]
        assert np.allclose([d["score"] for d in got], [h.score for h in want[:k]], atol=1e-4)
    after = httpx.get(live_service.url + "/health", timeout=10).json()
    assert after["requests"] - before["requests"] == 64
    assert after["batches"] - before["batches"] < 64  # concurrent requests were batched together


def test_requests_arriving_while_the_encoder_runs_join_the_next_batch(live_service, default_retriever, monkeypatch):
    """N concurrent requests: the first encoder call is held until the rest are queued; they must all be answered
    by one more encoder call, and each answer must equal a direct, unbatched encoder+FAISS call for its query."""
    n, k = 24, 4
    rng = np.random.default_rng(7)
    docs = [default_retriever.docs[i] for i in rng.choice(len(default_retriever.docs), n, replace=False)]
    queries = [f"{d.title}: {d.text.split('. ')[0][:120]}" for d in docs]   # distinct, never cached before
    encoder = default_retriever.encoder
    direct = encoder.encode_queries
    oracle = [default_retriever.dense.search(direct([q]), k) for q in queries]   # one query per call, no service
    batcher = live_service.app.state.batcher
    calls: list[int] = []
    entered = threading.Event()

    def counting(texts):
        calls.append(len(texts))
        if len(calls) == 1:  # hold the first call until every other request is waiting in the queue
            entered.set()
            deadline = time.monotonic() + 120
            while batcher.queue.qsize() < n - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        return direct(texts)

    monkeypatch.setattr(encoder, "encode_queries", counting)
    before = httpx.get(live_service.url + "/health", timeout=10).json()

    async def one(client, q):
        r = await client.post(live_service.url + "/retrieve", json={"queries": [q], "topk": k, "return_scores": True})
        r.raise_for_status()
        return r.json()["result"][0]

    async def all_of_them():
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=n)) as client:
            first = asyncio.create_task(one(client, queries[0]))
            assert await asyncio.to_thread(entered.wait, 120), "the first request never reached the encoder"
            rest = await asyncio.gather(*(one(client, q) for q in queries[1:]))   # sent while the encoder runs
            return [await first, *rest]

    results = asyncio.run(all_of_them())
    assert calls == [1, n - 1], calls   # N requests, 2 encoder calls: the late ones formed one batch
    for got, (scores, ids) in zip(results, oracle):
        assert [d["document"]["id"] for d in got] == [default_retriever.docs[int(i)].id for i in ids[0]]
        assert np.allclose([d["score"] for d in got], scores[0], atol=1e-4)
    after = httpx.get(live_service.url + "/health", timeout=10).json()
    assert after["encoder_calls"] - before["encoder_calls"] == 2 and after["encoded"] - before["encoded"] == n


def test_repeated_queries_hit_the_cache(live_service):
    q = {"queries": ["an unusual query about cached penguins"], "topk": 3, "return_scores": True}
    first = httpx.post(live_service.url + "/retrieve", json=q, timeout=30).json()
    hits0 = httpx.get(live_service.url + "/health", timeout=10).json()["cache_hits"]
    second = httpx.post(live_service.url + "/retrieve", json=q, timeout=30).json()
    assert httpx.get(live_service.url + "/health", timeout=10).json()["cache_hits"] == hits0 + 1
    assert first == second


async def test_http_backend_matches_in_process(live_service, default_retriever):
    http = HTTPBackend(live_service.url)
    local = InProcessBackend(default_retriever)
    queries = ["Roman emperor", "speed of light"]
    a = await http.asearch(queries, 4)
    b = await local.asearch(queries, 4)
    assert [[h.id for h in row] for row in a] == [[h.id for h in row] for row in b]
    assert [h.title for h in a[0]] == [h.title for h in b[0]] and a[0][0].text == b[0][0].text
    assert http.search(queries, 2)[0][0].id == b[0][0].id
    assert http.health()["status"] == "ok"
    with pytest.raises(BackendError, match="rejected"):
        await http.asearch(["x"], -1)
    await http.aclose()


async def test_http_backend_reports_a_dead_service():
    port = free_port()
    http = HTTPBackend(f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(BackendError, match="unreachable"):
        await http.asearch(["x"], 3)
    with pytest.raises(BackendError, match="unreachable"):
        http.health()


@pytest.mark.slow
def test_cli_serve_retriever_subprocess(tiny_index):
    port = free_port()
    forage = os.path.join(os.path.dirname(sys.executable), "forage")
    proc = subprocess.Popen([forage, "serve", "retriever", "--index", str(tiny_index), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "the retriever service did not come up"
            time.sleep(0.5)
        r = httpx.post(url + "/retrieve", json={"queries": ["bird that cannot fly"], "topk": 1, "return_scores": True})
        assert r.json()["result"][0][0]["document"]["id"] == "penguin"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode is not None
    bad = subprocess.run([forage, "serve", "retriever", "--index", "/nonexistent"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "not an index folder" in bad.stderr
