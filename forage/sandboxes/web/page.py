"""HTML to readable text: headings, paragraphs and lists as lines, links numbered ``[3: text]``, a viewport."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

from lxml import etree

__all__ = ["Link", "Page", "parse_page", "text_page", "decode_html"]

_SKIP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "embed", "canvas", "meta",
         "link"}
_BLOCK = {"p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "ul", "ol", "li", "table",
          "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "form", "br", "hr", "dl", "dt", "dd",
          "figure", "figcaption", "body", "html", "title"}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}


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
    """Walks an lxml tree (iteratively: no recursion limit) into text lines and numbered links."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.origin = _origin(base_url)
        self.lines: list[str] = []
        self.buf: list[str] = []
        self.links: list[Link] = []
        self.prefix = ""

    def flush(self) -> None:
        text = " ".join("".join(self.buf).split())   # whitespace runs collapsed (str.split: the same set as \s)
        if text:
            self.lines.append((self.prefix + text).replace(" ,", ",").replace(" .", "."))
        self.buf, self.prefix = [], ""

    def block_edge(self) -> list[str]:
        """A block starts or ends: the pending text becomes a line (or the prefix goes); the buffer to fill next."""
        if self.buf:
            self.flush()
        else:
            self.prefix = ""
        return self.buf

    def walk(self, root: etree._Element) -> None:
        # A stack of elements to open and of closes: an element popped is opened (rendered), which
        # schedules its close by pushing the element and then its lower-cased tag name; a name popped is
        # that close (block end, table cell bar), which comes before the element (popped next)'s tail
        # text. No tuple per visit and no per-element method calls (fewer objects for the collector):
        # this loop is the bulk of a page's parse-and-render time.
        stack: list[Any] = root[::-1]
        push, pop, extend = stack.append, stack.pop, stack.extend
        buf = self.buf
        add = buf.append
        block, headings, skip = _BLOCK, _HEADINGS, _SKIP
        if root.text:
            add(root.text)
        while stack:
            el = pop()
            if type(el) is str:
                closing, el = el, pop()
                if closing in block:
                    buf = self.block_edge()
                    add = buf.append
                elif closing == "td" or closing == "th":
                    add(" | ")
                if el.tail:
                    add(el.tail)
                continue
            tag = el.tag
            if type(tag) is not str:  # comments, PIs, entities
                if el.tail:
                    add(el.tail)
                continue
            name = tag.lower()
            get = el.get
            if name in skip or get("hidden") is not None or get("aria-hidden") == "true":
                if el.tail:
                    add(el.tail)
                continue
            style = get("style")
            if style:
                style = style.replace(" ", "").lower()
                if "display:none" in style or "visibility:hidden" in style:
                    if el.tail:
                        add(el.tail)
                    continue
            if name in block:
                buf = self.block_edge()
                add = buf.append
                if name in headings:
                    self.prefix = "#" * int(name[1]) + " "
                elif name == "li":
                    self.prefix = "- "
            push(el)
            push(name)
            if name == "a":
                if get("href") is not None:
                    self.anchor(el)
                    continue
            elif name == "img":
                alt = " ".join((get("alt") or "").split())
                if alt:
                    add(f" [image: {alt}] ")
                continue
            elif name == "input" or name == "textarea" or name == "select":
                kind = (get("type") or name).lower()
                if kind not in ("hidden", "submit", "button"):
                    label = get("aria-label") or get("placeholder") or get("name") or ""
                    add(f" [{kind} field {label}] ".replace("  ", " "))
                elif kind in ("submit", "button") and get("value"):
                    add(f" [button {get('value')}] ")
                continue
            if el.text:
                add(el.text)
            if len(el):
                extend(el[::-1])

    def anchor(self, a: etree._Element) -> None:
        text = " ".join((" ".join(a.itertext()) if len(a) else (a.text or "")).split())
        text = text or (a.get("title") or "").strip() or "link"
        url = resolve_href(self.base, (a.get("href") or "").strip(), self.origin)
        if url[:8].lower().startswith(("http://", "https://")):
            links = self.links
            n = len(links) + 1
            links.append(Link(n, text, url))
            self.buf.append(f" [{n}: {text}] ")
        else:
            self.buf.append(f" {text} ")


_PLAIN_ORIGIN = re.compile(r"(https?)://([A-Za-z0-9.\-]+(?::[0-9]*)?)(?=[/?#]|\Z)", re.IGNORECASE)


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, or None (what urlsplit says; a plain URL without it)."""
    m = _PLAIN_ORIGIN.match(url)
    if m is not None:  # nothing urlsplit would strip, split or refuse before the path: the same two parts
        return f"{m.group(1).lower()}://{m.group(2)}"
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


_PLAIN_PATH = re.compile(r"/(?![/\\])[^\\;?\t\r\n]*\Z")  # root-relative; no backslash, params, query or tab/CR/LF


def resolve_href(base: str, href: str, origin: str | None = None) -> str:
    """``href`` made absolute against ``base``, without its fragment ("" when it cannot be).

    A root-relative path (``/wiki/X``, most links of a site) is joined to ``origin`` directly: urljoin
    would return the same string (it only adds dot-segment removal, and such paths fall back to it).
    """
    if origin is not None and _PLAIN_PATH.match(href) and "/." not in href:
        return origin + href.split("#", 1)[0]
    try:
        return urldefrag(urljoin(base, href))[0]
    except ValueError:
        return ""


_PARSER = threading.local()  # one lxml parser per thread (a parser is not thread-safe; building one costs ~50 us)


def _parser() -> etree.HTMLParser:
    p = getattr(_PARSER, "parser", None)
    if p is None:
        p = _PARSER.parser = etree.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True,
                                              no_network=True, huge_tree=True)
    return p


def decode_html(content: bytes, encoding: str | None = None) -> str:
    """The text of an HTML document: its BOM, else the given charset, a ``<meta>`` charset, UTF-8, then cp1252."""
    for name in (_bom(content), encoding, _meta_charset(content)):
        if name:
            try:
                return content.decode(name, "replace")
            except (LookupError, UnicodeError, ValueError, TypeError):  # unknown or unusable codec: next clue
                continue
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return content.decode("cp1252", "replace")


def _bom(content: bytes) -> str | None:
    for bom, name in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if content.startswith(bom):
            return name
    return None


_META_CHARSET = re.compile(rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:\-]{1,40})""", re.IGNORECASE)


def _meta_charset(content: bytes) -> str | None:
    m = _META_CHARSET.search(content, 0, 2048)
    return m.group(1).decode("ascii") if m else None


_MAX_DEPTH = 200  # where the fallback tree stops nesting (libxml2's own tree keeps 255 levels and drops the rest)


class _FlatteningTarget:
    """Parser events to a tree at most ``_MAX_DEPTH`` deep: deeper tags are dropped, their text is kept."""

    def __init__(self) -> None:
        self.builder = etree.TreeBuilder()
        self.open: list[bool] = []   # per open tag: was it built (True) or dropped (False)
        self.depth = 0               # how many built tags are open

    def start(self, tag: str, attrib: dict) -> None:
        built = self.depth < _MAX_DEPTH
        self.open.append(built)
        if built:
            self.depth += 1
            self.builder.start(tag, dict(attrib))

    def end(self, tag: str) -> None:
        if self.open and self.open.pop():
            self.depth -= 1
            self.builder.end(tag)

    def data(self, text: str) -> None:
        self.builder.data(text)

    def comment(self, text: str) -> None:
        pass

    def close(self) -> etree._Element:
        while self.open:
            self.end("")
        return self.builder.close()



def _flattened(data: bytes) -> etree._Element | None:
    parser = etree.HTMLParser(encoding="utf-8", target=_FlatteningTarget(), no_network=True, huge_tree=True)
    return etree.fromstring(data, parser)


def parse_page(content: bytes | str, url: str, encoding: str | None = None) -> Page:
    """Render an HTML document fetched from ``url`` as a :class:`Page` (lxml's HTML parser; never raises)."""
    text = content if isinstance(content, str) else decode_html(content, encoding)
    data = text.encode("utf-8", "replace")  # lone surrogates become "?"; the parser reads UTF-8 only
    parser = _parser()
    try:
        root = etree.fromstring(data, parser) if data.strip() else None
        if root is not None and any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log):
            root = _flattened(data)  # nested past libxml2's tree depth, whose deeper content it drops
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        root = None
    if root is None:
        return Page(url=url, title=url, lines=[], links=[])
    base = url
    # the first <base href>, <title> (descendants, document order) and <body> (a child), as find(".//base[@href]"),
    # find(".//title") and find("body") give them, without ElementPath's Python-level path handling
    base_tag = next((e for e in root.iterdescendants("base") if e.get("href") is not None), None)
    if base_tag is not None:
        try:
            base = urljoin(url, base_tag.get("href") or "")
        except ValueError:
            pass
    title_tag = next(root.iterdescendants("title"), None)
    title = " ".join("".join(title_tag.itertext()).split()) if title_tag is not None else ""
    r = _Renderer(base)
    body = next(root.iterchildren("body"), None)
    r.walk(body if body is not None else root)
    r.flush()
    return Page(url=url, title=title or url, lines=r.lines, links=r.links)


def text_page(text: str, url: str) -> Page:
    """A plain-text document as a :class:`Page` (no links)."""
    lines = [ln.rstrip() for ln in text.splitlines()]
    return Page(url=url, title=url, lines=[ln for ln in lines if ln.strip()], links=[])
