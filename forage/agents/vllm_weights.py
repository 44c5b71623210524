"""Push new weights into a running vLLM server, so rollouts after a training update use the new policy.

The server side is a vLLM *worker extension* (``--worker-extension-cls``) that adds one method to
every worker, :meth:`WeightSyncExtension.forage_load_weights`, which reads a safetensors file of
Hugging Face-named tensors and hands them to the served model's own ``load_weights`` (which maps HF
names onto vLLM's fused layers). The trainer side, :class:`VLLMWeightSync`, writes that file and calls
the method through vLLM's ``/collective_rpc`` endpoint, then drops the prefix cache (its KV entries
were computed with the old weights). Both endpoints exist only in vLLM's dev mode
(``VLLM_SERVER_DEV_MODE=1``): ``VLLMServer(..., weight_sync=True)`` sets it and the extension, and
binds to 127.0.0.1; do not expose such a server to an untrusted network.

The file goes through the filesystem, so trainer and server must share it (same machine, or a shared
mount via ``tmp_dir``). Full-parameter models only: merge LoRA adapters before pushing.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import httpx

__all__ = ["WeightSyncExtension", "VLLMWeightSync", "EXTENSION", "WeightSyncError", "served_prompt_logprobs"]

EXTENSION = "forage.agents.vllm_weights.WeightSyncExtension"


class WeightSyncError(RuntimeError):
    """The server refused or failed the weight push (it keeps serving its previous weights)."""


class WeightSyncExtension:
    """Mixed into vLLM's worker class: loads HF-named tensors from a safetensors file into the model."""

    def forage_load_weights(self, path: str) -> dict:
        """Load ``path`` (safetensors) into the served model; returns how many tensors were read."""
        import torch
        from safetensors.torch import load_file

        tensors = load_file(path)
        runner = self.model_runner  # type: ignore[attr-defined]
        model = runner.get_model() if hasattr(runner, "get_model") else runner.model
        with torch.no_grad():
            loaded = model.load_weights(weights=tensors.items())
        return {"tensors": len(tensors), "loaded": len(loaded) if loaded is not None else None}


class VLLMWeightSync:
    """The trainer's end: ``push(model_or_state_dict, version)`` makes the server serve those weights."""

    def __init__(self, url: str, tmp_dir: str | Path | None = None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.tmp_dir = Path(tmp_dir) if tmp_dir else None
        self.timeout = timeout
        self.version: int | None = None

    def push(self, weights: Any, version: int | None = None) -> float:
        """Send a model's (or a state dict's) tensors to every worker; returns the seconds it took."""
        from safetensors.torch import save_file

        state: Mapping[str, Any] = weights.state_dict() if hasattr(weights, "state_dict") else weights
        if any("lora_" in k for k in state):
            raise WeightSyncError("LoRA adapters: merge them into the base weights before pushing")
        t0 = time.perf_counter()
        # clone: tied tensors (embeddings / lm_head) share storage, which safetensors refuses to write
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
        fd, name = tempfile.mkstemp(prefix="forage-weights-", suffix=".safetensors",
                                    dir=str(self.tmp_dir) if self.tmp_dir else None)
        os.close(fd)
        try:
            save_file(tensors, name)
            del tensors
            r = self._post("/collective_rpc", {"method": "forage_load_weights", "args": [name],
                                               "timeout": self.timeout})
            results = r.json().get("results", [])
            if not results or not all(isinstance(x, dict) and x.get("tensors") for x in results):
                raise WeightSyncError(f"the server's workers did not load the weights: {results!r}")
            self._post("/reset_prefix_cache", None)
        finally:
            Path(name).unlink(missing_ok=True)
        self.version = version
        return time.perf_counter() - t0

    def _post(self, path: str, body: dict | None) -> httpx.Response:
        try:
            r = httpx.post(self.url + path, json=body, timeout=self.timeout)
        except httpx.HTTPError as e:
            raise WeightSyncError(f"cannot reach the vLLM server at {self.url}: {e}") from e
        if r.status_code == 404:
            raise WeightSyncError(f"{self.url}{path} is missing: start the server with weight sync on "
                                  f"(VLLMServer(..., weight_sync=True): VLLM_SERVER_DEV_MODE=1 and "
                                  f"--worker-extension-cls {EXTENSION})")
        if r.status_code >= 400:
            raise WeightSyncError(f"{path} answered {r.status_code}: {r.text[:500]}")
        return r


def served_prompt_logprobs(url: str, model: str, token_ids: list[int], timeout: float = 120.0) -> list[float]:
    """The server's log-prob of each token given the ones before it (0.0 for the first): check what it serves."""
    r = httpx.post(url.rstrip("/") + "/v1/completions", timeout=timeout, json={
        "model": model, "prompt": list(token_ids), "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0})
    r.raise_for_status()
    return [next(iter(d.values()))["logprob"] if d else 0.0 for d in r.json()["choices"][0]["prompt_logprobs"]]
