"""Nearest-neighbour search over normalised embeddings: exact scan or a tuned FAISS index.

``build_faiss_index`` chooses exact (flat) search for small galleries and an IVF (or HNSW)
index for large ones, tuning its query-time parameter on a sample of the gallery;
``search_index`` queries either; ``apply_search_params`` restores the tuned values on load.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import faiss
import numpy as np
from faiss.contrib.ivf_tools import add_preassigned

from textreid.embeddings import normalise

log = logging.getLogger(__name__)

INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
# Below this many vectors an exact scan is fast enough (< 20 ms/query at 100k on 2 cores,
# see benchmarks/bench_search.py); above it an IVF index keeps queries in the millisecond range.
AUTO_FLAT_MAX = 50_000
# Recall@10 that the automatic nprobe / efSearch choice aims for on a sample of the gallery.
RECALL_TARGET = 0.97



class _SampleRecall:
    """Recall@k of an index vs exact search; queries = a sample of gallery rows, self excluded."""

    def __init__(self, x: np.ndarray, k: int = 10, n_queries: int = 256, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.k = k
        self.ids = rng.choice(x.shape[0], size=min(n_queries, x.shape[0]), replace=False)
        self.q = np.ascontiguousarray(x[self.ids])  # [Q, D]
        _, exact = exact_topk(x, self.q, k + 1)  # [Q, k+1]
        self.truth = [
            [j for j in row if j != i][:k] for i, row in zip(self.ids, exact, strict=True)
        ]

    def __call__(self, index: faiss.Index) -> float:
        _, approx = index.search(self.q, self.k + 1)  # [Q, k+1]
        hits = sum(len(set(t) & set(a.tolist())) for t, a in zip(self.truth, approx, strict=True))
        return hits / max(1, sum(len(t) for t in self.truth))


def _tune(
    index: faiss.Index,
    set_param: Callable[[int], None],
    ladder: Sequence[int],
    recall: _SampleRecall,
    target: float,
) -> tuple[int, float]:
    """Smallest ladder value reaching ``target`` recall, then one step up as a margin.

    Gallery rows are easier queries than text embeddings, which lie further from the
    images; the extra step costs well under a millisecond per query at 1M vectors.
    """
    chosen = ladder[-1]
    for i, value in enumerate(ladder):
        set_param(value)
        if recall(index) >= target:
            chosen = ladder[min(i + 1, len(ladder) - 1)]
            break
    set_param(chosen)
    return chosen, recall(index)


def _assign(x: np.ndarray, centroids: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """Index of the most similar centroid for each row (numpy GEMM, chunked)."""
    out = np.empty(x.shape[0], dtype=np.int64)  # [N]
    for lo in range(0, x.shape[0], chunk):
        out[lo : lo + chunk] = np.argmax(x[lo : lo + chunk] @ centroids.T, axis=1)  # [B, K]
    return out


def spherical_kmeans(x: np.ndarray, k: int, *, niter: int = 10, seed: int = 1234) -> np.ndarray:
    """Unit-norm k-means centroids ``[k, D]`` of normalised rows ``x`` (cosine assignment).

    Plain numpy because its multi-threaded GEMM + argmax measured 3-5x faster than faiss'
    k-means assignment on 2 cores (benchmarks/bench_search.py); empty clusters are re-seeded
    with random rows.
    """
    rng = np.random.default_rng(seed)
    n, d = x.shape
    c = np.ascontiguousarray(x[rng.choice(n, size=k, replace=False)])  # [k, D]
    for _ in range(niter):
        a = _assign(x, c)  # [N]
        order = np.argsort(a, kind="stable")
        counts = np.bincount(a, minlength=k)  # [k]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        nonempty = counts > 0
        sums = np.zeros((k, d), dtype=np.float32)  # [k, D]
        sums[nonempty] = np.add.reduceat(x[order], starts[nonempty], axis=0)
        empty = np.flatnonzero(~nonempty)
        sums[empty] = x[rng.choice(n, size=empty.size, replace=False)]
        c = normalise(sums)
    return c



def build_faiss_index(
    x: np.ndarray,
    index_type: str = "auto",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_search: int | None = None,
    recall_target: float = RECALL_TARGET,
    seed: int = 1234,
) -> tuple[faiss.Index, dict[str, Any]]:
    """Build an inner-product FAISS index over normalised rows ``x`` [N, D].

    ``auto`` picks ``flat`` (exact) below :data:`AUTO_FLAT_MAX` vectors and ``ivf`` above,
    unless IVF would have to probe more than 1/8 of its cells to reach the recall target
    (unclustered embeddings): then exact search is faster and ``flat`` is used.
    ``ivf``: nlist defaults to 4·sqrt(N); when ``nprobe`` (or HNSW's ``ef_search``) is not
    given, the smallest value reaching ``recall_target`` recall@10 on 256 gallery rows used as
    queries is found and one step larger is kept as a margin. Returns the index and a dict
    of its parameters for the manifest.
    """
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index_type {index_type!r}; valid: {', '.join(INDEX_TYPES)}")
    x = np.ascontiguousarray(x, dtype=np.float32)  # [N, D]
    n, d = x.shape
    if n == 0:
        raise ValueError("cannot build an index over 0 vectors")
    kind = index_type
    if kind == "auto":
        kind = "flat" if n < AUTO_FLAT_MAX else "ivf"
    t0 = time.perf_counter()
    info: dict[str, Any] = {"type": kind, "metric": "inner_product"}
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        index.add(x)
    elif kind == "ivf":
        index = _build_ivf(x, info, nlist, nprobe, recall_target, seed, index_type == "auto")
        if index is None:  # auto: IVF would scan too much; exact search is faster
            flat, flat_info = build_faiss_index(x, "flat")
            flat_info["auto_fallback"] = info["fallback"]
            flat_info["build_seconds"] = round(time.perf_counter() - t0, 3)
            return flat, flat_info
    else:
        index = _build_hnsw(x, info, hnsw_m, ef_search, recall_target, seed)
    info["build_seconds"] = round(time.perf_counter() - t0, 3)
    return index, info


def _build_ivf(
    x: np.ndarray,
    info: dict[str, Any],
    nlist: int | None,
    nprobe: int | None,
    recall_target: float,
    seed: int,
    auto: bool,
) -> faiss.Index | None:
    """IVF-flat index with spherical k-means cells; fills ``info``. None: use exact search."""
    n, d = x.shape
    nlist = nlist or max(1, min(round(4 * math.sqrt(n)), n // 39 or 1))
    rng = np.random.default_rng(seed)
    n_train = min(n, 32 * nlist)
    train = x if n_train == n else x[np.sort(rng.choice(n, n_train, replace=False))]
    centroids = spherical_kmeans(train, nlist, niter=10, seed=seed)  # [nlist, D]
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    add_preassigned(index, x, _assign(x, centroids))
    info.update(nlist=nlist, train_points=int(n_train))
    if nprobe is not None:
        index.nprobe = min(nprobe, nlist)
        info["nprobe"] = int(index.nprobe)
        return index
    ladder = [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if v < nlist] + [nlist]
    _, rec = _tune(
        index, lambda v: setattr(index, "nprobe", v), ladder, _SampleRecall(x, seed=seed),
        recall_target,
    )
    info["sample_recall_at_10"] = round(rec, 4)
    info["nprobe"] = int(index.nprobe)
    if index.nprobe > nlist // 8:
        why = (
            f"IVF needed nprobe {index.nprobe} of nlist {nlist} to reach recall@10 "
            f"{recall_target} on a gallery sample (the embeddings are barely clustered)"
        )
        if auto:  # scanning that much of IVF is slower than exact search
            info["fallback"] = why + "; exact search is faster"
            log.warning("%s: using exact (flat) search", why)
            return None
        log.warning("%s; queries will be slow, consider index_type='flat'", why)
    return index


def _build_hnsw(
    x: np.ndarray,
    info: dict[str, Any],
    hnsw_m: int,
    ef_search: int | None,
    recall_target: float,
    seed: int,
) -> faiss.Index:
    """HNSW index; ``efSearch`` tuned on a gallery sample unless given. Fills ``info``."""
    index = faiss.IndexHNSWFlat(x.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.add(x)
    if ef_search is None:
        _, rec = _tune(
            index,
            lambda v: setattr(index.hnsw, "efSearch", v),
            (16, 32, 64, 128, 256, 512),
            _SampleRecall(x, seed=seed),
            recall_target,
        )
        info["sample_recall_at_10"] = round(rec, 4)
    else:
        index.hnsw.efSearch = ef_search
    info.update(
        M=hnsw_m,
        efConstruction=int(index.hnsw.efConstruction),
        efSearch=int(index.hnsw.efSearch),
    )
    return index


def exact_topk(xb: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` of queries ``q`` [Q, D] over rows ``xb`` [N, D].

    Returns (scores [Q, k], ids [Q, k]), best first, ties by lower id (like faiss). Numpy's
    multi-threaded GEMM + argpartition, in query chunks of at most 2^24 scores (64 MB):
    measured 2-3x faster than faiss' flat search on 2 cores (benchmarks/bench_search.py).
    """
    n = xb.shape[0]
    k = min(k, n)
    chunk = max(1, (1 << 24) // max(n, 1))
    scores = np.empty((q.shape[0], k), dtype=np.float32)
    ids = np.empty((q.shape[0], k), dtype=np.int64)
    for lo in range(0, q.shape[0], chunk):
        s = (xb @ q[lo : lo + chunk].T).T  # [B, N]
        if k < n:
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]  # [B, k] unordered
        else:
            top = np.broadcast_to(np.arange(n), s.shape)
        top_s = np.take_along_axis(s, top, axis=1)  # [B, k]
        order = np.lexsort((top, -top_s), axis=1)  # score desc, then id asc
        scores[lo : lo + chunk] = np.take_along_axis(top_s, order, axis=1)
        ids[lo : lo + chunk] = np.take_along_axis(top, order, axis=1)
    return scores, ids


def search_index(index: faiss.Index, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search``, except that exact inner-product flat indexes are scanned with
    :func:`exact_topk` over the index's own storage (no copy), which is faster on few cores."""
    q = np.ascontiguousarray(q, dtype=np.float32)  # [Q, D]
    if (
        isinstance(index, faiss.IndexFlat)
        and index.metric_type == faiss.METRIC_INNER_PRODUCT
        and 0 < k <= index.ntotal
    ):
        n, d = index.ntotal, index.d
        xb = faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)  # [N, D], no copy
        return exact_topk(xb, q, k)
    return index.search(q, k)


def apply_search_params(index: faiss.Index, info: dict[str, Any]) -> None:
    """Set the query-time parameters recorded in a manifest on a loaded index."""
    if info.get("type") == "ivf" and "nprobe" in info:
        faiss.extract_index_ivf(index).nprobe = int(info["nprobe"])
    elif info.get("type") == "hnsw" and "efSearch" in info:
        index.hnsw.efSearch = int(info["efSearch"])


