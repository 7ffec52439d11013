"""textreid."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textreid.api import Encoder, load

__all__ = ["Encoder", "load"]


def __getattr__(name: str) -> Any:
    # lazy: `import textreid.config` stays light (no torch/model imports until the API is used)
    if name in __all__:
        from textreid import api

        return getattr(api, name)
    raise AttributeError(f"module 'textreid' has no attribute {name!r}")
