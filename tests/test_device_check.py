"""benchmarks/device_check.sh runs end to end in its CPU dry-run mode and passes its own checks."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.sh"


def run_dry(*extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run([str(SCRIPT), "--dry-run", *extra], env=env, capture_output=True, text=True, timeout=900)


def _check_in_child(argv: list[str], log: str) -> None:
    """``device_check.py ARGV`` in a forked child (no second import of torch), output in ``log``."""
    f = open(log, "w", buffering=1)  # noqa: SIM115 - open until the child exits
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    sys.stdout = sys.stderr = f
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import device_check

    sys.exit(device_check.main(argv))


def run_dry_forked(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """What ``run_dry`` returns, with the script's Python run in a child forked from this process."""
    log = tmp_path / "device_check.out"
    proc = multiprocessing.get_context("fork").Process(target=_check_in_child, args=(["--dry-run", *extra], str(log)))
    proc.start()
    proc.join(timeout=900)
    proc.kill()
    return subprocess.CompletedProcess(["device_check.py"], proc.exitcode, log.read_text(), "")


def check_table(proc: subprocess.CompletedProcess, checks: list[str]) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "| ok " not in line]
    assert [r.split("|")[1].strip().split(" (")[0] for r in rows] == checks
    assert all(r.split("|")[5].strip() == "yes" for r in rows)


def test_the_script_runs_device_check_py_with_src_first_on_the_path(tmp_path: Path) -> None:
    # a stand-in interpreter records how the wrapper calls it; the checks themselves are below
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\nprintf "%s" "$PYTHONPATH" > "$0.path"\nexit 3\n')
    fake.chmod(0o755)
    proc = subprocess.run([str(SCRIPT), "--dry-run", "--tiny-models"], env={**os.environ, "PYTHON": str(fake)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3  # the interpreter's status comes back
    assert (tmp_path / "python.args").read_text().split() == [str(ROOT / "benchmarks" / "device_check.py"),
                                                               "--dry-run", "--tiny-models"]
    assert (tmp_path / "python.path").read_text().split(":")[0] == str(ROOT / "src")


def test_dry_run_tiny_models_all_checks(tmp_path: Path) -> None:
    proc = run_dry_forked(tmp_path, "--tiny-models")
    check_table(proc, ["train fp32 moco RN50", "eval fp32 cpu vs cpu", "DDP step", "textreid index"])


@pytest.mark.slow
def test_dry_run_real_configs() -> None:
    # the paper's RN50/RN101 and the ViT-B/16 + CLIP text configs at tiny input sizes
    check_table(run_dry(), ["train fp32 moco RN50", "train fp32 moco RN101", "train fp32 ViT-B/16",
                            "eval fp32 cpu vs cpu", "DDP step", "textreid index"])
