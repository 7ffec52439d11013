"""Checkpoints: our self-describing format (written atomically) and the authors' ``best.pth`` import.

Our format is one ``torch.save`` dict::

    {"format": "textreid-v1", "config": {...}, "preprocess": {...}, "vocab": None, "model": state_dict,
     "optimizer": state_dict | None, "scheduler": state_dict | None, **extra}

The authors' files hold ``{"model", "optimizer", "scheduler", "iteration", "epoch"}`` with the model
under ``visual_model.*``, ``textual_model.*`` and ``embed_model.*`` (see :func:`convert_authors_state_dict`).
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from textreid.fileio import atomic_open
from textreid.models.state_dict import diff_state_dicts, strip_prefix, unwrap_model

FORMAT = "textreid-v1"
_RESERVED = ("format", "config", "preprocess", "vocab", "model", "optimizer", "scheduler")
_AUTHORS_PREFIXES = ("visual_model.", "textual_model.", "embed_model.")
# buffers the authors' files never contain: the builder fills them from the dataset's .npy table
AUTHORS_ABSENT = ("textual.word_table", "t_encoder_k.word_table")


class CheckpointError(ValueError):
    """A checkpoint file or dict that cannot be read or does not match the model; names file and keys."""


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    config: dict[str, Any] | Any,
    vocab: dict[str, Any] | None = None,
    preprocess: Any | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write our checkpoint to ``path`` atomically (temp file in the same folder, fsync, rename).

    ``preprocess``: the run's ``data.preprocess.Preprocess`` (or its ``to_dict()``), which holds the
    vocabulary; ``vocab`` is only for files without one (older layout).
    """
    path = Path(path)
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"save_checkpoint: extra keys {clash} would overwrite reserved entries {list(_RESERVED)}")
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    data = {
        "format": FORMAT,
        "config": config,
        "preprocess": preprocess.to_dict() if hasattr(preprocess, "to_dict") else preprocess,
        "vocab": vocab,
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        **extra,
    }
    with atomic_open(path, "wb") as f:
        torch.save(data, f)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict (ours or the authors') with errors that say what is wrong with the file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file")
    with path.open("rb") as f:
        looks_zip = f.read(4) == b"PK\x03\x04"  # torch.save's zip container
    if looks_zip and not zipfile.is_zipfile(path):  # the central directory at the end is missing
        raise CheckpointError(f"{path} is truncated (was it still being copied or written?)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        if looks_zip:
            raise CheckpointError(f"{path} is corrupt: {type(exc).__name__}: {exc}") from exc
        if isinstance(exc, pickle.UnpicklingError) and "weights_only" in str(exc):
            raise CheckpointError(
                f"{path}: the file stores Python objects other than tensors and plain containers, "
                f"which are not loaded for safety: {exc}"
            ) from exc
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (another kind of file, or a truncated "
            f"legacy-format one): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(obj).__name__}")
    if "model" not in obj and not is_authors_checkpoint(obj):
        raise CheckpointError(f"{path}: no 'model' entry; keys: {sorted(map(str, obj))[:10]}")
    return obj


# --------------------------------------------------------------------------- authors' files
def _model_dict(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The state dict inside a checkpoint dict (or the dict itself when it is a bare state dict)."""
    inner = ckpt.get("model")
    return inner if isinstance(inner, dict) else ckpt


def is_authors_checkpoint(ckpt: dict[str, Any]) -> bool:
    """True for the authors' ``best.pth`` layout (or its bare state dict)."""
    if not isinstance(ckpt, dict) or ckpt.get("format") == FORMAT:
        return False
    sd = strip_prefix(_model_dict(ckpt))
    return any(isinstance(k, str) and k.startswith(_AUTHORS_PREFIXES) for k in sd)


def detect_authors_head(state_dict: dict[str, Any]) -> str:
    """``"moco"`` or ``"simple"``: which embedding head an authors' state dict was trained with."""
    sd = strip_prefix(_model_dict(state_dict))
    if any(k.startswith("embed_model.v_embed_layer.") for k in sd):
        return "moco"
    if any(k.startswith("embed_model.visual_embed_layer.") for k in sd):
        return "simple"
    raise CheckpointError("not an authors' TextReID state dict: no embed_model.v_embed_layer / visual_embed_layer keys")


# The authors' state-dict layout -> ours (see convert_authors_state_dict).
# Whole tensors that move and change shape: authors' key -> (our key, conversion).
_AUTHORS_TENSORS: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "embed_model.loss_evaluator.projection": ("projection", lambda t: t),
    "embed_model.t_queue": ("queue.text_queue", lambda t: t.t().contiguous()),  # [D, K] -> [K, D]
    "embed_model.v_queue": ("queue.image_queue", lambda t: t.t().contiguous()),  # [D, K] -> [K, D]
    "embed_model.id_queue": ("queue.id_queue", lambda t: t.reshape(-1).long()),  # [1, K] -> [K]
    "embed_model.queue_ptr": ("queue.ptr", lambda t: t.reshape(()).long()),  # [1] -> []
}
# Renamed prefixes: authors' -> ours (first match wins).
_AUTHORS_RENAMES = {
    "visual_model.": "visual.",
    "textual_model.": "textual.",
    "embed_model.v_encoder_q.": "visual.",
    "embed_model.t_encoder_q.": "textual.",
    "embed_model.v_encoder_k.": "v_encoder_k.",
    "embed_model.t_encoder_k.": "t_encoder_k.",
    "embed_model.v_fc_q.": "v_fc_q.",
    "embed_model.t_fc_q.": "t_fc_q.",
    "embed_model.v_fc_k.": "v_fc_k.",
    "embed_model.t_fc_k.": "t_fc_k.",
    "embed_model.v_embed_layer.": "v_embed_layer.",  # moco head
    "embed_model.t_embed_layer.": "t_embed_layer.",
    "embed_model.visual_embed_layer.": "v_embed_layer.",  # simple head
    "embed_model.textual_embed_layer.": "t_embed_layer.",
}
# The moco head's query encoders duplicate the towers: used only when the tower keys are absent.
_QUERY_COPY_OF = {"embed_model.v_encoder_q.": "visual_model.", "embed_model.t_encoder_q.": "textual_model."}


def convert_authors_state_dict(state_dict: dict[str, torch.Tensor], *, head: str) -> dict[str, torch.Tensor]:
    """Map the authors' key layout to ours (``head``: the model's "simple" or "moco").

    - ``visual_model.*`` / ``textual_model.*`` -> ``visual.*`` / ``textual.*``; the moco head's
      duplicates ``embed_model.v_encoder_q.*`` / ``t_encoder_q.*`` are dropped (used only when the
      top-level copy is absent);
    - ``embed_model.{v_encoder_k, t_encoder_k, v_fc_q, t_fc_q, v_fc_k, t_fc_k}.*`` keep their names;
    - moco: ``embed_model.v_embed_layer`` / ``t_embed_layer``; simple: ``embed_model.visual_embed_layer``
      / ``textual_embed_layer`` -> ``v_embed_layer`` / ``t_embed_layer``;
    - ``embed_model.loss_evaluator.projection`` -> ``projection``;
    - queues ``t_queue`` / ``v_queue`` ``[D, K]`` -> ``queue.text_queue`` / ``queue.image_queue`` ``[K, D]``,
      ``id_queue [1, K]`` -> ``queue.id_queue [K]``, ``queue_ptr [1]`` -> ``queue.ptr []``.

    Keys matching no rule are passed through unchanged so that loading reports them by name.
    """
    sd = strip_prefix(_model_dict(state_dict))
    found = detect_authors_head(sd)
    if found != head:
        raise CheckpointError(
            f"the authors' file was trained with the {found!r} embedding head but the model has the {head!r} head; "
            f"set MODEL.EMBEDDING.EMBED_HEAD {found}"
        )
    present = {prefix for prefix in ("visual_model.", "textual_model.") if any(k.startswith(prefix) for k in sd)}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in _AUTHORS_TENSORS:
            name, convert = _AUTHORS_TENSORS[key]
            out[name] = convert(value)
            continue
        prefix = next((p for p in _AUTHORS_RENAMES if key.startswith(p)), None)
        if prefix is None:
            out[key] = value
        elif _QUERY_COPY_OF.get(prefix) not in present:
            out[_AUTHORS_RENAMES[prefix] + key[len(prefix) :]] = value
    return out


def load_authors_checkpoint(model: nn.Module, path_or_dict: str | Path | dict[str, Any]) -> None:
    """Load the authors' ``best.pth`` (path, checkpoint dict or bare state dict) into ``model``.

    Strict: every model entry must come from the file except the word-vector tables (not stored
    by the authors; the builder fills them from ``clip_vocab_vit.npy``), every file entry must be
    used, and shapes must agree; otherwise a CheckpointError lists the offending keys.
    """
    model = unwrap_model(model)
    source = str(path_or_dict) if isinstance(path_or_dict, (str, Path)) else "the given state dict"
    ckpt = load_checkpoint(path_or_dict) if isinstance(path_or_dict, (str, Path)) else path_or_dict
    if not is_authors_checkpoint(ckpt):
        raise CheckpointError(f"{source} is not in the authors' layout (visual_model.* / textual_model.* / embed_model.*)")
    head = getattr(model, "head", None)
    if head not in ("simple", "moco"):
        raise CheckpointError(f"load_authors_checkpoint expects a TextReID model, got {type(model).__name__}")
    converted = convert_authors_state_dict(_model_dict(ckpt), head=head)
    own = model.state_dict()
    diff = diff_state_dicts(own, converted)
    missing = [k for k in diff.missing if k not in AUTHORS_ABSENT]
    unexpected, wrong = diff.unexpected, diff.wrong_shape
    problems = []
    if missing:
        problems.append(f"missing from the file ({len(missing)}): {', '.join(missing[:20])}")
    if unexpected:
        problems.append(f"not used by the model ({len(unexpected)}): {', '.join(unexpected[:20])}")
    if wrong:
        problems.append(f"shape mismatch ({len(wrong)}): {'; '.join(wrong[:20])}")
    if problems:
        hint = ""
        if "projection" in converted and "projection" in own and converted["projection"].shape != own["projection"].shape:
            hint = "\n  projection is [feature_size, num_classes]: set MODEL.NUM_CLASSES / MODEL.EMBEDDING.FEATURE_SIZE"
        raise CheckpointError(
            f"{source} does not match the model (check MODEL.VISUAL_MODEL, MODEL.GRU.*, MODEL.EMBEDDING.*, "
            f"MODEL.MOCO.*):\n  " + "\n  ".join(problems) + hint
        )
    model.load_state_dict(converted, strict=False)
