"""Noisy correspondences: training captions moved to other pairs' images, as in RDE's noisy settings.

A noise index ``idx [N]`` over the training records means: record i keeps its image and person id
but gets the caption of record ``idx[i]`` (``idx[i] == i``: a clean pair). RDE publishes such index
files (``noiseindex/CUHK-PEDES_0.2.npy``: int64 ``[N]``, in the order of the training captions);
``shuffle_index`` draws one the way RDE does: a ``rate`` share of the records, their captions permuted
among themselves.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from textreid.data.records import Record


def shuffle_index(n: int, *, rate: float, seed: int) -> np.ndarray:
    """RDE's procedure with a seeded generator: pick ``int(rate * n)`` records, permute their captions."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"DATASETS.NOISE_RATE must be in [0, 1], got {rate}")
    rng = np.random.default_rng(seed)
    index = np.arange(n)
    chosen = rng.permutation(n)[: int(rate * n)]
    index[chosen] = rng.permutation(chosen)
    return index


def load_index(path: str | Path, n: int) -> np.ndarray:
    """A noise index file (RDE's ``.npy``) checked against the ``n`` training records."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"DATASETS.NOISE_FILE = {str(path)!r}: file not found (RDE's noiseindex/<DATASET>_<rate>.npy)")
    index = np.load(p, allow_pickle=False)
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"{p}: expected a 1-d integer array (RDE's noise index), got {index.dtype} {index.shape}")
    if len(index) != n:
        raise ValueError(f"{p}: {len(index)} entries but the training split has {n} captions; "
                         "the file must belong to this dataset's training split")
    if len(index) and (index.min() < 0 or index.max() >= n):
        raise ValueError(f"{p}: entries must index the {n} training captions, found {index.min()}..{index.max()}")
    return index.astype(np.int64)


def apply_index(records: Sequence[Record], index: np.ndarray) -> list[Record]:
    """Records with captions (and shipped word ids) taken from ``records[index[i]]``."""
    if len(index) != len(records):
        raise ValueError(f"noise index has {len(index)} entries for {len(records)} records")
    return [r if j == i else dataclasses.replace(r, caption=records[j].caption, word_ids=records[j].word_ids)
            for i, (r, j) in enumerate(zip(records, index.tolist(), strict=True))]


def noisy_records(records: Sequence[Record], *, noise_file: str = "", rate: float = 0.0,
                  seed: int = 0) -> tuple[list[Record], np.ndarray]:
    """``(records, clean [N] bool)`` with the noise of ``noise_file`` or a seeded ``rate`` shuffle."""
    if noise_file:
        index = load_index(noise_file, len(records))
    elif rate > 0:
        index = shuffle_index(len(records), rate=rate, seed=seed)
    else:
        return list(records), np.ones(len(records), dtype=bool)
    moved = apply_index(records, index)
    # a caption moved onto another image of the same person is still a correct pair
    clean = np.array([records[j].person_id == r.person_id for r, j in zip(records, index.tolist(), strict=True)])
    return moved, clean


def write_noise_files(dataset_dir: str | Path, name: str, records: Sequence[Record], *, rates: Sequence[float],
                      seed: int = 0) -> list[Path]:
    """RDE-format noise index files ``<dataset_dir>/noiseindex/<name>_<rate>.npy`` for ``records``
    (the training split in reader order); train on one with DATASETS.NOISE_FILE."""
    from textreid.fileio import atomic_write_bytes

    out = []
    for rate in rates:
        index = shuffle_index(len(records), rate=rate, seed=seed)
        path = Path(dataset_dir) / "noiseindex" / f"{name}_{rate}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, index)
        atomic_write_bytes(path, buffer.getvalue())
        out.append(path)
    return out
