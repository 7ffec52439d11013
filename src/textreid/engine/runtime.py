"""Process-level set-up: torch.distributed, logging, seeding and RNG state capture for exact resume."""

from __future__ import annotations

import logging
import os
import random
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist

from textreid import dist

log = logging.getLogger("textreid")


def autocast(device: torch.device, amp: str = "auto"):
    """Mixed precision per SOLVER.AMP.

    GPU: bf16 ("auto"/"bf16") or fp16. CPU: full fp32 unless "bf16" is asked for explicitly
    (worth it on CPUs with native bf16, e.g. AVX512-BF16/AMX; slower without, and it changes the
    numerics: `benchmarks/bench_amp_cpu.py` measures by how much). "off": fp32 everywhere.
    """
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"unknown SOLVER.AMP {amp!r}; valid: auto, bf16, fp16, off")
    if amp == "off":
        return nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)
    if device.type == "cpu" and amp == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def init_distributed(device: str) -> None:
    """Join the process group when launched by torchrun (NCCL on GPUs, gloo on CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch_dist.is_initialized():
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    torch_dist.init_process_group(backend=backend, init_method="env://")
    log.info("distributed: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)


def setup_logging(log_file: Path | None = None) -> None:
    """Log to stderr (main process only) and, when given, to ``log_file``."""
    logger = logging.getLogger("textreid")
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if dist.is_main():
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        logger.addHandler(h)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    logger.propagate = False


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (and make CPU kernels deterministic when asked)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """All RNG states of this process, for a resumable checkpoint."""
    # plain types and tensors only, so checkpoints load with torch.load(weights_only=True)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                    gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
