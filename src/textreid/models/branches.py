"""Training branches of the recipes: modules that read the towers' token outputs (``models/tokens.py``).

A branch is called as ``branch(image_tokens, text_tokens, batch, model) -> {name: tensor}`` during
training; ``needs_tokens`` says it reads the token outputs, ``retrieval_weight > 0`` that it also adds
an embedding to the test-time one (``embed_image``/``embed_text``), ``prepare(batch)`` (optional)
changes the batch before the towers run.

- ``CrossModalMLM``: IRRA's implicit relation reasoning. Masked caption tokens attend to the image
  tokens through a small cross-modal transformer and predict the masked words; used at training
  time only, so retrieval stays a dual encoder.
- ``TokenSelection``: RDE's token-selection embedding. The tokens the class / end-of-text token
  attends to most in the last block, L2-normalised, through a linear layer plus a 2-layer MLP,
  max-pooled.
- ``TextPerturbation``: RDE's caption perturbation (20% of word tokens: 60% masked, 20% replaced
  by a random token, 20% deleted).

CLIP's BPE vocabulary as IRRA/RDE use it: 0 = padding, 1..V-4 words, V-3 = ``<|mask|>``, V-2 / V-1 =
start / end of text.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from open_clip.transformer import LayerNorm, QuickGELU, Transformer
from torch import Tensor, nn

from textreid.models.tokens import tower_tokens


def mask_for_mlm(tokens: Tensor, *, vocab_size: int, prob: float = 0.15) -> tuple[Tensor, Tensor]:
    """BERT masking of CLIP token ids ``[B, L]`` -> (masked ids, labels; 0 where nothing is predicted).

    Each word token is picked with ``prob``; a picked token becomes ``<|mask|>`` (80%), a random word
    (10%) or stays (10%), and its label is the original id. A caption with no pick gets its first word
    masked (IRRA's rule). Uses torch's global RNG, so seeded runs and resumes repeat it.
    """
    mask_id = vocab_size - 3
    words = (tokens > 0) & (tokens < mask_id)  # [B, L]
    u = torch.rand(tokens.shape, device=tokens.device)  # [B, L]
    picked = words & (u < prob)
    none = ~picked.any(dim=1)  # [B]
    picked[none, 1] = True  # position 1 is the first word after <|startoftext|>
    r = u / prob  # uniform in [0, 1) on picked positions
    random_words = torch.randint(1, mask_id, tokens.shape, device=tokens.device)
    masked = torch.where(picked & (r < 0.8), torch.full_like(tokens, mask_id), tokens)
    masked = torch.where(picked & (r >= 0.8) & (r < 0.9), random_words, masked)
    masked[none, 1] = mask_id
    labels = torch.where(picked, tokens, torch.zeros_like(tokens))
    return masked, labels


class CrossModalMLM(nn.Module):
    """IRRA's cross-modal transformer + masked-token head. Outputs ``mlm_logits [M, V]``, ``mlm_labels [M]``
    and ``mlm_rows [M]`` (batch row of each predicted token) for the M masked positions of the batch."""

    needs_tokens = True
    retrieval_weight = 0.0

    def __init__(self, *, width: int, depth: int = 4, vocab_size: int = 49408, mask_prob: float = 0.15) -> None:
        super().__init__()
        if width % 64:
            raise ValueError(f"the cross-modal transformer uses CLIP's 64-channel heads: width {width} is not a multiple of 64")
        heads = width // 64
        self.vocab_size, self.mask_prob = vocab_size, mask_prob
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_modal_transformer = Transformer(width, depth, heads, act_layer=QuickGELU, norm_layer=LayerNorm)
        self.ln_pre_t, self.ln_pre_i, self.ln_post = LayerNorm(width), LayerNorm(width), LayerNorm(width)
        self.mlm_head = nn.Sequential(OrderedDict([
            ("dense", nn.Linear(width, width)), ("gelu", QuickGELU()), ("ln", LayerNorm(width)),
            ("fc", nn.Linear(width, vocab_size))]))
        # IRRA's initialisation (CLIP's transformer rule)
        attn_std = width**-0.5
        proj_std = attn_std * (2 * depth) ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.cross_modal_transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.cross_attn.in_proj_weight, std=attn_std)
        nn.init.normal_(self.cross_attn.out_proj.weight, std=proj_std)
        nn.init.normal_(self.mlm_head.dense.weight, std=fc_std)
        nn.init.normal_(self.mlm_head.fc.weight, std=proj_std)

    def cross_former(self, text_tokens: Tensor, image_tokens: Tensor) -> Tensor:
        """Text tokens ``[B, L, D]`` attend to image tokens ``[B, N, D]`` -> ``[B, L, D]``."""
        img = self.ln_pre_i(image_tokens)
        x = self.cross_attn(self.ln_pre_t(text_tokens), img, img, need_weights=False)[0]
        return self.ln_post(self.cross_modal_transformer(x))

    def forward(self, v_tok: dict, t_tok: dict, batch: dict, model: nn.Module) -> dict[str, Tensor]:
        masked, labels = mask_for_mlm(batch["tokens"], vocab_size=self.vocab_size, prob=self.mask_prob)
        text = tower_tokens(model.textual, {"tokens": masked})["tokens"]  # [B, L, D]
        x = self.cross_former(text, v_tok["tokens"])  # [B, L, D]
        rows, cols = torch.nonzero(labels, as_tuple=True)  # [M]
        return {"mlm_logits": self.mlm_head(x[rows, cols]), "mlm_labels": labels[rows, cols], "mlm_rows": rows}


class _SelectionMLP(nn.Module):
    """Linear + BatchNorm1d + ReLU, then linear (RDE's 2-layer MLP over ``[B, N, D]`` tokens)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(in_dim, hidden), nn.Linear(hidden, out_dim)])
        # RDE also creates a BatchNorm after the last layer but never applies it; left out here, since
        # a parameter without gradient stops DistributedDataParallel
        self.bns = nn.ModuleList([nn.BatchNorm1d(hidden)])

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        y = F.relu(self.bns[0](self.layers[0](x.reshape(b * n, d))))
        return self.layers[1](y).view(b, n, -1)


class _SelectionEmbedding(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.mlp = _SelectionMLP(in_dim, out_dim // 2, out_dim)

    def forward(self, tokens: Tensor, valid: Tensor | None = None) -> Tensor:
        """Selected tokens ``[B, k, D]`` -> ``[B, out_dim]``: linear + MLP, max over the valid tokens."""
        tokens = F.normalize(tokens, dim=-1, eps=1e-8)
        x = self.mlp(tokens) + self.linear(tokens)  # [B, k, out]
        if valid is not None:
            x = x.masked_fill(~valid[..., None], float("-inf"))
        return x.max(dim=1).values


class TokenSelection(nn.Module):
    """RDE's token-selection embedding branch for both modalities. Outputs ``image_tse``/``text_tse``."""

    needs_tokens = True

    def __init__(self, *, width: int, out_dim: int = 1024, ratio: float = 0.3, retrieval_weight: float = 0.5) -> None:
        super().__init__()
        if not 0 < ratio <= 1:
            raise ValueError(f"MODEL.RDE.SELECT_RATIO must be in (0, 1], got {ratio}")
        self.ratio, self.out_dim, self.retrieval_weight = ratio, out_dim, retrieval_weight
        self.visual_layer = _SelectionEmbedding(width, out_dim)
        self.textual_layer = _SelectionEmbedding(width, out_dim)

    def embed_image(self, feats: dict) -> Tensor:
        tokens, attn = feats["tokens"], feats["attention"].clone()  # [B, N, D], [B, N, N]
        k = max(1, int((attn.shape[1] - 1) * self.ratio))
        attn[:, :, 0] = -1  # never select the class token itself
        top = attn[:, 0].topk(k, dim=-1).indices  # [B, k]
        return self.visual_layer(tokens.gather(1, top[..., None].expand(-1, -1, tokens.shape[2])))

    def embed_text(self, feats: dict, text: dict) -> Tensor:
        ids = text["tokens"]  # [B, L]
        tokens, attn = feats["tokens"], feats["attention"].clone()  # [B, L, D], [B, L, L]
        b = torch.arange(ids.shape[0], device=ids.device)
        eot = ids.argmax(dim=-1)  # [B]
        k = max(1, int((attn.shape[1] - 2) * self.ratio))
        attn[b, :, eot] = -1  # neither end- nor start-of-text is selected
        attn[:, :, 0] = -1
        scores = attn[b, eot] * (ids != 0)  # [B, L]: the EOT token's attention over real tokens
        top = scores.topk(k, dim=-1).indices  # [B, k]
        words = (ids != 0).sum(dim=1) - 2  # [B]
        valid = torch.arange(k, device=ids.device)[None, :] < words.clamp(min=1, max=k)[:, None]  # [B, k]
        return self.textual_layer(tokens.gather(1, top[..., None].expand(-1, -1, tokens.shape[2])), valid)

    def forward(self, v_tok: dict, t_tok: dict, batch: dict, model: nn.Module) -> dict[str, Tensor]:
        return {"image_tse": self.embed_image(v_tok), "text_tse": self.embed_text(t_tok, batch)}


class TextPerturbation(nn.Module):
    """RDE's caption perturbation on CLIP token ids, in ``prepare`` (training batches only)."""

    needs_tokens = False
    retrieval_weight = 0.0

    def __init__(self, *, vocab_size: int = 49408, prob: float = 0.2) -> None:
        super().__init__()
        self.vocab_size, self.prob = vocab_size, prob

    def prepare(self, batch: dict) -> dict:
        tokens = batch["tokens"]  # [B, L]
        mask_id = self.vocab_size - 3
        words = (tokens > 0) & (tokens < mask_id)
        u = torch.rand(tokens.shape, device=tokens.device) / self.prob  # < 1 on picked tokens
        picked = words & (u < 1)
        random_words = torch.randint(1, mask_id, tokens.shape, device=tokens.device)
        out = torch.where(picked & (u < 0.6), torch.full_like(tokens, mask_id), tokens)
        out = torch.where(picked & (u >= 0.6) & (u < 0.8), random_words, out)
        drop = picked & (u >= 0.8)
        # delete: stable-sort the kept tokens to the front, zero-pad the end
        order = torch.sort(drop.to(torch.int8), dim=1, stable=True).indices  # kept first, original order
        out = out.gather(1, order).masked_fill(drop.gather(1, order), 0)
        return {**batch, "tokens": out}

    def forward(self, v_tok: dict, t_tok: dict, batch: dict, model: nn.Module) -> dict[str, Tensor]:
        return {}
