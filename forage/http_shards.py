"""An ``httpx.AsyncClient`` split into shards with a few requests in flight each.

httpx's connection pool does work proportional to the requests in flight every time one starts or ends
(encode/httpx#3215, open): on a 2-core machine one client with 64 concurrent requests spent 5.1 ms of CPU a
request against a trivial local server, 0.5 ms with 8 (``benchmarks/retrieval.py``'s 64 clients spent
more CPU in httpx than the service spent answering). Keeping at most ``per_shard`` requests on each of
several clients keeps that cost flat, whatever the concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["ShardedAsyncClient"]


@dataclass
class _Shard:
    client: httpx.AsyncClient
    in_flight: int = 0


class ShardedAsyncClient:
    """``request``/``get``/``post`` like ``httpx.AsyncClient``, spread over clients of at most ``per_shard`` requests
    in flight (a new shard opens when every shard is full, up to ``max_shards``; then the least loaded one is used).

    ``client_kwargs`` go to each ``httpx.AsyncClient`` (``base_url``, ``timeout``, ``headers``...); each shard's
    pool holds ``per_shard`` connections, so at most ``per_shard * max_shards`` are open. Responses are read in
    full (no streaming), so a request's shard is free again when it returns. Use it from one event loop.
    """

    def __init__(self, per_shard: int = 8, max_shards: int = 32, **client_kwargs: Any) -> None:
        if per_shard < 1 or max_shards < 1:
            raise ValueError("per_shard and max_shards must be >= 1")
        if "limits" in client_kwargs:
            raise ValueError("the shards' limits come from per_shard (connections per shard) and max_shards")
        self.per_shard = per_shard
        self.max_shards = max_shards
        self._kwargs = client_kwargs
        self._shards: list[_Shard] = []
        self._closed = False

    @property
    def is_closed(self) -> bool:
        """True after :meth:`aclose`."""
        return self._closed

    @property
    def shards(self) -> int:
        """How many clients are open."""
        return len(self._shards)

    def _pick(self) -> _Shard:
        best = None
        for shard in self._shards:
            if shard.in_flight < self.per_shard:
                return shard
            if best is None or shard.in_flight < best.in_flight:
                best = shard
        if best is None or len(self._shards) < self.max_shards:
            limits = httpx.Limits(max_connections=self.per_shard, max_keepalive_connections=self.per_shard)
            best = _Shard(httpx.AsyncClient(limits=limits, **self._kwargs))
            self._shards.append(best)
        return best

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request on the first shard with room (as ``httpx.AsyncClient.request``)."""
        if self._closed:
            raise RuntimeError("the client is closed")
        shard = self._pick()
        shard.in_flight += 1
        try:
            return await shard.client.request(method, url, **kwargs)
        finally:
            shard.in_flight -= 1

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """``GET url``."""
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """``POST url``."""
        return await self.request("POST", url, **kwargs)

    async def aclose(self) -> None:
        """Close every shard."""
        self._closed = True
        shards, self._shards = self._shards, []
        for shard in shards:
            await shard.client.aclose()
