"""Gallery search: build a FAISS index of image embeddings, query it with text, show results.

``index`` builds / grows / merges index directories, ``searcher`` ranks images for text,
``html`` writes standalone result pages, ``server`` serves a search page and JSON API.
"""

from textreid.search.html import render_results
from textreid.search.index import (
    EncoderProtocol,
    Manifest,
    build_faiss_index,
    build_index,
    merge_shards,
    rank_world_from_env,
    read_index_dir,
)
from textreid.search.searcher import Hit, Searcher, results_as_json
from textreid.search.server import make_server, serve

__all__ = [
    "EncoderProtocol",
    "Hit",
    "Manifest",
    "Searcher",
    "build_faiss_index",
    "build_index",
    "make_server",
    "merge_shards",
    "rank_world_from_env",
    "read_index_dir",
    "render_results",
    "results_as_json",
    "serve",
]
