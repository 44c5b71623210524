"""What the browser may fetch: allow-listed hosts and ports, http(s) only, no private addresses, size/time/type limits.

Every check raises :class:`NavigationRefused` (a :class:`~forage.tools.ToolError`, so the agent reads
the reason as an error observation). Hosts are resolved, checked and pinned: every connection
goes to an address that was checked (:class:`PinnedTransport` keeps a host's checked addresses for
30 s rather than asking DNS again), so a DNS answer that changes after the check (DNS rebinding)
cannot reach a refused address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from ...tools import ToolError

try:  # used to call httpx's connection pool as its own transport does (PinnedTransport._send_pinned)
    from httpx._transports.default import AsyncResponseStream as _AsyncResponseStream
    from httpx._transports.default import map_httpcore_exceptions as _map_httpcore_exceptions
except ImportError:  # another httpx layout: the generic path (a pinned httpx.Request to the inner transport)
    _AsyncResponseStream = _map_httpcore_exceptions = None  # type: ignore[assignment,misc]

__all__ = ["ContainmentPolicy", "NavigationRefused", "check_url", "resolve_checked", "PinnedTransport"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NavigationRefused(ToolError):
    """A fetch was refused by the containment policy or failed; ``kind`` names why (scheme, host, size...)."""

    def __init__(self, message: str, kind: str = "refused") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class ContainmentPolicy:
    """The rules every fetch (and every redirect hop) obeys.

    ``allowed_hosts`` entries are ``host`` (any port) or ``host:port``; ``None`` allows every
    host with a public address. A host that resolves to a non-public address (loopback,
    private, link-local, multicast, reserved...) is refused unless that address is the
    allow-listed host itself (an IP literal, or ``localhost`` for loopback) or lies in
    ``allowed_networks``.
    """

    allowed_hosts: tuple[str, ...] | None = ()
    allowed_networks: tuple[str, ...] = ()
    schemes: tuple[str, ...] = ("http", "https")
    content_types: tuple[str, ...] = ("text/html", "application/xhtml+xml", "text/plain")
    max_bytes: int = 2_000_000
    max_redirects: int = 5
    max_url_chars: int = 2048
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 20.0
    _networks: list[Any] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.allowed_hosts is not None:
            self.allowed_hosts = tuple(h.lower().strip() for h in self.allowed_hosts)
        self._networks = [ipaddress.ip_network(n, strict=False) for n in self.allowed_networks]

    def with_hosts(self, *hosts: str) -> "ContainmentPolicy":
        """A copy that also allows ``hosts``."""
        from dataclasses import replace

        current = () if self.allowed_hosts is None else self.allowed_hosts
        return replace(self, allowed_hosts=None if self.allowed_hosts is None else current + tuple(hosts))

    def host_allowed(self, host: str, port: int) -> bool:
        """Is ``host:port`` on the allow-list (always true when the list is ``None``)?"""
        if self.allowed_hosts is None:
            return True
        host = _bare(host)
        return any(entry in (host, f"{host}:{port}", f"[{host}]:{port}") for entry in self.allowed_hosts)

    def address_allowed(self, host: str, port: int, ip: IPAddress) -> bool:
        """May a connection for ``host:port`` go to ``ip``?"""
        if getattr(ip, "ipv4_mapped", None) is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        public = ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)
        if public:
            return True
        if any(ip in net for net in self._networks):
            return True
        if self.allowed_hosts is None or not self.host_allowed(host, port):
            return False
        literal = _ip_or_none(_bare(host))
        if literal is not None:
            return literal == ip
        return _bare(host) == "localhost" and ip.is_loopback


def _bare(host: str) -> str:
    return host.lower().strip().strip("[]").rstrip(".")


def _ip_or_none(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url(url: str | httpx.URL, policy: ContainmentPolicy) -> httpx.URL:
    """Parse ``url`` and check scheme, credentials, host and port against ``policy`` (no DNS yet)."""
    text = str(url)
    if len(text) > policy.max_url_chars:
        raise NavigationRefused(f"the URL is {len(text)} characters long; the limit is {policy.max_url_chars}", "url")
    try:
        u = httpx.URL(text)
    except Exception as e:
        raise NavigationRefused(f"not a valid URL ({e})", "url") from None
    scheme = u.scheme.lower()
    if not scheme:
        raise NavigationRefused(f"{text!r} is not an absolute URL (it needs http:// or https://)", "url")
    if scheme not in policy.schemes:
        raise NavigationRefused(f"the {scheme}: scheme is not allowed; only {', '.join(policy.schemes)} URLs "
                                "can be opened",
                                "scheme")
    if u.userinfo:
        raise NavigationRefused("URLs with credentials (user:password@host) are not allowed", "credentials")
    if not u.host:
        raise NavigationRefused(f"{text!r} has no host", "url")
    port = u.port or _DEFAULT_PORTS.get(scheme, 0)
    if not policy.host_allowed(u.host, port):
        allowed = ", ".join(policy.allowed_hosts or ()) or "none"
        raise NavigationRefused(f"the host {u.host}:{port} is not on the allow-list (allowed: {allowed})", "host")
    return u


async def resolve_checked(host: str, port: int, policy: ContainmentPolicy) -> list[IPAddress]:
    """Resolve ``host`` and return the addresses ``policy`` allows for it; refuse when there are none."""
    literal = _ip_or_none(_bare(host))
    if literal is not None:
        ips = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(_bare(host), port, type=socket.SOCK_STREAM),
                                           policy.connect_timeout)
        except (socket.gaierror, UnicodeError, asyncio.TimeoutError, OSError) as e:
            raise NavigationRefused(f"the host {host} could not be resolved ({e or type(e).__name__})", "dns") from None
        ips = []
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%")[0])
            if ip not in ips:
                ips.append(ip)
    allowed = [ip for ip in ips if policy.address_allowed(host, port, ip)]
    if not allowed:
        shown = ", ".join(str(ip) for ip in ips[:4])
        raise NavigationRefused(f"{host} resolves to {shown}, a private, loopback, link-local or reserved address "
                                "that is not allowed", "address")
    return allowed


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that resolves and checks each request's host, then connects to the checked address."""

    def __init__(self, policy: ContainmentPolicy, inner: httpx.AsyncBaseTransport | None = None,
                 pin_seconds: float = 30.0) -> None:
        self.policy = policy
        self.inner = inner or httpx.AsyncHTTPTransport(retries=0)
        self.pin_seconds = pin_seconds   # how long a host stays pinned to the addresses checked for it
        self._pinned: dict[tuple[str, int], tuple[float, list[IPAddress]]] = {}
        # httpx's own transport (not a subclass, which may look at the requests): its connection pool is
        # called directly with the pinned address (see _send_pinned); any other transport gets an httpx.Request.
        pool = getattr(self.inner, "_pool", None) if type(self.inner) is httpx.AsyncHTTPTransport else None
        self._pool = pool if pool is not None and _AsyncResponseStream is not None else None

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        """The checked addresses for ``host:port``: pinned for ``pin_seconds`` (a later DNS answer is not asked,
        so a rebinding answer never reaches a connection), each re-checked against the policy on every use."""
        key = (_bare(host), port)
        now = time.monotonic()
        hit = self._pinned.get(key)
        if hit is not None and now < hit[0]:
            ips = [ip for ip in hit[1] if self.policy.address_allowed(host, port, ip)]
            if ips:
                return ips
        ips = await resolve_checked(host, port, self.policy)
        if len(self._pinned) >= 256:
            self._pinned.clear()
        self._pinned[key] = (now + self.pin_seconds, ips)
        return ips

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Check the host, pin the address, forward (the Host header and TLS SNI keep the name)."""
        url = request.url
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 0)
        if not self.policy.host_allowed(url.host, port):
            raise NavigationRefused(f"the host {url.host}:{port} is not on the allow-list", "host")
        ips = await self._addresses(url.host, port)
        extensions = dict(request.extensions)
        if url.scheme == "https" and _ip_or_none(_bare(url.host)) is None:
            extensions["sni_hostname"] = url.host
        pool = self._pool
        for n, ip in enumerate(ips):  # e.g. ::1 then 127.0.0.1: try the checked addresses in turn
            try:
                if pool is not None:
                    return await self._send_pinned(pool, request, ip, port, extensions)
                pinned = httpx.Request(request.method, url.copy_with(host=str(ip)), headers=request.headers,
                                       stream=request.stream, extensions=extensions)
                return await self.inner.handle_async_request(pinned)
            except httpx.ConnectError:
                if n == len(ips) - 1:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    async def _send_pinned(pool: Any, request: httpx.Request, ip: IPAddress, port: int,
                           extensions: dict[str, Any]) -> httpx.Response:
        """What ``httpx.AsyncHTTPTransport.handle_async_request`` does for ``request`` sent to ``ip``.

        The request goes to httpcore with the checked address as the URL's host, built from parts:
        re-parsing a copy of the URL with the address and building a second ``httpx.Request``
        (the generic path) cost ~20 us a page, a third of the transport's own overhead.
        """
        u = request.url
        host = str(ip).encode("ascii")
        req = httpcore.Request(method=request.method,
                               url=httpcore.URL(scheme=u.raw_scheme, host=host, port=u.port, target=u.raw_path),
                               headers=request.headers.raw, content=request.stream, extensions=extensions)
        with _map_httpcore_exceptions():
            resp = await pool.handle_async_request(req)
        return httpx.Response(status_code=resp.status, headers=resp.headers,
                              stream=_AsyncResponseStream(resp.stream), extensions=resp.extensions)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.inner.aclose()
