"""The site and the text browser over real HTTP: pages, links, search, views, history, cookies, static folders,
rendering checked against the stdlib's HTML parser, and DNS pinning."""

from __future__ import annotations

import asyncio
import re
import socket
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin

import httpx
import pytest
from _web_helpers import WEB_DOCS, hostile_server, web_corpus, web_site  # noqa: F401

from hypothesis import given, settings
from hypothesis import strategies as st

from forage.sandboxes.web import (Browser, BrowserConfig, ContainmentPolicy, NavigationRefused, PinnedTransport,
                                  SiteServer, make_browser_tools, parse_page)
from forage.sandboxes.web.page import _origin, resolve_href


def _site_browser(site, view_chars: int = 1500, *extra_hosts: str) -> Browser:
    return Browser(BrowserConfig(ContainmentPolicy(allowed_hosts=(site.host_port, *extra_hosts)),
                                 home_url=site.url + "/", search_url=site.url + "/search?q={query}",
                                 view_chars=view_chars))


def test_site_pages_over_http(web_site):
    with httpx.Client(base_url=web_site.url) as c:
        home = c.get("/")
        assert home.status_code == 200 and "8 articles" in home.text
        volcano = c.get("/wiki/Volcano").text
        assert '<a href="/wiki/Lava">lava</a>' in volcano and '<a href="/wiki/Mountain">mountain</a>' in volcano
        assert 'href="/wiki/Volcano"' not in volcano.split("<main>")[1]  # no self link
        assert "Basalt" in c.get("/index/B").text
        assert c.get("/wiki/Nowhere").status_code == 404
        assert "/wiki/Basalt" in c.get("/search", params={"q": "igneous rock"}).text
        assert c.get("/health").text == "ok"


def test_parse_page_renders_text_and_numbered_links():
    html = ("<html><head><title> T </title><script>var x='hidden';</script><style>p{}</style></head><body>"
            "<h2>Head</h2><p>Go to <a href='/a'>Alpha</a> or <a href='https://e.org/b#frag'>Beta</a>"
            " or <a href='javascript:void(0)'>Nope</a>.</p><ul><li>one</li><li>two</li></ul>"
            "<img alt='a cat'><!-- comment --><div style='display: none'>secret</div><p hidden>also secret</p>"
            "</body></html>")
    page = parse_page(html.encode(), "http://h:1/dir/page").paginate(1000)
    assert page.title == "T"
    text = "\n".join(page.lines)
    assert "hidden" not in text and "comment" not in text and "p{}" not in text and "secret" not in text
    assert "## Head" in text and "- one" in text and "[image: a cat]" in text
    assert [(link.id, link.text, link.url) for link in page.links] == [(1, "Alpha", "http://h:1/a"),
                                                                       (2, "Beta", "https://e.org/b")]
    assert "[1: Alpha]" in text and "Nope" in text and "[3:" not in text


async def test_open_click_back_find_scroll_search(web_site):
    b = _site_browser(web_site, view_chars=300)
    view = await b.open("/wiki/Volcano")  # relative to the home URL
    assert "Page: Volcano" in view and "URL: " + web_site.url + "/wiki/Volcano" in view
    lava = next(link for link in b.page.links if link.text == "lava")
    view = await b.click(lava.id)
    assert "Page: Lava" in view and "molten rock" in view
    with pytest.raises(NavigationRefused, match="no link 999"):
        await b.click(999)
    assert "Page: Volcano" in b.back()
    with pytest.raises(NavigationRefused, match="no previous page"):
        b.back()
    await b.open("Bridge")  # relative to the current page (/wiki/)
    assert len(b.page.views) > 3
    assert "View 2 of" in b.scroll("down")
    assert "View 1 of" in b.scroll("up")
    with pytest.raises(NavigationRefused, match="top"):
        b.scroll("up")
    assert f"View {len(b.page.views)} of" in b.scroll("bottom")
    b.scroll("top")
    found = b.find("suspension spans")
    assert "Found" in found and "suspension spans" in found and b.view == len(b.page.views) - 1
    with pytest.raises(NavigationRefused, match="does not occur"):
        b.find("no such words here")
    view = await b.search("dark igneous rock")
    assert "Search results" in view
    first = re.search(r"- \[(\d+): ([^\]]+)\]", view)
    assert first and first.group(2) == "Basalt"
    assert "Page: Basalt" in await b.click(int(first.group(1)))
    assert b.state()["url"].endswith("/wiki/Basalt") and b.state()["history"] == 3
    await b.aclose()


async def test_cookies_are_per_browser(hostile_server):
    one = _site_browser(hostile_server)
    two = _site_browser(hostile_server)
    await one.open(hostile_server.url + "/ok?v=first")
    assert "cookie=first" in await one.open(hostile_server.url + "/cookie")
    assert "cookie=none" in await two.open(hostile_server.url + "/cookie")
    await one.aclose()
    await two.aclose()


async def test_static_folder_and_prefix_limit(tmp_path):
    (tmp_path / "index.html").write_text("<title>Static home</title><p><a href='sub/page.html'>inner</a></p>")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "page.html").write_text("<title>Inner</title><p>deep page</p>")
    with SiteServer(static_dir=tmp_path) as server:
        b = _site_browser(server)
        assert "Static home" in await b.open(server.url + "/")
        assert "deep page" in await b.click(1)
        b.config.allowed_prefixes = (server.url + "/sub/",)
        with pytest.raises(NavigationRefused) as e:
            await b.open(server.url + "/index.html")
        assert e.value.kind == "prefix"
        await b.aclose()


async def test_browser_tools_need_a_browser_and_report_errors(web_site):
    from forage.envs.base import Task, ToolEnv

    tools = {t.name: t for t in make_browser_tools()}
    assert set(tools) == {"open", "click", "find", "scroll", "back", "search"}
    res = await tools["open"].acall({"url": web_site.url + "/"}, episode=None)
    assert res.error == "tool_error" and "no browser" in res.content

    env = ToolEnv([Task("t", "browse")], make_browser_tools())
    env.reset(seed=0)
    env.episode.state["browser"] = _site_browser(web_site)
    obs, *_ = env.step(env.format_call("open", url="/wiki/Iron"))
    assert "Page: Iron" in obs
    obs, *_, info = env.step(env.format_call("click", link_id=0))
    assert info["tool_results"][0]["error"] == "invalid_arguments"
    obs, *_, info = env.step(env.format_call("scroll", direction="sideways"))
    assert info["tool_results"][0]["error"] == "invalid_arguments"
    env.close()


class _AnchorOracle(HTMLParser):
    """The stdlib's HTML parser (an independent one) collecting every <a href>'s text and resolved URL."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base, self.links, self._open = base, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "a" and dict(attrs).get("href") is not None:
            self._open = (dict(attrs)["href"], [])

    def handle_data(self, data):
        if self._open is not None:
            self._open[1].append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._open is not None:
            href, text = self._open
            url = urldefrag(urljoin(self.base, href.strip()))[0]
            if url.startswith(("http://", "https://")):
                self.links.append((" ".join("".join(text).split()), url))
            self._open = None


async def test_rendered_pages_agree_with_an_independent_parser(web_site):
    """Every article and search page: links (text, URL) as html.parser finds them, the article text in the lines."""
    b = _site_browser(web_site)
    urls = [web_site.url + "/wiki/" + title for title, _ in WEB_DOCS] + [web_site.url + "/search?q=rock+iron"]
    for url in urls:
        await b.open(url)
        html = httpx.get(url, timeout=10).text
        oracle = _AnchorOracle(url)
        oracle.feed(html)
        assert [(link.text, link.url) for link in b.page.links] == oracle.links, url
        assert b.page.title == re.search(r"<title>(.*?)</title>", html).group(1)
    for title, text in WEB_DOCS:
        await b.open(web_site.url + "/wiki/" + title)
        flat = re.sub(r"\[\d+: ([^\]]*)\]", r"\1", " ".join(b.page.lines))
        assert " ".join(text.split()[:12]) in flat
    await b.aclose()


@given(st.lists(st.sampled_from(list("hH:/.?#[]@1\t\n -%é") + ["http", "HTTPS", "://", "ftp:"]), max_size=10))
@settings(max_examples=3000, deadline=None)
def test_origin_equals_urlsplit(parts):
    from urllib.parse import urlsplit

    url = "".join(parts)
    try:
        split = urlsplit(url)
        want = f"{split.scheme}://{split.netloc}" if split.scheme in ("http", "https") and split.netloc else None
    except ValueError:
        want = None
    assert _origin(url) == want, url
    assert _origin("http://" + url) == _origin_by_urlsplit("http://" + url)


def _origin_by_urlsplit(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        split = urlsplit(url)
    except ValueError:
        return None
    return f"{split.scheme}://{split.netloc}" if split.scheme in ("http", "https") and split.netloc else None


@given(st.sampled_from(["http://h:1/dir/page", "https://Ex.org/a/b?q=1#f", "http://h", "http://[::1]:8/x/",
                        "HTTP://Host.Example:80/p/q"]),
       st.lists(st.sampled_from(list("/.?#;\\\t\r\n %:@=&a1é~-_\x00") + ["..", "//", "/./", "/../"]), max_size=12))
@settings(max_examples=3000, deadline=None)
def test_resolve_href_equals_urljoin(base, parts):
    href = "/" + "".join(parts)
    assert resolve_href(base, href, _origin(base)) == urldefrag(urljoin(base, href))[0]


@pytest.mark.parametrize("html", [b"", b"\x00\xff\xfe garbage", b"<div>" * 20_000 + b"deep text",
                                  b"<a href='http://[::1'>x</a>",
                                  "<p>caf\u00e9 \ud800</p>".encode("utf-8", "surrogatepass"),
                                  b"<meta charset='no-such-charset'><p>x</p>", b"<meta charset='undefined'><p>x",
                                  b"<?xml version='1.0' encoding='latin-1'?><p>y"])
def test_parse_page_never_raises(html):
    page = parse_page(html, "http://h:1/").paginate(100)
    assert isinstance(page.views, list) and page.title
    if b"deep text" in html:
        assert "deep text" in page.lines[-1]  # content past libxml2's tree depth is kept


async def test_a_host_stays_pinned_to_its_checked_address(web_site, monkeypatch):
    """DNS rebinding after the check: the browser keeps the checked address and never connects to the new one."""
    loop = asyncio.get_running_loop()
    answers = ["127.0.0.1"]
    asked = []

    async def fake_getaddrinfo(host, port, **kw):
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[-1], port))]

    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    connected = []

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request):
            connected.append(request.url.host)
            return await super().handle_async_request(request)

    policy = ContainmentPolicy(allowed_hosts=(f"rebind.test:{web_site.port}",), allowed_networks=("127.0.0.0/8",))
    b = Browser(BrowserConfig(policy), transport=PinnedTransport(policy, Recording(retries=0)))
    assert "Page: Volcano" in await b.open(f"http://rebind.test:{web_site.port}/wiki/Volcano")
    answers.append("10.0.0.1")  # the name now points into private space
    assert "Page: Lava" in await b.open(f"http://rebind.test:{web_site.port}/wiki/Lava")
    assert asked == ["rebind.test"] and connected == ["127.0.0.1", "127.0.0.1"]
    # the pinned address is re-checked on every use: once the policy no longer allows it, DNS is asked again
    policy._networks = []
    with pytest.raises(NavigationRefused) as e:
        await b.open(f"http://rebind.test:{web_site.port}/wiki/Iron")
    assert e.value.kind == "address" and "10.0.0.1" in str(e.value)
    assert asked == ["rebind.test"] * 2 and connected == ["127.0.0.1", "127.0.0.1"]
    fresh = Browser(BrowserConfig(ContainmentPolicy(allowed_hosts=(f"rebind.test:{web_site.port}",))))
    with pytest.raises(NavigationRefused) as e:   # a new browser asks DNS and refuses the rebound answer
        await fresh.open(f"http://rebind.test:{web_site.port}/wiki/Iron")
    assert e.value.kind == "address" and connected == ["127.0.0.1", "127.0.0.1"]
    await b.aclose()
    await fresh.aclose()


async def test_the_default_transport_connects_to_the_pinned_address(web_site, monkeypatch):
    """The browser's own transport (httpx's pool called with the checked address) pins too: a name only the fake DNS
    knows is reached at its checked 127.0.0.1 over one kept-alive connection, a rebound answer is never used, and
    the pinned address is re-checked on every request."""
    loop = asyncio.get_running_loop()
    answers, asked = ["127.0.0.1"], []

    async def fake_getaddrinfo(host, port, **kw):
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[-1], port))]

    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    policy = ContainmentPolicy(allowed_hosts=(f"pinned.test:{web_site.port}",), allowed_networks=("127.0.0.0/8",))
    b = Browser(BrowserConfig(policy))
    assert "Page: Volcano" in await b.open(f"http://pinned.test:{web_site.port}/wiki/Volcano")
    transport = b._get_client()._transport
    assert isinstance(transport, PinnedTransport) and transport._pool is not None   # the direct path was taken
    answers.append("10.0.0.1")
    assert "Page: Lava" in await b.open(f"http://pinned.test:{web_site.port}/wiki/Lava")
    assert asked == ["pinned.test"]
    origins = [bytes(c._origin.host) for c in transport._pool.connections]
    assert origins == [b"127.0.0.1"]   # the connection was opened to the checked address, not to the name
    policy._networks = []
    with pytest.raises(NavigationRefused) as e:
        await b.open(f"http://pinned.test:{web_site.port}/wiki/Iron")
    assert e.value.kind == "address" and asked == ["pinned.test"] * 2
    await b.aclose()
