"""On-disk index format: manifest, atomic replacement, and the safety checks around both.

An index directory holds:

- ``manifest.json``   what was indexed and how (:class:`Manifest`);
- ``embeddings.npy``  float32 ``[N, D]``, L2-normalised, row i belongs to ``paths.json[i]``;
- ``paths.json``      list of image paths relative to ``manifest.root`` (POSIX separators);
- ``file_stats.npy``  int64 ``[N, 2]`` (size in bytes, mtime in ns) of each image when it was
  embedded, so a re-run reuses the rows of unchanged files;
- ``index.faiss``     the FAISS index over ``embeddings.npy`` (absent in shard directories).

Directories are written into a temporary sibling and renamed into place, so an interrupted
run never leaves a partly written index and never damages the previous one. A folder is only
ever replaced when it is empty or holds nothing but a textreid index (and its shards), and
never when it is, holds or lies inside the images being indexed (:func:`check_output_dir`).
An index is only served when each of its entries resolves, after symlinks, to an image file
inside its recorded root (:func:`checked_paths`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from textreid.search.errors import HostileIndexError, IndexFormatError, UnsafeOutputError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
PATHS = "paths.json"
FILE_STATS = "file_stats.npy"
FAISS_INDEX = "index.faiss"
INDEX_FILES = frozenset({MANIFEST, EMBEDDINGS, PATHS, FILE_STATS, FAISS_INDEX})
_SHARD_DIR = re.compile(r"shard-\d{3,}-of-\d{3,}")
_OUR_TEMP = re.compile(r"\.shard-\d{3,}-of-\d{3,}\.(tmp|old)-\d+-[0-9a-f]{8}")


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
    def from_dict(cls, d: Any, source: str = "manifest") -> Manifest:
        """Parse and check a manifest dict; ``source`` names the file in errors."""
        if not isinstance(d, dict):
            raise IndexFormatError(f"{source}: expected a JSON object, got {type(d).__name__}")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFormatError(
                f"{source}: index format_version {version!r} is not supported "
                f"(this textreid reads version {FORMAT_VERSION}); rebuild the index"
            )
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("embed_dim", "count", "root", "index") if k not in d]
        if missing:
            raise IndexFormatError(f"{source}: missing key(s) {missing}")
        if not isinstance(d["root"], str) or not isinstance(d["index"], dict):
            raise IndexFormatError(f"{source}: 'root' must be a string and 'index' an object")
        return cls(**{k: v for k, v in d.items() if k in known})


def read_json(path: Path) -> Any:
    """Parse a JSON file; a damaged one is a one-line ValueError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"{path} is not valid JSON ({e}); rebuild the index") from None


def read_manifest(index_dir: Path) -> Manifest:
    """The manifest of ``index_dir``, or an error saying it is not an index."""
    mpath = index_dir / MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(
            f"{index_dir} is not a textreid index: {MANIFEST} is missing "
            "(build one with `textreid index --checkpoint CKPT --images DIR --out INDEX_DIR`)"
        )
    return Manifest.from_dict(read_json(mpath), str(mpath))


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


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_index_dir(index_dir: str | Path, mmap: bool = False, check: bool = True) -> IndexData:
    """Read manifest, paths, embeddings and file stats of an index (or shard) directory.

    With ``check`` every path must be an image inside the recorded root (:func:`checked_paths`).
    """
    d = Path(index_dir)
    manifest = read_manifest(d)
    paths = read_json(d / PATHS)
    if not isinstance(paths, list):
        raise IndexFormatError(f"{d / PATHS}: expected a list of paths")
    if check:
        checked_paths(manifest.root, paths, d / PATHS)
    emb = np.load(d / EMBEDDINGS, mmap_mode="r" if mmap else None)
    stats = np.load(d / FILE_STATS)
    if not (len(paths) == emb.shape[0] == stats.shape[0] == manifest.count):
        raise IndexFormatError(
            f"{d}: inconsistent index (manifest count {manifest.count}, {len(paths)} paths, "
            f"{emb.shape[0]} embeddings, {stats.shape[0]} file stats); rebuild it"
        )
    return IndexData(manifest, paths, emb, stats)


# ----------------------------------------------------------------------------- safety


def _inside(path: str, root: str) -> bool:
    """``path`` equals ``root`` or lies below it (both already resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def checked_paths(root: str, rel_paths: Sequence[Any], source: str | Path) -> list[str]:
    """Absolute paths of the entries, each checked to be an image inside ``root``.

    Symlinks are followed: an entry whose file (or folder) links outside the root, an absolute
    or ``../`` entry, or one without an image extension raises :class:`HostileIndexError`
    naming the entry. Missing files are allowed (they are reported when asked for).
    """
    real_root = os.path.realpath(root)
    real_dirs: dict[str, str] = {}
    out = []
    for i, rel in enumerate(rel_paths):
        if not isinstance(rel, str) or not rel or "\x00" in rel:
            raise HostileIndexError(f"{source}: entry {i} ({rel!r}) is not a file path; rebuild")
        full = os.path.join(root, rel)
        parent, name = os.path.split(full)
        if parent not in real_dirs:
            real_dirs[parent] = os.path.realpath(parent)
        real = os.path.join(real_dirs[parent], name)
        if os.path.islink(real):
            real = os.path.realpath(real)
        why = None
        if not _inside(real, real_root) or real == real_root:
            why = f"resolves to {real}, outside the index root {real_root}"
        elif not real.lower().endswith(IMAGE_EXTENSIONS):
            why = f"is not an image file ({', '.join(IMAGE_EXTENSIONS)})"
        if why:
            raise HostileIndexError(
                f"{source}: entry {i} {rel!r} {why}; refusing this index (it was edited or "
                "built elsewhere: rebuild it with `textreid index`)"
            )
        out.append(full)
    return out


def _is_ours(entry: Path) -> bool:
    """A file or folder that a textreid index directory may hold."""
    if entry.name in INDEX_FILES:
        return entry.is_file() and not entry.is_symlink()
    if _OUR_TEMP.fullmatch(entry.name):
        return entry.is_dir() and not entry.is_symlink()
    if _SHARD_DIR.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
        return all(c.name in INDEX_FILES and c.is_file() for c in entry.iterdir())
    return False


def _overlap(out: str, images: str) -> str | None:
    """How the resolved output folder collides with a resolved images folder, if it does."""
    if out == images:
        return "is the images folder"
    if _inside(out, images):
        return f"lies inside the images folder {images}"
    if _inside(images, out):
        return f"contains the images being indexed ({images})"
    return None


def check_output_dir(out_dir: str | Path, image_dirs: Sequence[str | Path] = ()) -> Path:
    """The resolved ``out_dir``, after checking that writing an index there destroys nothing.

    Refused (:class:`UnsafeOutputError`): a file; a non-empty folder holding anything but a
    textreid index and its shards; a folder that is, holds or lies inside one of
    ``image_dirs`` (the images folder, or the folders of listed images).
    """
    out = Path(os.path.realpath(out_dir))
    for images in {os.path.realpath(d) for d in image_dirs}:
        where = _overlap(str(out), images)
        if where:
            raise UnsafeOutputError(
                f"refusing --out {out_dir}: it {where}; write the index to a new folder outside "
                "the images"
            )
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UnsafeOutputError(f"refusing --out {out_dir}: it is a file, not a folder")
        foreign = sorted(e.name for e in out.iterdir() if not _is_ours(e))
        if foreign:
            more = f" and {len(foreign) - 1} more entries" if len(foreign) > 1 else ""
            raise UnsafeOutputError(
                f"refusing --out {out_dir}: it holds {foreign[0]!r}{more}, which is not part of a "
                "textreid index, and writing there would delete it; choose a new or empty folder"
            )
    return out


# ----------------------------------------------------------------------------- writing


def write_dir_atomically(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a fresh sibling dir, then swap it in for ``out_dir``.

    Shard sub-directories (``shard-*-of-*``) of a replaced ``out_dir`` are moved into the new
    one. The replaced folder is deleted only if it still holds nothing but index files;
    otherwise it is kept beside the new one and a warning names it.
    """
    out_dir = Path(os.path.realpath(out_dir))
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
        if all(_is_ours(e) for e in old.iterdir()):
            shutil.rmtree(old, ignore_errors=True)
        else:
            log.warning("kept the previous contents of %s in %s (not only index files)", out_dir, old)


def write_index_files(
    d: Path,
    manifest: Manifest,
    rel_paths: list[str],
    emb: np.ndarray,
    stats: np.ndarray,
    index: faiss.Index | None,
) -> None:
    """Write the files of an index directory into ``d`` (the manifest last)."""
    np.save(d / EMBEDDINGS, np.ascontiguousarray(emb, dtype=np.float32))
    np.save(d / FILE_STATS, np.asarray(stats, dtype=np.int64).reshape(-1, 2))
    (d / PATHS).write_text(json.dumps(rel_paths, ensure_ascii=False), encoding="utf-8")
    if index is not None:
        faiss.write_index(index, str(d / FAISS_INDEX))
    # The manifest is written last: its presence marks a complete directory.
    (d / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2), encoding="utf-8")
