"""Exploration environments: text games (TextWorld, BabyAI as text) and the Game of 24."""

from .game24 import Game24Env, game24_tasks, grade24

__all__ = ["Game24Env", "game24_tasks", "grade24"]
