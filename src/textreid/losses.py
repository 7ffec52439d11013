"""Training losses as pure functions of embeddings and labels; each returns a scalar tensor.

``TextReID.forward`` combines them into ``{"<name>_loss": weighted term}``; the trainer sums the
``*_loss`` entries. Nothing here holds state or touches a device explicitly. Every loss runs in
float32 with autocast disabled (inputs are up-cast), so mixed-precision training only affects the towers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

_F = TypeVar("_F", bound=Callable[..., torch.Tensor])


def _float32(fn: _F) -> _F:
    """Run a loss in float32 with autocast off: bf16 similarities (3 significant digits) scaled
    by 1/T or by 40 make noisy logits, and these matrices are small."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        device_type = tensors[0].device.type if tensors else "cpu"

        def up(a: Any) -> Any:
            return a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a

        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


@_float32
def instance_loss(
    projection: torch.Tensor,
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float = 0.1,
) -> torch.Tensor:
    """Identity classification of both modalities with a shared classifier, summed.

    ``projection [D, C]`` has its columns L2-normalised; the embeddings ``[B, D]`` are used raw
    (un-normalised), as in the paper. Label smoothing: target = (1 - eps) * onehot + eps / C,
    cross-entropy averaged over the batch (the authors' ``CrossEntropyLabelSmooth``).
    """
    weight = F.normalize(projection, p=2, dim=0)  # [D, C]
    image_logits = image_embeds @ weight  # [B, C]
    text_logits = text_embeds @ weight  # [B, C]
    # F.cross_entropy's label_smoothing uses exactly (1 - eps) * onehot + eps / C
    return F.cross_entropy(image_logits, labels, label_smoothing=epsilon) + F.cross_entropy(
        text_logits, labels, label_smoothing=epsilon
    )


def _same_id(labels: torch.Tensor) -> torch.Tensor:
    labels = labels.view(-1)
    return labels[:, None] == labels[None, :]  # [B, B] bool


@_float32
def global_align_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.6,
    beta: float = 0.4,
    scale_pos: float = 10.0,
    scale_neg: float = 40.0,
) -> torch.Tensor:
    """The paper's global alignment loss on the in-batch cosine similarity matrix.

    loss = 2/B * [sum_pos log(1 + exp(-scale_pos (S - alpha))) + sum_neg log(1 + exp(scale_neg (S - beta)))],
    positives = pairs with the same person id. ``softplus`` is the same value without overflow.
    """
    batch = labels.numel()
    sim = F.normalize(image_embeds, dim=1) @ F.normalize(text_embeds, dim=1).t()  # [B, B]
    pos = _same_id(labels)  # [B, B]
    pos_term = F.softplus(-scale_pos * (sim - alpha))  # [B, B]
    neg_term = F.softplus(scale_neg * (sim - beta))  # [B, B]
    total = torch.where(pos, pos_term, neg_term).sum()
    return total * 2.0 / batch


@_float32
def infonce_loss(
    q_img: torch.Tensor,
    k_txt_pos: torch.Tensor,
    txt_queue: torch.Tensor,
    q_txt: torch.Tensor,
    k_img_pos: torch.Tensor,
    img_queue: torch.Tensor,
    temperature: float = 0.07,
    neg_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-modal InfoNCE against key queues, summed over the two directions.

    Image queries ``q_img [B, D]`` have the positive ``k_txt_pos [B, D]`` (the momentum text key
    of their own caption) and negatives ``txt_queue [K, D]``; symmetrically for text queries
    against ``img_queue``. All inputs are expected L2-normalised. ``neg_mask [K]`` (bool, True =
    keep) drops queue entries for every query; masking with -inf keeps shapes static, which is
    the same as removing those entries.
    """

    def one_direction(q: torch.Tensor, k_pos: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        pos = (q * k_pos).sum(dim=1, keepdim=True)  # [B, 1]
        neg = q @ queue.t()  # [B, K]
        if neg_mask is not None:
            neg = neg.masked_fill(~neg_mask.view(1, -1), float("-inf"))  # [B, K]
        logits = torch.cat([pos, neg], dim=1) / temperature  # [B, 1 + K]
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # positive at 0
        return F.cross_entropy(logits, target)

    return one_direction(q_img, k_txt_pos, txt_queue) + one_direction(q_txt, k_img_pos, img_queue)


@_float32
def sdm_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.02,
    epsilon: float = 1e-8,
) -> torch.Tensor:
    """IRRA's similarity distribution matching: KL(softmax(sim / T) || true matching), both directions.

    The true matching distribution of a query spreads mass uniformly over the batch items with the
    same person id. Returns the sum of the image-to-text and text-to-image terms.
    """
    match = _same_id(labels).to(image_embeds.dtype)  # [B, B]
    target = match / match.sum(dim=1, keepdim=True)  # [B, B], rows sum to 1
    log_target = torch.log(target + epsilon)  # [B, B]
    t2i = F.normalize(text_embeds, dim=1) @ F.normalize(image_embeds, dim=1).t() / temperature  # [B, B]
    i2t = t2i.t()  # [B, B]

    def kl(logits: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1)  # [B, B]
        return (log_p.exp() * (log_p - log_target)).sum(dim=1).mean()

    return kl(i2t) + kl(t2i)


@_float32
def itc_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, temperature: float) -> torch.Tensor:
    """CLIP-style in-batch contrastive loss: mean of the image->text and text->image cross-entropies.

    Pair i (image i, caption i) is the only positive of row i, even when other items share its id.
    """
    logits = F.normalize(image_embeds, dim=1) @ F.normalize(text_embeds, dim=1).t() / temperature  # [B, B]
    target = torch.arange(logits.shape[0], device=logits.device)  # [B]
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


@_float32
def id_loss(image_logits: torch.Tensor, text_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """IRRA's identity loss: the mean of the two modalities' cross-entropies over ``[B, C]`` logits."""
    return (F.cross_entropy(image_logits, labels) + F.cross_entropy(text_logits, labels)) / 2


@_float32
def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """IRRA's masked-token loss: cross-entropy of ``[M, V]`` logits, label 0 = not predicted (ignored)."""
    return F.cross_entropy(logits, labels, ignore_index=0)


@_float32
def tal_per_pair(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, labels: torch.Tensor, tau: float = 0.015, margin: float = 0.1
) -> torch.Tensor:
    """RDE's triplet alignment loss of every pair ``[B]`` (caption i with image i), both directions.

    For a query row of the cosine matrix S (text x image, and its transpose): the positive is the
    softmax(S/tau)-weighted mean of the same-id similarities (weights detached), the negative the
    tau-smoothed maximum ``tau * log sum_neg exp(S/tau)``; loss = max(0, margin + negative - positive).
    """
    sim = F.normalize(text_embeds, dim=1) @ F.normalize(image_embeds, dim=1).t()  # [B, B]
    pos = _same_id(labels)  # [B, B]

    def direction(s: torch.Tensor) -> torch.Tensor:
        alpha = torch.softmax((s / tau).masked_fill(~pos, float("-inf")), dim=1).detach()  # [B, B]
        hardest = tau * torch.logsumexp((s / tau).masked_fill(pos, float("-inf")), dim=1)  # [B]
        return (margin + hardest - (alpha * s).sum(dim=1)).clamp(min=0)

    return direction(sim) + direction(sim.t())
