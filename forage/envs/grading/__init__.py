"""Graders that run where the graded answer cannot reach them (HumanEval), and the official string metrics (FanOutQA)."""
