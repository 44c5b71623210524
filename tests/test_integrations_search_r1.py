"""The retrieval service with Search-R1's own request sizes and topk conventions.

Search-R1's ``train_grpo.sh`` sends up to 2,560 queries in one ``POST /retrieve``; its server falls
back to the configured topk when ``topk`` is 0 or null (``if not request.topk``) and serves any k.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from _retrieval_helpers import default_retriever, tiny_corpus, tiny_index  # noqa: F401
from forage.sandboxes.retrieval.backends import HTTPBackend
from forage.sandboxes.retrieval.service import MAX_HITS, Batcher, ServiceConfig, ThreadedServer


@pytest.fixture(scope="module")
def service(default_retriever):
    server = ThreadedServer(default_retriever, config=ServiceConfig(default_topk=3, max_batch=256, wait_ms=2.0)).start()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_search_r1_sized_batch_is_streamed_through_the_batcher(service, default_retriever):
    titles = [d.title for d in default_retriever.docs[:2560]]
    r = httpx.post(service.url + "/retrieve", json={"queries": titles, "topk": 3, "return_scores": True}, timeout=600)
    assert r.status_code == 200, r.text[:300]
    rows = r.json()["result"]
    assert len(rows) == 2560 and all(len(row) == 3 for row in rows)
    # the unbatched in-process search, in chunks of its own choosing, gives the same hits in the same order
    for start in (0, 1000, 2559):
        want = default_retriever.search(titles[start:start + 1], 3)[0]
        assert [h["document"]["id"] for h in rows[start]] == [h.id for h in want]
    scores = np.array([[h["score"] for h in row] for row in rows])
    assert np.all(np.diff(scores, axis=1) <= 1e-6)          # each row best first
    h = httpx.get(service.url + "/health", timeout=10).json()
    assert h["largest_batch"] <= 256 and h["batches"] >= 10  # never one call of 2,560: at least 2560/256 calls


@pytest.mark.parametrize("topk", [0, None])
def test_topk_zero_or_null_falls_back_to_the_default(service, topk):
    r = httpx.post(service.url + "/retrieve", json={"queries": ["volcano"], "topk": topk}, timeout=60)
    assert r.status_code == 200 and len(r.json()["result"][0]) == 3     # ServiceConfig(default_topk=3)


def test_topk_above_100_is_served(service, default_retriever):
    r = httpx.post(service.url + "/retrieve", json={"queries": ["volcano"], "topk": 150, "return_scores": True}, timeout=60)
    assert r.status_code == 200
    ids = [h["document"]["id"] for h in r.json()["result"][0]]
    assert len(ids) == 150 == len(set(ids))
    top100 = default_retriever.search(["volcano"], 100)[0]
    assert ids[:100] == [h.id for h in top100]               # the first 100 are the capped search's 100


def test_topk_beyond_the_corpus_gives_every_document_once(tiny_index):
    from forage.sandboxes.retrieval import Retriever

    with ThreadedServer(Retriever.load(tiny_index)) as server:
        r = httpx.post(server.url + "/retrieve", json={"queries": ["planet"], "topk": 50}, timeout=60)
    assert r.status_code == 200
    assert sorted(d["id"] for d in r.json()["result"][0]) == sorted(["volcano", "glacier", "violin", "bread", "saturn",
                                                                     "chess", "penguin", "copper"])


def test_the_memory_bound_is_stated_in_the_refusal(service):
    n = MAX_HITS // 100 + 1
    r = httpx.post(service.url + "/retrieve", json={"queries": ["x"] * n, "topk": 100}, timeout=60)
    assert r.status_code == 413 and str(MAX_HITS) in r.json()["error"]


def test_http_backend_splits_a_large_batch(service, default_retriever):
    backend = HTTPBackend(service.url, timeout=120, max_queries_per_request=7)
    queries = [d.title for d in default_retriever.docs[:20]]
    rows = backend.search(queries, 2)
    assert [[h.id for h in row] for row in rows] == [[h.id for h in row] for row in default_retriever.search(queries, 2)]
    rows = asyncio.run(backend.asearch(queries, 2))
    assert len(rows) == 20 and rows[19][0].id == default_retriever.search(queries[19:], 2)[0][0].id


async def test_a_client_gone_mid_request_leaves_its_chunks_uncomputed(tiny_index):
    from forage.sandboxes.retrieval import Retriever

    batcher = Batcher(Retriever.load(tiny_index), ServiceConfig(max_batch=1, wait_ms=0.0, cache_size=0))
    await batcher.start()
    try:
        task = asyncio.create_task(batcher.submit([f"query {i}" for i in range(50)], 2, "dense"))
        while batcher.stats["batches"] < 1:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)
        assert batcher.stats["queries"] < 50
        scores, ids = await batcher.submit(["volcano"], 1, "dense")   # the worker is still serving
        assert ids.shape == (1, 1)
    finally:
        await batcher.stop()
