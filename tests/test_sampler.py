"""IdentitySampler: P×K structure, determinism, rank sharding, resume, caption coverage."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from textreid.data.sampler import IdentitySampler, max_batches


def _uneven_ids(num_ids: int = 40, seed: int = 3) -> list[int]:
    """Person id per caption: 1..9 captions per identity, interleaved like a real file."""
    rng = np.random.default_rng(seed)
    ids = [pid for pid in range(num_ids) for _ in range(int(rng.integers(1, 10)))]
    rng.shuffle(ids)
    return ids


def _batches(sampler: IdentitySampler, epoch: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_batch_is_p_identities_times_k() -> None:
    ids = _uneven_ids()
    sampler = IdentitySampler(ids, batch_size=32, ims_per_id=4, seed=0, rank=0, world_size=1)
    batches = _batches(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert len(batch) == 32
        owners = [ids[i] for i in batch]
        groups = [owners[j : j + 4] for j in range(0, 32, 4)]
        assert all(len(set(g)) == 1 for g in groups)  # K captions of one identity ...
        assert len({g[0] for g in groups}) == 8  # ... of P distinct identities


def test_identity_with_fewer_than_k_captions_is_filled_by_repetition() -> None:
    ids = [0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]  # identity 0 has 1 caption, 1 has 2
    sampler = IdentitySampler(ids, batch_size=8, ims_per_id=4, seed=1, rank=0, world_size=1)
    batches = _batches(sampler)
    assert len(batches) == 2  # 4 groups of 4, 2 identities per batch
    used = Counter(i for b in batches for i in b)
    assert used[0] == 4 and used[1] + used[2] == 4  # drawn with replacement up to K
    assert set(used) == set(range(len(ids)))  # every caption appears
    assert sampler.captions_used_fraction == 1.0


def test_every_caption_once_when_counts_are_multiples_of_k() -> None:
    ids = [pid for pid in range(8) for _ in range(8)]  # 8 ids x 8 captions -> 16 groups
    sampler = IdentitySampler(ids, batch_size=16, ims_per_id=4, seed=5, rank=0, world_size=1)
    for epoch in range(3):
        flat = [i for b in _batches(sampler, epoch) for i in b]
        assert sorted(flat) == list(range(64))
        assert sampler.captions_used_fraction == 1.0


def test_uneven_counts_use_nearly_all_captions() -> None:
    ids = _uneven_ids(num_ids=200, seed=7)
    k, p = 4, 8
    sampler = IdentitySampler(ids, batch_size=p * k, ims_per_id=k, seed=0, rank=0, world_size=1)
    counts = Counter(ids)
    groups = sum(-(-c // k) for c in counts.values())
    # no identity has more groups than there are batches here, so only the last partial batch is lost
    assert len(sampler) == groups // p
    assert sampler.captions_used_fraction >= 1 - (p - 1) * k / len(ids)
    assert sampler.captions_used_fraction > 0.95  # the authors' sampler keeps ~0.75


def test_max_batches_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        groups = rng.integers(1, 8, size=int(rng.integers(3, 12)))
        p = int(rng.integers(1, 5))
        best = max(b for b in range(0, 100) if sum(min(g, b) for g in groups) >= b * p)
        assert max_batches(groups, p) == best
    # a dominant identity limits the epoch: it can only be in one group per batch
    sampler = IdentitySampler([0] * 40 + [1, 2, 3, 4], batch_size=8, ims_per_id=4, seed=0, rank=0, world_size=1)
    assert len(sampler) == 4


def test_deterministic_per_seed_and_epoch() -> None:
    ids = _uneven_ids()
    a = IdentitySampler(ids, batch_size=16, ims_per_id=4, seed=11, rank=0, world_size=1)
    b = IdentitySampler(ids, batch_size=16, ims_per_id=4, seed=11, rank=0, world_size=1)
    assert _batches(a, 0) == _batches(b, 0)
    assert _batches(a, 3) == _batches(b, 3)
    assert _batches(a, 0) != _batches(a, 1)
    c = IdentitySampler(ids, batch_size=16, ims_per_id=4, seed=12, rank=0, world_size=1)
    assert _batches(c, 0) != _batches(a, 0)


def test_ranks_split_global_batches_by_identity() -> None:
    ids = _uneven_ids(num_ids=60)
    single = IdentitySampler(ids, batch_size=32, ims_per_id=4, seed=2, rank=0, world_size=1)
    ranks = [IdentitySampler(ids, batch_size=32, ims_per_id=4, seed=2, rank=r, world_size=4) for r in range(4)]
    for epoch in (0, 1):
        global_batches = _batches(single, epoch)
        local = [_batches(s, epoch) for s in ranks]
        assert {len(x) for x in local} == {len(global_batches)} == {len(s) for s in ranks}
        for step, batch in enumerate(global_batches):
            parts = [local[r][step] for r in range(4)]
            assert [len(x) for x in parts] == [8, 8, 8, 8]  # 2 identities x 4 captions each
            assert sum(parts, []) == batch
            owners = [{ids[i] for i in part} for part in parts]
            assert all(len(o) == 2 for o in owners)
            assert len(set().union(*owners)) == 8  # disjoint identities across ranks


def test_state_dict_resume_continues_exactly() -> None:
    ids = _uneven_ids()
    sampler = IdentitySampler(ids, batch_size=16, ims_per_id=4, seed=4, rank=0, world_size=1)
    full = {e: _batches(sampler, e) for e in (2, 3)}
    sampler.set_epoch(2)
    it = iter(sampler)
    seen = [next(it) for _ in range(5)]
    state = sampler.state_dict()
    assert state["epoch"] == 2 and state["consumed"] == 5
    fresh = IdentitySampler(ids, batch_size=16, ims_per_id=4, seed=4, rank=0, world_size=1)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)  # a trainer re-entering the epoch keeps the resume point
    assert fresh.resume_offset == 5 and len(fresh) == len(full[2])
    rest = list(fresh)
    assert seen + rest == full[2]
    fresh.set_epoch(3)
    assert len(fresh) == len(full[3]) and list(fresh) == full[3]
    # resuming on 2 processes continues the same global sequence
    halves = [IdentitySampler(ids, batch_size=16, ims_per_id=4, seed=4, rank=r, world_size=2) for r in (0, 1)]
    for h in halves:
        h.load_state_dict(sampler.state_dict(consumed=7))
    assert [a + b for a, b in zip(list(halves[0]), list(halves[1]), strict=True)] == full[2][7:]


def test_state_dict_mismatch_and_set_epoch_reset() -> None:
    ids = _uneven_ids()
    sampler = IdentitySampler(ids, batch_size=16, ims_per_id=4, seed=4, rank=0, world_size=1)
    state = sampler.state_dict()
    other = IdentitySampler(ids, batch_size=8, ims_per_id=4, seed=4, rank=0, world_size=1)
    with pytest.raises(ValueError, match="batch_size=16 but this run has 8"):
        other.load_state_dict(state)
    list(sampler)
    assert sampler.state_dict()["consumed"] == len(sampler)
    sampler.set_epoch(1)
    assert sampler.state_dict() == {**state, "epoch": 1, "consumed": 0}


def test_configuration_errors() -> None:
    ids = _uneven_ids()
    with pytest.raises(ValueError, match="does not split evenly across 3 processes"):
        IdentitySampler(ids, batch_size=16, ims_per_id=4, rank=0, world_size=3)
    with pytest.raises(ValueError, match="multiple of ims_per_id 4"):
        IdentitySampler(ids, batch_size=18, ims_per_id=4, rank=0, world_size=1)
    with pytest.raises(ValueError, match="needs 8 distinct identities .* only 3"):
        IdentitySampler([0, 1, 2] * 5, batch_size=32, ims_per_id=4, rank=0, world_size=1)
    with pytest.raises(ValueError, match="rank 4 is not in 0..3"):
        IdentitySampler(ids, batch_size=16, ims_per_id=4, rank=4, world_size=4)


def test_defaults_to_single_process() -> None:
    sampler = IdentitySampler(_uneven_ids(), batch_size=16, ims_per_id=4)
    assert (sampler.rank, sampler.world_size) == (0, 1)
