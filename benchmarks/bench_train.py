"""Training throughput (images/s) and peak memory for a config, input size and batch.

Two modes:
  model     random inputs, no data loading: the cost of forward + backward + optimiser step
            (and, for the moco head, the key encoders, momentum update and queue);
  pipeline  the real training loader (synthetic pedestrians, augmentation, workers) feeding the
            same step, to show data loading is not the bottleneck.

Examples (the README's figures come from these):
  python benchmarks/bench_train.py --config cuhkpedes/moco_gru_cliprn50_ls_bs128_2048 --batch 8 --steps 6
  python benchmarks/bench_train.py --config synth/tiny_moco --batch 64 --mode pipeline --root demo
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time

import numpy as np
import torch

from textreid.config import load_config
from textreid.engine.optim import build_optimizer
from textreid.engine.runtime import autocast
from textreid.models.build import build_model


def peak_rss_gb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def random_batch(cfg, batch: int, vocab: int, device: torch.device, gen: torch.Generator) -> dict:
    """A batch shaped like the loader's: P identities x K captions, random pixels and word ids."""
    k = cfg.dataloader.ims_per_id
    ids = torch.arange(batch // k).repeat_interleave(k)
    lengths = torch.randint(10, 40, (batch,), generator=gen)
    out = {"images": torch.randn(batch, 3, cfg.input.height, cfg.input.width, generator=gen),
           "person_ids": ids}
    if cfg.model.textual_model == "clip_transformer":
        out["tokens"] = torch.randint(1, 49000, (batch, cfg.model.text_transformer.context_length), generator=gen)
    else:
        out["word_ids"] = torch.randint(0, vocab, (batch, int(lengths.max())), generator=gen)
        out["lengths"] = lengths
    return {k: v.to(device) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cuhkpedes/moco_gru_cliprn50_ls_bs128_2048")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--height", type=int, default=0, help="override INPUT.HEIGHT")
    p.add_argument("--width", type=int, default=0, help="override INPUT.WIDTH")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", default="auto", help="auto (bf16 on GPU, off on CPU) | bf16 | fp16 | off")
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--mode", default="model", choices=["model", "pipeline"])
    p.add_argument("--root", default="demo", help="data root for --mode pipeline (needs datasets/synth)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("opts", nargs="*", help="config overrides KEY VALUE")
    a = p.parse_args()

    overrides = ["MODEL.PRETRAINED", "", "SOLVER.IMS_PER_BATCH", str(a.batch), *a.opts]
    if a.height:
        overrides += ["INPUT.HEIGHT", str(a.height)]
    if a.width:
        overrides += ["INPUT.WIDTH", str(a.width)]
    if a.mode == "pipeline":
        overrides += ["ROOT", a.root, "DATALOADER.NUM_WORKERS", str(a.workers)]
    cfg = load_config(a.config, overrides)
    if cfg.model.embedding.embed_head == "moco" and cfg.model.moco.k % a.batch:
        cfg.model.moco.k = (cfg.model.moco.k // a.batch + 1) * a.batch
    dev = torch.device(a.device)
    torch.manual_seed(0)

    if a.mode == "pipeline":
        from textreid.data.loaders import build_train_loader
        from textreid.data.transforms import build_transforms
        from textreid.engine.setup import prepare_data

        data = prepare_data(cfg, splits=())
        table, vocab, num_classes = data.word_table, data.vocab_size, data.num_classes
    else:
        vocab = 10000
        table = None if cfg.model.gru.onehot == "yes" else np.random.default_rng(0).standard_normal(
            (vocab, cfg.model.gru.embedding_size)).astype(np.float32)
        num_classes = cfg.model.num_classes or 11003
    model = build_model(cfg, num_classes=num_classes, vocab_size=vocab, word_table=table, load_pretrained=False)
    model.to(dev).train()
    channels_last = a.channels_last == "on" or (a.channels_last == "auto" and cfg.solver.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp = a.amp if a.amp != "auto" else ("bf16" if dev.type == "cuda" else "off")
    s = cfg.solver
    opt = build_optimizer(model, name=s.optimizer, base_lr=s.base_lr, weight_decay=s.weight_decay,
                          bias_lr_factor=s.bias_lr_factor, weight_decay_bias=s.weight_decay_bias)

    if a.mode == "pipeline":
        tf = build_transforms(height=cfg.input.height, width=cfg.input.width, mean=cfg.input.pixel_mean,
                              std=cfg.input.pixel_std, train=True, use_aug=True, padding=cfg.input.padding)
        loader = build_train_loader(data.train, transform=tf, tokenizer=data.tokenizer, batch_size=a.batch,
                                    ims_per_id=cfg.dataloader.ims_per_id, seed=0, num_workers=a.workers,
                                    pin_memory=dev.type == "cuda")

        def batches():
            epoch = 0
            while True:
                loader.batch_sampler.set_epoch(epoch)
                for b in loader:
                    yield {k: v.to(dev, non_blocking=True) for k, v in b.items() if torch.is_tensor(v)}
                epoch += 1
        source = batches()
    else:
        gen = torch.Generator().manual_seed(0)
        fixed = [random_batch(cfg, a.batch, vocab, dev, gen) for _ in range(2)]
        source = (fixed[i % 2] for i in range(10**9))

    def step() -> None:
        batch = next(source)
        if channels_last:
            batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
        with autocast(dev, amp):
            losses = model(batch)
        loss = sum(v for k, v in losses.items() if k.endswith("_loss"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times = np.array(times)
    ips = a.batch / np.median(times)
    mem = (f"peak GPU memory {torch.cuda.max_memory_allocated() / 1024**3:.2f} GB" if dev.type == "cuda"
           else f"peak RSS {peak_rss_gb():.2f} GB")
    print(f"config {a.config} | {cfg.model.visual_model} + {cfg.model.textual_model}, head "
          f"{cfg.model.embedding.embed_head} | input {cfg.input.height}x{cfg.input.width} | batch {a.batch} | "
          f"mode {a.mode}")
    print(f"device {dev} ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads) | amp {amp} | channels_last {channels_last}")
    print(f"step time median {np.median(times):.3f} s (min {times.min():.3f}, {a.steps} steps after {a.warmup} "
          f"warm-up) -> {ips:.2f} images/s | {mem}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
