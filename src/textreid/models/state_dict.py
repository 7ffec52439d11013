"""State-dict helpers shared by every weight loader: unwrap a model, strip a wrapper's key prefix, compare.

DDP and ``torch.compile`` wrap a model (``.module`` / ``._orig_mod``) and prefix the keys of the
state dicts saved from the wrapper (``module.`` / ``_orig_mod.``); loaders remove both before
comparing a file's entries with the model's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn as nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def strip_prefix(state_dict: dict[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """``state_dict`` without ``prefix`` when every key has it (saved from a wrapper); else unchanged."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


@dataclass(frozen=True)
class StateDictDiff:
    """How a file's entries differ from a model's; every list is sorted."""

    missing: list[str]  # in the model, not in the file
    unexpected: list[str]  # in the file, not in the model
    wrong_shape: list[str]  # in both with different shapes, as "key: file (..) vs model (..)"
    wrong_shape_keys: list[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)


def diff_state_dicts(model: Mapping[str, Any], file: Mapping[str, Any]) -> StateDictDiff:
    """Compare a model's state dict with one read from a file (keys and tensor shapes)."""
    common = sorted(set(model) & set(file))
    wrong = [k for k in common if tuple(model[k].shape) != tuple(file[k].shape)]
    return StateDictDiff(
        missing=sorted(set(model) - set(file)),
        unexpected=sorted(set(file) - set(model)),
        wrong_shape=[f"{k}: file {tuple(file[k].shape)} vs model {tuple(model[k].shape)}" for k in wrong],
        wrong_shape_keys=wrong,
    )
