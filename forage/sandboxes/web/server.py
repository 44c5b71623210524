"""The HTTP side of the site: a Starlette app (corpus pages and/or a static folder) and a threaded server."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ...asgi_thread import ThreadedASGIServer
from .site import Site

__all__ = ["create_site_app", "SiteServer", "shared_site", "cached_site", "serve_site", "load_site"]


def create_site_app(site: Site | None = None, static_dir: str | Path | None = None) -> Any:
    """A Starlette app: ``/``, ``/index[/T]``, ``/wiki/SLUG``, ``/search?q=`` for ``site``, and a static folder.

    The static folder is served under ``/static`` next to a corpus site, or at ``/`` without one.
    """
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, PlainTextResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    if site is None and static_dir is None:
        raise ValueError("give a corpus site, a static folder, or both")
    routes: list[Any] = [Route("/health", lambda request: PlainTextResponse("ok"))]

    if site is not None:
        def not_found(what: str) -> HTMLResponse:
            return HTMLResponse(site._page("Not found", f"<h1>Not found</h1><p>{what}</p>"), status_code=404)

        async def home(request: Any) -> HTMLResponse:
            return HTMLResponse(site.home_html())

        async def index(request: Any) -> HTMLResponse:
            topic = request.path_params.get("topic")
            try:
                page = int(request.query_params.get("page", "1"))
            except ValueError:
                page = 1
            body = site.index_html(topic, page)
            return HTMLResponse(body) if body is not None else not_found("No such topic.")

        async def article(request: Any) -> HTMLResponse:
            i = site.find(request.path_params["slug"])
            return HTMLResponse(site.article_html(i)) if i is not None else not_found("No article has this name.")

        async def search(request: Any) -> HTMLResponse:
            return HTMLResponse(site.search_html(request.query_params.get("q", "")[:500]))

        routes += [Route("/", home), Route("/index", index), Route("/index/{topic}", index),
                   Route("/wiki/{slug:path}", article), Route("/search", search)]
        if static_dir is not None:
            routes.append(Mount("/static", StaticFiles(directory=str(static_dir), html=True)))
    else:
        routes.append(Mount("/", StaticFiles(directory=str(static_dir), html=True)))
    return Starlette(routes=routes)


class SiteServer(ThreadedASGIServer):
    """The site on 127.0.0.1 in a background uvicorn thread; ``url`` is its base, ``stop()`` shuts it down."""

    what = "the site"

    def __init__(self, site: Site | None = None, static_dir: str | Path | None = None, port: int = 0,
                 host: str = "127.0.0.1", app: Any = None) -> None:
        self.site = site
        super().__init__(app if app is not None else create_site_app(site, static_dir), host=host, port=port,
                         thread_name="forage-site")

    @property
    def host_port(self) -> str:
        """``host:port``, the form the browser's allow-list takes."""
        return f"{self.host}:{self.port}"


def load_site(corpus: str | None = None, name: str = "Forage Wiki") -> Site:
    """A :class:`Site` of a corpus: ``None``/``"default"`` = the wiki summaries, or a JSONL path."""
    from ..retrieval.corpus import load_corpus

    return Site(load_corpus(corpus if corpus not in (None, "default") else None), name=name)


_SHARED: dict[str, SiteServer] = {}
_SITES: dict[str, Site] = {}
_SHARED_LOCK = threading.Lock()


def cached_site(corpus: str | None = None) -> Site:
    """A process-wide :class:`Site` of ``corpus`` (loaded once; envs and the shared server use it)."""
    key = str(corpus or "default")
    with _SHARED_LOCK:
        if key not in _SITES:
            _SITES[key] = load_site(corpus)
        return _SITES[key]


def shared_site(corpus: str | None = None) -> SiteServer:
    """A process-wide site server for ``corpus``, started on first use (envs share it; it lives until exit)."""
    key = str(corpus or "default")
    site = cached_site(corpus)
    with _SHARED_LOCK:
        server = _SHARED.get(key)
        if server is None or not server._thread.is_alive():
            server = SiteServer(site).start()
            _SHARED[key] = server
        return server


def serve_site(site: Site | None, static_dir: str | Path | None, host: str = "127.0.0.1", port: int = 8020) -> None:
    """Serve in the foreground until interrupted (``forage serve site``)."""
    import uvicorn

    uvicorn.run(create_site_app(site, static_dir), host=host, port=port, log_level="warning", access_log=False)
