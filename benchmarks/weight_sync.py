"""Weight-sync benchmark: pushing new weights into a running vLLM server vs restarting it on them.

After each training update the rollout server must serve the new policy. Forage pushes the weights
into the running server (``forage.agents.vllm_weights``: a safetensors file, a worker extension
called through ``/collective_rpc``, a prefix-cache reset). The baseline is what you do without it:
``save_pretrained`` the model to a folder and start a fresh vLLM server on that folder (waiting
until it answers ``/health``). Both are timed side by side on the embedded SmolLM2-135M, and
each is checked: the served log-probs of a probe text must follow the new weights.

    python benchmarks/weight_sync.py [--pushes 3] [--json benchmarks/results/weight_sync.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def scaled(model: torch.nn.Module, factor: float) -> torch.nn.Module:
    """A copy of ``model`` whose MLP weights are multiplied by ``factor`` (a stand-in for an update)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if ".mlp." in name:
                p.mul_(factor)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pushes", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the figures here")
    a = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forage.agents import sequence_logprobs
    from forage.agents.models import resolve_model
    from forage.agents.vllm_server import VLLMServer
    from forage.agents.vllm_weights import VLLMWeightSync, served_prompt_logprobs

    path = resolve_model("default")
    tok = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = tok("The capital of France is Paris. The capital of Italy is Rome.")["input_ids"]
    args = ["--enforce-eager"]

    # Forage: one server, new weights pushed into it
    push_s, push_err = [], []
    with VLLMServer(path, weight_sync=True, extra_args=args, log_path="/tmp/forage-bench-weight-sync.log") as srv:
        sync = VLLMWeightSync(srv.url)
        for k in range(a.pushes):
            new = scaled(base, 0.9 - 0.1 * k)
            push_s.append(sync.push(new, version=k + 1))
            ref = np.array(sequence_logprobs(new, ids))
            push_err.append(float(np.abs(np.array(served_prompt_logprobs(srv.url, path, ids)) - ref)[1:].mean()))
            print(f"push {k + 1}: {push_s[-1]:.2f} s, served vs new HF log-probs {push_err[-1]:.3f} nats", flush=True)

    # Baseline: save the new weights and start a new server on them
    new = scaled(base, 0.5)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        new.save_pretrained(d)
        tok.save_pretrained(d)
        save_s = time.perf_counter() - t0
        with VLLMServer(d, extra_args=args, log_path="/tmp/forage-bench-weight-sync-restart.log") as srv:
            restart_s = time.perf_counter() - t0
            restart_err = float(np.abs(np.array(served_prompt_logprobs(srv.url, d, ids)) - np.array(sequence_logprobs(new, ids)))[1:].mean())
    print(f"restart: {restart_s:.2f} s (save_pretrained {save_s:.2f} s), served vs new HF {restart_err:.3f} nats")

    p50 = float(np.median(push_s))
    print()
    print(f"{'SmolLM2-135M weights into vLLM':34s}{'seconds':>10s}")
    print(f"{'forage push (median of ' + str(a.pushes) + ')':34s}{p50:>10.2f}")
    print(f"{'save_pretrained + new server':34s}{restart_s:>10.2f}")
    print(f"ratio restart / push: {restart_s / p50:.1f}x")
    if a.json:
        out = {"push_s": push_s, "push_median_s": p50, "push_logprob_err": push_err,
               "restart_s": restart_s, "save_s": save_s, "restart_logprob_err": restart_err,
               "ratio_restart_over_push": restart_s / p50}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
