"""LookupQA: multi-hop questions over a seeded, generated knowledge base of fictional entities."""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ..tools import Tool, ToolError, tool
from .base import Episode, Task, ToolEnv, answer_tool
from .rewards import normalize_answer

__all__ = ["KnowledgeBase", "Entity", "LookupQAEnv", "generate_kb", "generate_questions"]

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gl", "h", "k", "kr", "l", "m", "n", "p", "qu", "r", "s", "st", "t", "th", "v", "w", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "io", "ou", "y"]
_CODAS = ["", "n", "r", "s", "th", "l", "x", "nd", "rk", "m"]
_PROFESSIONS = ["cartographer", "glassblower", "astronomer", "clockmaker", "botanist", "weaver", "linguist",
                "shipwright", "apothecary", "archivist", "beekeeper", "composer"]
_INDUSTRIES = ["shipping", "textiles", "optics", "mining", "publishing", "clockwork", "brewing", "ceramics"]
_CONTINENTS = ["Veloria", "Ostmark", "Carradine", "Sulvane"]
_CURRENCIES = ["crown", "mark", "sol", "talent", "florin", "drachm", "real", "ducat"]
_CITY_SUFFIX = ["port", "ford", "holm", "gard", "wick", "ton", "mere", "stead"]
_COMPANY_SUFFIX = ["Works", "Company", "Guild", "Holdings", "& Sons", "Trading House"]


@functools.lru_cache(maxsize=8192)
def _normalized_short(text: str) -> str:
    return normalize_answer(text)


def _normalized(text: str) -> str:
    """``normalize_answer``, memoised for short strings (names and answers repeat across episodes)."""
    return _normalized_short(text) if len(text) <= 256 else normalize_answer(text)


@dataclass
class Entity:
    """A fictional entity: its name, kind and facts (attribute -> value)."""

    name: str
    kind: str
    facts: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """The entity's facts as readable lines."""
        lines = [f"{self.name} ({self.kind})"]
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in self.facts.items()]
        return "\n".join(lines)


class KnowledgeBase:
    """Entities by name, with exact, case-insensitive and fuzzy lookup and keyword search."""

    def __init__(self, entities: Iterable[Entity]):
        self.entities: dict[str, Entity] = {}
        for e in entities:
            self.entities[e.name] = e
        self._by_key = {normalize_answer(n): e for n, e in self.entities.items()}
        self._by_name = {n: self._by_key[normalize_answer(n)] for n in self.entities}  # exact names skip normalising
        self._index: dict[str, set[str]] = {}
        for e in self.entities.values():
            text = e.name + " " + " ".join(e.facts.values()) + " " + e.kind
            for w in set(normalize_answer(text).split()):
                self._index.setdefault(w, set()).add(e.name)

    def get(self, name: str) -> Entity | None:
        """The entity called ``name`` (case, punctuation and articles ignored), or None."""
        hit = self._by_name.get(name)
        return hit if hit is not None else self._by_key.get(_normalized(name))

    def similar(self, name: str, n: int = 3) -> list[str]:
        """Names close to ``name``."""
        keys = difflib.get_close_matches(normalize_answer(name), list(self._by_key), n=n, cutoff=0.6)
        return [self._by_key[k].name for k in keys]

    def search(self, query: str, k: int = 5) -> list[Entity]:
        """Entities sharing the most words with ``query`` (ties broken by name)."""
        counts: dict[str, int] = {}
        for w in set(normalize_answer(query).split()):
            for name in self._index.get(w, ()):
                counts[name] = counts.get(name, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [self.entities[name] for name, _ in ranked[:k]]


def _names(rng: np.random.Generator, n: int, syllables: tuple[int, int], taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        k = int(rng.integers(syllables[0], syllables[1] + 1))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(k)) + rng.choice(_CODAS)
        word = word.capitalize()
        if word not in taken and len(word) >= 4:
            taken.add(word)
            out.append(word)
    return out


@functools.lru_cache(maxsize=16)
def generate_kb(seed: int = 0, people: int = 200) -> KnowledgeBase:
    """A reproducible knowledge base: countries, cities, companies and people linked to each other.

    Cached: envs built with the same arguments share one (read-only) knowledge base.
    """
    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    n_countries = max(4, people // 25)
    n_cities = max(8, people // 5)
    n_companies = max(6, people // 6)
    countries = [Entity(n, "country") for n in _names(rng, n_countries, (2, 3), taken)]
    cities = [Entity(n + str(rng.choice(_CITY_SUFFIX)), "city") for n in _names(rng, n_cities, (1, 2), taken)]
    given = _names(rng, people, (1, 2), taken)
    family = _names(rng, people, (2, 3), taken)
    persons = [Entity(f"{g} {f}", "person") for g, f in zip(given, family)]
    companies = [Entity(f"{n} {rng.choice(_COMPANY_SUFFIX)}", "company") for n in _names(rng, n_companies, (2, 2), taken)]
    for i, country in enumerate(countries):
        country.facts["continent"] = str(rng.choice(_CONTINENTS))
        country.facts["currency"] = str(rng.choice(_CURRENCIES))
    for i, city in enumerate(cities):
        country = countries[i % len(countries)] if i < len(countries) else countries[int(rng.integers(len(countries)))]
        city.facts["country"] = country.name
        city.facts["founded"] = str(int(rng.integers(900, 1900)))
    for country in countries:  # capital: one of its cities
        own = [c for c in cities if c.facts["country"] == country.name]
        country.facts["capital"] = own[int(rng.integers(len(own)))].name
    for p in persons:
        p.facts["born_in"] = cities[int(rng.integers(len(cities)))].name
        p.facts["birth_year"] = str(int(rng.integers(1800, 2000)))
        p.facts["profession"] = str(rng.choice(_PROFESSIONS))
    for c in companies:
        c.facts["headquarters"] = cities[int(rng.integers(len(cities)))].name
        c.facts["founder"] = persons[int(rng.integers(len(persons)))].name
        c.facts["industry"] = str(rng.choice(_INDUSTRIES))
    for p in persons:
        p.facts["employer"] = companies[int(rng.integers(len(companies)))].name
    return KnowledgeBase([*countries, *cities, *companies, *persons])


# Question templates: (hops, subject kind, path of attributes, question text). The answer is the
# value reached by following the attributes from the subject; the lookups needed are the
# subject and every intermediate entity.
_TEMPLATES: list[tuple[int, str, tuple[str, ...], str]] = [
    (1, "person", ("born_in",), "In which city was {s} born?"),
    (1, "person", ("profession",), "What is the profession of {s}?"),
    (1, "person", ("birth_year",), "In which year was {s} born?"),
    (1, "person", ("employer",), "Which company does {s} work for?"),
    (1, "city", ("country",), "In which country is the city of {s}?"),
    (1, "city", ("founded",), "In which year was the city of {s} founded?"),
    (1, "company", ("founder",), "Who founded {s}?"),
    (1, "company", ("headquarters",), "In which city is {s} headquartered?"),
    (1, "country", ("capital",), "What is the capital of {s}?"),
    (1, "country", ("currency",), "What currency is used in {s}?"),
    (2, "person", ("born_in", "country"), "In which country was {s} born?"),
    (2, "person", ("employer", "headquarters"), "In which city is the employer of {s} headquartered?"),
    (2, "person", ("born_in", "founded"), "In which year was the birthplace of {s} founded?"),
    (2, "company", ("founder", "born_in"), "In which city was the founder of {s} born?"),
    (2, "company", ("headquarters", "country"), "In which country is {s} headquartered?"),
    (2, "company", ("founder", "profession"), "What is the profession of the founder of {s}?"),
    (3, "person", ("born_in", "country", "capital"), "What is the capital of the country where {s} was born?"),
    (3, "company", ("founder", "born_in", "country"), "In which country was the founder of {s} born?"),
    (3, "person", ("employer", "founder", "born_in"), "In which city was the founder of {s}'s employer born?"),
    (3, "company", ("headquarters", "country", "currency"), "What currency is used in the country where {s} is headquartered?"),
]


def generate_questions(kb: KnowledgeBase, n: int, hops: Sequence[int], seed: int = 0) -> list[Task]:
    """``n`` distinct questions with the given hop counts, each with its answer and lookup path."""
    rng = np.random.default_rng(seed + 7919)
    templates = [t for t in _TEMPLATES if t[0] in set(hops)]
    if not templates:
        raise ValueError(f"no question templates for hops={list(hops)}; use 1, 2 and/or 3")
    by_kind: dict[str, list[Entity]] = {}
    for e in kb.entities.values():
        by_kind.setdefault(e.kind, []).append(e)
    tasks: list[Task] = []
    seen: set[str] = set()
    attempts = 0
    while len(tasks) < n and attempts < n * 50:
        attempts += 1
        h, kind, path, text = templates[int(rng.integers(len(templates)))]
        subject = by_kind[kind][int(rng.integers(len(by_kind[kind])))]
        chain = [subject.name]
        value = subject.name
        for attr in path:
            ent = kb.get(value)
            assert ent is not None
            value = ent.facts[attr]
            chain.append(value)
        question = text.format(s=subject.name)
        if question in seen:
            continue
        seen.add(question)
        tasks.append(Task(
            id=f"lookup-{h}hop-{len(tasks):05d}",
            prompt=question,
            answer=value,
            metadata={"hops": h, "path": chain[:-1], "attributes": list(path)},
        ))
    return tasks


@functools.lru_cache(maxsize=32)
def _cached_questions(kb_seed: int, people: int, n: int, hops: tuple[int, ...]) -> tuple[Task, ...]:
    return tuple(generate_questions(generate_kb(kb_seed, people), n, hops, seed=kb_seed))


def make_lookup_tools(kb: KnowledgeBase, search_k: int = 5) -> list[Tool]:
    """The ``lookup``, ``search`` and ``answer`` tools over ``kb``."""
    described: dict[str, str] = {}  # the knowledge base is read-only: describe each entity once

    @tool
    def lookup(name: str) -> str:
        """Look up an entity (person, city, company or country) by its exact name and list its facts.

        Args:
            name: the entity's full name, e.g. "Quellport" or "Bra Zorvix"
        """
        ent = kb.get(name)
        if ent is None:
            close = kb.similar(name)
            hint = f" Did you mean: {', '.join(close)}?" if close else " Try the search tool."
            raise ToolError(f"no entity named {name[:200]!r}.{hint}")
        text = described.get(ent.name)
        if text is None:
            text = described[ent.name] = ent.describe()
        return text

    @tool
    def search(query: str, k: int = search_k) -> str:
        """Find entities whose names or facts share words with the query.

        Args:
            query: words to look for
            k: how many results to return (1 to 20)
        """
        if not 1 <= k <= 20:
            raise ToolError(f"k must be between 1 and 20, got {k}")
        hits = kb.search(query, k)
        if not hits:
            return "No results."
        return "\n".join(f"{i + 1}. {e.name} ({e.kind})" for i, e in enumerate(hits))

    return [lookup, search, answer_tool(description="Give your final answer (a name, place or year). Ends the episode.")]


class LookupQAEnv(ToolEnv):
    """Answer questions about fictional entities by looking them up, one hop at a time.

    ## Description
    A seeded generator builds a knowledge base of fictional countries, cities, companies and
    people linked to each other (born in, works for, founded by, headquartered in, capital of),
    then asks questions that need 1 to 3 lookups ("In which country was the founder of Brix
    Works born?"). Nothing is memorisable, so success measures tool use. It needs no asset,
    steps in microseconds, and is the env the trainer and rollout tests use first.

    ## Action Space
    Text (``UnicodeText``): the model's turn, with tool calls in the env's ``tool_format``
    (Hermes ``<tool_call>`` JSON by default).

    ## Observation Space
    Text: the question on reset, then the tool results of each turn.

    ## Tools
    ``lookup(name)`` lists an entity's facts; ``search(query, k)`` finds entities by words;
    ``answer(answer)`` gives the final answer and ends the episode.

    ## Rewards
    ``correct``: 1 for an exact match after SQuAD normalisation, else 0 (weight 1).
    ``format``: -1 on a turn with a malformed/unknown tool call or none (weight 0.1).

    ## Starting State
    A question drawn with the reset seed, or the one named by ``options["task_id"]``.

    ## Episode End
    Terminated when ``answer`` is called; truncated after ``max_turns`` turns (default 6) or
    when a tool/token budget runs out.

    ## Arguments
    ``hops`` (int or list, default ``(1, 2, 3)``), ``num_tasks`` (default 500), ``kb_seed``
    (default 0), ``kb_people`` (default 200), plus every ``ToolEnv`` option
    (``tool_format``, ``max_turns``, ``max_tool_calls``, ``max_tokens``, ``reward_weights``...).
    """

    default_reward_weights = {"format": 0.1, "correct": 1.0}
    default_system_prompt = (
        "You answer questions about a fictional world. You know nothing about it yourself: "
        "use the lookup and search tools to find facts, then call answer with the final answer."
    )

    def __init__(
        self,
        hops: int | Sequence[int] = (1, 2, 3),
        num_tasks: int = 500,
        kb_seed: int = 0,
        kb_people: int = 200,
        max_turns: int = 6,
        **kwargs: Any,
    ) -> None:
        self.hops = [hops] if isinstance(hops, int) else list(hops)
        self.num_tasks = num_tasks
        self.kb_seed = kb_seed
        self.kb_people = kb_people
        self.kb = generate_kb(kb_seed, kb_people)
        super().__init__(max_turns=max_turns, **kwargs)

    def load_tasks(self) -> list[Task]:
        return list(_cached_questions(self.kb_seed, self.kb_people, self.num_tasks, tuple(self.hops)))

    def make_tools(self) -> list[Tool]:
        return make_lookup_tools(self.kb)

    def score(self, episode: Episode) -> dict[str, float]:
        ans = episode.answer
        ok = ans is not None and _normalized(ans) == _normalized(str(episode.task.answer))
        return {"correct": float(ok)}

    def oracle_actions(self, task: Task) -> list[str]:
        """The turns of a perfect agent for ``task`` (one lookup per hop, then the answer)."""
        turns = [self.format_call("lookup", name=name) for name in task.metadata["path"]]
        return turns + [self.format_call("answer", answer=str(task.answer))]
