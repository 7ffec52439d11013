"""Image towers: CLIP's modified ResNet and ViT adapted to person crops, and a torchvision ResNet baseline.

Every tower maps ``images [B, 3, H, W]`` to ``[B, out_dim]`` and has an ``out_dim`` attribute.
One builder per family (``build_clip_resnet``, ``build_clip_vit``, ``build_torchvision_resnet``)
takes only that family's sizes; ``VISUAL_TOWERS`` maps each tower name to its family and
``build_visual_tower(name, **sizes)`` dispatches on it.

The CLIP towers subclass open_clip's ``ModifiedResNet`` / ``VisionTransformer``, so their
state-dict keys are exactly CLIP's ``visual.*`` keys without the prefix (``conv1.weight``,
``layer4.2.bn3.running_var``, ``attnpool.positional_embedding``, ...): OpenAI's files and the
authors' ``best.pth`` (``visual_model.<those keys>``) load without renaming.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from open_clip.modified_resnet import AttentionPool2d, Bottleneck, ModifiedResNet
from open_clip.transformer import LayerNorm, QuickGELU, VisionTransformer
from torch import Tensor, nn

from .clip_weights import (
    ClipWeightsError,
    check_state_dict,
    clip_architecture,
    describe_architecture,
    load_clip_state_dict,
    split_clip_state_dict,
)
from .recompute import run_stages
from .state_dict import strip_prefix

ImageSize = tuple[int, int]


def resize_pos_embed(
    pos: Tensor,
    new_grid: Sequence[int],
    *,
    old_grid: Sequence[int] | None = None,
    mode: str = "bilinear",
) -> Tensor:
    """Resize ``[1 + h0*w0, C]`` positional embeddings to ``[1 + h*w, C]``; the class token is kept.

    The grid part is interpolated with ``align_corners=False`` (the authors' flags in their
    ``m_resnet.py``: bilinear, ``align_corners=False``). ``old_grid`` defaults to a square grid.
    """
    h, w = int(new_grid[0]), int(new_grid[1])
    cls_tok, grid = pos[:1], pos[1:]  # [1, C], [h0*w0, C]
    if old_grid is None:
        side = int(round(grid.shape[0] ** 0.5))
        old_grid = (side, side)
    h0, w0 = int(old_grid[0]), int(old_grid[1])
    if h0 * w0 != grid.shape[0]:
        raise ValueError(
            f"positional embedding has {grid.shape[0]} grid tokens, not a {h0}x{w0} grid"
        )
    if (h0, w0) == (h, w):
        return pos.clone()
    dtype = pos.dtype
    grid = grid.float().reshape(1, h0, w0, -1).permute(0, 3, 1, 2)  # [1, C, h0, w0]
    grid = F.interpolate(grid, size=(h, w), mode=mode, align_corners=False)  # [1, C, h, w]
    grid = grid.permute(0, 2, 3, 1).reshape(h * w, -1).to(dtype)  # [h*w, C]
    return torch.cat([cls_tok, grid], dim=0)  # [1 + h*w, C]


def _pair(size: int | Sequence[int]) -> ImageSize:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def resnet_grid(image_size: int | Sequence[int], res5_stride: int) -> ImageSize:
    """Final feature-map size of CLIP's modified ResNet: stem /4, then /2, /2, /res5_stride."""
    out = []
    for n in _pair(image_size):
        n = (n - 1) // 2 + 1  # conv1: 3x3, stride 2, padding 1
        n //= 2  # stem avg-pool
        n //= 2  # layer2
        n //= 2  # layer3
        n //= res5_stride  # layer4
        out.append(n)
    return out[0], out[1]


def _load_clip_visual(
    tower: nn.Module, pretrained: str | Path, *, vision: str, grid: ImageSize
) -> None:
    """Load the image-tower weights of a CLIP file into ``tower``, resizing the positional embedding."""
    sd = load_clip_state_dict(pretrained)
    arch = clip_architecture(sd)
    if arch["vision"] != vision:
        kind = "ViT" if vision == "vit" else "modified ResNet"
        raise ClipWeightsError(
            f"{pretrained}: the file holds a {describe_architecture(arch)}, but this tower is a CLIP {kind}; "
            "choose the matching visual model"
        )
    visual, _ = split_clip_state_dict(sd)
    key = "positional_embedding" if vision == "vit" else "attnpool.positional_embedding"
    if arch["grid"] is not None:
        visual[key] = resize_pos_embed(visual[key], grid, old_grid=arch["grid"])
    elif arch["grid_tokens"] != grid[0] * grid[1]:  # a non-square grid is only taken as it is
        raise ClipWeightsError(
            f"{pretrained}: visual.{key} holds a non-square grid of {arch['grid_tokens']} cells, which cannot be "
            f"resized to this tower's {grid[0]}x{grid[1]}; set INPUT.HEIGHT/WIDTH (and MODEL.VIT.STRIDE) to the "
            "image size the file was trained at (IRRA/RDE: 384x128, stride 16)")
    check_state_dict(
        tower,
        visual,
        source=str(pretrained),
        hint=f" (the file holds a {describe_architecture(arch)})",
    )
    tower.load_state_dict(visual, strict=True)


class ClipAttentionPool(AttentionPool2d):
    """CLIP's attention pool computing only what its output needs: the class token's attention.

    open_clip's (and the authors') forward projects all ``1 + h*w`` tokens to queries, keys and
    values and attends from every token, then keeps token 0. This computes the same function for
    token 0 alone and reassociates the products so that no token is projected to keys or values:
    per head, ``q_h . (W_k,h t_n + b_k,h) = t_n . (W_k,h^T q_h) + q_h . b_k,h`` and, the
    attention weights summing to one, ``sum_n p_n (W_v,h t_n + b_v,h) = W_v,h (sum_n p_n t_n) + b_v,h``.
    Same parameters and keys, same result up to float rounding (~1e-7 relative), about 1/60 of
    the multiply-adds at 24x8 tokens of width 2048 (the four projections dominated the paper's
    training step after the convolutions).
    """

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, h, w]`` -> ``[B, output_dim]``."""
        b, c = x.shape[:2]
        heads = self.num_heads
        d = c // heads
        t = x.flatten(2).transpose(1, 2)  # [B, N, C] (contiguous for channels-last input)
        t = torch.cat([t.mean(dim=1, keepdim=True), t], dim=1) + self.positional_embedding.to(t.dtype)  # [B, 1+N, C]
        q = F.linear(t[:, 0], self.q_proj.weight, self.q_proj.bias).view(b, heads, d) * d**-0.5  # [B, h, d]
        u = torch.einsum("bhd,hdc->bhc", q, self.k_proj.weight.view(heads, d, c))  # [B, h, C]
        shift = torch.einsum("bhd,hd->bh", q, self.k_proj.bias.view(heads, d))  # [B, h]
        scores = torch.bmm(u, t.transpose(1, 2)) + shift.unsqueeze(-1)  # [B, h, 1+N]
        pooled = torch.bmm(scores.softmax(dim=-1), t)  # [B, h, C]
        v = torch.einsum("bhc,hdc->bhd", pooled, self.v_proj.weight.view(heads, d, c)) + self.v_proj.bias.view(heads, d)
        return self.c_proj(v.reshape(b, c))  # [B, output_dim]


class ClipResNet(ModifiedResNet):
    """CLIP's modified ResNet with a configurable last-stage stride and a resized attention pool.

    With ``res5_stride=1`` the first block of ``layer4`` neither average-pools in its main branch
    nor in its shortcut, so a 384x128 image gives a 24x8 map (12x4 with stride 2). The attention
    pool's positional embedding has one token per cell of that map plus the class token.
    """

    def __init__(
        self,
        *,
        layers: Sequence[int],
        width: int,
        output_dim: int,
        heads: int,
        image_size: int | Sequence[int] = (384, 128),
        res5_stride: int = 1,
    ) -> None:
        if res5_stride not in (1, 2):
            raise ValueError(f"res5_stride must be 1 or 2, got {res5_stride}")
        if len(layers) != 4:
            raise ValueError(f"layers must list 4 stage depths, got {list(layers)}")
        if heads < 1 or (width * 32) % heads:
            raise ValueError(f"heads={heads} must divide the attention-pool width {width * 32}")
        super().__init__(
            layers=list(layers), output_dim=output_dim, heads=heads, image_size=32, width=width
        )
        self.image_size = _pair(image_size)
        self.res5_stride = res5_stride
        self.grid = resnet_grid(self.image_size, res5_stride)
        with torch.random.fork_rng(devices=[]):  # same random stream (and weights) as open_clip's pool
            pool = ClipAttentionPool(1, width * 32, heads, output_dim)
        pool.load_state_dict(self.attnpool.state_dict())
        self.attnpool = pool
        if min(self.grid) < 1:
            raise ValueError(
                f"image size {self.image_size} is too small for a ResNet (final map {self.grid})"
            )
        # same keys as CLIP's first layer4 block; AvgPool2d(1) in the shortcut is the identity
        self.layer4[0] = Bottleneck(width * 16, width * 8, stride=res5_stride)
        embed_dim = width * 32
        self.attnpool.positional_embedding = nn.Parameter(
            torch.randn(self.grid[0] * self.grid[1] + 1, embed_dim) / embed_dim**0.5
        )
        self.init_parameters()
        self.out_dim = output_dim
        self.recompute_stages = 0  # leading stages (stem, layer1, ...) recomputed in backward (SOLVER.RECOMPUTE_STAGES)

    def features(self, images: Tensor) -> Tensor:
        """The last stage's feature map ``[B, 32*width, h, w]`` (before attention pooling)."""
        stages = (self.stem, self.layer1, self.layer2, self.layer3, self.layer4)  # stem: [B, width, H/4, W/4]
        return run_stages(self, stages, images, self.recompute_stages)  # [B, 32*width, h, w]

    def forward(self, images: Tensor) -> Tensor:
        """Attention-pooled image features ``[B, out_dim]``."""
        return self.attnpool(self.features(images))  # [B, out_dim]


class ClipViT(VisionTransformer):
    """CLIP's ViT for non-square inputs: patch grid (H/p, W/p), or overlapping patches with ``stride``.

    Output: the projected class token ``[B, output_dim]``.
    """

    def __init__(
        self,
        *,
        image_size: int | Sequence[int] = (384, 128),
        patch_size: int = 16,
        width: int = 768,
        layers: int = 12,
        heads: int = 12,
        output_dim: int = 512,
        stride: int = 0,
        quick_gelu: bool = True,
    ) -> None:
        if heads < 1 or width % heads:
            raise ValueError(f"vit heads={heads} must divide the width {width}")
        stride = stride or patch_size
        if not 0 < stride <= patch_size:
            raise ValueError(f"vit stride must be in [1, patch_size={patch_size}], got {stride}")
        image_size = _pair(image_size)
        super().__init__(
            image_size=image_size,
            patch_size=patch_size,
            width=width,
            layers=layers,
            heads=heads,
            mlp_ratio=4.0,
            output_dim=output_dim,
            # OpenAI's CLIP was trained with QuickGELU; open_clip's own ViTs use nn.GELU
            act_layer=QuickGELU if quick_gelu else nn.GELU,
            norm_layer=LayerNorm,
        )
        self.stride = stride
        grid = tuple((n - patch_size) // stride + 1 for n in image_size)
        if min(grid) < 1:
            raise ValueError(f"image size {image_size} is smaller than the patch size {patch_size}")
        self.grid_size = grid
        self.grid = grid
        if stride != patch_size:
            self.conv1.stride = (stride, stride)
        if grid[0] * grid[1] + 1 != self.positional_embedding.shape[0]:
            self.positional_embedding = nn.Parameter(
                width**-0.5 * torch.randn(grid[0] * grid[1] + 1, width)
            )
        self.out_dim = output_dim


class TorchvisionResNet(nn.Module):
    """The authors' ImageNet baseline: a torchvision ResNet trunk, configurable last stride, global average pool.

    Keys are torchvision's without ``fc.*`` (``conv1.weight``, ``layer4.0.downsample.0.weight``, ...).
    """

    def __init__(self, *, layers: Sequence[int], res5_stride: int = 2) -> None:
        super().__init__()
        if res5_stride not in (1, 2):
            raise ValueError(f"res5_stride must be 1 or 2, got {res5_stride}")
        trunk = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, list(layers))
        # torchvision (v1.5) puts the stride of a bottleneck in its 3x3 conv and in the shortcut conv
        trunk.layer4[0].conv2.stride = (res5_stride, res5_stride)
        trunk.layer4[0].downsample[0].stride = (res5_stride, res5_stride)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(trunk, name))
        self.res5_stride = res5_stride
        self.out_dim = 512 * torchvision.models.resnet.Bottleneck.expansion
        self.recompute_stages = 0  # leading stages (stem, layer1, ...) recomputed in backward (SOLVER.RECOMPUTE_STAGES)

    def stem(self, images: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(images))))  # [B, 64, H/4, W/4]

    def features(self, images: Tensor) -> Tensor:
        """The last stage's feature map ``[B, 2048, h, w]``."""
        stages = (self.stem, self.layer1, self.layer2, self.layer3, self.layer4)
        return run_stages(self, stages, images, self.recompute_stages)  # [B, 2048, h, w]

    def forward(self, images: Tensor) -> Tensor:
        """Globally average-pooled features ``[B, 2048]``."""
        return self.features(images).mean(dim=(2, 3))  # [B, 2048]


def _load_torchvision(tower: TorchvisionResNet, pretrained: str | Path) -> None:
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ClipWeightsError(
            f"ResNet weight file not found: {path} (expected a torchvision resnet state dict)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ClipWeightsError(
            f"{path}: cannot read it as a torchvision state dict: {type(exc).__name__}: {exc}"
        ) from exc
    for container_key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(container_key), dict):
            obj = obj[container_key]
    if not isinstance(obj, dict):
        raise ClipWeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    sd = strip_prefix({k: v for k, v in obj.items() if isinstance(v, Tensor)})
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}  # the ImageNet classifier
    if any(k.startswith("visual.") for k in sd):
        raise ClipWeightsError(
            f"{path}: this is a CLIP checkpoint; use an m_resnet* or clip_vit_* tower for it"
        )
    check_state_dict(tower, sd, source=str(path))
    tower.load_state_dict(sd, strict=True)


# --------------------------------------------------------------------------- families and registry
# name -> (layers, width, output_dim) of OpenAI's modified ResNets; heads follow CLIP: width*32/64
_CLIP_RESNETS = {
    "m_resnet50": ([3, 4, 6, 3], 64, 1024),
    "m_resnet": ([3, 4, 6, 3], 64, 1024),  # the authors' name for RN50
    "m_resnet101": ([3, 4, 23, 3], 64, 512),
    "m_resnet50x4": ([4, 6, 10, 6], 80, 640),
    "m_resnet50x16": ([6, 8, 18, 8], 96, 768),
    "m_resnet50x64": ([3, 15, 36, 10], 128, 1024),
}
# name -> (patch_size, width, layers, heads, output_dim) of OpenAI's ViTs
_CLIP_VITS = {
    "clip_vit_b32": (32, 768, 12, 12, 512),
    "clip_vit_b16": (16, 768, 12, 12, 512),
    "clip_vit_l14": (14, 1024, 24, 16, 768),
}
_TORCHVISION_RESNETS = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}


def build_clip_resnet(
    name: str = "m_resnet50",
    *,
    image_size: int | Sequence[int] = (384, 128),
    res5_stride: int = 1,
    layers: Sequence[int] | None = None,
    width: int = 0,
    output_dim: int = 0,
    heads: int = 0,
    pretrained: str | Path = "",
) -> ClipResNet:
    """CLIP's modified ResNet ``name``; 0/None sizes take that model's, ``pretrained`` is a local CLIP file."""
    d_layers, d_width, d_out = _CLIP_RESNETS[name]
    width = width or d_width
    tower = ClipResNet(
        layers=list(layers) if layers else d_layers,
        width=width,
        output_dim=output_dim or d_out,
        heads=heads or width * 32 // 64,
        image_size=image_size,
        res5_stride=res5_stride,
    )
    if pretrained:
        _load_clip_visual(tower, pretrained, vision="resnet", grid=tower.grid)
    return tower


def build_clip_vit(
    name: str = "clip_vit_b16",
    *,
    image_size: int | Sequence[int] = (384, 128),
    patch_size: int = 0,
    width: int = 0,
    layers: int = 0,
    heads: int = 0,
    output_dim: int = 0,
    stride: int = 0,
    quick_gelu: bool = True,
    pretrained: str | Path = "",
) -> ClipViT:
    """CLIP's ViT ``name``; 0 sizes take that model's (heads: width/64 when only the width is given).

    ``stride`` < ``patch_size`` overlaps the patches. ``quick_gelu``: True for OpenAI weights,
    False for open_clip models trained with nn.GELU.
    """
    d_patch, d_width, d_layers, d_heads, d_out = _CLIP_VITS[name]
    tower = ClipViT(
        image_size=image_size,
        patch_size=patch_size or d_patch,
        width=width or d_width,
        layers=layers or d_layers,
        heads=heads or (max(1, width // 64) if width else d_heads),
        output_dim=output_dim or d_out,
        stride=stride,
        quick_gelu=quick_gelu,
    )
    if pretrained:
        _load_clip_visual(tower, pretrained, vision="vit", grid=tower.grid)
    return tower


def build_torchvision_resnet(
    name: str = "resnet50",
    *,
    image_size: int | Sequence[int] = (384, 128),
    res5_stride: int = 1,
    layers: Sequence[int] | None = None,
    pretrained: str | Path = "",
) -> TorchvisionResNet:
    """torchvision's ResNet ``name`` (global average pool: any ``image_size``); ``pretrained``: its state dict."""
    tower = TorchvisionResNet(layers=list(layers) if layers else _TORCHVISION_RESNETS[name], res5_stride=res5_stride)
    if pretrained:
        _load_torchvision(tower, pretrained)
    return tower


VISUAL_FAMILIES: dict[str, Callable[..., nn.Module]] = {
    "clip_resnet": build_clip_resnet,
    "clip_vit": build_clip_vit,
    "torchvision_resnet": build_torchvision_resnet,
}
# tower name -> family (a key of VISUAL_FAMILIES)
VISUAL_TOWERS: dict[str, str] = {
    **dict.fromkeys(_CLIP_RESNETS, "clip_resnet"),
    **dict.fromkeys(_CLIP_VITS, "clip_vit"),
    **dict.fromkeys(_TORCHVISION_RESNETS, "torchvision_resnet"),
}


def visual_family(name: str) -> str:
    """The family of the image tower ``name``: "clip_resnet", "clip_vit" or "torchvision_resnet"."""
    if name not in VISUAL_TOWERS:
        raise KeyError(f"unknown visual tower {name!r}; valid names: {', '.join(sorted(VISUAL_TOWERS))}")
    return VISUAL_TOWERS[name]


def build_visual_tower(
    name: str, *, image_size: int | Sequence[int] = (384, 128), pretrained: str | Path = "", **sizes: Any
) -> nn.Module:
    """Build the image tower ``name`` with its family's builder; ``sizes`` are that builder's keywords.

    A size the family does not have is refused unless it is left at 0/None, so a caller may pass
    unset sizes without knowing the family.
    """
    family = visual_family(name)
    build = VISUAL_FAMILIES[family]
    own = set(inspect.signature(build).parameters) - {"name", "image_size", "pretrained"}
    foreign = [f"{k}={v!r}" for k, v in sizes.items() if k not in own and v]
    if foreign:
        raise ValueError(
            f"visual tower {name!r} ({family}) does not use {', '.join(foreign)}; "
            f"its sizes are {', '.join(sorted(own))}"
        )
    kept = {k: v for k, v in sizes.items() if k in own}
    return build(name, image_size=image_size, pretrained=pretrained, **kept)
