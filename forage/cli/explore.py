"""``forage explore``: Go-Explore (and plain exploration) on an env, printing and plotting what it finds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def _policy(spec: str, seed: int):
    from forage.explore import ChatExplorePolicy, RandomCommandPolicy

    if spec == "random":
        return RandomCommandPolicy(seed)
    if spec.startswith("random:"):
        return RandomCommandPolicy(seed, commands=[c for c in spec[len("random:"):].split(",") if c])
    if spec.startswith("openai:"):
        from forage.agents.openai_api import OpenAIPolicy

        url, _, model = spec[len("openai:"):].partition("#")
        return ChatExplorePolicy(OpenAIPolicy(url, model or None))
    raise typer.BadParameter(f"unknown policy {spec!r}: use random, random:CMD1,CMD2 or openai:URL#MODEL")


def explore_command(
    env_id: str = typer.Argument(..., help="e.g. forage/TextWorld-v0 or forage/BabyAI-v0"),
    policy: str = typer.Option("random", "--policy",
                               help="random (an admissible command), random:CMD1,CMD2, or openai:URL#MODEL."),
    budget: int = typer.Option(1000, "--budget", help="Env steps per method (replayed return steps count)."),
    explore_steps: int = typer.Option(20, "--explore-steps", help="Steps explored after each return."),
    task_id: Optional[str] = typer.Option(None, "--task-id", help="Explore this task (default: the seed's)."),
    seed: int = typer.Option(0, "--seed"),
    return_by: str = typer.Option("auto", "--return-by", help="auto, snapshot or replay."),
    plain: bool = typer.Option(True, "--plain/--no-plain", help="Also run plain exploration at the same budget."),
    judge: Optional[str] = typer.Option(None, "--judge", help="Intelligent Go-Explore: openai:URL#MODEL judges new cells."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Save the curves as a PNG here."),
    kwarg: List[str] = typer.Option([], "--kwarg", "-k", help="env option KEY=VALUE (JSON values), repeatable"),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Run Go-Explore on one task of an env; print cells found and best score over env steps."""
    import gymnasium as gym
    from rich.console import Console
    from rich.table import Table

    import forage  # noqa: F401
    from forage.cli.envs import _parse_kwargs
    from forage.explore import GoExploreConfig, OpenAIJudge, go_explore, plain_explore
    from forage.explore.plot import curves_table, plot_curves

    try:
        config = GoExploreConfig(budget=budget, explore_steps=explore_steps, seed=seed, return_by=return_by,
                                 log_every=max(1, budget // 50))
    except ValueError as e:
        raise typer.BadParameter(str(e))
    try:
        env = gym.make(env_id, **_parse_kwargs(kwarg))
    except Exception as e:
        typer.echo(f"error: cannot make env {env_id!r}: {e}", err=True)
        raise typer.Exit(2)
    the_judge = None
    if judge:
        if not judge.startswith("openai:") or "#" not in judge:
            raise typer.BadParameter("--judge must be openai:URL#MODEL")
        url, _, model = judge[len("openai:"):].partition("#")
        the_judge = OpenAIJudge(url, model)
    results = []
    policies = [_policy(policy, seed)] + ([_policy(policy, seed)] if plain else [])
    try:
        results.append(go_explore(env, policies[0], config, task_id=task_id, judge=the_judge))
        if plain:
            results.append(plain_explore(env, policies[1], budget, seed=seed,
                                         task_id=results[0].task_id, log_every=config.log_every))
    finally:
        env.close()
        if the_judge is not None:
            the_judge.close()
        for p in policies:
            if callable(getattr(p, "close", None)):
                p.close()
    if as_json:
        typer.echo(json.dumps({"results": [r.summary() for r in results], "curve": curves_table(results)}))
    else:
        console = Console()
        rows = curves_table(results)
        table = Table(title=f"{env_id} · {results[0].task_id} · policy {policy}")
        for col in rows[0]:
            table.add_column(col, justify="right")
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)
        summary = Table(title="results")
        keys = list(results[0].summary())
        for k in keys:
            summary.add_column(k)
        for r in results:
            summary.add_row(*(str(v) for v in r.summary().values()))
        console.print(summary)
    if plot is not None:
        typer.echo(f"plot: {plot_curves(results, plot, title=f'{env_id} {results[0].task_id}')}")


def register(app: typer.Typer) -> None:
    """Add ``forage explore`` to the main app."""
    app.command("explore")(explore_command)
