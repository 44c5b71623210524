"""Roll out a Forage env in Ray actors (each with its own policy and env pool), and check it against one process.

    python examples/ray_rollout.py --ray local --tasks 16 --group-size 4      # a private local Ray instance
    python examples/ray_rollout.py --ray auto --actors 16                      # the cluster this node belongs to
    python examples/ray_rollout.py --ray local --policy hf:PATH --check        # a model; --check compares

The default policy is the env's scripted oracle (no model needed); ``--policy hf:PATH`` builds an
``HFPolicy`` from a model folder inside each actor.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

import forage  # noqa: F401
from forage.agents import RolloutConfig, RolloutEngine


def make_tokenizer(path: str):
    """The tokenizer (its chat template drives the rollout), built where it is needed."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def make_policy(policy: str, env_id: str, tokenizer_path: str):
    """A policy, built inside each actor: ``oracle`` (scripted) or ``hf:PATH``."""
    import gymnasium as gym

    from forage.agents import HFPolicy, ScriptedPolicy

    if policy.startswith("hf:"):
        return HFPolicy.from_pretrained(policy[3:])
    return ScriptedPolicy.from_oracle(gym.make(env_id).unwrapped, make_tokenizer(tokenizer_path))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray", default="local", help="'local' (start a private instance), 'auto', or an address")
    parser.add_argument("--env", default="forage/LookupQA-v0")
    parser.add_argument("--policy", default="oracle", help="'oracle' or hf:PATH")
    parser.add_argument("--tasks", type=int, default=16, help="reset seeds 0..N-1")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local instance")
    parser.add_argument("--seed", type=int, default=0, help="base sampling seed (episode i uses seed + i)")
    parser.add_argument("--check", action="store_true", help="also run in one process and compare trajectories")
    args = parser.parse_args(argv)

    import ray

    from forage.agents.models import resolve_model
    from forage.agents.ray_rollout import RayRolloutEngine

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # ship the factories to the actors
    tok_path = args.policy[3:] if args.policy.startswith("hf:") else resolve_model("default")
    policy_factory = partial(make_policy, args.policy, args.env, tok_path)
    tokenizer_factory = partial(make_tokenizer, tok_path)
    cfg = RolloutConfig(seed=args.seed, concurrency=16)
    seeds = list(range(args.tasks))

    engine = RayRolloutEngine(policy_factory, tokenizer_factory, cfg, num_actors=args.actors, address=args.ray,
                              num_cpus=args.num_cpus)
    try:
        t0 = time.perf_counter()
        trajs = engine.run_sync(args.env, seeds, group_size=args.group_size)
        elapsed = time.perf_counter() - t0
    finally:
        engine.shutdown()
    success = sum(t.reward_components.get("correct", 0.0) for t in trajs) / max(1, len(trajs))
    print(f"{len(trajs)} episodes in {elapsed:.1f} s on {args.actors} Ray actors; success {success:.3f}")
    result = {"episodes": len(trajs), "success": success, "same_as_single_process": None}
    if args.check:
        single = RolloutEngine(policy_factory(), tokenizer_factory(), cfg).run_sync(args.env, seeds, args.group_size)
        same = all(a.token_ids == b.token_ids and a.reward == b.reward for a, b in zip(single, trajs))
        print(f"same trajectories as one process: {same}")
        result["same_as_single_process"] = same
    return result


if __name__ == "__main__":
    main()
