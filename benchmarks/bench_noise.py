"""What the clean-pair division recovers on noisy captions, on the synthetic pedestrians.

    python benchmarks/bench_noise.py --root demo [--rates 0.2 0.5 0.8] [--seeds 0 1 2] [KEY VALUE ...]

For each seed: the tiny model (``--config``, default ``synth/tiny_moco``) trained on clean captions,
and for each noise rate on training captions moved to other pairs' images (RDE's procedure, seeded)
without and with the consensus clean-pair division (``DIVISION.ENABLED``, from
``--division-start``), same schedule and seeds. Prints held-out test Rank-1 (model selected on val),
mean ± standard deviation over the seeds, as a Markdown table. ``KEY VALUE`` overrides go to every run.
``--root`` must hold ``datasets/synth`` (``textreid synth --out DIR/datasets/synth``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from textreid.config import load_config
from textreid.engine.trainer import train


def run(config: str, root: str, seed: int, overrides: list[str]) -> float:
    cfg = load_config(config, ["ROOT", root, "SOLVER.SEED", str(seed), *overrides])
    with tempfile.TemporaryDirectory() as out:
        result = train(cfg, output_dir=Path(out), device="cpu", progress=False)
    return float(result.metrics["test"]["t2i"]["R1"])


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="data root holding datasets/synth")
    p.add_argument("--config", default="synth/tiny_moco")
    p.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.5, 0.8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--division-start", type=int, default=1, help="epochs on all pairs before the first division")
    p.add_argument("overrides", nargs="*", help="KEY VALUE config overrides for every run")
    a = p.parse_args()
    rows = {"clean": [run(a.config, a.root, s, a.overrides) for s in a.seeds]}
    for rate in a.rates:
        noisy = [*a.overrides, "DATASETS.NOISE_RATE", str(rate)]
        divided = [*noisy, "DIVISION.ENABLED", "True", "DIVISION.START_EPOCH", str(a.division_start)]
        rows[f"{rate:.0%} noisy, plain"] = [run(a.config, a.root, s, [*noisy, "DATASETS.NOISE_SEED", str(s)])
                                           for s in a.seeds]
        rows[f"{rate:.0%} noisy, clean-pair division"] = [
            run(a.config, a.root, s, [*divided, "DATASETS.NOISE_SEED", str(s)]) for s in a.seeds]
    print(f"{a.config}, seeds {a.seeds}: test Rank-1 (text to image), mean ± std")
    print("| training captions | Rank-1 |\n|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {summary(values)} |")


if __name__ == "__main__":
    main()
