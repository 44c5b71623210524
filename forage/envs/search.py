"""Search-QA environments: questions answered by searching an encyclopedia index (dense, BM25 or hybrid)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..tools import Tool, ToolError
from .base import Episode, Task, ToolEnv, answer_tool
from .rewards import best_match

__all__ = ["SearchQAEnv", "FanOutQAEnv", "make_search_tool", "resolve_backend", "fanoutqa_tasks", "searchqa_tasks"]

SEARCH_SYSTEM_PROMPT = (
    "You answer questions by searching an encyclopedia. Call the search tool with short queries, "
    "read the documents, search again if needed, and call answer with a short final answer."
)


def resolve_backend(backend: Any = None, corpus: str | None = None, index: str | None = None,
                    method: str = "dense", timeout: float = 30.0):
    """A search backend: an object with ``asearch``, an ``http(s)://`` service URL, or in-process.

    In-process uses ``index`` (a folder from ``forage index build``), else the cached index of
    ``corpus`` (a JSONL path; built on first use), else the cached default wiki index.
    """
    from ..sandboxes.retrieval.backends import HTTPBackend, InProcessBackend

    if backend is not None and hasattr(backend, "asearch"):
        return backend
    if isinstance(backend, str) and backend.startswith(("http://", "https://")):
        return HTTPBackend(backend, timeout=timeout, method=None if method == "dense" else method)
    if backend not in (None, "inprocess", "local"):
        raise ValueError(f"backend must be None, 'inprocess', an http(s):// URL or an object with asearch(); got {backend!r}")
    from ..sandboxes.retrieval import Retriever, load_corpus
    from ..sandboxes.retrieval.retriever import load_cached_retriever, load_default_retriever

    if index:
        retriever = Retriever.load(index)
    elif corpus and corpus != "default":
        retriever = load_cached_retriever(load_corpus(corpus), corpus_name=Path(corpus).stem)
    else:
        retriever = load_default_retriever()
    return InProcessBackend(retriever, method=method)


def make_search_tool(backend: Any, max_k: int = 10, default_k: int = 3, max_doc_chars: int = 600,
                     timeout: float | None = 60.0) -> Tool:
    """The ``search(query, k)`` tool over ``backend``; failures (service down, bad query) become error observations."""
    from ..sandboxes.retrieval.backends import BackendError, format_hits

    async def run(episode: Episode | None = None, query: str = "", k: int = default_k) -> str:
        q = query.strip()
        if not q:
            raise ToolError("the query is empty; write a few words to search for")
        try:
            hits = (await backend.asearch([q], k))[0]
        except BackendError as e:
            raise ToolError(f"search is unavailable: {e}") from None
        if episode is not None:
            seen = episode.state.setdefault("retrieved_ids", [])
            seen.extend(h.id for h in hits)
            episode.state["searches"] = episode.state.get("searches", 0) + 1
        return format_hits(hits, max_doc_chars)

    params = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "what to search for (a few keywords or a short question)"},
            "k": {"type": "integer", "minimum": 1, "maximum": max_k, "default": default_k,
                  "description": f"number of documents to return (1-{max_k})"},
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    return Tool("search", "Search the encyclopedia and return the top-k documents.", params, run, episode_arg="episode",
                timeout=timeout)


def searchqa_tasks(qa_file: str | None = None, corpus: str | None = None, hops: Sequence[int] = (1, 2),
                   num_tasks: int | None = 1000, task_seed: int = 0, multi_hop_fraction: float = 0.5) -> list[Task]:
    """SearchQA's tasks: a user QA JSONL, else a seeded sample of the questions generated from ``corpus``."""
    from .search_tasks import cached_corpus_tasks, load_qa_jsonl, sample_tasks

    if qa_file:
        return load_qa_jsonl(qa_file)
    from ..sandboxes.retrieval import load_corpus

    docs = load_corpus(corpus if corpus not in (None, "default") else None)
    return sample_tasks(cached_corpus_tasks(docs, hops), num_tasks, task_seed, multi_hop_fraction)


class _SearchEnvBase(ToolEnv):
    default_reward_weights = {"format": 0.1, "exact_match": 1.0, "f1": 0.0, "tool_use": 0.1}
    default_system_prompt = SEARCH_SYSTEM_PROMPT

    def __init__(self, *, backend: Any = None, corpus: str | None = None, index: str | None = None,
                 method: str = "dense", max_k: int = 10, default_k: int = 3, service_timeout: float = 30.0,
                 search_timeout: float | None = 60.0, max_turns: int = 6, **kwargs: Any) -> None:
        self._backend_spec = (backend, corpus, index, method, service_timeout)
        self.max_k, self.default_k, self.search_timeout = max_k, default_k, search_timeout
        self.backend = resolve_backend(backend, corpus, index, method, service_timeout)
        super().__init__(max_turns=max_turns, **kwargs)

    def make_tools(self) -> Iterable[Tool]:
        return [make_search_tool(self.backend, self.max_k, self.default_k, timeout=self.search_timeout), answer_tool()]

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """As :meth:`ToolEnv.areset`; ``options["train_step"]`` (the trainer's step) goes to :meth:`set_train_step`."""
        if options and options.get("train_step") is not None:
            self.set_train_step(int(options["train_step"]))
        return await super().areset(seed=seed, options=options)

    def set_train_step(self, step: int) -> None:
        """Tell the backend the trainer's step (the simulated engine's noise curriculum follows it)."""
        setter = getattr(self.backend, "set_step", None)
        if callable(setter):
            setter(int(step))

    def _tool_use(self, ep: Episode) -> float:
        return 1.0 if ep.state.get("searches", 0) > 0 else 0.0


class SearchQAEnv(_SearchEnvBase):
    """Answer single-hop and bridge (two-hop) questions by searching an encyclopedia index.

    Description:
        The default tasks are generated from the default corpus (10,033 Wikipedia vital-article
        summaries): a single-hop question masks an article's first sentence ("___ is the ratio of
        a substance's mass to its volume") and asks for the article; a bridge question also replaces
        another article named in that sentence by that article's own masked definition, so two
        searches are needed. 9,310 single-hop and 3,121 bridge questions exist; ``num_tasks`` are
        sampled with ``task_seed``. A user QA JSONL (``question``, ``answers``) replaces them.

    Action Space:
        Text with tool calls in the env's format: ``search(query, k)`` (k from 1 to ``max_k``)
        and ``answer(answer)``, which ends the episode.

    Observation Space:
        Text: the question, then the search results (``Doc i (Title: ...) text``) or error
        messages (an empty query, an unreachable service) after each turn.

    Rewards:
        ``exact_match`` and ``f1`` of the answer after SQuAD-style normalisation (best over the
        accepted answers), ``tool_use`` (1 if at least one search succeeded) at the end, and
        ``format`` (-1 for a malformed turn) on every step. Default weights: exact_match 1,
        f1 0 (reported only), tool_use 0.1, format 0.1.

    Starting State:
        A question sampled with the reset seed (or ``options["task_id"]``/``["task_index"]``).
        ``options["train_step"]`` passes the trainer's step to the backend (``set_step``: the
        simulated engine's noise curriculum).

    Episode End:
        Terminated when ``answer`` is called; truncated after ``max_turns`` turns or a budget.

    Arguments:
        backend: None (in-process index), an ``http://`` URL of ``forage serve retriever``, or an
            object with ``asearch(queries, k)`` (e.g. ``SimulatedSearchBackend``).
        corpus: a JSONL corpus (``id``, ``title``, ``text``) for the in-process index and the
            generated questions (default: the wiki summaries).
        index: a folder from ``forage index build`` (overrides ``corpus`` for searching).
        method: ``dense``, ``bm25`` or ``hybrid``.
        qa_file: a QA JSONL (``question``, ``answers``) to use instead of generated questions.
        num_tasks, task_seed, hops, multi_hop_fraction: which generated questions to use.
        max_k, default_k, max_turns and the :class:`ToolEnv` arguments; search_timeout (s, None
            for none: an LLM-simulated engine on a CPU can be slow), service_timeout (HTTP).
    """

    def __init__(self, *, qa_file: str | None = None, num_tasks: int | None = 1000, task_seed: int = 0,
                 hops: Sequence[int] | int = (1, 2), multi_hop_fraction: float = 0.5, corpus: str | None = None,
                 **kwargs: Any) -> None:
        self.qa_file, self.num_tasks, self.task_seed = qa_file, num_tasks, task_seed
        self.hops = (hops,) if isinstance(hops, int) else tuple(hops)
        self.multi_hop_fraction = multi_hop_fraction
        self.corpus = corpus
        super().__init__(corpus=corpus, **kwargs)

    def load_tasks(self) -> Iterable[Task]:
        return searchqa_tasks(self.qa_file, self.corpus, self.hops, self.num_tasks, self.task_seed,
                              self.multi_hop_fraction)

    def score(self, episode: Episode) -> dict[str, float]:
        scores = best_match(episode.answer, episode.task.answer)
        return {**scores, "tool_use": self._tool_use(episode)}

    def oracle_answer(self, task: Task) -> str:
        """The reference answer (for scripted agents and tests)."""
        return task.answer[0] if isinstance(task.answer, list) else str(task.answer)


def _leaves(answer: Any) -> list[str]:
    if isinstance(answer, dict):
        return [s for v in answer.values() for s in _leaves(v)]
    if isinstance(answer, (list, tuple)):
        return [s for v in answer for s in _leaves(v)]
    if isinstance(answer, bool):
        return ["yes" if answer else "no"]
    return [str(answer)]


def _evidence_titles(q: dict) -> list[str]:
    out = []
    for sub in q.get("decomposition") or []:
        if sub.get("evidence"):
            out.append(sub["evidence"]["title"])
        out.extend(_evidence_titles(sub))
    return out


def fanoutqa_tasks(path: str | None = None, titles: set[str] | None = None) -> list[Task]:
    """FanOutQA dev questions as tasks; ``metadata["coverage"]`` = share of evidence pages found in ``titles``."""
    from ..assets import fanoutqa_dev

    raw = json.loads(Path(path or fanoutqa_dev()).read_text(encoding="utf-8"))
    tasks = []
    for q in raw:
        evidence = _evidence_titles(q)
        covered = sum(t in titles for t in evidence) if titles is not None else 0
        tasks.append(Task(str(q["id"]), q["question"], _leaves(q["answer"]),
                          {"answer_raw": q["answer"], "evidence": evidence,
                           "coverage": covered / len(evidence) if evidence and titles is not None else 0.0}))
    return tasks


class FanOutQAEnv(_SearchEnvBase):
    """FanOutQA's 310 dev questions: fan-out multi-hop questions over many Wikipedia pages.

    Description:
        Each question ("What is the batting hand of each of the first five picks in the 1998 MLB
        draft?") needs facts from several pages. Only the dataset's JSON is used (its fetch code
        calls live Wikipedia). Coverage of the default corpus (wiki summaries, 10,033 articles):
        558 of the 2,142 evidence pages (26%) are in it; 161 of the 310 questions have at least
        one evidence page in it and only 8 have all of them. Summaries hold less than full
        pages, so expect low scores with the default corpus; give ``corpus=`` (a JSONL of full
        pages) or ``backend=`` (a service over a larger index) for serious use.
        ``min_coverage`` keeps only questions with at least that share of evidence pages in the
        search corpus.

    Action Space:
        ``search(query, k)`` and ``answer(answer)`` tool calls in the env's format.

    Observation Space:
        Text: the question, then search results or error messages.

    Rewards:
        ``answer_recall``: FanOutQA's loose string accuracy (``fanoutqa.eval``'s ``answer_in_text``,
        reproduced in :mod:`forage.envs.grading.fanoutqa`): the share of the reference's strings
        (every list item; every key and value of a dict; bools as yes/no) found between word
        boundaries in the answer, both normalised as FanOutQA does (ftfy, ``680,000`` ->
        ``680000``, spaCy lemmas, punctuation dropped). ``exact_match``: the strict accuracy (1
        when all are found). ``f1`` (token F1 against the joined values), ``tool_use`` and
        ``format``. Default weights: answer_recall 1, exact_match 0, f1 0, tool_use 0.1, format 0.1.
        Reference grader: ``fanoutqa.eval.string.answer_in_text`` with ``fanoutqa.norm``; measured
        agreement (``tests/test_graders_fanoutqa.py``): the same loose and strict score on
        3,568/3,568 answers built from the 310 dev questions (full, partial, values without keys,
        reformatted numbers, plurals, wrong); the score it replaced matched on 2,168 of them. The
        benchmark lemmatises with spaCy's ``en_core_web_sm``, which is not on PyPI: without it,
        spaCy's English tokenizer with the lookup lemmatizer of ``spacy-lookups-data`` is used
        (no part-of-speech tags, so e.g. "left" becomes "leave" on both sides), and the agreement
        above is measured with that pipeline on both sides.

    Starting State:
        A question sampled with the reset seed (or ``options["task_id"]``/``["task_index"]``).

    Episode End:
        Terminated when ``answer`` is called; truncated after ``max_turns`` turns (default 10).

    Arguments:
        backend, corpus, index, method, max_k, default_k: as for SearchQA-v0.
        fanoutqa_path: another FanOutQA-format JSON file.
        min_coverage: keep only questions whose evidence pages are this much in the corpus (0-1).
    """

    default_reward_weights = {"format": 0.1, "answer_recall": 1.0, "exact_match": 0.0, "f1": 0.0, "tool_use": 0.1}

    def __init__(self, *, fanoutqa_path: str | None = None, min_coverage: float = 0.0, corpus: str | None = None,
                 max_turns: int = 10, **kwargs: Any) -> None:
        self.fanoutqa_path, self.min_coverage, self.corpus = fanoutqa_path, min_coverage, corpus
        super().__init__(corpus=corpus, max_turns=max_turns, **kwargs)

    def load_tasks(self) -> Iterable[Task]:
        from ..sandboxes.retrieval import load_corpus

        titles = {d.title for d in load_corpus(self.corpus if self.corpus not in (None, "default") else None)}
        tasks = fanoutqa_tasks(self.fanoutqa_path, titles)
        kept = [t for t in tasks if t.metadata["coverage"] >= self.min_coverage]
        if not kept:
            raise ValueError(f"no FanOutQA question has evidence coverage >= {self.min_coverage} in this corpus")
        return kept

    def score(self, episode: Episode) -> dict[str, float]:
        from .grading.fanoutqa import answer_in_text

        if episode.answer is None:
            acc_loose, acc_strict = 0.0, 0.0
        else:
            acc = answer_in_text(episode.task.metadata["answer_raw"], str(episode.answer))
            acc_loose, acc_strict = acc.score, float(acc.found)
        f1 = best_match(episode.answer, ", ".join(episode.task.answer))["f1"] if episode.answer is not None else 0.0
        return {"answer_recall": acc_loose, "exact_match": acc_strict, "f1": f1, "tool_use": self._tool_use(episode)}
