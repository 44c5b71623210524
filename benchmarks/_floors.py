"""Shared by the benchmarks: the fastest honest way to generate what a set of multi-turn episodes generated."""

from __future__ import annotations

import asyncio
import time
from typing import Any


def generation_floor(url: str, trajs: list[Any], temperature: float) -> tuple[float, int]:
    """Seconds for the server to generate each episode's turns (same prefixes, same counts, token ids and
    log-probs back, as the rollout engine asks); tokens generated."""
    from forage.http_shards import ShardedAsyncClient

    turns = max(len(t.turn_spans) for t in trajs)

    async def run() -> tuple[float, int]:
        # sharded: one httpx client with the whole batch in flight spends ~5 ms of CPU a request (forage/http_shards.py)
        c = ShardedAsyncClient(per_shard=8, max_shards=64, base_url=url, timeout=600)
        try:
            model = (await c.get("/v1/models")).json()["data"][0]["id"]
            total, t0 = 0, time.perf_counter()
            for k in range(turns):   # turn k of every episode at once; turn k+1 needs turn k's tokens
                reqs = []
                for t in trajs:
                    if k < len(t.turn_spans):
                        s, e = t.turn_spans[k]
                        if e > s:
                            # the same reply the engine asks for: each token's id and log-prob (the trainer needs both)
                            reqs.append({"model": model, "prompt": t.token_ids[:s], "max_tokens": e - s,
                                         "min_tokens": e - s, "ignore_eos": True, "temperature": temperature,
                                         "logprobs": 0, "return_tokens_as_token_ids": True})
                            total += e - s
                outs = await asyncio.gather(*(c.post("/v1/completions", json=r) for r in reqs))
                for o in outs:
                    o.raise_for_status()
            return time.perf_counter() - t0, total
        finally:
            await c.aclose()

    return asyncio.run(run())
