"""The paper's text tower: per-word vectors -> 1-layer bidirectional GRU -> max over time."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class BiGRUTower(nn.Module):
    """Bidirectional GRU over word vectors; ``forward`` returns ``[B, 2 * hidden_size]``.

    Word vectors come either from a learned ``nn.Embedding`` (``word_table=None``, id 0 is
    padding) or from a frozen per-word table ``[V, E_t]`` (the paper: CLIP-derived, 512-d),
    followed by a linear layer only when ``E_t != embed_size``. The table is a persistent
    buffer so our checkpoints carry it; the authors' files do not (they read it from the
    dataset's ``clip_vocab_vit.npy``).

    Parameter names follow the authors' files (``embed.*``, ``gru.weight_ih_l0``, ...), so
    their text-tower weights load without renaming.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_size: int = 512,
        hidden_size: int = 512,
        num_layers: int = 1,
        dropout: float = 0.0,
        word_table: torch.Tensor | np.ndarray | None = None,
        exact_max: bool = False,
        batch_max: bool = False,
    ) -> None:
        super().__init__()
        self.exact_max = exact_max
        self.batch_max = batch_max  # the authors' exact, batch-dependent max (REPRODUCE authors)
        self.embed: nn.Module | None
        if word_table is None:
            if vocab_size < 1:
                raise ValueError(f"BiGRUTower: vocab_size must be >= 1 for a learned embedding, got {vocab_size}")
            self.embed = nn.Embedding(vocab_size, embed_size, padding_idx=0)
            self.register_buffer("word_table", None)
        else:
            table = torch.as_tensor(word_table, dtype=torch.float32)
            if table.dim() != 2:
                raise ValueError(f"BiGRUTower: word_table must be [V, E], got shape {tuple(table.shape)}")
            self.register_buffer("word_table", table.clone(), persistent=True)  # [V, E_t]
            width = table.shape[1]
            self.embed = nn.Linear(width, embed_size) if width != embed_size else None
        self.gru = nn.GRU(
            embed_size,
            hidden_size,
            num_layers=num_layers,
            # nn.GRU applies dropout between layers only (and warns when there is one layer)
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=True,
            bias=False,
            batch_first=True,
        )
        self.out_dim = 2 * hidden_size

    @property
    def num_words(self) -> int:
        """Number of word ids the tower accepts."""
        if self.word_table is not None:
            return self.word_table.shape[0]
        return self.embed.num_embeddings  # type: ignore[union-attr]

    def word_vectors(self, word_ids: torch.Tensor) -> torch.Tensor:
        """GRU inputs for ``word_ids [B, L]`` -> ``[B, L, embed_size]``."""
        if self.word_table is None:
            return self.embed(word_ids)  # [B, L, E]
        x = self.word_table[word_ids]  # [B, L, E_t]
        return self.embed(x) if self.embed is not None else x  # [B, L, E]

    def forward(self, text: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{"word_ids" [B, L], "lengths" [B]}`` -> ``[B, 2 * hidden_size]``."""
        try:
            word_ids, lengths = text["word_ids"], text["lengths"]
        except KeyError as exc:
            raise KeyError(
                f"BiGRUTower expects a text dict with 'word_ids' and 'lengths' (WordTokenizer output); "
                f"got keys {sorted(text)}"
            ) from exc
        lengths_cpu = lengths.detach().to("cpu", torch.long).view(-1)  # [B]
        max_len = word_ids.shape[1]
        if lengths_cpu.numel() != word_ids.shape[0]:
            raise ValueError(f"BiGRUTower: {word_ids.shape[0]} captions but {lengths_cpu.numel()} lengths")
        bad = (lengths_cpu < 1) | (lengths_cpu > max_len)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(
                f"BiGRUTower: caption {i} has length {int(lengths_cpu[i])}, expected 1..{max_len} "
                f"(the padded width of word_ids); empty captions must be filtered or given one token"
            )
        x = self.word_vectors(word_ids)  # [B, L, E]
        packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        if self.batch_max:
            # exactly the authors': max over the output zero-padded to the batch's longest caption,
            # so a caption's feature depends on the batch it is in
            h, _ = pad_packed_sequence(out, batch_first=True, padding_value=0.0)  # [B, T, 2H]
            return h.max(dim=1).values
        # padding with -inf makes the max run over valid steps only
        h, _ = pad_packed_sequence(out, batch_first=True, padding_value=float("-inf"))  # [B, T, 2H]
        feat = h.max(dim=1).values  # [B, 2H]
        if not self.exact_max:
            # The authors take the max over the ZERO-padded unpacked output, so every caption
            # shorter than the longest one of its batch gets max(0, max_t h_t) per feature (the
            # padding zeros win over negative values). Their weights were trained that way. We
            # apply max(0, .) to every caption so that a caption's feature does not depend on
            # which other captions share its batch; exact_max=True gives the plain max.
            feat = feat.clamp_min(0.0)
        return feat
