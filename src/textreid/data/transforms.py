"""Image transforms (torchvision v1, PIL in → normalised tensor [3, H, W] out)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision import transforms as T

ERASE_FILLS = ("zero", "mean")


def build_transforms(
    *,
    height: int,
    width: int,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    use_aug: bool = True,
    padding: int = 10,
    erase_fill: str = "zero",
) -> Callable[[Image.Image], torch.Tensor]:
    """The SPEC's pipelines.

    Train with ``use_aug``: resize to (height, width) (bilinear, antialiased — torchvision's
    default, as the authors used), horizontal flip p=0.5, pad ``padding`` (zeros) + random crop
    back to (height, width), to tensor, normalise, random erasing (p=0.5, area 2–40 %). The erased
    patch holds ``erase_fill``: "zero" (default) = the pixel mean after normalisation; "mean" = the
    UN-normalised ``mean`` values, which is what the authors passed (≈0.48/0.46/0.41 in normalised
    units; kept for exact reproduction).
    Train without ``use_aug`` and test: resize, to tensor, normalise (deterministic).
    """
    if height < 1 or width < 1:
        raise ValueError(f"build_transforms: height and width should be >= 1, got {height}x{width}")
    if erase_fill not in ERASE_FILLS:
        raise ValueError(f"build_transforms: erase_fill {erase_fill!r} is not one of {', '.join(ERASE_FILLS)}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"build_transforms: mean and std need 3 values, got {list(mean)} / {list(std)}")
    resize = T.Resize((height, width), interpolation=T.InterpolationMode.BILINEAR, antialias=True)
    finish = [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    if not (train and use_aug):
        return T.Compose([resize, *finish])
    steps: list[Callable] = [resize, T.RandomHorizontalFlip(0.5)]
    if padding > 0:
        steps += [T.Pad(padding), T.RandomCrop((height, width))]
    steps += finish
    fill = 0 if erase_fill == "zero" else [float(m) for m in mean]
    steps.append(T.RandomErasing(p=0.5, scale=(0.02, 0.4), value=fill))
    return T.Compose(steps)
