"""The command groups that the layers fill: eval, train, serve, sandbox, index, model."""

from __future__ import annotations

import importlib

import typer

# group name -> (module defining `app`, help). Each layer owns its module.
GROUPS: dict[str, tuple[str, str]] = {
    "serve": ("forage.cli.serve", "Start services: retriever, site, policy, env."),
    "sandbox": ("forage.cli.sandbox", "Build and manage code sandboxes."),
    "index": ("forage.cli.index", "Build and inspect retrieval indexes."),
    "model": ("forage.cli.model", "Prepare the offline policy model."),
}


def register(app: typer.Typer) -> None:
    """Attach every group's Typer app to the main app."""
    for name, (module, help_text) in GROUPS.items():
        sub = importlib.import_module(module).app
        app.add_typer(sub, name=name, help=help_text)
    for module in ("forage.cli.evaluate", "forage.cli.train", "forage.cli.explore"):
        importlib.import_module(module).register(app)
