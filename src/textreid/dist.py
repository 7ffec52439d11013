"""torch.distributed helpers that are no-ops in a single process (CPU/gloo or GPU/NCCL)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_dist() -> bool:
    """True when a process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    """Only the main process writes files."""
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


@torch.no_grad()
def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, in rank order (no gradient).

    All ranks must pass tensors of the same shape.
    """
    if not is_dist():
        return x
    parts = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_gather_variable(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather_cat` but each rank may hold a different number of rows."""
    if not is_dist():
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = all_gather_cat(n).tolist()
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    gathered = all_gather_cat(padded)
    width = max(sizes)
    return torch.cat([gathered[i * width : i * width + s] for i, s in enumerate(sizes)], dim=0)


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (for logging)."""
    if not is_dist():
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / get_world_size()
