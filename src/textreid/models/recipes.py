"""Config -> recipe: which identity classifier and training branches the model gets, and its criterion.

MODEL.RECIPE names the recipe:

- ``textreid`` (the paper): projection classifier; instance + global alignment (+ InfoNCE with the
  moco head, optional SDM / ITC) — ``TextReIDCriterion``.
- ``irra`` (IRRA, CVPR 2023): linear classifier, the cross-modal MLM branch; SDM + ID + MLM.
- ``rde`` (RDE, CVPR 2024): no classifier, the token-selection branch (its similarity is combined
  with the global one at test time) and caption perturbation; TAL on both embeddings.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from textreid.config import Config
from textreid.criterion import Criterion, IRRACriterion, RDECriterion, TextReIDCriterion

RECIPES = ("textreid", "irra", "rde")
# parameter-name prefixes of the modules a recipe initialises from scratch (SOLVER.LR_FACTOR applies)
FRESH_MODULES = ("classifier.", "branches.", "projection")


def _recipe(cfg: Config) -> str:
    name = cfg.model.recipe.lower()
    if name not in RECIPES:
        raise ValueError(f"unknown MODEL.RECIPE {cfg.model.recipe!r}; valid: {', '.join(RECIPES)}")
    return name


def recipe_model_parts(cfg: Config, *, joint_width: int) -> dict[str, Any]:
    """``classifier`` and ``branches`` keyword arguments of ``TextReID`` for MODEL.RECIPE."""
    name = _recipe(cfg)
    if name == "textreid":
        return {"classifier": "projection", "branches": {}}
    from textreid.models.branches import CrossModalMLM, TextPerturbation, TokenSelection

    vocab = cfg.model.text_transformer.vocab_size
    if name == "irra":
        branches: dict[str, nn.Module] = {}
        if cfg.model.losses.mlm:
            branches["mlm"] = CrossModalMLM(width=joint_width, depth=cfg.model.irra.cmt_depth, vocab_size=vocab,
                                            mask_prob=cfg.model.irra.mask_prob)
        return {"classifier": "linear" if cfg.model.losses.id else "none", "branches": branches}
    r = cfg.model.rde
    branches = {"tse": TokenSelection(width=joint_width, out_dim=r.tse_dim, ratio=r.select_ratio,
                                      retrieval_weight=r.retrieval_weight)}
    if r.text_aug:
        branches["perturb"] = TextPerturbation(vocab_size=vocab)
    return {"classifier": "none", "branches": branches}


def build_criterion(cfg: Config) -> Criterion:
    """The loss module of MODEL.RECIPE with the MODEL.LOSSES weights that recipe reads."""
    name, lw = _recipe(cfg), cfg.model.losses
    if name == "irra":
        return IRRACriterion({"sdm": lw.sdm, "id": lw.id, "mlm": lw.mlm}, temperature=lw.sdm_temperature)
    if name == "rde":
        return RDECriterion({"tal": lw.tal, "tse": lw.tse}, tau=cfg.model.rde.tau, margin=cfg.model.rde.margin)
    unused = [k for k in ("id", "mlm", "tal", "tse") if getattr(lw, k)]
    if unused:
        raise ValueError(f"MODEL.LOSSES.{unused[0].upper()} belongs to another recipe; set MODEL.RECIPE "
                         f"(irra: SDM/ID/MLM, rde: TAL/TSE) or leave it at 0")
    return TextReIDCriterion({"instance": lw.instance, "global_align": lw.global_align, "sdm": lw.sdm,
                              "itc": lw.itc, "infonce": lw.infonce}, epsilon=cfg.model.embedding.epsilon,
                             temperature=cfg.model.moco.temperature, sdm_temperature=lw.sdm_temperature)
