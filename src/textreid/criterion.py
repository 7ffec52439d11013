"""Criteria: weighted loss terms over the model's named outputs (as open_clip's loss modules).

``criterion(outputs, batch) -> {"<name>_loss": weight * term}``; the trainer sums them. A recipe
is a criterion class: its ``TERMS`` (in summation order) and the options of those terms. Criteria
hold no state; the momentum queues the InfoNCE term reads are model state, passed in ``outputs``.

Noisy correspondences: when the batch carries ``clean [B]`` (0/1 from the clean-pair division,
``textreid.engine.division``), criteria that cannot weight single pairs see the batch without the
pairs called noisy (every per-pair output is subset); RDE's criterion weights its per-pair triplet
alignment terms instead, as RDE does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from textreid import losses

_PER_PAIR = ("image_embeds", "text_embeds", "image_id_logits", "text_id_logits", "image_query_feats", "text_query_feats",
             "image_keys", "text_keys", "image_tse", "text_tse")


class Criterion(nn.Module):
    """Base: ``TERMS`` are method names, each ``(outputs, batch) -> scalar``; weight 0 = not computed."""

    TERMS: tuple[str, ...] = ()
    weights_pairs = False  # True: the terms read ``batch["clean"]`` themselves

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__()
        unknown = sorted(set(weights) - set(self.TERMS))
        if unknown:
            raise ValueError(f"unknown loss weight(s) {unknown} for {type(self).__name__}; valid: {', '.join(self.TERMS)}")
        self.weights = {name: float(weights.get(name, 0.0)) for name in self.TERMS}

    def forward(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "clean" in batch and not self.weights_pairs:
            outputs, batch = _clean_subset(outputs, batch)
            if batch["person_ids"].numel() == 0:  # no clean pair: zero losses that still reach every output
                zero = sum(v.sum() for k, v in outputs.items() if k in _PER_PAIR and v.requires_grad) * 0.0
                return {f"{name}_loss": zero for name, w in self.weights.items() if w}
        out: dict[str, torch.Tensor] = {}
        for name in self.TERMS:
            w = self.weights[name]
            if w:
                value = getattr(self, name)(outputs, batch)
                if value is not None:
                    out[f"{name}_loss"] = w * value
        return out


def _clean_subset(outputs: dict, batch: dict) -> tuple[dict, dict]:
    keep = batch["clean"].view(-1) > 0  # [B]
    outputs = {k: (v[keep] if k in _PER_PAIR else v) for k, v in outputs.items()}
    if "mlm_rows" in outputs:  # masked tokens of clean captions only
        tokens = keep[outputs["mlm_rows"]]  # [M]
        outputs.update({k: outputs[k][tokens] for k in ("mlm_logits", "mlm_labels", "mlm_rows")})
    batch = {**batch, "person_ids": batch["person_ids"].view(-1)[keep]}
    return outputs, batch


class TextReIDCriterion(Criterion):
    """The paper's instance + global alignment (+ momentum InfoNCE), optionally IRRA's SDM or CLIP's ITC.

    ``infonce`` is skipped when the model has no momentum head (no keys in ``outputs``).
    """

    TERMS = ("instance", "global_align", "sdm", "itc", "infonce")  # the order the losses are summed in

    def __init__(self, weights: dict[str, float], *, epsilon: float = 0.1, temperature: float = 0.07,
                 sdm_temperature: float = 0.02) -> None:
        super().__init__(weights)
        self.epsilon = epsilon
        self.temperature = temperature
        self.sdm_temperature = sdm_temperature

    def instance(self, o: dict, b: dict) -> torch.Tensor:
        return losses.instance_loss(o["id_weight"], o["image_embeds"], o["text_embeds"], b["person_ids"].view(-1),
                                    epsilon=self.epsilon)

    def global_align(self, o: dict, b: dict) -> torch.Tensor:
        return losses.global_align_loss(o["image_embeds"], o["text_embeds"], b["person_ids"].view(-1))

    def sdm(self, o: dict, b: dict) -> torch.Tensor:
        return losses.sdm_loss(o["image_embeds"], o["text_embeds"], b["person_ids"].view(-1),
                               temperature=self.sdm_temperature)

    def itc(self, o: dict, b: dict) -> torch.Tensor:
        return losses.itc_loss(o["image_embeds"], o["text_embeds"], temperature=self.sdm_temperature)

    def infonce(self, o: dict, b: dict) -> torch.Tensor | None:
        if "image_keys" not in o:
            return None
        # queries: the normalised embeddings, or the normalised query-MLP outputs (MODEL.MOCO.FC)
        v_q = F.normalize(o.get("image_query_feats", o["image_embeds"]), dim=1)  # [B, D]
        t_q = F.normalize(o.get("text_query_feats", o["text_embeds"]), dim=1)  # [B, D]
        return losses.infonce_loss(v_q, o["text_keys"], o["text_queue"], t_q, o["image_keys"], o["image_queue"],
                                   temperature=self.temperature, neg_mask=o["queue_keep"])


class IRRACriterion(Criterion):
    """IRRA: similarity distribution matching + identity loss + implicit relation reasoning (MLM)."""

    TERMS = ("sdm", "id", "mlm")

    def __init__(self, weights: dict[str, float], *, temperature: float = 0.02) -> None:
        super().__init__(weights)
        self.temperature = temperature

    def sdm(self, o: dict, b: dict) -> torch.Tensor:
        return losses.sdm_loss(o["image_embeds"], o["text_embeds"], b["person_ids"].view(-1), temperature=self.temperature)

    def id(self, o: dict, b: dict) -> torch.Tensor:
        return losses.id_loss(o["image_id_logits"], o["text_id_logits"], b["person_ids"].view(-1))

    def mlm(self, o: dict, b: dict) -> torch.Tensor:
        return losses.mlm_loss(o["mlm_logits"], o["mlm_labels"])


class RDECriterion(Criterion):
    """RDE: triplet alignment loss on the global and the token-selection embeddings, summed over the
    pairs, each pair weighted by ``batch["clean"]`` (1 without a division), as RDE's ``compute_rbs``."""

    TERMS = ("tal", "tse")
    weights_pairs = True

    def __init__(self, weights: dict[str, float], *, tau: float = 0.015, margin: float = 0.1) -> None:
        super().__init__(weights)
        self.tau, self.margin = tau, margin

    def _weighted(self, image: torch.Tensor, text: torch.Tensor, b: dict) -> torch.Tensor:
        per_pair = losses.tal_per_pair(image, text, b["person_ids"].view(-1), tau=self.tau, margin=self.margin)
        clean = b.get("clean")
        return (per_pair * clean.view(-1).to(per_pair.dtype)).sum() if clean is not None else per_pair.sum()

    def tal(self, o: dict, b: dict) -> torch.Tensor:
        return self._weighted(o["image_embeds"], o["text_embeds"], b)

    def tse(self, o: dict, b: dict) -> torch.Tensor:
        return self._weighted(o["image_tse"], o["text_tse"], b)
