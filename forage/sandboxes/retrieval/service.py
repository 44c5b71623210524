"""The retrieval HTTP service: Search-R1's ``POST /retrieve`` with dynamic batching, a query cache and ``/health``."""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...asgi_thread import ThreadedASGIServer
from .retriever import METHODS, Retriever

__all__ = ["ServiceConfig", "Batcher", "create_app", "serve", "ThreadedServer", "MAX_QUERIES", "MAX_HITS", "MAX_TOPK"]

# The memory bound of one request (what is refused, with 413, is only what goes past it): the body,
# the number of queries, and queries x topk (the hits held and written back; 131,072 hits of ~1 KB
# documents are ~130 MB of JSON). Search-R1's train_grpo.sh sends up to 2,560 queries at topk 3.
MAX_QUERIES = 65_536       # per request
MAX_HITS = 131_072         # queries x effective topk per request
MAX_TOPK = 10_000          # the most hits one query may ask for (Search-R1 serves any k FAISS can)
MAX_QUERY_CHARS = 8192     # longer queries are cut (the encoder truncates to its max tokens anyway)
MAX_BODY_BYTES = 64 << 20
WAIT_FRACTION = 0.25       # a short batch waits for company up to this fraction of the last batch's compute time


@dataclass
class ServiceConfig:
    """Batching and caching knobs of the service."""

    default_topk: int = 3
    method: str = "dense"        # default search method (a request may name another)
    max_batch: int = 256         # queries per encoder+FAISS call (a larger request is streamed in chunks of it)
    wait_ms: float = 3.0         # a batch smaller than the crowd in flight waits for the rest at least this long...
    max_wait_ms: float = 500.0   # ...and at most this, or a quarter of the last batch's compute time if less
    cache_size: int = 10_000     # query embeddings kept (LRU); 0 disables

    def __post_init__(self) -> None:
        if isinstance(self.default_topk, bool) or not isinstance(self.default_topk, int) or not 1 <= self.default_topk <= MAX_TOPK:
            raise ValueError(f"default_topk must be an integer from 1 to {MAX_TOPK}, got {self.default_topk!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {self.max_batch!r}")
        if not self.wait_ms >= 0 or not self.max_wait_ms >= 0 or not self.cache_size >= 0:
            raise ValueError("wait_ms, max_wait_ms and cache_size must be >= 0")


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray | None:
        v = self.data.get(key)
        if v is not None:
            self.data.move_to_end(key)
        return v

    def put(self, key: str, value: np.ndarray) -> None:
        if self.size <= 0:
            return
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)


class Batcher:
    """A dynamic batcher: one worker drains a queue of requests and answers each batch with one encoder call and
    one FAISS search (per method) of at most ``max_batch`` queries.

    Requests that arrive while the encoder runs wait in the queue and join the next batch. A batch
    takes everything already queued; then, while it is smaller than the crowd in flight (those
    queries plus the previous batch's, whose clients are reading their answers and likely to come
    back at once), it waits for more, for a quarter of the previous batch's compute time at most
    (at least ``wait_ms``, at most ``max_wait_ms``). A lone client therefore never waits, and a
    steady crowd is answered in batches as large as the crowd, not split into two halves that take
    turns (which is what a fixed few-ms window does once answering a batch outlasts the window).

    A request larger than ``max_batch`` is cut into chunks that queue like separate requests, so a
    Search-R1-sized batch (thousands of queries) is streamed through, interleaved with the others,
    and never makes one call (and its memory) larger than ``max_batch`` queries.
    """

    def __init__(self, retriever: Retriever, config: ServiceConfig) -> None:
        self.retriever = retriever
        self.config = config
        self.cache = _LRU(config.cache_size)
        self.queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._held: tuple | None = None   # an item that did not fit the last batch: it opens the next one
        self._queued = 0                  # queries waiting in the queue
        self._answered = 0                # queries the previous batch answered (their clients may come back)
        self._others = 0                  # queries already waiting when it answered them (the rest of the crowd)
        self._compute_ms = 0.0            # how long the previous batch's encoder+FAISS call took
        self.stats = {"requests": 0, "queries": 0, "batches": 0, "cache_hits": 0, "errors": 0, "largest_batch": 0,
                      "encoder_calls": 0, "encoded": 0}

    async def start(self) -> None:
        """Start the batching worker on the running loop."""
        self.queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def submit(self, queries: list[str], k: int, method: str) -> tuple[np.ndarray, np.ndarray]:
        """Queue a request (in chunks of ``max_batch``); resolves to its (scores, ids)."""
        assert self.queue is not None, "Batcher.start() was not called"
        loop = asyncio.get_running_loop()
        step = self.config.max_batch
        futures = []
        for start in range(0, len(queries), step):
            fut = loop.create_future()
            futures.append(fut)
            self._queued += len(queries[start:start + step])
            await self.queue.put((queries[start:start + step], k, method, fut))
        self.stats["requests"] += 1
        try:
            parts = [await fut for fut in futures]
        finally:  # a client gone mid-request: its queued chunks are skipped, not computed
            for fut in futures:
                fut.cancel()
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    async def _collect(self) -> list:
        """The next batch: everything queued, then, while fewer than the clients seen in flight, whatever comes soon."""
        assert self.queue is not None
        if self._held is not None:
            first, self._held = self._held, None
        else:
            first = await self.queue.get()
            self._queued -= len(first[0])
        batch = [first]
        n = len(first[0])
        cap = self.config.max_batch
        draining = True  # still taking what was queued before this batch began (then: waiting for newcomers)
        target = cap
        deadline = 0.0
        while n < cap:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                if draining:  # the crowd: the last batch's clients (likely back soon) and those waiting then
                    draining = False
                    target = min(cap, self._answered + self._others)
                    budget = min(self.config.max_wait_ms, max(self.config.wait_ms, WAIT_FRACTION * self._compute_ms))
                    deadline = time.perf_counter() + budget / 1000
                timeout = deadline - time.perf_counter()
                if n >= target or timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
            self._queued -= len(item[0])
            if n + len(item[0]) > cap:
                self._held = item
                break
            batch.append(item)
            n += len(item[0])
        self._answered = n
        return batch

    async def _run(self) -> None:
        assert self.queue is not None
        while True:
            batch = await self._collect()
            by_method: dict[str, list] = {}
            for item in batch:
                if not item[3].done():   # cancelled: the client went away
                    by_method.setdefault(item[2], []).append(item)
            for method, items in by_method.items():
                started = time.perf_counter()
                try:
                    results = await asyncio.to_thread(self._compute, items, method)
                except Exception as e:  # answer every waiter, never kill the worker
                    self.stats["errors"] += 1
                    for *_, fut in items:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                self._compute_ms = (time.perf_counter() - started) * 1000
                for (_, _, _, fut), res in zip(items, results):
                    if not fut.done():
                        fut.set_result(res)
            self._others = self._queued + (len(self._held[0]) if self._held is not None else 0)
            await asyncio.sleep(0)  # let the answered handlers write their responses before the next batch waits

    def _compute(self, items: list, method: str) -> list[tuple[np.ndarray, np.ndarray]]:
        queries = [q for item in items for q in item[0]]
        k = max(item[1] for item in items)
        vectors = None
        if method != "bm25":
            vectors = np.zeros((len(queries), self.retriever.dense.dim), np.float32)
            missing: dict[str, list[int]] = {}
            for i, q in enumerate(queries):
                v = self.cache.get(q)
                if v is None:
                    missing.setdefault(q, []).append(i)
                else:
                    vectors[i] = v
                    self.stats["cache_hits"] += 1
            if missing:
                texts = list(missing)
                encoded = self.retriever.encoder.encode_queries(texts)
                self.stats["encoder_calls"] += 1
                self.stats["encoded"] += len(texts)
                for q, v in zip(texts, encoded):
                    self.cache.put(q, v)
                    vectors[missing[q]] = v
        scores, ids = self.retriever.search_ids(queries, k, method, vectors=vectors, max_k=MAX_TOPK)
        self.stats["batches"] += 1
        self.stats["queries"] += len(queries)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(queries))
        out, start = [], 0
        for qs, kk, _, _ in items:
            out.append((scores[start:start + len(qs), :kk], ids[start:start + len(qs), :kk]))
            start += len(qs)
        return out


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def _parse_request(body: Any, config: ServiceConfig) -> tuple[list[str], int, bool, str] | str:
    """Validated (queries, topk, return_scores, method), or an error message."""
    if not isinstance(body, dict):
        return "the body must be a JSON object with 'queries'"
    queries = body.get("queries", body.get("query"))
    if isinstance(queries, str):
        queries = [queries]
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        return "'queries' must be a list of strings"
    topk = body.get("topk", body.get("k"))
    if isinstance(topk, float) and topk.is_integer():
        topk = int(topk)
    if isinstance(topk, bool) or (topk is not None and not isinstance(topk, int)) or (topk or 0) < 0:
        return f"'topk' must be a non-negative integer (0 or null: the server's default), got {topk!r}"
    if not topk:  # Search-R1's server: `if not request.topk: request.topk = config.retrieval_topk`
        topk = config.default_topk
    if topk > MAX_TOPK:
        return f"'topk' is at most {MAX_TOPK}, got {topk}"
    method = body.get("method") or config.method
    if method not in METHODS:
        return f"'method' must be one of {list(METHODS)}, got {method!r}"
    if len(queries) > MAX_QUERIES:
        return f"at most {MAX_QUERIES} queries per request, got {len(queries)}"
    clean = [q[:MAX_QUERY_CHARS].encode("utf-8", "replace").decode("utf-8") for q in queries]
    return clean, topk, bool(body.get("return_scores", False)), method


def create_app(retriever: Retriever, config: ServiceConfig | None = None):
    """The Starlette app: ``POST /retrieve`` (Search-R1 shape) and ``GET /health``."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    config = config or ServiceConfig()
    batcher = Batcher(retriever, config)
    started = time.time()

    async def retrieve(request: Request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        try:
            raw = await request.body()
        except ClientDisconnect:  # the client went away mid-body: nobody to answer
            return Response(status_code=499)
        if len(raw) > MAX_BODY_BYTES:
            return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw.decode("utf-8", "surrogatepass"))
        except (ValueError, UnicodeDecodeError) as e:
            return _error(400, f"the body is not valid JSON: {e}")
        parsed = _parse_request(body, config)
        if isinstance(parsed, str):
            return _error(413 if parsed.startswith("at most") else 422, parsed)
        queries, topk, with_scores, method = parsed
        hits = len(queries) * min(topk, len(retriever.docs))
        if hits > MAX_HITS:
            return _error(413, f"at most {MAX_HITS} hits (queries x topk) per request, got {len(queries)} x "
                               f"{min(topk, len(retriever.docs))} = {hits}; send fewer queries per request")
        if not queries:
            return JSONResponse({"result": []})
        try:
            scores, ids = await batcher.submit(queries, topk, method)
        except Exception as e:
            return _error(500, f"retrieval failed: {type(e).__name__}: {e}")
        docs = retriever.docs
        result = []
        for srow, irow in zip(scores, ids):
            row = []
            for s, i in zip(srow, irow):
                if i < 0:
                    continue
                d = docs[int(i)]
                doc = {"id": d.id, "contents": f'"{d.title}"\n{d.text}', "title": d.title, "text": d.text}
                row.append({"document": doc, "score": float(s)} if with_scores else doc)
            result.append(row)
        return JSONResponse({"result": result})

    async def health(request: Request):
        m = retriever.meta
        return JSONResponse({"status": "ok", "n_docs": len(retriever.docs), "kind": m.kind, "corpus": m.corpus,
                             "encoder": m.encoder_path, "method": config.method, "uptime_s": round(time.time() - started, 1),
                             **batcher.stats})

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = Starlette(routes=[Route("/retrieve", retrieve, methods=["POST"]), Route("/health", health, methods=["GET"])],
                    lifespan=lifespan)
    app.state.batcher = batcher
    return app


def serve(retriever: Retriever, host: str = "127.0.0.1", port: int = 8001, config: ServiceConfig | None = None) -> None:
    """Run the service in the foreground (uvicorn) until interrupted."""
    import uvicorn

    uvicorn.run(create_app(retriever, config), host=host, port=port, log_level="warning", access_log=False)


class ThreadedServer(ThreadedASGIServer):
    """The service on 127.0.0.1 in a background thread (tests, notebooks); ``stop()`` shuts it down."""

    what = "the retrieval service"

    def __init__(self, retriever: Retriever, port: int = 0, config: ServiceConfig | None = None) -> None:
        super().__init__(create_app(retriever, config), port=port, lifespan="on", thread_name="forage-retriever")
