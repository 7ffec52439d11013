"""Query a gallery index with text, with another image, or with precomputed embeddings."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from textreid.embeddings import normalise
from textreid.search.ann import apply_search_params, search_index
from textreid.search.errors import IndexFormatError, QueryError, SearchError
from textreid.search.index import EncoderProtocol
from textreid.search.query import check_k, check_queries, hit_json, ignored_words
from textreid.search.store import (
    EMBEDDINGS,
    FAISS_INDEX,
    PATHS,
    checked_paths,
    read_json,
    read_manifest,
    sha256_file,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """One ranked gallery image."""

    path: str  # absolute path of the image
    score: float  # cosine similarity to the query
    rank: int  # 1-based
    index: int = -1  # row of the image in the index (for /image/<index>)


class Searcher:
    """Loads an index directory and ranks its images for text queries or a gallery image.

    Loading refuses an index any of whose entries leads (after symlinks) outside its recorded
    root or is not an image file (:class:`~textreid.search.errors.HostileIndexError`).
    """

    def __init__(
        self,
        index_dir: str | Path,
        encoder: EncoderProtocol | None = None,
        device: str = "cpu",
    ) -> None:
        self.index_dir = Path(index_dir)
        self.manifest = m = read_manifest(self.index_dir)
        if m.shard is not None:
            raise IndexFormatError(
                f"{self.index_dir} is shard {m.shard['rank']} of {m.shard['world_size']}, not a "
                "searchable index; join the shards with `textreid index merge SHARD... --out DIR`"
            )
        fpath = self.index_dir / FAISS_INDEX
        if not fpath.is_file():
            raise FileNotFoundError(f"{fpath} is missing; rebuild the index")
        rel = read_json(self.index_dir / PATHS)
        if not isinstance(rel, list):
            raise IndexFormatError(f"{self.index_dir / PATHS}: expected a list of paths; rebuild it")
        self.paths = checked_paths(m.root, rel, self.index_dir / PATHS)
        self.relative_paths: list[str] = rel
        self.real_root = os.path.realpath(m.root)
        self.index = faiss.read_index(str(fpath))
        apply_search_params(self.index, m.index)
        if not (self.index.ntotal == len(self.paths) == m.count):
            raise IndexFormatError(
                f"{self.index_dir}: inconsistent index (manifest count {m.count}, "
                f"{len(self.paths)} paths, {self.index.ntotal} vectors in {FAISS_INDEX}); rebuild it"
            )
        if encoder is None:
            encoder = self._load_encoder(device)
        dim = getattr(encoder, "embed_dim", None)
        if dim is not None and dim != m.embed_dim:
            raise IndexFormatError(
                f"the encoder makes {dim}-d embeddings but {self.index_dir} holds "
                f"{m.embed_dim}-d ones (checkpoint {m.checkpoint_path}); use the model that "
                "built the index"
            )
        self.encoder = encoder
        self._embeddings: np.ndarray | None = None
        # Torch already uses every core per call; serialising calls from server threads
        # avoids oversubscription and keeps encoders that are not thread-safe correct.
        self._lock = threading.Lock()

    def _load_encoder(self, device: str) -> EncoderProtocol:
        m = self.manifest
        ckpt = m.checkpoint_path
        if ckpt is None:
            raise SearchError(
                f"{self.index_dir} records no checkpoint path; pass the encoder that built it "
                "(Searcher(index_dir, encoder=...), or --checkpoint on the command line)"
            )
        if not Path(ckpt).is_file():
            raise FileNotFoundError(
                f"the index was built with checkpoint {ckpt}, which no longer exists; pass the "
                "same model explicitly (Searcher(index_dir, encoder=textreid.load(PATH)), or "
                "--checkpoint PATH on the command line)"
            )
        if m.checkpoint_sha256 and sha256_file(ckpt) != m.checkpoint_sha256:
            log.warning(
                "checkpoint %s changed since the index was built (sha256 differs): results "
                "will be poor until the gallery is re-indexed",
                ckpt,
            )
        from textreid.api import load  # heavy import, only when no encoder is given

        return load(ckpt, device=device)

    @property
    def count(self) -> int:
        """Number of indexed images."""
        return len(self.paths)

    @property
    def embeddings(self) -> np.ndarray:
        """The stored image embeddings ``[N, D]`` (memory-mapped on first use)."""
        if self._embeddings is None:
            emb = np.load(self.index_dir / EMBEDDINGS, mmap_mode="r")
            if emb.shape != (self.count, self.manifest.embed_dim):
                raise IndexFormatError(
                    f"{self.index_dir / EMBEDDINGS} has shape {emb.shape}, expected "
                    f"({self.count}, {self.manifest.embed_dim}); rebuild the index"
                )
            self._embeddings = emb
        return self._embeddings

    def _check_k(self, k: Any, extra: int = 0) -> int:
        return check_k(k, self.count - extra)

    def ignored_words(self, text: str) -> list[str]:
        """Words of ``text`` the model does not know (they are ignored); raises
        :class:`~textreid.search.errors.UnknownWordsError` when it knows none of them."""
        return ignored_words(self.encoder, text)

    def search(self, texts: str | list[str], k: int = 10) -> list[list[Hit]]:
        """Top-``k`` images for each text, best first (one list per text).

        Refused: empty queries, and queries none of whose words the model knows.
        """
        queries = check_queries(texts)
        k = self._check_k(k)
        for q in queries:
            self.ignored_words(q)
        with self._lock:
            q = self.encoder.encode_text(queries)
        return self.search_embeddings(q, k)

    def image_position(self, path: str | Path) -> int | None:
        """Position of an image file in the index (after resolving links), or None."""
        real = os.path.realpath(path)
        if not hasattr(self, "_positions"):
            self._positions = {os.path.realpath(p): i for i, p in enumerate(self.paths)}
        return self._positions.get(real)

    def similar(self, i: Any, k: int = 10) -> list[Hit]:
        """The ``k`` gallery images most like image ``i`` of the index (by its stored embedding).

        Image ``i`` itself is left out of the results, so rank 1 is the closest *other* image.
        """
        if isinstance(i, bool) or not hasattr(i, "__index__"):
            raise TypeError(f"the image position must be an integer, got {i!r}")
        if not 0 <= int(i) < self.count:
            raise QueryError(f"no image {i}: the index holds images 0..{self.count - 1}")
        i = int(i)
        k = self._check_k(k, extra=1)
        hits = self.search_embeddings(np.asarray(self.embeddings[i]), min(k + 1, self.count))[0]
        others = [h for h in hits if h.index != i][:k]
        return [Hit(path=h.path, score=h.score, rank=r + 1, index=h.index) for r, h in enumerate(others)]

    def search_image(self, image: str | Path, k: int = 10) -> list[Hit]:
        """Images most like an image file: an indexed one by its stored embedding (itself left
        out), any other one embedded with the index's model."""
        i = self.image_position(image)
        if i is not None:
            return self.similar(i, k)
        if not Path(image).is_file():
            raise FileNotFoundError(f"image not found: {image}")
        k = self._check_k(k)
        with self._lock:
            q = self.encoder.encode_images([str(image)])
        return self.search_embeddings(q, k)[0]

    def search_embeddings(self, q: Any, k: int = 10) -> list[list[Hit]]:
        """Top-``k`` images for precomputed query embeddings ``[N, D]`` (or ``[D]``).

        Queries are L2-normalised here, so scores are cosine similarities. An approximate
        index may return fewer than ``k`` hits when the probed cells hold fewer images.
        """
        k = self._check_k(k)
        if hasattr(q, "detach"):
            q = q.detach().float().cpu().numpy()
        q = np.asarray(q, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.manifest.embed_dim:
            raise ValueError(
                f"query embeddings must be [N, {self.manifest.embed_dim}], got {tuple(q.shape)}"
            )
        if q.shape[0] == 0:
            raise ValueError("no query embeddings given")
        norms = np.linalg.norm(q, axis=1, keepdims=True)  # [N, 1]
        if not np.all(np.isfinite(q)) or np.any(norms == 0):
            raise ValueError("query embeddings must be finite and non-zero")
        q = np.ascontiguousarray(normalise(q))  # [N, D]
        scores, ids = search_index(self.index, q, k)  # [N, k], [N, k]
        results = []
        for srow, irow in zip(scores, ids, strict=True):
            ranked = [(float(s), int(i)) for s, i in zip(srow, irow, strict=True) if i >= 0]
            results.append(
                [Hit(path=self.paths[i], score=s, rank=r + 1, index=i) for r, (s, i) in enumerate(ranked)]
            )
        return results

    def image_file(self, i: int) -> Path:
        """The file of indexed image ``i``, checked again to lie inside the index root now
        (a link swapped since loading is refused); ``QueryError`` / ``FileNotFoundError``."""
        if not 0 <= i < self.count:
            raise QueryError(f"no image {i}: the index holds images 0..{self.count - 1}")
        real = os.path.realpath(self.paths[i])
        if not real.startswith(self.real_root.rstrip(os.sep) + os.sep):
            raise QueryError(f"image {i} now leads outside the index root; not served")
        return Path(real)


def results_as_json(
    queries: list[str], results: list[list[Hit]], root: str | None = None
) -> list[dict[str, Any]]:
    """JSON-ready form of search results (the shape of the web API, one entry per query).

    ``[{"query", "k", "results": [hit_json(...)]}]``; paths are made relative to ``root``
    (e.g. ``searcher.manifest.root``) when given, else left absolute.
    """
    if len(queries) != len(results):
        raise ValueError(f"{len(queries)} queries but {len(results)} result lists")
    return [
        {"query": q, "k": len(hits), "results": [hit_json(h, root) for h in hits]}
        for q, hits in zip(queries, results, strict=True)
    ]
