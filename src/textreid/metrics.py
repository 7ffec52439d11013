"""Retrieval metrics for text-based person search: CMC Rank-k, mAP, mINP, Jaccard re-ranking.

Conventions shared by every function here:

* Ranking order is descending similarity; equal similarities are ordered by the lower gallery
  index first (what a stable descending sort gives).
* A gallery item is relevant to a query when their person ids are equal.
* Queries without any relevant gallery item are excluded from every mean; how many there were
  is reported under ``"num_invalid"`` (the standard benchmarks have none).
* Similarities must be finite; a NaN or an infinity raises ``ValueError``.

Speed: no metric needs the full permutation of the gallery. Only the rank of each relevant
item is needed, and that is "how many gallery items score higher (+ equal ones with a lower
index)". Each chunk of query rows is sorted by value only (no argsort) and the relevant
scores are located in it by binary search; every metric then follows from the sorted ranks
of the relevant items. On CPU the value sort is NumPy's SIMD sort, about ten times faster
than ``torch.sort`` there; on other devices ``torch.sort`` is used. Re-ranking changes few
entries, so evaluate() ranks the re-ranked matrix from the same sort, corrected by the
changed entries of each row.

The re-ranking is the authors' (``k_reciprocal`` in their ``lib/data/metrics/evaluation.py``):
for t2i, N_q = the k images closest to caption q and N_g = the k images closest to image g
(image-image cosine, g itself included), both sets of GALLERY indices; for i2t the same with
captions as the gallery. Their neighbour lists come from an unstable argsort; ours break
ties by the lower index, and the bonus is added in the similarity's dtype (they promote to
float64).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["rank", "jaccard_rerank", "evaluate", "format_table"]

# Elements of one [chunk, G] block of similarities (float32: 128 MiB), used when no chunk
# size is given: CUHK-PEDES (6,156 x 3,074) is one block.
_BLOCK_ELEMENTS = 1 << 25

# Score dtypes kept as they are; others (half, bfloat16) are widened exactly to float32.
_SCORE_DTYPES = (torch.float32, torch.float64)
# Dtypes sorted by NumPy on CPU.
_NUMPY_SORTABLE = (torch.float32, torch.float64, torch.int32, torch.int64)


def _check_inputs(similarity: Tensor, query_ids: Tensor, gallery_ids: Tensor) -> None:
    if similarity.dim() != 2:
        raise ValueError(f"similarity must be [Q, G], got shape {tuple(similarity.shape)}")
    num_q, num_g = similarity.shape
    if query_ids.shape != (num_q,):
        raise ValueError(f"query_ids must have shape ({num_q},), got {tuple(query_ids.shape)}")
    if gallery_ids.shape != (num_g,):
        raise ValueError(f"gallery_ids must have shape ({num_g},), got {tuple(gallery_ids.shape)}")
    if not similarity.is_floating_point():
        raise ValueError(f"similarity must be floating point, got {similarity.dtype}")
    for name, ids in (("query_ids", query_ids), ("gallery_ids", gallery_ids)):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got {ids.dtype}")


def _runs(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Expand run lengths [N]: owner of each element and its position in the run. [sum], [sum]"""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts  # [N]
    position = torch.arange(len(owner), device=counts.device) - starts.index_select(0, owner)
    return owner, position


def _relevant_pairs(query_ids: Tensor, gallery_ids: Tensor) -> tuple[Tensor, ...]:
    """All (query, gallery) index pairs with equal ids, grouped by query, gallery index ascending.

    Returns ``rows [P]``, ``cols [P]``, ``slots [P]`` (position of the pair in its query's
    group) and ``counts [Q]`` (relevant items per query). O(G log G + P): no [Q, G] compare.
    """
    device = query_ids.device
    gallery_ids = gallery_ids.to(device=device, dtype=torch.int64)
    query_ids = query_ids.to(dtype=torch.int64)
    order = torch.argsort(gallery_ids, stable=True)  # [G] same ids together, index ascending
    sorted_ids = gallery_ids.index_select(0, order)  # [G]
    lo = torch.searchsorted(sorted_ids, query_ids)  # [Q]
    counts = torch.searchsorted(sorted_ids, query_ids, right=True) - lo  # [Q]
    rows, slots = _runs(counts)  # [P]
    cols = order.index_select(0, lo.index_select(0, rows) + slots)  # [P]
    return rows, cols, slots, counts


def _sort_values(x: Tensor) -> Tensor:
    """Ascending values along the last dim of a contiguous 1-D or 2-D tensor (no indices)."""
    if x.device.type != "cpu" or x.dtype not in _NUMPY_SORTABLE:
        return torch.sort(x, dim=-1).values
    src = x.numpy()
    out = np.empty_like(src)
    rows = 1 if src.ndim == 1 else len(src)
    num_threads = min(torch.get_num_threads(), rows)

    def sort_part(part: slice) -> None:
        out[part] = src[part]
        out[part].sort(axis=-1)  # NumPy releases the GIL while sorting

    if src.ndim == 1 or num_threads <= 1 or src.size < (1 << 16):
        sort_part(slice(None))
    else:
        bounds = np.linspace(0, rows, num_threads + 1).astype(int)
        threads = [
            threading.Thread(target=sort_part, args=(slice(a, b),))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return torch.from_numpy(out)


# A sparse edit of a [Q, G] matrix: sorted unique flat indices q * G + g [E] and the new
# values there [E]. Re-ranking changes only these entries, so the ranks of the re-ranked
# matrix are derived from the sort of the original one.
Edit = tuple[Tensor, Tensor]


def _relevant_ranks(
    similarity: Tensor,
    rows: Tensor,
    cols: Tensor,
    slots: Tensor,
    counts: Tensor,
    chunk_size: int,
    edits: Sequence[Edit | None],
) -> list[Tensor]:
    """0-based rank of each relevant pair (rows[p], cols[p]), once per edit (None: as is).

    rank = #{g: s_g > x} + #{g < col: s_g == x} with x the pair's score. Each chunk of rows
    is sorted once; for an edited matrix the counts over the original row are corrected by
    the edited entries of that row: - [old > x] + [new > x] (and likewise for ties).
    """
    num_q, num_g = similarity.shape
    device = similarity.device
    bounds = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)]).tolist()  # [Q + 1]
    ranks = [torch.zeros(len(rows), dtype=torch.int64, device=device) for _ in edits]  # [P]
    gallery_index = torch.arange(num_g, device=device)  # [G]
    for c0 in range(0, num_q, chunk_size):
        c1 = min(c0 + chunk_size, num_q)
        p0, p1 = bounds[c0], bounds[c1]
        if p0 == p1:
            continue
        block = similarity[c0:c1].contiguous()  # [C, G]
        if block.dtype not in _SCORE_DTYPES:
            block = block.float()  # exact for half/bfloat16, so the order is unchanged
        sorted_block = _sort_values(block).to(device)  # [C, G] ascending
        # NaN and -inf/+inf sort to the ends of a row: checking both ends checks the row.
        if not torch.isfinite(sorted_block[:, [0, -1]]).all():
            raise ValueError("similarity contains NaN or infinite values")
        local_rows = rows[p0:p1] - c0  # [Pc]
        pair_cols = cols[p0:p1]  # [Pc]
        slot = slots[p0:p1]  # [Pc] position of the pair inside its query's group
        base = block[local_rows, pair_cols]  # [Pc] original scores of the relevant pairs
        padded = block.new_zeros(c1 - c0, int(counts[c0:c1].max()))  # [C, Rmax]
        for out, edit in zip(ranks, edits, strict=True):
            scores = base
            if edit is not None:
                e_rows, e_cols, e_old, e_new = _edit_chunk(edit, block, c0, c1)  # [Ec] each
                scores = _edited_values(edit, base, (local_rows + c0) * num_g + pair_cols)
            padded[local_rows, slot] = scores
            right = torch.searchsorted(sorted_block, padded, right=True)[local_rows, slot]
            chunk_ranks = num_g - right  # [Pc] original entries scoring strictly higher
            # Equal scores rank by lower gallery index: scan the rows where another entry
            # equals the pair's score (rare with real features). Equal entries sit just
            # before `right` in the sorted row, the pair's own original score among them.
            below = right - 1 - (base == scores).long()  # [Pc] last entry not known to be it
            probe = sorted_block[local_rows, below.clamp(min=0)]  # [Pc]
            tied = torch.nonzero((below >= 0) & (probe == scores)).squeeze(1)  # [T]
            for t0 in range(0, len(tied), chunk_size):
                sel = tied[t0 : t0 + chunk_size]  # [t]
                same = block[local_rows[sel]] == scores[sel, None]  # [t, G]
                chunk_ranks[sel] += (same & (gallery_index < pair_cols[sel, None])).sum(1)
            if edit is not None:
                chunk_ranks += _edit_correction(
                    local_rows, pair_cols, scores, e_rows, e_cols, e_old, e_new, c1 - c0
                )
            out[p0:p1] = chunk_ranks
    return ranks


def _edit_chunk(edit: Edit, block: Tensor, c0: int, c1: int) -> tuple[Tensor, ...]:
    """Local rows, columns, old and new values of the edited entries of rows [c0, c1)."""
    keys, values = edit
    num_g = block.shape[1]
    lo, hi = torch.searchsorted(keys, keys.new_tensor([c0 * num_g, c1 * num_g])).tolist()
    e_rows = torch.div(keys[lo:hi], num_g, rounding_mode="floor") - c0  # [Ec]
    e_cols = keys[lo:hi] % num_g  # [Ec]
    return e_rows, e_cols, block[e_rows, e_cols], values[lo:hi].to(block.dtype)


def _edited_values(edit: Edit, base: Tensor, pair_keys: Tensor) -> Tensor:
    """Scores of the pairs (flat keys [Pc]) after the edit. [Pc]"""
    keys, values = edit
    if len(keys) == 0:
        return base
    pos = torch.searchsorted(keys, pair_keys).clamp(max=len(keys) - 1)  # [Pc]
    found = keys.index_select(0, pos) == pair_keys  # [Pc]
    return torch.where(found, values.index_select(0, pos).to(base.dtype), base)


def _edit_correction(
    local_rows: Tensor,
    pair_cols: Tensor,
    scores: Tensor,
    e_rows: Tensor,
    e_cols: Tensor,
    e_old: Tensor,
    e_new: Tensor,
    num_rows: int,
) -> Tensor:
    """Rank change of each pair from the edited entries of its row. [Pc]"""
    per_row = torch.bincount(e_rows, minlength=num_rows)  # [C] edited entries per row
    row_start = torch.cumsum(per_row, 0) - per_row  # [C] (edits are sorted by row)
    fan = per_row.index_select(0, local_rows)  # [Pc]
    pair, offset = _runs(fan)  # [J] each pair against each edited entry of its row
    entry = row_start.index_select(0, local_rows.index_select(0, pair)) + offset  # [J]
    x = scores.index_select(0, pair)  # [J]
    # an entry with a lower gallery index wins a tie against the pair
    before = e_cols.index_select(0, entry) < pair_cols.index_select(0, pair)  # [J]
    old, new = e_old.index_select(0, entry), e_new.index_select(0, entry)  # [J]
    delta = (
        (new > x).long()
        - (old > x).long()
        + ((new == x) & before).long()
        - ((old == x) & before).long()
    )  # [J]
    return torch.zeros_like(fan).index_add_(0, pair, delta)  # [Pc]


def _metrics_from_ranks(
    ranks: Tensor, rows: Tensor, slots: Tensor, counts: Tensor, num_g: int, ks: Sequence[int]
) -> dict[str, float]:
    """R@k, mAP, mINP (percent) from the 0-based ranks [P] of the relevant pairs."""
    device = ranks.device
    valid = counts > 0  # [Q]
    num_valid = int(valid.sum())
    # Sort the relevant ranks inside each query's group (rows stay grouped).
    ranks = _sort_values(rows * num_g + ranks).to(device) - rows * num_g  # [P]
    precision = (slots + 1).double() / (ranks + 1).double()  # [P] precision at each hit
    ap = torch.zeros(len(counts), dtype=torch.float64, device=device).index_add_(0, rows, precision)
    ap = ap / counts.clamp(min=1)  # [Q] 0 for queries without relevant items
    starts = (torch.cumsum(counts, 0) - counts).clamp(max=max(len(ranks) - 1, 0))  # [Q]
    ends = (torch.cumsum(counts, 0) - 1).clamp(min=0)  # [Q]
    first = ranks.index_select(0, starts)  # [Q] rank of the best relevant item
    last = ranks.index_select(0, ends)  # [Q] rank of the worst relevant item
    inp = torch.where(valid, counts.double() / (last + 1).double(), 0.0)  # [Q]
    results: dict[str, float] = {}
    for k in ks:
        results[f"R{k}"] = float(((first < k) & valid).sum()) * 100 / num_valid
    results["mAP"] = float(ap.sum()) * 100 / num_valid
    results["mINP"] = float(inp.sum()) * 100 / num_valid
    results["num_invalid"] = len(counts) - num_valid
    return results


def _default_chunk(num_gallery: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(num_gallery, 1))


def _rank_edits(
    similarity: Tensor,
    query_ids: Tensor,
    gallery_ids: Tensor,
    ks: Sequence[int],
    chunk_size: int | None,
    edits: Sequence[Edit | None],
) -> list[dict[str, float]]:
    """rank() of the matrix and of sparse edits of it, sorting each chunk only once."""
    _check_inputs(similarity, query_ids, gallery_ids)
    similarity = similarity.detach()
    num_q, num_g = similarity.shape
    device = similarity.device
    if chunk_size is None:
        chunk_size = _default_chunk(num_g)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive, got {tuple(ks)}")
    rows, cols, slots, counts = _relevant_pairs(query_ids.to(device), gallery_ids.to(device))
    if len(rows) == 0:
        raise ValueError(f"none of the {num_q} queries has a relevant gallery item (same id)")
    all_ranks = _relevant_ranks(similarity, rows, cols, slots, counts, chunk_size, edits)
    return [_metrics_from_ranks(r, rows, slots, counts, num_g, ks) for r in all_ranks]


def rank(
    similarity: Tensor,
    query_ids: Tensor,
    gallery_ids: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
) -> dict[str, float]:
    """CMC Rank-k, mAP and mINP (percent) of a [Q, G] similarity matrix; see the module notes.

    Returns ``{"R1", "R5", "R10" (one per k in ks), "mAP", "mINP", "num_invalid"}``.
    ``chunk_size`` is the number of query rows processed at once (default: about 32M
    similarities per chunk), which bounds the extra memory to two [chunk, G] blocks.
    """
    return _rank_edits(similarity, query_ids, gallery_ids, ks, chunk_size, [None])[0]


# Width of the column blocks whose maxima pre-select top-k candidates.
_TOPK_BLOCK = 64


def _topk_indices(scores: Tensor, k: int, chunk_size: int | None = None) -> Tensor:
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
    step = chunk_size or _default_chunk(num_cols)
    for a0 in range(0, len(ambiguous), step):
        sel = ambiguous[a0 : a0 + step]
        order = torch.sort(scores[sel], dim=1, descending=True, stable=True).indices  # [a, M]
        indices[sel] = order[:, :k]
    return indices


def _feature_neighbours(feats: Tensor, k: int, chunk_size: int | None = None) -> Tensor:
    """Top-k rows of ``feats @ feats.T`` per row (itself included), in row chunks. [N, k]"""
    step = chunk_size or _default_chunk(len(feats))
    parts = [
        _topk_indices(feats[i : i + step] @ feats.T, k, step)  # [C, N] -> [C, k]
        for i in range(0, len(feats), step)
    ]
    return torch.cat(parts) if parts else feats.new_zeros(0, k, dtype=torch.int64)


def _jaccard_edit(similarity: Tensor, query_nn: Tensor, gallery_nn: Tensor, alpha: float) -> Edit:
    """Entries of similarity + alpha * |N_q ∩ N_g| / |N_q ∪ N_g| that differ from it.

    ``query_nn [Q, k]`` and ``gallery_nn [G, k]`` hold gallery indices, distinct per row, so
    |N_q ∪ N_g| = 2k - |N_q ∩ N_g|. Only pairs sharing a neighbour get a bonus: they are
    found by joining each query's neighbours with the inverted lists "a is in N_g".
    Returns sorted flat indices q * G + g [E] and the new values there [E].
    """
    num_q, num_g = similarity.shape
    device = similarity.device
    k = query_nn.shape[1]
    if k == 0 or num_q == 0 or alpha == 0:
        return torch.zeros(0, dtype=torch.int64, device=device), similarity.new_zeros(0)
    # Inverted lists: members[a_start[a] : a_start[a] + degree[a]] = {g : a in N_g}.
    flat_a = gallery_nn.reshape(-1)  # [G * k]
    order = torch.argsort(flat_a, stable=True)  # [G * k]
    members = torch.div(order, k, rounding_mode="floor")  # [G * k] owner row g of each entry
    degree = torch.bincount(flat_a, minlength=num_g)  # [G]
    a_start = torch.cumsum(degree, 0) - degree  # [G]
    # Join: for each (q, a in N_q), every g with a in N_g; a pair appears once per shared a.
    q_a = query_nn.reshape(-1)  # [Q * k]
    fan = degree.index_select(0, q_a)  # [Q * k]
    pair, offset = _runs(fan)  # [J]
    g = members.index_select(0, a_start.index_select(0, q_a.index_select(0, pair)) + offset)  # [J]
    q = torch.div(pair, k, rounding_mode="floor")  # [J]
    keys = _sort_values(q * num_g + g).to(device)  # [J]
    keys, inter = torch.unique_consecutive(keys, return_counts=True)  # [E] |N_q ∩ N_g| > 0
    jaccard = inter.double() / (2 * k - inter).double()  # [E]
    flat = similarity.reshape(-1)
    return keys, flat.index_select(0, keys) + (alpha * jaccard).to(similarity.dtype)


def jaccard_rerank(
    similarity: Tensor, gallery_similarity: Tensor, k: int = 5, alpha: float = 0.05
) -> Tensor:
    """The authors' re-ranking: similarity + alpha * Jaccard(N_q, N_g). [Q, G]

    Both neighbour sets hold GALLERY indices: N_q = the k gallery items most similar to query
    q (row q of ``similarity [Q, G]``), N_g = the k gallery items most similar to gallery item
    g (row g of ``gallery_similarity [G, G]``, g itself included as in the authors' code).
    Ties are broken by the lower index. Vectorised; no [Q, G] Python loop.
    """
    num_q, num_g = similarity.shape
    if gallery_similarity.shape != (num_g, num_g):
        raise ValueError(
            f"gallery_similarity must be [{num_g}, {num_g}], got {tuple(gallery_similarity.shape)}"
        )
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    query_nn = _topk_indices(similarity, k)  # [Q, k]
    gallery_nn = _topk_indices(gallery_similarity, k)  # [G, k]
    keys, values = _jaccard_edit(similarity, query_nn, gallery_nn, alpha)  # [E]
    result = similarity.clone(memory_format=torch.contiguous_format)  # [Q, G]
    result.view(-1)[keys] = values
    return result


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
) -> dict[str, dict[str, float]]:
    """Text-to-image and image-to-text metrics of raw embeddings (one image row per image).

    Returns ``{"t2i": ..., "i2t": ...}`` and, with ``rerank``, ``"t2i_rerank"`` and
    ``"i2t_rerank"`` (the authors' Jaccard re-ranking: gallery neighbours from image-image
    similarity for t2i, text-text similarity for i2t).
    """
    text = F.normalize(text_feats.detach().float(), dim=1)  # [Nt, D]
    image = F.normalize(image_feats.detach().float(), dim=1)  # [Ni, D]
    sim = text @ image.T  # [Nt, Ni]
    sim_i2t = sim.T.contiguous()  # [Ni, Nt] the i2t passes read rows, so one transposed copy
    t2i_edits: list[Edit | None] = [None]
    i2t_edits: list[Edit | None] = [None]
    if rerank:
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        # Re-ranking changes few entries: rank() derives both rankings from one sort.
        t2i_edits.append(
            _jaccard_edit(sim, _topk_indices(sim, k), _feature_neighbours(image, k), alpha)
        )
        i2t_edits.append(
            _jaccard_edit(sim_i2t, _topk_indices(sim_i2t, k), _feature_neighbours(text, k), alpha)
        )
    t2i = _rank_edits(sim, text_ids, image_ids, ks, None, t2i_edits)
    i2t = _rank_edits(sim_i2t, image_ids, text_ids, ks, None, i2t_edits)
    results = {"t2i": t2i[0], "i2t": i2t[0]}
    if rerank:
        results["t2i_rerank"] = t2i[1]
        results["i2t_rerank"] = i2t[1]
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
