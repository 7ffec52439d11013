"""Wall time and peak memory of the full evaluation (both directions, all metrics, re-ranking).

Random features shaped like a dataset's test split (--size): captions are the queries of
text-to-image, unique images the gallery (and the other way round for image-to-text).

    cuhk  CUHK-PEDES test:  6,156 captions x  3,074 images, 1,000 persons
    icfg  ICFG-PEDES test: 19,848 captions x 19,848 images, 1,000 persons
    rstp  RSTPReid test:    2,000 captions x  1,000 images,   200 persons

Peak memory is the process's peak resident set during evaluate() minus its resident set
just before (Linux: the peak is reset through /proc/self/clear_refs).

    python benchmarks/bench_eval.py --size icfg --repeat 1
    python benchmarks/bench_eval.py --size cuhk --check          # streamed == one block
    python benchmarks/bench_eval.py --size cuhk --breakdown      # time per stage
    python benchmarks/bench_eval.py --authors-repo DIR --queries 1000 --gallery 500   # side by side
    python benchmarks/bench_eval.py --size cuhk --against-src OLD/src   # another checkout, alternating

``--against-src`` times the ``textreid.metrics.evaluate`` of another source tree (e.g. ``git archive
REV src | tar -x -C OLD``) and this one alternately in one process on the same features, so that a
change is compared on the same machine under the same load.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from textreid.metrics import evaluate, evaluate_direction, feature_neighbours, format_table
from textreid.metrics.ranking import BLOCK_ELEMENTS

SIZES = {"cuhk": (6156, 3074, 1000), "icfg": (19848, 19848, 1000), "rstp": (2000, 1000, 200)}


def make_features(
    num_text: int, num_image: int, num_persons: int, dim: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image and caption features where each caption is a noisy copy of its image's."""
    gen = torch.Generator().manual_seed(seed)
    image_ids = torch.arange(num_image) % num_persons  # every person has an image
    image_ids = image_ids[torch.randperm(num_image, generator=gen)]
    person = torch.randn(num_persons, dim, generator=gen)
    image_feats = person[image_ids] + torch.randn(num_image, dim, generator=gen)
    text_image = torch.arange(num_text) % num_image  # ~2 captions per image at CUHK size
    text_ids = image_ids[text_image]
    # noise scale chosen so text-to-image Rank-1 is ~60% at CUHK size, like a trained model
    text_feats = image_feats[text_image] + 6.0 * torch.randn(num_text, dim, generator=gen)
    return text_feats, text_ids, image_feats, image_ids


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def measure(fn):
    """(result, wall seconds, process CPU seconds, extra peak RSS in GiB over the RSS before)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM (peak RSS) to the current RSS
        before = _status_kib("VmRSS")
    except OSError:  # not Linux: no peak reset, report nan
        before = None
    start, start_cpu = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    extra = (_status_kib("VmHWM") - before) / 1024**2 if before is not None else float("nan")
    return out, wall, cpu, extra


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def breakdown(text_feats, text_ids, image_feats, image_ids, k: int, alpha: float) -> None:
    """One pass through the stages of evaluate(), each timed on its own (public functions only)."""
    text, image = F.normalize(text_feats, dim=1), F.normalize(image_feats, dim=1)
    step = BLOCK_ELEMENTS // len(image)

    def products_only() -> None:  # the t2i blocks' matrix products alone (no ranking)
        for c0 in range(0, len(text), step):
            text[c0 : c0 + step] @ image.T

    stages = [
        ("t2i products only", products_only),
        ("image-image top-k", lambda: feature_neighbours(image, k)),
        ("text-text top-k", lambda: feature_neighbours(text, k)),
        ("t2i rank", lambda: evaluate_direction(text, text_ids, image, image_ids)),
        ("i2t rank", lambda: evaluate_direction(image, image_ids, text, text_ids)),
    ]
    outs = {}
    total = 0.0
    for name, fn in stages:
        outs[name], seconds, cpu, extra = measure(fn)
        total += seconds
        print(f"  {name:<26} {seconds * 1000:9.1f} ms ({cpu:.1f} s CPU)  peak +{extra:.2f} GiB")
    for name, q, qi, g, gi, nn in (
        ("t2i rank + re-rank", text, text_ids, image, image_ids, outs["image-image top-k"]),
        ("i2t rank + re-rank", image, image_ids, text, text_ids, outs["text-text top-k"]),
    ):
        def run(q=q, qi=qi, g=g, gi=gi, nn=nn):
            return evaluate_direction(q, qi, g, gi, gallery_neighbours=nn, alpha=alpha)

        _, seconds, cpu, extra = measure(run)
        print(f"  {name:<26} {seconds * 1000:9.1f} ms ({cpu:.1f} s CPU)  peak +{extra:.2f} GiB")


def _evaluate_of(src: Path | None):
    """``textreid.metrics.evaluate`` imported from ``src`` (None: this checkout's), freshly."""
    for name in [m for m in sys.modules if m == "textreid" or m.startswith("textreid.")]:
        del sys.modules[name]
    if src is not None:
        sys.path.insert(0, str(src.resolve()))
    try:
        import textreid.metrics as metrics

        return metrics.evaluate, Path(metrics.__file__).resolve()
    finally:
        if src is not None:
            sys.path.remove(str(src.resolve()))


def compare_trees(other_src: Path, feats, *, rerank: bool, repeat: int) -> None:
    """Wall and CPU time of the two trees' evaluate(), runs alternating (A B, B A, ...), same features."""
    if not (other_src / "textreid" / "metrics").exists() and not (other_src / "textreid" / "metrics.py").exists():
        raise SystemExit(f"--against-src {other_src}: no textreid/metrics in it (give the src/ folder of a checkout)")
    trees = {"other": _evaluate_of(other_src), "this": _evaluate_of(None)}  # this checkout's modules stay imported
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
    results = {}
    for r in range(repeat + 1):  # round 0 is a warm-up
        for name in (("other", "this") if r % 2 == 0 else ("this", "other")):
            results[name], wall, cpu, _ = measure(lambda f=trees[name][0]: f(*feats, rerank=rerank))
            if r:
                times[name].append((wall, cpu))
    print(f"alternating runs, {repeat} timed each after one warm-up, 1-min load {_load():.2f} at the end:")
    for name, (_, where) in trees.items():
        wall = statistics.median(t[0] for t in times[name])
        cpu = statistics.median(t[1] for t in times[name])
        print(f"  {name:<5} {where}: median {wall:.3f} s wall, {cpu:.2f} s CPU")
    print(f"metrics {'IDENTICAL' if results['other'] == results['this'] else 'DIFFERENT'} between the two trees")


def main(argv: list[str] | None = None) -> None:
    """Parse sizes, time evaluate(rerank=True) and print the figures with their conditions."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="cuhk", help="dataset-shaped preset")
    parser.add_argument("--queries", type=int, default=None, help="text queries (overrides --size)")
    parser.add_argument("--gallery", type=int, default=None, help="unique images (overrides --size)")
    parser.add_argument("--persons", type=int, default=None, help="person ids (overrides --size)")
    parser.add_argument("--dim", type=int, default=256, help="embedding width (the configs' FEATURE_SIZE)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-rerank", action="store_true", help="skip the Jaccard re-ranking")
    parser.add_argument("--check", action="store_true", help="also assert the streamed metrics equal one block's")
    parser.add_argument("--breakdown", action="store_true", help="also time each stage once")
    parser.add_argument("--authors-repo", type=Path, default=None,
                        help="also run the authors' evaluation (incl. re-ranking) side by side")
    parser.add_argument("--against-src", type=Path, default=None,
                        help="time another source tree's evaluate() alternately with this one's (its src/ folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    num_q, num_g, num_p = SIZES[args.size]
    num_q, num_g, num_p = args.queries or num_q, args.gallery or num_g, args.persons or num_p
    if args.authors_repo is not None:
        from side_by_side import compare_eval  # benchmarks/ helper, needs the authors' code

        compare_eval(args.authors_repo, num_q, num_g, num_p, args.dim, args.repeat, args.seed)
        return

    load_start = _load()
    feats = make_features(num_q, num_g, num_p, args.dim, args.seed)
    rerank = not args.no_rerank
    if args.against_src is not None:
        compare_trees(args.against_src, feats, rerank=rerank, repeat=max(args.repeat, 2))
        return
    results = evaluate(*feats, rerank=rerank) if args.repeat > 1 else None  # warm-up
    runs = [measure(lambda: evaluate(*feats, rerank=rerank)) for _ in range(args.repeat)]
    results = runs[-1][0]
    wall, cpu, extra = [r[1] for r in runs], [r[2] for r in runs], [r[3] for r in runs]

    print(f"evaluate(rerank={rerank}): {num_q} text queries x {num_g} images, {num_p} persons, dim {args.dim}, "
          f"float32, both directions")
    print(f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), 1-min load average "
          f"{load_start:.2f} before, {_load():.2f} after (other jobs inflate times)")
    print(f"wall time over {args.repeat} run(s): median {statistics.median(wall):.2f} s, min {min(wall):.2f} s; "
          f"process CPU time median {statistics.median(cpu):.2f} s")
    print(f"peak RSS over the RSS before evaluate(): max {max(extra):.2f} GiB")
    if args.check:
        one, wall_one, _, extra_one = measure(lambda: evaluate(*feats, rerank=rerank, chunk_size=num_q + num_g))
        small, wall_small, _, extra_small = measure(lambda: evaluate(*feats, rerank=rerank, chunk_size=500))
        same = one == results == small
        print(f"check: one unbounded block ({wall_one:.2f} s, peak +{extra_one:.2f} GiB) and blocks of 500 rows "
              f"({wall_small:.2f} s, peak +{extra_small:.2f} GiB) give {'IDENTICAL' if same else 'DIFFERENT'} "
              "metrics to the default blocks")
        if not same:
            print(format_table(one), format_table(small), sep="\n")
            sys.exit(1)
    if args.breakdown:
        print("stages (one run each):")
        breakdown(*feats, k=5, alpha=0.05)
    print(format_table(results))


if __name__ == "__main__":
    main()
