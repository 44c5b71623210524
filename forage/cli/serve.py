"""`forage serve ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("policy")
def serve_policy(
    model: str = typer.Option("default", "--model", help="Model path or id (default: the embedded SmolLM2)."),
    port: int = typer.Option(8000, "--port"),
    dtype: str = typer.Option("bfloat16", "--dtype"),
    max_model_len: int = typer.Option(4096, "--max-model-len"),
    tool_call_parser: str = typer.Option("auto", "--tool-call-parser", help="vLLM tool-call parser: 'auto' (from the "
                                         "model's chat template: hermes for SmolLM2/Qwen), 'none', or a parser name."),
    chat_template: str = typer.Option(None, "--chat-template", help="A chat template file (default: the model's, or "
                                      "Forage's Hermes ChatML one when the model's ignores tools)."),
) -> None:
    """Start a vLLM OpenAI-compatible server for the policy model (tool calls parsed) and wait until it is healthy."""
    import signal
    import time

    from forage.agents.models import resolve_model
    from forage.agents.vllm_server import VLLMServer

    path = resolve_model(model)
    try:
        server = VLLMServer(path, port=port, dtype=dtype, max_model_len=max_model_len,
                            tool_call_parser=None if tool_call_parser == "none" else tool_call_parser,
                            chat_template=chat_template)
    except ValueError as e:
        typer.echo(f"error: {e}; or pass --tool-call-parser none", err=True)
        raise typer.Exit(2)
    tools = (f"tool calls parsed by '{server.tool_call_parser}'" if server.tool_call_parser else "no tool-call parsing")
    typer.echo(f"starting vLLM for {path} on {server.url}, {tools} (30-120 s on CPU)...", err=True)
    try:
        server.start(wait=True)
        typer.echo(f"ready: {server.url}  (policy spec: vllm:{server.url}); Ctrl-C stops it", err=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it like Ctrl-C
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(1.0)
        typer.echo("the vLLM server exited", err=True)
    except (RuntimeError, TimeoutError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command("retriever")
def serve_retriever(
    index: str = typer.Option("default", "--index", help="An index folder from `forage index build`, or 'default'."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8001, "--port"),
    method: str = typer.Option("dense", "--method", help="Default search method: dense, bm25 or hybrid."),
    topk: int = typer.Option(3, "--topk", help="Default top-k when a request gives none."),
    max_batch: int = typer.Option(256, "--max-batch", help="Most queries per encoder+FAISS call."),
    wait_ms: float = typer.Option(3.0, "--wait-ms", help="How long a request waits to be batched with others."),
    cache_size: int = typer.Option(10000, "--cache-size", help="Query embeddings kept in the LRU cache."),
) -> None:
    """Serve an index over HTTP: Search-R1's POST /retrieve (batched, cached) and GET /health."""
    from forage.sandboxes.retrieval import Retriever, load_default_retriever
    from forage.sandboxes.retrieval.service import ServiceConfig, serve

    try:
        retriever = load_default_retriever(log=lambda m: typer.echo(m, err=True)) if index == "default" else Retriever.load(index)
    except (OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    cfg = ServiceConfig(default_topk=topk, method=method, max_batch=max_batch, wait_ms=wait_ms, cache_size=cache_size)
    typer.echo(f"retriever ready on http://{host}:{port} ({len(retriever.docs)} docs, {retriever.meta.kind}); "
               "POST /retrieve, GET /health; Ctrl-C stops it", err=True)
    serve(retriever, host, port, cfg)


@app.command("env")
def serve_env_cmd(
    env_id: str = typer.Argument(..., help="A registered env id, e.g. forage/LookupQA-v0 (see `forage envs`)."),
    kwarg: list[str] = typer.Option([], "--kwarg", help="Env constructor kwarg K=V (V parsed as JSON if it can be); repeatable."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8010, "--port"),
    session_timeout: float = typer.Option(600.0, "--session-timeout", help="Seconds of idleness after which a session is closed."),
    max_sessions: int = typer.Option(1024, "--max-sessions", help="Most sessions held at once."),
    allow_client_kwargs: bool = typer.Option(False, "--allow-client-kwargs", help="Let clients pass env kwargs (trusted networks only)."),
    protocol: str = typer.Option("forage", "--protocol", help="'forage' (JSON sessions) or 'openenv' (OpenEnv's "
                                 "HTTP/WebSocket protocol, for OpenEnv's EnvClient; needs openenv-core)."),
) -> None:
    """Serve a registered env over HTTP as JSON sessions (create, reset, step, close; idle sessions reaped)."""
    from forage.envs.server import EnvServerConfig, serve_env

    if protocol not in ("forage", "openenv"):
        typer.echo(f"error: --protocol must be 'forage' or 'openenv', got {protocol!r}", err=True)
        raise typer.Exit(2)
    if protocol == "openenv":
        import uvicorn

        try:
            from forage.integrations.openenv import create_openenv_app

            app_ = create_openenv_app(env_id, _parse_kwargs(kwarg), max_concurrent_envs=max_sessions,
                                      session_timeout=session_timeout)
        except Exception as e:   # unknown id, bad kwargs, openenv-core missing
            typer.echo(f"error: {type(e).__name__}: {e}", err=True)
            raise typer.Exit(2)
        typer.echo(f"serving {env_id} with OpenEnv's protocol on http://{host}:{port} (WebSocket /ws, POST /reset, "
                   "/step, GET /state, /schema, /health); Ctrl-C stops it", err=True)
        uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)
        return

    kwargs = _parse_kwargs(kwarg)
    cfg = EnvServerConfig(env_id, kwargs, session_timeout=session_timeout, max_sessions=max_sessions,
                          allow_client_kwargs=allow_client_kwargs)
    typer.echo(f"serving {env_id} on http://{host}:{port} (WebSocket /ws for pipelined sessions; POST /sessions, "
               "/sessions/ID/reset|step, DELETE /sessions/ID, GET /health); Ctrl-C stops it", err=True)
    try:
        serve_env(cfg, host, port)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)


@app.command("mcp")
def serve_mcp_cmd(
    env_id: str = typer.Argument(..., help="A registered env id, e.g. forage/LookupQA-v0 (see `forage envs`)."),
    kwarg: list[str] = typer.Option([], "--kwarg", help="Env constructor kwarg K=V (V parsed as JSON if it can be); repeatable."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8030, "--port"),
    session_timeout: float = typer.Option(600.0, "--session-timeout", help="Seconds of idleness after which an episode is closed."),
    max_sessions: int = typer.Option(256, "--max-sessions", help="Most episodes held at once."),
) -> None:
    """Serve an env's tools as an MCP server (Streamable HTTP at /mcp; one episode per MCP session, tool `reset`)."""
    from forage.integrations.mcp import MCPEnvConfig, serve_mcp

    kwargs = _parse_kwargs(kwarg)
    try:
        cfg = MCPEnvConfig(env_id, kwargs, session_timeout=session_timeout, max_sessions=max_sessions)
        typer.echo(f"MCP server for {env_id} on http://{host}:{port}/mcp (tools: reset + the env's; GET /health); "
                   "Ctrl-C stops it", err=True)
        serve_mcp(cfg, host, port)
    except (ValueError, TypeError, ImportError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    except Exception as e:  # gym's unknown-id errors and the like
        if type(e).__module__.startswith("gymnasium"):
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        raise


def _parse_kwargs(items: list[str]) -> dict:
    import json

    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            typer.echo(f"error: --kwarg wants K=V, got {item!r}", err=True)
            raise typer.Exit(2)
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


@app.command("site")
def serve_site_cmd(
    corpus: str = typer.Option("default", "--corpus", help="A JSONL corpus (id, title, text), 'default' (the wiki "
                               "summaries) or 'none' (static folder only)."),
    static: str = typer.Option(None, "--static", help="A folder of files to serve (under /static, or at / with --corpus none)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8020, "--port"),
    name: str = typer.Option("Forage Wiki", "--name", help="The site's name in page titles."),
) -> None:
    """Serve a corpus as a hyperlinked web site (articles, /search?q=, /index topic pages) and/or a static folder."""
    from pathlib import Path

    from forage.sandboxes.web.server import load_site, serve_site

    if static is not None and not Path(static).is_dir():
        typer.echo(f"error: {static} is not a folder", err=True)
        raise typer.Exit(2)
    if corpus == "none" and static is None:
        typer.echo("error: give --static with --corpus none", err=True)
        raise typer.Exit(2)
    try:
        site = None if corpus == "none" else load_site(corpus, name=name)
    except (OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    what = f"{len(site.docs)} articles" if site is not None else f"static files of {static}"
    typer.echo(f"site ready on http://{host}:{port} ({what}); Ctrl-C stops it", err=True)
    serve_site(site, static, host, port)
