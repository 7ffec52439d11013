"""The GPU path checked in one run (benchmarks/device_check.sh runs this): one table at the end.

1. bf16 training throughput and peak GPU memory: moco RN50 and RN101 configs at batch 128,
   the ViT-B/16 config at batch 64, 50 steps on two fixed random batches; the loss must be
   finite and falling.
2. fp32 evaluation on the GPU equals CPU evaluation (features and every metric within 1e-4)
   for the same checkpoint and data.
3. One-process NCCL DistributedDataParallel training step (loss finite, weights changed).
4. ``textreid index`` throughput (images/s) on a folder of generated images.

Random weights and generated inputs only: nothing is downloaded or read from outside the repo.
``--dry-run`` runs the same checks on the CPU at tiny sizes (gloo instead of NCCL, fp32).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import platform
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist
from PIL import Image
from train_step import bench_config, build_setup, fixed_batches, random_batch, timed_steps

from textreid import cli
from textreid.config import to_dict
from textreid.data.vocab import Vocabulary
from textreid.metrics import evaluate
from textreid.models.build import build_model
from textreid.models.checkpoint import save_checkpoint

TRAIN_CASES = [  # (label, config, batch on the GPU)
    ("moco RN50", "cuhkpedes/moco_gru_cliprn50_ls_bs128_2048", 128),
    ("moco RN101", "cuhkpedes/moco_gru_cliprn101_ls_bs128_2048", 128),
    ("ViT-B/16", "cuhkpedes/vitb16_cliptext_sdm_moco", 64),
]
EVAL_CONFIG = "cuhkpedes/moco_gru_cliprn50_ls_bs128_2048"
CAPTIONS = ["a man in a red shirt and blue jeans", "a woman with a black bag and white shoes",
            "a person wearing a grey hoodie", "a girl in a yellow dress with long hair"]


TINY_CONFIG = "synth/tiny_moco"  # --tiny-models: every check on the demo's laptop-size model


class Sizes:
    def __init__(self, dry: bool, tiny_models: bool = False) -> None:
        self.dry = dry
        self.tiny = tiny_models
        self.device = "cpu" if dry else "cuda"
        self.hw = (64, 32) if dry else (384, 128)  # ViT-B/16: 4x2 / 24x8 patches
        self.steps, self.warmup = (6, 1) if dry else (50, 3)
        self.eval_images, self.eval_captions = (24, 48) if dry else (1024, 2048)
        self.index_images = 16 if dry else 2048

    def batch(self, gpu_batch: int) -> int:
        return 8 if self.dry else gpu_batch

    def config(self, name: str) -> str:
        return TINY_CONFIG if self.tiny else name


def peak_memory_gb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1024**3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # process peak RSS


def check_training(sz: Sizes, label: str, config: str, gpu_batch: int) -> dict:
    batch = sz.batch(gpu_batch)
    cfg = bench_config(sz.config(config), batch, *sz.hw)
    setup = build_setup(cfg, sz.device, amp="off" if sz.dry else "bf16")
    times, losses = timed_steps(setup, fixed_batches(setup, batch), sz.steps, sz.warmup)
    window = max(2, len(losses) // 5)
    first, last = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
    ok = all(math.isfinite(x) for x in losses) and last < first
    del setup
    label += " (tiny model)" if sz.tiny else ""
    return {"check": f"train bf16 {label}" if not sz.dry else f"train fp32 {label}", "batch": batch,
            "value": f"{batch / np.median(times):.1f} img/s", "memory": f"{peak_memory_gb(sz.device):.2f} GB",
            "ok": ok, "detail": f"loss {first:.3f} -> {last:.3f} over {len(losses)} steps"}


def _embed(model: torch.nn.Module, images: torch.Tensor, texts: dict, device: str) -> tuple[torch.Tensor, ...]:
    model = model.to(device).eval()
    with torch.inference_mode():
        img = torch.cat([model.embed_images(x.to(device)) for x in images.split(64)])
        txt = torch.cat([model.embed_texts({k: v[i:i + 64].to(device) for k, v in texts.items()})
                         for i in range(0, len(texts["word_ids"]), 64)])
    return img, txt


def check_eval(sz: Sizes) -> dict:
    """Same checkpoint, same data: fp32 features and metrics on the GPU vs the CPU."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfg = bench_config(sz.config(EVAL_CONFIG), 8, *sz.hw)
    gen = torch.Generator().manual_seed(1)
    data = random_batch(cfg, sz.eval_captions, gen)
    image_ids = data["person_ids"][::2]  # [N/2] one image per two captions
    images = data["images"][::2]
    texts = {"word_ids": data["word_ids"], "lengths": data["lengths"]}
    with tempfile.TemporaryDirectory() as tmp:
        setup = build_setup(cfg, "cpu", channels_last=False)
        path = Path(tmp) / "ckpt.pth"
        torch.save(setup.model.state_dict(), path)
        results, feats = {}, {}
        for device in ("cpu", sz.device if not sz.dry else "cpu"):
            model = build_setup(cfg, "cpu", channels_last=False, seed=123).model  # different init ...
            model.load_state_dict(torch.load(path, weights_only=True))  # ... then the same checkpoint
            img, txt = _embed(model, images, texts, device)
            feats[device] = (img.cpu(), txt.cpu())
            results[device] = evaluate(txt, data["person_ids"].to(device), img, image_ids.to(device), rerank=True)
    other = sz.device if not sz.dry else "cpu"
    feat_diff = max(float((a - b).abs().max()) for a, b in zip(feats["cpu"], feats[other], strict=True))
    metric_diff = max(abs(results["cpu"][d][m] - results[other][d][m]) for d in results["cpu"]
                      for m in results["cpu"][d])
    scale = max(float(f.abs().max()) for f in feats["cpu"])
    ok = feat_diff <= 1e-4 * max(1.0, scale) and metric_diff <= 1e-4
    return {"check": f"eval fp32 {other} vs cpu", "batch": len(images), "value": f"R1 {results[other]['t2i']['R1']:.2f}",
            "memory": "-", "ok": ok,
            "detail": f"max |feature diff| {feat_diff:.2e} (max |feature| {scale:.1f}), max |metric diff| {metric_diff:.2e}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_ddp(sz: Sizes) -> dict:
    backend = "gloo" if sz.dry else "nccl"
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())})
    torch_dist.init_process_group(backend, rank=0, world_size=1)
    try:
        batch = sz.batch(32)
        cfg = bench_config(sz.config(EVAL_CONFIG), batch, *sz.hw)
        setup = build_setup(cfg, sz.device, amp="off" if sz.dry else "bf16")
        before = [p.detach().clone() for p in setup.model.parameters() if p.requires_grad]
        setup.model = torch.nn.parallel.DistributedDataParallel(
            setup.model, device_ids=[0] if not sz.dry else None, forward_sync_buffers=False)
        times, losses = timed_steps(setup, fixed_batches(setup, batch, count=1), steps=1, warmup=0)
        after = [p for p in setup.model.module.parameters() if p.requires_grad]
        changed = sum(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        ok = math.isfinite(losses[0]) and changed > 0
    finally:
        torch_dist.destroy_process_group()
    return {"check": f"DDP step ({backend}, 1 process)", "batch": batch, "value": f"{times[0]:.2f} s",
            "memory": "-", "ok": ok, "detail": f"loss {losses[0]:.3f}, {changed}/{len(before)} tensors updated"}


def check_index(sz: Sizes) -> dict:
    cfg = bench_config(sz.config(EVAL_CONFIG), 8, *sz.hw)
    vocab = Vocabulary.build(CAPTIONS)
    table = np.random.default_rng(0).standard_normal((len(vocab), cfg.model.gru.embedding_size)).astype(np.float32)
    model = build_model(cfg, num_classes=cfg.model.num_classes or 100, vocab_size=len(vocab), word_table=table,
                        load_pretrained=False)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(Path(tmp) / "model.pth", model=model, config=to_dict(cfg), vocab=vocab.to_dict())
        folder = Path(tmp) / "images"
        folder.mkdir()
        h, w = sz.hw
        for i in range(sz.index_images):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = cli.main(["index", "--checkpoint", str(ckpt), "--images", str(folder), "--out", str(Path(tmp) / "idx"),
                           "--device", sz.device, "--batch-size", "128", "--quiet"])
        seconds = time.perf_counter() - start
        ok = rc == 0 and (Path(tmp) / "idx").is_dir()
    return {"check": "textreid index", "batch": 128, "value": f"{sz.index_images / seconds:.1f} img/s",
            "memory": "-", "ok": ok, "detail": f"{sz.index_images} images {h}x{w} in {seconds:.1f} s (incl. model load)"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, same assertions")
    p.add_argument("--tiny-models", action="store_true",
                   help="with --dry-run: the demo's tiny model in every check (the fast test uses this)")
    p.add_argument("--only", choices=["train", "eval", "ddp", "index"], action="append", help="run only these")
    a = p.parse_args(argv)
    if a.tiny_models and not a.dry_run:
        p.error("--tiny-models is for --dry-run only")
    sz = Sizes(a.dry_run, a.tiny_models)
    if sz.dry:
        torch.set_num_threads(1)  # a dry run checks the logic, not speed: robust on a busy machine
    if not sz.dry and not torch.cuda.is_available():
        print("device_check: no CUDA device visible; use --dry-run on a CPU machine", file=sys.stderr)
        return 2
    start = time.perf_counter()
    wanted = a.only or ["train", "eval", "ddp", "index"]
    cases = TRAIN_CASES[:1] if sz.tiny else TRAIN_CASES  # the tiny model is the same in all three
    checks = [("train", lambda c=c: check_training(sz, *c)) for c in cases]
    checks += [("eval", lambda: check_eval(sz)), ("ddp", lambda: check_ddp(sz)), ("index", lambda: check_index(sz))]
    rows = []
    for name, fn in checks:
        if name not in wanted:
            continue
        t0 = time.perf_counter()
        rows.append(fn())
        print(f"[{time.perf_counter() - start:5.0f} s] {rows[-1]['check']}: {rows[-1]['value']} "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        if sz.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    device = torch.cuda.get_device_name(0) if sz.device == "cuda" else f"CPU ({platform.machine()}, dry run)"
    print(f"\ndevice_check on {device}, torch {torch.__version__}, {time.perf_counter() - start:.0f} s")
    print(f"| {'check':<36} | {'batch':>5} | {'result':>14} | {'peak mem':>8} | ok   | detail")
    print(f"|{'-' * 38}|{'-' * 7}|{'-' * 16}|{'-' * 10}|------|{'-' * 8}")
    for r in rows:
        print(f"| {r['check']:<36} | {r['batch']:>5} | {r['value']:>14} | {r['memory']:>8} | "
              f"{'yes' if r['ok'] else 'NO':<4} | {r['detail']}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
