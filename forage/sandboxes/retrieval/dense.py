"""FAISS inner-product indexes: exact (flat), HNSW and IVF-PQ; on GPU when faiss has GPU support."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DenseIndexConfig", "DenseIndex", "faiss_gpus"]

KINDS = ("flat", "hnsw", "ivfpq")


def _faiss():
    """The faiss module, or a clear error naming the extra that installs it."""
    try:
        import faiss
    except ImportError as e:
        raise ImportError("dense retrieval needs FAISS: pip install 'forage-gym[cpu]' (faiss-cpu) or "
                          "'forage-gym[gpu]' (faiss-gpu-cu12)") from e
    return faiss


def faiss_gpus() -> int:
    """How many GPUs faiss can use (0 for faiss-cpu)."""
    faiss = _faiss()
    try:
        return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    except Exception:
        return 0


@dataclass
class DenseIndexConfig:
    """Which FAISS index to build. ``ivfpq`` trades a little recall for a much smaller index."""

    kind: str = "flat"            # flat | hnsw | ivfpq
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    ivf_nlist: int | None = None   # None = about 4 * sqrt(n)
    ivf_nprobe: int = 16
    pq_m: int = 16                 # sub-quantizers (must divide dim)
    pq_bits: int = 8
    use_gpu: bool | None = None    # None = when faiss has GPUs


class DenseIndex:
    """A FAISS index over normalised vectors (inner product), with save/load."""

    def __init__(self, index, config: DenseIndexConfig) -> None:
        self.index = index
        self.config = config
        self._search_index = self._maybe_gpu(index)

    @classmethod
    def build(cls, vectors: np.ndarray, config: DenseIndexConfig | None = None) -> "DenseIndex":
        """Build (and for IVF-PQ train) an index over ``vectors`` (n, dim) float32."""
        faiss = _faiss()
        config = config or DenseIndexConfig()
        if config.kind not in KINDS:
            raise ValueError(f"unknown index kind {config.kind!r}; use one of {KINDS}")
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = x.shape
        if config.kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif config.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = config.hnsw_ef_search
        else:
            if dim % config.pq_m:
                raise ValueError(f"pq_m={config.pq_m} must divide the dimension {dim}")
            nlist = config.ivf_nlist or max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, config.pq_m, config.pq_bits, faiss.METRIC_INNER_PRODUCT)
            if n < max(nlist, 1 << config.pq_bits):
                raise ValueError(f"IVF-PQ needs at least {max(nlist, 1 << config.pq_bits)} vectors to train, got {n}; "
                                 "use kind='flat' for a corpus this small")
            index.train(x)
            index.nprobe = min(config.ivf_nprobe, nlist)
        index.add(x)
        return cls(index, config)

    def _maybe_gpu(self, index):
        use = self.config.use_gpu if self.config.use_gpu is not None else faiss_gpus() > 0
        if not use or self.config.kind == "hnsw":  # faiss has no GPU HNSW
            return index
        faiss = _faiss()
        if faiss_gpus() == 0:
            raise RuntimeError("use_gpu=True but this faiss build has no GPU support (install faiss-gpu)")
        return faiss.index_cpu_to_all_gpus(index)

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors."""
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n, k'); k' = min(k, ntotal); missing hits have id -1."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(int(k), self.ntotal))
        if len(q) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return self._search_index.search(q, k)

    def save(self, path: str | Path) -> None:
        """Write the (CPU) index to ``path``."""
        faiss = _faiss()
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: str | Path, config: DenseIndexConfig | None = None) -> "DenseIndex":
        """Read an index written by :meth:`save`."""
        faiss = _faiss()
        index = faiss.read_index(str(path))
        config = config or DenseIndexConfig(kind=_kind_of(index))
        if isinstance(index, faiss.IndexHNSWFlat):
            index.hnsw.efSearch = config.hnsw_ef_search
        ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
        if ivf is not None:
            ivf.nprobe = min(config.ivf_nprobe, ivf.nlist)
        return cls(index, config)


def _kind_of(index) -> str:
    faiss = _faiss()
    if isinstance(index, faiss.IndexHNSWFlat):
        return "hnsw"
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    return "flat"
