"""A corpus as a web site: article pages that link the articles they mention, a search page, topic indexes.

The link graph is what the pages show: an article links the first mention of every other article's
title in its text (whole words, case-insensitive, longest title first, titles of 4+ characters).
The same function finds the links for rendering and for the graph (``Site.links``), so the
shortest paths WikiNav computes are paths a browser can really click.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import string
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, Sequence
from urllib.parse import quote, urlencode

from ...data.wiki import Document

__all__ = ["Site", "Mention", "LinkFinder", "topic_of", "TOPICS"]

TOPICS = list(string.ascii_uppercase) + ["0-9"]
_WORD = re.compile(r"\w+")
_STOP = frozenset("a an and are as at be by for from has he her his in is it its of on or she that the their this to "
                  "was were which with".split())


def topic_of(title: str) -> str:
    """The index page an article is listed on: its first letter (A-Z), else ``0-9``."""
    first = title[:1].upper()
    return first if first in string.ascii_uppercase else "0-9"


@dataclass(frozen=True)
class Mention:
    """A span of an article's text that links to article ``target`` (an index into the site's docs)."""

    start: int
    end: int
    target: int


class LinkFinder:
    """Finds mentions of a corpus's titles in a text (whole words, case-insensitive, longest first)."""

    def __init__(self, docs: Sequence[Document], min_chars: int = 4) -> None:
        self.by_first: dict[str, list[tuple[str, int]]] = {}
        seen: set[str] = set()
        for i, d in enumerate(docs):
            name = d.title.lower()
            if len(name) < min_chars or name.isdigit() or name in seen or not _WORD.match(name):
                continue
            seen.add(name)
            self.by_first.setdefault(_WORD.match(name).group(0), []).append((name, i))
        for names in self.by_first.values():
            names.sort(key=lambda x: len(x[0]), reverse=True)

    def mentions(self, text: str, exclude: int | None = None) -> list[Mention]:
        """The first mention of each title in ``text`` (not ``exclude``), left to right, non-overlapping."""
        low = text.lower()
        out: list[Mention] = []
        linked: set[int] = set()
        pos = 0
        for m in _WORD.finditer(low):
            if m.start() < pos:
                continue
            for name, idx in self.by_first.get(m.group(0), ()):
                end = m.start() + len(name)
                if low.startswith(name, m.start()) and (end == len(low) or not low[end].isalnum()):
                    if idx != exclude and idx not in linked:
                        linked.add(idx)
                        out.append(Mention(m.start(), end, idx))
                    pos = end
                    break
        return out


def _tokens(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


_CSS = ("body{font-family:sans-serif;max-width:46em;margin:1em auto;line-height:1.45}"
        "nav a{margin-right:1em}.snippet{color:#444}")


class Site:
    """The pages of a corpus site, rendered as HTML strings (the HTTP app in ``server.py`` serves them)."""

    def __init__(self, docs: Sequence[Document], name: str = "Forage Wiki") -> None:
        self.docs = list(docs)
        self.name = name
        self.by_slug = {quote(d.id, safe=""): i for i, d in enumerate(self.docs)}
        self.finder = LinkFinder(self.docs)
        self._by_title = {}
        for i, d in enumerate(self.docs):
            self._by_title.setdefault(d.title.lower(), i)

    # -- the model ------------------------------------------------------------------------
    def path_of(self, index: int) -> str:
        """The URL path of article ``index``."""
        return "/wiki/" + quote(self.docs[index].id, safe="")

    def find(self, slug: str) -> int | None:
        """The index of the article at ``/wiki/<slug>`` (slug as it appears in the URL), or None."""
        return self.by_slug.get(quote(slug, safe=""))

    def mentions(self, index: int) -> list[Mention]:
        """The linked mentions of article ``index``, in text order."""
        return self.finder.mentions(self.docs[index].text, exclude=index)

    @cached_property
    def links(self) -> list[list[int]]:
        """The link graph: for each article, the articles its page links to (cached on disk by corpus hash)."""
        from ...assets import cache_dir
        from ..retrieval.corpus import corpus_fingerprint

        path = cache_dir("web") / f"links-{corpus_fingerprint(self.docs)}-v1.json"
        if path.exists():
            try:
                links = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(links, list) and len(links) == len(self.docs):
                    return links
            except ValueError:
                pass  # a damaged cache file: recompute
        links = [[m.target for m in self.mentions(i)] for i in range(len(self.docs))]
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(links), encoding="utf-8")
        tmp.replace(path)
        return links

    @cached_property
    def _postings(self) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        title_idx: dict[str, list[int]] = {}
        text_idx: dict[str, list[int]] = {}
        for i, d in enumerate(self.docs):
            for w in set(_tokens(d.title)):
                title_idx.setdefault(w, []).append(i)
            for w in set(_tokens(d.text)):
                text_idx.setdefault(w, []).append(i)
        return title_idx, text_idx

    def search(self, query: str, k: int = 10) -> list[int]:
        """Articles matching ``query``: an exact title first, then by title and text word matches (idf-weighted)."""
        words = _tokens(query)[:32]
        title_idx, text_idx = self._postings
        n = len(self.docs)
        scores: Counter[int] = Counter()
        for w in set(words):
            for postings, weight in ((title_idx.get(w, ()), 3.0), (text_idx.get(w, ()), 1.0)):
                if postings:
                    idf = math.log(1 + n / len(postings))
                    for i in postings:
                        scores[i] += weight * idf
        exact = self._by_title.get(" ".join(query.lower().split()))
        if exact is not None:
            scores[exact] += 1e6
        return [i for i, _ in sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]]

    # -- rendering ------------------------------------------------------------------------
    def _page(self, title: str, body: str) -> str:
        nav = ('<nav><a href="/">Home</a><a href="/index">Index</a>'
               '<form action="/search" method="get" style="display:inline">'
               '<input type="text" name="q" aria-label="Search"><button type="submit">Search</button></form></nav>')
        return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} - '
                f'{html.escape(self.name)}</title><style>{_CSS}</style></head>'
                f'<body>{nav}<main>{body}</main></body></html>')

    def article_html(self, index: int) -> str:
        """The page of article ``index``: its text with links to the articles it mentions."""
        d = self.docs[index]
        text, parts, pos = d.text, [], 0
        for m in self.mentions(index):
            parts.append(html.escape(text[pos:m.start]))
            parts.append(f'<a href="{self.path_of(m.target)}">{html.escape(text[m.start:m.end])}</a>')
            pos = m.end
        parts.append(html.escape(text[pos:]))
        paragraphs = "".join(f"<p>{p.strip()}</p>" for p in "".join(parts).split("\n") if p.strip())
        topic = topic_of(d.title)
        return self._page(d.title, f'<h1>{html.escape(d.title)}</h1>{paragraphs}'
                                   f'<p class="topic">Listed under <a href="/index/{quote(topic)}">{topic}</a>.</p>')

    def home_html(self) -> str:
        """The front page: the search form (in the nav bar) and the topic index."""
        items = "".join(f'<li><a href="/index/{quote(t)}">Articles starting with {t}</a></li>' for t in self.topics())
        return self._page(self.name, f"<h1>{html.escape(self.name)}</h1><p>{len(self.docs)} articles. "
                                     f"Search above, or browse by topic:</p><ul>{items}</ul>")

    def topics(self) -> list[str]:
        """The topic index pages that have articles."""
        used = {topic_of(d.title) for d in self.docs}
        return [t for t in TOPICS if t in used]

    def index_html(self, topic: str | None = None, page: int = 1, per_page: int = 100) -> str | None:
        """The list of topics (``topic`` None) or one topic's articles, ``per_page`` a page; None if unknown."""
        if topic is None:
            items = "".join(f'<li><a href="/index/{quote(t)}">{t}</a></li>' for t in self.topics())
            return self._page("Index", f"<h1>Index</h1><ul>{items}</ul>")
        members = [i for i, d in enumerate(self.docs) if topic_of(d.title) == topic]
        if not members:
            return None
        pages = max(1, math.ceil(len(members) / per_page))
        page = min(max(page, 1), pages)
        chunk = members[(page - 1) * per_page: page * per_page]
        items = "".join(f'<li><a href="{self.path_of(i)}">{html.escape(self.docs[i].title)}</a></li>' for i in chunk)
        pager = []
        if page > 1:
            pager.append(f'<a href="/index/{quote(topic)}?page={page - 1}">Previous page</a>')
        if page < pages:
            pager.append(f'<a href="/index/{quote(topic)}?page={page + 1}">Next page</a>')
        return self._page(f"Index: {topic}", f"<h1>Articles: {html.escape(topic)} (page {page} of {pages})</h1>"
                                             f"<ul>{items}</ul><p>{' '.join(pager)}</p>")

    def search_html(self, query: str, k: int = 10) -> str:
        """The search results page for ``query``."""
        hits = self.search(query, k) if query.strip() else []
        rows = []
        for i in hits:
            d = self.docs[i]
            snippet = d.text[:160].rsplit(" ", 1)[0] + ("..." if len(d.text) > 160 else "")
            rows.append(f'<li><a href="{self.path_of(i)}">{html.escape(d.title)}</a> '
                        f'<span class="snippet">{html.escape(snippet)}</span></li>')
        body = (f"<h1>Search results for \"{html.escape(query)}\"</h1>"
                + (f"<ol>{''.join(rows)}</ol>" if rows else "<p>No articles match.</p>"))
        return self._page(f"Search: {query}", body)

    def search_url(self, query: str) -> str:
        """The path of the search page for ``query``."""
        return "/search?" + urlencode({"q": query})

    def iter_paths(self) -> Iterator[str]:
        """Every article path (for crawls and benchmarks)."""
        return (self.path_of(i) for i in range(len(self.docs)))

    def graph_json(self) -> str:
        """The link graph as JSON (``{"titles": [...], "links": [[...], ...]}``)."""
        return json.dumps({"titles": [d.title for d in self.docs], "links": self.links})
