"""HTML to readable text: headings, paragraphs and lists as lines, links numbered ``[3: text]``, a viewport."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urldefrag

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import Comment, Doctype, ProcessingInstruction

__all__ = ["Link", "Page", "parse_page", "text_page"]

_SKIP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "embed", "canvas", "meta",
         "link"}
_BLOCK = {"p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "ul", "ol", "li", "table",
          "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "form", "br", "hr", "dl", "dt", "dd",
          "figure", "figcaption", "body", "html", "title"}
_SPACES = re.compile(r"\s+")


@dataclass
class Link:
    """A numbered link of a page: the id the agent clicks, its text and its absolute URL."""

    id: int
    text: str
    url: str


@dataclass
class Page:
    """A fetched page as text: its URL, title, text lines and numbered links, and how it is cut into views."""

    url: str
    title: str
    lines: list[str]
    links: list[Link]
    views: list[str] = field(default_factory=list)

    def paginate(self, view_chars: int) -> "Page":
        """Cut the text into views of about ``view_chars`` characters at line ends (long lines at spaces)."""
        views, cur = [], ""
        for line in self.lines:
            while len(line) > view_chars:
                cut = line.rfind(" ", 0, view_chars)
                cut = cut if cut > view_chars // 2 else view_chars
                if cur:
                    views.append(cur)
                    cur = ""
                views.append(line[:cut])
                line = line[cut:].lstrip()
            if cur and len(cur) + 1 + len(line) > view_chars:
                views.append(cur)
                cur = ""
            cur = f"{cur}\n{line}" if cur else line
        if cur or not views:
            views.append(cur)
        self.views = views
        return self

    def link(self, link_id: int) -> Link | None:
        """The link numbered ``link_id``, or None."""
        return self.links[link_id - 1] if 1 <= link_id <= len(self.links) else None


class _Renderer:
    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.lines: list[str] = []
        self.buf: list[str] = []
        self.links: list[Link] = []
        self.prefix = ""

    def flush(self) -> None:
        text = _SPACES.sub(" ", "".join(self.buf)).strip()
        if text:
            self.lines.append(self.prefix + text)
        self.buf, self.prefix = [], ""

    def walk(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, (Comment, Doctype, ProcessingInstruction)):
                continue
            if isinstance(child, NavigableString):
                self.buf.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue
            name = (child.name or "").lower()
            if name in _SKIP or child.get("hidden") is not None or child.get("aria-hidden") == "true":
                continue
            style = str(child.get("style") or "").replace(" ", "").lower()
            if "display:none" in style or "visibility:hidden" in style:
                continue
            if name in _BLOCK:
                self.flush()
            if name in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self.prefix = "#" * int(name[1]) + " "
            elif name == "li":
                self.prefix = "- "
            if name == "a" and child.get("href") is not None:
                self.anchor(child)
            elif name == "img":
                alt = _SPACES.sub(" ", str(child.get("alt") or "")).strip()
                if alt:
                    self.buf.append(f" [image: {alt}] ")
            elif name in ("input", "textarea", "select"):
                kind = str(child.get("type") or name).lower()
                if kind not in ("hidden", "submit", "button"):
                    label = child.get("aria-label") or child.get("placeholder") or child.get("name") or ""
                    self.buf.append(f" [{kind} field {label}] ".replace("  ", " "))
                elif kind in ("submit", "button") and child.get("value"):
                    self.buf.append(f" [button {child.get('value')}] ")
            else:
                self.walk(child)
            if name in _BLOCK:
                self.flush()
            elif name in ("td", "th"):
                self.buf.append(" | ")

    def anchor(self, a: Tag) -> None:
        text = _SPACES.sub(" ", a.get_text(" ")).strip() or str(a.get("title") or "").strip() or "link"
        href = str(a.get("href")).strip()
        try:
            url = urldefrag(urljoin(self.base, href))[0]
        except ValueError:
            url = ""
        if url.lower().startswith(("http://", "https://")):
            self.links.append(Link(len(self.links) + 1, text, url))
            self.buf.append(f" [{len(self.links)}: {text}] ")
        else:
            self.buf.append(f" {text} ")


def parse_page(content: bytes | str, url: str, encoding: str | None = None) -> Page:
    """Render an HTML document fetched from ``url`` as a :class:`Page` (lxml parser, via BeautifulSoup)."""
    soup = BeautifulSoup(content, "lxml", from_encoding=encoding if isinstance(content, bytes) else None)
    base = url
    base_tag = soup.find("base", href=True)
    if isinstance(base_tag, Tag):
        try:
            base = urljoin(url, str(base_tag["href"]))
        except ValueError:
            pass
    title_tag = soup.find("title")
    title = _SPACES.sub(" ", title_tag.get_text()).strip() if isinstance(title_tag, Tag) else ""
    r = _Renderer(base)
    body = soup.body if soup.body is not None else soup
    r.walk(body)
    r.flush()
    lines = [_SPACES.sub(" ", ln).replace(" ,", ",").replace(" .", ".").strip() for ln in r.lines]
    return Page(url=url, title=title or url, lines=[ln for ln in lines if ln], links=r.links)


def text_page(text: str, url: str) -> Page:
    """A plain-text document as a :class:`Page` (no links)."""
    lines = [ln.rstrip() for ln in text.splitlines()]
    return Page(url=url, title=url, lines=[ln for ln in lines if ln.strip()], links=[])
