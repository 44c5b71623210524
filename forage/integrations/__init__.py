"""Adapters to other RL ecosystems (TRL, MCP, OpenEnv, verifiers, SkyRL-gym); each imports its package lazily."""

from .session import EnvSession, StepOutcome, make_tool_env

__all__ = ["EnvSession", "StepOutcome", "make_tool_env"]
