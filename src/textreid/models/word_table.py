"""The CLIP-derived per-word vector table (the authors' ``clip_vocab_vit.npy``), built from a local CLIP file.

Recipe (SPEC; the authors' issues #2 and #6, their script was not published): every vocabulary
word is fed ALONE to a CLIP text encoder as ``<start_of_text> word <end_of_text>`` and the
projected end-of-text feature is kept (issue #6: "for ViT-based CLIP, after projection, the output
dimension is 512"). Neither the SPEC nor the issues mention a normalisation, so rows are kept
un-normalised by default; ``normalize=True`` L2-normalises them.
Special words written in angle brackets (``<pad>``, ``<unk>``, ``<start>``, ...) and the empty
string get zero vectors: they are not words CLIP has seen, and ``<pad>`` must not carry content.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from open_clip.tokenizer import SimpleTokenizer
from tqdm import tqdm

from textreid.fileio import atomic_open

from .text_transformer import ClipTextTower

_SPECIAL = re.compile(r"^<[^<>\s]+>$")


def is_special_word(word: str) -> bool:
    """True for vocabulary entries that get a zero vector: ``<pad>``-style markers and ``""``."""
    return not word.strip() or bool(_SPECIAL.match(word.strip()))


def word_tokens(
    words: Sequence[str], tokenizer: SimpleTokenizer, context_length: int
) -> torch.Tensor:
    """``[N, L]`` token ids ``<sot> bpe(word) <eot> 0...`` with ``L`` the longest row (<= context_length)."""
    rows = []
    for word in words:
        ids = [tokenizer.sot_token_id, *tokenizer.encode(word), tokenizer.eot_token_id]
        if len(ids) > context_length:  # as CLIP's tokenizer: cut, and keep <eot> last
            ids = ids[:context_length]
            ids[-1] = tokenizer.eot_token_id
        rows.append(ids)
    length = max((len(r) for r in rows), default=2)
    out = torch.zeros(len(rows), length, dtype=torch.long)  # [N, L], 0 = padding
    for i, ids in enumerate(rows):
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


@torch.no_grad()
def build_word_table(
    words: list[str],
    clip_checkpoint: str | Path,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = True,
    normalize: bool = False,
) -> np.ndarray:
    """``[V, D]`` float32: row i is CLIP's projected text feature of ``words[i]`` alone (D = CLIP's embed dim)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tower = ClipTextTower(pretrained=clip_checkpoint).to(device).eval()
    tokenizer = SimpleTokenizer()
    table = np.zeros((len(words), tower.out_dim), dtype=np.float32)  # [V, D]
    todo = [i for i, w in enumerate(words) if not is_special_word(w)]
    with tqdm(total=len(todo), desc="CLIP word vectors", unit="word", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            index = todo[start : start + batch_size]
            tokens = word_tokens(
                [words[i] for i in index], tokenizer, tower.context_length
            )  # [n, L]
            feats = tower({"tokens": tokens.to(device)})  # [n, D]
            if normalize:
                feats = torch.nn.functional.normalize(feats, dim=-1)
            table[index] = feats.float().cpu().numpy()
            bar.update(len(index))
    return table


def save_word_table(path: str | Path, table: np.ndarray) -> Path:
    """Write ``table`` as ``.npy`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        np.save(f, np.asarray(table, dtype=np.float32))
    return path
