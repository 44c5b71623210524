"""A Forage env's tools over MCP, both ways: the official ``mcp`` client plays an episode on ``forage serve mcp``,
then ``forage.tools.mcp_tools`` plugs that MCP server's tools into a new Forage ToolEnv.

    python examples/mcp_env.py                     # serves forage/LookupQA-1hop-v0 on a free port, plays one episode
    forage serve mcp forage/LookupQA-1hop-v0       # the same server, standalone (http://127.0.0.1:8030/mcp)
"""

from __future__ import annotations

import argparse
import asyncio

import gymnasium as gym

import forage  # noqa: F401
from forage.asgi_thread import ThreadedASGIServer
from forage.integrations.mcp import MCPEnvConfig, create_mcp_app


async def play_with_the_mcp_client(url: str, env_id: str, task_index: int) -> float:
    """Reset, look the entity up and answer (an oracle), through the official MCP client."""
    from mcp import Client

    env = gym.make(env_id).unwrapped
    task = env.tasks[task_index]
    env.close()
    async with Client(url, mode="legacy") as client:       # a session-ful client: one episode per MCP session
        print("tools:", [t.name for t in (await client.list_tools()).tools])
        print("task:", (await client.call_tool("reset", {"task_id": task.id})).content[0].text)
        looked = await client.call_tool("lookup", {"name": task.metadata["path"][0]})
        print("lookup:", looked.content[0].text.splitlines()[0], "...")
        done = await client.call_tool("answer", {"answer": str(task.answer)})
        print("answer:", done.content[0].text, done.structured_content)
        return float(done.structured_content["episode_reward"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="forage/LookupQA-1hop-v0")
    parser.add_argument("--task", type=int, default=0)
    args = parser.parse_args()

    with ThreadedASGIServer(create_mcp_app(MCPEnvConfig(args.env)), lifespan="on") as server:
        url = server.url + "/mcp"
        reward = asyncio.run(play_with_the_mcp_client(url, args.env, args.task))
        print(f"episode reward over MCP: {reward:g}")

    # the other way: any MCP server's tools as Forage tools (here one built with the MCP SDK itself)
    from mcp.server.mcpserver import MCPServer

    from forage.envs import Task, ToolEnv
    from forage.envs.base import answer_tool
    from forage.tools import mcp_tools

    calc = MCPServer("calc")

    @calc.tool()
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    with ThreadedASGIServer(calc.streamable_http_app(), lifespan="on") as server:
        env = ToolEnv([Task("t", "What is 37 * 43?", "1591")], [*mcp_tools(server.url + "/mcp"), answer_tool()],
                      score_fn=lambda ep: {"correct": float(ep.answer == ep.task.answer)})
        env.reset(seed=0)
        obs, *_ = env.step(env.format_call("multiply", a=37, b=43))
        print("ToolEnv with an MCP server's tool:", obs.replace("\n", " "))
        obs, reward, terminated, *_ = env.step(env.format_call("answer", answer="1591"))
        print("reward", reward, "terminated", terminated)
        env.close()


if __name__ == "__main__":
    main()
