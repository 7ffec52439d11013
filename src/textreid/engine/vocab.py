"""`textreid vocab`: a word vocabulary from the training captions + its CLIP word-vector table.

The authors' recipe for datasets that do not ship ``clip_vocab_vit.npy``: every vocabulary word
is fed alone through the text encoder of a CLIP checkpoint the user supplies.
"""

from __future__ import annotations

import logging
from pathlib import Path

from textreid.config import Config
from textreid.data.vocab import Vocabulary
from textreid.engine.setup import TABLE_FILE, VOCAB_FILE, dataset_folder, read_splits

log = logging.getLogger("textreid")


def build_vocab_and_table(cfg: Config, *, clip_checkpoint: str | Path, device: str = "cpu",
                          progress: bool = True) -> dict:
    """Write ``vocab.json`` and ``vocab_vectors.npy`` into the training dataset's folder.

    The authors' ``clip_vocab_vit.npy`` (rows = their shipped word ids) is never overwritten.
    """
    from textreid.models.word_table import build_word_table, save_word_table

    if not Path(clip_checkpoint).is_file():
        raise FileNotFoundError(f"CLIP checkpoint {clip_checkpoint} not found (an OpenAI .pt, open_clip or "
                                f".safetensors file)")
    train = read_splits(cfg, cfg.datasets.train)
    vocab = Vocabulary.build([r.caption for r in train])
    out = dataset_folder(cfg, cfg.datasets.train[0])
    out.mkdir(parents=True, exist_ok=True)
    table = build_word_table(vocab.words, clip_checkpoint, device=device, progress=progress)
    save_word_table(out / TABLE_FILE, table)
    vocab.save(out / VOCAB_FILE)
    return {"vocab": str(out / VOCAB_FILE), "table": str(out / TABLE_FILE), "words": len(vocab),
            "dim": int(table.shape[1]), "captions": len(train)}
