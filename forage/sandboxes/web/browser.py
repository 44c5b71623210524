"""A contained text browser over httpx: open, click, find, scroll, back, search; one per episode."""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urljoin

import httpx

from .containment import ContainmentPolicy, NavigationRefused, PinnedTransport, check_url
from .page import Page, parse_page, text_page

__all__ = ["BrowserConfig", "Browser", "FetchResult", "shared_ssl_context"]


@dataclass
class BrowserConfig:
    """A browser's containment policy, start page, search URL template and viewport size."""

    policy: ContainmentPolicy = field(default_factory=ContainmentPolicy)
    home_url: str | None = None          # relative URLs given to open() resolve against it when no page is open
    search_url: str | None = None        # a template with {query}, e.g. "http://127.0.0.1:8020/search?q={query}"
    view_chars: int = 1500               # characters of page text per view (scroll moves one view)
    max_history: int = 64
    allowed_prefixes: tuple[str, ...] | None = None   # if set, only URLs starting with one of these can be shown
    user_agent: str = "forage-browser/0.1 (+text)"


@dataclass
class FetchResult:
    """A fetched document: final URL after redirects, status, content type, body and the redirect chain."""

    url: str
    status: int
    content_type: str
    body: bytes
    encoding: str | None
    redirects: list[str]


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context (httpx's default: certifi's CAs) for every browser: loading the CAs costs 10-30 ms."""
    return httpx.create_ssl_context()


def _charset(content_type: str) -> str | None:
    """The ``charset=`` parameter of a Content-Type header, or None."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip("'\"") or None
    return None


class Browser:
    """One episode's browser: its own cookies and history; every fetch obeys the config's policy."""

    def __init__(self, config: BrowserConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.policy = config.policy
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.page: Page | None = None
        self.view = 0
        self.history: list[tuple[Page, int]] = []
        self.visited: list[str] = []      # final URLs of successful navigations, in order
        self.fetches = 0

    # -- fetching -------------------------------------------------------------------------
    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            p = self.policy
            timeout = httpx.Timeout(p.read_timeout, connect=p.connect_timeout)
            transport = self._transport or PinnedTransport(
                p, httpx.AsyncHTTPTransport(retries=0, verify=shared_ssl_context()))
            self._client = httpx.AsyncClient(transport=transport, timeout=timeout,
                                             follow_redirects=False, trust_env=False,
                                             headers={"User-Agent": self.config.user_agent})
        return self._client

    async def fetch(self, url: str) -> FetchResult:
        """GET ``url`` within the policy (each redirect hop checked, body streamed and capped, total time capped)."""
        try:
            async with asyncio.timeout(self.policy.total_timeout):
                return await self._fetch(url)
        except TimeoutError:
            raise NavigationRefused(f"loading {url} took longer than {self.policy.total_timeout:g} s; gave up",
                                    "timeout") from None

    async def _fetch(self, url: str) -> FetchResult:
        client = self._get_client()
        p = self.policy
        current = check_url(url, p)
        redirects: list[str] = []
        for _ in range(p.max_redirects + 1):
            self.fetches += 1
            try:
                request = client.build_request("GET", current)
                response = await client.send(request, stream=True)
            except NavigationRefused:
                raise
            except httpx.TimeoutException:
                raise NavigationRefused(f"{current} did not answer in time", "timeout") from None
            except httpx.HTTPError as e:
                raise NavigationRefused(f"could not load {current}: {type(e).__name__}: {e}", "network") from None
            try:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    redirects.append(str(current))
                    try:
                        target = urljoin(str(current), location)
                    except ValueError:
                        raise NavigationRefused(f"{current} redirected to an invalid URL", "redirect") from None
                    try:
                        current = check_url(target, p)
                    except NavigationRefused as e:
                        raise NavigationRefused(f"{current} redirected to {target[:200]}, which is refused: {e}",
                                                e.kind) from None
                    continue
                return await self._read(response, str(current), redirects)
            finally:
                await response.aclose()
        raise NavigationRefused(f"more than {p.max_redirects} redirects starting at {url}", "redirect")

    async def _read(self, response: httpx.Response, url: str, redirects: list[str]) -> FetchResult:
        p = self.policy
        raw_type = response.headers.get("content-type", "text/html")
        ctype = raw_type.split(";")[0].strip().lower() or "text/html"
        if ctype not in p.content_types:
            raise NavigationRefused(f"{url} is {ctype}, which the browser does not show "
                                    f"(allowed: {', '.join(p.content_types)})", "content_type")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > p.max_bytes:
            raise NavigationRefused(f"{url} is {int(declared):,} bytes; the limit is {p.max_bytes:,}", "size")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > p.max_bytes:
                raise NavigationRefused(f"{url} is larger than the {p.max_bytes:,}-byte limit; stopped reading", "size")
            chunks.append(chunk)
        return FetchResult(url, response.status_code, ctype, b"".join(chunks), _charset(raw_type), redirects)

    # -- navigation -----------------------------------------------------------------------
    def resolve(self, url: str) -> str:
        """``url`` made absolute against the open page (or the home URL)."""
        url = url.strip()
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:", url):
            return url
        base = self.page.url if self.page is not None else self.config.home_url
        if base is None:
            raise NavigationRefused(f"{url!r} is not an absolute URL (it needs http:// or https://)", "url")
        return urljoin(base, url)

    async def navigate(self, url: str) -> Page:
        """Fetch and show ``url``; the previous page goes on the history. Failures leave the browser as it was."""
        target = self.resolve(url)
        self._check_prefix(target)
        result = await self.fetch(target)
        self._check_prefix(result.url)
        if result.content_type == "text/plain":
            page = text_page(result.body.decode(result.encoding or "utf-8", "replace"), result.url)
        else:
            page = await asyncio.to_thread(parse_page, result.body, result.url, result.encoding) \
                if len(result.body) > 200_000 else parse_page(result.body, result.url, result.encoding)
        page.paginate(self.config.view_chars)
        if result.status >= 400:
            page.title = f"{page.title} (HTTP {result.status})"
        if self.page is not None:
            self.history.append((self.page, self.view))
            del self.history[: -self.config.max_history]
        self.page, self.view = page, 0
        self.visited.append(page.url)
        return page

    def _check_prefix(self, url: str) -> None:
        prefixes = self.config.allowed_prefixes
        if prefixes is not None and not any(url.startswith(p) for p in prefixes):
            raise NavigationRefused(f"{url[:200]} is outside the pages this task allows "
                                    f"(URLs starting with {', '.join(prefixes)})", "prefix")

    def render(self, note: str = "") -> str:
        """The current view: title, URL, position, the text of this view and a hint."""
        if self.page is None:
            return "No page is open. Use open(url) or search(query)."
        p = self.page
        head = f"{note}\n" if note else ""
        return (f"{head}Page: {p.title}\nURL: {p.url}\nView {self.view + 1} of {len(p.views)} "
                f"({len(p.links)} links; click(link_id) follows [id: text])\n---\n{p.views[self.view]}\n---")

    async def open(self, url: str) -> str:
        """Open ``url`` (absolute, or relative to the current page)."""
        await self.navigate(url)
        return self.render()

    async def click(self, link_id: int) -> str:
        """Follow the link numbered ``link_id`` on the current page."""
        if self.page is None:
            raise NavigationRefused("no page is open, so there is nothing to click", "state")
        link = self.page.link(int(link_id))
        if link is None:
            raise NavigationRefused(f"this page has no link {link_id}; its links are numbered 1 to "
                                    f"{len(self.page.links)}",
                                    "link")
        await self.navigate(link.url)
        return self.render()

    async def search(self, query: str) -> str:
        """Open the site's search results for ``query``."""
        if not query.strip():
            raise NavigationRefused("the query is empty", "query")
        if not self.config.search_url:
            raise NavigationRefused("this browser has no search page configured", "state")
        await self.navigate(self.config.search_url.replace("{query}", quote_plus(query.strip()[:300])))
        return self.render()

    def back(self) -> str:
        """Return to the previous page (as it was, without fetching again)."""
        if not self.history:
            raise NavigationRefused("there is no previous page", "state")
        self.page, self.view = self.history.pop()
        self.visited.append(self.page.url)
        return self.render()

    def scroll(self, direction: str = "down") -> str:
        """Move the view one step ``down`` or ``up`` (also ``top``/``bottom``)."""
        if self.page is None:
            raise NavigationRefused("no page is open", "state")
        d = direction.strip().lower()
        last = len(self.page.views) - 1
        target = {"down": self.view + 1, "up": self.view - 1, "top": 0, "bottom": last}.get(d)
        if target is None:
            raise NavigationRefused(f"direction must be down, up, top or bottom, not {direction!r}", "argument")
        if not 0 <= target <= last:
            raise NavigationRefused(f"already at the {'bottom' if d == 'down' else 'top'} of the page", "state")
        self.view = target
        return self.render()

    def find(self, text: str) -> str:
        """Jump to the next view containing ``text`` (case-insensitive), searching after the current one."""
        if self.page is None:
            raise NavigationRefused("no page is open", "state")
        needle = " ".join(text.lower().split())
        if not needle:
            raise NavigationRefused("the text to find is empty", "argument")
        views = self.page.views
        hits = [i for i, v in enumerate(views) if needle in " ".join(v.lower().split())]
        if not hits:
            raise NavigationRefused(f"{text!r} does not occur on this page", "not_found")
        after = [i for i in hits if i > self.view]
        self.view = after[0] if after else hits[0]
        count = sum(" ".join(v.lower().split()).count(needle) for v in views)
        return self.render(f"Found {text!r} {count} time(s) on this page; showing the next view containing it.")

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def state(self) -> dict[str, Any]:
        """A summary for ``info``: current URL, history depth, navigations."""
        return {"url": self.page.url if self.page else None, "history": len(self.history),
                "visited": list(self.visited), "fetches": self.fetches}
