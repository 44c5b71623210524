"""The site and the text browser over real HTTP: pages, links, search, views, history, cookies, static folders."""

from __future__ import annotations

import re

import httpx
import pytest
from _web_helpers import WEB_DOCS, hostile_server, web_corpus, web_site  # noqa: F401

from forage.sandboxes.web import (Browser, BrowserConfig, ContainmentPolicy, NavigationRefused, SiteServer,
                                  make_browser_tools, parse_page)


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
