"""Accuracy and time of CPU bf16 autocast (SOLVER.AMP bf16) against fp32 on the synthetic set.

Generates the synthetic pedestrians under --root (once), trains the demo model
(synth/tiny_moco) twice with the same seed, once in fp32 and once with bf16 autocast, and
prints both runs' test metrics and wall times. bf16 pays off only on CPUs with native bf16
(AVX512-BF16 / AMX); without it the emulation is slower than fp32.

    python benchmarks/bench_amp_cpu.py --root /tmp/amp_check --ids 150 --epochs 4
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from textreid.config import load_config
from textreid.data.synth import generate
from textreid.engine.trainer import train
from textreid.metrics import format_table


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="working folder (data and runs)")
    p.add_argument("--ids", type=int, default=150, help="synthetic persons")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    synth = a.root / "datasets" / "synth"
    if not (synth / "annotations" / "test.json").is_file():
        generate(synth, num_ids=a.ids, seed=a.seed, progress=False)
    rows, times = {}, {}
    for amp in ("off", "bf16"):
        cfg = load_config("synth/tiny_moco", ["ROOT", str(a.root), "SOLVER.NUM_EPOCHS", str(a.epochs),
                                              "SOLVER.SEED", str(a.seed), "SOLVER.AMP", amp,
                                              "SOLVER.CHECKPOINT_PERIOD", str(a.epochs)])
        start = time.perf_counter()
        result = train(cfg, output_dir=a.root / "output" / amp, device="cpu", progress=False)
        times[amp] = time.perf_counter() - start
        rows["fp32" if amp == "off" else "bf16"] = result.metrics["test"]["t2i"]
    print(f"synth/tiny_moco, {a.ids} synthetic persons, {a.epochs} epochs, seed {a.seed}; CPU "
          f"{platform.processor() or platform.machine()} x{os.cpu_count()}, native bf16: {cpu_has_native_bf16()}, "
          f"torch {torch.__version__}")
    print(format_table({f"t2i {k}": v for k, v in rows.items()}))
    print(f"training + evaluation wall time: fp32 {times['off']:.0f} s, bf16 {times['bf16']:.0f} s "
          f"(shared machine: times are indicative)")
    print(f"bf16 - fp32: R1 {rows['bf16']['R1'] - rows['fp32']['R1']:+.2f}, mAP {rows['bf16']['mAP'] - rows['fp32']['mAP']:+.2f}")


if __name__ == "__main__":
    main()
