"""Identity-balanced batches (P identities × K captions), sharded by rank, resumable mid-epoch.

Plan of an epoch, computed identically on every rank from ``(seed, epoch)`` only:

1. every identity's captions are shuffled and cut into groups of K. The last, incomplete group
   is completed with other captions of the same identity drawn without replacement; an
   identity with fewer than K captions is filled up to K by drawing its own captions WITH
   replacement. So every caption is in a group (the authors drop the leftovers and use ~3/4).
2. the number of batches ``b`` is the largest for which P-distinct-identity batches exist:
   ``sum_i min(groups_i, b) >= b * P``. Groups beyond that are dropped at random (at most
   ``P - 1`` groups, plus the surplus of identities that have more than ``b`` groups), so
   ``captions_used_fraction`` is close to 1 (exactly 1 when every identity has a multiple of K
   captions and the group count is a multiple of P).
3. batches are drawn one at a time: identities that must appear in every remaining batch are
   taken, the rest are sampled without replacement with probability proportional to their
   remaining groups, and each chosen identity contributes its next group.

``grouping="authors"`` (``DATALOADER.SAMPLER authors``, part of ``REPRODUCE authors``) plans the
epoch as the authors' sampler does instead (:func:`authors_epoch`): ``max(1, floor(n/K))`` groups
per identity, an identity with fewer than K captions padded by repeating each caption, leftovers
dropped, identities drawn uniformly until fewer than P have groups left — about 3/4 of the captions
per epoch, so fewer optimizer steps per epoch than ours.

A global batch is P groups; rank r of W takes groups ``[r*P/W, (r+1)*P/W)``, i.e. whole
identities, so the concatenation of the ranks' batches of step i is the single-process batch i
and a run can resume on a different number of processes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from textreid import dist


def sample_seed(seed: int, epoch: int, batch: int, position: int) -> int:
    """A 63-bit seed for one sample's augmentation, a pure function of where it sits in the run."""
    hi, lo = (int(x) for x in np.random.SeedSequence([seed, epoch, batch, position]).generate_state(2))
    return ((hi << 32) | lo) & ((1 << 63) - 1)


GROUPINGS = ("balanced", "authors")


def authors_epoch(labels: Sequence[int], order: Sequence[int], rng: random.Random, *, ims_per_id: int,
                  ids_per_batch: int) -> list[list[int]]:
    """The authors' identity-sampler epoch (their ``TripletSampler``), re-implemented.

    ``order``: the shuffled dataset indices (their RandomSampler's output); ``rng``: draws the
    identities of each batch (their code uses Python's ``random.sample``). Each identity's captions,
    in shuffled order, are cut into groups of K with the incomplete last group dropped; an identity
    with fewer than K captions gets one group made by repeating each caption ``ceil(K/n)`` times and
    keeping the first K. While at least P identities have groups left, P of them are drawn uniformly
    (in order of first appearance in the dataset) and each gives its next group. Batches are returned
    in the order of their first index in ``order``. Unlike their code, identities need not be 0..N-1.
    """
    k, p = ims_per_id, ids_per_batch
    labels = np.asarray(labels, dtype=np.int64)
    position = np.empty(len(labels), dtype=np.int64)
    position[np.asarray(order, dtype=np.int64)] = np.arange(len(labels))
    shuffled = np.asarray(order, dtype=np.int64)
    groups: dict[int, list[list[int]]] = {}
    for ident in np.unique(labels):
        members = shuffled[labels[shuffled] == ident]  # this identity's captions in shuffled order
        if len(members) < k:
            members = np.repeat(members, -(-k // len(members)))[:k]
        groups[int(ident)] = [members[j * k:(j + 1) * k].tolist() for j in range(len(members) // k)]
    available = list(dict.fromkeys(labels.tolist()))  # first appearance in the dataset
    batches = []
    while len(available) >= p:
        batch: list[int] = []
        for ident in rng.sample(available, p):
            batch.extend(groups[ident].pop(0))
            if not groups[ident]:
                available.remove(ident)
        batches.append(batch)
    batches.sort(key=lambda b: position[b[0]])
    return batches


def max_batches(groups_per_id: np.ndarray, ids_per_batch: int) -> int:
    """Largest b with ``sum(min(groups_i, b)) >= b * P``: batches of P distinct identities possible."""
    low, high = 0, int(groups_per_id.sum()) // ids_per_batch
    while low < high:  # the condition holds on a prefix 0..b* (concave minus linear)
        mid = (low + high + 1) // 2
        if int(np.minimum(groups_per_id, mid).sum()) >= mid * ids_per_batch:
            low = mid
        else:
            high = mid - 1
    return low


def _identities_per_batch(*, batch_size: int, ims_per_id: int, rank: int, world_size: int, grouping: str,
                          seed: int) -> int:
    """P, the identities of one global batch; ValueError naming the setting that makes a batch impossible."""
    if ims_per_id < 1 or batch_size < ims_per_id or batch_size % ims_per_id:
        raise ValueError(
            f"IdentitySampler: batch size {batch_size} should be a positive multiple of ims_per_id "
            f"{ims_per_id} (SOLVER.IMS_PER_BATCH / DATALOADER.IMS_PER_ID)"
        )
    ids_per_batch = batch_size // ims_per_id
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"IdentitySampler: rank {rank} is not in 0..{world_size - 1}")
    if ids_per_batch % world_size:
        raise ValueError(
            f"IdentitySampler: each global batch holds {ids_per_batch} identities "
            f"({batch_size} / {ims_per_id}), which does not split evenly across {world_size} "
            f"processes; choose a batch size that is a multiple of {ims_per_id * world_size}"
        )
    if grouping not in GROUPINGS:
        raise ValueError(f"IdentitySampler: grouping {grouping!r} is not one of {', '.join(GROUPINGS)} "
                         "(DATALOADER.SAMPLER)")
    if seed < 0:
        raise ValueError(f"IdentitySampler: seed should be >= 0, got {seed}")
    return ids_per_batch


class IdentitySampler(Sampler[list[int]]):
    """Batch sampler: lists of dataset indices, P identities × K captions per global batch."""

    def __init__(
        self,
        person_ids: Sequence[int],
        *,
        batch_size: int,
        ims_per_id: int = 4,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        with_seeds: bool = False,
        grouping: str = "balanced",
    ) -> None:
        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
        ids_per_batch = _identities_per_batch(batch_size=batch_size, ims_per_id=ims_per_id, rank=rank,
                                              world_size=world_size, grouping=grouping, seed=seed)
        labels = np.asarray(person_ids, dtype=np.int64)  # [N]
        order = np.argsort(labels, kind="stable")
        unique, starts = np.unique(labels[order], return_index=True)
        # dataset indices of each identity, sorted by identity then index
        self._members: list[np.ndarray] = np.split(order, starts[1:]) if len(order) else []
        if len(unique) < ids_per_batch:
            raise ValueError(
                f"IdentitySampler: a batch needs {ids_per_batch} distinct identities "
                f"({batch_size} / {ims_per_id}) but the data have only {len(unique)}"
            )
        self.batch_size = batch_size
        self.ims_per_id = ims_per_id
        self.ids_per_batch = ids_per_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        # yield (index, augmentation seed) pairs: each sample's random transforms then depend only
        # on (seed, epoch, batch, position), whatever the worker count or a mid-epoch resume
        self.with_seeds = with_seeds
        self.grouping = grouping
        self._labels = labels
        self.num_samples = len(labels)
        self.num_identities = len(unique)
        groups = np.array([-(-len(m) // ims_per_id) for m in self._members], dtype=np.int64)
        self.batches_per_epoch = max_batches(groups, ids_per_batch)
        self.epoch = 0
        self._consumed = 0  # batches of ``epoch`` consumed (handed out, or delivered: mark_delivered)
        self._count_at_handout = True  # False once a loader reports delivered batches
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip)
        self._cache: tuple[int, np.ndarray] | None = None

    # ----------------------------------------------------------------------- plan
    def _plan(self, epoch: int) -> np.ndarray:
        """Global batches of ``epoch``: [b, P, K] dataset indices."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        if self.grouping == "authors":
            plan = self._authors_plan(epoch)
            self._cache = (epoch, plan)
            return plan
        rng = np.random.default_rng([self.seed, epoch])
        k, p, b = self.ims_per_id, self.ids_per_batch, self.batches_per_epoch
        groups: list[np.ndarray] = []  # per identity: [c_i, K]
        for members in self._members:
            perm = rng.permutation(members)
            if len(perm) < k:
                perm = np.concatenate([perm, rng.choice(perm, k - len(perm), replace=True)])
            elif len(perm) % k:
                fill = rng.choice(perm[: len(perm) - len(perm) % k], k - len(perm) % k, replace=False)
                perm = np.concatenate([perm, fill])
            groups.append(perm.reshape(-1, k))
        remaining = np.minimum([len(g) for g in groups], b).astype(np.int64)  # [I]
        surplus = int(remaining.sum()) - b * p
        if surplus > 0:  # drop random groups (each identity loses its last, itself a random group)
            owners = np.repeat(np.arange(len(remaining)), remaining)
            np.subtract.at(remaining, rng.choice(owners, surplus, replace=False), 1)
        used = np.zeros(len(groups), dtype=np.int64)
        plan = np.empty((b, p, k), dtype=np.int64)
        for t in range(b):
            left = b - t
            must = np.flatnonzero(remaining == left)  # would not fit in later batches otherwise
            free = np.flatnonzero((remaining > 0) & (remaining < left))
            need = p - len(must)
            if need:
                # weighted sampling without replacement (Efraimidis–Spirakis keys)
                keys = np.log(1.0 - rng.random(len(free))) / remaining[free]
                must = np.concatenate([must, free[np.argpartition(-keys, need - 1)[:need]]])
            chosen = rng.permutation(must)  # [P]
            for j, ident in enumerate(chosen):
                plan[t, j] = groups[ident][used[ident]]
            used[chosen] += 1
            remaining[chosen] -= 1
        self._cache = (epoch, plan)
        return plan

    def _authors_plan(self, epoch: int) -> np.ndarray:
        """[b, P, K] from :func:`authors_epoch`, its shuffle and draws seeded by (seed, epoch) only."""
        torch_seed, python_seed = (int(x) for x in np.random.SeedSequence([self.seed, epoch, 1]).generate_state(2))
        # the authors shuffle with torch.randperm (their RandomSampler)
        order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(torch_seed)).tolist()
        batches = authors_epoch(self._labels, order, random.Random(python_seed), ims_per_id=self.ims_per_id,
                                ids_per_batch=self.ids_per_batch)
        return np.asarray(batches, dtype=np.int64).reshape(len(batches), self.ids_per_batch, self.ims_per_id)

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All global batches of an epoch (every rank's share, concatenated in rank order)."""
        plan = self._plan(self.epoch if epoch is None else epoch)
        return [row.reshape(-1).tolist() for row in plan]

    @property
    def captions_used_fraction(self) -> float:
        """Fraction of the dataset's captions that appear in the current epoch's batches."""
        plan = self._plan(self.epoch)
        return len(np.unique(plan)) / max(self.num_samples, 1)

    # ----------------------------------------------------------------------- iteration
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose plan the next iteration yields."""
        if epoch != self.epoch:
            self._consumed = 0
        self.epoch = epoch

    def _skip(self) -> int:
        return self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0

    @property
    def resume_offset(self) -> int:
        """Batches of the current epoch the next iteration skips (non-zero after a mid-epoch resume)."""
        return self._skip()

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank; a resumed epoch yields fewer)."""
        if self.grouping == "authors":  # varies with the epoch's draws
            return len(self._plan(self.epoch))
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        plan = self._plan(self.epoch)
        start = self._skip()
        self._resume = None
        local = self.ids_per_batch // self.world_size
        lo, hi = self.rank * local, (self.rank + 1) * local
        self._consumed = start
        for t in range(start, len(plan)):
            if self._count_at_handout:
                self._consumed = t + 1  # counted when handed out, i.e. before the step runs
            batch = plan[t, lo:hi].reshape(-1).tolist()
            if self.with_seeds:
                first = lo * self.ims_per_id
                batch = [(i, sample_seed(self.seed, self.epoch, t, first + j)) for j, i in enumerate(batch)]
            yield batch

    def mark_delivered(self, count: int) -> None:
        """Record that ``count`` batches of the current epoch reached the training loop.

        Called by ``loaders.TrainLoader``, whose workers fetch batches ahead: from then on
        ``state_dict`` counts delivered batches instead of handed-out index lists.
        """
        self._count_at_handout = False
        self._consumed = count

    # ----------------------------------------------------------------------- resume
    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Epoch and batches consumed in it (default: yielded so far, or delivered by TrainLoader).

        A plain DataLoader with workers fetches index lists ahead of the training step; use
        ``build_train_loader`` (which reports delivered batches) or pass ``consumed``.
        """
        return {
            "epoch": self.epoch,
            "consumed": self._consumed if consumed is None else int(consumed),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "ims_per_id": self.ims_per_id,
            "num_samples": self.num_samples,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields the rest of its epoch."""
        for key in ("seed", "batch_size", "ims_per_id", "num_samples"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"IdentitySampler: the saved sampler state has {key}={state[key]} but this run has "
                    f"{getattr(self, key)}; the epoch cannot be continued exactly"
                )
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        per_epoch = len(self._plan(epoch)) if self.grouping == "authors" else self.batches_per_epoch
        if not 0 <= consumed <= per_epoch:
            raise ValueError(
                f"IdentitySampler: saved state says {consumed} batches consumed, but an epoch has {per_epoch}"
            )
        self.epoch = epoch
        self._consumed = consumed
        self._resume = (epoch, consumed)
