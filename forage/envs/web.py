"""Browsing environments over the local corpus site: WikiNav (follow links to a target) and WebQA."""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import numpy as np

from ..tools import Tool, ToolCall, ToolResult
from .base import Episode, Task, ToolEnv, answer_tool
from .rewards import best_match

__all__ = ["WikiNavEnv", "WebQAEnv", "wikinav_tasks", "link_graph_distances"]


class _BrowsingEnv(ToolEnv):
    """Shared plumbing: the site (in-process shared server, or ``site_url``), one contained browser per episode."""

    browser_tools: tuple[str, ...] = ()

    def __init__(self, *, corpus: str | None = None, site_url: str | None = None, allowed_hosts: Sequence[str] = (),
                 view_chars: int = 1500, fetch_timeout: float = 20.0, max_bytes: int = 2_000_000,
                 **kwargs: Any) -> None:
        self.corpus = corpus
        self._site_url = site_url.rstrip("/") if site_url else None
        self.extra_hosts = tuple(allowed_hosts)
        self.view_chars, self.fetch_timeout, self.max_bytes = view_chars, fetch_timeout, max_bytes
        super().__init__(**kwargs)

    @property
    def site_url(self) -> str:
        """The site's base URL (starts the in-process shared site on first use)."""
        if self._site_url is None:
            from ..sandboxes.web import shared_site

            self._site_url = shared_site(self.corpus).url
        return self._site_url

    def browser_config(self) -> Any:
        """The per-episode browser's config: the site's host:port allow-listed, its search page, limits."""
        from ..sandboxes.web import BrowserConfig, ContainmentPolicy

        parts = urlsplit(self.site_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        policy = ContainmentPolicy(allowed_hosts=(f"{parts.hostname}:{port}",) + self.extra_hosts,
                                   total_timeout=self.fetch_timeout, max_bytes=self.max_bytes)
        return BrowserConfig(policy, home_url=self.site_url + "/", search_url=self.site_url + "/search?q={query}",
                             view_chars=self.view_chars)

    def make_tools(self) -> Iterable[Tool]:
        from ..sandboxes.web import make_browser_tools

        return make_browser_tools(self.browser_tools, after=self.after_navigation)

    def after_navigation(self, episode: Any, browser: Any) -> None:
        """Called after each successful browser tool call (subclasses watch the page here)."""

    async def setup_episode(self, episode: Episode) -> None:
        from ..sandboxes.web import Browser

        episode.state["browser"] = Browser(self.browser_config())

    async def teardown_episode(self, episode: Episode) -> None:
        browser = episode.state.get("browser")
        if browser is not None:
            await browser.aclose()

    def _pages_visited(self, episode: Episode) -> int:
        browser = episode.state.get("browser")
        return len(browser.visited) if browser is not None else 0


# -- WikiNav ---------------------------------------------------------------------------------------

def link_graph_distances(links: Sequence[Sequence[int]], sources: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """BFS distances (inf when unreachable) and predecessors from each of ``sources`` over the directed link graph."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    n = len(links)
    rows = np.fromiter((i for i, out in enumerate(links) for _ in out), dtype=np.int64)
    cols = np.fromiter((j for out in links for j in out), dtype=np.int64)
    graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return shortest_path(graph, directed=True, unweighted=True, indices=list(sources), return_predecessors=True)


def _path(pred: np.ndarray, source: int, target: int) -> list[int]:
    path = [target]
    while path[-1] != source:
        path.append(int(pred[path[-1]]))
    return path[::-1]


def wikinav_tasks(site: Any, num_tasks: int = 500, seed: int = 0, difficulties: Sequence[int] = (1, 2, 3, 4, 5),
                  batch: int = 64) -> list[Task]:
    """Seeded (start, target) pairs whose shortest click path has each length in ``difficulties`` (in turn)."""
    links = site.links
    wanted = sorted({int(d) for d in difficulties if int(d) >= 1})
    if not wanted:
        raise ValueError("difficulties must hold path lengths >= 1")
    rng = np.random.default_rng(seed)
    sources = [int(i) for i in rng.permutation(len(links)) if links[i]]
    tasks: list[Task] = []
    used: set[tuple[int, int]] = set()
    added = True
    while added:  # later passes only happen for small graphs (a pair is never repeated)
        added = False
        for lo in range(0, len(sources), batch):
            chunk = sources[lo: lo + batch]
            dist, pred = link_graph_distances(links, chunk)
            for row, s in enumerate(chunk):
                for k in range(len(wanted)):
                    d = wanted[(len(tasks) + k) % len(wanted)]
                    cands = [int(t) for t in np.flatnonzero(dist[row] == d) if (s, int(t)) not in used]
                    if cands:
                        t = cands[int(rng.integers(len(cands)))]
                        break
                else:
                    continue
                used.add((s, t))
                added = True
                tasks.append(_nav_task(site, _path(pred[row], s, t)))
                if len(tasks) >= num_tasks:
                    return tasks
    return tasks


def _nav_task(site: Any, path: list[int]) -> Task:
    a, b = site.docs[path[0]], site.docs[path[-1]]
    prompt = (f"Start on the article \"{a.title}\" and reach the article \"{b.title}\" by following links. "
              "Use click(link_id) to follow a link ([id: text] on the page), scroll/find to read more of "
              "a page, back() to return. Only article links (/wiki/...) can be followed. The episode ends "
              "when you arrive; fewer clicks score higher.")
    tid = "nav-" + hashlib.sha1(f"{a.id}|{b.id}".encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return Task(tid, prompt, b.title, {
        "start": a.title, "target": b.title, "start_path": site.path_of(path[0]), "target_path": site.path_of(path[-1]),
        "difficulty": len(path) - 1, "shortest_path": [site.docs[i].title for i in path]})


class WikiNavEnv(_BrowsingEnv):
    """Reach a target article of the local encyclopedia site from a start article by clicking links.

    Description:
        The site renders each corpus article (default: 10,033 Wikipedia vital-article summaries)
        with links to the articles it mentions. A task is a (start, target) pair; its difficulty
        is the length of the shortest click path in that link graph (breadth-first search), which
        is in ``info["difficulty"]`` with one shortest path in ``info["shortest_path"]``. Only
        article links can be followed (no search, no index pages, no typed URLs).

    Action Space:
        Text with tool calls: ``click(link_id)``, ``find(text)``, ``scroll(direction)``, ``back()``.

    Observation Space:
        Text: the task and the start page (title, URL, a view of its text with numbered links
        ``[id: text]``), then each page reached or an error (an unknown link id, a refused URL).

    Rewards:
        ``arrival`` 1 when the target page is reached; ``path_efficiency`` = shortest length /
        moves taken (clicks and backs), 0 without arrival; ``format`` -1 for a malformed turn.
        Default weights: arrival 0.5, path_efficiency 0.5, format 0.1.

    Starting State:
        A task sampled with the reset seed; ``options["difficulty"]`` (an int or a ``(lo, hi)``
        pair) samples among tasks of that shortest-path length; ``task_id``/``task_index`` pick one.

    Episode End:
        Terminated on arrival; truncated after ``max_turns`` (default 20) turns or a budget.

    Arguments:
        corpus: a JSONL corpus (``id``, ``title``, ``text``) or None for the wiki summaries.
        site_url: an already running ``forage serve site`` of the same corpus (default: an in-process server).
        num_tasks, task_seed, difficulties: which (start, target) pairs to generate.
        view_chars, fetch_timeout, max_bytes, allowed_hosts and the :class:`ToolEnv` arguments.
    """

    default_reward_weights = {"format": 0.1, "arrival": 0.5, "path_efficiency": 0.5}
    default_system_prompt = ("You navigate an encyclopedia web site by following links. Read the page, pick the link "
                             "most likely to lead towards the target article, and click it.")
    browser_tools = ("click", "find", "scroll", "back")

    def __init__(self, *, num_tasks: int = 500, task_seed: int = 0, difficulties: Sequence[int] = (1, 2, 3, 4, 5),
                 corpus: str | None = None, max_turns: int = 20, **kwargs: Any) -> None:
        from ..sandboxes.web import cached_site

        self.site = cached_site(corpus)
        self.num_tasks, self.task_seed, self.difficulties = num_tasks, task_seed, tuple(difficulties)
        super().__init__(corpus=corpus, max_turns=max_turns, **kwargs)

    def load_tasks(self) -> Iterable[Task]:
        return wikinav_tasks(self.site, self.num_tasks, self.task_seed, self.difficulties)

    def browser_config(self) -> Any:
        cfg = super().browser_config()
        cfg.allowed_prefixes = (self.site_url + "/wiki/",)
        return cfg

    def _pick_task(self, options: Mapping[str, Any]) -> Task:
        if "difficulty" in options and "task_id" not in options and "task_index" not in options:
            d = options["difficulty"]
            lo, hi = (int(d[0]), int(d[1])) if isinstance(d, (list, tuple)) else (int(d), int(d))
            pool = [t for t in self.tasks if lo <= t.metadata["difficulty"] <= hi]
            if not pool:
                have = sorted({t.metadata["difficulty"] for t in self.tasks})
                raise ValueError(f"no task has difficulty {d}; this env has {have}")
            return pool[int(self.np_random.integers(len(pool)))]
        return super()._pick_task(options)

    async def setup_episode(self, episode: Episode) -> None:
        await super().setup_episode(episode)
        episode.state["moves"] = 0
        start = self.site_url + episode.task.metadata["start_path"]
        episode.state["start_view"] = await episode.state["browser"].open(start)

    def format_prompt(self, task: Task) -> str:
        view = self.episode.state.get("start_view", "") if self.episode is not None else ""
        return f"{task.prompt}\n\n{view}"

    def after_navigation(self, episode: Any, browser: Any) -> None:
        episode.state["moves"] = len(browser.visited) - 1  # the start page is the first visit
        path = unquote(urlsplit(browser.page.url).path) if browser.page is not None else ""
        if path == unquote(episode.task.metadata["target_path"]):
            episode.state["arrived"] = True

    async def areset(self, *, seed: int | None = None,
                     options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        obs, info = await super().areset(seed=seed, options=options)
        meta = self.episode.task.metadata
        info.update(difficulty=meta["difficulty"], start=meta["start"], target=meta["target"],
                    shortest_path=meta["shortest_path"])
        return obs, info

    async def _run_calls(self, ep: Episode, calls: list[ToolCall], errors: list[str]) -> tuple[list[ToolResult], bool]:
        results, terminal = await super()._run_calls(ep, calls, errors)
        if ep.state.get("arrived"):
            results.append(ToolResult(f"You reached the target article \"{ep.task.metadata['target']}\" in "
                                      f"{ep.state['moves']} moves (shortest: {ep.task.metadata['difficulty']}).",
                                      name="arrival"))
        return results, terminal or bool(ep.state.get("arrived"))

    def score(self, episode: Episode) -> dict[str, float]:
        arrived = bool(episode.state.get("arrived"))
        moves = max(int(episode.state.get("moves", 0)), 1)
        d = int(episode.task.metadata["difficulty"])
        return {"arrival": float(arrived), "path_efficiency": min(1.0, d / moves) if arrived else 0.0}


# -- WebQA -----------------------------------------------------------------------------------------

class WebQAEnv(_BrowsingEnv):
    """Answer encyclopedia questions by browsing the local site (search page, article links).

    Description:
        SearchQA-v0's questions (single-hop and bridge questions generated from the corpus, or a
        user QA JSONL) answered with a text browser instead of a search API: the agent searches
        the site, opens articles and follows their links, then answers. Answers are checked like
        SearchQA's (SQuAD-normalised exact match and F1 against the accepted answers).

    Action Space:
        Text with tool calls: ``search(query)``, ``open(url)``, ``click(link_id)``, ``find(text)``,
        ``scroll(direction)``, ``back()``, and ``answer(answer)``, which ends the episode.

    Observation Space:
        Text: the question and the site's address, then pages (title, URL, a view of the text with
        numbered links ``[id: text]``) or errors (refused URLs, timeouts, unknown links).

    Rewards:
        ``exact_match`` and ``f1`` (best over the accepted answers) and ``tool_use`` (1 if at least
        one page was loaded) at the end; ``format`` (-1 for a malformed turn) on every step.
        Default weights: exact_match 1, f1 0, tool_use 0.1, format 0.1.

    Starting State:
        A question sampled with the reset seed (or ``options["task_id"]``/``["task_index"]``); no page open.

    Episode End:
        Terminated when ``answer`` is called; truncated after ``max_turns`` (default 10) turns or a budget.

    Arguments:
        corpus: the site's JSONL corpus (default: the wiki summaries); questions come from it.
        site_url: an already running ``forage serve site`` of that corpus (default: in-process).
        qa_file, num_tasks, task_seed, hops, multi_hop_fraction: as for SearchQA-v0.
        view_chars, fetch_timeout, max_bytes, allowed_hosts and the :class:`ToolEnv` arguments.
    """

    default_reward_weights = {"format": 0.1, "exact_match": 1.0, "f1": 0.0, "tool_use": 0.1}
    default_system_prompt = ("You answer questions by browsing an encyclopedia web site. Search it, open and read "
                             "articles, follow links if needed, and call answer with a short final answer.")
    browser_tools = ("search", "open", "click", "find", "scroll", "back")

    def __init__(self, *, qa_file: str | None = None, num_tasks: int | None = 1000, task_seed: int = 0,
                 hops: Sequence[int] | int = (1, 2), multi_hop_fraction: float = 0.5, corpus: str | None = None,
                 max_turns: int = 10, **kwargs: Any) -> None:
        self.qa_file, self.num_tasks, self.task_seed = qa_file, num_tasks, task_seed
        self.hops = (hops,) if isinstance(hops, int) else tuple(hops)
        self.multi_hop_fraction = multi_hop_fraction
        super().__init__(corpus=corpus, max_turns=max_turns, **kwargs)

    def load_tasks(self) -> Iterable[Task]:
        from .search import searchqa_tasks

        return searchqa_tasks(self.qa_file, self.corpus, self.hops, self.num_tasks, self.task_seed,
                              self.multi_hop_fraction)

    def make_tools(self) -> Iterable[Tool]:
        return [*super().make_tools(), answer_tool()]

    def format_prompt(self, task: Task) -> str:
        return (f"{task.prompt}\n\nThe encyclopedia is the web site {self.site_url}/ . Use search(query) to find "
                "articles, click(link_id) to follow a link shown as [id: text], and answer(answer) to finish.")

    def score(self, episode: Episode) -> dict[str, float]:
        return {**best_match(episode.answer, episode.task.answer),
                "tool_use": 1.0 if self._pages_visited(episode) > 0 else 0.0}

    def oracle_answer(self, task: Task) -> str:
        """The reference answer (for scripted agents and tests)."""
        return task.answer[0] if isinstance(task.answer, list) else str(task.answer)
