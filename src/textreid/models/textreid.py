"""The TextReID model: two towers, linear embedding layers, and the simple or momentum-contrast head."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from textreid import losses
from textreid.models.momentum import KeyQueue, momentum_update
from textreid.models.momentum import frozen_copy as _frozen_copy

HEADS = ("simple", "moco")
LOSS_NAMES = ("instance", "global_align", "infonce", "sdm", "itc")
DEFAULT_LOSS_WEIGHTS = {"instance": 1.0, "global_align": 1.0, "infonce": 1.0, "sdm": 0.0, "itc": 0.0}


def _init_linear(module: nn.Module) -> None:
    """Kaiming normal (fan_out) weights and zero biases, as the paper's embedding layers."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))


class TextReID(nn.Module):
    """Image and text towers mapped to a joint space; training losses computed in ``forward``.

    ``head="simple"``: instance + global alignment losses (plus optional SDM / ITC).
    ``head="moco"``: adds momentum key encoders (copies of both towers), id-aware key queues and
    the cross-modal InfoNCE. Keys are projected like the authors do: with ``moco_fc=False`` by the
    QUERY embedding layers ``v_embed_layer``/``t_embed_layer`` (no momentum copies of them), with
    ``moco_fc=True`` by momentum copies (``v_fc_k``/``t_fc_k``) of the contrastive MLPs.

    Loss terms with weight 0 are not computed; ``infonce`` only applies to the moco head.
    """

    def __init__(
        self,
        *,
        visual: nn.Module,
        textual: nn.Module,
        num_classes: int,
        feature_size: int = 256,
        head: str = "simple",
        moco_k: int = 2048,
        moco_m: float = 0.999,
        moco_fc: bool = False,
        temperature: float = 0.07,
        epsilon: float = 0.1,
        loss_weights: dict[str, float] | None = None,
        sdm_temperature: float = 0.02,
        dropout: float = 0.0,
        freeze_towers: bool = False,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown embedding head {head!r}; valid: {', '.join(HEADS)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (identities of the training split), got {num_classes}")
        unknown = sorted(set(loss_weights or {}) - set(LOSS_NAMES))
        if unknown:
            raise ValueError(f"unknown loss weight(s) {unknown}; valid: {', '.join(LOSS_NAMES)}")
        for name, tower in (("visual", visual), ("textual", textual)):
            if not isinstance(getattr(tower, "out_dim", None), int):
                raise TypeError(f"the {name} tower {type(tower).__name__} has no integer attribute 'out_dim'")
        self.head = head
        self.feature_size = feature_size
        self.epsilon = epsilon
        self.temperature = temperature
        self.sdm_temperature = sdm_temperature
        self.moco_m = moco_m
        self.moco_fc = moco_fc
        self.freeze_towers = freeze_towers
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}

        self.visual = visual
        self.textual = textual
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.v_embed_layer = nn.Linear(visual.out_dim, feature_size)
        self.t_embed_layer = nn.Linear(textual.out_dim, feature_size)
        _init_linear(self.v_embed_layer)
        _init_linear(self.t_embed_layer)
        # identity classifier shared by both modalities; columns are normalised in the loss
        self.projection = nn.Parameter(torch.empty(feature_size, num_classes))  # [D, C]
        nn.init.xavier_uniform_(self.projection, gain=1.0)

        if freeze_towers:
            for p in [*visual.parameters(), *textual.parameters()]:
                p.requires_grad_(False)

        if head == "moco":
            if moco_fc:
                self.v_fc_q = _mlp(visual.out_dim, feature_size)
                self.t_fc_q = _mlp(textual.out_dim, feature_size)
                _init_linear(self.v_fc_q)
                _init_linear(self.t_fc_q)
                self.v_fc_k = _frozen_copy(self.v_fc_q)
                self.t_fc_k = _frozen_copy(self.t_fc_q)
            # copies made after every initialisation above: query and key start equal
            self.v_encoder_k = _frozen_copy(visual)
            self.t_encoder_k = _frozen_copy(textual)
            self.queue = KeyQueue(moco_k, feature_size)

    @property
    def embed_dim(self) -> int:
        """Width of the joint embedding space."""
        return self.feature_size

    @property
    def num_classes(self) -> int:
        """Number of identities of the instance-loss classifier."""
        return self.projection.shape[1]

    def train(self, mode: bool = True) -> TextReID:
        """Like ``nn.Module.train``; frozen towers stay in eval mode (fixed BatchNorm statistics)."""
        super().train(mode)
        if self.freeze_towers:
            for name in ("visual", "textual", "v_encoder_k", "t_encoder_k"):
                if hasattr(self, name):
                    getattr(self, name).eval()
        return self

    def reinit_linear_like_authors(self) -> None:
        """Reproduce the authors' moco-head defect: re-initialise EVERY nn.Linear of the model.

        This includes the visual attention pool's q/k/v/c projections loaded from CLIP, and the key
        encoders, each drawn independently (so query and key towers start different). Call it after
        pretrained weights are loaded; only for exact reproduction of the published numbers.
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Raw (un-normalised) image embeddings: ``[B, 3, H, W]`` -> ``[B, D]``."""
        return self.v_embed_layer(self.visual(images))

    def embed_texts(self, text: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw (un-normalised) text embeddings from the tokenizer's dict -> ``[B, D]``."""
        return self.t_embed_layer(self.textual(text))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training: ``{"<name>_loss": weighted scalar}``; eval: raw ``image_embeds``/``text_embeds``.

        ``batch`` holds ``images [B, 3, H, W]``, ``person_ids [B]`` and the tokenizer's keys
        (``word_ids``/``lengths`` or ``tokens``). With the moco head, a training call also updates the
        key encoders and the queues.
        """
        images = batch["images"]
        v_feat = self.visual(images)  # [B, Dv]
        t_feat = self.textual(batch)  # [B, Dt]
        if not self.training:
            return {"image_embeds": self.v_embed_layer(v_feat), "text_embeds": self.t_embed_layer(t_feat)}

        ids = batch["person_ids"].view(-1)  # [B]
        v_feat, t_feat = self.dropout(v_feat), self.dropout(t_feat)
        v_embed = self.v_embed_layer(v_feat)  # [B, D]
        t_embed = self.t_embed_layer(t_feat)  # [B, D]
        w = self.loss_weights
        out: dict[str, torch.Tensor] = {}
        if w["instance"]:
            out["instance_loss"] = w["instance"] * losses.instance_loss(
                self.projection, v_embed, t_embed, ids, epsilon=self.epsilon
            )
        if w["global_align"]:
            out["global_align_loss"] = w["global_align"] * losses.global_align_loss(v_embed, t_embed, ids)
        if w["sdm"]:
            out["sdm_loss"] = w["sdm"] * losses.sdm_loss(v_embed, t_embed, ids, temperature=self.sdm_temperature)
        if w["itc"]:
            out["itc_loss"] = w["itc"] * losses.itc_loss(v_embed, t_embed, temperature=self.sdm_temperature)
        if self.head == "moco" and w["infonce"]:
            out["infonce_loss"] = w["infonce"] * self._momentum_contrast(images, batch, ids, v_feat, t_feat, v_embed, t_embed)
        return out

    def _momentum_contrast(
        self,
        images: torch.Tensor,
        batch: dict[str, torch.Tensor],
        ids: torch.Tensor,
        v_feat: torch.Tensor,
        t_feat: torch.Tensor,
        v_embed: torch.Tensor,
        t_embed: torch.Tensor,
    ) -> torch.Tensor:
        """Momentum-update the key encoders, compute keys, InfoNCE against the queues, then enqueue the keys."""
        if self.moco_fc:
            v_q = F.normalize(self.v_fc_q(v_feat), dim=1)  # [B, D]
            t_q = F.normalize(self.t_fc_q(t_feat), dim=1)  # [B, D]
        else:
            v_q = F.normalize(v_embed, dim=1)  # [B, D]
            t_q = F.normalize(t_embed, dim=1)  # [B, D]
        with torch.no_grad():
            # MoCo order: update the key encoders with the current query weights, then compute keys
            momentum_update(self.visual, self.v_encoder_k, self.moco_m)
            momentum_update(self.textual, self.t_encoder_k, self.moco_m)
            if self.moco_fc:
                momentum_update(self.v_fc_q, self.v_fc_k, self.moco_m)
                momentum_update(self.t_fc_q, self.t_fc_k, self.moco_m)
            v_proj = self.v_fc_k if self.moco_fc else self.v_embed_layer
            t_proj = self.t_fc_k if self.moco_fc else self.t_embed_layer
            v_k = F.normalize(v_proj(self.v_encoder_k(images)), dim=1)  # [B, D]
            t_k = F.normalize(t_proj(self.t_encoder_k(batch)), dim=1)  # [B, D]
            keep = self.queue.negatives(ids)  # [K]
            # clones: the queues are overwritten below, before backward reads them
            text_queue = self.queue.text_queue.clone()  # [K, D]
            image_queue = self.queue.image_queue.clone()  # [K, D]
        loss = losses.infonce_loss(
            v_q, t_k, text_queue, t_q, v_k, image_queue, temperature=self.temperature, neg_mask=keep
        )
        self.queue.enqueue(v_k, t_k, ids)
        return loss
