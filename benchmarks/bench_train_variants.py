"""Variants of our training step timed against each other in ONE process, steps alternating.

On a shared machine only ratios measured side by side are worth quoting: every variant gets its
own model (same seed, same random batches) and the variants take turns step by step (A B C,
C B A, ...), so a change in the background load hits all of them alike. Per variant it prints
the median wall and process-CPU seconds per step (the CPU time of the process, all threads,
is less sensitive to other jobs than the wall time) and the losses, which must agree.

Variants (combine with "+"):
  default          the model as textreid builds it
  open_clip_pool   the image tower's attention pool run through open_clip's (and the authors')
                   forward: every token projected to queries/keys/values
  nchw             images and weights in NCHW instead of channels-last (SOLVER.CHANNELS_LAST False)
  recomputeN       the image tower's first N stages recomputed in backward (SOLVER.RECOMPUTE_STAGES N, 1-5)

    python benchmarks/bench_train_variants.py open_clip_pool default nchw --rounds 2
    python benchmarks/bench_train_variants.py default recompute2 recompute3 --rounds 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import bench_config, build_setup, fixed_batches, train_step  # noqa: E402

VARIANTS = ("default", "open_clip_pool", "nchw", *(f"recompute{n}" for n in range(1, 6)))


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build_variant(name: str, cfg, batch: int):
    parts = set(name.split("+"))
    unknown = parts - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant {sorted(unknown)}; valid: {', '.join(VARIANTS)} (combine with +)")
    setup = build_setup(cfg, "cpu", channels_last="nchw" not in parts, seed=0)
    for part in parts:
        if part.startswith("recompute"):
            from textreid.models.recompute import set_recompute_stages

            set_recompute_stages(setup.model, int(part.removeprefix("recompute")))
    if "open_clip_pool" in parts:
        from open_clip.modified_resnet import AttentionPool2d

        for m in setup.model.modules():
            if isinstance(m, AttentionPool2d):
                m.forward = types.MethodType(AttentionPool2d.forward, m)
    return setup, fixed_batches(setup, batch)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+", help=f"{', '.join(VARIANTS)} (combine with +); the first is the baseline")
    p.add_argument("--config", default="cuhkpedes/moco_gru_cliprn50_ls_bs128_2048")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2, help="timed rounds after one untimed round")
    a = p.parse_args()
    cfg = bench_config(a.config, a.batch)
    runs = {v: build_variant(v, cfg, a.batch) for v in a.variants}
    wall: dict[str, list[float]] = {v: [] for v in a.variants}
    cpu: dict[str, list[float]] = {v: [] for v in a.variants}
    losses: dict[str, list[float]] = {v: [] for v in a.variants}
    for r in range(a.rounds + 1):
        for v in a.variants if r % 2 == 0 else a.variants[::-1]:
            setup, batches = runs[v]
            t0, c0 = time.perf_counter(), _cpu_seconds()
            losses[v].append(train_step(setup, batches[r % 2]))
            if r > 0:
                wall[v].append(time.perf_counter() - t0)
                cpu[v].append(_cpu_seconds() - c0)
            print(f"  round {r}{' (untimed)' if r == 0 else ''} {v:<22} loss {losses[v][-1]:.6f}", flush=True)
    base = a.variants[0]
    print(f"{a.config}, batch {a.batch}, {cfg.input.height}x{cfg.input.width}, {a.rounds} timed rounds, one process")
    for v in a.variants:
        w, c = statistics.median(wall[v]), statistics.median(cpu[v])
        print(f"{v:<22} step median {w:.2f} s wall, {c:.2f} s CPU | speed vs {base}: "
              f"{statistics.median(wall[base]) / w:.2f}x wall, {statistics.median(cpu[base]) / c:.2f}x CPU | "
              f"losses {', '.join(f'{x:.6f}' for x in losses[v])}")


if __name__ == "__main__":
    main()
