"""How captions and images become tensors: one spec, decided once, saved with the model.

A :class:`Preprocess` says which tokenizer feeds the text tower, with which vocabulary, whether
the dataset's shipped word ids (the authors' ``onehot``) are fed instead of tokenising the
caption, which word-vector file the frozen table came from, and the image transforms. It is
built once at the configuration edge (``engine.setup.build_preprocess``, from the config and
the training records), stored in every checkpoint under ``"preprocess"`` and read back by the
loaders, the evaluator, ``textreid.load`` and search, so that training, evaluation and free-text
search turn a caption into the same ids whatever layout the evaluated split comes in.

Shipped ids are used only when the model was trained on them (``shipped_ids``) and an evaluated
split's ids index the model's vocabulary (``uses_shipped_ids``): a model whose vocabulary was built
from raw captions, or recovered from another dataset's ids, tokenises every caption of a split that
carries ids of another word table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from textreid.data.records import Record
from textreid.data.text import TOKENIZERS, ClipTokenizer, WordTokenizer
from textreid.data.transforms import ERASE_FILLS, build_transforms
from textreid.data.vocab import Vocabulary

FORMAT = "textreid-preprocess-v1"
MIN_ID_AGREEMENT = 0.9  # share of a split's shipped ids that must name their caption's word in the model's vocabulary
_ID_SAMPLE = 2000  # records checked (evenly spread over the split)

log = logging.getLogger("textreid")


@dataclass(frozen=True)
class ImageSpec:
    """Resize/normalise (evaluation) and the training augmentation."""

    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    padding: int = 10  # pad before the random crop (training)
    augment: bool = True  # flip + pad/crop + random erasing during training
    erase_fill: str = "zero"  # "zero" (= the pixel mean after normalising) or "mean" (the authors' fill)

    def __post_init__(self) -> None:
        if self.erase_fill not in ERASE_FILLS:
            raise ValueError(f"ImageSpec: erase_fill {self.erase_fill!r} is not one of {', '.join(ERASE_FILLS)}")


@dataclass(frozen=True)
class Preprocess:
    """Tokenizer kind, vocabulary, word table reference, shipped-ids decision and image transforms."""

    tokenizer: str  # "words" (word ids for the BiGRU) or "clip_bpe" (CLIP's text transformer)
    image: ImageSpec
    vocab: Vocabulary | None = field(default=None, compare=True)
    shipped_ids: bool = False  # feed the records' own word ids (the vocabulary indexes their table)
    max_words: int = 100  # word cap of the BiGRU's captions
    context_length: int = 77  # CLIP BPE tokens per caption
    word_table: str = ""  # file the frozen word vectors were read from ("" = none); the model holds them

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"Preprocess: tokenizer {self.tokenizer!r} is not one of {', '.join(TOKENIZERS)}")
        if self.tokenizer == "words" and self.vocab is None:
            raise ValueError("Preprocess: the 'words' tokenizer needs a vocabulary")
        if self.shipped_ids and self.tokenizer != "words":
            raise ValueError("Preprocess: shipped word ids only feed the 'words' tokenizer")

    def text_tokenizer(self) -> WordTokenizer | ClipTokenizer:
        """A fresh tokenizer (it counts truncated captions, so each loader gets its own)."""
        if self.tokenizer == "words":
            assert self.vocab is not None
            return WordTokenizer(self.vocab, max_length=self.max_words)
        return ClipTokenizer(context_length=self.context_length)

    def transform(self, *, train: bool = False) -> Callable[[Image.Image], torch.Tensor]:
        """The evaluation transform, or the training one with augmentation."""
        i = self.image
        return build_transforms(height=i.height, width=i.width, mean=i.mean, std=i.std, train=train,
                                use_aug=i.augment, padding=i.padding, erase_fill=i.erase_fill)

    def uses_shipped_ids(self, records: Sequence[Record]) -> bool:
        """Whether these records' shipped word ids feed the model: it was trained on shipped ids and these
        index its vocabulary. Another dataset's ids index another word table (a model of CUHK-PEDES on
        ICFG-PEDES files, synthetic sets of other seeds): its captions are tokenised instead, with a warning.
        """
        if not self.shipped_ids:
            return False
        assert self.vocab is not None
        sample = [r for r in records[:: max(1, len(records) // _ID_SAMPLE)] if r.word_ids is not None]
        agreement = self.vocab.id_agreement([r.caption for r in sample], [r.word_ids for r in sample])
        if agreement is None or agreement >= MIN_ID_AGREEMENT:
            return True
        where = os.path.commonpath([str(r.image_path) for r in sample])
        log.warning("%s split (images under %s): only %.0f%% of its shipped word ids name their caption's word in the "
                    "model's vocabulary (another word table); its captions are tokenised with the model's vocabulary "
                    "instead", "/".join(sorted({r.split for r in sample})), where, 100 * agreement)
        return False

    # ----------------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain types only (checkpoints load with ``weights_only=True``)."""
        i = self.image
        return {
            "format": FORMAT, "tokenizer": self.tokenizer, "shipped_ids": self.shipped_ids,
            "max_words": self.max_words, "context_length": self.context_length, "word_table": self.word_table,
            "vocab": self.vocab.to_dict() if self.vocab is not None else None,
            "image": {"height": i.height, "width": i.width, "mean": list(i.mean), "std": list(i.std),
                      "padding": i.padding, "augment": i.augment, "erase_fill": i.erase_fill},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "preprocess") -> Preprocess:
        """Inverse of ``to_dict``; ``source`` names the checkpoint in error messages."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{source}: not a preprocessing spec (format {found!r}, expected {FORMAT!r})")
        img = dict(data["image"])
        vocab = data.get("vocab")
        return cls(
            tokenizer=data["tokenizer"],
            image=ImageSpec(**{**img, "mean": tuple(img["mean"]), "std": tuple(img["std"])}),
            vocab=Vocabulary.from_dict(vocab, source=f"{source} (vocab)") if vocab is not None else None,
            shipped_ids=bool(data["shipped_ids"]),
            max_words=int(data["max_words"]),
            context_length=int(data["context_length"]),
            word_table=str(data.get("word_table", "")),
        )


def image_spec(*, height: int, width: int, mean: Sequence[float], std: Sequence[float], padding: int = 10,
               augment: bool = True, erase_fill: str = "zero") -> ImageSpec:
    """An :class:`ImageSpec` from lists (as configs hold them)."""
    return ImageSpec(height, width, tuple(float(x) for x in mean), tuple(float(x) for x in std), padding,
                     augment, erase_fill)
