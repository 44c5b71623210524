"""FanOutQA's string accuracy (loose and strict), computed as the benchmark's ``fanoutqa.eval`` does.

An answer is scored against the question's structured reference (a string, number, bool, list or
dict): every primitive in it (for a dict, every key *and* every value) counts once, and it is
found when its normalised form occurs in the normalised answer between word boundaries. Loose
accuracy is the share found; strict accuracy is 1 only when all are found. Normalisation, as
``fanoutqa.norm.normalize``: lower case, ``ftfy.fix_text``, thousands commas dropped from
numbers (``680,000`` -> ``680000``), every spaCy token replaced by its lemma, ``,.?!:;`` removed,
runs of whitespace made one space.

The benchmark lemmatises with spaCy's ``en_core_web_sm`` model, which is not on PyPI; when it is
not installed this uses spaCy's English tokenizer (the same rules) with the lookup lemmatizer of
``spacy-lookups-data`` (lemmas without part-of-speech tags), and without spaCy at all a plain
tokenizer with no lemmas. :func:`pipeline_name` says which one is in use.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Accuracy", "answer_in_text", "normalize", "pipeline_name"]


@dataclass(frozen=True)
class Accuracy:
    """One answer's string accuracy: ``score`` (loose), ``found`` (strict) and the normalised strings missing."""

    found: bool
    score: float
    missing: list[str] = field(default_factory=list)


_lock = threading.Lock()
_nlp: Any = None
_name = ""


def _load() -> tuple[Any, str]:
    global _nlp, _name
    with _lock:
        if _nlp is None:
            try:
                import spacy
            except ImportError:
                _nlp, _name = _plain_tokens, "regex tokens, no lemmas (spaCy not installed)"
                return _nlp, _name
            try:
                _nlp, _name = spacy.load("en_core_web_sm"), "spaCy en_core_web_sm (as the benchmark)"
            except OSError:
                nlp = spacy.blank("en")
                try:
                    nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
                    nlp.initialize()
                    _name = "spaCy English tokenizer + lookup lemmatizer (en_core_web_sm not installed)"
                except Exception:  # no spacy-lookups-data: tokens without lemmas
                    nlp = spacy.blank("en")
                    _name = "spaCy English tokenizer, no lemmas (spacy-lookups-data not installed)"
                _nlp = nlp
        return _nlp, _name


def pipeline_name() -> str:
    """Which tokenizer/lemmatizer :func:`normalize` uses here."""
    return _load()[1]


@dataclass
class _Token:
    text: str
    lemma_: str = ""


def _plain_tokens(text: str) -> list[_Token]:
    return [_Token(t, t) for t in re.findall(r"\w+|[^\w\s]", text)]


def _lemmas(text: str) -> str:
    nlp, _ = _load()
    return " ".join(tok.lemma_ or tok.text for tok in nlp(text))


@functools.lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """FanOutQA's normalisation of one string (see the module docstring)."""
    text = str(text).lower()
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = re.sub(r"(\d+,)+\d+(\.\d+)?", lambda m: m.group(0).replace(",", ""), text)
    text = _lemmas(text)
    text = re.sub(r"[,.?!:;]", "", text)
    return re.sub(r"\s+", " ", text)


def answer_in_text(reference: Any, candidate: str) -> Accuracy:
    """How much of ``reference`` (FanOutQA's answer structure) ``candidate`` states; see the module docstring."""
    if isinstance(reference, (list, dict)):
        parts = list(reference.keys()) + list(reference.values()) if isinstance(reference, dict) else reference
        missing: list[str] = []
        for part in parts:
            missing.extend(answer_in_text(part, candidate).missing)
        total = len(parts)
        if total == 0:  # the benchmark divides by zero here; no dev question has an empty answer
            return Accuracy(True, 1.0, [])
        hits = total - len(missing)
        return Accuracy(hits == total, hits / total, missing)
    if isinstance(reference, bool):
        reference = "yes" if reference else "no"
    wanted = normalize(reference)
    if re.search(rf"\b{re.escape(wanted)}\b", normalize(candidate)) is None:
        return Accuracy(False, 0.0, [wanted])
    return Accuracy(True, 1.0, [])
