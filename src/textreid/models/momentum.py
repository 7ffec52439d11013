"""Momentum contrast pieces: the key-encoder update and the image/text/id key queues."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from textreid.dist import all_gather_cat


@torch.no_grad()
def momentum_update(query: nn.Module, key: nn.Module, m: float) -> None:
    """k <- m * k + (1 - m) * q for every parameter; buffers (BN statistics, word tables) copied.

    ``query`` and ``key`` must have the same structure (``key`` is a deep copy of ``query``).
    """
    q_params, k_params = list(query.parameters()), list(key.parameters())
    if len(q_params) != len(k_params):
        raise ValueError(
            f"momentum_update: query has {len(q_params)} parameters, key has {len(k_params)}; "
            "the key encoder must be a copy of the query encoder"
        )
    for q, k in zip(q_params, k_params, strict=True):
        k.mul_(m).add_(q.detach(), alpha=1.0 - m)
    for qb, kb in zip(query.buffers(), key.buffers(), strict=True):
        kb.copy_(qb)


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
