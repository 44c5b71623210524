"""``forage envs``, ``forage play`` and ``forage demo``."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table


def _parse_kwargs(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def envs() -> None:
    """List the registered Forage environments with a one-line description each."""
    import forage  # noqa: F401  (registers the envs)
    from forage.envs import describe_env, forage_env_ids

    table = Table(title="Forage environments")
    table.add_column("id", style="bold cyan", no_wrap=True)
    table.add_column("description")
    for env_id in forage_env_ids():
        table.add_row(env_id, describe_env(env_id))
    Console().print(table)


def play(
    env_id: str = typer.Argument(..., help="e.g. forage/LookupQA-v0"),
    seed: Optional[int] = typer.Option(None, help="reset seed"),
    task_id: Optional[str] = typer.Option(None, help="play this task"),
    kwarg: list[str] = typer.Option([], "--kwarg", "-k", help="env option KEY=VALUE (JSON values), repeatable"),
) -> None:
    """Play an episode yourself: you type the model's turns (end a turn with an empty line)."""
    import gymnasium as gym

    import forage  # noqa: F401

    console = Console()
    env = gym.make(env_id, **_parse_kwargs(kwarg))
    options = {"task_id": task_id} if task_id else None
    obs, info = env.reset(seed=seed, options=options)
    base = env.unwrapped
    console.rule(f"{env_id} · task {info.get('task_id')}")
    if hasattr(base, "system_message"):
        console.print(f"[dim]{base.system_message()}[/dim]")
        example = base.format_call(next(iter(base.tools))) if getattr(base, "tools", None) else ""
        if example:
            console.print(f"[dim]A call looks like:\n{example}[/dim]")
    console.print(f"[bold green]user>[/bold green] {obs}")
    total = 0.0
    while True:
        console.print("[bold yellow]you (assistant)>[/bold yellow] (empty line sends, Ctrl-D quits)")
        lines = []
        for line in sys.stdin:
            if not line.strip() and lines:
                break
            lines.append(line.rstrip("\n"))
        else:
            if not lines:
                console.print("bye")
                break
        obs, reward, terminated, truncated, info = env.step("\n".join(lines))
        total += reward
        console.print(f"[bold green]tool>[/bold green] {obs}")
        console.print(f"[dim]reward {reward:+.3f} {info.get('rewards')} · turn {info.get('turn')}[/dim]")
        if terminated or truncated:
            console.rule(f"episode over ({info.get('stop_reason')}), return {total:+.3f}")
            break
    env.close()


def demo(
    env_id: str = typer.Option("forage/LookupQA-v0", help="env to run"),
    episodes: int = typer.Option(50, help="episodes"),
    seed: int = typer.Option(0, help="first seed"),
) -> None:
    """Run the scripted oracle agent in an env and report success (a quick end-to-end check of an env)."""
    import gymnasium as gym
    from tqdm import tqdm

    import forage  # noqa: F401

    env = gym.make(env_id)
    base = env.unwrapped
    if not hasattr(base, "oracle_actions"):
        raise typer.BadParameter(f"{env_id} has no scripted oracle")
    successes, turns = 0, 0
    for i in tqdm(range(episodes), desc=f"{env_id} (scripted)"):
        env.reset(seed=seed + i)
        for action in base.oracle_actions(base.episode.task):
            obs, reward, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        successes += int(info["rewards"].get("correct", 0) > 0)
        turns += info["turn"]
    env.close()
    print(f"scripted agent on {env_id}: success {successes}/{episodes} = {successes / episodes:.2%}, "
          f"mean turns {turns / episodes:.2f}")


def register(app: typer.Typer) -> None:
    """Add these commands to the main app."""
    app.command()(envs)
    app.command()(play)
    app.command()(demo)
