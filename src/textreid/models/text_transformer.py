"""CLIP's text transformer as a fine-tunable text tower (the option later work such as IRRA uses)."""

from __future__ import annotations

from pathlib import Path

import torch
from open_clip.transformer import LayerNorm, QuickGELU, TextTransformer
from torch import Tensor, nn

from .clip_weights import (
    check_state_dict,
    clip_architecture,
    load_clip_state_dict,
    split_clip_state_dict,
)

# sizes of OpenAI's ViT-B text encoder, used when neither a file nor a size is given
_DEFAULTS = {
    "context_length": 77,
    "vocab_size": 49408,
    "width": 512,
    "layers": 12,
    "heads": 8,
    "output_dim": 512,
}


class ClipTextTower(TextTransformer):
    """Token embedding + positional embedding -> causal transformer -> ln_final -> EOT token @ text_projection.

    ``forward({"tokens": LongTensor [B, L]}) -> [B, out_dim]`` (un-normalised). The pooled token
    is the end-of-text token, found as the largest token id (CLIP's rule: EOT has the highest id
    of the BPE vocabulary). ``L`` may be shorter than ``context_length``: attention is causal, so
    trailing padding never changes the EOT feature.

    Sizes left at 0 are read from ``pretrained`` (a local CLIP file) or, without one, are those of
    OpenAI's ViT-B text encoder. Heads cannot be read from a file: CLIP's 64-channel rule applies.
    A ``context_length`` shorter than the file's keeps the first positional embeddings (exact
    under causal attention). State-dict keys are CLIP's text keys (``token_embedding.weight``,
    ``positional_embedding``, ``transformer.resblocks.*``, ``ln_final.*``, ``text_projection``).
    """

    def __init__(
        self,
        *,
        context_length: int = 0,
        vocab_size: int = 0,
        width: int = 0,
        layers: int = 0,
        heads: int = 0,
        output_dim: int = 0,
        pretrained: str | Path = "",
        quick_gelu: bool = True,
    ) -> None:
        requested = {
            "context_length": context_length,
            "vocab_size": vocab_size,
            "width": width,
            "layers": layers,
            "heads": heads,
            "output_dim": output_dim,
        }
        text_sd: dict[str, Tensor] | None = None
        if pretrained:
            sd = load_clip_state_dict(pretrained)
            arch = clip_architecture(sd)
            _, text_sd = split_clip_state_dict(sd)
            source = {
                "context_length": arch["context_length"],
                "vocab_size": arch["vocab_size"],
                "width": arch["text_width"],
                "layers": arch["text_layers"],
                "heads": arch["text_heads"],
                "output_dim": arch["embed_dim"],
            }
            if 0 < context_length <= source["context_length"]:
                pos = text_sd["positional_embedding"]  # [L_file, width]
                text_sd["positional_embedding"] = pos[:context_length].clone()
                source["context_length"] = context_length
        else:
            source = dict(_DEFAULTS)
        sizes = {k: v or source[k] for k, v in requested.items()}
        if sizes["width"] % sizes["heads"]:
            raise ValueError(f"text heads={sizes['heads']} must divide the width {sizes['width']}")
        super().__init__(
            context_length=sizes["context_length"],
            vocab_size=sizes["vocab_size"],
            width=sizes["width"],
            heads=sizes["heads"],
            layers=sizes["layers"],
            output_dim=sizes["output_dim"],
            # OpenAI's CLIP was trained with QuickGELU; open_clip's own models use nn.GELU
            act_layer=QuickGELU if quick_gelu else nn.GELU,
            norm_layer=LayerNorm,
        )
        self.out_dim = sizes["output_dim"]
        if text_sd is not None:
            check_state_dict(self, text_sd, source=f"{pretrained} (text tower)")
            self.load_state_dict(text_sd, strict=True)

    def forward(self, text: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        """Projected end-of-text features ``[B, out_dim]`` of ``text["tokens"]`` ``[B, L]``."""
        tokens = text["tokens"]  # [B, L]
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(
                f"ClipTextTower: got {length} tokens per caption, the tower takes at most {self.context_length}"
            )
        x = self.token_embedding(tokens)  # [B, L, width]
        x = x + self.positional_embedding[:length].to(x.dtype)
        mask = self.attn_mask[:length, :length]  # [L, L] causal, -inf above the diagonal
        x = self.transformer(x, attn_mask=mask)  # [B, L, width]
        x = self.ln_final(x)
        eot = tokens.argmax(dim=-1)  # [B]
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]  # [B, width]
        return pooled @ self.text_projection  # [B, out_dim]
