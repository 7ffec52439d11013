"""Token-level outputs of the CLIP towers: every token projected to the joint width, and the last
block's attention map. IRRA's cross-modal transformer reads the tokens; RDE's token selection reads
the attention of the class / end-of-text token.

Both towers are open_clip modules (``ClipViT`` and ``ClipTextTower``); this walks their blocks so
that the last one can return its head-averaged attention weights, which open_clip's forward drops.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _run_blocks(transformer: nn.Module, x: Tensor, attn_mask: Tensor | None, attention: bool) -> tuple[Tensor, Tensor | None]:
    """open_clip ``Transformer`` on ``x [B, N, W]``; with ``attention`` also the last block's ``[B, N, N]``."""
    batch_first = getattr(transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    blocks = list(transformer.resblocks)
    last = blocks.pop() if attention else None
    for block in blocks:
        x = block(x, attn_mask=attn_mask)
    weights = None
    if last is not None:
        y = last.ln_1(x)
        mask = attn_mask.to(y.dtype) if attn_mask is not None else None
        a, weights = last.attn(y, y, y, need_weights=True, attn_mask=mask, average_attn_weights=True)
        x = x + last.ls_1(a)
        x = x + last.ls_2(last.mlp(last.ln_2(x)))
    if not batch_first:
        x = x.transpose(0, 1)
    return x, weights


def _vit_tokens(tower: nn.Module, images: Tensor, attention: bool) -> dict[str, Tensor | None]:
    x = tower._embeds(images)  # [B, 1 + N, W]: class token first, ln_pre applied
    x, weights = _run_blocks(tower.transformer, x, None, attention)
    x = tower.ln_post(x)  # every token, as IRRA/RDE's CLIP does
    tokens = x @ tower.proj if tower.proj is not None else x  # [B, 1 + N, D]
    return {"pooled": tokens[:, 0], "tokens": tokens, "attention": weights}


def _text_tokens(tower: nn.Module, text: dict[str, Tensor], attention: bool) -> dict[str, Tensor | None]:
    ids = text["tokens"]  # [B, L]
    length = ids.shape[1]
    x = tower.token_embedding(ids) + tower.positional_embedding[:length]  # [B, L, W]
    x, weights = _run_blocks(tower.transformer, x, tower.attn_mask[:length, :length], attention)
    tokens = tower.ln_final(x) @ tower.text_projection  # [B, L, D]
    eot = ids.argmax(dim=-1)  # [B]
    return {"pooled": tokens[torch.arange(ids.shape[0], device=ids.device), eot], "tokens": tokens,
            "attention": weights}


def tower_tokens(tower: nn.Module, inputs: Tensor | dict[str, Tensor], *, attention: bool = False) -> dict[str, Tensor | None]:
    """``{"pooled": [B, D], "tokens": [B, N, D], "attention": [B, N, N] | None}`` of a CLIP ViT or text tower.

    ``pooled`` is the class token (images) or end-of-text token (text) of ``tokens``, i.e. the
    tower's usual output. Other towers (BiGRU, ResNets) have no token outputs: TypeError.
    """
    if hasattr(tower, "class_embedding") and hasattr(tower, "_embeds"):
        return _vit_tokens(tower, inputs, attention)  # type: ignore[arg-type]
    if hasattr(tower, "token_embedding") and hasattr(tower, "text_projection"):
        return _text_tokens(tower, inputs, attention)  # type: ignore[arg-type]
    raise TypeError(f"{type(tower).__name__} has no token outputs; token branches (IRRA's MLM, RDE's token "
                    f"selection) need the CLIP ViT image tower (clip_vit_*) and the CLIP text tower (clip_transformer)")
