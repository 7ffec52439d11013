"""Embeddings live on the unit sphere: one L2 normalisation for training, evaluation, the API and search.

After ``normalise`` the dot product of two rows is their cosine similarity, which is what every
ranking in textreid sorts by.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

Rows = TypeVar("Rows", torch.Tensor, np.ndarray)
EPS = 1e-12  # rows shorter than this stay (near) zero instead of dividing by zero


def normalise(x: Rows) -> Rows:
    """Rows of ``x`` ``[N, D]`` scaled to unit L2 norm, as float32 (torch tensor in, tensor out; numpy likewise)."""
    if isinstance(x, torch.Tensor):
        return F.normalize(x.float(), dim=-1, eps=EPS)  # [N, D]
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)  # [N, D]
