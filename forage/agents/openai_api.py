"""OpenAIPolicy: any OpenAI-compatible chat endpoint (with tool calling) for evaluation.

It works at the message level, so its trajectories have messages, rewards and counts but no
token ids (there is nothing to train on). Tool calls returned in ``tool_calls`` are written back
in the env's own format (``env.format_call``) so the env parses them as it would a local
model's text; a reply without tool calls is passed on as plain text. Without server-side tools
(``use_tools=False``) the model writes calls as text: the request then carries the env's stop
strings, and the stop string the server cut off is put back so the env sees the complete call.
OpenAI's API takes at most 4 stop strings: a request sends the first :data:`MAX_API_STOPS` and the
reply is cut here at the earliest of all of them (an env with many XML tools has one stop per tool).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, Callable, Sequence

import httpx

from ..http_shards import ShardedAsyncClient
from .policy import PolicyError, SamplingParams
from .rollout import EnvSpec, RolloutConfig, TaskSpec, _EnvPool, _make_bar, end_through_env, env_stop_strings, release_env
from .trajectory import Trajectory

__all__ = ["OpenAIPolicy", "ChatRunner", "MAX_API_STOPS", "cut_at_stops"]

MAX_API_STOPS = 4
"""Stop strings OpenAI's chat completions accept in one request (more is a 400); the rest are applied client-side."""


def cut_at_stops(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """``text`` cut before the stop string that is complete first in it, and that stop (``(text, None)`` if none is in it).

    "Complete first" is what a server streaming tokens sees: the smallest end position (ties: the earliest start),
    so the text kept contains none of ``stops``. The stop string itself is dropped, as OpenAI drops it.
    """
    found = [(at + len(stop), at, stop) for stop in stops if stop and (at := text.find(stop)) >= 0]
    if not found:
        return text, None
    _, at, stop = min(found)
    return text[:at], stop


class OpenAIPolicy:
    """Chat completions from ``base_url`` (``.../v1``) for ``model``; the API key from ``$OPENAI_API_KEY``."""

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 300.0, use_tools: bool = True, retries: int = 3,
                 max_stops: int | None = MAX_API_STOPS) -> None:
        if max_stops is not None and max_stops < 0:
            raise ValueError(f"max_stops must be >= 0 or None (no limit), got {max_stops}")
        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        self.model = model
        self.use_tools = use_tools
        self.retries = retries
        self.max_stops = max_stops
        """Stop strings sent per request (None: all; vLLM takes any number); the others are cut here."""
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = ShardedAsyncClient(base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=10.0),
                                          headers=headers)  # httpx's pool gets slow with many requests in flight

    async def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                r = await (self._client.post(path, json=body) if body is not None else self._client.get(path))
            except httpx.TimeoutException as e:
                raise PolicyError(f"{self.base_url}{path} timed out") from e
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise PolicyError(f"{self.base_url} unreachable: {e}") from e
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if r.status_code in (429, 500, 502, 503) and attempt < self.retries:
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if r.status_code != 200:
                raise PolicyError(f"{self.base_url}{path} answered {r.status_code}: {r.text[:400]}")
            return r.json()
        raise PolicyError("unreachable")  # pragma: no cover

    async def model_name(self) -> str:
        """The model to ask (the first one the endpoint lists when none was given)."""
        if not self.model:
            self.model = (await self._post("/models"))["data"][0]["id"]
        return self.model

    async def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                   params: SamplingParams, stop: Sequence[str] | None = None) -> dict[str, Any]:
        """One assistant message (``content`` and maybe ``tool_calls``), its finish reason and stop string.

        Only the first ``max_stops`` of ``stop`` go to the server; the content is then cut at the earliest of all of
        them (:func:`cut_at_stops`), and a cut made here reports ``finish_reason="stop"`` and the ``stop_reason``.
        """
        stop = [s for s in (stop or ()) if s]
        body: dict[str, Any] = {"model": await self.model_name(), "messages": messages,
                                "max_tokens": params.max_tokens, "temperature": params.temperature,
                                "top_p": params.top_p}
        if params.seed is not None:
            body["seed"] = params.seed
        if tools and self.use_tools:
            body["tools"] = tools
        sent = stop if self.max_stops is None else stop[:self.max_stops]
        if sent:
            body["stop"] = sent
        data = await self._post("/chat/completions", body)
        try:
            choice = data["choices"][0]
            msg = choice["message"]
        except (KeyError, IndexError, TypeError) as e:
            raise PolicyError(f"malformed chat completion: {e}") from e
        usage = data.get("usage") or {}
        reply = {"content": msg.get("content") or "", "tool_calls": msg.get("tool_calls") or [],
                 "finish_reason": choice.get("finish_reason"), "completion_tokens": usage.get("completion_tokens", 0)}
        if "stop_reason" in choice:   # vLLM says which stop string matched (None: the end-of-turn token)
            reply["stop_reason"] = choice["stop_reason"]
        if self.max_stops is not None and len(stop) > self.max_stops:   # the stops the server was not given
            cut, matched = cut_at_stops(reply["content"], stop)
            if matched is not None:
                reply.update(content=cut, finish_reason="stop", stop_reason=matched)
        return reply

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


class ChatRunner:
    """Runs episodes with an :class:`OpenAIPolicy` (message level, no token ids)."""

    def __init__(self, policy: OpenAIPolicy, config: RolloutConfig | None = None) -> None:
        self.policy = policy
        self.config = config or RolloutConfig()

    @staticmethod
    def _restore_stop(env: Any, reply: dict[str, Any], stops: Sequence[str]) -> str:
        """The reply's text with the stop string the server cut off put back (the env must see whole calls)."""
        text = reply["content"]
        if reply.get("finish_reason") != "stop" or not stops or text.endswith(tuple(stops)):
            return text
        if "stop_reason" in reply:   # the server said which stop matched, if any
            said = reply["stop_reason"]
            return text + said if isinstance(said, str) and said in stops else text
        # OpenAI does not say: the stop that completes one more call is the one that was cut
        fmt, tools = getattr(env, "tool_format", None), getattr(env, "tools", None)
        if fmt is None or tools is None:
            return text
        have = len(fmt.parse(text, tools).calls)
        for s in stops:
            if len(fmt.parse(text + s, tools).calls) > have:
                return text + s
        return text

    def _action(self, env: Any, reply: dict[str, Any]) -> str:
        parts = [reply["content"]] if reply["content"] else []
        for call in reply["tool_calls"]:
            fn = call.get("function") or {}
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except json.JSONDecodeError:
                args = {"_raw": fn.get("arguments")}
            if not isinstance(args, dict):
                args = {"_raw": args}
            parts.append(env.format_call(fn.get("name", ""), **args))
        return "\n".join(parts)

    async def run_episode(self, env: Any, task: TaskSpec, index: int = 0) -> Trajectory:
        """One episode; never raises (errors go to ``Trajectory.error``)."""
        env = getattr(env, "unwrapped", env)
        c = self.config
        spec = getattr(env, "spec", None)
        traj = Trajectory(env_id=getattr(spec, "id", None) or type(env).__name__, task_id="",
                          seed=task if isinstance(task, int) else None)
        t_start = time.perf_counter()
        gen_tokens = 0
        try:
            obs, info = await (env.areset(options={"task_id": task}) if isinstance(task, str) else env.areset(seed=task))
            traj.task_id = str(info.get("task_id", task))
            tools = info.get("tools") if self.policy.use_tools else None
            system = env.system_message(with_tools=not tools)
            traj.messages = [{"role": "system", "content": system}, {"role": "user", "content": obs}]
            chat = list(traj.messages)
            # Calls written as text stop where the env's format says; server-side tool calls need no stops.
            stops = () if tools else (tuple(c.stop) if c.stop is not None else env_stop_strings(env, info))
            params = SamplingParams(max_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p,
                                    seed=None if c.seed is None else c.seed + index, stop=stops)
            while c.max_turns is None or traj.num_turns < c.max_turns:
                reply = await self.policy.chat(chat, tools, params, stop=stops)
                reply["content"] = self._restore_stop(env, reply, stops)
                gen_tokens += int(reply.get("completion_tokens") or 0)
                action = self._action(env, reply)
                traj.messages.append({"role": "assistant", "content": action})
                traj.num_turns += 1
                obs, reward, terminated, truncated, info = await env.astep(action)
                traj.step_rewards.append(float(reward))
                for k, v in (info.get("rewards") or {}).items():
                    traj.reward_components[k] = traj.reward_components.get(k, 0.0) + float(v)
                traj.num_tool_calls = int(info.get("num_tool_calls", 0))
                traj.messages.append({"role": "tool", "content": obs, "tool_calls": info.get("tool_calls") or [],
                                      "rewards": info.get("rewards") or {}, "errors": info.get("tool_errors") or []})
                if info.get("answer") is not None:
                    traj.answer = str(info["answer"])
                # Continue the chat in plain messages (results as user turns: works with any server).
                chat.append({"role": "assistant", "content": action})
                chat.append({"role": "user", "content": obs})
                if terminated or truncated:
                    traj.terminated, traj.truncated = bool(terminated), bool(truncated)
                    traj.stop_reason = info.get("stop_reason")
                    break
            else:
                await end_through_env(env, traj, "max_turns")
        except Exception as e:
            traj.error, traj.stop_reason = f"{type(e).__name__}: {e}", "error"
            await release_env(env)
        traj.reward = float(sum(traj.step_rewards))
        traj.metadata["completion_tokens"] = gen_tokens
        traj.timings = {"total_s": round(time.perf_counter() - t_start, 4)}
        return traj

    async def run(self, env: EnvSpec, tasks: Sequence[TaskSpec] | int, group_size: int = 1,
                  progress: bool | Any = False, on_done: Callable[[Trajectory], Any] | None = None) -> list[Trajectory]:
        """Same contract as :meth:`RolloutEngine.run`."""
        if isinstance(tasks, int):
            tasks = list(range(tasks))
        jobs = [(t, g) for t in tasks for g in range(group_size)]
        pool = _EnvPool(env, dict(self.config.env_kwargs))
        sem = asyncio.Semaphore(max(1, self.config.concurrency))
        bar = _make_bar(progress, len(jobs))

        async def one(i: int, task: TaskSpec, g: int) -> Trajectory:
            async with sem:
                e = pool.get()
                try:
                    t = await self.run_episode(e, task, i)
                finally:
                    pool.put(e)
            t.group, t.metadata["group_index"] = str(task), g
            if bar is not None:
                bar.update(1)
            if on_done is not None:
                on_done(t)
            return t

        try:
            return list(await asyncio.gather(*(one(i, t, g) for i, (t, g) in enumerate(jobs))))
        finally:
            await pool.close()
            if bar is not None and progress is True:
                bar.close()
