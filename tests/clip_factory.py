"""Tiny CLIP-shaped models for tests, saved in the real file formats CLIP weights come in.

- ``save_openai_jit``: a TorchScript archive (``torch.jit.script`` + ``torch.jit.save``), as OpenAI
  distributes ``RN50.pt`` / ``ViT-B-16.pt``, optionally with OpenAI's float16 weights and its
  extra ``input_resolution`` / ``context_length`` / ``vocab_size`` entries;
- ``save_state_dict``: ``torch.save`` of a state dict, bare (``open_clip_pytorch_model.bin``) or as
  an open_clip training checkpoint (``{"epoch", "name", "state_dict": {"module.*"}}``);
- ``save_safetensors``: ``open_clip_model.safetensors``.

Sizes follow CLIP's conventions (64-channel heads) so that architecture inference applies:
ResNet width 8 -> attention pool 256-d with 4 heads; ViT/text width 64 -> 1 head.
"""

from __future__ import annotations

import copy
import warnings
import zipfile
from pathlib import Path

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_weights_to_lp
from safetensors.torch import save_file
from torch import nn

EMBED_DIM = 32
TEXT_CFG = dict(context_length=16, vocab_size=49408, width=64, heads=1, layers=1)
RESNET_CFG = dict(layers=[1, 1, 1, 1], width=8, image_size=64)  # final grid 2x2
VIT_CFG = dict(layers=2, width=64, patch_size=16, image_size=64)  # grid 4x4


def tiny_clip(
    kind: str = "resnet", *, seed: int = 0, resnet_layers: list[int] | None = None
) -> CLIP:
    """An open_clip ``CLIP`` (QuickGELU, like OpenAI's) with every weight and BN statistic randomised."""
    if kind == "resnet":
        vision = CLIPVisionCfg(
            **{**RESNET_CFG, **({"layers": resnet_layers} if resnet_layers else {})}
        )
    elif kind == "vit":
        vision = CLIPVisionCfg(**VIT_CFG)
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    model = CLIP(EMBED_DIM, vision_cfg=vision, text_cfg=CLIPTextCfg(**TEXT_CFG), quick_gelu=True)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        # CLIP's init zeroes each block's bn3 (blocks start as identities): randomise so every weight matters
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.add_(1.0)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


def fp16_rounded(model: CLIP) -> CLIP:
    """A float32 copy whose weights went through OpenAI's float16 storage (what an fp16 file reproduces)."""
    out = copy.deepcopy(model)
    convert_weights_to_lp(out, dtype=torch.float16)
    return out.float().eval()


def save_openai_jit(model: CLIP, path: str | Path, *, fp16: bool = False) -> Path:
    """Save ``model`` as OpenAI does: a TorchScript archive of the scripted model."""
    path = Path(path)
    scripted_src = copy.deepcopy(model).eval()
    if fp16:
        convert_weights_to_lp(scripted_src, dtype=torch.float16)
    # OpenAI's archives carry these scalars next to the weights
    image_size = scripted_src.visual.image_size
    side = image_size[0] if isinstance(image_size, tuple) else image_size
    scripted_src.register_buffer("input_resolution", torch.tensor(side))
    for name in ("context_length", "vocab_size"):
        value = getattr(scripted_src, name)
        delattr(scripted_src, name)  # a plain int attribute on open_clip's CLIP
        scripted_src.register_buffer(name, torch.tensor(value))
    # scripting costs far more than the weights: compile each architecture (and dtype) once per
    # session and give the compiled module this model's weights
    weights = {**dict(scripted_src.named_buffers()), **scripted_src.state_dict()}  # + attn_mask: scripted keeps it
    key = tuple((name, tuple(t.shape), t.dtype) for name, t in weights.items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if key not in _SCRIPTED:
            _SCRIPTED[key] = torch.jit.script(scripted_src)
        scripted = _SCRIPTED[key]
        scripted.load_state_dict(weights)
        torch.jit.save(scripted, str(path))
    return path


_SCRIPTED: dict[tuple, torch.jit.ScriptModule] = {}


def is_torchscript_archive(path: str | Path) -> bool:
    """Independent check: a zip with a ``code/`` folder and ``constants.pkl`` that torch.jit.load opens."""
    if not zipfile.is_zipfile(path):
        return False
    names = zipfile.ZipFile(path).namelist()
    if not any("/code/" in n for n in names) or not any(n.endswith("constants.pkl") for n in names):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return isinstance(torch.jit.load(str(path), map_location="cpu"), torch.jit.ScriptModule)


def save_state_dict(model: CLIP, path: str | Path, *, open_clip_checkpoint: bool = False) -> Path:
    """``torch.save`` a plain state dict, or an open_clip training checkpoint (``module.``-prefixed)."""
    path = Path(path)
    sd = model.state_dict()
    if open_clip_checkpoint:
        torch.save(
            {"epoch": 3, "name": "tiny", "state_dict": {"module." + k: v for k, v in sd.items()}},
            path,
        )
    else:
        torch.save(sd, path)
    return path


def save_safetensors(model: CLIP, path: str | Path) -> Path:
    """Save the state dict as ``.safetensors``."""
    path = Path(path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
