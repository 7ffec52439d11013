"""One training step of textreid on random inputs, shared by bench_train.py and device_check.py.

Builds a config's model with random weights (no downloads), its optimiser, and fixed random
batches shaped like the training loader's (P identities x K captions), then runs
forward + backward + optimiser step as the trainer does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from textreid.config import Config, load_config

# The model, optimiser and autocast modules (open_clip, torchvision) are imported where they are
# used, so that the side-by-side worker of the AUTHORS' code, which takes only the config and the
# random batches from here, does not carry our libraries in its peak memory.

VOCAB = 10000  # random word table rows for the BiGRU configs
NUM_CLASSES = 11003  # CUHK-PEDES training identities


def bench_config(name: str, batch: int, height: int = 0, width: int = 0, opts: list[str] | None = None) -> Config:
    """``name``'s config with random weights, ``batch`` images per step and MoCo K a multiple of it."""
    overrides = ["MODEL.PRETRAINED", "", "SOLVER.IMS_PER_BATCH", str(batch), *(opts or [])]
    if height:
        overrides += ["INPUT.HEIGHT", str(height)]
    if width:
        overrides += ["INPUT.WIDTH", str(width)]
    cfg = load_config(name, overrides)
    if cfg.model.embedding.embed_head == "moco" and cfg.model.moco.k % batch:
        cfg.model.moco.k = (cfg.model.moco.k // batch + 1) * batch
    return cfg


def random_batch(cfg: Config, batch: int, gen: torch.Generator, vocab: int = VOCAB) -> dict[str, torch.Tensor]:
    """A batch shaped like the loader's: P identities x K captions, random pixels and word ids."""
    k = cfg.dataloader.ims_per_id
    ids = torch.arange(batch // k).repeat_interleave(k)
    lengths = torch.randint(10, 40, (batch,), generator=gen)
    out = {"images": torch.randn(batch, 3, cfg.input.height, cfg.input.width, generator=gen), "person_ids": ids}
    if cfg.model.textual_model == "clip_transformer":
        length = cfg.model.text_transformer.context_length
        out["tokens"] = torch.randint(1, 49000, (batch, length), generator=gen)
    else:
        out["word_ids"] = torch.randint(0, vocab, (batch, int(lengths.max())), generator=gen)
        out["lengths"] = lengths
    return out


def random_word_table(cfg: Config, vocab: int = VOCAB) -> np.ndarray | None:
    if cfg.model.textual_model == "clip_transformer" or cfg.model.gru.onehot == "yes":
        return None
    return np.random.default_rng(0).standard_normal((vocab, cfg.model.gru.embedding_size)).astype(np.float32)


@dataclass
class Setup:
    cfg: Config
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    amp: str
    channels_last: bool
    criterion: torch.nn.Module


def build_setup(cfg: Config, device: str | torch.device, amp: str = "off", channels_last: bool | None = None,
                seed: int = 0, data=None) -> Setup:
    """Model (random weights, train mode) and optimiser of ``cfg`` on ``device``.

    ``data`` (engine.setup.prepare_data's result) supplies the word table, vocabulary size and
    identities of a real dataset; without it they are random / CUHK-PEDES-sized.
    """
    from textreid.engine.optim import build_optimizer
    from textreid.models.build import build_model
    from textreid.models.recipes import FRESH_MODULES, build_criterion
    from textreid.models.recompute import set_recompute_stages

    dev = torch.device(device)
    torch.manual_seed(seed)
    if data is not None:
        table, vocab, classes = data.word_table, data.vocab_size, data.num_classes
    else:
        table, vocab, classes = random_word_table(cfg), VOCAB, cfg.model.num_classes or NUM_CLASSES
    model = build_model(cfg, num_classes=classes, vocab_size=vocab, word_table=table, load_pretrained=False)
    model.to(dev).train()
    set_recompute_stages(model, cfg.solver.recompute_stages)
    channels_last = cfg.solver.channels_last if channels_last is None else channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    s = cfg.solver
    opt = build_optimizer(model, name=s.optimizer, base_lr=s.base_lr, weight_decay=s.weight_decay,
                          bias_lr_factor=s.bias_lr_factor, weight_decay_bias=s.weight_decay_bias, eps=s.adam_eps,
                          fresh_prefixes=FRESH_MODULES, fresh_lr_factor=s.lr_factor)
    return Setup(cfg, model, opt, dev, amp, channels_last, build_criterion(cfg))


def fixed_batches(setup: Setup, batch: int, count: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        b = {k: v.to(setup.device) for k, v in random_batch(setup.cfg, batch, gen).items()}
        if setup.channels_last:
            b["images"] = b["images"].contiguous(memory_format=torch.channels_last)
        out.append(b)
    return out


def train_step(setup: Setup, batch: dict[str, torch.Tensor]) -> float:
    """Forward + backward + optimiser step as the trainer does; returns the summed loss."""
    from textreid.engine.runtime import autocast

    setup.optimizer.zero_grad(set_to_none=True)  # before the forward: last step's gradients do not add to its peak
    with autocast(setup.device, setup.amp):
        losses = setup.criterion(setup.model(batch), batch)
    loss = sum(v for k, v in losses.items() if k.endswith("_loss"))
    loss.backward()
    setup.optimizer.step()
    return float(loss.detach())


def timed_steps(setup: Setup, batches: list[dict], steps: int, warmup: int) -> tuple[np.ndarray, list[float]]:
    """Seconds per timed step (after ``warmup`` untimed ones) and every step's loss."""
    losses = [train_step(setup, batches[i % len(batches)]) for i in range(warmup)]
    sync = torch.cuda.synchronize if setup.device.type == "cuda" else (lambda: None)
    sync()
    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        losses.append(train_step(setup, batches[(warmup + i) % len(batches)]))
        sync()
        times.append(time.perf_counter() - t0)
    return np.array(times), losses
