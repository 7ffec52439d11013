"""Ranks of the relevant gallery items, block of query rows by block, and the metrics from them.

Conventions (shared by the whole ``textreid.metrics`` package):

* Ranking order is descending similarity; equal similarities are ordered by the lower gallery
  index first (what a stable descending sort gives).
* A gallery item is relevant to a query when their person ids are equal.
* Queries without any relevant gallery item are excluded from every mean; how many there were
  is reported under ``"num_invalid"`` (the standard benchmarks have none).
* Similarities must be finite; a NaN or an infinity raises ``ValueError``.

No metric needs the full permutation of the gallery, only the rank of each relevant item:
"how many gallery items score higher (+ equal ones with a lower index)". Each block of query
rows is sorted by value only (no argsort) and the relevant scores are located in it by binary
search. On CPU the value sort is NumPy's SIMD sort, about ten times faster than ``torch.sort``
there; on other devices ``torch.sort`` is used. A block may also come with a sparse edit (the
re-ranking bonus changes few entries): the ranks in the edited block follow from the same sort,
corrected by the edited entries of each row.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

# Elements of one [rows, G] block of similarities (float32: 128 MiB), used when no chunk size
# is given: CUHK-PEDES (6,156 x 3,074) is one block, ICFG-PEDES (19,848 x 19,848) twelve.
BLOCK_ELEMENTS = 1 << 25

# Score dtypes kept as they are; others (half, bfloat16) are widened exactly to float32.
_SCORE_DTYPES = (torch.float32, torch.float64)
# Dtypes sorted by NumPy on CPU.
_NUMPY_SORTABLE = (torch.float32, torch.float64, torch.int32, torch.int64)


def default_chunk(num_gallery: int) -> int:
    """Query rows per block: about BLOCK_ELEMENTS similarities."""
    return max(1, BLOCK_ELEMENTS // max(num_gallery, 1))


def check_chunk(chunk_size: int | None, num_gallery: int) -> int:
    if chunk_size is None:
        return default_chunk(num_gallery)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk_size


def check_ids(num_q: int, num_g: int, query_ids: Tensor, gallery_ids: Tensor) -> None:
    if query_ids.shape != (num_q,):
        raise ValueError(f"query_ids must have shape ({num_q},), got {tuple(query_ids.shape)}")
    if gallery_ids.shape != (num_g,):
        raise ValueError(f"gallery_ids must have shape ({num_g},), got {tuple(gallery_ids.shape)}")
    for name, ids in (("query_ids", query_ids), ("gallery_ids", gallery_ids)):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got {ids.dtype}")


def runs(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Expand run lengths [N]: owner of each element and its position in the run. [sum], [sum]"""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts  # [N]
    position = torch.arange(len(owner), device=counts.device) - starts.index_select(0, owner)
    return owner, position


class Pairs(NamedTuple):
    """All (query, gallery) index pairs with equal ids, grouped by query, gallery index ascending."""

    rows: Tensor  # [P] query index
    cols: Tensor  # [P] gallery index
    slots: Tensor  # [P] position of the pair in its query's group
    counts: Tensor  # [Q] relevant items per query
    bounds: list[int]  # [Q + 1] pairs of queries [a, b) are bounds[a]:bounds[b]


def relevant_pairs(query_ids: Tensor, gallery_ids: Tensor, device: torch.device) -> Pairs:
    """The relevant pairs, O(G log G + P): no [Q, G] compare. Raises if there are none."""
    gallery_ids = gallery_ids.to(device=device, dtype=torch.int64)
    query_ids = query_ids.to(device=device, dtype=torch.int64).contiguous()
    order = torch.argsort(gallery_ids, stable=True)  # [G] same ids together, index ascending
    sorted_ids = gallery_ids.index_select(0, order)  # [G]
    lo = torch.searchsorted(sorted_ids, query_ids)  # [Q]
    counts = torch.searchsorted(sorted_ids, query_ids, right=True) - lo  # [Q]
    rows, slots = runs(counts)  # [P]
    if len(rows) == 0:
        raise ValueError(f"none of the {len(query_ids)} queries has a relevant gallery item (same id)")
    cols = order.index_select(0, lo.index_select(0, rows) + slots)  # [P]
    bounds = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)]).tolist()
    return Pairs(rows, cols, slots, counts, bounds)


def sort_values(x: Tensor) -> Tensor:
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


class BlockEdit(NamedTuple):
    """A sparse edit of a [C, G] block: new values at (rows[e], cols[e]), sorted by row then column."""

    rows: Tensor  # [E] local row
    cols: Tensor  # [E] gallery index
    values: Tensor  # [E] new value


def block_ranks(block: Tensor, pairs: Pairs, c0: int, edits: Sequence[BlockEdit | None]) -> list[Tensor]:
    """0-based ranks of the relevant pairs of query rows [c0, c0 + C) in ``block [C, G]``.

    One tensor [Pc] per edit (None: the block as it is). rank = #{g: s_g > x} + #{g < col:
    s_g == x} with x the pair's score. The block is sorted once; for an edited block the counts
    over the original row are corrected by the edited entries of that row.
    """
    num_rows, num_g = block.shape
    p0, p1 = pairs.bounds[c0], pairs.bounds[c0 + num_rows]
    if p0 == p1:
        return [block.new_zeros(0, dtype=torch.int64) for _ in edits]
    if block.dtype not in _SCORE_DTYPES:
        block = block.float()  # exact for half/bfloat16, so the order is unchanged
    block = block.contiguous()
    sorted_block = sort_values(block).to(block.device)  # [C, G] ascending
    # NaN and -inf/+inf sort to the ends of a row: checking both ends checks the row.
    if not torch.isfinite(sorted_block[:, [0, -1]]).all():
        raise ValueError("similarity contains NaN or infinite values")
    local_rows = pairs.rows[p0:p1] - c0  # [Pc]
    pair_cols = pairs.cols[p0:p1]  # [Pc]
    slot = pairs.slots[p0:p1]  # [Pc] position of the pair inside its query's group
    base = block[local_rows, pair_cols]  # [Pc] original scores of the relevant pairs
    padded = block.new_zeros(num_rows, int(pairs.counts[c0 : c0 + num_rows].max()))  # [C, Rmax]
    out = []
    for edit in edits:
        scores = base if edit is None else _edited_scores(edit, base, local_rows, pair_cols, num_g)
        padded[local_rows, slot] = scores
        right = torch.searchsorted(sorted_block, padded, right=True)[local_rows, slot]  # [Pc]
        ranks = num_g - right  # original entries scoring strictly higher
        ranks += _tied_before(block, sorted_block, local_rows, pair_cols, base, scores, right)
        if edit is not None:
            ranks += _edit_correction(block, edit, local_rows, pair_cols, scores)
        out.append(ranks)
    return out


def _tied_before(block, sorted_block, local_rows, pair_cols, base, scores, right) -> Tensor:
    """Original entries equal to each pair's score with a lower gallery index. [Pc]

    Only rows where another entry equals the score are scanned (rare with real features).
    Equal entries sit just before ``right`` in the sorted row, the pair's own original score
    among them when it was not edited.
    """
    extra = torch.zeros_like(right)
    below = right - 1 - (base == scores).long()  # [Pc] last entry not known to be the pair
    probe = sorted_block[local_rows, below.clamp(min=0)]  # [Pc]
    tied = torch.nonzero((below >= 0) & (probe == scores)).squeeze(1)  # [T]
    step = default_chunk(block.shape[1])
    gallery_index = torch.arange(block.shape[1], device=block.device)  # [G]
    for t0 in range(0, len(tied), step):
        sel = tied[t0 : t0 + step]  # [t]
        same = block[local_rows[sel]] == scores[sel, None]  # [t, G]
        extra[sel] = (same & (gallery_index < pair_cols[sel, None])).sum(1)
    return extra


def _edited_scores(edit: BlockEdit, base: Tensor, local_rows: Tensor, pair_cols: Tensor, num_g: int) -> Tensor:
    """Scores of the relevant pairs after the edit. [Pc]"""
    if len(edit.rows) == 0:
        return base
    keys = edit.rows * num_g + edit.cols  # [E] sorted
    pair_keys = local_rows * num_g + pair_cols  # [Pc]
    pos = torch.searchsorted(keys, pair_keys).clamp(max=len(keys) - 1)  # [Pc]
    found = keys.index_select(0, pos) == pair_keys  # [Pc]
    return torch.where(found, edit.values.index_select(0, pos).to(base.dtype), base)


def _edit_correction(block: Tensor, edit: BlockEdit, local_rows: Tensor, pair_cols: Tensor, scores: Tensor) -> Tensor:
    """Rank change of each pair from the edited entries of its row: -[old beats x] + [new beats x]. [Pc]"""
    per_row = torch.bincount(edit.rows, minlength=block.shape[0])  # [C] edited entries per row
    row_start = torch.cumsum(per_row, 0) - per_row  # [C] (edits are sorted by row)
    fan = per_row.index_select(0, local_rows)  # [Pc]
    pair, offset = runs(fan)  # [J] each pair against each edited entry of its row
    entry = row_start.index_select(0, local_rows.index_select(0, pair)) + offset  # [J]
    x = scores.index_select(0, pair)  # [J]
    e_rows, e_cols = edit.rows.index_select(0, entry), edit.cols.index_select(0, entry)  # [J]
    old = block[e_rows, e_cols]  # [J]
    new = edit.values.index_select(0, entry).to(block.dtype)  # [J]
    before = e_cols < pair_cols.index_select(0, pair)  # [J] a lower index wins a tie
    delta = (new > x).long() - (old > x).long() + ((new == x) & before).long() - ((old == x) & before).long()
    return torch.zeros_like(fan).index_add_(0, pair, delta)  # [Pc]


def metrics_from_ranks(ranks: Tensor, pairs: Pairs, num_g: int, ks: Sequence[int]) -> dict[str, float]:
    """R@k, mAP, mINP (percent) from the 0-based ranks [P] of the relevant pairs."""
    rows, slots, counts = pairs.rows, pairs.slots, pairs.counts
    device = ranks.device
    valid = counts > 0  # [Q]
    num_valid = int(valid.sum())
    # Sort the relevant ranks inside each query's group (rows stay grouped).
    ranks = sort_values(rows * num_g + ranks).to(device) - rows * num_g  # [P]
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


def rank_blocks(
    blocks: Iterable[tuple[Tensor, Sequence[BlockEdit | None]]],
    pairs: Pairs,
    num_g: int,
    ks: Sequence[int],
) -> list[dict[str, float]]:
    """Metrics from consecutive row blocks ``(block [C, G], edits)``, one result per edit."""
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive, got {tuple(ks)}")
    all_ranks: list[list[Tensor]] | None = None
    c0 = 0
    for block, edits in blocks:
        parts = block_ranks(block, pairs, c0, edits)
        all_ranks = [[] for _ in parts] if all_ranks is None else all_ranks
        for acc, part in zip(all_ranks, parts, strict=True):
            acc.append(part)
        c0 += block.shape[0]
    if all_ranks is None:
        raise ValueError("no query rows to rank")
    return [metrics_from_ranks(torch.cat(r), pairs, num_g, ks) for r in all_ranks]


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
    if similarity.dim() != 2:
        raise ValueError(f"similarity must be [Q, G], got shape {tuple(similarity.shape)}")
    if not similarity.is_floating_point():
        raise ValueError(f"similarity must be floating point, got {similarity.dtype}")
    num_q, num_g = similarity.shape
    check_ids(num_q, num_g, query_ids, gallery_ids)
    similarity = similarity.detach()
    step = check_chunk(chunk_size, num_g)
    pairs = relevant_pairs(query_ids, gallery_ids, similarity.device)
    blocks = ((similarity[c0 : c0 + step], [None]) for c0 in range(0, num_q, step))
    return rank_blocks(blocks, pairs, num_g, ks)[0]
