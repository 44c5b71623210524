"""Web sandbox: a corpus rendered as a local web site, and a contained text browser over httpx."""

from .browser import Browser, BrowserConfig, FetchResult
from .containment import ContainmentPolicy, NavigationRefused, PinnedTransport, check_url, resolve_checked
from .page import Link, Page, parse_page, text_page
from .server import SiteServer, cached_site, create_site_app, load_site, serve_site, shared_site
from .site import LinkFinder, Site
from .tools import BROWSER_TOOLS, browser_of, make_browser_tools

__all__ = [
    "Browser", "BrowserConfig", "FetchResult", "ContainmentPolicy", "NavigationRefused", "PinnedTransport",
    "check_url", "resolve_checked", "Link", "Page", "parse_page", "text_page", "SiteServer", "create_site_app",
    "load_site", "serve_site", "shared_site", "cached_site", "LinkFinder", "Site", "BROWSER_TOOLS", "browser_of",
    "make_browser_tools",
]
