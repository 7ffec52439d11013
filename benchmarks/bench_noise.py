"""What the clean-pair division recovers on noisy captions, on the synthetic pedestrians.

    python benchmarks/bench_noise.py --root demo [--rates 0.2 0.5 0.8] [--seeds 0 1 2] [--jobs 2] [KEY VALUE ...]
    python benchmarks/bench_noise.py --root demo --pretrain-root other [--pretrain-epochs 12] ...   (or --init CKPT)

For each seed: the tiny model (``--config``, default ``synth/tiny_moco``) trained on clean captions
without and with the consensus clean-pair division (``DIVISION.ENABLED``, from ``--division-start``),
and for each noise rate on training captions moved to other pairs' images (RDE's procedure, seeded
by the run's seed) without and with the division; same schedule and seeds. Prints held-out test
Rank-1 (of the model selected on val, and of the last epoch's), mean ± standard deviation over the
seeds, as a Markdown table (with ``--init``/``--pretrain-root`` a first row: the starting model itself), and
for the division runs how well the last division matched the truth (share of the truly noisy pairs it
dropped, share of the kept pairs that are truly clean). ``KEY VALUE`` overrides go to every run.
``--root`` must hold ``datasets/synth`` (``textreid synth --out DIR/datasets/synth``). ``--jobs`` runs
that many trainings at once (``--threads`` torch threads each); results do not depend on it.

By default every run starts from random weights. RDE divides with a model that starts from pretrained
weights; the analogue here: ``--pretrain-root DIR`` (a data root whose ``datasets/synth`` was written
with another ``textreid synth --seed``, so its persons are not the evaluation set's) trains the model
once on those clean captions (``--pretrain-epochs`` epochs, the rate ÷10 after three quarters of them,
the shared ``KEY VALUE`` overrides except that the learning rate is ``--pretrain-lr`` or the config's, seed 0), or ``--init CKPT`` names such a checkpoint; every run of
the table then fine-tunes from it (``MODEL.WEIGHT``; an identity classifier for another number of
persons keeps its fresh weights). With ``--json``, runs already in that file for the same settings
are not run again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from textreid.config import load_config
from textreid.data.noise import noisy_records
from textreid.engine.evaluator import evaluate_split
from textreid.engine.setup import build_model_for_training, prepare_data, read_splits
from textreid.engine.trainer import train
from textreid.models.checkpoint import load_checkpoint


def _division_quality(cfg, last: Path) -> dict[str, float]:
    """Share of truly noisy pairs the last division dropped, share of kept pairs truly clean, share kept."""
    kept = load_checkpoint(last)["train_state"]["clean"]
    if kept is None:
        return {}
    kept = kept.numpy() > 0.5
    d = cfg.datasets
    _, clean = noisy_records(read_splits(cfg, d.train), rate=d.noise_rate, seed=d.noise_seed)
    noisy = ~clean
    return {"noisy_dropped": float((~kept & noisy).sum() / max(noisy.sum(), 1)),
            "kept_clean": float((kept & clean).sum() / max(kept.sum(), 1)), "kept": float(kept.mean())}


def _use_threads(threads: int) -> None:
    """Torch threads in this worker (0: torch's default)."""
    if threads:
        torch.set_num_threads(threads)


def row_name(rate: float, kind: str) -> str:
    """A noisy row of the table: ``kind`` is "plain", "clean-pair division" or the random control's."""
    return f"{rate:.0%} noisy, {kind}"


CONTROL = "random drop (the division's share)"


def pretrain(config: str, root: str, epochs: int, lr: float, overrides: list[str], out: Path, threads: int = 0) -> Path:
    """Train once on the clean captions under ``root`` -> the checkpoint selected on its val split."""
    _use_threads(threads)
    steps = f"({max(1, round(0.75 * epochs))},)"
    lr = lr or load_config(config, []).solver.base_lr
    cfg = load_config(config, ["ROOT", root, "SOLVER.SEED", "0", *overrides, "SOLVER.NUM_EPOCHS", str(epochs),
                               "SOLVER.STEPS", steps, "SOLVER.BASE_LR", str(lr)])
    train(cfg, output_dir=out, device="cpu", progress=False)
    return out / "best.pth"


@contextlib.contextmanager
def _random_division(keep: float | None, seed: int) -> Iterator[None]:
    """The control for the division: before each epoch keep a random ``keep`` share of the pairs, whatever
    their losses (patched in this worker process for one run; None: the real division)."""
    from textreid.engine.division import CleanPairDivision

    def divide(self, model, records, *, epoch: int, **_) -> torch.Tensor | None:
        if epoch < self.start_epoch:
            return None
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        return (torch.rand(len(records), generator=gen) < keep).float()

    real = CleanPairDivision.divide
    if keep is not None:
        CleanPairDivision.divide = divide
    try:
        yield
    finally:
        CleanPairDivision.divide = real


def run(config: str, root: str, seed: int, overrides: list[str], threads: int = 0,
        random_keep: float | None = None) -> dict:
    """One training run -> ``{"R1": test t2i Rank-1 of the model selected on val, "R1_last": of the last
    epoch's model, "epoch": the selected epoch, "seconds", "division": {...}}``. With ``random_keep`` the
    division (which ``overrides`` must enable) is replaced by a random one keeping that share."""
    _use_threads(threads)
    cfg = load_config(config, ["ROOT", root, "SOLVER.SEED", str(seed), *overrides, "TEST.EVERY_EPOCH", "True"])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out, _random_division(random_keep, seed):
        result = train(cfg, output_dir=Path(out), device="cpu", progress=False)
        division = _division_quality(cfg, Path(out) / "last.pth") if cfg.division.enabled else {}
    per_epoch = result.metrics["authors_protocol"]["R1_per_epoch"]
    return {"R1": float(result.metrics["test"]["t2i"]["R1"]), "R1_last": float(per_epoch[str(cfg.solver.num_epochs)]),
            "epoch": result.metrics["best_epoch"], "seconds": time.perf_counter() - t0, "division": division}


def evaluate_init(config: str, root: str, checkpoint: str, overrides: list[str], threads: int = 0) -> dict:
    """Val and test Rank-1 (text to image) of the starting checkpoint itself, before any fine-tuning."""
    _use_threads(threads)
    # built as a fine-tuning run builds it (this data's vocabulary and word table): the runs' starting point
    cfg = load_config(config, ["ROOT", root, *overrides, "MODEL.WEIGHT", checkpoint])
    data = prepare_data(cfg)
    model = build_model_for_training(cfg, data).eval()
    return {split: float(evaluate_split(model, records, preprocess=data.preprocess,
                                        batch_size=cfg.test.ims_per_batch)[0]["t2i"]["R1"])
            for split, records in (("val", data.val), ("test", data.test))}


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f}"


def plan(a: argparse.Namespace) -> dict[str, list[list[str]]]:
    """Row name -> the overrides of each seed's run."""
    divided = ["DIVISION.ENABLED", "True", "DIVISION.START_EPOCH", str(a.division_start)]
    shared = [*a.overrides, *(["MODEL.WEIGHT", a.init] if a.init else [])]
    rows = {"clean": [list(shared) for _ in a.seeds],
            "clean, clean-pair division": [[*shared, *divided] for _ in a.seeds]}
    for rate in a.rates:
        noisy = [[*shared, "DATASETS.NOISE_RATE", str(rate), "DATASETS.NOISE_SEED", str(s)] for s in a.seeds]
        rows[row_name(rate, "plain")] = noisy
        rows[row_name(rate, "clean-pair division")] = [[*o, *divided] for o in noisy]
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="data root holding datasets/synth")
    p.add_argument("--config", default="synth/tiny_moco")
    p.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.5, 0.8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--division-start", type=int, default=1, help="epochs on all pairs before the first division")
    p.add_argument("--pretrain-root", default="", help="data root of other persons' clean captions to pretrain on")
    p.add_argument("--pretrain-epochs", type=int, default=12)
    p.add_argument("--pretrain-lr", type=float, default=0.0, help="pretraining's SOLVER.BASE_LR (default: the "
                   "config's own, not a BASE_LR among the overrides, which are the fine-tuning's)")
    p.add_argument("--pretrain-out", default="", help="where the pretraining writes (default: "
                   "<pretrain-root>/output/bench_noise_pretrain)")
    p.add_argument("--init", default="", help="checkpoint every run fine-tunes from (instead of --pretrain-root)")
    p.add_argument("--random-control", action="store_true", help="also, per noise rate and seed, a run whose "
                   "division keeps a random share of the pairs, the share the real division kept (its last division)")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once")
    p.add_argument("--threads", type=int, default=0, help="torch threads per training (0: torch's default)")
    p.add_argument("--json", default="", help="also write every run's result to this file (and skip runs in it)")
    p.add_argument("overrides", nargs="*", help="KEY VALUE config overrides for every run")
    a = p.parse_args(argv)
    if a.init and a.pretrain_root:
        p.error("give --init or --pretrain-root, not both")
    if a.init and not Path(a.init).is_file():
        p.error(f"--init {a.init}: no such checkpoint")
    if a.init:  # MODEL.WEIGHT is read relative to --root
        a.init = str(Path(a.init).resolve())
    return a


def init_description(a: argparse.Namespace) -> str:
    if a.pretrain_root:
        return (f"fine-tuned from a model pretrained {a.pretrain_epochs} epochs on the clean captions of "
                f"{a.pretrain_root} ({a.init})")
    return f"fine-tuned from {a.init}" if a.init else "from random initialisation"


def previous_results(a: argparse.Namespace, rows: dict) -> dict[str, dict[int, dict]]:
    """Finished runs in ``--json`` written with the same settings (an interrupted table goes on)."""
    results: dict[str, dict[int, dict]] = {name: {} for name in rows}
    if not a.json or not Path(a.json).is_file():
        return results
    old = json.loads(Path(a.json).read_text())
    if (old.get("config"), old.get("overrides"), old.get("division_start"), old.get("init", "")) != (
            a.config, a.overrides, a.division_start, a.init):
        return results
    controls = {row_name(rate, CONTROL) for rate in a.rates} if a.random_control else set()
    for name, by_seed in old.get("results", {}).items():
        if name in results or name in controls:
            results[name] = {int(s): r for s, r in by_seed.items() if int(s) in a.seeds}
    return results


def main() -> None:
    a = parse_args()
    if a.pretrain_root:
        out = Path(a.pretrain_out or Path(a.pretrain_root) / "output" / "bench_noise_pretrain")
        t0 = time.perf_counter()
        a.init = str(pretrain(a.config, a.pretrain_root, a.pretrain_epochs, a.pretrain_lr, a.overrides, out,
                              a.threads))
        print(f"# pretrained on {a.pretrain_root}: {a.init} ({(time.perf_counter() - t0) / 60:.1f} min)",
              file=sys.stderr, flush=True)
    rows = plan(a)
    results = previous_results(a, rows)
    # seed-major: an interrupted run still leaves whole tables for its first seeds (in --json)
    jobs = [(name, seed, runs[i]) for i, seed in enumerate(a.seeds) for name, runs in rows.items()
            if seed not in results[name]]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=a.jobs, mp_context=ctx) as pool:
        init_r1 = pool.submit(evaluate_init, a.config, a.root, a.init, a.overrides, a.threads).result() if a.init else None
        futures = {pool.submit(run, a.config, a.root, seed, o, a.threads): (name, seed) for name, seed, o in jobs}
        collect(a, futures, results, init_r1)
        if a.random_control:  # after the divided runs: each control keeps the share its divided run kept
            futures = {pool.submit(run, a.config, a.root, seed, o, a.threads, keep): (name, seed)
                       for name, seed, o, keep in random_controls(a, rows, results)}
            collect(a, futures, results, init_r1)
    print_table(a, results, init_r1)


def collect(a: argparse.Namespace, futures: dict, results: dict, init_r1: dict | None) -> None:
    """Each run's result into ``results`` (and ``--json``) as soon as it is done, in submission order."""
    for future in futures:
        name, seed = futures[future]
        results.setdefault(name, {})[seed] = r = future.result()
        print(f"# {name}, seed {seed}: R1 {r['R1']:.2f} ({r['seconds'] / 60:.1f} min) {r['division']}",
              file=sys.stderr, flush=True)
        save(a, results, init_r1)


def random_controls(a: argparse.Namespace, rows: dict, results: dict) -> list[tuple[str, int, list[str], float]]:
    """(row, seed, overrides, share kept) of the random-division runs not yet in ``results``."""
    out = []
    for rate in a.rates:
        divided, name = row_name(rate, "clean-pair division"), row_name(rate, CONTROL)
        for i, seed in enumerate(a.seeds):
            if seed not in results.get(name, {}):
                out.append((name, seed, rows[divided][i], results[divided][seed]["division"]["kept"]))
    return out


def save(a: argparse.Namespace, results: dict, init_r1: dict | None) -> None:
    if a.json:
        Path(a.json).write_text(json.dumps({"config": a.config, "overrides": a.overrides,
                                            "division_start": a.division_start, "init": a.init,
                                            "init_R1": init_r1, "results": results}, indent=1))


def print_table(a: argparse.Namespace, results: dict[str, dict[int, dict]], init_r1: dict | None) -> None:
    print(f"{a.config}, {init_description(a)}, seeds {a.seeds}, overrides {' '.join(a.overrides) or '(none)'}: "
          "test Rank-1 (text to image), mean ± std over the seeds")
    print("| training captions | Rank-1, model selected on val | Rank-1, last epoch | "
          "noisy pairs dropped / kept pairs clean (last division) |\n|---|---|---|---|")
    if init_r1 is not None:
        print(f"| none (the starting checkpoint, not fine-tuned) | {init_r1['test']:.1f} | | |")
    for name, by_seed in results.items():
        div = [by_seed[s]["division"] for s in a.seeds if by_seed[s]["division"]]
        quality = (f"{np.mean([d['noisy_dropped'] for d in div]):.0%} / {np.mean([d['kept_clean'] for d in div]):.0%}"
                   if div else "")
        print(f"| {name} | {summary([by_seed[s]['R1'] for s in a.seeds])} | "
              f"{summary([by_seed[s]['R1_last'] for s in a.seeds])} | {quality} |")


if __name__ == "__main__":
    main()
