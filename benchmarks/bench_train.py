"""Training throughput (images/s) and peak memory for a config, input size and batch.

Modes:
  model     random inputs, no data loading: the cost of forward + backward + optimiser step
            (and, for the moco head, the key encoders, momentum update and queue);
  pipeline  the real training loader (synthetic pedestrians, augmentation, workers) feeding the
            same step, to show data loading is not the bottleneck.

--authors-repo DIR runs the authors' training step (their code, unchanged, imported from DIR)
and ours alternately, each run in its own process on the same random inputs, and prints both
images/s, both peak RSS and the ratios. --profile prints a torch.profiler table of our step (with
--authors-repo: of each program's step, taken after its timed steps).

Examples (the README's figures come from these):
  python benchmarks/bench_train.py --authors-repo ../TextReID --rounds 3      # side by side
  python benchmarks/bench_train.py --config cuhkpedes/moco_gru_cliprn50_ls_bs128_2048 --batch 8 --steps 6
  python benchmarks/bench_train.py --profile --steps 2
  python benchmarks/bench_train.py --config synth/tiny_moco --batch 64 --mode pipeline --root demo
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import bench_config, build_setup, fixed_batches, timed_steps, train_step  # noqa: E402


def peak_rss_gb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def side_by_side(a) -> None:
    """Alternate the authors' step and ours, one process per run; print runs, medians, ratios."""
    from side_by_side import run_alternating

    worker = ["--authors-repo", str(a.authors_repo), "--config", a.config, "--batch", str(a.batch),
              "--height", str(a.height or 384), "--width", str(a.width or 128), "--steps", str(a.steps),
              "--warmup", str(a.warmup), "--amp", a.amp if a.amp != "auto" else "off"]
    worker += ["--compile"] if a.compile else []
    worker += ["--profile"] if a.profile else []  # each run then prints its program's profiler table
    worker += ["--opts", *a.opts] if a.opts else []
    print(f"side by side: {a.config}, {a.height or 384}x{a.width or 128}, batch {a.batch}, random inputs, "
          f"{a.warmup} warm-up + {a.steps} timed steps per run, {a.rounds} rounds alternating, one process per run")
    print(f"machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"1-min load average {os.getloadavg()[0]:.2f} at start")
    runs = run_alternating("train", worker, a.rounds)
    med = {k: (statistics.median(r["images_per_s"] for r in v), statistics.median(r["peak_rss_gb"] for r in v))
           for k, v in runs.items()}
    for k, (ips, rss) in med.items():
        print(f"{k:<8} median {ips:.3f} images/s, peak RSS {rss:.2f} GB")
    pairs = list(zip(runs["ours"], runs["authors"], strict=True))
    speed = [o["images_per_s"] / t["images_per_s"] for o, t in pairs]
    print(f"ratio ours/authors: images/s {med['ours'][0] / med['authors'][0]:.2f} (per round "
          f"{', '.join(f'{r:.2f}' for r in speed)}), peak memory {med['ours'][1] / med['authors'][1]:.2f}; "
          f"1-min load average {os.getloadavg()[0]:.2f} at end")


def profile_step(setup, batches) -> None:
    from torch.profiler import ProfilerActivity, profile

    train_step(setup, batches[0])
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        train_step(setup, batches[1])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cuhkpedes/moco_gru_cliprn50_ls_bs128_2048")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--height", type=int, default=0, help="override INPUT.HEIGHT")
    p.add_argument("--width", type=int, default=0, help="override INPUT.WIDTH")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", default="auto", help="auto (bf16 on GPU, off on CPU) | bf16 (also on CPU) | fp16 | off")
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compile time reported apart)")
    p.add_argument("--profile", action="store_true", help="print where one step's time goes (torch.profiler)")
    p.add_argument("--authors-repo", type=Path, default=None, help="run the authors' step side by side (CPU)")
    p.add_argument("--rounds", type=int, default=3, help="side-by-side rounds (each runs both programs once)")
    p.add_argument("--mode", default="model", choices=["model", "pipeline"])
    p.add_argument("--root", default="demo", help="data root for --mode pipeline (needs datasets/synth)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("opts", nargs="*", help="config overrides KEY VALUE")
    a = p.parse_args()
    if a.authors_repo is not None:
        side_by_side(a)
        return

    opts = list(a.opts) + (["ROOT", a.root, "DATALOADER.NUM_WORKERS", str(a.workers)] if a.mode == "pipeline" else [])
    cfg = bench_config(a.config, a.batch, a.height, a.width, opts)
    dev = torch.device(a.device)
    amp = a.amp if a.amp != "auto" else ("bf16" if dev.type == "cuda" else "off")
    channels_last = {"on": True, "off": False, "auto": None}[a.channels_last]
    data = None
    if a.mode == "pipeline":
        from textreid.engine.setup import prepare_data

        data = prepare_data(cfg, splits=())
    setup = build_setup(cfg, dev, amp=amp, channels_last=channels_last, data=data)
    batches = fixed_batches(setup, a.batch) if a.mode == "model" else pipeline_batches(cfg, setup, a, data)
    if a.profile:
        profile_step(setup, batches)
    compile_s = None
    if a.compile:
        setup.model = torch.compile(setup.model)
        t0 = time.perf_counter()
        train_step(setup, batches[0])
        compile_s = time.perf_counter() - t0
    times, losses = timed_steps(setup, batches, a.steps, a.warmup)
    ips = a.batch / np.median(times)
    mem = (f"peak GPU memory {torch.cuda.max_memory_allocated() / 1024**3:.2f} GB" if dev.type == "cuda"
           else f"peak RSS {peak_rss_gb():.2f} GB")
    print(f"config {a.config} | {cfg.model.visual_model} + {cfg.model.textual_model}, head "
          f"{cfg.model.embedding.embed_head} | input {cfg.input.height}x{cfg.input.width} | batch {a.batch} | "
          f"mode {a.mode}")
    print(f"device {dev} ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads) | amp {amp} | channels_last {setup.channels_last} | "
          f"compile {'off' if compile_s is None else f'on (compile + first step {compile_s:.1f} s, not timed)'}")
    print(f"step time median {np.median(times):.3f} s (min {times.min():.3f}, {a.steps} steps after {a.warmup} "
          f"warm-up) -> {ips:.2f} images/s | {mem} | loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    sys.stdout.flush()


def pipeline_batches(cfg, setup, a, data):
    """The real training loader feeding the step (an endless iterator as a 'list' of batches)."""
    from textreid.data.loaders import build_train_loader
    from textreid.data.transforms import build_transforms

    tf = build_transforms(height=cfg.input.height, width=cfg.input.width, mean=cfg.input.pixel_mean,
                          std=cfg.input.pixel_std, train=True, use_aug=True, padding=cfg.input.padding)
    loader = build_train_loader(data.train, transform=tf, tokenizer=data.tokenizer, batch_size=a.batch,
                                ims_per_id=cfg.dataloader.ims_per_id, seed=0, num_workers=a.workers,
                                pin_memory=setup.device.type == "cuda")

    class Endless:
        def __init__(self) -> None:
            self.it, self.epoch = iter(loader), 0

        def __len__(self) -> int:
            return 1 << 30

        def __getitem__(self, i: int) -> dict:
            try:
                b = next(self.it)
            except StopIteration:
                self.epoch += 1
                loader.batch_sampler.set_epoch(self.epoch)
                self.it = iter(loader)
                b = next(self.it)
            b = {k: v.to(setup.device, non_blocking=True) for k, v in b.items() if torch.is_tensor(v)}
            if setup.channels_last:
                b["images"] = b["images"].contiguous(memory_format=torch.channels_last)
            return b

    return Endless()


if __name__ == "__main__":
    main()
