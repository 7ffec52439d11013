"""Wall time of the full evaluation (both directions, all metrics, Jaccard re-ranking).

Random 256-d features at CUHK-PEDES test size: 6,156 captions (queries), 3,074 images,
1,000 persons. Target: under 1 s on 2 CPU cores.

    .venv/bin/python benchmarks/bench_eval.py [--queries 6156 --gallery 3074 --persons 1000
                                               --dim 256 --repeat 5 --breakdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from textreid.metrics import (
    _feature_neighbours,
    _jaccard_edit,
    _rank_edits,
    _topk_indices,
    evaluate,
    format_table,
)


def make_features(
    num_text: int, num_image: int, num_persons: int, dim: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image and caption features where each caption is a noisy copy of its image's."""
    gen = torch.Generator().manual_seed(seed)
    image_ids = torch.arange(num_image) % num_persons  # every person has an image
    image_ids = image_ids[torch.randperm(num_image, generator=gen)]
    person = torch.randn(num_persons, dim, generator=gen)
    image_feats = person[image_ids] + torch.randn(num_image, dim, generator=gen)
    text_image = torch.arange(num_text) % num_image  # ~2 captions per image
    text_ids = image_ids[text_image]
    # noise scale chosen so text-to-image Rank-1 is ~60%, like a trained model
    text_feats = image_feats[text_image] + 6.0 * torch.randn(num_text, dim, generator=gen)
    return text_feats, text_ids, image_feats, image_ids


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def timed(fn, repeat: int) -> tuple[list[float], list[float]]:
    """Wall and process CPU seconds of each run."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def breakdown(text_feats, text_ids, image_feats, image_ids, k: int, alpha: float) -> None:
    """One pass through the stages of evaluate(), each timed on its own."""
    stages: dict[str, float] = {}

    def stage(name, fn):
        start = time.perf_counter()
        out = fn()
        stages[name] = time.perf_counter() - start
        return out

    text = stage("normalise", lambda: F.normalize(text_feats, dim=1))
    image = F.normalize(image_feats, dim=1)
    sim = stage("similarity matmul", lambda: text @ image.T)
    sim_t = stage("transpose copy", lambda: sim.T.contiguous())
    img_nn = stage("image-image top-k", lambda: _feature_neighbours(image, k))
    txt_nn = stage("text-text top-k", lambda: _feature_neighbours(text, k))
    t2i_nn = stage("t2i top-k", lambda: _topk_indices(sim, k))
    i2t_nn = stage("i2t top-k", lambda: _topk_indices(sim_t, k))
    t2i = stage("jaccard t2i", lambda: _jaccard_edit(sim, t2i_nn, img_nn, alpha))
    i2t = stage("jaccard i2t", lambda: _jaccard_edit(sim_t, i2t_nn, txt_nn, alpha))
    ks = (1, 5, 10)
    stage(
        "rank t2i (+rerank)", lambda: _rank_edits(sim, text_ids, image_ids, ks, None, [None, t2i])
    )
    stage(
        "rank i2t (+rerank)", lambda: _rank_edits(sim_t, image_ids, text_ids, ks, None, [None, i2t])
    )
    for name, seconds in stages.items():
        print(f"  {name:<20} {seconds * 1000:8.1f} ms")
    print(f"  {'sum':<20} {sum(stages.values()) * 1000:8.1f} ms")


def main(argv: list[str] | None = None) -> None:
    """Parse sizes, time evaluate(rerank=True) and print the figure with its conditions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=6156, help="text queries")
    parser.add_argument("--gallery", type=int, default=3074, help="unique images")
    parser.add_argument("--persons", type=int, default=1000, help="person ids")
    parser.add_argument("--dim", type=int, default=256, help="embedding width")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs after one warm-up")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--no-rerank", action="store_true", help="skip the Jaccard re-ranking")
    parser.add_argument("--breakdown", action="store_true", help="also time each stage once")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    load_start = _load()
    feats = make_features(args.queries, args.gallery, args.persons, args.dim, args.seed)
    rerank = not args.no_rerank
    results = evaluate(*feats, rerank=rerank)  # warm-up, and the metrics to show
    times, cpu = timed(lambda: evaluate(*feats, rerank=rerank), args.repeat)

    print(
        f"evaluate(rerank={rerank}): {args.queries} text queries x {args.gallery} images, "
        f"{args.persons} persons, dim {args.dim}, float32 features"
    )
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} torch "
        f"threads, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"1-min load average {load_start:.2f} before, {_load():.2f} after (other jobs inflate times)"
    )
    print(
        f"wall time over {args.repeat} runs: median {statistics.median(times):.3f} s, "
        f"min {min(times):.3f} s (target < 1 s on 2 CPU cores: "
        f"{'met' if statistics.median(times) < 1 else 'NOT met'} by the median)"
    )
    # CPU time barely depends on other jobs; with --threads 1 it is the work of one core.
    print(f"process CPU time per run (all threads): median {statistics.median(cpu):.3f} s")
    if args.breakdown:
        print("stages (one run):")
        breakdown(*feats, k=5, alpha=0.05)
    print(format_table(results))


if __name__ == "__main__":
    main()
