"""Fixed episodes as a rollout: given token ids and rewards, scored with the current weights, no env or generation.

For exercising the trainer on its own (tests, benchmarks): a ``rollout_fn(step, model)`` builds the step's
specs (each a prompt length, a completion length, the token ids and a reward) and hands them to
:func:`fixed_episodes`, which keeps this rank's share (all of them in one process) and turns each into a
:class:`~forage.agents.trajectory.Trajectory` with the model's log-probs on the completion tokens.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..agents.trajectory import Trajectory

__all__ = ["FixedSpec", "fixed_episodes"]

# (task index, prompt tokens, completion tokens, token ids, reward) or the same with num_tool_calls last
FixedSpec = tuple


def fixed_episodes(specs: Sequence[FixedSpec], model: Any) -> list[Trajectory]:
    """This rank's share of ``specs`` (all of them in one process), scored by ``model``.

    Episode ``(task, n_p, n_g, ids, reward[, num_tool_calls])`` becomes a one-turn trajectory of task
    ``task-{task}`` (its group too): ``ids[:n_p]`` the prompt, ``ids[n_p:n_p + n_g]`` the trained completion,
    ``reward`` as its ``correct`` reward component.
    """
    import torch

    from ..agents.hf import sequence_logprobs
    from .distributed import shard_bounds

    rank, size = 0, 1
    if torch.distributed.is_initialized():
        rank, size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    a, b = shard_bounds(len(specs), rank, size)
    out = []
    for task, n_p, n_g, ids, reward, *calls in specs[a:b]:
        lp = sequence_logprobs(model, ids)
        mask = [0] * n_p + [1] * n_g
        out.append(Trajectory(env_id="fixed", task_id=f"task-{task}", token_ids=ids, loss_mask=mask,
                              logprobs=[x if m else 0.0 for x, m in zip(lp, mask)], turn_spans=[(n_p, n_p + n_g)],
                              reward=reward, reward_components={"correct": reward}, group=f"task-{task}",
                              num_tool_calls=calls[0] if calls else 0))
    return out
