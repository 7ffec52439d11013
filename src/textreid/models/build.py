"""Config -> model: the one place where ``MODEL.*`` keys become keyword arguments of the towers and head."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from textreid.config import Config
from textreid.models.clip_weights import reads_shared
from textreid.models.gru import BiGRUTower
from textreid.models.recipe_weights import load_recipe_heads
from textreid.models.recipes import recipe_model_parts
from textreid.models.textreid import TextReID
from textreid.models.visual import build_visual_tower, visual_family

log = logging.getLogger("textreid")


@dataclass(frozen=True)
class TextTowerSpec:
    """How to build a text tower from the config, and which tokenizer feeds it."""

    build: Callable[..., nn.Module]  # (cfg, *, vocab_size, word_table, pretrained) -> tower
    tokenizer: str  # "words" (WordTokenizer) or "clip_bpe" (ClipTokenizer)


# Where the authors' code reads each tower's weights (their YAMLs never name the file), relative to
# ROOT; the first existing candidate is loaded. torchvision ResNets are also looked up, under the
# same names, in torch.hub's cache ($TORCH_HOME/hub/checkpoints), where torchvision keeps the files it
# downloaded. Nothing is ever downloaded.
_CLIP_FILES = {
    "m_resnet50": "RN50.pt", "m_resnet": "RN50.pt", "m_resnet101": "RN101.pt", "m_resnet50x4": "RN50x4.pt",
    "m_resnet50x16": "RN50x16.pt", "m_resnet50x64": "RN50x64.pt", "clip_vit_b32": "ViT-B-32.pt",
    "clip_vit_b16": "ViT-B-16.pt", "clip_vit_l14": "ViT-L-14.pt",
}
# their code's file first (resnet50-19c8e357.pth), then torchvision's current ImageNet-1k v1 file
_TORCHVISION_FILES = {
    "resnet50": ("resnet50-19c8e357.pth", "resnet50-0676ba61.pth"),
    "resnet101": ("resnet101-5d3b4d8f.pth", "resnet101-63fe2227.pth"),
}
_TORCHVISION_URL = "https://download.pytorch.org/models/"


def default_weight_files(visual_model: str, root: str | Path) -> list[Path]:
    """Where the weights of ``visual_model`` are looked for when MODEL.PRETRAINED is unset, in order."""
    root = Path(root).expanduser()
    if visual_model in _CLIP_FILES:
        return [root / "pretrained" / "clip" / _CLIP_FILES[visual_model]]
    names = _TORCHVISION_FILES.get(visual_model, ())
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return [root / "pretrained" / "torchvision" / n for n in names] + [hub / n for n in names]


def _how_to_obtain(visual_model: str) -> str:
    if visual_model in _CLIP_FILES:
        return (f"copy OpenAI's CLIP {_CLIP_FILES[visual_model]} there (the file openai/CLIP's clip.load "
                f"downloads into ~/.cache/clip)")
    first = _TORCHVISION_FILES[visual_model][0]
    return f"download {_TORCHVISION_URL}{first} there"


def pretrained_path(cfg: Config) -> str:
    """The weight file the towers start from, "" for random initialisation (MODEL.PRETRAINED none).

    MODEL.PRETRAINED (or the authors' MODEL.RESNET.PRETRAINED) names a file, relative paths tried
    under ROOT too; unset, the file is looked for where the authors' code reads it
    (:func:`default_weight_files`). A missing file is an error naming where it was looked for.
    """
    path = cfg.model.pretrained or cfg.model.resnet.pretrained
    if path.lower() == "none":
        log.info("MODEL.PRETRAINED none: the towers start from random initialisation")
        return ""
    if path:
        p = Path(path).expanduser()
        if not p.is_absolute() and not p.exists() and (Path(cfg.root) / p).exists():
            p = Path(cfg.root) / p
        if not p.is_file():
            raise FileNotFoundError(
                f"MODEL.PRETRAINED = {path!r}: file not found (also tried under ROOT = {cfg.root!r}); "
                "give a local CLIP/torchvision weight file or an IRRA/RDE checkpoint, or 'none' for random "
                "initialisation"
            )
        return str(p)
    name = cfg.model.visual_model
    candidates = default_weight_files(name, cfg.root)
    if not candidates:
        raise FileNotFoundError(f"MODEL.VISUAL_MODEL {name!r} has no default weight file: set MODEL.PRETRAINED "
                                f"to a local file, or 'none' for random initialisation")
    for c in candidates:
        if c.is_file():
            log.info("MODEL.PRETRAINED unset: loading %s (where the authors' code reads %s weights)", c, name)
            return str(c)
    raise FileNotFoundError(
        f"{candidates[0]} not found: MODEL.VISUAL_MODEL {name!r} starts from it, as in the authors' code "
        f"({_how_to_obtain(name)}), or set MODEL.PRETRAINED to another file, or MODEL.PRETRAINED none for "
        "random initialisation")


def _build_bigru(
    cfg: Config, *, vocab_size: int, word_table: np.ndarray | torch.Tensor | None, pretrained: str
) -> BiGRUTower:
    g = cfg.model.gru
    common = dict(
        embed_size=g.embedding_size,
        hidden_size=g.num_units,
        num_layers=g.num_layer,
        dropout=1.0 - g.dropout_keep_prob,
        exact_max=g.exact_max,
        batch_max=g.batch_max,
    )
    if g.onehot.lower() == "yes":
        words = vocab_size if vocab_size > 0 else g.vocabulary_size
        return BiGRUTower(vocab_size=words, word_table=None, **common)
    if word_table is None:
        raise ValueError(
            f"MODEL.GRU.ONEHOT = {g.onehot!r} uses a frozen per-word vector table, but none was given; "
            "pass the [V, E] table (MODEL.GRU.WORD_TABLE, or <dataset>/clip_vocab_vit.npy), "
            "or set MODEL.GRU.ONEHOT 'yes' for a learned word embedding"
        )
    table = torch.as_tensor(np.asarray(word_table) if not isinstance(word_table, torch.Tensor) else word_table)
    if table.dim() != 2:
        raise ValueError(f"word table must be [V, E], got shape {tuple(table.shape)}")
    if vocab_size > table.shape[0]:
        raise ValueError(
            f"the vocabulary has {vocab_size} words but the word table only {table.shape[0]} rows; "
            "the table must hold one vector per vocabulary id"
        )
    return BiGRUTower(vocab_size=table.shape[0], word_table=table, **common)


def _build_clip_transformer(
    cfg: Config, *, vocab_size: int, word_table: np.ndarray | torch.Tensor | None, pretrained: str
) -> nn.Module:
    from textreid.models.text_transformer import ClipTextTower

    t = cfg.model.text_transformer
    # sizes left at 0 are read from the pretrained file (or are OpenAI ViT-B's without one)
    return ClipTextTower(
        context_length=t.context_length,
        vocab_size=t.vocab_size,
        width=t.width,
        layers=t.layers,
        heads=t.heads,
        output_dim=t.output_dim,
        pretrained=pretrained,
    )


TEXT_TOWERS: dict[str, TextTowerSpec] = {
    "bigru": TextTowerSpec(_build_bigru, "words"),
    "clip_transformer": TextTowerSpec(_build_clip_transformer, "clip_bpe"),
}


def _text_spec(cfg: Config) -> TextTowerSpec:
    name = cfg.model.textual_model
    if name not in TEXT_TOWERS:
        raise KeyError(f"unknown MODEL.TEXTUAL_MODEL {name!r}; valid names: {', '.join(sorted(TEXT_TOWERS))}")
    return TEXT_TOWERS[name]


def tokenizer_kind(cfg: Config) -> str:
    """``"words"`` for the BiGRU (dataset word ids), ``"clip_bpe"`` for CLIP's text transformer."""
    return _text_spec(cfg).tokenizer


def _visual_sizes(cfg: Config) -> dict[str, Any]:
    """MODEL.VIT.* for a tower of the ViT family, MODEL.RESNET.* for the ResNets; the other section must stay unset."""
    m = cfg.model
    resnet = {"layers": list(m.resnet.layers) or None, "width": m.resnet.width,
              "output_dim": m.resnet.output_dim, "heads": m.resnet.heads}
    vit = {"patch_size": m.vit.patch_size, "width": m.vit.width, "layers": m.vit.layers,
           "heads": m.vit.heads, "output_dim": m.vit.output_dim, "stride": m.vit.stride}
    if visual_family(m.visual_model) == "clip_vit":  # MODEL.RESNET.RES5_STRIDE has a default; a ViT ignores it
        own, other, other_section = vit, resnet, "MODEL.RESNET"
    else:
        own, other, other_section = {"res5_stride": m.resnet.res5_stride, **resnet}, vit, "MODEL.VIT"
    given = [f"{other_section}.{k.upper()} = {v!r}" for k, v in other.items() if v]
    if given:
        raise ValueError(f"MODEL.VISUAL_MODEL {m.visual_model!r} does not use {', '.join(given)}; leave them at 0")
    return own


def build_model(
    cfg: Config,
    *,
    num_classes: int,
    vocab_size: int,
    word_table: np.ndarray | torch.Tensor | None,
    load_pretrained: bool = True,
) -> TextReID:
    """The TextReID model described by ``cfg``.

    ``num_classes``: identities of the training split (0 = use MODEL.NUM_CLASSES). ``vocab_size``:
    words of the dataset vocabulary (learned embedding). ``word_table``: the frozen ``[V, E]``
    word vectors when MODEL.GRU.ONEHOT is not "yes". ``load_pretrained=False`` skips reading
    MODEL.PRETRAINED and the authors' re-initialisation (use it when weights come from a checkpoint).
    """
    m = cfg.model
    classes = num_classes if num_classes > 0 else m.num_classes
    if classes < 1:
        raise ValueError("number of identities unknown: pass num_classes from the training data or set MODEL.NUM_CLASSES")
    pretrained = pretrained_path(cfg) if load_pretrained else ""
    with reads_shared():  # MODEL.PRETRAINED is read once for both towers and the heads
        return _build(cfg, classes, vocab_size=vocab_size, word_table=word_table, pretrained=pretrained,
                      reinit=m.reinit_linear and load_pretrained)


def _build(cfg: Config, classes: int, *, vocab_size: int, word_table: np.ndarray | torch.Tensor | None,
           pretrained: str, reinit: bool) -> TextReID:
    m = cfg.model
    visual = build_visual_tower(
        m.visual_model, image_size=(cfg.input.height, cfg.input.width), pretrained=pretrained, **_visual_sizes(cfg)
    )
    textual = _text_spec(cfg).build(cfg, vocab_size=vocab_size, word_table=word_table, pretrained=pretrained)
    e, mc = m.embedding, m.moco
    model = TextReID(
        visual=visual,
        textual=textual,
        num_classes=classes,
        feature_size=e.feature_size,
        head=e.embed_head,
        moco_k=mc.k,
        moco_m=mc.m,
        moco_fc=mc.fc,
        dropout=e.dropout_prob,
        freeze_towers=m.freeze,
        **recipe_model_parts(cfg, joint_width=e.feature_size or textual.out_dim),
    )
    if reinit:
        if e.embed_head == "moco":  # the authors' re-initialisation lives in their moco head only
            model.reinit_linear_like_authors()
            log.info("MODEL.REINIT_LINEAR: every nn.Linear re-initialised after loading (the authors' moco head)")
        else:
            log.info("MODEL.REINIT_LINEAR ignored: the authors re-initialise only under the moco head")
    # An IRRA/RDE checkpoint also holds heads (classifier, MLM / token-selection branches). Only CLIP towers
    # read such a file, so a torchvision weight file is not read a second time just to find it holds none.
    if pretrained and visual_family(m.visual_model) != "torchvision_resnet":
        load_recipe_heads(model, pretrained)
    return model


def model_from_state_dict(cfg: Config, state_dict: dict[str, torch.Tensor]) -> TextReID:
    """Rebuild the model of ``cfg`` with the sizes found in ``state_dict`` and load it strictly."""
    if "projection" in state_dict:
        classes = state_dict["projection"].shape[1]
    elif "classifier.weight" in state_dict:
        classes = state_dict["classifier.weight"].shape[0]
    elif any(k.startswith("visual.") for k in state_dict):
        classes = max(cfg.model.num_classes, 1)  # no identity classifier (RDE): the count is not stored
    else:
        raise KeyError("the state dict has no 'projection' entry: not a TextReID model saved by textreid")
    table = state_dict.get("textual.word_table")
    embed = state_dict.get("textual.embed.weight")
    vocab_size = embed.shape[0] if embed is not None and embed.dim() == 2 and table is None else 0
    model = build_model(
        cfg,
        num_classes=classes,
        vocab_size=vocab_size,
        # placeholder of the right shape; the real table is in the state dict
        word_table=torch.zeros(table.shape) if table is not None else None,
        load_pretrained=False,
    )
    model.load_state_dict(state_dict, strict=True)
    return model
