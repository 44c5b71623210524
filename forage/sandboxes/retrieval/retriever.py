"""Retriever: a corpus with its dense (FAISS) and BM25 indexes, saved as one folder, and the cached default."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .corpus import Document, corpus_fingerprint, default_corpus, document_contents
from .dense import DenseIndex, DenseIndexConfig
from .encoder import Encoder, EncoderConfig
from .lexical import BM25Index, rrf_fuse

__all__ = ["Hit", "Retriever", "default_index_dir", "load_default_retriever", "load_cached_retriever", "METHODS", "MAX_K"]

METHODS = ("dense", "bm25", "hybrid")
MAX_K = 100  # the most hits one query may ask for


@dataclass
class Hit:
    """One retrieved document and its score."""

    id: str
    title: str
    text: str
    score: float

    def to_search_r1(self, with_score: bool = True) -> dict:
        """Search-R1's result entry: ``{"document": {"id", "contents", "title", "text"}, "score"}``."""
        doc = {"id": self.id, "contents": f'"{self.title}"\n{self.text}', "title": self.title, "text": self.text}
        return {"document": doc, "score": self.score} if with_score else doc


@dataclass
class IndexMeta:
    """What an index folder holds and how it was built."""

    corpus: str
    corpus_fingerprint: str
    encoder_fingerprint: str
    encoder_path: str
    max_seq_length: int
    kind: str
    n_docs: int
    dim: int
    build_seconds: float = 0.0
    encode_docs_per_s: float = 0.0
    extra: dict = field(default_factory=dict)


class Retriever:
    """Dense, BM25 or hybrid (RRF) search over one corpus; thread-safe."""

    def __init__(self, docs: Sequence[Document], encoder: Encoder, dense: DenseIndex, bm25: BM25Index | None,
                 meta: IndexMeta) -> None:
        self.docs = list(docs)
        self.encoder = encoder
        self.dense = dense
        self.bm25 = bm25
        self.meta = meta
        self._lock = threading.Lock()
        self._by_id = {d.id: i for i, d in enumerate(self.docs)}

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def build(cls, docs: Sequence[Document], encoder: Encoder | None = None, index: DenseIndexConfig | None = None,
              *, corpus_name: str = "custom", bm25: bool = True, progress: bool = False,
              chunk: int = 256) -> "Retriever":
        """Embed ``docs`` (batched, with an optional tqdm bar) and build the indexes."""
        if not docs:
            raise ValueError("cannot build an index over an empty corpus")
        encoder = encoder or Encoder()
        index = index or DenseIndexConfig()
        texts = [f"{d.title}. {d.text}" if d.title else d.text for d in docs]
        started = time.perf_counter()
        parts = []
        from tqdm.auto import tqdm

        with tqdm(total=len(texts), desc="embedding", unit="doc", disable=not progress) as bar:
            for i in range(0, len(texts), chunk):
                parts.append(encoder.encode_passages(texts[i:i + chunk]))
                bar.update(len(texts[i:i + chunk]))
        vectors = np.concatenate(parts)
        encode_s = time.perf_counter() - started
        dense = DenseIndex.build(vectors, index)
        lexical = BM25Index.build(texts) if bm25 else None
        total = time.perf_counter() - started
        meta = IndexMeta(corpus=corpus_name, corpus_fingerprint=corpus_fingerprint(docs),
                         encoder_fingerprint=encoder.fingerprint(), encoder_path=str(encoder.path),
                         max_seq_length=encoder.config.max_seq_length, kind=index.kind, n_docs=len(docs),
                         dim=encoder.dim, build_seconds=round(total, 2),
                         encode_docs_per_s=round(len(docs) / max(encode_s, 1e-9), 1))
        return cls(docs, encoder, dense, lexical, meta)

    def save(self, folder: str | Path) -> Path:
        """Write docs, indexes and metadata into ``folder`` (atomically replaced)."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        with open(tmp / "docs.jsonl", "w", encoding="utf-8") as f:
            for d in self.docs:
                f.write(json.dumps({"id": d.id, "title": d.title, "text": d.text}, ensure_ascii=False) + "\n")
        self.dense.save(tmp / "dense.faiss")
        if self.bm25 is not None:
            self.bm25.save(tmp / "bm25")
        (tmp / "meta.json").write_text(json.dumps(asdict(self.meta), indent=1))
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path, encoder: Encoder | None = None, index: DenseIndexConfig | None = None) -> "Retriever":
        """Open an index folder written by :meth:`save` (``forage index build``)."""
        folder = Path(folder)
        if not (folder / "meta.json").exists():
            raise FileNotFoundError(f"{folder} is not an index folder (no meta.json); build one with `forage index build`")
        raw = json.loads((folder / "meta.json").read_text())
        meta = IndexMeta(**raw)
        encoder = encoder or Encoder(EncoderConfig(path=meta.encoder_path, max_seq_length=meta.max_seq_length))
        if encoder.dim != meta.dim:
            raise ValueError(f"encoder dim {encoder.dim} != index dim {meta.dim}: use the encoder the index was built with")
        docs = []
        with open(folder / "docs.jsonl", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                docs.append(Document(row["id"], row["title"], row["text"]))
        dense = DenseIndex.load(folder / "dense.faiss", index)
        bm25 = BM25Index.load(folder / "bm25") if (folder / "bm25").exists() else None
        if bm25 is not None:
            bm25.n_docs = len(docs)
        return cls(docs, encoder, dense, bm25, meta)

    # -- searching ---------------------------------------------------------------------------
    def doc(self, doc_id: str) -> Document | None:
        """The document with ``doc_id``, or None."""
        i = self._by_id.get(doc_id)
        return None if i is None else self.docs[i]

    def search_ids(self, queries: Sequence[str], k: int = 3, method: str = "dense",
                   vectors: np.ndarray | None = None, max_k: int = MAX_K) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row ids) arrays for a batch of queries (k clamped to 1..``max_k`` and the corpus size)."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
        k = max(1, min(int(k), int(max_k), len(self.docs)))
        if method == "bm25":
            if self.bm25 is None:
                raise ValueError("this index has no BM25 part (built with --no-bm25)")
            with self._lock:
                return self.bm25.search(queries, k)
        if vectors is None:
            vectors = self.encoder.encode_queries(queries)
        with self._lock:
            scores, ids = self.dense.search(vectors, k if method == "dense" else min(len(self.docs), 4 * k))
        if method == "dense":
            return scores, ids
        if self.bm25 is None:
            raise ValueError("hybrid search needs the BM25 part; this index was built without it")
        with self._lock:
            _, lex = self.bm25.search(queries, min(len(self.docs), 4 * k))
        return rrf_fuse([ids, lex], k)

    def search(self, queries: Sequence[str], k: int = 3, method: str = "dense") -> list[list[Hit]]:
        """Top-``k`` hits for each query (k is clamped to 1..100)."""
        scores, ids = self.search_ids(queries, k, method)
        out = []
        for srow, irow in zip(scores, ids):
            hits = []
            for s, i in zip(srow, irow):
                if i >= 0:
                    d = self.docs[int(i)]
                    hits.append(Hit(d.id, d.title, d.text, float(s)))
            out.append(hits)
        return out


def default_index_dir(kind: str = "flat", encoder: Encoder | None = None) -> Path:
    """Cache folder of the default (wiki summaries) index, keyed by corpus + encoder hash."""
    from ...assets import cache_dir

    enc_fp = encoder.fingerprint() if encoder is not None else _default_encoder_fingerprint()
    return cache_dir("index") / f"wiki-{corpus_fingerprint(default_corpus())}-{enc_fp}-{kind}"


def _default_encoder_fingerprint() -> str:
    """The default encoder's fingerprint, from its folder alone (no model loading)."""
    from .encoder import default_encoder_path, encoder_fingerprint

    return encoder_fingerprint(default_encoder_path(), EncoderConfig())


_LOADED: dict[str, Retriever] = {}
_LOADED_LOCK = threading.Lock()


def load_cached_retriever(docs: Sequence[Document], corpus_name: str = "custom", kind: str = "flat",
                          progress: bool = True, log: Callable[[str], None] | None = None,
                          folder: Path | None = None) -> Retriever:
    """The index of ``docs`` from the cache (keyed by corpus + encoder hash), built there first if missing."""
    from ...assets import cache_dir

    if folder is None:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in corpus_name)[:40] or "corpus"
        folder = cache_dir("index") / f"{safe}-{corpus_fingerprint(docs)}-{_default_encoder_fingerprint()}-{kind}"
    key = str(folder)
    with _LOADED_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        if (folder / "meta.json").exists():
            r = Retriever.load(folder)
        else:
            if log:
                log(f"building the {corpus_name} {kind} index into {folder} (once; minutes on CPU for 10k docs)")
            r = Retriever.build(docs, index=DenseIndexConfig(kind=kind), corpus_name=corpus_name, progress=progress)
            r.save(folder)
        _LOADED[key] = r
        return r


def load_default_retriever(kind: str = "flat", progress: bool = True,
                           log: Callable[[str], None] | None = None) -> Retriever:
    """The default wiki index: loaded from the cache, built there first if missing (minutes on CPU)."""
    return load_cached_retriever(default_corpus(), "wiki", kind, progress, log, folder=default_index_dir(kind))
