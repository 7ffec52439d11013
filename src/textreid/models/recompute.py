"""Running a ResNet's leading stages without keeping their activations (SOLVER.RECOMPUTE_STAGES).

The early stages hold the widest feature maps: at 384x128, batch 8, CLIP's stem and ``layer1``
keep about 0.36 GB of the ~0.84 GB a ResNet-50 step saves for its backward pass, for about 15% of
the forward's multiply-adds. With ``recompute`` > 0 the first ``recompute`` stages run under
``torch.utils.checkpoint`` block by block (the stem, each bottleneck): only each block's input is
kept, and the backward pass runs the blocks again one at a time, so at most one block's
activations are held again.

The recomputation gives the same activations bit for bit (same kernels, same inputs; the stages
draw no random numbers), so losses, gradients and weights equal those of a run without it. The
one thing a second forward would change is train-mode BatchNorm's running statistics (updated a
second time): they are put back after the recomputation, so each step updates them once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

Stage = Callable[[Tensor], Tensor]


def run_stages(tower: nn.Module, stages: Sequence[Stage], x: Tensor, recompute: int = 0) -> Tensor:
    """``x`` through ``stages`` in order; while autograd records, the first ``recompute`` stages keep
    only the input of each of their blocks, and each block is run again in the backward pass, one
    at a time (``tower``'s BatchNorm statistics unchanged by it)."""
    recording = torch.is_grad_enabled()
    for i, stage in enumerate(stages):
        if i >= recompute or not recording:
            x = stage(x)
            continue
        for block in stage if isinstance(stage, nn.Sequential) else (stage,):
            x = checkpoint(block, x, use_reentrant=False, preserve_rng_state=False,
                           context_fn=lambda: (nullcontext(), _batchnorm_statistics_kept(tower)))
    return x


@contextmanager
def _batchnorm_statistics_kept(tower: nn.Module) -> Iterator[None]:
    """Put every BatchNorm buffer of ``tower`` back as it was on entry (the recomputation's updates undone)."""
    saved = [(buf, buf.clone()) for m in tower.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for buf in m.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def set_recompute_stages(model: nn.Module, stages: int) -> None:
    """Recompute the first ``stages`` stages of ``model.visual`` in backward (SOLVER.RECOMPUTE_STAGES);
    refused with the key named when the image tower has no ResNet stages."""
    tower = model.visual
    if stages and not hasattr(tower, "recompute_stages"):
        raise ValueError(f"SOLVER.RECOMPUTE_STAGES = {stages}: the image tower {type(tower).__name__} has no "
                         f"ResNet stages to recompute (CLIP and torchvision ResNets have); use 0")
    if hasattr(tower, "recompute_stages"):
        tower.recompute_stages = stages
