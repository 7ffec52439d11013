"""Towers, the TextReID model and weight loading; registries map names to builders."""

from .visual import VISUAL_TOWERS, build_visual_tower

__all__ = ["VISUAL_TOWERS", "build_visual_tower"]

from .build import TEXT_TOWERS, build_model, tokenizer_kind  # noqa: E402
from .checkpoint import load_authors_checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from .gru import BiGRUTower  # noqa: E402
from .momentum import KeyQueue, frozen_copy, momentum_update  # noqa: E402
from .textreid import TextReID  # noqa: E402

__all__ += [
    "TEXT_TOWERS",
    "BiGRUTower",
    "KeyQueue",
    "TextReID",
    "build_model",
    "load_authors_checkpoint",
    "load_checkpoint",
    "momentum_update",
    "frozen_copy",
    "save_checkpoint",
    "tokenizer_kind",
]
