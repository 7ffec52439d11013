"""Building index directories: embed a folder of images once, grow it, shard it, merge shards.

The on-disk format and its safety checks live in :mod:`textreid.search.store`, the choice and
tuning of the FAISS index in :mod:`textreid.search.ann`; their public names are re-exported
here, so ``from textreid.search.index import build_index, read_index_dir, ...`` keeps working.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm import tqdm

from textreid.embeddings import normalise
from textreid.search.ann import (
    AUTO_FLAT_MAX,
    INDEX_TYPES,
    RECALL_TARGET,
    apply_search_params,
    build_faiss_index,
    exact_topk,
    search_index,
    spherical_kmeans,
)
from textreid.search.errors import IndexFormatError, SearchError
from textreid.search.gallery import collect_images, load_image
from textreid.search.store import (
    EMBEDDINGS,
    FAISS_INDEX,
    FILE_STATS,
    FORMAT_VERSION,
    IMAGE_EXTENSIONS,
    MANIFEST,
    PATHS,
    IndexData,
    Manifest,
    check_output_dir,
    checked_paths,
    read_index_dir,
    sha256_file,
    write_dir_atomically,
    write_index_files,
)

__all__ = [
    "AUTO_FLAT_MAX", "EMBEDDINGS", "FAISS_INDEX", "FILE_STATS", "FORMAT_VERSION",
    "IMAGE_EXTENSIONS", "INDEX_TYPES", "MANIFEST", "PATHS", "RECALL_TARGET", "EncoderProtocol",
    "IndexData", "Manifest", "apply_search_params", "build_faiss_index", "build_index",
    "check_output_dir", "checked_paths", "collect_images", "exact_topk", "load_image",
    "merge_shards", "rank_world_from_env", "read_index_dir", "search_index",
    "sha256_file", "shard_dir_name", "spherical_kmeans",
]  # fmt: skip

log = logging.getLogger(__name__)


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


# ----------------------------------------------------------------------------- reuse


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


@dataclass
class _Plan:
    """What one build does with each listed image."""

    root: Path
    files: list[Path]
    stats: dict[Path, tuple[int, int]] = field(default_factory=dict)
    reused: dict[Path, np.ndarray] = field(default_factory=dict)
    todo: list[Path] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def skip(self, p: Path, reason: str) -> None:
        self.skipped.append({"path": p.relative_to(self.root).as_posix(), "reason": reason})


def _unusable(p: Path, real_root: str) -> str | None:
    """Why ``p`` cannot be indexed (not a regular file, or a link leading outside the root)."""
    if not p.is_file():
        return "unreadable: not a regular file"
    real = os.path.realpath(p)
    if not real.startswith(real_root.rstrip(os.sep) + os.sep):
        return f"a link to {real}, outside the images folder {real_root}"
    if not real.lower().endswith(IMAGE_EXTENSIONS):
        return f"a link to {real}, which is not an image file"
    return None


def _plan(root: Path, files: list[Path], table: dict[str, tuple[int, int, np.ndarray]]) -> _Plan:
    """Stat every file; reuse unchanged rows of a previous index; list the rest to embed."""
    plan = _Plan(root, files)
    real_root = os.path.realpath(root)
    for p in files:
        try:
            st = p.stat()
            why = _unusable(p, real_root)
        except OSError as e:
            why = "file not found" if isinstance(e, FileNotFoundError) else f"unreadable: {e}"
        if why:
            plan.skip(p, why)
            continue
        plan.stats[p] = (st.st_size, st.st_mtime_ns)
        prev = table.get(str(p))
        if prev is not None and prev[:2] == plan.stats[p]:
            plan.reused[p] = prev[2]
        else:
            plan.todo.append(p)
    return plan


# ----------------------------------------------------------------------------- embedding


def _batched(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _encode_batch(encoder: EncoderProtocol, images: list, batch_size: int, dim: int | None):
    """Normalised embeddings ``[B, D]`` of decoded images, checking the encoder's output shape."""
    out = _to_numpy(encoder.encode_images(images, batch_size=batch_size))
    if out.ndim != 2 or out.shape[0] != len(images):
        raise ValueError(
            f"encoder.encode_images returned shape {tuple(out.shape)} for "
            f"{len(images)} images; expected [{len(images)}, D]"
        )
    if dim is not None and out.shape[1] != dim:
        raise ValueError(
            f"encoder.encode_images returned {out.shape[1]}-d vectors but the "
            f"encoder's embed_dim is {dim}"
        )
    return normalise(out)


def _embed(
    encoder: EncoderProtocol, plan: _Plan, batch_size: int, dim: int | None, progress: bool
) -> tuple[dict[Path, np.ndarray], int | None]:
    """Embed ``plan.todo`` (decoding the next batch in threads meanwhile); corrupt ones skipped."""
    new: dict[Path, np.ndarray] = {}
    with (
        tqdm(total=len(plan.todo), unit="img", desc="embedding", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool,
    ):
        batches = list(_batched(plan.todo, batch_size))
        pending: list[Future] | None = None
        for bi, batch in enumerate(batches):
            if pending is None:
                pending = [pool.submit(load_image, p) for p in batch]
            loaded = [f.result() for f in pending]
            pending = None
            if bi + 1 < len(batches):
                pending = [pool.submit(load_image, p) for p in batches[bi + 1]]
            ok = [(p, im) for p, im in zip(batch, loaded, strict=True) if not isinstance(im, str)]
            for p, im in zip(batch, loaded, strict=True):
                if isinstance(im, str):
                    plan.skip(p, im)
            if ok:
                out = _encode_batch(encoder, [im for _, im in ok], batch_size, dim)  # [B, D]
                dim = out.shape[1]
                for (p, _), row in zip(ok, out, strict=True):
                    new[p] = row
            bar.update(len(batch))
    return new, dim


# ----------------------------------------------------------------------------- building


def _rows(
    plan: _Plan, new: dict[Path, np.ndarray], dim: int | None, allow_empty: bool
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(relative paths, embeddings [N, D], file stats [N, 2]) of the kept images, in order."""
    kept = [p for p in plan.files if p in plan.reused or p in new]
    if not kept and not allow_empty:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in plan.skipped[:3])
        raise SearchError(f"no usable images under {plan.root} ({len(plan.skipped)} skipped: {reasons})")
    if dim is None:  # nothing embedded; rows (if any) reused from an encoder without embed_dim
        dim = int(next(iter(plan.reused.values())).shape[0]) if kept else 0
    emb = np.empty((len(kept), dim), dtype=np.float32)  # [N, D]
    for i, p in enumerate(kept):
        emb[i] = plan.reused[p] if p in plan.reused else new[p]
    rel = [p.relative_to(plan.root).as_posix() for p in kept]
    stats = np.array([plan.stats[p] for p in kept], dtype=np.int64).reshape(-1, 2)
    return rel, emb, stats


def _checkpoint_sha(encoder: Any, checkpoint_path: str | Path | None) -> tuple[str | None, str | None]:
    """(absolute checkpoint path, its sha256), or (None, None) when there is none."""
    ckpt = checkpoint_path if checkpoint_path is not None else getattr(encoder, "checkpoint_path", None)
    if ckpt is None:
        return None, None
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} not found (needed to record its sha256)")
    ckpt = os.path.abspath(ckpt)
    return ckpt, sha256_file(ckpt)


def _reusable(
    previous: list[Path], sha: str | None, dim: int | None, *, progress: bool
) -> tuple[dict[str, tuple[int, int, np.ndarray]], str | None]:
    """``_reuse_table`` of the earlier index, saying (log, and the console with ``progress``) why
    nothing could be reused when there was an index but none of it fits."""
    table, not_reused = _reuse_table(previous, sha, dim)
    if not_reused and not table:
        log.warning("%s", not_reused)
        if progress:
            tqdm.write(f"textreid index: {not_reused}")
    return table, not_reused


def _check_build_args(index_type: str, rank: int, world_size: int, batch_size: int) -> None:
    if index_type not in INDEX_TYPES:
        raise SearchError(f"unknown index_type {index_type!r}; valid: {', '.join(INDEX_TYPES)}")
    if not (0 <= rank < world_size):
        raise SearchError(f"rank {rank} is outside 0..{world_size - 1} (world_size {world_size})")
    if batch_size < 1:
        raise SearchError(f"batch_size must be >= 1, got {batch_size}")


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

    ``out_dir`` must be new, empty or a textreid index, and must not be, hold or lie inside the
    images (:func:`check_output_dir`). Images already in a previous index at the target (same
    path, size and mtime, same checkpoint sha256) are not embedded again. Unreadable images,
    and links leading outside the images folder, are skipped and listed in the manifest. With
    ``world_size > 1`` this rank embeds its contiguous share of the sorted list and writes
    ``out_dir/shard-RRR-of-WWW`` (no FAISS index); join shards with :func:`merge_shards`.
    """
    _check_build_args(index_type, rank, world_size, batch_size)
    t_start = time.perf_counter()
    ckpt, sha = _checkpoint_sha(encoder, checkpoint_path)
    root, files = collect_images(images)
    folder = isinstance(images, str | Path) and Path(images).is_dir()
    out_dir = check_output_dir(out_dir, [root] if folder else {p.parent for p in files})
    sharded = world_size > 1
    target = out_dir
    if sharded:
        files = files[rank * len(files) // world_size : (rank + 1) * len(files) // world_size]
        target = out_dir / shard_dir_name(rank, world_size)
    previous = [target, out_dir] if sharded else [out_dir]  # the shard, or an earlier index

    dim = getattr(encoder, "embed_dim", None)
    table, not_reused = _reusable(previous, sha, dim, progress=progress)
    plan = _plan(root, files, table)
    new, dim = _embed(encoder, plan, batch_size, dim, progress)

    rel, emb, file_stats = _rows(plan, new, dim, allow_empty=sharded)

    index, info = (None, {"type": "none"}) if sharded else build_faiss_index(emb, index_type)
    plan.skipped.sort(key=lambda s: s["path"])
    manifest = Manifest(
        checkpoint_path=ckpt, checkpoint_sha256=sha, embed_dim=int(emb.shape[1]), count=len(rel),
        root=str(root), index=info, skipped={"count": len(plan.skipped), "images": plan.skipped},
        build={
            "embedded": len(new),
            "reused": len(plan.reused),
            "reembedded_all": not_reused if not_reused and not table else None,
            "seconds": round(time.perf_counter() - t_start, 3),
        },
        shard={"rank": rank, "world_size": world_size} if sharded else None,
    )  # fmt: skip
    write_dir_atomically(target, lambda d: write_index_files(d, manifest, rel, emb, file_stats, index))
    log.info("indexed %d images into %s (%d embedded, %d reused, %d skipped)",
             len(rel), target, len(new), len(plan.reused), len(plan.skipped))  # fmt: skip
    return manifest


# ----------------------------------------------------------------------------- merging


def _check_mergeable(shard_dirs: Sequence[str | Path], parts: list[IndexData]) -> None:
    """Same checkpoint and width everywhere; shards of one run complete and not repeated."""
    first = parts[0].manifest
    for d, part in zip(shard_dirs, parts, strict=True):
        m = part.manifest
        if m.checkpoint_sha256 != first.checkpoint_sha256:
            raise IndexFormatError(
                f"cannot merge: {d} was embedded with checkpoint sha256 {m.checkpoint_sha256} "
                f"but {shard_dirs[0]} with {first.checkpoint_sha256}; re-index with one checkpoint"
            )
        if m.embed_dim != first.embed_dim:
            raise IndexFormatError(
                f"cannot merge: {d} has {m.embed_dim}-d embeddings, {shard_dirs[0]} "
                f"{first.embed_dim}-d"
            )
    shard_infos = [p.manifest.shard for p in parts if p.manifest.shard]
    if not shard_infos:
        return
    worlds = {s["world_size"] for s in shard_infos}
    ranks = sorted(s["rank"] for s in shard_infos)
    if len(worlds) > 1:
        raise IndexFormatError(f"cannot merge shards of different runs (world sizes {sorted(worlds)})")
    world = worlds.pop()
    if len(shard_infos) == len(parts) and ranks != list(range(world)):
        absent = sorted(set(range(world)) - set(ranks))
        dup = sorted({r for r in ranks if ranks.count(r) > 1})
        raise IndexFormatError(
            f"incomplete or repeated shards of a {world}-rank run: missing ranks {absent}, "
            f"repeated ranks {dup}"
        )


def _merged_rows(
    shard_dirs: Sequence[str | Path], parts: list[IndexData], root: str
) -> list[tuple[str, int, int]]:
    """Sorted (path relative to ``root``, part, row); a path in two parts is an error."""
    owner: dict[str, str] = {}
    rows: list[tuple[str, int, int]] = []
    for pi, part in enumerate(parts):
        for ri, ap in enumerate(part.absolute_paths()):
            relp = Path(ap).relative_to(root).as_posix()
            if relp in owner:
                raise IndexFormatError(f"cannot merge: {ap} is in both {owner[relp]} and {shard_dirs[pi]}")
            owner[relp] = str(shard_dirs[pi])
            rows.append((relp, pi, ri))
    if not rows:
        raise IndexFormatError(f"the shards {', '.join(map(str, shard_dirs))} hold no images")
    return sorted(rows)


def merge_shards(
    shard_dirs: Sequence[str | Path], out_dir: str | Path, *, index_type: str = "auto"
) -> Manifest:
    """Join shard (or whole-index) directories into one index at ``out_dir``.

    All inputs must share the checkpoint sha256 and embedding size; shards written by one
    distributed run must all be present. The result is the same as a single-process build.
    ``out_dir`` is checked like :func:`build_index`'s (never a folder of other files or images).
    """
    if not shard_dirs:
        raise IndexFormatError("merge_shards needs at least one shard directory")
    parts = [read_index_dir(d) for d in shard_dirs]
    _check_mergeable(shard_dirs, parts)
    root = os.path.commonpath([p.manifest.root for p in parts])
    out = check_output_dir(out_dir, [p.manifest.root for p in parts])
    rows = _merged_rows(shard_dirs, parts, root)
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
    first = parts[0].manifest
    manifest = Manifest(
        checkpoint_path=first.checkpoint_path, checkpoint_sha256=first.checkpoint_sha256,
        embed_dim=first.embed_dim, count=len(rel), root=root, index=info,
        skipped={"count": len(skipped), "images": skipped},
        build={
            "merged_from": [str(Path(os.path.abspath(d))) for d in shard_dirs],
            "embedded": sum(p.manifest.build.get("embedded", 0) for p in parts),
            "reused": sum(p.manifest.build.get("reused", 0) for p in parts),
        },
    )  # fmt: skip
    write_dir_atomically(out, lambda d: write_index_files(d, manifest, rel, emb, stats, index))
    return manifest
