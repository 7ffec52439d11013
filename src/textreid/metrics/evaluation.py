"""Both retrieval directions from embeddings, in bounded memory at any dataset's size.

The [Q, G] similarity matrix is never held whole (unless it fits in one block, as at CUHK-PEDES
size, where one matmul then serves both directions): each direction streams blocks of query rows
(``query[rows] @ gallery.T``), and each block is ranked, re-ranked (its own top-k rows are
its N_q) and dropped before the next one. The image-to-text direction computes the blocks of
the transposed matrix the same way instead of keeping a transposed copy. The re-ranking's
gallery neighbour sets come from row blocks of gallery @ gallery.T. Peak extra memory is a
few [chunk, G] blocks (default chunk: about 32M similarities, 128 MiB in float32) plus O(Q k^2)
for the re-ranking edits, whatever Q and G are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from textreid.embeddings import normalise
from textreid.metrics.ranking import (
    BLOCK_ELEMENTS,
    BlockEdit,
    check_chunk,
    check_ids,
    rank_blocks,
    relevant_pairs,
)
from textreid.metrics.reranking import (
    GalleryNeighbours,
    feature_neighbours,
    jaccard_edit,
    topk_indices,
)


def evaluate_direction(
    query_feats: Tensor,
    query_ids: Tensor,
    gallery_feats: Tensor,
    gallery_ids: Tensor,
    *,
    gallery_neighbours: Tensor | None = None,
    alpha: float = 0.05,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
) -> tuple[dict[str, float], dict[str, float] | None]:
    """Metrics of one direction, similarity = ``query_feats @ gallery_feats.T`` in row blocks.

    With ``gallery_neighbours [G, k]`` (see ``feature_neighbours``) the re-ranked metrics are
    returned too, else None. Features are used as given (normalise them for cosine).
    """
    if query_feats.dim() != 2 or gallery_feats.dim() != 2 or query_feats.shape[1] != gallery_feats.shape[1]:
        raise ValueError(
            f"features must be [Q, D] and [G, D], got {tuple(query_feats.shape)} and {tuple(gallery_feats.shape)}"
        )
    step = check_chunk(chunk_size, len(gallery_feats))
    blocks = (query_feats[c0 : c0 + step] @ gallery_feats.T for c0 in range(0, len(query_feats), step))
    shape = (len(query_feats), len(gallery_feats))
    return _rank_direction(blocks, query_ids, gallery_ids, shape, query_feats.device, gallery_neighbours, alpha, ks)


def _rank_direction(
    blocks: Iterator[Tensor],
    query_ids: Tensor,
    gallery_ids: Tensor,
    shape: tuple[int, int],
    device: torch.device,
    gallery_neighbours: Tensor | None,
    alpha: float,
    ks: Sequence[int],
) -> tuple[dict[str, float], dict[str, float] | None]:
    """Plain (and, with gallery neighbours, re-ranked) metrics of consecutive row blocks [C, G]."""
    num_q, num_g = shape
    check_ids(num_q, num_g, query_ids, gallery_ids)
    pairs = relevant_pairs(query_ids, gallery_ids, device)
    gallery = None if gallery_neighbours is None else GalleryNeighbours(gallery_neighbours)

    def with_edits() -> Iterator[tuple[Tensor, list[BlockEdit | None]]]:
        for block in blocks:
            if gallery is None:
                yield block, [None]
            else:
                query_nn = topk_indices(block, gallery.k)  # [C, k] the block rows' N_q
                yield block, [None, jaccard_edit(block, query_nn, gallery, alpha)]

    results = rank_blocks(with_edits(), pairs, num_g, ks)
    return results[0], (results[1] if gallery is not None else None)


def evaluate(
    text_feats: Tensor,
    text_ids: Tensor,
    image_feats: Tensor,
    image_ids: Tensor,
    *,
    rerank: bool = False,
    k: int = 5,
    alpha: float = 0.05,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
) -> dict[str, dict[str, float]]:
    """Text-to-image and image-to-text metrics of raw embeddings (one image row per image).

    Returns ``{"t2i": ..., "i2t": ...}`` and, with ``rerank``, ``"t2i_rerank"`` and
    ``"i2t_rerank"`` (the authors' Jaccard re-ranking: gallery neighbours from image-image
    similarity for t2i, text-text similarity for i2t). ``chunk_size`` is the number of query
    rows per similarity block (default: about 32M similarities per block).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    text = normalise(text_feats.detach())  # [Nt, D]
    image = normalise(image_feats.detach())  # [Ni, D]
    shape = (len(text), len(image))
    if chunk_size is None and shape[0] * shape[1] <= BLOCK_ELEMENTS:
        # Small enough for one block (CUHK-PEDES): one matmul serves both directions.
        sim = text @ image.T  # [Nt, Ni]
        t2i_blocks, i2t_blocks = iter([sim]), (sim.T.contiguous() for _ in range(1))
    else:
        step_t, step_i = check_chunk(chunk_size, shape[1]), check_chunk(chunk_size, shape[0])
        t2i_blocks = (text[c0 : c0 + step_t] @ image.T for c0 in range(0, shape[0], step_t))
        i2t_blocks = (image[c0 : c0 + step_i] @ text.T for c0 in range(0, shape[1], step_i))
    image_nn = feature_neighbours(image, k, chunk_size) if rerank else None  # [Ni, k]
    t2i, t2i_rerank = _rank_direction(t2i_blocks, text_ids, image_ids, shape, text.device, image_nn, alpha, ks)
    del image_nn
    text_nn = feature_neighbours(text, k, chunk_size) if rerank else None  # [Nt, k]
    i2t, i2t_rerank = _rank_direction(i2t_blocks, image_ids, text_ids, shape[::-1], text.device, text_nn, alpha, ks)
    results = {"t2i": t2i, "i2t": i2t}
    if rerank:
        results["t2i_rerank"] = t2i_rerank
        results["i2t_rerank"] = i2t_rerank
    return results


_COLUMNS = ("R1", "R5", "R10", "mAP", "mINP")


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Fixed-width table: one row per direction, columns R1 R5 R10 mAP mINP (2 decimals)."""
    name_width = max([len("direction")] + [len(name) for name in results])
    lines = ["direction".ljust(name_width) + "".join(f"{c:>8}" for c in _COLUMNS)]
    for name, metrics in results.items():
        cells = "".join(f"{metrics[c]:>8.2f}" if c in metrics else f"{'-':>8}" for c in _COLUMNS)
        lines.append(name.ljust(name_width) + cells)
    return "\n".join(lines)
