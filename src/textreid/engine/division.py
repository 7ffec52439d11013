"""RDE's consensus clean-pair division, for any model: which training pairs to learn from this epoch.

Before an epoch: every training pair's triplet alignment loss (``losses.tal_per_pair``, in batches
of shuffled pairs, model in eval mode) for each embedding the model has (``TextReID.pair_embeddings``:
the global one, plus RDE's token-selection one) -> min-max scaled -> a two-component GaussianMixture
per embedding -> a pair is clean for that embedding when the low-loss component's posterior is
> 0.5 (with RDE's fallback when nothing looks noisy) -> consensus: clean for every embedding = kept,
noisy for every embedding = dropped, split votes (two embeddings) kept with probability 1/2, as RDE.
With one embedding (e.g. the paper's BiGRU + moco model) its own division decides.

The result ``clean [N]`` (0/1 per training record) goes into each batch as ``batch["clean"]``; the
criterion uses it (see ``textreid.criterion``). Deterministic given (seed, epoch) and the weights,
identical on every process.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from textreid import dist, losses
from textreid.data.loaders import CaptionDataset, collate
from textreid.data.records import Record
from textreid.engine.runtime import autocast
from textreid.models.state_dict import unwrap_model

log = logging.getLogger("textreid")


def clean_probability(per_pair: np.ndarray, *, max_iter: int = 10, tol: float = 1e-2, reg_covar: float = 5e-4,
                      seed: int | np.random.RandomState = 0) -> np.ndarray:
    """Posterior ``[N]`` of the lower-mean component of a 2-component GMM on the min-max scaled losses
    (scikit-learn's GaussianMixture, as RDE; ``seed`` sets its k-means start)."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(per_pair, dtype=np.float64)
    span = x.max() - x.min()
    x = ((x - x.min()) / span if span > 0 else np.zeros_like(x)).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed)
    gmm.fit(x)
    return gmm.predict_proba(x)[:, gmm.means_.argmin()]


def split_clean(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``prob > threshold`` as 0/1; when every pair looks clean, the lowest 1% are called noisy (RDE)."""
    if prob.min() > threshold:
        threshold = np.sort(prob)[len(prob) // 100]
    return (prob > threshold).astype(np.int64)


def consensus(votes: Sequence[np.ndarray], generator: torch.Generator) -> torch.Tensor:
    """Kept (1) when every division calls a pair clean, 0 when none does; split votes: a fair coin."""
    total = torch.as_tensor(np.sum(votes, axis=0))
    if len(votes) == 1:
        return total.float()
    split = (total > 0) & (total < len(votes))
    coin = torch.randint(0, 2, (int(split.sum()),), generator=generator)
    out = (total == len(votes)).float()
    out[split] = coin.float()
    return out


@dataclass
class CleanPairDivision:
    """Configured division; ``divide`` returns ``clean [N]`` (float 0/1) or None before ``start_epoch``."""

    tau: float = 0.015
    margin: float = 0.1
    start_epoch: int = 0
    batch_size: int = 64
    gmm_max_iter: int = 10
    gmm_tol: float = 1e-2
    gmm_reg_covar: float = 5e-4
    seed: int = 0

    def divide(self, model: nn.Module, records: Sequence[Record], *, epoch: int, transform, tokenizer,
               device: torch.device, amp: str = "auto", shipped_ids: bool = False,
               channels_last: bool = False) -> torch.Tensor | None:
        if epoch < self.start_epoch:
            return None
        per_pair = self.pair_losses(model, records, epoch=epoch, transform=transform, tokenizer=tokenizer,
                                    device=device, amp=amp, shipped_ids=shipped_ids, channels_last=channels_last)
        votes = [split_clean(clean_probability(v, max_iter=self.gmm_max_iter, tol=self.gmm_tol,
                                               reg_covar=self.gmm_reg_covar, seed=self.seed))
                 for v in per_pair.values()]
        clean = consensus(votes, torch.Generator().manual_seed(self.seed * 100003 + epoch))
        log.info("clean-pair division before epoch %d: %d of %d pairs kept (%s)", epoch + 1, int(clean.sum()),
                 len(clean), ", ".join(f"{k}: {int(v.sum())} clean" for k, v in zip(per_pair, votes, strict=True)))
        return clean

    @torch.no_grad()
    def pair_losses(self, model: nn.Module, records: Sequence[Record], *, epoch: int, transform, tokenizer,
                    device: torch.device, amp: str, shipped_ids: bool, channels_last: bool) -> dict[str, np.ndarray]:
        """Per-pair TAL ``{embedding name: [N]}`` over batches of shuffled pairs (this process: every
        world-size-th batch; the vectors are gathered from all processes)."""
        core = unwrap_model(model)
        was_training = core.training
        core.eval()
        order = torch.randperm(len(records), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        batches = [order[i:i + self.batch_size].tolist() for i in range(0, len(records), self.batch_size)]
        mine = batches[dist.get_rank()::dist.get_world_size()]
        loader = DataLoader(CaptionDataset(records, transform), batch_sampler=mine,
                            collate_fn=functools.partial(collate, tokenizer=tokenizer, shipped_ids=shipped_ids),
                            generator=torch.Generator().manual_seed(0))
        found: dict[str, list[tuple[list[int], list[float]]]] = {}
        for batch in loader:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            if channels_last:
                batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                pairs = core.pair_embeddings(batch)
            for name, (img, txt) in pairs.items():
                loss = losses.tal_per_pair(img, txt, batch["person_ids"], tau=self.tau, margin=self.margin)
                found.setdefault(name, []).append((batch["indices"].tolist(), loss.cpu().tolist()))
        core.train(was_training)
        if dist.is_dist():
            parts: list = [None] * dist.get_world_size()
            torch.distributed.all_gather_object(parts, found)
            found = {k: [x for p in parts for x in p.get(k, [])] for k in parts[0]}
        out = {}
        for name, chunks in found.items():
            values = np.zeros(len(records))
            for idx, val in chunks:
                values[idx] = val
            out[name] = values
        return out


def build_division(cfg) -> CleanPairDivision | None:
    """DIVISION.* (None unless DIVISION.ENABLED)."""
    d = cfg.division
    if not d.enabled:
        return None
    return CleanPairDivision(tau=d.tau, margin=d.margin, start_epoch=d.start_epoch,
                             batch_size=d.batch_size or cfg.solver.ims_per_batch, gmm_max_iter=d.gmm_max_iter,
                             gmm_tol=d.gmm_tol, gmm_reg_covar=d.gmm_reg_covar, seed=cfg.solver.seed)
