"""Policy specs on the command line: one string names a backend and where it lives.

=========================  ===========================================================
``vllm-local[:MODEL]``     start a vLLM server for MODEL (default: the embedded SmolLM2)
``vllm:URL[#TOKENIZER]``   a running vLLM server (tokenizer: the served model's path)
``hf[:PATH]``              transformers in-process (CPU), batched
``openai:URL[#MODEL]``     any OpenAI-compatible chat endpoint (message level, no tokens)
``scripted``               the env's oracle (``oracle_actions``), for tests and demos
=========================  ===========================================================
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from .models import resolve_model
from .rollout import RolloutConfig, RolloutEngine

__all__ = ["PolicyRunner", "open_policy", "DEFAULT_SPEC"]

DEFAULT_SPEC = "vllm-local"


@dataclass
class PolicyRunner:
    """Something with ``run(env, tasks, group_size, progress=, on_done=)`` plus a description."""

    runner: Any
    description: str
    info: dict[str, Any] = field(default_factory=dict)

    async def run(self, env: Any, tasks: Any, group_size: int = 1, **kwargs: Any) -> Any:
        """Delegate to the engine or chat runner."""
        return await self.runner.run(env, tasks, group_size, **kwargs)


def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _vllm_target(rest: str) -> tuple[str, str]:
    """``URL[#TOKENIZER]`` of a ``vllm:`` spec."""
    url, _, tok_path = rest.partition("#")
    if not url:
        raise ValueError("vllm:URL needs the server URL, e.g. vllm:http://127.0.0.1:8000")
    return url, tok_path


# -- factories that build a policy where it will run (in this process or inside a Ray actor) -------------
def _vllm_client(url: str) -> Any:
    from .vllm_server import VLLMServerPolicy

    return VLLMServerPolicy(url)


def _hf_policy(model: str, max_batch: int) -> Any:
    from .hf import HFPolicy

    return HFPolicy.from_pretrained(model, max_batch=max_batch)


def _scripted_policy(env_id: str, env_kwargs: dict[str, Any], tokenizer_path: str) -> Any:
    import gymnasium as gym

    import forage  # noqa: F401 - registers the envs (inside a fresh Ray worker too)

    from .scripted import ScriptedPolicy

    env = gym.make(env_id, disable_env_checker=True, **env_kwargs).unwrapped
    if not hasattr(env, "oracle_actions"):
        raise ValueError(f"{env_id} has no oracle_actions(task); the scripted policy cannot play it")
    return ScriptedPolicy.from_oracle(env, _tokenizer(tokenizer_path))


@contextlib.asynccontextmanager
async def _local_vllm_server(model: str, config: RolloutConfig, log: Callable[[str], None],
                             server_log: Path | None) -> AsyncIterator[str]:
    """Start a vLLM server for ``model`` and yield its URL; it is stopped on exit."""
    import asyncio

    from .vllm_server import VLLMServer

    log(f"starting a vLLM server for {model} (30-120 s on CPU)...")
    server = VLLMServer(model, max_model_len=max(config.max_context, 2048), log_path=server_log)
    try:
        await asyncio.to_thread(server.start)
        yield server.url
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def open_policy(spec: str | None, env_id: str, config: RolloutConfig,
                      log: Callable[[str], None] = print, server_log: Path | None = None,
                      ray: str | None = None, ray_actors: int = 2) -> AsyncIterator[PolicyRunner]:
    """Build the runner a spec names; servers it starts are stopped on exit.

    With ``ray`` (``"local"``, ``"auto"`` or a cluster address) the episodes run in ``ray_actors`` Ray
    actors, each with its own env pool and its own copy of the policy (a client of the one vLLM server,
    an HF model, or the scripted oracle); the trajectories are the same as in one process.
    """
    spec = spec or DEFAULT_SPEC
    kind, _, rest = spec.partition(":")
    if ray is not None:
        async with _open_ray_policy(kind, rest, env_id, config, log, server_log, ray, ray_actors) as runner:
            yield runner
        return
    if kind == "vllm-local":
        from .vllm_server import VLLMServerPolicy

        model = resolve_model(rest or None)
        async with _local_vllm_server(model, config, log, server_log) as url:
            policy = VLLMServerPolicy(url)
            try:
                yield PolicyRunner(RolloutEngine(policy, _tokenizer(model), config), f"vllm-local:{model}",
                                   {"model": model, "backend": "vllm"})
            finally:
                await policy.aclose()
    elif kind == "vllm":
        from .vllm_server import VLLMServerPolicy

        url, tok_path = _vllm_target(rest)
        policy = VLLMServerPolicy(url)
        try:
            model = await policy.model_name()
            tok = _tokenizer(tok_path or model)
            yield PolicyRunner(RolloutEngine(policy, tok, config), f"vllm:{url}", {"model": model, "backend": "vllm"})
        finally:
            await policy.aclose()
    elif kind == "hf":
        model = resolve_model(rest or None)
        policy = _hf_policy(model, max(1, min(config.concurrency, 32)))
        yield PolicyRunner(RolloutEngine(policy, policy.tokenizer, config), f"hf:{model}", {"model": model, "backend": "hf"})
    elif kind == "openai":
        from .openai_api import ChatRunner, OpenAIPolicy

        url, _, model = rest.partition("#")
        if not url:
            raise ValueError("openai:URL#MODEL needs the endpoint URL")
        policy = OpenAIPolicy(url, model or None)
        try:
            yield PolicyRunner(ChatRunner(policy, config), f"openai:{url}#{model}", {"model": model, "backend": "openai"})
        finally:
            await policy.aclose()
    elif kind == "scripted":
        tok_path = resolve_model(rest or None)
        policy = _scripted_policy(env_id, dict(config.env_kwargs), tok_path)
        yield PolicyRunner(RolloutEngine(policy, _tokenizer(tok_path), config), "scripted", {"backend": "scripted"})
    else:
        raise ValueError(_UNKNOWN.format(spec=spec))


_UNKNOWN = ("unknown policy spec {spec!r}: use vllm-local[:MODEL], vllm:URL, hf[:PATH], openai:URL#MODEL or "
            "scripted")


@contextlib.asynccontextmanager
async def _open_ray_policy(kind: str, rest: str, env_id: str, config: RolloutConfig, log: Callable[[str], None],
                           server_log: Path | None, address: str, actors: int) -> AsyncIterator[PolicyRunner]:
    """The Ray variant of :func:`open_policy`: factories shipped to actors, one engine over them."""
    from functools import partial

    if actors < 1:
        raise ValueError("--ray-actors must be >= 1")
    try:
        import ray as ray_module
    except ImportError as e:
        raise RuntimeError("--ray needs Ray: pip install 'forage-gym[ray]'") from e
    async with contextlib.AsyncExitStack() as stack:
        if kind == "vllm-local":
            model = resolve_model(rest or None)
            url = await stack.enter_async_context(_local_vllm_server(model, config, log, server_log))
            make_policy, tok_path, desc, backend = partial(_vllm_client, url), model, f"vllm-local:{model}", "vllm"
        elif kind == "vllm":
            url, tok_path = _vllm_target(rest)
            probe = _vllm_client(url)
            try:
                model = await probe.model_name()
            finally:
                await probe.aclose()
            tok_path = tok_path or model
            make_policy, desc, backend = partial(_vllm_client, url), f"vllm:{url}", "vllm"
        elif kind == "hf":
            model = tok_path = resolve_model(rest or None)
            make_policy = partial(_hf_policy, model, max(1, min(config.concurrency, 32)))
            desc, backend = f"hf:{model}", "hf"
        elif kind == "scripted":
            model, tok_path = None, resolve_model(rest or None)
            make_policy = partial(_scripted_policy, env_id, dict(config.env_kwargs), tok_path)
            desc, backend = "scripted", "scripted"
        elif kind == "openai":
            raise ValueError("openai:URL policies run at message level and are not spread over Ray; "
                             "drop --ray (the endpoint itself is the thing to scale)")
        else:
            raise ValueError(_UNKNOWN.format(spec=f"{kind}:{rest}" if rest else kind))

        from .ray_rollout import RayRolloutEngine

        started_ray = not ray_module.is_initialized()
        log(f"starting {actors} Ray rollout actors ({'a private local Ray instance' if address == 'local' else address})...")
        import asyncio
        import os

        # a private instance gets a logical CPU per actor at least, so every actor gets placed
        num_cpus = max(os.cpu_count() or 1, actors) if address == "local" else None
        engine = await asyncio.to_thread(RayRolloutEngine, make_policy, partial(_tokenizer, tok_path), config,
                                         num_actors=actors, address=address, num_cpus=num_cpus)
        try:
            yield PolicyRunner(engine, f"{desc} on {actors} Ray actors",
                               {"model": model, "backend": backend, "ray": address, "ray_actors": actors})
        finally:
            await asyncio.to_thread(engine.shutdown)
            if started_ray:
                ray_module.shutdown()
