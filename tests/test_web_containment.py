"""SSRF containment: every refused fetch is an error observation, and the browser and env keep working after it."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest
from _web_helpers import hostile_server, silent_server, web_corpus, web_site  # noqa: F401

from forage.asgi_thread import free_port
from forage.sandboxes.web import Browser, BrowserConfig, ContainmentPolicy, NavigationRefused, check_url
from forage.sandboxes.web.containment import resolve_checked


def _browser(*hosts: str, **policy_kw) -> Browser:
    kw = {"total_timeout": 3.0, "read_timeout": 1.0, "connect_timeout": 1.0, **policy_kw}
    return Browser(BrowserConfig(ContainmentPolicy(allowed_hosts=hosts, **kw)))


async def _refused(browser: Browser, url: str) -> NavigationRefused:
    with pytest.raises(NavigationRefused) as e:
        await browser.open(url)
    return e.value


@pytest.mark.parametrize("url,kind", [
    ("file:///etc/passwd", "scheme"),
    ("data:text/html,<h1>hi</h1>", "scheme"),
    ("ftp://127.0.0.1/x", "scheme"),
    ("gopher://127.0.0.1:70/", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("http://user:pw@127.0.0.1/", "credentials"),
    ("http://user@127.0.0.1/", "credentials"),
    ("http://169.254.169.254/latest/meta-data/", "host"),
    ("http://10.0.0.1/", "host"),
    ("http://example.com/", "host"),
    ("/relative/without/page", "url"),
])
def test_check_url_refusals(url, kind):
    policy = ContainmentPolicy(allowed_hosts=("127.0.0.1:1",))
    with pytest.raises(NavigationRefused) as e:
        check_url(url, policy) if kind != "url" else asyncio.run(Browser(BrowserConfig(policy)).open(url))
    assert e.value.kind == kind, str(e.value)


async def test_allow_list_is_per_port(hostile_server):
    other = _browser("127.0.0.1:1")
    e = await _refused(other, hostile_server.url + "/ok")
    assert e.kind == "host" and "allow-list" in str(e)
    any_port = _browser("127.0.0.1")
    assert "Fine" in await any_port.open(hostile_server.url + "/ok")
    await any_port.aclose()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.0.0.1", "169.254.169.254", "192.168.1.1", "0.0.0.0",
                                  "224.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "[fe80::1]", "2130706433", "0x7f000001"])
async def test_open_internet_mode_refuses_non_public_addresses(host):
    """With no allow-list (any public host), names and numbers that reach private space are refused after resolution."""
    b = Browser(BrowserConfig(ContainmentPolicy(allowed_hosts=None, connect_timeout=2.0)))
    e = await _refused(b, f"http://{host}:9/")
    assert e.kind in ("address", "dns", "url"), str(e)
    await b.aclose()


async def test_dns_answer_to_private_address_refused(monkeypatch):
    """An allow-listed *name* whose DNS answer is private (e.g. rebinding) is refused; nothing connects."""
    real = asyncio.get_running_loop().getaddrinfo

    async def fake_getaddrinfo(host, port, **kw):
        if host == "rebind.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port))]
        return await real(host, port, **kw)

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)
    policy = ContainmentPolicy(allowed_hosts=("rebind.test",))
    with pytest.raises(NavigationRefused) as e:
        await resolve_checked("rebind.test", 80, policy)
    assert e.value.kind == "address" and "10.0.0.1" in str(e.value)
    b = Browser(BrowserConfig(policy))
    assert (await _refused(b, "http://rebind.test/")).kind == "address"
    # ...unless its network is explicitly allowed
    ok = ContainmentPolicy(allowed_hosts=("rebind.test",), allowed_networks=("10.0.0.0/8",))
    assert await resolve_checked("rebind.test", 80, ok) == [ipaddress.ip_address("10.0.0.1")]


async def test_redirects_are_checked_at_every_hop(hostile_server):
    b = _browser(hostile_server.host_port)
    for path, kind in [("/redirect-out", "host"), ("/redirect-metadata", "host"), ("/redirect-file", "scheme"),
                       ("/redirect-loop", "redirect")]:
        e = await _refused(b, hostile_server.url + path)
        assert e.kind == kind, (path, str(e))
        assert b.page is None  # nothing was shown
    view = await b.open(hostile_server.url + "/redirect-ok")  # an allowed redirect is followed
    assert "URL: " + hostile_server.url + "/ok?v=redirected" in view
    await b.aclose()


async def test_size_type_and_time_limits(hostile_server, silent_server):
    b = _browser(hostile_server.host_port, silent_server, max_bytes=1_000_000)
    e = await _refused(b, hostile_server.url + "/big")
    assert e.kind == "size" and "limit" in str(e)
    assert (await _refused(b, hostile_server.url + "/big-declared")).kind == "size"
    assert (await _refused(b, hostile_server.url + "/binary")).kind == "content_type"
    assert (await _refused(b, f"http://{silent_server}/")).kind == "timeout"
    # still usable after all of that
    assert "Fine" in await b.open(hostile_server.url + "/ok")
    assert "line two" in await b.open(hostile_server.url + "/plain")
    await b.aclose()


def test_env_turns_every_refusal_into_an_observation(web_site, web_corpus, hostile_server, silent_server, tmp_path):
    """WebQA-v0 with the hostile server allow-listed: each SSRF attempt is an error result, then browsing works."""
    import json

    from forage.envs.web import WebQAEnv

    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "Which rock is dark and rich in iron?", "answers": ["Basalt"]}) + "\n")
    env = WebQAEnv(corpus=str(web_corpus), qa_file=str(qa), allowed_hosts=(hostile_server.host_port, silent_server),
                   fetch_timeout=3.0, max_bytes=1_000_000, max_turns=30)
    env.reset(seed=0)
    attacks = [hostile_server.url + "/redirect-out", "http://169.254.169.254/", "file:///etc/passwd",
               f"http://user:pw@{web_site.host_port}/", hostile_server.url + "/big", f"http://{silent_server}/",
               "http://10.0.0.1/", hostile_server.url + "/redirect-metadata", hostile_server.url + "/binary"]
    for url in attacks:
        obs, reward, terminated, truncated, info = env.step(env.format_call("open", url=url))
        assert not terminated and not truncated
        assert info["tool_results"][0]["error"] == "tool_error", (url, obs)
        assert "Error:" in obs, obs
        obs, *_ , info = env.step(env.format_call("open", url=web_site.url + "/wiki/Basalt"))
        assert info["tool_results"][0]["error"] is None and "igneous" in obs, (url, obs)
    env.close()


@pytest.mark.skipif(__import__("shutil").which("openssl") is None, reason="openssl is not installed")
async def test_https_is_pinned_and_keeps_the_name_for_tls(tmp_path, web_corpus):
    """An https site named localhost: the connection goes to the checked 127.0.0.1, SNI and cert check use the name."""
    import ssl
    import subprocess
    import threading
    import time

    import httpx
    import uvicorn

    from forage.sandboxes.web import PinnedTransport, create_site_app, load_site

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_site_app(load_site(str(web_corpus))), host="127.0.0.1", port=port,
                                           ssl_keyfile=str(key), ssl_certfile=str(cert), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        policy = ContainmentPolicy(allowed_hosts=(f"localhost:{port}",))
        inner = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=str(cert)))
        b = Browser(BrowserConfig(policy), transport=PinnedTransport(policy, inner))
        assert "Page: Basalt" in await b.open(f"https://localhost:{port}/wiki/Basalt")
        assert (await _refused(b, f"https://127.0.0.1:{port}/")).kind == "host"  # not the allow-listed name
        await b.aclose()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def test_the_tool_timeout_answers_in_time_and_runs_no_task_per_call(silent_server, hostile_server):
    """The browser tools' timeout (Tool.acall's, asyncio.timeout in the caller's task): a page that never answers is a
    "timeout" result after the tool's limit, not the browser's longer one; a normal call runs in the caller's task."""
    import time
    from types import SimpleNamespace

    from forage.sandboxes.web import make_browser_tools

    open_tool = make_browser_tools(["open"], timeout=0.3)[0]
    ep = SimpleNamespace(state={"browser": _browser(silent_server, hostile_server.host_port, total_timeout=10.0,
                                                    read_timeout=10.0)})
    t = time.perf_counter()
    res = await open_tool.acall({"url": f"http://{silent_server}/"}, ep)
    assert res.error == "timeout" and res.content == "Error: open timed out after 0.3 s" and res.name == "open"
    assert time.perf_counter() - t < 3.0
    tasks = []
    orig = ep.state["browser"].navigate

    async def navigate(url):
        tasks.append(asyncio.current_task())
        return await orig(url)

    ep.state["browser"].navigate = navigate
    res = await open_tool.acall({"url": hostile_server.url + "/ok"}, ep)
    assert res.error is None and "Fine" in res.content and tasks == [asyncio.current_task()]
    await ep.state["browser"].aclose()
