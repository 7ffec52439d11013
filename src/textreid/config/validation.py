"""Refusing a configuration with certainly wrong values, each problem naming its key and value."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from textreid.config.schema import Config, ConfigError


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


_CHOICES = {  # key -> valid values (exact spelling; SOLVER.OPTIMIZER in any case, as build_optimizer reads it)
    "solver.optimizer": ("Adam", "AdamW", "SGD"),
    "solver.lrscheduler": ("step", "cosine"),
    "solver.warmup_method": ("linear", "constant"),
    "solver.amp": ("auto", "bf16", "fp16", "off"),
    "model.embedding.embed_head": ("simple", "moco"),
    "model.recipe": ("textreid", "irra", "rde"),
}

# key -> (is the value acceptable, what is expected, needed only for training)
_RULES: dict[str, tuple[typing.Callable[[Any], bool], str, bool]] = {
    "input.height": (lambda v: v >= 1, "an integer >= 1", False),
    "input.width": (lambda v: v >= 1, "an integer >= 1", False),
    "input.pixel_mean": (lambda v: len(v) == 3 and all(map(_finite, v)), "3 finite numbers", False),
    "input.pixel_std": (lambda v: len(v) == 3 and all(_finite(x) and x > 0 for x in v), "3 numbers > 0", False),
    "input.padding": (lambda v: v >= 0, "an integer >= 0", True),
    "dataloader.num_workers": (lambda v: v >= 0, "an integer >= 0 (0 = load in the main process)", False),
    "dataloader.ims_per_id": (lambda v: v >= 1, "an integer >= 1", True),
    "test.ims_per_batch": (lambda v: v >= 1, "an integer >= 1", False),
    "test.rerank_k": (lambda v: v >= 1, "an integer >= 1", False),
    "test.rerank_alpha": (lambda v: _finite(v) and v >= 0, "a finite number >= 0", False),
    "model.num_classes": (lambda v: v >= 0, "an integer >= 0 (0 = read from the data)", True),
    "model.embedding.feature_size": (lambda v: v >= 0, "an integer >= 0 (0 = no embedding layers)", True),
    "model.embedding.dropout_prob": (lambda v: 0 <= v < 1, "a number in [0, 1)", True),
    "model.embedding.epsilon": (lambda v: 0 <= v < 1, "a number in [0, 1)", True),
    "model.gru.max_length": (lambda v: v >= 1, "an integer >= 1", False),
    "model.gru.num_units": (lambda v: v >= 1, "an integer >= 1", True),
    "model.gru.num_layer": (lambda v: v >= 1, "an integer >= 1", True),
    "model.gru.dropout_keep_prob": (lambda v: 0 < v <= 1, "a number in (0, 1]", True),
    "model.moco.k": (lambda v: v >= 1, "an integer >= 1", True),
    "model.moco.m": (lambda v: 0 <= v <= 1, "a number in [0, 1]", True),
    "model.moco.temperature": (lambda v: _finite(v) and v > 0, "a finite number > 0", True),
    "model.losses.sdm_temperature": (lambda v: _finite(v) and v > 0, "a finite number > 0", True),
    "solver.ims_per_batch": (lambda v: v >= 1, "an integer >= 1", True),
    "solver.num_epochs": (lambda v: v >= 1, "an integer >= 1", True),
    "solver.checkpoint_period": (lambda v: v >= 0, "an integer >= 0 (0 = none)", True),
    "solver.evaluate_period": (lambda v: v >= 1, "an integer >= 1", True),
    "solver.base_lr": (lambda v: _finite(v) and v > 0, "a finite number > 0", True),
    "solver.bias_lr_factor": (lambda v: _finite(v) and v > 0, "a finite number > 0", True),
    "solver.weight_decay": (lambda v: _finite(v) and v >= 0, "a finite number >= 0", True),
    "solver.weight_decay_bias": (lambda v: _finite(v) and v >= 0, "a finite number >= 0", True),
    "solver.adam_alpha": (lambda v: 0 <= v < 1, "a number in [0, 1)", True),
    "solver.adam_beta": (lambda v: 0 <= v < 1, "a number in [0, 1)", True),
    "solver.sgd_momentum": (lambda v: _finite(v) and v >= 0, "a finite number >= 0", True),
    "solver.warmup_factor": (lambda v: _finite(v) and v > 0, "a finite number > 0", True),
    "solver.warmup_epochs": (lambda v: v >= 0, "an integer >= 0", True),
    "solver.gamma": (lambda v: _finite(v) and v > 0, "a finite number > 0", True),
    "solver.steps": (lambda v: all(s >= 0 for s in v), "epochs >= 0", True),
    "solver.target_lr": (lambda v: _finite(v) and v >= 0, "a finite number >= 0", True),
    "solver.grad_clip": (lambda v: _finite(v) and v >= 0, "a finite number >= 0 (0 = no clipping)", True),
    "solver.seed": (lambda v: v >= 0, "an integer >= 0", True),
    "solver.recompute_stages": (lambda v: 0 <= v <= 5, "an integer in [0, 5] (stem, layer1..layer4; 0 = none)", True),
}


def _value(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def config_problems(cfg: Config, *, training: bool = True, world_size: int = 1) -> list[str]:
    """Values that are certainly wrong, each naming its key and value (empty = fine).

    Only what can be decided from the configuration alone; ``training=False`` skips the keys
    that only training reads (evaluation and indexing take the model from the checkpoint).
    """
    problems = []
    for key, (ok, expected, train_only) in _RULES.items():
        if train_only and not training:
            continue
        value = _value(cfg, key)
        if not ok(value):  # NaN fails every comparison
            problems.append(f"{key.upper()} = {value!r}: expected {expected}")
    for key, choices in _CHOICES.items():
        value = _value(cfg, key)
        valid = {c.lower() for c in choices} if key == "solver.optimizer" else set(choices)
        spelled = str(value).lower() if key == "solver.optimizer" else value
        if (training or key == "solver.amp") and spelled not in valid:
            problems.append(f"{key.upper()} = {value!r}: expected one of {', '.join(choices)}")
    return problems + (_training_problems(cfg, world_size) if training and not problems else [])


def _training_problems(cfg: Config, world_size: int) -> list[str]:
    """Relations between keys that make training impossible (the per-key checks passed)."""
    s, k = cfg.solver, cfg.dataloader.ims_per_id
    problems = []
    if s.ims_per_batch % k:
        problems.append(f"SOLVER.IMS_PER_BATCH = {s.ims_per_batch} is not a multiple of DATALOADER.IMS_PER_ID = {k} "
                        f"(a batch is P identities x {k} captions)")
    elif (s.ims_per_batch // k) % world_size:
        problems.append(f"SOLVER.IMS_PER_BATCH = {s.ims_per_batch} gives {s.ims_per_batch // k} identities per batch, "
                        f"which do not split across {world_size} processes; use a multiple of {k * world_size}")
    if cfg.model.embedding.embed_head.lower() == "moco" and cfg.model.moco.k % s.ims_per_batch:
        problems.append(f"MODEL.MOCO.K = {cfg.model.moco.k} is not a multiple of SOLVER.IMS_PER_BATCH = "
                        f"{s.ims_per_batch} (the queue takes one global batch per step)")
    weights = {f.name: getattr(cfg.model.losses, f.name) for f in dataclasses.fields(cfg.model.losses)
               if "temperature" not in f.name and isinstance(getattr(cfg.model.losses, f.name), (int, float))}
    bad = {n: w for n, w in weights.items() if not (_finite(w) and w >= 0)}
    problems += [f"MODEL.LOSSES.{n.upper()} = {w!r}: expected a finite number >= 0" for n, w in bad.items()]
    if not bad and not any(weights.values()):
        problems.append("MODEL.LOSSES: every loss weight is 0, so there is nothing to train")
    return problems


def validate_config(cfg: Config, *, training: bool = True, world_size: int = 1) -> Config:
    """Refuse a configuration with certainly wrong values (ConfigError naming each key and value)."""
    problems = config_problems(cfg, training=training, world_size=world_size)
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg
