"""Corpus loading, encoder, FAISS (flat/HNSW/IVF-PQ), BM25, hybrid fusion, save/load, CLI build."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _retrieval_helpers import TINY_DOCS, default_retriever, tiny_corpus, tiny_index  # noqa: F401
from forage.sandboxes.retrieval import (DenseIndex, DenseIndexConfig, Retriever, chunk_documents, load_corpus,
                                        load_jsonl_corpus, rrf_fuse)
from forage.sandboxes.retrieval.corpus import Document


def test_jsonl_corpus_and_search_r1_contents(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"id": "a", "title": "Alpha", "text": "first"}) + "\n\n"
                 + json.dumps({"id": "b", "contents": '"Beta"\nsecond doc'}) + "\n"
                 + json.dumps({"id": "c", "title": "Empty", "text": "  "}) + "\n")
    docs = load_jsonl_corpus(p)
    assert [(d.id, d.title, d.text) for d in docs] == [("a", "Alpha", "first"), ("b", "Beta", "second doc")]


@pytest.mark.parametrize("content,msg", [("{not json\n", "not JSON"), ("[1, 2]\n", "expected an object"),
                                         ('{"id": 1, "text": "x"}\n{"id": 1, "text": "y"}\n', "duplicate id"),
                                         ("\n", "no documents")])
def test_jsonl_corpus_errors_are_clear(tmp_path, content, msg):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(ValueError, match=msg):
        load_jsonl_corpus(p)


def test_chunking_covers_every_word_with_overlap():
    words = [f"w{i}" for i in range(250)]
    doc = Document("d", "T", " ".join(words))
    chunks = chunk_documents([doc, Document("s", "S", "short text")], words=100, overlap=20)
    ids = [c.id for c in chunks]
    assert ids == ["d#0", "d#1", "d#2", "s#0"]
    seen = [w for c in chunks[:3] for w in c.text.split()]
    assert set(seen) == set(words)
    assert chunks[1].text.split()[:20] == chunks[0].text.split()[-20:]
    with pytest.raises(ValueError):
        chunk_documents([doc], words=10, overlap=10)


def test_default_index_is_cached_and_complete(default_retriever):
    from forage.sandboxes.retrieval import default_index_dir

    r = default_retriever
    assert r.meta.n_docs == len(r.docs) == 10033 == r.dense.ntotal
    assert r.meta.dim == 384 and r.meta.kind == "flat"
    assert (default_index_dir() / "meta.json").exists()
    assert r.meta.encode_docs_per_s > 0


@pytest.mark.parametrize("method", ["dense", "bm25", "hybrid"])
def test_known_answers_rank_high(default_retriever, method):
    queries = ["capital and largest city of France", "Italian polymath of the High Renaissance",
               "fifth planet from the Sun, the largest in the Solar System"]
    expected = ["Paris", "Leonardo da Vinci", "Jupiter"]
    hits = default_retriever.search(queries, k=5, method=method)
    for want, row in zip(expected, hits):
        assert len(row) == 5
        assert want in [h.title for h in row], (method, want, [h.title for h in row])
        assert all(row[i].score >= row[i + 1].score for i in range(4))


def test_first_sentences_retrieve_their_own_article(default_retriever):
    rng = np.random.default_rng(0)
    docs = [default_retriever.docs[i] for i in rng.choice(len(default_retriever.docs), 40, replace=False)]
    queries = [d.text.split(". ")[0] for d in docs]
    hits = default_retriever.search(queries, k=5)
    found = sum(d.id in [h.id for h in row] for d, row in zip(docs, hits))
    assert found >= 36, f"only {found}/40 first sentences found their article in the top 5"


def test_bad_queries_never_crash(default_retriever):
    weird = ["", " ", "a" * 100_000, "\ud800 lone surrogate \udfff", "nul\x00byte", "🙂" * 500, "\u202e\ufeff"]
    for method in ("dense", "bm25", "hybrid"):
        rows = default_retriever.search(weird, k=3, method=method)
        assert len(rows) == len(weird)
        assert all(len(r) <= 3 for r in rows)
        assert len(rows[2]) == 3  # a huge query still gets results
    assert len(default_retriever.search(["x"], k=0)[0]) == 1         # k clamped up to 1
    assert len(default_retriever.search(["x"], k=10**9)[0]) == 100   # k clamped down to MAX_K
    assert default_retriever.search([], k=3) == []
    with pytest.raises(ValueError, match="unknown method"):
        default_retriever.search(["x"], method="magic")


def _flat_vectors(r: Retriever, n: int) -> np.ndarray:
    return r.dense.index.reconstruct_n(0, n)


@pytest.mark.parametrize("kind,min_recall", [("hnsw", 0.9), ("ivfpq", 0.4)])
def test_approximate_indexes_recall_and_roundtrip(default_retriever, tmp_path, kind, min_recall):
    vecs = _flat_vectors(default_retriever, default_retriever.dense.ntotal)
    queries = default_retriever.encoder.encode_queries(["volcanic eruption", "Roman emperor", "quantum physics",
                                                        "football club", "river in Africa", "string instrument"])
    exact = DenseIndex.build(vecs, DenseIndexConfig(kind="flat"))
    approx = DenseIndex.build(vecs, DenseIndexConfig(kind=kind, ivf_nlist=64))
    _, want = exact.search(queries, 10)
    scores, got = approx.search(queries, 10)
    recall = np.mean([len(set(w) & set(g)) / 10 for w, g in zip(want, got)])
    assert recall >= min_recall, f"{kind} recall@10 = {recall:.2f}"
    approx.save(tmp_path / "i.faiss")
    again = DenseIndex.load(tmp_path / "i.faiss")
    assert again.config.kind == kind and again.ntotal == len(vecs)
    s2, g2 = again.search(queries, 10)
    assert (g2 == got).all()


def test_ivfpq_refuses_tiny_corpus():
    with pytest.raises(ValueError, match="use kind='flat'"):
        DenseIndex.build(np.random.default_rng(0).normal(size=(50, 384)).astype(np.float32), DenseIndexConfig(kind="ivfpq"))
    with pytest.raises(ValueError, match="unknown index kind"):
        DenseIndex.build(np.zeros((3, 4), np.float32), DenseIndexConfig(kind="lsh"))


def test_rrf_matches_brute_force():
    a = np.array([[3, 1, 2, -1]])
    b = np.array([[1, 4, 3, 0]])
    scores, ids = rrf_fuse([a, b], k=3, c=60)
    brute = {}
    for ranking in (a[0], b[0]):
        for rank, d in enumerate(ranking):
            if d >= 0:
                brute[int(d)] = brute.get(int(d), 0) + 1 / (61 + rank)
    best = sorted(brute.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert ids[0].tolist() == [d for d, _ in best]
    assert np.allclose(scores[0], [s for _, s in best])


def test_tiny_index_save_load_roundtrip(tiny_index):
    r = Retriever.load(tiny_index)
    assert r.meta.n_docs == len(TINY_DOCS) and r.meta.corpus == "tiny"
    for method, query, want in [("dense", "bird that cannot fly", "penguin"), ("bm25", "lava ash gases", "volcano"),
                                ("hybrid", "ring system gas giant", "saturn")]:
        assert r.search([query], k=2, method=method)[0][0].id == want


def test_load_rejects_non_index_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="forage index build"):
        Retriever.load(tmp_path)


@pytest.mark.slow
def test_cli_index_build_with_progress_bar(tiny_corpus, tmp_path):
    out = tmp_path / "idx"
    forage = os.path.join(os.path.dirname(sys.executable), "forage")
    cmd = [forage, "index", "build", "--corpus", str(tiny_corpus), "--out", str(out),
           "--kind", "hnsw"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "embedding" in proc.stderr and "8/8" in proc.stderr  # the tqdm bar
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "hnsw" and meta["n_docs"] == 8
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "already holds an index" in again.stdout
    bad = subprocess.run(cmd[:-2] + ["--kind", "lsh"], capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and "--kind must be one of" in bad.stderr
    missing = subprocess.run(cmd[:4] + [str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=300, env=env)
    assert missing.returncode == 2 and "error:" in missing.stderr


def test_encoder_batch_size_default_and_validation(default_retriever):
    """The CPU default is 16 texts a forward pass; any batch size gives the same vectors (padding is masked)."""
    from forage.sandboxes.retrieval.encoder import EncoderConfig

    for bad in (0, -3, 2.5, True, "16"):
        with pytest.raises(ValueError):
            EncoderConfig(batch_size=bad)
    enc = default_retriever.encoder
    assert enc.device != "cpu" or enc.batch_size == 16
    texts = ["a", "who founded the city of Quellport in the north", "x " * 60, "Paris"] * 5
    want = enc.encode_queries(texts)
    saved = enc.batch_size
    try:
        enc.batch_size = 3
        got = enc.encode_queries(texts)
    finally:
        enc.batch_size = saved
    np.testing.assert_allclose(got, want, atol=1e-5)
