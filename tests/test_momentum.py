"""Momentum update formula and the key queue (wrap-around, id filtering, initial state)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from textreid.models.momentum import KeyQueue, frozen_copy, momentum_update


def test_momentum_update_formula_and_buffers() -> None:
    torch.manual_seed(0)
    query = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    key = copy.deepcopy(query)
    with torch.no_grad():
        for p in key.parameters():
            p.copy_(torch.randn_like(p))
        query[1].running_mean.fill_(0.5)
        query[1].num_batches_tracked.fill_(7)
    k_before = [p.clone() for p in key.parameters()]
    momentum_update(query, key, 0.9)
    for q, k, k0 in zip(query.parameters(), key.parameters(), k_before, strict=True):
        torch.testing.assert_close(k, 0.9 * k0 + 0.1 * q)
    assert torch.equal(key[1].running_mean, torch.full((2,), 0.5))
    assert int(key[1].num_batches_tracked) == 7
    # m = 0: the key becomes the query; m = 1: unchanged
    momentum_update(query, key, 0.0)
    for q, k in zip(query.parameters(), key.parameters(), strict=True):
        assert torch.equal(q, k)


def test_momentum_update_rejects_different_structures() -> None:
    with pytest.raises(ValueError, match="copy of the query"):
        momentum_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), 0.9)


def test_initial_state_random_unit_keys_with_id_minus_one() -> None:
    q = KeyQueue(8, 4)
    torch.testing.assert_close(q.image_queue.norm(dim=1), torch.ones(8))
    torch.testing.assert_close(q.text_queue.norm(dim=1), torch.ones(8))
    assert (q.image_queue >= 0).all()  # the authors' torch.rand initialisation
    assert q.id_queue.tolist() == [-1] * 8 and int(q.ptr) == 0
    assert set(q.state_dict()) == {"image_queue", "text_queue", "id_queue", "ptr"}
    # initial slots are kept as negatives (only ids of the batch are dropped)
    assert q.negatives(torch.tensor([0, 1])).all()


def test_enqueue_wraps_around() -> None:
    q = KeyQueue(6, 2)
    for step in range(4):
        img = torch.full((2, 2), float(step))
        txt = torch.full((2, 2), float(10 + step))
        q.enqueue(img, txt, torch.tensor([step, step + 100]))
    # steps 0, 1, 2 fill slots 0-1, 2-3, 4-5; step 3 overwrites slots 0-1
    assert q.image_queue[:, 0].tolist() == [3, 3, 1, 1, 2, 2]
    assert q.text_queue[:, 1].tolist() == [13, 13, 11, 11, 12, 12]
    assert q.id_queue.tolist() == [3, 103, 1, 101, 2, 102]
    assert int(q.ptr) == 2


def test_enqueue_requires_multiple_of_batch() -> None:
    q = KeyQueue(8, 2)
    with pytest.raises(ValueError, match="multiple of the global batch size 3"):
        q.enqueue(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))


def test_negatives_drop_any_id_of_the_batch() -> None:
    q = KeyQueue(6, 2)
    q.id_queue.copy_(torch.tensor([5, -1, 2, 5, 9, 3]))
    mask = q.negatives(torch.tensor([5, 3, 7, 5]))
    expected = [qid not in (5, 3, 7) for qid in [5, -1, 2, 5, 9, 3]]
    assert mask.tolist() == expected


def _enqueue_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # different random initial keys per rank: overwritten below
        q = KeyQueue(4, 2)
        q.enqueue(torch.full((1, 2), float(rank)), torch.full((1, 2), 10.0 + rank), torch.tensor([rank]))
        q.enqueue(torch.full((1, 2), 2.0 + rank), torch.full((1, 2), 12.0 + rank), torch.tensor([2 + rank]))
        torch.save(q.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_enqueue_gathers_from_all_ranks(tmp_path) -> None:
    import torch.multiprocessing as mp

    # forked: spawned processes would spend seconds importing torch for two tiny all-gathers
    mp.start_processes(_enqueue_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key  # identical queues on every rank
    assert states[0]["image_queue"][:, 0].tolist() == [0, 1, 2, 3]  # rank order, step by step
    assert states[0]["id_queue"].tolist() == [0, 1, 2, 3] and int(states[0]["ptr"]) == 0


def test_fused_update_is_bit_identical_to_the_per_parameter_loop() -> None:
    torch.manual_seed(1)
    query = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(5))
    query(torch.randn(2, 3, 6, 6))
    key = copy.deepcopy(query)
    with torch.no_grad():
        for p in key.parameters():
            p.add_(torch.randn_like(p))
    want = [k.detach().clone().mul_(0.999).add_(q.detach(), alpha=1 - 0.999)
            for q, k in zip(query.parameters(), key.parameters(), strict=True)]
    momentum_update(query, key, 0.999)
    assert all(torch.equal(k, w) for k, w in zip(key.parameters(), want, strict=True))


def test_frozen_copy_shares_the_word_table_and_nothing_else() -> None:
    tower = nn.Module()
    tower.fc = nn.Linear(3, 3)
    tower.bn = nn.BatchNorm1d(3)
    tower.register_buffer("word_table", torch.randn(10, 3))
    key = frozen_copy(tower)
    assert key.word_table is tower.word_table  # one table in memory
    assert key.bn.running_mean.data_ptr() != tower.bn.running_mean.data_ptr()
    assert key.fc.weight.data_ptr() != tower.fc.weight.data_ptr()
    assert not any(p.requires_grad for p in key.parameters())
    with torch.no_grad():
        tower.bn.running_mean.fill_(2.0)
    momentum_update(tower, key, 0.5)  # shared buffers are skipped, the others copied
    assert torch.equal(key.bn.running_mean, torch.full((3,), 2.0))
