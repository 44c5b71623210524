"""Fixtures shared by the web tests: a tiny linked corpus and its live site, a hostile server, a silent server."""

from __future__ import annotations

import json
import socket

import pytest

# Links (first mention of another title): Volcano -> Lava, Mountain; Lava -> Volcano, Basalt; Mountain -> Glacier;
# Glacier -> Mountain; Basalt -> Iron; Iron -> Steel; Steel -> Iron, Bridge; Bridge -> nothing.
# Shortest paths from Volcano: Lava 1, Mountain 1, Basalt 2, Glacier 2, Iron 3, Steel 4, Bridge 5.
WEB_DOCS = [
    ("Volcano", "A volcano is a rupture in the crust of a planet that lets hot lava and ash escape. "
                "Many a mountain began as a volcano."),
    ("Lava", "Lava is molten rock expelled by a volcano during an eruption; it cools into basalt."),
    ("Mountain", "A mountain is an elevated landform that rises above its surroundings; a glacier may carve it."),
    ("Glacier", "A glacier is a persistent body of dense ice that moves slowly and can carve a mountain valley."),
    ("Basalt", "Basalt is a dark, fine-grained igneous rock rich in magnesium and iron."),
    ("Iron", "Iron is a chemical element with symbol Fe, the main ingredient of steel."),
    ("Steel", "Steel is an alloy of iron and carbon with high tensile strength, used to build a bridge."),
    ("Bridge", "A bridge is a structure built to span a physical obstacle such as a body of water, valley or road. "
               + " ".join(f"Sentence {i} about spans, girders, cables and the loads that they carry." for i in range(40))
               + " The longest suspension spans exceed two kilometres."),
]
DISTANCES_FROM_VOLCANO = {"Volcano": 0, "Lava": 1, "Mountain": 1, "Basalt": 2, "Glacier": 2, "Iron": 3, "Steel": 4,
                          "Bridge": 5}


@pytest.fixture(scope="session")
def web_corpus(tmp_path_factory):
    """A JSONL corpus of 8 articles whose mentions form a known link graph."""
    path = tmp_path_factory.mktemp("webcorpus") / "web.jsonl"
    path.write_text("\n".join(json.dumps({"id": t, "title": t, "text": x}) for t, x in WEB_DOCS) + "\n")
    return path


@pytest.fixture(scope="session")
def web_site(web_corpus):
    """The tiny corpus served on 127.0.0.1 (the process-wide shared server, as the envs use it)."""
    from forage.sandboxes.web import shared_site

    return shared_site(str(web_corpus))


def _hostile_app():
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def ok(request):
        r = HTMLResponse('<html><head><title>OK page</title></head><body><h1>Fine</h1>'
                         '<p>See <a href="/ok2">the second page</a> and <a href="mailto:x@y">mail</a>.</p></body></html>')
        r.set_cookie("session", request.query_params.get("v", "abc"))
        return r

    async def cookie(request):
        return HTMLResponse(f"<p>cookie={request.cookies.get('session', 'none')}</p>")

    async def big(request):
        async def gen():
            chunk = b"<p>" + b"x" * (1 << 20) + b"</p>"
            for _ in range(50):
                yield chunk
        return StreamingResponse(gen(), media_type="text/html")

    async def big_declared(request):
        return Response(b"", headers={"content-length": str(50 << 20), "content-type": "text/html"})

    routes = [
        Route("/ok", ok), Route("/ok2", lambda r: HTMLResponse("<title>Second</title><p>two</p>")),
        Route("/cookie", cookie),
        Route("/redirect-out", lambda r: RedirectResponse("http://evil.example.com/steal", 302)),
        Route("/redirect-metadata", lambda r: RedirectResponse("http://169.254.169.254/latest/meta-data/", 302)),
        Route("/redirect-file", lambda r: RedirectResponse("file:///etc/passwd", 302)),
        Route("/redirect-loop", lambda r: RedirectResponse("/redirect-loop", 302)),
        Route("/redirect-ok", lambda r: RedirectResponse("/ok?v=redirected", 302)),
        Route("/big", big), Route("/big-declared", big_declared),
        Route("/binary", lambda r: Response(b"\x89PNG\r\n\x1a\n" + b"\0" * 100, media_type="image/png")),
        Route("/plain", lambda r: Response("line one\nline two", media_type="text/plain")),
    ]
    return Starlette(routes=routes)


@pytest.fixture(scope="session")
def hostile_server():
    """A second local server with SSRF traps: redirects out, 50 MB bodies, binary content, cookies."""
    from forage.sandboxes.web import SiteServer

    server = SiteServer(app=_hostile_app()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def silent_server():
    """A TCP port that accepts connections (backlog) and never answers: ``host:port``."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()
