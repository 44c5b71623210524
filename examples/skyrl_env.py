"""A Forage env through SkyRL-gym's registry and contract: ``skyrl_gym.make``, ``init``, ``step``, ``get_metrics``.

    python examples/skyrl_env.py                   # one oracle episode of forage/LookupQA-1hop-v0, SkyRL-style loop
"""

from __future__ import annotations

import argparse
import json

import skyrl_gym

from forage.integrations.skyrl import register_skyrl_envs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="forage/LookupQA-1hop-v0")
    parser.add_argument("--task", type=int, default=0)
    args = parser.parse_args()

    register_skyrl_envs([args.env])
    env = skyrl_gym.make(args.env, env_config={"env_kwargs": {}}, extras={"seed": args.task})
    conversation, meta = env.init()
    task = next(t for t in env.env.tasks if t.id == meta["task_id"])
    actions = ["<tool_call>\n" + json.dumps({"name": "lookup", "arguments": {"name": task.metadata["path"][0]}}) + "\n</tool_call>",
               "<tool_call>\n" + json.dumps({"name": "answer", "arguments": {"answer": str(task.answer)}}) + "\n</tool_call>"]
    total = 0.0
    for action in actions:                          # what SkyRL's generator does with the model's text
        out = env.step(action)
        conversation += [{"role": "assistant", "content": action}, *out["observations"]]
        total += out["reward"]
        if out["done"]:
            break
    print(f"{len(conversation)} messages, reward {total:g}, metrics {env.get_metrics()}")
    env.close()


if __name__ == "__main__":
    main()
