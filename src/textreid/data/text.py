"""Captions → tensors: word ids for the BiGRU, CLIP BPE tokens for CLIP's text transformer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from textreid.data.vocab import Vocabulary

TOKENIZERS = ("words", "clip_bpe")


class WordTokenizer:
    """Captions or word-id lists → ``{"word_ids": [B, L], "lengths": [B]}`` (right-padded with 0).

    ``L`` is the longest caption of the batch after truncation to ``max_length``. An empty
    caption becomes one ``<unk>`` (or ``<pad>``/id 0 when the vocabulary has no ``<unk>``) of
    length 1, because packed GRUs reject length 0. ``truncated`` counts the captions cut so far.
    """

    def __init__(self, vocab: Vocabulary, max_length: int = 100) -> None:
        if max_length < 1:
            raise ValueError(f"WordTokenizer: max_length should be >= 1, got {max_length}")
        self.vocab = vocab
        self.max_length = max_length
        self.truncated = 0
        fill = vocab.unk_id if vocab.unk_id is not None else vocab.pad_id
        self.empty_id = 0 if fill is None else fill

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise raw captions with the vocabulary."""
        if isinstance(texts, str):
            raise TypeError("WordTokenizer expects a list of captions, got one str")
        return self.from_ids([self.vocab.encode(t) for t in texts])

    def from_ids(self, sequences: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Pad pre-tokenised ids (e.g. the authors' ``onehot``), truncating to ``max_length``."""
        rows = []
        for ids in sequences:
            if len(ids) > self.max_length:
                self.truncated += 1
            rows.append(list(ids[: self.max_length]) or [self.empty_id])
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)  # [B]
        width = int(lengths.max()) if rows else 1
        word_ids = torch.zeros(len(rows), width, dtype=torch.long)  # [B, L]
        for i, r in enumerate(rows):
            word_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return {"word_ids": word_ids, "lengths": lengths}


class ClipTokenizer:
    """Captions → ``{"tokens": [B, context_length]}`` with CLIP's BPE (open_clip's bundled file).

    Over-long captions keep their first ``context_length - 1`` tokens followed by the
    end-of-text token, because CLIP's text tower pools at the EOT (the largest token id).
    ``truncated`` counts the captions cut so far. Never downloads anything.
    """

    def __init__(self, context_length: int = 77) -> None:
        if context_length < 2:
            raise ValueError(f"ClipTokenizer: context_length should be >= 2, got {context_length}")
        self.context_length = context_length
        self.truncated = 0
        self._bpe: Any = None

    @property
    def bpe(self) -> Any:
        """open_clip's SimpleTokenizer, created on first use (also after unpickling in a worker)."""
        if self._bpe is None:
            from open_clip.tokenizer import SimpleTokenizer

            self._bpe = SimpleTokenizer(context_length=self.context_length)
        return self._bpe

    @property
    def sot_id(self) -> int:
        return int(self.bpe.sot_token_id)

    @property
    def eot_id(self) -> int:
        return int(self.bpe.eot_token_id)

    def __getstate__(self) -> dict[str, Any]:
        # the BPE tables are large; a DataLoader worker rebuilds them from the package file
        return {**self.__dict__, "_bpe": None}

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise raw captions into fixed-length token rows, zero-padded."""
        if isinstance(texts, str):
            raise TypeError("ClipTokenizer expects a list of captions, got one str")
        bpe = self.bpe
        tokens = torch.zeros(len(texts), self.context_length, dtype=torch.long)  # [B, C]
        for i, text in enumerate(texts):
            ids = [bpe.sot_token_id, *bpe.encode(text), bpe.eot_token_id]
            if len(ids) > self.context_length:
                self.truncated += 1
                ids = [*ids[: self.context_length - 1], bpe.eot_token_id]
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return {"tokens": tokens}


def build_tokenizer(
    kind: str,
    *,
    vocab: Vocabulary | None = None,
    max_length: int = 100,
    context_length: int = 77,
) -> WordTokenizer | ClipTokenizer:
    """``"words"`` (needs ``vocab``) → WordTokenizer; ``"clip_bpe"`` → ClipTokenizer."""
    if kind == "words":
        if vocab is None:
            raise ValueError("build_tokenizer('words') needs a vocabulary (vocab=...)")
        return WordTokenizer(vocab, max_length=max_length)
    if kind == "clip_bpe":
        return ClipTokenizer(context_length=context_length)
    raise ValueError(f"unknown tokenizer kind {kind!r}; valid kinds: {', '.join(TOKENIZERS)}")
