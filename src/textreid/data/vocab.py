"""Word vocabularies for the BiGRU text tower: built from captions, or recovered from the authors' ids.

Tokenisation (``tokenize``): lower-case, words are maximal runs of Unicode letters and digits;
everything else — spaces, punctuation, hyphens, underscores and apostrophes — separates words,
so ``"woman's t-shirt"`` → ``["woman", "s", "t", "shirt"]``. This matches the
``processed_tokens`` of the CUHK-PEDES release, which split on non-word characters.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from textreid.fileio import atomic_write_text

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[^\W_]+")
_FORMAT = "textreid-vocabulary"


def tokenize(text: str) -> list[str]:
    """Lower-cased words of ``text`` (runs of letters/digits; apostrophes split words)."""
    return _WORD.findall(text.lower())


def _aligned(sentences: Sequence[str], onehots: Sequence[Sequence[int]]) -> Iterator[tuple[int, list[str], Sequence[int]]]:
    """(pair index, words, ids) of the pairs whose word count equals their id count: the only pairs where
    the i-th id can be read as the i-th word."""
    for n, (sentence, ids) in enumerate(zip(sentences, onehots, strict=True)):
        words = tokenize(sentence)
        if len(words) == len(ids):
            yield n, words, ids


class Vocabulary:
    """Word ↔ id table. ``pad_id``/``unk_id`` are None when the vocabulary has no such token."""

    def __init__(self, words: Sequence[str], *, pad_id: int | None = None, unk_id: int | None = None) -> None:
        self.words: list[str] = list(words)
        for name, value in (("pad_id", pad_id), ("unk_id", unk_id)):
            if value is not None and not 0 <= value < len(self.words):
                raise ValueError(f"Vocabulary: {name}={value} is outside 0..{len(self.words) - 1}")
        self.pad_id = pad_id
        self.unk_id = unk_id
        # a word listed twice (possible in a recovered vocabulary) maps to its first id
        self.index: dict[str, int] = {}
        for i, word in enumerate(self.words):
            self.index.setdefault(word, i)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words, pad_id={self.pad_id}, unk_id={self.unk_id})"

    @property
    def num_placeholders(self) -> int:
        """Ids whose word could not be recovered (``<w123>`` entries of ``from_aligned``)."""
        return sum(1 for i, w in enumerate(self.words) if w == _placeholder(i))

    # ----------------------------------------------------------------------- building
    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """``<pad>`` = 0, ``<unk>`` = 1, then words seen ≥ ``min_count`` times, most frequent first.

        Ties are broken alphabetically, so the result depends only on the captions.
        """
        counts = Counter(word for caption in captions for word in tokenize(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *kept], pad_id=0, unk_id=1)

    @classmethod
    def from_aligned(cls, sentences: Sequence[str], onehots: Sequence[Sequence[int]], size: int) -> Vocabulary:
        """Recover the words of the authors' ``onehot`` ids (rows of their word table).

        Only pairs where ``len(tokenize(sentence)) == len(onehot)`` vote; each id takes its most
        frequent word (ties: alphabetical). Ids never seen get the placeholder ``<w{id}>``. The
        result has no ``<pad>``/``<unk>`` (every id is a table row), so unknown words are dropped
        by ``encode``.
        """
        if len(sentences) != len(onehots):
            raise ValueError(f"from_aligned: {len(sentences)} sentences but {len(onehots)} onehot lists")
        votes: list[Counter[str] | None] = [None] * size
        for n, words, ids in _aligned(sentences, onehots):
            for word, i in zip(words, ids, strict=True):
                if not 0 <= i < size:
                    raise ValueError(f"from_aligned: pair {n} has id {i} outside the table of {size} rows")
                counter = votes[i]
                if counter is None:
                    counter = votes[i] = Counter()
                counter[word] += 1
        words = [
            _placeholder(i) if c is None else min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]
            for i, c in enumerate(votes)
        ]
        return cls(words)

    # ----------------------------------------------------------------------- use
    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """Ids of the words of ``text``; unknown words → ``<unk>`` (dropped when there is none)."""
        ids: list[int] = []
        for word in tokenize(text):
            i = self.index.get(word, self.unk_id)
            if i is not None:
                ids.append(i)
        return ids if max_length is None else ids[:max_length]

    def id_agreement(self, sentences: Sequence[str], onehots: Sequence[Sequence[int]]) -> float | None:
        """Share of shipped ids that name their sentence's word in this vocabulary (None: nothing to compare).

        Only pairs whose word count equals their id count are compared, as in ``from_aligned``; ids outside
        the vocabulary disagree. A split whose ids index another word table scores near 0.
        """
        same = total = 0
        for _, words, ids in _aligned(sentences, onehots):
            total += len(ids)
            same += sum(1 for w, i in zip(words, ids, strict=True) if 0 <= i < len(self.words) and self.words[i] == w)
        return same / total if total else None

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of ``ids`` (for display and debugging)."""
        return [self.words[i] for i in ids]

    # ----------------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (also stored inside checkpoints)."""
        return {"format": _FORMAT, "version": 1, "words": list(self.words),
                "pad_id": self.pad_id, "unk_id": self.unk_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "vocabulary") -> Vocabulary:
        """Inverse of ``to_dict``; ``source`` names the file or checkpoint in error messages."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected an object with key 'words', found {type(data).__name__}")
        words = data.get("words")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{source}: key 'words' should be a list of strings")
        ids = {}
        for key in ("pad_id", "unk_id"):
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{source}: key {key!r} should be an int or null, found {value!r}")
            ids[key] = value
        return cls(words, **ids)

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by ``save``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"vocabulary file {path} not found") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        return cls.from_dict(data, source=str(path))


def _placeholder(i: int) -> str:
    return f"<w{i}>"
