"""The synthetic dataset's vocabulary and its stand-in for CLIP word vectors.

Words are the project's own (``textreid.data.vocab.tokenize``), so the generator, the readers
and the BiGRU vocabulary agree on what counts as a word.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from textreid.data.synth.attributes import COLOURS, HAIR_COLOURS
from textreid.data.synth.captions import (
    BAG_WORDS,
    BOTTOM_WORDS,
    GLASSES_WORDS,
    HAT_WORDS,
    NEUTRAL_SUBJECTS,
    SHOE_WORDS,
    SLEEVE_WORDS,
    SUBJECTS,
    TOP_WORDS,
)
from textreid.data.vocab import PAD, UNK, Vocabulary, tokenize

EMBED_DIM = 512


def _words_of(phrases: Sequence[str]) -> set[str]:
    return {w for x in phrases for w in tokenize(x)}


def _category_words() -> dict[str, str]:
    """Word -> semantic group, taken from the caption phrase tables (first group wins)."""
    groups: list[tuple[str, set[str]]] = [
        ("colour", set(COLOURS) | set(HAIR_COLOURS) | {"gray", "blond", "dark", "light", "colored"}),
        ("person", _words_of([x for s in (*SUBJECTS.values(), NEUTRAL_SUBJECTS) for x in s])
         | {"he", "she", "his", "her", "guy", "lady", "female", "male", "man", "woman", "girl", "boy"}),
        ("pattern", {"striped", "stripes", "plaid", "checkered", "checked", "check", "pattern", "logo", "graphic",
                     "print", "design"}),
        ("footwear", _words_of([x for v in SHOE_WORDS.values() for x in v])),
        ("accessory", _words_of([x for d in (HAT_WORDS, BAG_WORDS) for v in d.values() for x in v])
         | _words_of(GLASSES_WORDS)),
        ("clothing", _words_of([x for d in (TOP_WORDS, BOTTOM_WORDS, SLEEVE_WORDS) for v in d.values() for x in v])),
        ("hair", {"hair", "long", "short", "cropped", "shoulder", "length"}),
    ]
    out: dict[str, str] = {}
    for name, words in groups:
        for w in words:
            out.setdefault(w, name)
    out.pop("a", None)  # articles stay function words
    out.pop("of", None)
    return out


def _unit(seed_text: str) -> np.ndarray:
    v = np.random.default_rng(zlib.crc32(seed_text.encode("utf-8"))).standard_normal(EMBED_DIM)
    return v / np.linalg.norm(v)


def word_vectors(words: Sequence[str]) -> np.ndarray:
    """Deterministic pseudo word embeddings, float32 [len(words), 512], unit rows.

    The real ``clip_vocab_vit.npy`` holds CLIP text-encoder outputs; here each row is
    ``normalise(0.6 * group_vector + 0.8 * own_vector)`` where the group is one of colour, person,
    pattern, footwear, accessory, clothing, hair (other words: ``0.3 * function_vector``), and every
    vector comes from a generator seeded by the CRC32 of its name. So words of one group have cosine
    about 0.36, a word's vector never depends on the vocabulary or the seed.
    """
    cats = _category_words()
    rows = []
    for w in words:
        cat = cats.get(w)
        v = (0.6 * _unit("group:" + cat) if cat else 0.3 * _unit("group:function")) + 0.8 * _unit("word:" + w)
        rows.append(v / np.linalg.norm(v))
    return np.asarray(rows, dtype=np.float32).reshape(len(words), EMBED_DIM)


def build_vocabulary(captions: Sequence[str]) -> list[str]:
    """Words of the captions in ``Vocabulary.build``'s order (most frequent first, ties alphabetical).

    Without ``<pad>``/``<unk>``: in the authors' layout a word id is a row of the word table.
    """
    return [w for w in Vocabulary.build(captions).words if w not in (PAD, UNK)]
