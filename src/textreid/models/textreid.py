"""The TextReID model: two towers mapped to a joint space, plus what the training losses read.

The model computes named tensors, never losses: ``forward`` returns embeddings, the identity
classifier (weights or logits), the momentum keys with a snapshot of the key queues, and the
outputs of optional training branches (IRRA's masked-language-modelling transformer, RDE's
token-selection embeddings). A criterion (``textreid.criterion``) turns them into weighted loss
terms, so a new training recipe is a new criterion, not new arguments here.

The momentum key encoders and the key queues live here: they are persistent state that moves
with the weights (checkpoints, the authors' layout), and the keys are computed by encoders. The
criterion stays stateless.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from textreid.models.momentum import KeyQueue, momentum_update
from textreid.models.momentum import frozen_copy as _frozen_copy
from textreid.models.tokens import tower_tokens

HEADS = ("simple", "moco")
CLASSIFIERS = ("projection", "linear", "none")


def _init_linear(module: nn.Module) -> None:
    """Kaiming normal (fan_out) weights and zero biases, as the paper's embedding layers."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))


def _check_parts(*, visual: nn.Module, textual: nn.Module, num_classes: int, feature_size: int, head: str,
                 classifier: str) -> None:
    """ValueError/TypeError naming the argument that cannot make a model."""
    if head not in HEADS:
        raise ValueError(f"unknown embedding head {head!r}; valid: {', '.join(HEADS)}")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown identity classifier {classifier!r}; valid: {', '.join(CLASSIFIERS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 (identities of the training split), got {num_classes}")
    for name, tower in (("visual", visual), ("textual", textual)):
        if not isinstance(getattr(tower, "out_dim", None), int):
            raise TypeError(f"the {name} tower {type(tower).__name__} has no integer attribute 'out_dim'")
    if feature_size == 0 and visual.out_dim != textual.out_dim:
        raise ValueError(f"without embedding layers (feature size 0) both towers must have the same output width; "
                         f"got visual {visual.out_dim}, textual {textual.out_dim}")


class TextReID(nn.Module):
    """Image and text towers mapped to a joint space; ``forward`` returns named tensors for a criterion.

    ``feature_size``: width of the linear embedding layers on top of the towers (0 = no layer: the
    towers' own outputs are the embeddings, as in IRRA and RDE).
    ``classifier``: the identity classifier shared by both modalities: ``"projection"`` (the paper's
    ``[D, C]`` matrix whose columns the instance loss normalises), ``"linear"`` (IRRA's ``nn.Linear``
    with bias) or ``"none"``.
    ``head="moco"``: momentum key encoders (copies of both towers) and id-aware key queues. Keys are
    projected like the authors do: with ``moco_fc=False`` by the QUERY embedding layers (no momentum
    copies of them), with ``moco_fc=True`` by momentum copies (``v_fc_k``/``t_fc_k``) of the MLPs.
    ``branches``: extra training modules (``textreid.models.branches``) that read the towers' token
    features; a branch with ``retrieval_weight > 0`` also contributes to the test-time embedding.
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
        dropout: float = 0.0,
        freeze_towers: bool = False,
        classifier: str = "projection",
        branches: dict[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        _check_parts(visual=visual, textual=textual, num_classes=num_classes, feature_size=feature_size, head=head,
                     classifier=classifier)
        self.head = head
        self.feature_size = feature_size or visual.out_dim
        self.moco_m = moco_m
        self.moco_fc = moco_fc
        self.freeze_towers = freeze_towers
        self.classifier_kind = classifier

        self.visual = visual
        self.textual = textual
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._add_embedding_layers(feature_size)
        self._add_classifier(classifier, num_classes)
        self._num_classes = num_classes
        self.branches = nn.ModuleDict(branches or {})

        if freeze_towers:
            for p in [*visual.parameters(), *textual.parameters()]:
                p.requires_grad_(False)

        if head == "moco":
            self._add_momentum_encoders(moco_k)

    # the parts, in the order they draw from the random generator (the same weights for one seed)
    def _add_embedding_layers(self, feature_size: int) -> None:
        """Linear maps of both towers' outputs into the joint space, or none (``feature_size`` 0)."""
        if feature_size:
            self.v_embed_layer = nn.Linear(self.visual.out_dim, feature_size)
            self.t_embed_layer = nn.Linear(self.textual.out_dim, feature_size)
            _init_linear(self.v_embed_layer)
            _init_linear(self.t_embed_layer)
        else:
            self.v_embed_layer, self.t_embed_layer = nn.Identity(), nn.Identity()

    def _add_classifier(self, classifier: str, num_classes: int) -> None:
        """The identity classifier shared by both modalities (none for ``"none"``)."""
        if classifier == "projection":
            # shared by both modalities; columns are normalised in the instance loss
            self.projection = nn.Parameter(torch.empty(self.feature_size, num_classes))  # [D, C]
            nn.init.xavier_uniform_(self.projection, gain=1.0)
        elif classifier == "linear":
            self.classifier = nn.Linear(self.feature_size, num_classes)
            nn.init.normal_(self.classifier.weight, std=0.001)
            nn.init.zeros_(self.classifier.bias)

    def _add_momentum_encoders(self, moco_k: int) -> None:
        """The moco head: key encoders (frozen copies of the towers and, with ``moco_fc``, of the MLPs)
        and the id-aware key queues."""
        if self.moco_fc:
            self.v_fc_q = _mlp(self.visual.out_dim, self.feature_size)
            self.t_fc_q = _mlp(self.textual.out_dim, self.feature_size)
            _init_linear(self.v_fc_q)
            _init_linear(self.t_fc_q)
            self.v_fc_k = _frozen_copy(self.v_fc_q)
            self.t_fc_k = _frozen_copy(self.t_fc_q)
        # copies made after every initialisation above: query and key start equal
        self.v_encoder_k = _frozen_copy(self.visual)
        self.t_encoder_k = _frozen_copy(self.textual)
        self.queue = KeyQueue(moco_k, self.feature_size)

    @property
    def embed_dim(self) -> int:
        """Width of the retrieval embedding (the joint space, plus retrieval branches' widths)."""
        return self.feature_size + sum(b.out_dim for b in self._retrieval_branches())

    @property
    def num_classes(self) -> int:
        """Number of identities of the identity classifier."""
        return self._num_classes

    def _retrieval_branches(self) -> list[nn.Module]:
        return [b for b in self.branches.values() if getattr(b, "retrieval_weight", 0.0) > 0]

    def _needs_tokens(self, training: bool) -> bool:
        branches = self.branches.values() if training else self._retrieval_branches()
        return any(getattr(b, "needs_tokens", False) for b in branches)

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
        """Retrieval image embeddings ``[B, 3, H, W]`` -> ``[B, embed_dim]`` (raw unless branches combine)."""
        if not self._needs_tokens(training=False):
            return self.v_embed_layer(self.visual(images))
        feats = tower_tokens(self.visual, images, attention=True)
        parts = [(b.retrieval_weight, b.embed_image(feats)) for b in self._retrieval_branches()]
        return _combine(self.v_embed_layer(feats["pooled"]), parts)

    def embed_texts(self, text: dict[str, torch.Tensor]) -> torch.Tensor:
        """Retrieval text embeddings from the tokenizer's dict -> ``[B, embed_dim]``."""
        if not self._needs_tokens(training=False):
            return self.t_embed_layer(self.textual(text))
        feats = tower_tokens(self.textual, text, attention=True)
        parts = [(b.retrieval_weight, b.embed_text(feats, text)) for b in self._retrieval_branches()]
        return _combine(self.t_embed_layer(feats["pooled"]), parts)

    def pair_embeddings(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{"global": (image, text)}`` plus each branch's own embeddings (RDE: ``"tse"``) of a batch of
        pairs, without training side effects; the clean-pair division ranks pairs with them."""
        images = batch["images"]
        selectors = {k: b for k, b in self.branches.items() if hasattr(b, "embed_image")}
        if not selectors:
            return {"global": (self.v_embed_layer(self.visual(images)), self.t_embed_layer(self.textual(batch)))}
        v_tok = tower_tokens(self.visual, images, attention=True)
        t_tok = tower_tokens(self.textual, batch, attention=True)
        out = {"global": (self.v_embed_layer(v_tok["pooled"]), self.t_embed_layer(t_tok["pooled"]))}
        for name, branch in selectors.items():
            out[name] = (branch.embed_image(v_tok), branch.embed_text(t_tok, batch))
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named tensors for a criterion (training) or ``image_embeds``/``text_embeds`` (eval).

        ``batch`` holds ``images [B, 3, H, W]``, ``person_ids [B]`` and the tokenizer's keys
        (``word_ids``/``lengths`` or ``tokens``). Training outputs: ``image_embeds``/``text_embeds``
        ``[B, D]`` (raw), the classifier (``id_weight [D, C]`` or ``image_id_logits``/``text_id_logits``
        ``[B, C]``), with the moco head ``image_keys``/``text_keys`` ``[B, D]`` (and with ``moco_fc`` the
        query MLP outputs ``image_query_feats``/``text_query_feats``), ``image_queue``/``text_queue`` ``[K, D]`` (snapshots before this step's keys are
        enqueued) and ``queue_keep [K]``, plus every branch's outputs. A moco training call updates
        the key encoders and the queues.
        """
        if not self.training:
            return {"image_embeds": self.embed_images(batch["images"]), "text_embeds": self.embed_texts(batch)}
        for branch in self.branches.values():
            if hasattr(branch, "prepare"):
                batch = branch.prepare(batch)
        images = batch["images"]
        if self._needs_tokens(training=True):
            v_tok = tower_tokens(self.visual, images, attention=True)
            t_tok = tower_tokens(self.textual, batch, attention=True)
            v_feat, t_feat = v_tok["pooled"], t_tok["pooled"]
        else:
            v_tok = t_tok = None
            v_feat = self.visual(images)  # [B, Dv]
            t_feat = self.textual(batch)  # [B, Dt]
        v_feat, t_feat = self.dropout(v_feat), self.dropout(t_feat)
        out = {"image_embeds": self.v_embed_layer(v_feat), "text_embeds": self.t_embed_layer(t_feat)}  # [B, D]
        if self.classifier_kind == "projection":
            out["id_weight"] = self.projection  # [D, C]
        elif self.classifier_kind == "linear":
            out["image_id_logits"] = self.classifier(out["image_embeds"])  # [B, C]
            out["text_id_logits"] = self.classifier(out["text_embeds"])  # [B, C]
        if self.head == "moco":
            out.update(self._momentum_keys(images, batch, batch["person_ids"].view(-1), v_feat, t_feat))
        for branch in self.branches.values():
            out.update(branch(v_tok, t_tok, batch, self))
        return out

    def _momentum_keys(
        self,
        images: torch.Tensor,
        batch: dict[str, torch.Tensor],
        ids: torch.Tensor,
        v_feat: torch.Tensor,
        t_feat: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Momentum-update the key encoders; keys; queue snapshots and mask; enqueue the keys.

        The InfoNCE queries are the normalised embeddings, or with ``moco_fc`` the normalised outputs of
        the query MLPs (``*_query_feats``); the criterion normalises them, so that autograd sums the
        gradients in the same order as when the loss was computed inside the model (bit-identical runs).
        """
        out = {}
        if self.moco_fc:
            out = {"image_query_feats": self.v_fc_q(v_feat), "text_query_feats": self.t_fc_q(t_feat)}  # [B, D]
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
            # clones: the queues are overwritten below, before the criterion reads them
            text_queue = self.queue.text_queue.clone()  # [K, D]
            image_queue = self.queue.image_queue.clone()  # [K, D]
        self.queue.enqueue(v_k, t_k, ids)
        return {**out, "image_keys": v_k, "text_keys": t_k, "image_queue": image_queue, "text_queue": text_queue,
                "queue_keep": keep}


def _combine(base: torch.Tensor, parts: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
    """``[sqrt(w0) n(base), sqrt(w1) n(e1), ...]`` with w0 = 1 - sum(wi): the dot product of two such
    vectors is the weighted sum of the branches' cosine similarities (RDE's test-time combination)."""
    w0 = 1.0 - sum(w for w, _ in parts)
    if w0 < 0:
        raise ValueError(f"retrieval weights of the branches sum to {1 - w0:.3f} > 1")
    pieces = [math.sqrt(w0) * F.normalize(base.float(), dim=-1)]
    pieces += [math.sqrt(w) * F.normalize(e.float(), dim=-1) for w, e in parts]
    return torch.cat(pieces, dim=-1)
