"""Side-by-side runs of the authors' code and ours: one subprocess per run, alternating.

Each run is a fresh process (``python benchmarks/side_by_side.py worker ...``) so peak RSS is
that program's own, and runs of the two programs alternate (A B B A A B ...) so a change in the
machine's background load hits both alike. The parent prints every run, the medians and the
ratios. The authors' code is imported unchanged through ``authors_code.AuthorsCode``; their
two file reads at model build (the CLIP ``.pt`` through ``torch.jit.load`` and the word table
``.npy`` under ROOT) are given what a random-weight run needs: an empty state dict (so their
``load_state_dict(strict=False)`` keeps the random initialisation) and the same random word
table our model gets, written to a temporary ROOT.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
PAPER_CONFIG = "cuhkpedes/moco_gru_cliprn50_ls_bs128_2048"


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


# ---------------------------------------------------------------------------------- training
def _inputs(a) -> tuple[object, list[dict]]:
    from train_step import bench_config, random_batch

    cfg = bench_config(a.config, a.batch, a.height, a.width, a.opts)
    gen = torch.Generator().manual_seed(a.seed)
    return cfg, [random_batch(cfg, a.batch, gen) for _ in range(2)]


def _authors_step(a, cfg, batches):
    """Their model + optimiser on the same batches; returns a step function."""
    from authors_code import AuthorsCode
    from train_step import random_word_table

    root = tempfile.mkdtemp(prefix="authors_root_")
    table_dir = Path(root) / "datasets" / "cuhkpedes"
    table_dir.mkdir(parents=True)
    np.save(table_dir / "clip_vocab_vit.npy", random_word_table(cfg))
    ac = AuthorsCode(a.authors_repo)
    real_jit_load = torch.jit.load
    torch.jit.load = lambda *args, **kw: SimpleNamespace(state_dict=dict)  # random weights, as ours
    try:
        their = ac.config(f"configs/{a.config}.yaml", ["ROOT", root, "SOLVER.IMS_PER_BATCH", a.batch,
                                                        "INPUT.HEIGHT", cfg.input.height, "INPUT.WIDTH",
                                                        cfg.input.width, "MODEL.MOCO.K", cfg.model.moco.k])
        torch.manual_seed(a.seed)
        model = ac.build_model(their).train()
    finally:
        torch.jit.load = real_jit_load
    optimizer, _ = ac.optimizer_and_scheduler(their, model)
    prepared = []
    for b in batches:  # the same word ids, each caption cut to its length (their Caption pads it)
        rows = [ids[:n] for ids, n in zip(b["word_ids"].tolist(), b["lengths"].tolist(), strict=True)]
        prepared.append((b["images"], ac.captions(rows, b["person_ids"].tolist())))

    def step(i: int) -> float:
        images, captions = prepared[i % 2]
        losses = model(images, captions)
        loss = sum(v for k, v in losses.items() if "loss" in k)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def _our_step(a, cfg, batches):
    from train_step import build_setup, train_step

    setup = build_setup(cfg, "cpu", amp=a.amp, seed=a.seed)
    if a.compile:
        start = time.perf_counter()
        setup.model = torch.compile(setup.model)
        train_step(setup, _to_layout(setup, batches[0]))
        print(f"compile + first step {time.perf_counter() - start:.1f} s", file=sys.stderr)
    prepared = [_to_layout(setup, b) for b in batches]
    return lambda i: train_step(setup, prepared[i % 2])


def _to_layout(setup, batch: dict) -> dict:
    batch = dict(batch)
    if setup.channels_last:
        batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
    return batch


def train_worker(a) -> dict:
    cfg, batches = _inputs(a)
    step = _authors_step(a, cfg, batches) if a.impl == "authors" else _our_step(a, cfg, batches)
    losses = [step(i) for i in range(a.warmup)]
    times = []
    for i in range(a.steps):
        t0 = time.perf_counter()
        losses.append(step(a.warmup + i))
        times.append(time.perf_counter() - t0)
    if a.profile:
        from torch.profiler import profile

        with profile() as prof:
            step(0)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
    return {"images_per_s": a.batch / statistics.median(times), "step_s": times, "peak_rss_gb": _peak_rss_gb(),
            "losses": losses}


# ---------------------------------------------------------------------------------- evaluation
def eval_worker(a) -> dict:
    from bench_eval import make_features

    text, text_ids, image, image_ids = make_features(a.queries, a.gallery, a.persons, a.dim, a.seed)
    if a.impl == "ours":
        from textreid.metrics import evaluate

        start = time.perf_counter()
        results = evaluate(text, text_ids, image, image_ids, rerank=True)
        seconds = time.perf_counter() - start
        r1 = results["t2i"]["R1"]
    else:
        from authors_code import AuthorsCode

        ac = AuthorsCode(a.authors_repo)
        image_of = torch.arange(a.queries) % a.gallery  # as make_features pairs captions with images

        class Dataset:  # what their evaluation() asks of the dataset
            def get_id_info(self, idx: int) -> tuple[int, int]:
                return int(image_of[idx]), int(text_ids[idx])

        predictions = {i: (image[image_of[i]], text[i]) for i in range(a.queries)}
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            r1 = float(ac.lib.evaluation.evaluation(Dataset(), predictions, out, [1, 5, 10], save_data=False,
                                                    rerank=True))
            seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_gb": _peak_rss_gb(), "t2i_R1": r1}


# ---------------------------------------------------------------------------------- parent
def run_alternating(kind: str, worker_args: list[str], rounds: int) -> dict[str, list[dict]]:
    """``rounds`` runs of each program, alternating which goes first; each in its own process."""
    env = dict(os.environ)
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    runs: dict[str, list[dict]] = {"authors": [], "ours": []}
    for r in range(rounds):
        for impl in (("authors", "ours") if r % 2 == 0 else ("ours", "authors")):
            cmd = [sys.executable, str(HERE / "side_by_side.py"), kind, "--impl", impl, *worker_args]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr)
                raise SystemExit(f"{impl} {kind} run failed (exit {proc.returncode})")
            sys.stderr.write(proc.stderr if "--profile" in worker_args else "")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[impl].append(result)
            print(f"  round {r + 1} {impl:<7} " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()
                                                             if isinstance(v, float)), flush=True)
    return runs


def compare_eval(authors_repo: Path, queries: int, gallery: int, persons: int, dim: int, rounds: int,
                 seed: int) -> None:
    """bench_eval.py --authors-repo: both evaluations (re-ranking included) alternately, and the ratio."""
    print(f"side by side: evaluation with re-ranking, both directions, {queries} captions x {gallery} images, "
          f"{persons} persons, dim {dim}, {rounds} rounds alternating, one process per run")
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, 1-min load average {os.getloadavg()[0]:.2f}")
    worker = ["--authors-repo", str(authors_repo), "--queries", str(queries), "--gallery", str(gallery),
              "--persons", str(persons), "--dim", str(dim), "--seed", str(seed)]
    runs = run_alternating("eval", worker, rounds)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    rss = {k: statistics.median(r["peak_rss_gb"] for r in v) for k, v in runs.items()}
    r1 = {k: v[0]["t2i_R1"] for k, v in runs.items()}
    for k in ("authors", "ours"):
        print(f"{k:<8} median {med[k]:.2f} s, process peak RSS {rss[k]:.2f} GB, t2i R1 {r1[k]:.2f}")
    print(f"ratio authors/ours time: {med['authors'] / med['ours']:.1f}x faster; 1-min load average "
          f"{os.getloadavg()[0]:.2f} at end")


def worker_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="one side-by-side run (used by bench_train/bench_eval)")
    p.add_argument("kind", choices=["train", "eval"])
    p.add_argument("--impl", choices=["authors", "ours"], required=True)
    p.add_argument("--authors-repo", type=Path)
    p.add_argument("--config", default=PAPER_CONFIG)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--amp", default="off")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--gallery", type=int, default=500)
    p.add_argument("--persons", type=int, default=100)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opts", nargs="*", default=[])
    return p


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    args = worker_parser().parse_args()
    torch.set_num_threads(int(os.environ.get("SIDE_BY_SIDE_THREADS", torch.get_num_threads())))
    out = train_worker(args) if args.kind == "train" else eval_worker(args)
    print(json.dumps(out))
