"""VLLMEnginePolicy: in-process vLLM generation and pushing new weights into the running engine.

An in-process engine is a second vLLM instance beside the session's server (about a minute to start on
2 CPU cores, with --enforce-eager); FORAGE_TEST_VLLM_ENGINE=0 skips it.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from forage.agents import ChatTokenizer, SamplingParams
from _agents_helpers import hf_model, model_dir, tokenizer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _enabled() -> None:
    if os.environ.get("FORAGE_TEST_VLLM_ENGINE") == "0":
        pytest.skip("FORAGE_TEST_VLLM_ENGINE=0: the in-process vLLM engine test is switched off")
    try:
        import vllm  # noqa: F401
    except Exception as e:
        pytest.skip(f"vLLM is not importable: {e}")


def test_engine_generates_and_loads_new_weights():
    _enabled()
    from forage.agents.vllm_engine import VLLMEnginePolicy

    kwargs = {"enforce_eager": True, "max_num_seqs": 8}
    try:
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            kwargs["gpu_memory_utilization"] = 0.25
    except Exception:
        pass
    policy = VLLMEnginePolicy(model_dir(), max_model_len=2048, **kwargs)
    try:
        chat = ChatTokenizer(tokenizer())
        prompt = chat.prompt_ids([{"role": "user", "content": "Name three colours."}])
        greedy = SamplingParams(max_tokens=12, temperature=0.0)

        async def gen():
            return (await policy.generate([prompt], greedy))[0]

        async def main():  # one event loop for the engine's whole life
            first = await gen()
            assert 1 <= len(first.token_ids) <= 12 and len(first.logprobs) == len(first.token_ids)
            assert all(lp <= 0 for lp in first.logprobs)
            # New weights: a perturbed copy changes the greedy output; the originals restore it.
            sd = {k: v.clone() for k, v in hf_model().state_dict().items()}
            await policy.load_weights({k: (v * -1.0 if "mlp" in k else v) for k, v in sd.items()})
            changed = await gen()
            assert changed.token_ids != first.token_ids and policy.version == 1
            await policy.load_weights(sd)
            again = await gen()
            assert again.token_ids == first.token_ids

        asyncio.run(main())
    finally:
        policy.shutdown()
