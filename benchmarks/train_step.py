"""A training step beside its floor and beside TRL's GRPOTrainer, measured in the same run.

Forage: ``Trainer.train_step`` on the main job's config (examples/configs/smollm2_lookup_cpu.yaml:
SmolLM2-135M, LookupQA 1-hop, 4 tasks x 4 episodes, vLLM rollouts with the weights pushed each step),
after a cold start. Its time split comes from the step's own metrics.

The floor, for the very episodes of each measured step:

- generation: the same vLLM server generating the same token counts from the same prompts, turn by
  turn (every episode's turn k is one request holding the exact tokens the episode had before that
  turn, ``min_tokens = max_tokens =`` the turn's generated count, all of a turn's requests at once):
  no chat templating, parsing, tool calls or env;
- update: one forward + backward of the same packed micro-batches of the episodes the step trained on
  (those of zero-variance groups are filtered out before the update) with plain summed log-probs (no loss
  machinery), and one AdamW step.

TRL: ``trl.GRPOTrainer`` on the same model (the same cold-start weights) doing the same work as far as
it can: the step's exact first-turn prompts (system prompt, tools, question), 4 completions each, every completion forced to the episodes'
mean generated length (``min_new_tokens``), bf16 autocast when Forage uses it, no gradient
checkpointing, beta 0, its own generation (HF ``generate``: TRL's vLLM modes need a CUDA device).
TRL's completions are single-turn, so its update sees fewer prompt tokens than ours (printed).

    python benchmarks/train_step.py                       # cold start from the config (about 3 min), 3 steps
    python benchmarks/train_step.py --cold runs/learning/cold/seed0.pt   # reuse benchmarks/learning.py's weights
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from _floors import generation_floor


def update_floor(model: Any, trajs: list[Any], micro_batch_tokens: int, pad: int, lr: float) -> float:
    """Seconds of one forward+backward over the same packed micro-batches and one AdamW step (on a copy)."""
    import copy

    from forage.training.model import token_logps
    from forage.training.update import micro_batches

    m = copy.deepcopy(model)
    m.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr)
    device = next(m.parameters()).device

    def one_step() -> None:
        for _, keep, b in micro_batches(trajs, micro_batch_tokens, pad, device):
            logp, _ = token_logps(m, b["input_ids"], b["attention_mask"], keep)
            (logp * b["mask"]).sum().backward()
        opt.step()
        opt.zero_grad()

    one_step()   # AdamW allocates its state on the first step: time the second, a steady one
    t0 = time.perf_counter()
    one_step()
    dt = time.perf_counter() - t0
    del m, opt
    return dt


def trl_step(model_path: str, state: dict[str, torch.Tensor] | None, prompts: list[str], completion_len: int,
             group: int, bf16: bool, lr: float, steps: int = 3) -> dict[str, Any]:
    """Seconds per steady GRPOTrainer step (median of steps 2..n) doing the same work; or why it could not run."""
    try:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        return {"skipped": f"trl not installed ({e})"}
    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if state is not None:
        model.load_state_dict(state)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append(time.perf_counter() - self.t0)

    n = len(prompts) * group
    args = GRPOConfig(output_dir="/tmp/forage-trl-step", max_steps=steps, per_device_train_batch_size=n,
                      num_generations=group, learning_rate=lr, logging_steps=1, save_strategy="no",
                      report_to="none", use_cpu=True, bf16=bf16, gradient_checkpointing=False, beta=0.0,
                      epsilon=0.2, epsilon_high=0.28, loss_type="dapo", temperature=1.0,
                      max_completion_length=completion_len,
                      generation_kwargs={"min_new_tokens": completion_len}, disable_tqdm=True)
    ds = Dataset.from_dict({"prompt": list(prompts) * steps})   # plain text: already chat-rendered
    reward = lambda completions, **k: [float(len(str(c)) % 2) for c in completions]  # noqa: E731  (any variance)
    trainer = GRPOTrainer(model=model, processing_class=tok, args=args, train_dataset=ds, reward_funcs=[reward],
                          callbacks=[Clock()])
    prompt_tokens = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts) * group
    trainer.train()
    return {"step_s": statistics.median(times[1:]) if len(times) > 1 else times[0], "steps_s": times,
            "completions": n, "completion_tokens": n * completion_len, "prompt_tokens": prompt_tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="examples/configs/smollm2_lookup_cpu.yaml")
    ap.add_argument("--cold", default=None, help="cold-start weights (a state dict .pt) instead of the config's SFT")
    ap.add_argument("--steps", type=int, default=3, help="measured steps (after one untimed first step)")
    ap.add_argument("--no-trl", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/train_step.json")
    a = ap.parse_args()

    from forage.machine import describe_machine
    from forage.training.config import load_config
    from forage.training.model import pad_id
    from forage.training.trainer import Trainer

    cfg = load_config(a.config, {"name": "train-step-bench", "out_dir": "/tmp/forage-train-step", "eval_tasks": 0,
                                 "steps": a.steps + 1})
    tr = Trainer(cfg, progress=False)
    if a.cold:
        tr.model.load_state_dict(torch.load(a.cold, weights_only=True))
        tr.warmed_up = True
    else:
        tr.cold_start_once()
    cold_state = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
    seen: list[list[Any]] = []
    collect = tr.collect

    def keep(step: int) -> list[Any]:
        trajs = collect(step)
        seen.append([t for t in trajs])
        return trajs

    tr.collect = keep   # the benchmark keeps each step's episodes for its floor
    trained: list[list[Any]] = []
    update = tr.update

    def record(trajs: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        trained.append(list(trajs))
        return update(trajs, *args, **kwargs)

    tr.update = record   # ... and the ones its update trained on (zero-variance groups are filtered out)
    from forage.training.metrics import MetricsLogger

    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    tr.logger = MetricsLogger(cfg.run_dir, False)
    rows = []
    for i in range(a.steps + 1):
        trained.clear()
        m = tr.train_step()
        trajs = seen[-1]
        if i == 0:
            continue   # the first step pays the server's first push and allocations
        url = tr.source.url()
        gen_s, gen_tok = generation_floor(url, trajs, cfg.rollout.temperature)
        upd_trajs = [t for batch in trained for t in batch]
        upd_s = update_floor(tr.model, upd_trajs, cfg.optim.micro_batch_tokens, pad_id(tr.tokenizer),
                             cfg.optim.lr) if upd_trajs else 0.0
        row = {k: m.get(k) for k in ("time/step_s", "time/rollout_s", "time/generate_s", "time/env_s",
                                     "time/update_s", "time/weight_sync_s", "tokens/generated", "pg/tokens",
                                     "pg/logp_gap")}
        row.update({"floor/generate_s": gen_s, "floor/generated_tokens": gen_tok, "floor/update_s": upd_s,
                    "floor/step_s": gen_s + upd_s, "episodes": len(trajs), "episodes_trained": len(upd_trajs),
                    "tokens/total": sum(len(t.token_ids) for t in trajs)})
        rows.append(row)
        print(f"step {i}: forage {row['time/step_s']:.1f} s (generate {row['time/generate_s']:.1f}, env "
              f"{row['time/env_s']:.1f}, update {row['time/update_s']:.1f}, sync {row['time/weight_sync_s']:.1f}) | "
              f"floor {row['floor/step_s']:.1f} s (vLLM {gen_s:.1f} for {gen_tok} tokens, fwd+bwd+AdamW {upd_s:.1f})",
              flush=True)
    tr.source.close()
    med = lambda k: statistics.median(r[k] for r in rows)   # noqa: E731
    total = lambda k: sum(r[k] for r in rows)   # noqa: E731
    # steps differ (a step whose groups are all zero-variance has no update): the ratio is of the sums
    res: dict[str, Any] = {"machine": describe_machine(), "config": a.config, "steps": rows,
                           "forage_step_s": total("time/step_s") / len(rows), "floor_step_s": total("floor/step_s") / len(rows),
                           "forage_step_median_s": med("time/step_s"), "floor_step_median_s": med("floor/step_s")}
    res["ratio_vs_floor"] = res["forage_step_s"] / res["floor_step_s"]
    if not a.no_trl:
        first = seen[1]
        prompts, seen_task = [], set()
        for t in first:   # each task's exact first-turn prompt (system, tools, question), as text
            if t.task_id not in seen_task and t.turn_spans:
                seen_task.add(t.task_id)
                prompts.append(tr.tokenizer.decode(t.token_ids[:t.turn_spans[0][0]]))
        gen_len = max(1, round(statistics.mean(t.num_generated for t in first)))
        from forage.agents.models import resolve_model

        bf16 = getattr(tr.model, "forage_autocast", None) is torch.bfloat16
        del tr
        res["trl"] = trl_step(str(resolve_model(cfg.model.path)), cold_state, prompts, gen_len, cfg.rollout.group_size,
                              bf16, cfg.optim.lr)
        if "step_s" in res["trl"]:
            res["ratio_vs_trl"] = res["forage_step_s"] / res["trl"]["step_s"]
    print(f"\nForage step (mean of {len(rows)}): {res['forage_step_s']:.1f} s; floor {res['floor_step_s']:.1f} s; "
          f"ratio {res['ratio_vs_floor']:.2f}x (goal <= 1.5x)")
    if "ratio_vs_trl" in res:
        t = res["trl"]
        print(f"TRL GRPOTrainer step (same model, {t['completions']} completions x {t['completion_tokens'] // t['completions']}"
              f" tokens, {t['prompt_tokens']} prompt tokens; ours {rows[0]['tokens/total']} tokens in all): "
              f"{t['step_s']:.1f} s; Forage / TRL = {res['ratio_vs_trl']:.2f}x (goal <= 1.0x)")
    elif "trl" in res:
        print(f"TRL: skipped ({res['trl'].get('skipped')})")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"results: {a.out}")


if __name__ == "__main__":
    main()
