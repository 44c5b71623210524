"""OpenEnv both ways: OpenEnv's own ``GenericEnvClient`` plays a Forage env served with OpenEnv's protocol,
then ``OpenEnvGymEnv`` drives the same server through the plain Gymnasium API.

    python examples/openenv_env.py                                        # in-process server on a free port
    forage serve env forage/LookupQA-1hop-v0 --protocol openenv --port 8010   # the same server, standalone
"""

from __future__ import annotations

import argparse
import json

import gymnasium as gym

import forage  # noqa: F401
from forage.asgi_thread import ThreadedASGIServer
from forage.integrations.openenv import OpenEnvGymEnv, create_openenv_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="forage/LookupQA-1hop-v0")
    parser.add_argument("--task", type=int, default=0)
    args = parser.parse_args()
    from openenv.core.generic_client import GenericEnvClient

    env = gym.make(args.env).unwrapped
    task = env.tasks[args.task]
    env.close()
    with ThreadedASGIServer(create_openenv_app(args.env), lifespan="on") as server:
        with GenericEnvClient(base_url=server.url) as client:        # WebSocket session: one env on the server
            first = client.reset(task_id=task.id)
            print("task:", first.observation["text"])
            step = client.step({"tool": "lookup", "arguments": {"name": task.metadata["path"][0]}})
            print("lookup:", step.observation["text"].splitlines()[0], "...")
            step = client.step({"tool": "answer", "arguments": {"answer": str(task.answer)}})
            print("answer:", step.observation["text"], "reward", step.reward, "done", step.done)

        gym_env = OpenEnvGymEnv(server.url)            # text actions in the env's own tool-call format
        obs, info = gym_env.reset(options={"task_id": task.id})
        call = "<tool_call>\n" + json.dumps({"name": "answer", "arguments": {"answer": str(task.answer)}}) + "\n</tool_call>"
        obs, reward, terminated, truncated, info = gym_env.step(call)
        print("gym over OpenEnv:", obs, reward, terminated)
        gym_env.close()


if __name__ == "__main__":
    main()
