"""benchmarks/device_check.sh runs end to end in its CPU dry-run mode and passes its own checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_dry(*extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run([str(ROOT / "benchmarks" / "device_check.sh"), "--dry-run", *extra], env=env,
                          capture_output=True, text=True, timeout=900)


def check_table(proc: subprocess.CompletedProcess, checks: list[str]) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "| ok " not in line]
    assert [r.split("|")[1].strip().split(" (")[0] for r in rows] == checks
    assert all(r.split("|")[5].strip() == "yes" for r in rows)


def test_dry_run_tiny_models_all_checks() -> None:
    proc = run_dry("--tiny-models")
    check_table(proc, ["train fp32 moco RN50", "eval fp32 cpu vs cpu", "DDP step", "textreid index"])


@pytest.mark.slow
def test_dry_run_real_configs() -> None:
    # the paper's RN50/RN101 and the ViT-B/16 + CLIP text configs at tiny input sizes
    check_table(run_dry(), ["train fp32 moco RN50", "train fp32 moco RN101", "train fp32 ViT-B/16",
                            "eval fp32 cpu vs cpu", "DDP step", "textreid index"])
