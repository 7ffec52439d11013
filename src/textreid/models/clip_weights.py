"""CLIP weight files -> state dicts, and the architecture those weights imply. Never downloads.

Accepted files (all read onto the CPU):

- OpenAI's TorchScript archives (``RN50.pt``, ``ViT-B-16.pt``, ...), read with ``torch.jit.load``;
- state dicts saved with ``torch.save`` (open_clip training checkpoints nest them under
  ``"state_dict"``; others use ``"model"``; a ``module.`` / ``_orig_mod.`` prefix from DDP /
  ``torch.compile`` is removed);
- ``.safetensors`` files (e.g. open_clip's ``open_clip_model.safetensors``).

Keys are returned in OpenAI's flat layout (``visual.*``, ``token_embedding.weight``,
``positional_embedding``, ``transformer.*``, ``ln_final.*``, ``text_projection``, ...); the
``text.`` prefix of open_clip's ``CustomTextCLIP`` files is removed. Floating tensors are
returned as float32 (OpenAI stores most weights as float16).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from textreid.models.state_dict import diff_state_dicts, strip_prefix

TEXT_PREFIXES = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)
# non-weight entries of OpenAI's archives and open_clip models; dropped by split_clip_state_dict
_EXTRA_KEYS = (
    "input_resolution",
    "context_length",
    "vocab_size",
    "attn_mask",
    "logit_scale",
    "logit_bias",
)
# the CLIP convention (OpenAI and open_clip): attention heads are 64 channels wide
HEAD_WIDTH = 64


class ClipWeightsError(ValueError):
    """A CLIP weight file that is missing, unreadable or not shaped like a CLIP model."""


def is_torchscript_archive(path: Path) -> bool:
    """True for a ``torch.jit.save`` zip (it has a ``code/`` folder), False for ``torch.save``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(name.split("/")[1:2] == ["code"] for name in names)


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    # safetensors: 8-byte little-endian header length, then a JSON header starting with "{"
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _read_file(path: Path) -> Any:
    """The raw object stored in ``path`` (a state dict or a container of one)."""
    if _is_safetensors(path):
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if is_torchscript_archive(path):
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", FutureWarning
            )  # torch.jit is deprecated; OpenAI ships it
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-torch files
        raise ClipWeightsError(
            f"{path}: cannot read it as a CLIP checkpoint (expected an OpenAI TorchScript archive, "
            f"a torch.save state dict or a .safetensors file): {type(exc).__name__}: {exc}"
        ) from exc


def _preview(keys: list[str], n: int = 6) -> str:
    shown = ", ".join(keys[:n])
    return f"{shown}, ... ({len(keys)} keys)" if len(keys) > n else shown or "(no keys)"


# Within ``reads_shared()``: resolved path -> the state dict read from it (see there).
_SHARED_READS: contextvars.ContextVar[dict[Path, dict[str, Any]] | None] = contextvars.ContextVar(
    "textreid_shared_weight_reads", default=None)


@contextlib.contextmanager
def reads_shared() -> Iterator[None]:
    """Inside this block each weight file is read from disk once: building a model reads MODEL.PRETRAINED
    for the image tower, the text tower and (IRRA/RDE files) the heads, and an OpenAI TorchScript archive
    or a full recipe checkpoint takes seconds to load. The state dicts are dropped when the block ends."""
    token = _SHARED_READS.set({})
    try:
        yield
    finally:
        _SHARED_READS.reset(token)


def read_weight_file(path: Path) -> dict[str, Any]:
    """The state dict stored in a weight file: unwrapped from a ``"state_dict"`` / ``"model"`` container,
    a ``module.`` / ``_orig_mod.`` wrapper prefix removed. A new dict each call (its tensors are shared
    with earlier calls inside ``reads_shared()``)."""
    shared = _SHARED_READS.get()
    key = path.resolve()
    if shared is not None and key in shared:
        return dict(shared[key])
    sd = _read_state_dict(path)
    if shared is not None:
        shared[key] = sd
    return dict(sd)


def _read_state_dict(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ClipWeightsError(
            f"CLIP weight file not found: {path} (give the local path of an OpenAI CLIP .pt file, "
            "an open_clip state dict, a .safetensors file or an IRRA/RDE checkpoint; nothing is downloaded)"
        )
    obj = _read_file(path)
    for container_key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(container_key), dict):
            obj = obj[container_key]
            break
    if not isinstance(obj, dict):
        raise ClipWeightsError(
            f"{path}: expected a state dict (str -> tensor), found {type(obj).__name__}"
        )
    sd: dict[str, Any] = {str(k): v for k, v in obj.items()}
    for prefix in ("module.", "_orig_mod."):
        sd = strip_prefix(sd, prefix)
    return sd


def load_clip_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a local CLIP weight file (OpenAI .pt, torch.save state dict, .safetensors, or the CLIP part of
    an IRRA/RDE checkpoint, ``models/recipe_weights.py``) to a flat state dict."""
    path = Path(path).expanduser()
    sd = read_weight_file(path)
    from textreid.models.recipe_weights import is_recipe_layout, recipe_towers

    if is_recipe_layout(sd):
        sd = recipe_towers(sd, source=str(path))
    sd = {
        (k[5:] if k.startswith("text.") else k): v for k, v in sd.items()
    }  # CustomTextCLIP layout

    has_visual = any(k.startswith("visual.") for k in sd)
    has_text = "token_embedding.weight" in sd and "text_projection" in sd
    if not (has_visual and has_text):
        missing = [] if has_visual else ["visual.* (image tower)"]
        missing += [] if has_text else ["token_embedding.weight / text_projection (text tower)"]
        raise ClipWeightsError(
            f"{path}: not a CLIP checkpoint: no {' and no '.join(missing)} keys "
            f"(nor IRRA/RDE's base_model.*); the first key is {min(sd, default='(none)')!r}, "
            f"found {_preview(sorted(sd))}"
        )
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            continue  # e.g. scalars stored beside the weights
        out[k] = v.float() if v.is_floating_point() else v
    return out


def split_clip_state_dict(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(visual, text)``: the image tower's keys without ``visual.``, the text tower's keys as they are."""
    visual = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
    text = {k: v for k, v in sd.items() if k.startswith(TEXT_PREFIXES) and k not in _EXTRA_KEYS}
    return visual, text


def _count_blocks(sd: dict[str, Tensor], prefix: str) -> int:
    """Number of distinct ``<prefix><i>.`` indices among the keys."""
    return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})


def _grid(tokens: int, stride: int) -> tuple[tuple[int, int] | None, int | None]:
    """``(grid, image side)`` of a square grid of ``tokens`` cells; ``(None, None)`` when it is not square
    (a file trained at a non-square size, e.g. IRRA's 384x128: its grid cannot be read from the shape)."""
    side = math.isqrt(tokens)
    if side * side != tokens:
        return None, None
    return (side, side), side * stride


def clip_architecture(sd: dict[str, Tensor]) -> dict[str, Any]:
    """Sizes of the CLIP model a (flat, OpenAI-layout) state dict holds, inferred from its shapes.

    Head counts cannot be read from shapes; like open_clip's ``build_model_from_openai_state_dict``
    they follow CLIP's 64-channel convention (at least 1). ``grid`` is the positional-embedding
    grid ``(h, w)`` when it is square (as in every released CLIP model), else None (``grid_tokens``
    cells of a grid whose sides the shapes do not tell, e.g. an IRRA checkpoint trained at 384x128).
    """
    arch: dict[str, Any] = {}
    if "visual.proj" in sd:  # ViT
        width, _, patch, _ = sd["visual.conv1.weight"].shape
        pos = sd["visual.positional_embedding"]
        grid, image_size = _grid(pos.shape[0] - 1, patch)
        arch.update(
            vision="vit",
            vision_width=width,
            vision_layers=_count_blocks(sd, "visual.transformer.resblocks."),
            vision_heads=max(1, width // HEAD_WIDTH),
            patch_size=patch,
            grid=grid,
            grid_tokens=pos.shape[0] - 1,
            image_size=image_size,
            output_dim=sd["visual.proj"].shape[1],
        )
    elif "visual.attnpool.positional_embedding" in sd:  # modified ResNet
        width = sd["visual.layer1.0.conv1.weight"].shape[0]
        pos = sd["visual.attnpool.positional_embedding"]
        grid, image_size = _grid(pos.shape[0] - 1, 32)
        arch.update(
            vision="resnet",
            vision_width=width,
            vision_layers=[_count_blocks(sd, f"visual.layer{i}.") for i in (1, 2, 3, 4)],
            vision_heads=max(1, width * 32 // HEAD_WIDTH),
            patch_size=0,
            grid=grid,
            grid_tokens=pos.shape[0] - 1,
            image_size=image_size,
            output_dim=sd["visual.attnpool.c_proj.weight"].shape[0],
        )
    else:
        visual_keys = sorted(k for k in sd if k.startswith("visual."))
        raise ClipWeightsError(
            "unknown CLIP image tower: expected visual.proj (ViT) or visual.attnpool.positional_embedding "
            f"(modified ResNet); found {_preview(visual_keys)}"
        )
    text_width = sd["ln_final.weight"].shape[0]
    arch.update(
        embed_dim=sd["text_projection"].shape[1],
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        text_width=text_width,
        text_layers=_count_blocks(sd, "transformer.resblocks."),
        text_heads=max(1, text_width // HEAD_WIDTH),
    )
    return arch


def describe_architecture(arch: dict[str, Any]) -> str:
    """One line naming the image tower of ``clip_architecture`` output, for error messages."""
    size = f"{arch['image_size']}px" if arch["grid"] else f"a non-square grid of {arch['grid_tokens']} cells"
    if arch["vision"] == "vit":
        return (
            f"CLIP ViT (patch {arch['patch_size']}, width {arch['vision_width']}, "
            f"{arch['vision_layers']} layers, output {arch['output_dim']}, {size})"
        )
    return (
        f"CLIP modified ResNet (layers {arch['vision_layers']}, width {arch['vision_width']}, "
        f"output {arch['output_dim']}, {size})"
    )


def check_state_dict(
    module: torch.nn.Module, sd: dict[str, Tensor], *, source: str, hint: str = ""
) -> None:
    """Raise ClipWeightsError listing missing/unexpected keys and shape mismatches; else return."""
    diff = diff_state_dicts(module.state_dict(), sd)
    if diff.ok:
        return
    missing, unexpected, shapes = diff.missing, diff.unexpected, diff.wrong_shape
    parts = []
    if shapes:
        parts.append(
            f"{len(shapes)} shape mismatches: "
            + "; ".join(shapes[:5])
            + (" ..." if len(shapes) > 5 else "")
        )
    if missing:
        parts.append(f"missing in the file: {_preview(missing)}")
    if unexpected:
        parts.append(f"not in the model: {_preview(unexpected)}")
    raise ClipWeightsError(
        f"{source}: weights do not fit {type(module).__name__}: " + " | ".join(parts) + hint
    )
