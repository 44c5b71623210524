"""Push new weights into a running vLLM server, so rollouts after a training update use the new policy.

The server side is a vLLM *worker extension* (``--worker-extension-cls``) that adds one method to
every worker, :meth:`WeightSyncExtension.forage_load_weights`, which reads a safetensors file of
Hugging Face-named tensors and reloads the served model from them through vLLM's own in-place reload
(``Worker.reload_weights``: the model's ``load_weights`` maps HF names onto vLLM's fused layers, then
each layer's post-load processing, such as the CPU backend's weight repacking, is redone). The trainer
side, :class:`VLLMWeightSync`, writes that file and calls the method through vLLM's ``/collective_rpc`` endpoint, then drops the prefix cache (its KV entries
were computed with the old weights). Both endpoints exist only in vLLM's dev mode
(``VLLM_SERVER_DEV_MODE=1``): ``VLLMServer(..., weight_sync=True)`` sets it and the extension, and
binds to 127.0.0.1; do not expose such a server to an untrusted network.

The file goes through the filesystem, so trainer and server must share it (same machine, or a shared
mount via ``tmp_dir``). Full-parameter models only: merge LoRA adapters before pushing.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import httpx

__all__ = ["WeightSyncExtension", "VLLMWeightSync", "EXTENSION", "WeightSyncError", "served_prompt_logprobs",
           "load_into_worker", "check_against_checkpoint"]

EXTENSION = "forage.agents.vllm_weights.WeightSyncExtension"


class WeightSyncError(RuntimeError):
    """The server refused or failed the weight push (it keeps serving its previous weights)."""


class WeightSyncExtension:
    """Mixed into vLLM's worker class: reloads the served model from a safetensors file of HF-named tensors.

    The load goes through vLLM's own in-place reload (``Worker.reload_weights``), which restores each layer's
    checkpoint-format parameters, loads the tensors and then re-runs the layer's post-load processing. That
    matters on CPUs: vLLM's CPU backend repacks linear weights for the CPU's own GEMM kernel (oneDNN on
    AVX-512 machines, AMX kernels on Intel, zentorch on AMD Zen builds) and empties the original parameter,
    so a plain ``model.load_weights`` finds size-0 tensors wherever such a kernel is picked (it only worked
    where vLLM fell back to torch's own linear, which reads the parameter).

    A push that cannot be applied leaves the server on the weights it served before: it is checked against
    the served checkpoint first (names, shapes, dtypes) and refused; a load that fails later is rolled back to
    the last good push (kept as a file beside the server) or, before any push, to the model it started with.
    """

    def forage_load_weights(self, path: str) -> dict:
        """Load ``path`` (safetensors) into the served model; returns how many tensors were read."""
        from safetensors.torch import load_file

        tensors = load_file(path)
        last = getattr(self, "_forage_last_good", None)
        load_into_worker(self, tensors, roll_back_to=last)
        self._forage_last_good = _keep_last_good(path, getattr(self, "rank", 0))
        return {"tensors": len(tensors)}


def load_into_worker(worker: Any, tensors: Mapping[str, Any], roll_back_to: str | None = None) -> None:
    """Runs inside a vLLM worker: check ``tensors`` (HF names) against the served model, then reload it in place.

    Raises ``RuntimeError`` saying why when the push is refused (nothing changed) or failed (rolled back to
    the safetensors file ``roll_back_to``, or to the checkpoint the worker started from).
    """
    problem = check_against_checkpoint(tensors, worker.vllm_config.model_config)
    if problem:
        raise RuntimeError(f"weight push refused: {problem}; the server still serves its previous weights")
    try:
        _reload(worker, tensors.items())
    except Exception as e:
        rolled = _roll_back(worker, roll_back_to)
        raise RuntimeError(f"weight push not applied ({type(e).__name__}: {e}); the server {rolled}") from e


def check_against_checkpoint(tensors: Mapping[str, Any], model_config: Any) -> str | None:
    """Why ``tensors`` cannot replace the served checkpoint (names, shapes, dtypes), or None."""
    bad_dtype = sorted(k for k, v in tensors.items() if not v.is_floating_point())
    if bad_dtype:
        return f"{len(bad_dtype)} tensors are not floating point (e.g. {bad_dtype[0]})"
    expected = _checkpoint_shapes(model_config)
    if expected is None:   # not a local safetensors folder: vLLM's loaders check what they can
        return None
    tied = bool(getattr(model_config.hf_config, "tie_word_embeddings", False))
    unknown = sorted(k for k in tensors if k not in expected and not (tied and k == "lm_head.weight"))
    missing = sorted(k for k in expected if k not in tensors)
    wrong = sorted(k for k, v in tensors.items() if k in expected and tuple(v.shape) != expected[k])
    if unknown:
        return f"{len(unknown)} tensors the served model does not have (e.g. {unknown[0]})"
    if missing:
        return f"{len(missing)} of the model's tensors are missing (e.g. {missing[0]}): push a full state dict"
    if wrong:
        k = wrong[0]
        return (f"{len(wrong)} tensors have the wrong shape (e.g. {k}: {tuple(tensors[k].shape)}, "
                f"the model has {expected[k]})")
    return None


def _reload(worker: Any, weights: Any) -> None:
    reload = getattr(worker, "reload_weights", None)
    if reload is None:
        raise RuntimeError("this vLLM has no in-place weight reload (Worker.reload_weights); a plain "
                           "load_weights would miss the kernels' repacked weights: upgrade vLLM")
    reload(weights_iterator=iter(list(weights)), is_checkpoint_format=True)


def _roll_back(worker: Any, last_good: str | None) -> str:
    try:
        _abandon_layerwise_reload(worker.model_runner.get_model(), worker.vllm_config.model_config)
        if last_good is not None:
            from safetensors.torch import load_file

            _reload(worker, load_file(last_good).items())
            return "still serves the last weights pushed successfully"
        worker.reload_weights(is_checkpoint_format=True)
        return "still serves the weights it was started with"
    except Exception as e:  # the model is now in an unknown state: say so
        return f"could not restore its previous weights ({type(e).__name__}: {e}); restart it"


def _keep_last_good(path: str, rank: int) -> str:
    """Keep the pushed file (a hard link when possible) as this worker's roll-back point; returns its path."""
    keep_dir = Path(tempfile.gettempdir()) / f"forage-vllm-{os.getpid()}"
    if not keep_dir.exists():
        _remove_stale_keep_dirs()
        keep_dir.mkdir(mode=0o700)
        atexit.register(shutil.rmtree, keep_dir, True)
    keep = keep_dir / f"last-good-rank{rank}.safetensors"
    tmp = keep.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)      # the trainer deletes its file after the push; a link keeps the data
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, keep)
    return str(keep)


def _checkpoint_shapes(model_config: Any) -> dict[str, tuple[int, ...]] | None:
    """Names and shapes of the tensors in the served model's safetensors files (headers only), or None."""
    folder = Path(str(model_config.model))
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                shapes[k] = tuple(st.get_slice(k).get_shape())
    return shapes


def _abandon_layerwise_reload(model: Any, model_config: Any) -> None:
    """After a reload that raised half-way: drop what it buffered and put the layers' kernel tensors back."""
    from vllm.model_executor.model_loader.reload import finalize_layerwise_reload
    from vllm.model_executor.model_loader.reload.layerwise import get_layerwise_info

    for layer in model.modules():
        info = get_layerwise_info(layer)
        if info.can_load() and info.kernel_tensors is not None:
            info.loaded_weights.clear()
            info.load_numel = 0
    finalize_layerwise_reload(model, model_config)


def _remove_stale_keep_dirs() -> None:
    """Delete the last-good folders of vLLM workers that are gone (killed before their atexit ran)."""
    for d in Path(tempfile.gettempdir()).glob("forage-vllm-*"):
        try:
            os.kill(int(d.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


@contextlib.contextmanager
def weights_file(weights: Any, tmp_dir: str | Path | None = None) -> Iterator[str]:
    """A model's (or state dict's) tensors written to a temporary safetensors file, deleted afterwards."""
    from safetensors.torch import save_file

    state: Mapping[str, Any] = weights.state_dict() if hasattr(weights, "state_dict") else weights
    if any("lora_" in k for k in state):
        raise WeightSyncError("LoRA adapters: merge them into the base weights before pushing")
    # clone: tied tensors (embeddings / lm_head) share storage, which safetensors refuses to write
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    fd, name = tempfile.mkstemp(prefix="forage-weights-", suffix=".safetensors",
                                dir=str(tmp_dir) if tmp_dir else None)
    os.close(fd)
    try:
        save_file(tensors, name)
        del tensors
        yield name
    finally:
        Path(name).unlink(missing_ok=True)


class VLLMWeightSync:
    """The trainer's end: ``push(model_or_state_dict, version)`` makes the server serve those weights."""

    def __init__(self, url: str, tmp_dir: str | Path | None = None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.tmp_dir = Path(tmp_dir) if tmp_dir else None
        self.timeout = timeout
        self.version: int | None = None

    def push(self, weights: Any, version: int | None = None) -> float:
        """Send a model's (or a state dict's) tensors to every worker; returns the seconds it took."""
        t0 = time.perf_counter()
        with weights_file(weights, self.tmp_dir) as name:
            r = self._post("/collective_rpc", {"method": "forage_load_weights", "args": [name],
                                               "timeout": self.timeout})
            results = r.json().get("results", [])
            if not results or not all(isinstance(x, dict) and x.get("tensors") for x in results):
                raise WeightSyncError(f"the server's workers did not load the weights: {results!r}")
            self._post("/reset_prefix_cache", None)
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
