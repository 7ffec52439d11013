"""Momentum contrast pieces: the key-encoder update and the image/text/id key queues."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from textreid.dist import all_gather_cat


@torch.no_grad()
def momentum_update(query: nn.Module, key: nn.Module, m: float) -> None:
    """k <- m * k + (1 - m) * q for every parameter; buffers (BN statistics) copied.

    ``query`` and ``key`` must have the same structure (``key`` is a deep copy of ``query``).
    One fused multi-tensor update (``torch._foreach_*``) instead of a Python loop over the
    parameters, with the same arithmetic (``k.mul_(m).add_(q, alpha=1 - m)``), so the result is
    bit-identical to the loop. Buffers the key shares with the query (the frozen word table,
    see ``frozen_copy``) are not copied onto themselves.
    """
    q_params, k_params = list(query.parameters()), list(key.parameters())
    if len(q_params) != len(k_params):
        raise ValueError(
            f"momentum_update: query has {len(q_params)} parameters, key has {len(k_params)}; "
            "the key encoder must be a copy of the query encoder"
        )
    if k_params:
        torch._foreach_mul_(k_params, m)
        torch._foreach_add_(k_params, q_params, alpha=1.0 - m)
    pairs = [(qb, kb) for qb, kb in zip(query.buffers(), key.buffers(), strict=True)
             if kb.data_ptr() != qb.data_ptr()]
    if pairs:
        torch._foreach_copy_([kb for _, kb in pairs], [qb for qb, _ in pairs])


def frozen_copy(module: nn.Module, share_buffers: tuple[str, ...] = ("word_table",)) -> nn.Module:
    """A deep copy with every parameter frozen (a momentum key encoder).

    Buffers whose name ends with one of ``share_buffers`` (constant tables, never updated) are
    shared with ``module`` instead of copied: the key text tower holds no second word table.
    """
    memo = {id(b): b for name, b in module.named_buffers() if name.endswith(share_buffers)}
    clone = copy.deepcopy(module, memo)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


class KeyQueue(nn.Module):
    """FIFO queues of L2-normalised image and text keys and their person ids (all buffers).

    Initial content, as in the authors' code: random non-negative unit vectors with id -1. Those
    slots are NOT excluded from the negatives: the authors contrast against them until the queue
    has been filled once (K / global batch steps), and so do we. Real ids are >= 0, so -1 never
    matches a batch id.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"KeyQueue: size and dim must be >= 1, got size={size}, dim={dim}")
        self.size = size
        self.register_buffer("image_queue", F.normalize(torch.rand(size, dim), dim=1))  # [K, D]
        self.register_buffer("text_queue", F.normalize(torch.rand(size, dim), dim=1))  # [K, D]
        self.register_buffer("id_queue", torch.full((size,), -1, dtype=torch.long))  # [K]
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next slot to write

    @torch.no_grad()
    def enqueue(self, image_keys: torch.Tensor, text_keys: torch.Tensor, ids: torch.Tensor) -> None:
        """Replace the oldest entries with this step's keys gathered from every rank (rank order)."""
        image_keys = all_gather_cat(image_keys.detach())  # [G, D], G = global batch
        text_keys = all_gather_cat(text_keys.detach())  # [G, D]
        ids = all_gather_cat(ids.detach().view(-1).to(self.id_queue.dtype))  # [G]
        n = image_keys.shape[0]
        if self.size % n != 0:
            raise ValueError(
                f"MODEL.MOCO.K = {self.size} must be a multiple of the global batch size {n} "
                f"(SOLVER.IMS_PER_BATCH); e.g. use K = {max(1, round(self.size / n)) * n}"
            )
        # modular slots also cover a pointer restored from a run with another batch size
        slots = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size  # [G]
        self.image_queue[slots] = image_keys.to(self.image_queue.dtype)
        self.text_queue[slots] = text_keys.to(self.text_queue.dtype)
        self.id_queue[slots] = ids.to(self.id_queue.device)
        self.ptr.copy_((self.ptr + n) % self.size)

    @torch.no_grad()
    def negatives(self, batch_ids: torch.Tensor) -> torch.Tensor:
        """Mask ``[K]`` (True = usable negative): drops entries whose id is any id of ``batch_ids``."""
        same = self.id_queue[:, None] == batch_ids.view(1, -1).to(self.id_queue.device)  # [K, B]
        return ~same.any(dim=1)  # [K]
