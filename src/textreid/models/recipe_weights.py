"""Checkpoints in IRRA's layout (anosorae/IRRA, and RDE's, which builds on IRRA's code) -> our model.

Their ``best.pth`` / ``last.pth`` is ``torch.save({"model": state_dict, "optimizer", "scheduler",
"num_epoch", "iteration", "epoch"})`` with the weights in float16 (CLIP's ``convert_weights``):

- ``base_model.*``: the CLIP model (``base_model.visual.*``, ``base_model.token_embedding.weight``,
  ``base_model.positional_embedding``, ``base_model.transformer.*``, ``base_model.ln_final.*``,
  ``base_model.text_projection``), i.e. OpenAI's key names under one prefix. The image tower's
  positional embedding is already sized for their input (384x128, stride 16: 24x8 + 1 positions);
- IRRA's heads: ``classifier.*`` (identity ``nn.Linear``), ``cross_attn.*``,
  ``cross_modal_transformer.*``, ``ln_pre_t.*``, ``ln_pre_i.*``, ``ln_post.*``, ``mlm_head.*``;
- RDE's token-selection layers: ``visul_emb_layer.*`` / ``texual_emb_layer.*`` (their spelling).

``MODEL.PRETRAINED`` accepts such a file: the towers read ``base_model.*`` like a CLIP file
(``clip_weights.load_clip_state_dict``), and :func:`load_recipe_heads` copies the heads our model
has under the recipe being trained. A key outside this layout, or a head whose shape does not fit
(other than the identity classifier of a dataset with another number of persons, which keeps its
fresh initialisation), is refused with the file and the key named.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from textreid.models.clip_weights import ClipWeightsError, is_torchscript_archive, read_weight_file

log = logging.getLogger("textreid")

TOWERS_PREFIX = "base_model."
# their head prefixes -> ours (the first match wins; RDE's visual layer applies ``fc``, ours ``linear``)
_HEADS: tuple[tuple[str, str], ...] = (
    ("classifier.", "classifier."),
    *((f"{name}.", f"branches.mlm.{name}.") for name in (
        "cross_attn", "cross_modal_transformer", "ln_pre_t", "ln_pre_i", "ln_post", "mlm_head")),
    ("visul_emb_layer.fc.", "branches.tse.visual_layer.linear."),
    ("visul_emb_layer.mlp.layers.", "branches.tse.visual_layer.mlp.layers."),
    ("visul_emb_layer.mlp.bns.0.", "branches.tse.visual_layer.mlp.bns.0."),
    ("texual_emb_layer.linear.", "branches.tse.textual_layer.linear."),
    ("texual_emb_layer.mlp.layers.", "branches.tse.textual_layer.mlp.layers."),
    ("texual_emb_layer.mlp.bns.0.", "branches.tse.textual_layer.mlp.bns.0."),
)
# entries RDE creates but its forward pass never uses (absent from our model)
_NEVER_USED = ("visul_emb_layer.linear.", "visul_emb_layer.mlp.bns.1.", "texual_emb_layer.mlp.bns.1.")
LAYOUT = "IRRA/RDE layout (base_model.*, classifier.*, cross_attn.*, ..., visul_emb_layer.*, texual_emb_layer.*)"


def is_recipe_layout(sd: dict[str, Any]) -> bool:
    """True for a state dict in IRRA's layout (the CLIP model under ``base_model.``)."""
    return any(isinstance(k, str) and k.startswith(TOWERS_PREFIX) for k in sd)


def _their_head(key: str) -> tuple[str, str] | None:
    for theirs, ours in _HEADS:
        if key.startswith(theirs):
            return theirs, ours
    return None


def check_recipe_keys(sd: dict[str, Any], *, source: str) -> None:
    """Refuse a ``base_model.*`` state dict holding a key that is neither tower nor a known head."""
    for key in sorted(sd):
        if not key.startswith(TOWERS_PREFIX) and not key.startswith(_NEVER_USED) and _their_head(key) is None:
            raise ClipWeightsError(f"{source}: unknown key {key!r} for the {LAYOUT}; not loading it")


def recipe_towers(sd: dict[str, Any], *, source: str) -> dict[str, Any]:
    """The CLIP part of an IRRA-layout state dict, in OpenAI's flat layout (``base_model.`` removed)."""
    check_recipe_keys(sd, source=source)
    return {k[len(TOWERS_PREFIX):]: v for k, v in sd.items() if k.startswith(TOWERS_PREFIX)}


def recipe_heads(sd: dict[str, Any]) -> tuple[dict[str, Tensor], list[str]]:
    """``(heads in our key names, their keys that RDE never uses)`` of an IRRA-layout state dict."""
    mapped: dict[str, Tensor] = {}
    unused: list[str] = []
    for key, value in sd.items():
        if key.startswith(TOWERS_PREFIX) or not isinstance(value, Tensor):
            continue
        if key.startswith(_NEVER_USED):
            unused.append(key)
            continue
        match = _their_head(key)
        if match is not None:
            mapped[match[1] + key[len(match[0]):]] = value.float() if value.is_floating_point() else value
    return mapped, sorted(unused)


def _groups(keys: list[str]) -> str:
    """``classifier, branches.mlm (12 entries)``-style summary of state-dict keys."""
    counts: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        name = ".".join(parts[:2]) if parts[0] == "branches" else parts[0]
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{name} ({n})" for name, n in counts.items()) or "none"


def load_recipe_heads(model: nn.Module, path: str | Path) -> dict[str, list[str]] | None:
    """Copy the heads of the IRRA/RDE-layout file ``path`` that ``model`` has; log what was loaded and skipped.

    Returns ``{"loaded", "not_in_model", "kept_fresh", "unused"}`` (our key names, except ``unused``:
    their never-applied entries), or None when ``path`` is not in that layout (a CLIP file). The
    towers were loaded when they were built.
    """
    path = Path(path)
    if is_torchscript_archive(path):  # OpenAI's CLIP files
        return None
    sd = read_weight_file(path)
    if not is_recipe_layout(sd):
        return None
    check_recipe_keys(sd, source=str(path))
    heads, unused = recipe_heads(sd)
    target = model.state_dict()
    loaded, absent, fresh = [], [], []
    for key in sorted(heads):
        if key not in target:
            absent.append(key)
        elif tuple(heads[key].shape) != tuple(target[key].shape):
            if not key.startswith("classifier."):
                raise ClipWeightsError(
                    f"{path}: {key} has shape {tuple(heads[key].shape)} in the file but {tuple(target[key].shape)} "
                    f"in this model (check MODEL.* against the run that wrote it)")
            fresh.append(key)  # the identity classifier of a dataset with another number of persons
        else:
            loaded.append(key)
    model.load_state_dict({k: heads[k] for k in loaded}, strict=False)
    head_prefixes = ("classifier.", "branches.")
    fresh += [k for k in target if k.startswith(head_prefixes) and k not in heads]
    towers = sum(1 for k in sd if k.startswith(TOWERS_PREFIX))
    never = f"; created by RDE but never applied, skipped: {_groups(unused)}" if unused else ""
    log.info("MODEL.PRETRAINED %s (IRRA/RDE layout): towers from %d base_model.* entries; heads loaded: %s; "
             "in the file but not in this recipe's model: %s; kept their fresh initialisation: %s%s",
             path, towers, _groups(loaded), _groups(absent), _groups(fresh), never)
    return {"loaded": loaded, "not_in_model": absent, "kept_fresh": fresh, "unused": unused}
