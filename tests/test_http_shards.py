"""ShardedAsyncClient against a real uvicorn server on 127.0.0.1 that holds requests until told to answer."""

from __future__ import annotations

import asyncio
import threading

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from forage.asgi_thread import ThreadedASGIServer
from forage.http_shards import ShardedAsyncClient


class _HoldingApp:
    """Counts the requests (and the client ports) in flight; answers when ``release`` is set."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.ports: set[int] = set()
        self.lock = threading.Lock()
        self.release = threading.Event()

    async def echo(self, request):
        body = await request.json()
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.ports.add(request.client.port)
        while not self.release.is_set():
            await asyncio.sleep(0.005)
        with self.lock:
            self.in_flight -= 1
        return JSONResponse({"n": body["n"], "double": 2 * body["n"]})


@pytest.fixture()
def holding():
    app = _HoldingApp()
    with ThreadedASGIServer(Starlette(routes=[Route("/echo", app.echo, methods=["POST"])])) as server:
        yield app, server.url


def test_requests_spread_over_shards_of_at_most_per_shard(holding):
    app, url = holding

    async def main():
        client = ShardedAsyncClient(per_shard=4, max_shards=8, base_url=url, timeout=30)
        tasks = [asyncio.create_task(client.post("/echo", json={"n": i})) for i in range(32)]
        for _ in range(2000):                       # all 32 reach the server at once: 8 shards x 4 connections
            if app.in_flight == 32:
                break
            await asyncio.sleep(0.005)
        seen, shards = app.in_flight, client.shards
        per_shard = [s.in_flight for s in client._shards]
        app.release.set()
        replies = [r.json() for r in await asyncio.gather(*tasks)]
        await client.aclose()
        return seen, shards, per_shard, replies, client

    seen, shards, per_shard, replies, client = asyncio.run(main())
    assert seen == 32 and shards == 8 and per_shard == [4] * 8
    assert len(app.ports) == 32                     # one connection each: no shard queued requests behind others
    assert [r["double"] for r in replies] == [2 * i for i in range(32)]
    assert client.is_closed and client.shards == 0


def test_full_shards_share_the_load_and_reuse_connections(holding):
    app, url = holding
    app.release.set()

    async def main():
        client = ShardedAsyncClient(per_shard=2, max_shards=2, base_url=url, timeout=30)
        first = await asyncio.gather(*(client.post("/echo", json={"n": i}) for i in range(10)))
        again = await asyncio.gather(*(client.post("/echo", json={"n": i}) for i in range(10)))
        shards = client.shards
        await client.aclose()
        with pytest.raises(RuntimeError):
            await client.get("/echo")
        return first + again, shards

    replies, shards = asyncio.run(main())
    assert shards == 2 and app.peak <= 4            # never more than per_shard x max_shards connections
    assert len(app.ports) <= 4                      # the second round reused the pooled connections
    assert [r.json()["n"] for r in replies] == list(range(10)) * 2


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        ShardedAsyncClient(per_shard=0)
    with pytest.raises(ValueError):
        ShardedAsyncClient(limits=None)
