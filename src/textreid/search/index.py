"""Gallery index: embed a folder of images once, store the vectors and a FAISS index.

An index directory holds:

- ``manifest.json``   what was indexed and how (:class:`Manifest`);
- ``embeddings.npy``  float32 ``[N, D]``, L2-normalised, row i belongs to ``paths.json[i]``;
- ``paths.json``      list of image paths relative to ``manifest.root`` (POSIX separators);
- ``file_stats.npy``  int64 ``[N, 2]`` (size in bytes, mtime in ns) of each image when it was
  embedded, so a re-run reuses the rows of unchanged files;
- ``index.faiss``     the FAISS index over ``embeddings.npy`` (absent in shard directories).

Directories are written into a temporary sibling and renamed into place, so an interrupted
run never leaves a partly written index and never damages the previous one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np
from faiss.contrib.ivf_tools import add_preassigned
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
# Below this many vectors an exact scan is fast enough (< 20 ms/query at 100k on 2 cores,
# see benchmarks/bench_search.py); above it an IVF index keeps queries in the millisecond range.
AUTO_FLAT_MAX = 50_000
# Recall@10 that the automatic nprobe / efSearch choice aims for on a sample of the gallery.
RECALL_TARGET = 0.97

MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
PATHS = "paths.json"
FILE_STATS = "file_stats.npy"
FAISS_INDEX = "index.faiss"


@runtime_checkable
class EncoderProtocol(Protocol):
    """What the search code needs from a model (``textreid.api.Encoder`` implements it)."""

    embed_dim: int

    def encode_text(self, texts: list[str], batch_size: int = 256) -> Any:
        """L2-normalised text embeddings ``[N, D]`` (torch tensor or numpy array)."""
        ...

    def encode_images(self, images: list[Any], batch_size: int = 64) -> Any:
        """L2-normalised image embeddings ``[N, D]`` for PIL images or paths."""
        ...


@dataclass
class Manifest:
    """The self-description of an index directory (``manifest.json``)."""

    checkpoint_path: str | None
    checkpoint_sha256: str | None
    embed_dim: int
    count: int
    root: str
    index: dict[str, Any]  # {"type": "flat"|"ivf"|"hnsw"|"none", plus its parameters}
    skipped: dict[str, Any] = field(default_factory=lambda: {"count": 0, "images": []})
    build: dict[str, Any] = field(default_factory=dict)  # embedded / reused counts, timings
    shard: dict[str, int] | None = None  # {"rank", "world_size"} in shard directories
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "manifest") -> Manifest:
        """Parse and check a manifest dict; ``source`` names the file in errors."""
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{source}: index format_version {version!r} is not supported "
                f"(this textreid reads version {FORMAT_VERSION}); rebuild the index"
            )
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("embed_dim", "count", "root", "index") if k not in d]
        if missing:
            raise ValueError(f"{source}: missing key(s) {missing}")
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class IndexData:
    """The arrays of an index directory, as read by :func:`read_index_dir`."""

    manifest: Manifest
    paths: list[str]  # relative to manifest.root
    embeddings: np.ndarray  # [N, D] float32
    file_stats: np.ndarray  # [N, 2] int64 (size, mtime_ns)

    def absolute_paths(self) -> list[str]:
        """Paths joined to the manifest root."""
        return [os.path.join(self.manifest.root, p) for p in self.paths]


# ----------------------------------------------------------------------------- files


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def collect_images(images: str | Path | Sequence[str | Path]) -> tuple[Path, list[Path]]:
    """Resolve the ``images`` argument to ``(root, sorted absolute image paths)``.

    ``images`` is a folder (searched recursively for image extensions, case-insensitive,
    skipping hidden folders), a text file with one path per line (relative lines are taken
    relative to the file's folder; blank lines and ``#`` comments ignored), or a list of paths.
    """
    if isinstance(images, str | Path):
        src = Path(images)
        if src.is_dir():
            root = Path(os.path.abspath(src))
            found: list[Path] = []
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                found.extend(
                    Path(dirpath, f) for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS)
                )
            if not found:
                raise FileNotFoundError(
                    f"no images found under {root} (looked for {', '.join(IMAGE_EXTENSIONS)}, "
                    "any case, in all non-hidden sub-folders)"
                )
            return root, sorted(found, key=lambda p: p.relative_to(root).as_posix())
        if src.is_file() and src.name.lower().endswith(IMAGE_EXTENSIONS):
            files = [src]  # a single image
        elif src.is_file():
            base = src.parent
            try:
                lines = src.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{src} is not a text file listing image paths (one per line): {e}"
                ) from None
            files = [
                Path(line.strip()) for line in lines if line.strip() and not line.startswith("#")
            ]
            files = [p if p.is_absolute() else base / p for p in files]
            if not files:
                raise ValueError(f"image list {src} names no images")
        else:
            raise FileNotFoundError(f"{src} is neither a folder of images nor a list file")
    else:
        files = [Path(p) for p in images]
        if not files:
            raise ValueError("the list of images is empty")
    # Listed files that are missing are skipped (and listed in the manifest) by build_index.
    files = [Path(os.path.abspath(p)) for p in files]
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    unique = {p.relative_to(root).as_posix(): p for p in files}
    return root, [unique[k] for k in sorted(unique)]


def load_image(path: Path) -> Image.Image | str:
    """Decode an image fully to RGB, or return why it cannot be used."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as im:
            # A truncated file must count as corrupt even if another module relaxed PIL.
            relaxed, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
            try:
                im.load()
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = relaxed
            return im.convert("RGB")
    except UnidentifiedImageError:
        return "not an image (PIL cannot identify the file format)"
    except Image.DecompressionBombError as e:
        return f"image too large: {e}"
    except (OSError, SyntaxError, ValueError) as e:
        return f"corrupt or truncated image: {e}"


def read_index_dir(index_dir: str | Path, mmap: bool = False) -> IndexData:
    """Read manifest, paths, embeddings and file stats of an index (or shard) directory."""
    d = Path(index_dir)
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(
            f"{d} is not a textreid index: {MANIFEST} is missing (build one with `textreid index`)"
        )
    manifest = Manifest.from_dict(json.loads(mpath.read_text(encoding="utf-8")), str(mpath))
    paths = json.loads((d / PATHS).read_text(encoding="utf-8"))
    emb = np.load(d / EMBEDDINGS, mmap_mode="r" if mmap else None)
    stats = np.load(d / FILE_STATS)
    if not (len(paths) == emb.shape[0] == stats.shape[0] == manifest.count):
        raise ValueError(
            f"{d}: inconsistent index (manifest count {manifest.count}, {len(paths)} paths, "
            f"{emb.shape[0]} embeddings, {stats.shape[0]} file stats); rebuild it"
        )
    return IndexData(manifest, paths, emb, stats)


def _file_stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _write_dir_atomically(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a fresh sibling dir, then swap it in for ``out_dir``.

    Shard sub-directories (``shard-*-of-*``) of a replaced ``out_dir`` are moved into the new one.
    """
    out_dir = Path(os.path.abspath(out_dir))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{tag}"
    old = out_dir.parent / f".{out_dir.name}.old-{tag}"
    tmp.mkdir()
    try:
        write(tmp)
        if out_dir.exists():
            os.rename(out_dir, old)
            try:
                os.rename(tmp, out_dir)
            except BaseException:
                os.rename(old, out_dir)
                raise
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old.exists():
        for child in old.glob("shard-*-of-*"):
            if child.is_dir() and not (out_dir / child.name).exists():
                os.rename(child, out_dir / child.name)
        shutil.rmtree(old, ignore_errors=True)


def _write_index_files(
    d: Path,
    manifest: Manifest,
    rel_paths: list[str],
    emb: np.ndarray,
    stats: np.ndarray,
    index: faiss.Index | None,
) -> None:
    np.save(d / EMBEDDINGS, np.ascontiguousarray(emb, dtype=np.float32))
    np.save(d / FILE_STATS, np.asarray(stats, dtype=np.int64).reshape(-1, 2))
    (d / PATHS).write_text(json.dumps(rel_paths, ensure_ascii=False), encoding="utf-8")
    if index is not None:
        faiss.write_index(index, str(d / FAISS_INDEX))
    # The manifest is written last: its presence marks a complete directory.
    (d / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2), encoding="utf-8")


# ----------------------------------------------------------------------------- FAISS


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)  # [N, D]
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # [N, 1]
    return x / np.maximum(norms, 1e-12)


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
        c = _normalise(sums)
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
        if nprobe is None:
            ladder = [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if v < nlist] + [nlist]
            _, rec = _tune(
                index,
                lambda v: setattr(index, "nprobe", v),
                ladder,
                _SampleRecall(x, seed=seed),
                recall_target,
            )
            info["sample_recall_at_10"] = round(rec, 4)
            if index.nprobe > nlist // 8:
                why = (
                    f"IVF needed nprobe {index.nprobe} of nlist {nlist} to reach recall@10 "
                    f"{recall_target} on a gallery sample (the embeddings are barely clustered)"
                )
                if index_type == "auto":  # scanning that much of IVF is slower than exact search
                    flat, flat_info = build_faiss_index(x, "flat")
                    flat_info["auto_fallback"] = why + "; exact search is faster"
                    flat_info["build_seconds"] = round(time.perf_counter() - t0, 3)
                    log.warning("%s: using exact (flat) search", why)
                    return flat, flat_info
                log.warning("%s; queries will be slow, consider index_type='flat'", why)
        else:
            index.nprobe = min(nprobe, nlist)
        info["nprobe"] = int(index.nprobe)
    else:  # hnsw
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
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
    info["build_seconds"] = round(time.perf_counter() - t0, 3)
    return index, info


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


# ----------------------------------------------------------------------------- building


def rank_world_from_env() -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's RANK / WORLD_SIZE variables (0, 1 without)."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as e:
        raise ValueError(f"RANK / WORLD_SIZE must be integers: {e}") from e
    return rank, world


def shard_dir_name(rank: int, world_size: int) -> str:
    """Folder name of one rank's shard inside the output directory."""
    return f"shard-{rank:03d}-of-{world_size:03d}"


def _reuse_table(
    dirs: Sequence[Path], sha: str | None, dim: int | None
) -> tuple[dict[str, tuple[int, int, np.ndarray]], str | None]:
    """Map absolute path -> (size, mtime_ns, embedding) from previous indexes that may be reused.

    Returns the table and, when a previous index exists but cannot be reused, why.
    """
    table: dict[str, tuple[int, int, np.ndarray]] = {}
    reason = None
    for d in dirs:
        if not (d / MANIFEST).is_file():
            continue
        try:
            old = read_index_dir(d, mmap=True)
        except (OSError, ValueError) as e:
            reason = f"previous index in {d} is unreadable ({e})"
            continue
        m = old.manifest
        if m.checkpoint_sha256 != sha:
            reason = (
                f"checkpoint changed (sha256 {str(m.checkpoint_sha256)[:12]} -> "
                f"{str(sha)[:12]}): re-embedding every image"
            )
            continue
        if dim is not None and m.embed_dim != dim:
            reason = f"embedding size changed ({m.embed_dim} -> {dim}): re-embedding every image"
            continue
        for i, p in enumerate(old.absolute_paths()):
            if p not in table:
                size, mtime = (int(v) for v in old.file_stats[i])
                table[p] = (size, mtime, old.embeddings[i])
    return table, reason


def _batched(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def build_index(
    encoder: EncoderProtocol,
    images: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    checkpoint_path: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    index_type: str = "auto",
    rank: int = 0,
    world_size: int = 1,
) -> Manifest:
    """Embed ``images`` with ``encoder`` and write an index directory at ``out_dir``.

    Images already in a previous index at the target (same path, size and mtime, same
    checkpoint sha256) are not embedded again. Unreadable images are skipped and listed in the
    manifest. With ``world_size > 1`` this rank embeds its contiguous share of the sorted list
    and writes ``out_dir/shard-RRR-of-WWW`` (no FAISS index); join shards with
    :func:`merge_shards`.
    """
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index_type {index_type!r}; valid: {', '.join(INDEX_TYPES)}")
    if not (0 <= rank < world_size):
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1} (world_size {world_size})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    t_start = time.perf_counter()
    out_dir = Path(os.path.abspath(out_dir))
    ckpt = (
        checkpoint_path
        if checkpoint_path is not None
        else getattr(encoder, "checkpoint_path", None)
    )
    sha = None
    if ckpt is not None:
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} not found (needed to record its sha256)")
        ckpt = os.path.abspath(ckpt)
        sha = sha256_file(ckpt)

    root, files = collect_images(images)
    sharded = world_size > 1
    if sharded:
        lo, hi = rank * len(files) // world_size, (rank + 1) * len(files) // world_size
        files = files[lo:hi]
        target = out_dir / shard_dir_name(rank, world_size)
        previous = [target, out_dir]  # the shard itself, or an earlier merged index
    else:
        target = out_dir
        previous = [out_dir]

    dim = getattr(encoder, "embed_dim", None)
    table, not_reused = _reuse_table(previous, sha, dim)
    if not_reused and not table:
        log.warning("%s", not_reused)
        if progress:
            tqdm.write(f"textreid index: {not_reused}")

    stats: dict[Path, tuple[int, int]] = {}
    reused: dict[Path, np.ndarray] = {}
    todo: list[Path] = []
    skipped: list[dict[str, str]] = []
    for p in files:
        try:
            stats[p] = _file_stat(p)
            if not p.is_file():
                raise IsADirectoryError("not a regular file")
        except OSError as e:
            why = "file not found" if isinstance(e, FileNotFoundError) else f"unreadable: {e}"
            skipped.append({"path": p.relative_to(root).as_posix(), "reason": why})
            stats.pop(p, None)
            continue
        prev = table.get(str(p))
        if prev is not None and prev[:2] == stats[p]:
            reused[p] = prev[2]
        else:
            todo.append(p)

    new: dict[Path, np.ndarray] = {}
    # Decode the next batch in threads while the encoder works on the current one.
    with (
        tqdm(total=len(todo), unit="img", desc="embedding", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool,
    ):
        batches = list(_batched(todo, batch_size))
        pending: list[Future] | None = None
        for bi, batch in enumerate(batches):
            if pending is None:
                pending = [pool.submit(load_image, p) for p in batch]
            loaded = [f.result() for f in pending]
            pending = (
                [pool.submit(load_image, p) for p in batches[bi + 1]]
                if bi + 1 < len(batches)
                else None
            )
            ok = [(p, im) for p, im in zip(batch, loaded, strict=True) if not isinstance(im, str)]
            for p, im in zip(batch, loaded, strict=True):
                if isinstance(im, str):
                    skipped.append({"path": p.relative_to(root).as_posix(), "reason": im})
            if ok:
                out = _to_numpy(encoder.encode_images([im for _, im in ok], batch_size=batch_size))
                if out.ndim != 2 or out.shape[0] != len(ok):
                    raise ValueError(
                        f"encoder.encode_images returned shape {tuple(out.shape)} for "
                        f"{len(ok)} images; expected [{len(ok)}, D]"
                    )
                if dim is not None and out.shape[1] != dim:
                    raise ValueError(
                        f"encoder.encode_images returned {out.shape[1]}-d vectors but the "
                        f"encoder's embed_dim is {dim}"
                    )
                dim = out.shape[1]
                out = _normalise(out)  # [B, D]
                for (p, _), row in zip(ok, out, strict=True):
                    new[p] = row
            bar.update(len(batch))

    kept = [p for p in files if p in reused or p in new]
    if dim is None:
        if not kept:
            dim = 0
        else:  # everything reused from an index whose encoder had no embed_dim attribute
            dim = int(next(iter(reused.values())).shape[0])
    if not kept and not sharded:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
        raise ValueError(f"no usable images under {root} ({len(skipped)} skipped: {reasons})")
    emb = np.empty((len(kept), dim), dtype=np.float32)  # [N, D]
    for i, p in enumerate(kept):
        emb[i] = reused[p] if p in reused else new[p]
    rel = [p.relative_to(root).as_posix() for p in kept]
    file_stats = np.array([stats[p] for p in kept], dtype=np.int64).reshape(-1, 2)

    if sharded:
        index, info = None, {"type": "none"}
    else:
        index, info = build_faiss_index(emb, index_type)
    skipped.sort(key=lambda s: s["path"])
    manifest = Manifest(
        checkpoint_path=str(ckpt) if ckpt is not None else None,
        checkpoint_sha256=sha,
        embed_dim=int(dim),
        count=len(kept),
        root=str(root),
        index=info,
        skipped={"count": len(skipped), "images": skipped},
        build={
            "embedded": len(new),
            "reused": len(reused),
            "reembedded_all": not_reused if not_reused and not table else None,
            "seconds": round(time.perf_counter() - t_start, 3),
        },
        shard={"rank": rank, "world_size": world_size} if sharded else None,
    )
    _write_dir_atomically(
        target, lambda d: _write_index_files(d, manifest, rel, emb, file_stats, index)
    )
    log.info(
        "indexed %d images into %s (%d embedded, %d reused, %d skipped)",
        len(kept),
        target,
        len(new),
        len(reused),
        len(skipped),
    )
    return manifest


def merge_shards(
    shard_dirs: Sequence[str | Path], out_dir: str | Path, *, index_type: str = "auto"
) -> Manifest:
    """Join shard (or whole-index) directories into one index at ``out_dir``.

    All inputs must share the checkpoint sha256 and embedding size; shards written by one
    distributed run must all be present. The result is the same as a single-process build.
    """
    if not shard_dirs:
        raise ValueError("merge_shards needs at least one shard directory")
    parts = [read_index_dir(d) for d in shard_dirs]
    first = parts[0].manifest
    for d, part in zip(shard_dirs, parts, strict=True):
        m = part.manifest
        if m.checkpoint_sha256 != first.checkpoint_sha256:
            raise ValueError(
                f"cannot merge: {d} was embedded with checkpoint sha256 {m.checkpoint_sha256} "
                f"but {shard_dirs[0]} with {first.checkpoint_sha256}; re-index with one checkpoint"
            )
        if m.embed_dim != first.embed_dim:
            raise ValueError(
                f"cannot merge: {d} has {m.embed_dim}-d embeddings, {shard_dirs[0]} "
                f"{first.embed_dim}-d"
            )
    shard_infos = [p.manifest.shard for p in parts if p.manifest.shard]
    if shard_infos:
        worlds = {s["world_size"] for s in shard_infos}
        ranks = sorted(s["rank"] for s in shard_infos)
        if len(worlds) > 1:
            raise ValueError(
                f"cannot merge shards of different runs (world sizes {sorted(worlds)})"
            )
        world = worlds.pop()
        if len(shard_infos) == len(parts) and ranks != list(range(world)):
            absent = sorted(set(range(world)) - set(ranks))
            dup = sorted({r for r in ranks if ranks.count(r) > 1})
            raise ValueError(
                f"incomplete or repeated shards of a {world}-rank run: missing ranks {absent}, "
                f"repeated ranks {dup}"
            )

    root = os.path.commonpath([p.manifest.root for p in parts])
    owner: dict[str, str] = {}
    rows: list[tuple[str, int, int]] = []  # (relative path, part, row)
    for pi, part in enumerate(parts):
        for ri, ap in enumerate(part.absolute_paths()):
            relp = Path(ap).relative_to(root).as_posix()
            if relp in owner:
                raise ValueError(
                    f"cannot merge: {ap} is in both {owner[relp]} and {shard_dirs[pi]}"
                )
            owner[relp] = str(shard_dirs[pi])
            rows.append((relp, pi, ri))
    if not rows:
        raise ValueError(f"the shards {', '.join(map(str, shard_dirs))} hold no images")
    rows.sort()
    emb = np.stack([parts[pi].embeddings[ri] for _, pi, ri in rows]).astype(np.float32)
    stats = np.stack([parts[pi].file_stats[ri] for _, pi, ri in rows]).astype(np.int64)
    rel = [r[0] for r in rows]
    skipped = []
    for part in parts:
        for s in part.manifest.skipped.get("images", []):
            ap = os.path.join(part.manifest.root, s["path"])
            skipped.append({"path": Path(ap).relative_to(root).as_posix(), "reason": s["reason"]})
    skipped.sort(key=lambda s: s["path"])
    index, info = build_faiss_index(emb, index_type)
    manifest = Manifest(
        checkpoint_path=first.checkpoint_path,
        checkpoint_sha256=first.checkpoint_sha256,
        embed_dim=first.embed_dim,
        count=len(rel),
        root=root,
        index=info,
        skipped={"count": len(skipped), "images": skipped},
        build={
            "merged_from": [str(Path(os.path.abspath(d))) for d in shard_dirs],
            "embedded": sum(p.manifest.build.get("embedded", 0) for p in parts),
            "reused": sum(p.manifest.build.get("reused", 0) for p in parts),
        },
    )
    _write_dir_atomically(
        Path(out_dir), lambda d: _write_index_files(d, manifest, rel, emb, stats, index)
    )
    return manifest
