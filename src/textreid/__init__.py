"""textreid: text-based person search (TextReID and beyond).

``textreid.load(checkpoint)`` gives an Encoder (``encode_text`` / ``encode_images``);
``textreid.Searcher(index_dir).search(texts, k)`` searches a gallery index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textreid.api import Encoder, load
    from textreid.search.errors import UnknownWordsError
    from textreid.search.searcher import Searcher

__version__ = "0.1.0"
__all__ = ["Encoder", "Searcher", "UnknownWordsError", "load"]
_LAZY = {"Encoder": "textreid.api", "load": "textreid.api", "Searcher": "textreid.search.searcher",
         "UnknownWordsError": "textreid.search.errors"}


def __getattr__(name: str) -> Any:
    # lazy: `import textreid.config` stays light (no torch/model imports until the API is used)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'textreid' has no attribute {name!r}")
