"""Gallery-search speed, memory and recall on synthetic embeddings (run by hand).

    .venv/bin/python benchmarks/bench_search.py                 # 1M x 256, ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_search.py --n 200000 --queries 300

The approximate index is built with the library's own code path
(``textreid.search.index.build_faiss_index(x, "auto")``), so the figures describe what
``textreid index`` writes for a gallery of that size, including its automatic nprobe choice.

Synthetic gallery (seeded, documented so the numbers can be reproduced and judged):
  a two-level mixture that mimics person-search embeddings. ``--clusters`` coarse
  "appearance" centres c_j and n/``--per-id`` identity directions u_i (each identity belongs
  to one random coarse cluster) are drawn uniformly on the unit sphere. A gallery vector of
  identity i in cluster j is  normalise(c_j + 0.7·u_i + a·g)  with g a fresh random unit
  vector and a = ``--noise`` (1.0); a query is  normalise(c_j + 0.7·u_i + b·g')  for a random
  identity, b = ``--query-noise`` (1.2: a text query sits further from its person's images).
  With the defaults, cosine: query vs its identity's images ~0.5, vs the same coarse cluster
  ~0.35, unrelated ~0; ~3 images per identity, so a query's exact top-10 mixes its identity's
  images with near neighbours from its cluster.

Measurements (time.perf_counter around each faiss call; RSS from /proc/self/status):
  build     wall time of build_faiss_index (k-means training + adding + nprobe tuning);
  memory    size of the serialised index file in bytes, process RSS now and peak (VmHWM);
  latency   p50 / p99 over --queries single-query searches (k=10), and over 64-query batches,
            through ``search_index`` (what Searcher calls; for exact flat indexes it scans with numpy's
            multi-threaded GEMM (exact_topk) rather than faiss' flat search, 2-3x faster here);
  recall@10 |approx top-10 ∩ exact top-10| / 10, averaged over --queries queries, where
            exact = faiss.IndexFlatIP over the same gallery;
  exact     IndexFlatIP over the first --exact-n gallery vectors, single-query latency.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import faiss
import numpy as np

from textreid.search.index import build_faiss_index, search_index


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)  # [n, d]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_gallery(
    n: int, dim: int, clusters: int, per_id: int, noise: float, seed: int, chunk: int = 100_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gallery [n, dim] plus the generator state needed to draw queries (see module doc)."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng, clusters, dim)  # [C, D]
    n_ids = max(1, n // per_id)
    id_dirs = _unit(rng, n_ids, dim)  # [I, D]
    id_cluster = rng.integers(clusters, size=n_ids)  # [I]
    ids = rng.integers(n_ids, size=n)  # [n]
    x = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        i = ids[lo:hi]
        v = centres[id_cluster[i]] + 0.7 * id_dirs[i] + noise * _unit(rng, hi - lo, dim)
        x[lo:hi] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return x, centres, id_dirs, id_cluster


def make_queries(
    q: int,
    centres: np.ndarray,
    id_dirs: np.ndarray,
    id_cluster: np.ndarray,
    noise: float,
    seed: int,
) -> np.ndarray:
    """Queries [q, dim]: noisier samples around random identities."""
    rng = np.random.default_rng(seed + 1)
    i = rng.integers(id_dirs.shape[0], size=q)
    v = centres[id_cluster[i]] + 0.7 * id_dirs[i] + noise * _unit(rng, q, centres.shape[1])
    return np.ascontiguousarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float32)


def rss() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in bytes."""
    now = peak = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return now, peak


def latencies(
    index: faiss.Index, xq: np.ndarray, k: int, batch: int, search: Any = None
) -> np.ndarray:
    """Milliseconds per search call, one call per ``batch`` queries."""
    search = search or (lambda ix, q, kk: ix.search(q, kk))
    out = []
    for lo in range(0, xq.shape[0] - batch + 1, batch):
        t = time.perf_counter()
        search(index, xq[lo : lo + batch], k)
        out.append((time.perf_counter() - t) * 1e3)
    return np.array(out)


def pct(ms: np.ndarray) -> str:
    return (
        f"p50 {np.percentile(ms, 50):7.2f} ms   p99 {np.percentile(ms, 99):7.2f} ms   (n={ms.size})"
    )


def recall_at(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    return float(
        np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact, strict=True)])
    )


def gb(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="gallery vectors")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=500, help="queries for latency and recall")
    p.add_argument("--batches", type=int, default=30, help="64-query batches timed")
    p.add_argument("--clusters", type=int, default=1000, help="coarse clusters")
    p.add_argument(
        "--per-id",
        type=int,
        default=3,
        help="gallery images per identity (mean; CUHK-PEDES test has 3.07)",
    )
    p.add_argument("--noise", type=float, default=1.0, help="gallery noise weight")
    p.add_argument("--query-noise", type=float, default=1.2, help="query noise weight")
    p.add_argument("--exact-n", type=int, default=100_000, help="gallery size for the exact test")
    p.add_argument("--index-type", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    p.add_argument("--threads", type=int, default=2, help="faiss.omp_set_num_threads")
    p.add_argument("--sweep", default="8,16,32,64", help="extra nprobe values to report (IVF)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    faiss.omp_set_num_threads(a.threads)
    print(
        f"faiss {faiss.__version__}, omp threads {a.threads}, cpus {os.cpu_count()}, "
        f"load avg {os.getloadavg()[0]:.2f}"
    )
    t = time.perf_counter()
    xb, centres, id_dirs, id_cluster = make_gallery(
        a.n, a.dim, a.clusters, a.per_id, a.noise, a.seed
    )
    xq = make_queries(
        max(a.queries, 64 * a.batches), centres, id_dirs, id_cluster, a.query_noise, a.seed
    )
    print(
        f"gallery {a.n:,} x {a.dim} ({a.clusters} clusters, {a.n // a.per_id:,} identities), "
        f"{xq.shape[0]:,} queries generated in {time.perf_counter() - t:.1f} s"
    )
    k = 10
    q = xq[: a.queries]

    # ---- exact search over the first exact_n vectors
    n_exact = min(a.exact_n, a.n)
    flat_small = faiss.IndexFlatIP(a.dim)
    flat_small.add(xb[:n_exact])
    lat = latencies(flat_small, q, k, 1, search_index)
    tag = f"[exact, IndexFlatIP, {n_exact:,} vectors]"
    print(f"\n{tag} single query, search_index (what Searcher runs): {pct(lat)}")
    print(
        f"{tag} single query, plain faiss index.search:          "
        f"{pct(latencies(flat_small, q, k, 1))}"
    )
    print(
        f"{tag} batch of 64, search_index:      {pct(latencies(flat_small, xq, k, 64, search_index))}"
    )
    print(f"{tag} batch of 64, plain faiss search: {pct(latencies(flat_small, xq, k, 64))}")
    del flat_small

    # ---- ground truth over the full gallery
    t = time.perf_counter()
    flat = faiss.IndexFlatIP(a.dim)
    flat.add(xb)
    _, exact_ids = flat.search(q, k)
    print(
        f"\nground truth: IndexFlatIP over {a.n:,}, {q.shape[0]} queries, "
        f"{time.perf_counter() - t:.1f} s"
    )
    del flat

    # ---- the approximate index, built by the library
    rss0 = rss()[0]
    t = time.perf_counter()
    index, info = build_faiss_index(xb, a.index_type)
    build_s = time.perf_counter() - t
    print(f"\n[{info['type']}] build {build_s:.1f} s   parameters {info}")
    with tempfile.NamedTemporaryFile(suffix=".faiss") as f:
        faiss.write_index(index, f.name)
        size = os.path.getsize(f.name)
    now, peak = rss()
    print(
        f"[{info['type']}] index file {size:,} bytes ({gb(size)}); raw vectors "
        f"{gb(xb.nbytes)}; RSS {gb(now)} (+{gb(now - rss0)} for the index), peak {gb(peak)}"
    )
    del xb

    _, approx_ids = index.search(q, k)
    rec = recall_at(approx_ids, exact_ids, k)
    lat1 = latencies(index, q, k, 1, search_index)
    lat64 = latencies(index, xq, k, 64, search_index)
    print(f"[{info['type']}] recall@10 vs exact: {rec:.4f}  ({q.shape[0]} held-out queries)")
    print(f"[{info['type']}] single query: {pct(lat1)}")
    print(
        f"[{info['type']}] batch of 64:  {pct(lat64)}  "
        f"(= {np.percentile(lat64, 50) / 64:.3f} ms/query at p50)"
    )

    if info["type"] == "ivf" and a.sweep:
        ivf = faiss.extract_index_ivf(index)
        chosen = ivf.nprobe
        print("\nnprobe sweep (same queries):  nprobe  recall@10  single p50  single p99")
        for npb in sorted({int(s) for s in a.sweep.split(",")} | {chosen}):
            ivf.nprobe = npb
            _, ids = index.search(q, k)
            lt = latencies(index, q, k, 1)
            mark = "  <- chosen by build_faiss_index" if npb == chosen else ""
            print(
                f"{'':30}{npb:6d}  {recall_at(ids, exact_ids, k):9.4f}  "
                f"{np.percentile(lt, 50):7.2f} ms  {np.percentile(lt, 99):7.2f} ms{mark}"
            )
        ivf.nprobe = chosen

    ok1 = np.percentile(lat1, 50) < 10 and rec >= 0.95
    print(
        f"\ntargets: p50 single < 10 ms and recall@10 >= 0.95 at {a.n:,}: "
        f"{'met' if ok1 else 'NOT met'};  exact {n_exact:,} p50 < 20 ms: "
        f"{'met' if np.percentile(lat, 50) < 20 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
