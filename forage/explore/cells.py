"""Cells: the state abstraction Go-Explore archives by (the env's own, else the normalised observation)."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Hashable

__all__ = ["normalise_observation", "cell_of"]

_TAGS = re.compile(r"</?(tool_response|tool_call|information)>")


def normalise_observation(text: str) -> str:
    """The observation in lower case, without tool-result tags and with whitespace collapsed."""
    return " ".join(_TAGS.sub(" ", str(text)).lower().split())


def cell_of(env: Any, observation: str) -> Hashable:
    """The cell of the env's current state: ``env.cell()`` when the env has one (the text games' game
    state), else a hash of the normalised observation."""
    base = getattr(env, "unwrapped", env)
    cell = getattr(base, "cell", None)
    if callable(cell):
        return cell()
    return hashlib.blake2b(normalise_observation(observation).encode("utf-8", "replace"), digest_size=8).hexdigest()
