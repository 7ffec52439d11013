"""Query a gallery index with text (or precomputed embeddings)."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from textreid.search.index import (
    FAISS_INDEX,
    MANIFEST,
    PATHS,
    EncoderProtocol,
    Manifest,
    apply_search_params,
    search_index,
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
    """Loads an index directory and ranks its images for text queries."""

    def __init__(
        self,
        index_dir: str | Path,
        encoder: EncoderProtocol | None = None,
        device: str = "cpu",
    ) -> None:
        self.index_dir = Path(index_dir)
        mpath = self.index_dir / MANIFEST
        if not mpath.is_file():
            raise FileNotFoundError(
                f"{self.index_dir} is not a textreid index ({MANIFEST} missing); "
                "build one with `textreid index --checkpoint CKPT --images DIR --out INDEX_DIR`"
            )
        self.manifest = Manifest.from_dict(
            json.loads(mpath.read_text(encoding="utf-8")), str(mpath)
        )
        m = self.manifest
        if m.shard is not None:
            raise ValueError(
                f"{self.index_dir} is shard {m.shard['rank']} of {m.shard['world_size']}, not a "
                "searchable index; join the shards with `textreid index merge SHARD... --out DIR`"
            )
        fpath = self.index_dir / FAISS_INDEX
        if not fpath.is_file():
            raise FileNotFoundError(f"{fpath} is missing; rebuild the index")
        self.relative_paths: list[str] = json.loads(
            (self.index_dir / PATHS).read_text(encoding="utf-8")
        )
        self.paths = [os.path.join(m.root, p) for p in self.relative_paths]
        self.index = faiss.read_index(str(fpath))
        apply_search_params(self.index, m.index)
        if not (self.index.ntotal == len(self.paths) == m.count):
            raise ValueError(
                f"{self.index_dir}: inconsistent index (manifest count {m.count}, "
                f"{len(self.paths)} paths, {self.index.ntotal} vectors in {FAISS_INDEX}); rebuild it"
            )
        if encoder is None:
            encoder = self._load_encoder(device)
        dim = getattr(encoder, "embed_dim", None)
        if dim is not None and dim != m.embed_dim:
            raise ValueError(
                f"the encoder makes {dim}-d embeddings but {self.index_dir} holds "
                f"{m.embed_dim}-d ones (checkpoint {m.checkpoint_path}); use the model that "
                "built the index"
            )
        self.encoder = encoder
        # Torch already uses every core per call; serialising calls from server threads
        # avoids oversubscription and keeps encoders that are not thread-safe correct.
        self._lock = threading.Lock()

    def _load_encoder(self, device: str) -> EncoderProtocol:
        m = self.manifest
        ckpt = m.checkpoint_path
        if ckpt is None:
            raise ValueError(
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

    def _check_k(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise TypeError(f"k must be an integer, got {k!r}")
        if not 1 <= k <= self.count:
            raise ValueError(f"k must be between 1 and {self.count} (the gallery size), got {k}")
        return int(k)

    def search(self, texts: str | list[str], k: int = 10) -> list[list[Hit]]:
        """Top-``k`` images for each text, best first (one list per text)."""
        queries = [texts] if isinstance(texts, str) else list(texts)
        if not queries:
            raise ValueError("no queries given")
        for i, t in enumerate(queries):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"query {i + 1} is empty: describe the person to search for")
        k = self._check_k(k)
        with self._lock:
            q = self.encoder.encode_text(queries)
        return self.search_embeddings(q, k)

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
        q = np.ascontiguousarray(q / norms)  # [N, D]
        scores, ids = search_index(self.index, q, k)  # [N, k], [N, k]
        results = []
        for srow, irow in zip(scores, ids, strict=True):
            hits = [
                Hit(path=self.paths[i], score=float(s), rank=r + 1, index=int(i))
                for r, (s, i) in enumerate(
                    (s, i) for s, i in zip(srow, irow, strict=True) if i >= 0
                )
            ]
            results.append(hits)
        return results


def results_as_json(
    queries: list[str], results: list[list[Hit]], root: str | None = None
) -> list[dict[str, Any]]:
    """JSON-ready form of search results (the shape of the web API, one entry per query).

    ``[{"query", "k", "results": [{"rank", "score", "path"}]}]``; paths are made relative to
    ``root`` (e.g. ``searcher.manifest.root``) when given, else left absolute.
    """
    if len(queries) != len(results):
        raise ValueError(f"{len(queries)} queries but {len(results)} result lists")
    out = []
    for q, hits in zip(queries, results, strict=True):
        rows = [
            {
                "rank": h.rank,
                "score": round(h.score, 6),
                "path": Path(os.path.relpath(h.path, root)).as_posix() if root else h.path,
            }
            for h in hits
        ]
        out.append({"query": q, "k": len(hits), "results": rows})
    return out
