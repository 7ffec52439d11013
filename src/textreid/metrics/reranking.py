"""The authors' Jaccard re-ranking (``k_reciprocal`` in their ``lib/data/metrics/evaluation.py``).

    reranked[q, g] = similarity[q, g] + alpha * |N_q ∩ N_g| / |N_q ∪ N_g|

Both neighbour sets hold GALLERY indices: N_q = the k gallery items most similar to query q
(row q of the query-gallery similarity), N_g = the k gallery items most similar to gallery
item g (gallery-gallery cosine, g itself included). For text-to-image the gallery is the
images, for image-to-text the captions. Their neighbour lists come from an unstable argsort;
ours break ties by the lower index, and the bonus is added in the similarity's dtype (they
promote to float64).

How it is computed without a [Q, G] Python loop or a dense Jaccard matrix:

1. ``topk_indices``: the k best columns of each row (block pre-selection, exact ties).
2. ``feature_neighbours``: N_g for every gallery item, from row blocks of gallery @ gallery.T.
3. ``GalleryNeighbours``: the inverted lists "a is in N_g" (for each gallery item a, the g
   whose neighbour sets contain a).
4. ``jaccard_edit``: for a block of query rows, join each N_q with the inverted lists; the
   pairs (q, g) that share at least one neighbour are the only entries the bonus changes
   (about k * k per query), and the number of times a pair appears is |N_q ∩ N_g|. Since both
   sets have k distinct members, |N_q ∪ N_g| = 2k - |N_q ∩ N_g|.

The result is a sparse edit of the block; ranking.py ranks an edited block from the sort of
the original one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from textreid.metrics.ranking import BlockEdit, default_chunk, runs, sort_values

# Width of the column blocks whose maxima pre-select top-k candidates.
_TOPK_BLOCK = 64


def topk_indices(scores: Tensor, k: int) -> Tensor:
    """Indices of the k largest entries of each row, equal scores by lower index. [N, k]

    torch.topk over long rows is slow on CPU, so candidates are pre-selected: the k + 1
    column blocks with the largest maxima (plus the ragged tail) hold every entry above the
    (k + 2)-th largest value. If the k-th and (k + 1)-th largest candidates differ, the
    candidates' top k is the row's top k; otherwise (a tie at the cut, rare) the row is
    sorted stably.
    """
    num_rows, num_cols = scores.shape
    device = scores.device
    k = min(k, num_cols)
    if k == 0:
        return torch.zeros(num_rows, 0, dtype=torch.int64, device=device)
    if k == num_cols:
        return torch.arange(num_cols, device=device).expand(num_rows, k)  # [N, k]
    num_blocks = num_cols // _TOPK_BLOCK
    if num_blocks > 2 * (k + 1):
        body = num_blocks * _TOPK_BLOCK
        block_max = scores[:, :body].reshape(num_rows, num_blocks, _TOPK_BLOCK).amax(-1)  # [N, B]
        best = torch.topk(block_max, k + 1, dim=1).indices  # [N, k + 1]
        within = torch.arange(_TOPK_BLOCK, device=device)  # [W]
        candidates = (best[:, :, None] * _TOPK_BLOCK + within).reshape(num_rows, -1)  # [N, C]
        tail = torch.arange(body, num_cols, device=device).expand(num_rows, -1)  # [N, T]
        candidates = torch.cat([candidates, tail], dim=1)  # [N, C + T]
        values, picked = torch.topk(torch.gather(scores, 1, candidates), k + 1, dim=1)
        indices = torch.gather(candidates, 1, picked[:, :k])  # [N, k]
    else:
        values, indices = torch.topk(scores, k + 1, dim=1)  # [N, k + 1]
        indices = indices[:, :k].clone()  # [N, k]
    # torch.topk picks arbitrarily among equal scores: redo rows whose cut falls in a tie.
    ambiguous = torch.nonzero(values[:, k - 1] == values[:, k]).squeeze(1)  # [A]
    step = default_chunk(num_cols)
    for a0 in range(0, len(ambiguous), step):
        sel = ambiguous[a0 : a0 + step]
        order = torch.sort(scores[sel], dim=1, descending=True, stable=True).indices  # [a, M]
        indices[sel] = order[:, :k]
    return indices


def feature_neighbours(feats: Tensor, k: int, chunk_size: int | None = None) -> Tensor:
    """The k rows of ``feats`` most similar to each row (dot product, itself included). [N, k]

    Computed in row blocks of ``feats @ feats.T``: memory is one [chunk, N] block.
    """
    step = chunk_size or default_chunk(len(feats))
    parts = [topk_indices(feats[i : i + step] @ feats.T, k) for i in range(0, len(feats), step)]
    return torch.cat(parts) if parts else torch.zeros(0, k, dtype=torch.int64, device=feats.device)


class GalleryNeighbours:
    """N_g for every gallery item [G, k] and its inverted lists: ``members(a) = {g : a in N_g}``."""

    def __init__(self, neighbours: Tensor) -> None:
        num_g, self.k = neighbours.shape
        flat_a = neighbours.reshape(-1)  # [G * k]
        order = torch.argsort(flat_a, stable=True)  # [G * k]
        self.members = torch.div(order, self.k, rounding_mode="floor")  # [G * k] owner g of each entry
        self.degree = torch.bincount(flat_a, minlength=num_g)  # [G]
        self.start = torch.cumsum(self.degree, 0) - self.degree  # [G]


def jaccard_edit(block: Tensor, query_nn: Tensor, gallery: GalleryNeighbours, alpha: float) -> BlockEdit:
    """Entries of ``block + alpha * Jaccard(N_q, N_g)`` that differ from ``block [C, G]``.

    ``query_nn [C, k]`` holds the block rows' gallery neighbours (distinct per row). Returns
    the edit sorted by (row, column).
    """
    device = block.device
    k = query_nn.shape[1]
    if k != gallery.k:
        raise ValueError(f"query and gallery neighbour sets differ in size: {k} vs {gallery.k}")
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    if k == 0 or len(block) == 0 or alpha == 0:
        return BlockEdit(empty, empty, block.new_zeros(0))
    num_g = block.shape[1]
    # Join: for each (q, a in N_q), every g with a in N_g; a pair appears once per shared a.
    q_a = query_nn.reshape(-1)  # [C * k]
    fan = gallery.degree.index_select(0, q_a)  # [C * k]
    pair, offset = runs(fan)  # [J]
    g = gallery.members.index_select(0, gallery.start.index_select(0, q_a.index_select(0, pair)) + offset)
    q = torch.div(pair, k, rounding_mode="floor")  # [J]
    keys = sort_values(q * num_g + g).to(device)  # [J]
    keys, inter = torch.unique_consecutive(keys, return_counts=True)  # [E] |N_q ∩ N_g| > 0
    jaccard = inter.double() / (2 * k - inter).double()  # [E]
    rows = torch.div(keys, num_g, rounding_mode="floor")
    cols = keys - rows * num_g
    values = block[rows, cols] + (alpha * jaccard).to(block.dtype)
    return BlockEdit(rows, cols, values)


def jaccard_rerank(similarity: Tensor, gallery_similarity: Tensor, k: int = 5, alpha: float = 0.05) -> Tensor:
    """The re-ranked matrix ``similarity + alpha * Jaccard(N_q, N_g)`` [Q, G] (module notes).

    ``similarity [Q, G]`` gives N_q (its rows), ``gallery_similarity [G, G]`` gives N_g.
    Ties are broken by the lower index. evaluate() never builds this dense matrix; this is the
    dense form for callers that hold both matrices.
    """
    num_q, num_g = similarity.shape
    if gallery_similarity.shape != (num_g, num_g):
        raise ValueError(f"gallery_similarity must be [{num_g}, {num_g}], got {tuple(gallery_similarity.shape)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    gallery = GalleryNeighbours(topk_indices(gallery_similarity, k))
    edit = jaccard_edit(similarity, topk_indices(similarity, k), gallery, alpha)
    result = similarity.clone(memory_format=torch.contiguous_format)  # [Q, G]
    result[edit.rows, edit.cols] = edit.values
    return result
