"""Search backends behind the ``search`` tool: in-process, HTTP client (httpx), and their interface."""

from __future__ import annotations

import asyncio
from typing import Protocol, Sequence, runtime_checkable

import httpx

from ...http_shards import ShardedAsyncClient

from .retriever import MAX_K, METHODS, Hit, Retriever

__all__ = ["SearchBackend", "BackendError", "InProcessBackend", "HTTPBackend", "format_hits"]


class BackendError(RuntimeError):
    """The search backend failed (service down, bad reply, timeout); the message says how."""


@runtime_checkable
class SearchBackend(Protocol):
    """Anything that returns the top-k hits for a batch of queries."""

    async def asearch(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """Top-``k`` hits for each query."""
        ...


class InProcessBackend:
    """Searches a :class:`Retriever` in this process (work runs in a thread, off the event loop)."""

    def __init__(self, retriever: Retriever, method: str = "dense") -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
        self.retriever = retriever
        self.method = method

    async def asearch(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """Top-``k`` hits for each query."""
        return await asyncio.to_thread(self.retriever.search, list(queries), k, self.method)

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """Synchronous twin of :meth:`asearch`."""
        return self.retriever.search(list(queries), k, self.method)


class HTTPBackend:
    """Client of a ``forage serve retriever`` (or Search-R1-compatible) ``POST /retrieve`` service."""

    def __init__(self, url: str = "http://127.0.0.1:8001", timeout: float = 30.0, method: str | None = None,
                 max_queries_per_request: int = 4096) -> None:
        if max_queries_per_request < 1:
            raise ValueError("max_queries_per_request must be >= 1")
        self.max_queries_per_request = max_queries_per_request  # larger batches go as several requests
        self.url = url.rstrip("/")
        if self.url.endswith("/retrieve"):
            self.url = self.url[: -len("/retrieve")]
        self.timeout = timeout
        self.method = method
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, ShardedAsyncClient]] = {}

    def _payload(self, queries: Sequence[str], k: int) -> dict:
        body = {"queries": [str(q) for q in queries], "topk": int(k), "return_scores": True}
        if self.method:
            body["method"] = self.method
        return body

    def _client(self) -> ShardedAsyncClient:
        # One pooled client per event loop (envs may run on different loops).
        loop = asyncio.get_running_loop()
        for key, (lp, _) in list(self._clients.items()):
            if lp.is_closed():  # a finished loop's client cannot be used (or closed) any more
                del self._clients[key]
        entry = self._clients.get(id(loop))
        if entry is None or entry[0] is not loop or entry[1].is_closed:
            entry = (loop, ShardedAsyncClient(per_shard=8, max_shards=16, timeout=self.timeout))  # <= 128 connections
            self._clients[id(loop)] = entry
        return entry[1]

    async def asearch(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """Top-``k`` hits for each query; raises :class:`BackendError` on any failure."""
        step = self.max_queries_per_request
        if len(queries) > step:
            parts = await asyncio.gather(*(self.asearch(queries[i:i + step], k) for i in range(0, len(queries), step)))
            return [row for part in parts for row in part]
        try:
            resp = await self._client().post(self.url + "/retrieve", json=self._payload(queries, k))
        except httpx.TimeoutException:
            raise BackendError(f"the retrieval service at {self.url} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as e:
            raise BackendError(f"the retrieval service at {self.url} is unreachable ({type(e).__name__})") from None
        return self._parse(resp, len(queries))

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """Synchronous twin of :meth:`asearch`."""
        step = self.max_queries_per_request
        if len(queries) > step:
            return [row for i in range(0, len(queries), step) for row in self.search(queries[i:i + step], k)]
        try:
            resp = httpx.post(self.url + "/retrieve", json=self._payload(queries, k), timeout=self.timeout)
        except httpx.HTTPError as e:
            raise BackendError(f"the retrieval service at {self.url} is unreachable ({type(e).__name__})") from None
        return self._parse(resp, len(queries))

    def health(self) -> dict:
        """The service's ``GET /health`` reply."""
        try:
            return httpx.get(self.url + "/health", timeout=self.timeout).json()
        except (httpx.HTTPError, ValueError) as e:
            raise BackendError(f"the retrieval service at {self.url} is unreachable ({type(e).__name__})") from None

    def _parse(self, resp: httpx.Response, n: int) -> list[list[Hit]]:
        try:
            data = resp.json()
        except ValueError:
            raise BackendError(f"the retrieval service replied {resp.status_code} with non-JSON") from None
        if resp.status_code != 200:
            raise BackendError(f"the retrieval service rejected the request ({resp.status_code}): {data.get('error', data)}")
        rows = data.get("result") if isinstance(data, dict) else None
        if not isinstance(rows, list) or len(rows) != n:
            raise BackendError("the retrieval service sent a malformed reply (no 'result' list of the right length)")
        out = []
        for row in rows:
            hits = []
            for item in row:
                doc = item.get("document", item)
                contents = str(doc.get("contents", ""))
                title = doc.get("title")
                text = doc.get("text")
                if title is None or text is None:
                    first, _, rest = contents.partition("\n")
                    title, text = first.strip().strip('"'), rest
                hits.append(Hit(str(doc.get("id", "")), str(title), str(text), float(item.get("score", 0.0))))
            out.append(hits)
        return out

    async def aclose(self) -> None:
        """Close the pooled clients of the current loop."""
        loop = asyncio.get_running_loop()
        entry = self._clients.pop(id(loop), None)
        if entry is not None:
            await entry[1].aclose()


def format_hits(hits: Sequence[Hit], max_chars: int = 600) -> str:
    """Hits as numbered ``Doc i (Title: ...) text`` paragraphs (Search-R1's style), texts capped."""
    if not hits:
        return "No results."
    lines = []
    for i, h in enumerate(hits, 1):
        text = h.text if len(h.text) <= max_chars else h.text[:max_chars].rsplit(" ", 1)[0] + " ..."
        lines.append(f"Doc {i} (Title: {h.title}) {text}")
    return "\n".join(lines)
