"""Metrics and re-ranking against naive per-query Python references and hand-computed values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from textreid.metrics import (
    evaluate,
    evaluate_direction,
    format_table,
    jaccard_rerank,
    rank,
    ranking,
    topk_indices,
)
from textreid.metrics.ranking import BlockEdit, rank_blocks, relevant_pairs


def naive_order(row: list[float]) -> list[int]:
    """Gallery indices by descending score, equal scores by lower index."""
    return sorted(range(len(row)), key=lambda g: (-row[g], g))


def naive_rank(sim: torch.Tensor, qids: torch.Tensor, gids: torch.Tensor, ks=(1, 5, 10)):
    """One query at a time: full ranking, then each metric from its definition."""
    hits = {k: [] for k in ks}
    aps, inps, invalid = [], [], 0
    for q, row in enumerate(sim.tolist()):
        relevant = [gids[g].item() == qids[q].item() for g in naive_order(row)]
        positions = [i for i, r in enumerate(relevant) if r]  # 0-based ranks of relevant items
        if not positions:
            invalid += 1
            continue
        for k in ks:
            hits[k].append(1.0 if positions[0] < k else 0.0)
        aps.append(sum((n + 1) / (p + 1) for n, p in enumerate(positions)) / len(positions))
        inps.append(len(positions) / (positions[-1] + 1))
    out = {f"R{k}": 100 * sum(v) / len(v) for k, v in hits.items()}
    out["mAP"] = 100 * sum(aps) / len(aps)
    out["mINP"] = 100 * sum(inps) / len(inps)
    out["num_invalid"] = invalid
    return out


def naive_jaccard_rerank(sim: torch.Tensor, gallery_sim: torch.Tensor, k: int, alpha: float):
    """The authors' definition with Python sets: N_q, N_g are both sets of gallery indices."""
    query_sets = [set(naive_order(row)[:k]) for row in sim.tolist()]
    gallery_sets = [set(naive_order(row)[:k]) for row in gallery_sim.tolist()]
    out = sim.double().clone()
    for q, a in enumerate(query_sets):
        for g, b in enumerate(gallery_sets):
            out[q, g] += alpha * len(a & b) / len(a | b)
    return out


def assert_metrics_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def random_problem(seed: int, num_q: int, num_g: int, num_ids: int, decimals: int | None):
    gen = torch.Generator().manual_seed(seed)
    sim = torch.rand(num_q, num_g, generator=gen) * 2 - 1
    if decimals is not None:  # coarse values: many exact ties
        sim = torch.round(sim * 10**decimals) / 10**decimals
    gids = torch.randint(0, num_ids, (num_g,), generator=gen)
    qids = gids[torch.randint(0, num_g, (num_q,), generator=gen)]  # every query has a match
    return sim, qids, gids


def rank_edited(sim, qids, gids, keys, values, chunk, ks=(1, 5, 10)):
    """Metrics of sim and of sim with flat entries ``keys`` set to ``values``, in row blocks."""
    num_g = sim.shape[1]
    rows = torch.div(keys, num_g, rounding_mode="floor")

    def blocks():
        for c0 in range(0, len(sim), chunk):
            sel = (rows >= c0) & (rows < c0 + chunk)
            edit = BlockEdit(rows[sel] - c0, keys[sel] % num_g, values[sel])
            yield sim[c0 : c0 + chunk], [None, edit]

    return rank_blocks(blocks(), relevant_pairs(qids, gids, sim.device), num_g, ks)


def test_hand_computed_example():
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.1, 0.4, 0.3, 0.5]])
    qids = torch.tensor([1, 2])
    gids = torch.tensor([2, 1, 1, 2])
    # query 0: relevant at ranks 2, 3 -> AP (1/2 + 2/3)/2 = 7/12, INP 2/3
    # query 1: ranking g3 g1 g2 g0, relevant at ranks 1, 4 -> AP (1 + 2/4)/2 = 3/4, INP 2/4
    got = rank(sim, qids, gids, ks=(1, 2, 5))
    assert got["R1"] == pytest.approx(50.0)
    assert got["R2"] == pytest.approx(100.0)
    assert got["R5"] == pytest.approx(100.0)
    assert got["mAP"] == pytest.approx(100 * (7 / 12 + 3 / 4) / 2)
    assert got["mINP"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert got["num_invalid"] == 0


def test_ties_rank_lower_gallery_index_first():
    sim = torch.tensor([[0.5, 0.5, 0.1]])
    got = rank(sim, torch.tensor([7]), torch.tensor([3, 7, 7]), ks=(1, 2))
    # ranking g0 g1 g2: relevant g1, g2 at ranks 2 and 3
    assert got["R1"] == 0.0 and got["R2"] == 100.0
    assert got["mAP"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert got["mINP"] == pytest.approx(100 * 2 / 3)


@pytest.mark.parametrize(
    "seed, num_q, num_g, num_ids, decimals",
    [(0, 40, 30, 8, None), (1, 50, 23, 5, 1), (2, 17, 60, 20, 2), (3, 30, 12, 3, 0)],
)
def test_rank_matches_naive(seed, num_q, num_g, num_ids, decimals):
    sim, qids, gids = random_problem(seed, num_q, num_g, num_ids, decimals)
    want = naive_rank(sim, qids, gids)
    assert_metrics_close(rank(sim, qids, gids), want)
    for chunk in (1, 7, num_q):
        assert_metrics_close(rank(sim, qids, gids, chunk_size=chunk), want)
    assert_metrics_close(rank(sim.double(), qids.int(), gids.int()), want)
    assert_metrics_close(rank(sim.T.contiguous().T, qids, gids, chunk_size=5), want)


def test_numpy_sort_in_threads_equals_torch_sort():
    # large blocks are sorted by several threads (the suite runs with one torch thread: ask for three)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        x = torch.randn(301, 257, generator=torch.Generator().manual_seed(0))
        assert torch.equal(ranking.sort_values(x), torch.sort(x, dim=-1).values)
        assert torch.equal(ranking.sort_values(x[0]), torch.sort(x[0]).values)
    finally:
        torch.set_num_threads(before)


def test_torch_sort_path_matches_numpy_path(monkeypatch):
    sim, qids, gids = random_problem(4, 33, 41, 6, 1)
    want = rank(sim, qids, gids)
    monkeypatch.setattr(ranking, "_NUMPY_SORTABLE", ())  # as on an accelerator
    assert_metrics_close(rank(sim, qids, gids, chunk_size=4), want)
    assert_metrics_close(rank(sim.half(), qids, gids), naive_rank(sim.half().float(), qids, gids))
    gallery_sim = torch.round(torch.rand(41, 41) * 10) / 10
    torch.testing.assert_close(
        jaccard_rerank(sim, gallery_sim, k=4).double(),
        naive_jaccard_rerank(sim, gallery_sim, 4, 0.05),
        rtol=0,
        atol=1e-6,
    )
    keys = torch.arange(0, sim.numel(), 7)
    edited = sim.clone()
    edited.view(-1)[keys] = 0.5
    got = rank_edited(sim, qids, gids, keys, edited.view(-1)[keys], 4, ks=(1, 5))[1]
    assert_metrics_close(got, naive_rank(edited, qids, gids, ks=(1, 5)))


@pytest.mark.parametrize("decimals", [None, 1])
def test_ranking_a_sparse_edit_equals_ranking_the_edited_matrix(decimals):
    # evaluate() ranks the re-ranked matrix from the sort of the original one plus the
    # edited entries; edits here go up and down, hit relevant pairs and create ties.
    sim, qids, gids = random_problem(6, 37, 29, 5, decimals)
    gen = torch.Generator().manual_seed(1)
    keys = torch.sort(torch.randperm(sim.numel(), generator=gen)[:300]).values
    values = sim.reshape(-1)[keys] + torch.randn(300, generator=gen) * 0.3
    if decimals is not None:
        values = torch.round(values * 10**decimals) / 10**decimals
    edited = sim.clone()
    edited.view(-1)[keys] = values
    want = naive_rank(edited, qids, gids)
    for chunk in (1, 8, len(sim)):
        plain, got = rank_edited(sim, qids, gids, keys, values, chunk)
        assert_metrics_close(plain, naive_rank(sim, qids, gids))
        assert_metrics_close(got, want)
    assert_metrics_close(rank_edited(sim, qids, gids, keys[:0], values[:0], 5)[1], naive_rank(sim, qids, gids))


def test_queries_without_relevant_items_are_excluded_and_counted():
    sim, qids, gids = random_problem(5, 20, 15, 4, None)
    qids_with_orphans = qids.clone()
    qids_with_orphans[[3, 11]] = 999
    got = rank(sim, qids_with_orphans, gids)
    keep = torch.ones(20, dtype=torch.bool)
    keep[[3, 11]] = False
    want = naive_rank(sim[keep], qids[keep], gids)
    assert got["num_invalid"] == 2
    got["num_invalid"] = 0
    assert_metrics_close(got, want)
    with pytest.raises(ValueError, match="relevant"):
        rank(sim, torch.full((20,), 999), gids)


def test_rank_rejects_bad_inputs():
    sim = torch.rand(3, 4)
    with pytest.raises(ValueError, match="NaN"):
        rank(torch.tensor([[0.1, float("nan")]]), torch.tensor([1]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="gallery_ids"):
        rank(sim, torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="integer"):
        rank(sim, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 2, 3, 4]))


@pytest.mark.parametrize("seed, num_q, num_g, decimals", [(0, 13, 11, None), (1, 9, 16, 1)])
@pytest.mark.parametrize("k", [1, 5, 30])
def test_jaccard_rerank_matches_set_reference(seed, num_q, num_g, decimals, k):
    gen = torch.Generator().manual_seed(seed)
    sim = torch.rand(num_q, num_g, generator=gen)
    gallery_sim = torch.rand(num_g, num_g, generator=gen)
    if decimals is not None:  # ties inside the top-k cut
        sim, gallery_sim = (
            torch.round(x * 10**decimals) / 10**decimals for x in (sim, gallery_sim)
        )
    got = jaccard_rerank(sim, gallery_sim, k=k, alpha=0.05)
    want = naive_jaccard_rerank(sim, gallery_sim, k, 0.05)
    assert got.shape == sim.shape and got.dtype == sim.dtype
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("decimals", [None, 2, 1])
@pytest.mark.parametrize("k", [1, 5])
def test_topk_neighbours_match_stable_order(decimals, k):
    # wide rows take the block pre-selection path (64-column blocks + a ragged tail)
    gen = torch.Generator().manual_seed(k)
    scores = torch.randn(40, 64 * 20 + 13, generator=gen)
    if decimals is not None:
        scores = torch.round(scores * 10**decimals) / 10**decimals
    scores[3, -1] = 100.0  # the best entry in the tail
    scores[4, :] = 0.0  # one all-tied row
    got = topk_indices(scores, k)
    for row, indices in zip(scores.tolist(), got.tolist(), strict=True):
        assert sorted(indices) == sorted(naive_order(row)[:k])


def test_jaccard_rerank_alpha_zero_is_identity():
    sim = torch.rand(8, 6)
    out = jaccard_rerank(sim, torch.rand(6, 6), k=3, alpha=0.0)
    assert torch.equal(out, sim)
    assert out.data_ptr() != sim.data_ptr()
    assert torch.equal(jaccard_rerank(sim, torch.rand(6, 6), k=0), sim)


def test_evaluate_both_directions_and_rerank():
    gen = torch.Generator().manual_seed(7)
    image_ids = torch.arange(12) // 3  # 4 persons x 3 images
    text_ids = image_ids.repeat_interleave(2)  # 2 captions per image
    image_feats = torch.randn(12, 16, generator=gen) * 3
    text_feats = image_feats.repeat_interleave(2, 0) + torch.randn(24, 16, generator=gen) * 4
    got = evaluate(text_feats, text_ids, image_feats, image_ids, rerank=True, k=3, alpha=0.05)
    assert list(got) == ["t2i", "i2t", "t2i_rerank", "i2t_rerank"]

    text = F.normalize(text_feats, dim=1)
    image = F.normalize(image_feats, dim=1)
    sim = text @ image.T  # [24, 12]
    assert_metrics_close(got["t2i"], naive_rank(sim, text_ids, image_ids))
    assert_metrics_close(got["i2t"], naive_rank(sim.T, image_ids, text_ids))
    t2i = naive_jaccard_rerank(sim, image @ image.T, 3, 0.05)
    i2t = naive_jaccard_rerank(sim.T, text @ text.T, 3, 0.05)
    assert_metrics_close(got["t2i_rerank"], naive_rank(t2i.float(), text_ids, image_ids))
    assert_metrics_close(got["i2t_rerank"], naive_rank(i2t.float(), image_ids, text_ids))


def test_format_table():
    table = format_table(
        {
            "t2i": {"R1": 64.08, "R5": 81.73, "R10": 88.19, "mAP": 60.08, "mINP": 45.0},
            "i2t_rerank": {"R1": 1.0 / 3, "mAP": 100.0},
        }
    )
    lines = table.splitlines()
    assert lines[0].split() == ["direction", "R1", "R5", "R10", "mAP", "mINP"]
    assert lines[1].split() == ["t2i", "64.08", "81.73", "88.19", "60.08", "45.00"]
    assert lines[2].split() == ["i2t_rerank", "0.33", "-", "-", "100.00", "-"]
    assert len({len(line) for line in lines}) == 1


def naive_bonus(sim: torch.Tensor, gallery_sim: torch.Tensor, k: int, alpha: float) -> torch.Tensor:
    """alpha * Jaccard(N_q, N_g) as float32 (evaluate() adds it in the similarity's dtype)."""
    return (naive_jaccard_rerank(sim, gallery_sim, k, alpha) - sim.double()).float()


def tied_unit_features(seed: int, num: int, dim: int = 8) -> torch.Tensor:
    """Rows with four entries of +-0.5: exactly unit norm, every dot product exact: many ties."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.zeros(num, dim)
    for row in feats:
        row[torch.randperm(dim, generator=gen)[:4]] = 0.5 - torch.randint(0, 2, (4,), generator=gen).float()
    feats[1::7] = feats[0::7][: len(feats[1::7])]  # duplicate rows too
    return feats


@pytest.mark.parametrize("tied", [False, True])
def test_streamed_evaluate_equals_unbounded_and_naive(tied):
    # Blocks of 1, 5 and all rows (the unbounded computation) give the metrics of the naive
    # reference on the full matrices, ties included.
    gen = torch.Generator().manual_seed(3)
    image_ids = torch.randint(0, 6, (23,), generator=gen)
    text_ids = image_ids[torch.randint(0, 23, (41,), generator=gen)]
    if tied:
        image_feats, text_feats = tied_unit_features(0, 23), tied_unit_features(1, 41)
    else:
        image_feats, text_feats = torch.randn(23, 12, generator=gen), torch.randn(41, 12, generator=gen)
    text, image = F.normalize(text_feats, dim=1), F.normalize(image_feats, dim=1)
    sim = text @ image.T  # [41, 23]
    if tied:
        assert len(torch.unique(sim)) < 20  # the case under test: rows full of exact ties
    t2i = sim + naive_bonus(sim, image @ image.T, 3, 0.05)
    i2t = sim.T + naive_bonus(sim.T.contiguous(), text @ text.T, 3, 0.05)
    want = {
        "t2i": naive_rank(sim, text_ids, image_ids),
        "i2t": naive_rank(sim.T, image_ids, text_ids),
        "t2i_rerank": naive_rank(t2i, text_ids, image_ids),
        "i2t_rerank": naive_rank(i2t, image_ids, text_ids),
    }
    for chunk in (1, 5, None):
        got = evaluate(text_feats, text_ids, image_feats, image_ids, rerank=True, k=3, chunk_size=chunk)
        assert list(got) == list(want)
        for name in want:
            assert_metrics_close(got[name], want[name])
    plain, reranked = evaluate_direction(text, text_ids, image, image_ids, chunk_size=4)
    assert reranked is None
    assert_metrics_close(plain, want["t2i"])
