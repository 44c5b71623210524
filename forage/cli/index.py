"""`forage index ...` commands."""

from __future__ import annotations

from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("build")
def build(
    corpus: str = typer.Option("default", "--corpus", help="A JSONL corpus (id, title, text) or 'default' (wiki summaries)."),
    out: Optional[str] = typer.Option(None, "--out", help="Output folder (default: the cache, keyed by corpus + encoder)."),
    kind: str = typer.Option("flat", "--kind", help="FAISS index: flat (exact), hnsw or ivfpq."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="A sentence-transformers/HF encoder folder (default: all-MiniLM-L6-v2)."),
    max_seq_length: int = typer.Option(128, "--max-seq-length", help="Truncate passages to this many tokens."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Texts per forward pass (default: 16 on CPU, 64 on GPU)."),
    chunk_words: int = typer.Option(0, "--chunk-words", help="Split documents into passages of this many words (0: no)."),
    bm25: bool = typer.Option(True, "--bm25/--no-bm25", help="Also build the BM25 index (needed for bm25/hybrid)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the output exists."),
) -> None:
    """Embed a corpus and build its FAISS (+ BM25) index, with a progress bar."""
    from pathlib import Path

    from forage.sandboxes.retrieval import DenseIndexConfig, Encoder, EncoderConfig, Retriever, load_corpus
    from forage.sandboxes.retrieval.dense import KINDS

    if kind not in KINDS:
        typer.echo(f"error: --kind must be one of {', '.join(KINDS)}", err=True)
        raise typer.Exit(2)
    try:
        docs = load_corpus(None if corpus == "default" else corpus, chunk_words or None)
    except (OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    from forage.assets import cache_dir
    from forage.sandboxes.retrieval import default_index_dir
    from forage.sandboxes.retrieval.corpus import corpus_fingerprint

    is_default = corpus == "default" and not encoder and max_seq_length == 128 and not chunk_words
    folder = Path(out) if out else (default_index_dir(kind) if is_default else None)
    if folder is not None and (folder / "meta.json").exists() and not force:
        typer.echo(f"{folder} already holds an index (use --force to rebuild)")
        return
    enc = Encoder(EncoderConfig(path=encoder, max_seq_length=max_seq_length, batch_size=batch_size))
    if folder is None:
        folder = cache_dir("index") / f"{Path(corpus).stem}-{corpus_fingerprint(docs)}-{enc.fingerprint()}-{kind}"
        if (folder / "meta.json").exists() and not force:
            typer.echo(f"{folder} already holds an index (use --force to rebuild)")
            return
    typer.echo(f"embedding {len(docs)} documents with {enc.path.name} on {enc.device}...", err=True)
    try:
        r = Retriever.build(docs, enc, DenseIndexConfig(kind=kind), corpus_name="wiki" if corpus == "default" else Path(corpus).stem, bm25=bm25,
                            progress=True)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    r.save(folder)
    typer.echo(f"built {folder}: {r.meta.n_docs} docs, {r.meta.kind}, {r.meta.encode_docs_per_s} docs/s encoding, "
               f"{r.meta.build_seconds} s in all")


@app.command("info")
def info(folder: str = typer.Argument(..., help="An index folder.")) -> None:
    """Print an index folder's metadata."""
    import json
    from pathlib import Path

    meta = Path(folder) / "meta.json"
    if not meta.exists():
        typer.echo(f"error: {folder} is not an index folder (no meta.json)", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(json.loads(meta.read_text()), indent=1))
