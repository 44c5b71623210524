"""``forage train --config FILE`` and ``forage plot RUN``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import typer


def _parse_overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _torchrun_argv(nproc: int, config: Path, steps: Optional[int], out_dir: Optional[str], resume: bool,
                   set_: list[str], ray: Optional[str], ray_actors: Optional[int], plot: bool) -> list[str]:
    """The torchrun command line that runs this ``forage train`` on ``nproc`` local ranks."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "forage.train", "--config", str(config)]
    for flag, value in (("--steps", steps), ("--out-dir", out_dir), ("--ray", ray), ("--ray-actors", ray_actors)):
        if value is not None:
            argv += [flag, str(value)]
    for item in set_:
        argv += ["--set", item]
    return argv + (["--resume"] if resume else []) + ([] if plot else ["--no-plot"])


def register(app: typer.Typer) -> None:
    """Add the train commands to the main app."""

    def held_out_panel(trainer: "Any") -> list[str]:
        """The last ``eval_tasks`` task ids of the env: never in the training pool nor the demonstrations."""
        cfg, ids = trainer.cfg, trainer.task_ids()
        used = len(trainer.task_pool()) + cfg.warmup.episodes
        if used + cfg.eval_tasks > len(ids):
            raise typer.BadParameter(f"eval_tasks {cfg.eval_tasks}: only {len(ids) - used} tasks are outside the "
                                     f"training pool and the demonstrations")
        return ids[-cfg.eval_tasks:]

    @app.command("train")
    def train(
        config: Path = typer.Option(..., "--config", "-c", help="YAML or TOML training config"),
        steps: Optional[int] = typer.Option(None, help="override the number of steps"),
        out_dir: Optional[str] = typer.Option(None, "--out-dir", help="override out_dir (runs go to OUT_DIR/NAME)"),
        resume: bool = typer.Option(False, "--resume", help="continue from the run's newest checkpoint"),
        set_: List[str] = typer.Option([], "--set", help="override a config key: --set algo.kl_coef=0.01"),
        ray: Optional[str] = typer.Option(
            None, "--ray", help="roll out in Ray actors ('local', 'auto' or an address); the trainer pushes "
                                "its weights to them after each update (same as --set rollout.ray=...)"),
        ray_actors: Optional[int] = typer.Option(None, "--ray-actors", help="Ray rollout actors (rollout.ray_actors)"),
        plot: bool = typer.Option(True, help="draw the training PNG at the end"),
        nproc: int = typer.Option(
            1, "--nproc", min=1, help="train on N local processes (torchrun underneath; the config's "
                                      "distributed.strategy picks DDP or FSDP2); on a cluster run "
                                      "`torchrun ... -m forage.train` with these options instead"),
    ) -> None:
        """Train a policy with GRPO (+ SPEAR replay, curricula, bonuses) as the config says."""
        from ..training.config import ConfigError, load_config
        from ..training.distributed import launched

        main_rank = not launched() or os.environ.get("RANK", "0") == "0"
        say = typer.echo if main_rank else (lambda *a, **k: None)   # one voice: rank 0's

        overrides = _parse_overrides(set_)
        if steps is not None:
            overrides["steps"] = steps
        if out_dir is not None:
            overrides["out_dir"] = out_dir
        if ray is not None:
            overrides["rollout.ray"] = ray
        if ray_actors is not None:
            overrides["rollout.ray_actors"] = ray_actors
        try:
            cfg = load_config(config, overrides)
        except ConfigError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        if nproc > 1 and not launched():   # the config is valid: start N ranks of this same command
            argv = _torchrun_argv(nproc, config, steps, out_dir, resume, set_, ray, ray_actors, plot)
            typer.echo(f"torchrun: {nproc} ranks, {cfg.distributed.strategy} ({' '.join(argv[2:])})")
            raise typer.Exit(subprocess.run(argv).returncode)
        from ..agents.vllm_weights import WeightSyncError
        from ..training.trainer import Trainer

        say(f"run folder: {cfg.run_dir}  (model {cfg.model.path}, env {cfg.rollout.env}, {cfg.steps} steps)")
        trainer = Trainer(cfg)
        if resume:
            at = trainer.resume()
            say(f"resumed at step {at}" if at else "no checkpoint found; starting at step 0")
        panel = held_out_panel(trainer) if cfg.eval_tasks else []
        before: dict | None = None
        try:
            if panel and not resume:   # the panel's score after the cold start: where RL starts from
                trainer.cold_start_once()
                before = trainer.evaluate(panel)
                say(f"held-out greedy success before RL: {before['success']:.2f} on {len(panel)} tasks")
            evals: list[dict] = []

            def eval_fn(tr: "Any") -> dict:
                evals.append({"step": tr.step, **tr.evaluate(panel)})
                return {k: v for k, v in evals[-1].items() if k != "step"}

            run_dir = trainer.train(eval_fn=eval_fn if panel else None)
            after = evals[-1] if evals else None
        except WeightSyncError as e:   # never train on rollouts of stale weights: stop with the push's reason
            typer.echo(f"error: the weight push to the rollout server failed at step {trainer.step}: {e}", err=True)
            raise typer.Exit(1)
        finally:
            trainer.close()
        if not main_rank:   # rank 0 writes the run's files
            return
        typer.echo(f"metrics: {run_dir / 'metrics.jsonl'}")
        if after is not None:
            (run_dir / "eval.json").write_text(json.dumps(
                {"panel": panel, "before_rl": before, "during_rl": evals, "after_rl": after}, indent=2))
            start = f"{before['success']:.2f} -> " if before else ""
            typer.echo(f"held-out greedy success: {start}{after['success']:.2f} on {len(panel)} tasks "
                       f"(after {trainer.step} RL steps; {run_dir / 'eval.json'})")
        if plot:
            from ..training.plot import plot_run

            png = plot_run(run_dir)
            typer.echo(f"plot: {png}")

    @app.command("plot")
    def plot_cmd(
        runs: List[Path] = typer.Argument(..., help="run folder(s) holding metrics.jsonl"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG path (default RUN/plots/training.png)"),
    ) -> None:
        """Draw reward, success, entropy, tool calls and replay-buffer size of a run as a PNG."""
        from ..training.plot import plot_run

        try:
            png = plot_run(runs if len(runs) > 1 else runs[0], out)
        except FileNotFoundError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        typer.echo(f"plot: {png}")
