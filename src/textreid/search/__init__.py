"""Gallery search: build a FAISS index of image embeddings, query it with text, show results.

``index`` builds / grows / merges index directories (``store``: the on-disk format and its
safety checks; ``ann``: exact or IVF/HNSW search), ``searcher`` ranks images for text or for
another image, ``query`` holds the shared query rules and result shape, ``html`` writes
standalone result pages, ``server`` serves a search page and JSON API (FastAPI on uvicorn).

Names are imported lazily, so ``import textreid.search.errors`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "EncoderProtocol": "index",
    "Manifest": "store",
    "build_faiss_index": "ann",
    "build_index": "index",
    "merge_shards": "index",
    "rank_world_from_env": "index",
    "read_index_dir": "store",
    "render_results": "html",
    "Hit": "searcher",
    "Searcher": "searcher",
    "results_as_json": "searcher",
    "make_server": "server",
    "serve": "server",
    "SearchError": "errors",
    "UnsafeOutputError": "errors",
    "HostileIndexError": "errors",
    "QueryError": "errors",
    "UnknownWordsError": "errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"textreid.search.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'textreid.search' has no attribute {name!r}")
