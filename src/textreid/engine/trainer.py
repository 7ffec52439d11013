"""The training loop: short and flat. Resumable at any step, one process or many (torchrun).

Per epoch: identity-sampled batches → model(batch) → criterion → sum of ``*_loss`` terms → step.
After each epoch: lr schedule step, validation (Rank-1 on VAL selects ``best.pth``),
``last.pth`` (always) and ``epoch_N.pth`` (every CHECKPOINT_PERIOD). At the end the best
model is evaluated once on TEST. Ctrl-C (or SIGTERM) saves ``interrupted.pth`` at the
current step; ``--resume-from`` continues from any of these files exactly.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from textreid import dist
from textreid.config import Config, dump_yaml, to_dict, validate_config
from textreid.data.loaders import build_train_loader
from textreid.data.transforms import build_transforms
from textreid.engine.division import build_division
from textreid.engine.evaluator import evaluate_split
from textreid.engine.optim import build_optimizer, build_scheduler
from textreid.engine.runtime import (
    autocast,
    init_distributed,
    rng_state,
    seed_everything,
    set_rng_state,
    setup_logging,
)
from textreid.engine.setup import RunData, build_model_for_training, prepare_data
from textreid.fileio import atomic_write_json
from textreid.metrics import format_table
from textreid.models.build import build_test_transform
from textreid.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from textreid.models.recipes import FRESH_MODULES, build_criterion

log = logging.getLogger("textreid")


class _Interrupt:
    """Turn SIGINT/SIGTERM into a flag checked between steps, so a checkpoint can be written."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = 0  # the first signal received (the command exits 128 + signum)
        self._old: dict = {}

    def __enter__(self) -> _Interrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a test thread)
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        log.warning("interrupt received: saving a resumable checkpoint after this step (Ctrl-C again to abort)")

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def validate(model: nn.Module, records, cfg: Config, data: RunData, progress: bool) -> dict:
    """Both directions' metrics on ``records`` (re-ranked too when TEST.RERANK)."""
    results, _ = evaluate_split(model, records, transform=build_test_transform(cfg), tokenizer=data.tokenizer,
                                batch_size=cfg.test.ims_per_batch, num_workers=cfg.dataloader.num_workers,
                                amp=cfg.solver.amp, use_word_ids=cfg.datasets.use_onehot,
                                channels_last=cfg.solver.channels_last, rerank=cfg.test.rerank, rerank_k=cfg.test.rerank_k,
                                rerank_alpha=cfg.test.rerank_alpha, progress=progress)
    return results


@dataclass
class TrainResult:
    """What a run produced: final metrics (val selection, test), the model in memory, where files are."""

    metrics: dict
    model: nn.Module
    output_dir: Path
    interrupted: bool = False
    signal: int = 0  # SIGINT/SIGTERM that stopped the run (0: finished, or stopped by stop_after_steps)


def train(cfg: Config, *, output_dir: Path, resume_from: str | None = None, use_tensorboard: bool = False,
          device: str = "cpu", progress: bool = True, stop_after_steps: int | None = None) -> TrainResult:
    """Train per ``cfg``. ``stop_after_steps`` behaves like a Ctrl-C after that many steps."""
    init_distributed(device)
    validate_config(cfg, world_size=dist.get_world_size())  # certain mistakes fail before any data are read
    output_dir = Path(output_dir)
    main = dist.is_main()
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(dump_yaml(cfg))
    setup_logging(output_dir / "train.log" if main else None)
    seed_everything(cfg.solver.seed, cfg.solver.deterministic)
    dev = torch.device(device)

    data = prepare_data(cfg)
    log.info("train: %d captions of %d identities; val: %d captions; test: %d captions",
             len(data.train), data.num_classes, len(data.val), len(data.test))
    if main and data.vocab is not None:
        data.vocab.save(output_dir / "vocab.json")  # also inside every checkpoint
    model = build_model_for_training(cfg, data).to(dev)
    if cfg.solver.channels_last:  # oneDNN (CPU) and cuDNN (GPU) convolutions are faster in NHWC
        model = model.to(memory_format=torch.channels_last)
    if dist.is_dist() and cfg.solver.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)

    s = cfg.solver
    optimizer = build_optimizer(model, name=s.optimizer, base_lr=s.base_lr, weight_decay=s.weight_decay,
                                bias_lr_factor=s.bias_lr_factor, weight_decay_bias=s.weight_decay_bias,
                                betas=(s.adam_alpha, s.adam_beta), momentum=s.sgd_momentum, eps=s.adam_eps,
                                fresh_prefixes=FRESH_MODULES, fresh_lr_factor=s.lr_factor)
    criterion = build_criterion(cfg)
    scheduler = build_scheduler(optimizer, schedule=s.lrscheduler, num_epochs=s.num_epochs, steps=s.steps,
                                gamma=s.gamma, warmup_epochs=s.warmup_epochs, warmup_factor=s.warmup_factor,
                                warmup_method=s.warmup_method, target_factor=s.target_lr / s.base_lr)
    use_fp16 = dev.type == "cuda" and s.amp == "fp16"
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)

    train_tf = build_transforms(height=cfg.input.height, width=cfg.input.width, mean=cfg.input.pixel_mean,
                                std=cfg.input.pixel_std, train=True, use_aug=cfg.input.use_aug,
                                padding=cfg.input.padding)
    loader = build_train_loader(data.train, transform=train_tf, tokenizer=data.tokenizer,
                                batch_size=s.ims_per_batch, ims_per_id=cfg.dataloader.ims_per_id, seed=s.seed,
                                num_workers=cfg.dataloader.num_workers, pin_memory=dev.type == "cuda",
                                use_word_ids=cfg.datasets.use_onehot)
    sampler = loader.batch_sampler

    epoch, step, best = 0, 0, {"R1": -1.0, "epoch": -1}
    division, clean = build_division(cfg), None  # clean-pair division (RDE): clean[N] per training pair
    if resume_from:
        ckpt = load_checkpoint(resume_from)
        if "train_state" not in ckpt:
            raise CheckpointError(f"{resume_from} holds no training state (it is not a best/last/epoch/interrupted "
                                  f"checkpoint written by textreid train), so the run cannot be continued")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if use_fp16 and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        train_state = ckpt["train_state"]
        epoch, step, best = train_state["epoch"], train_state["step"], train_state["best"]
        clean = train_state.get("clean")
        sampler.load_state_dict(train_state["sampler"])
        set_rng_state(train_state["rng"][min(dist.get_rank(), len(train_state["rng"]) - 1)])
        log.info("resumed from %s at epoch %d, step %d", resume_from, epoch, step)

    ddp = model
    if dist.is_dist():
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, forward_sync_buffers=False)

    writer = None
    if use_tensorboard and main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"), purge_step=step)

    def snapshot(name: str, metrics: dict | None = None) -> None:
        """Write a resumable checkpoint (rank 0); every rank's RNG state goes into it."""
        rngs = _gather_rng_states()
        if not main:
            return
        save_checkpoint(output_dir / name, model=model, config=to_dict(cfg),
                        vocab=data.vocab.to_dict() if data.vocab else None, optimizer=optimizer,
                        scheduler=scheduler,
                        extra={"num_classes": data.num_classes, "metrics": metrics or {},
                               "scaler": scaler.state_dict() if use_fp16 else None,
                               "train_state": {"epoch": epoch, "step": step, "best": best, "clean": clean,
                                               "sampler": sampler.state_dict(), "rng": rngs}})

    steps_per_epoch = len(sampler)
    if steps_per_epoch == 0:
        raise ValueError(f"no complete batch: {len(data.train)} captions of {data.num_classes} ids cannot fill "
                         f"SOLVER.IMS_PER_BATCH {s.ims_per_batch} with DATALOADER.IMS_PER_ID "
                         f"{cfg.dataloader.ims_per_id}")
    interrupted = False
    with _Interrupt() as interrupt:
        while epoch < s.num_epochs and not interrupted:
            sampler.set_epoch(epoch)
            if division and sampler.state_dict().get("consumed", 0) == 0:  # not when resuming mid-epoch
                clean = division.divide(model, data.train, epoch=epoch, transform=build_test_transform(cfg),
                                        tokenizer=data.tokenizer, device=dev, amp=s.amp,
                                        use_word_ids=cfg.datasets.use_onehot, channels_last=s.channels_last)
            model.train()
            bar = tqdm(total=steps_per_epoch, initial=sampler.state_dict().get("consumed", 0),
                       desc=f"epoch {epoch + 1}/{s.num_epochs}", disable=not (progress and main), dynamic_ncols=True)
            t0, seen, logged = time.perf_counter(), 0, {}
            for batch in loader:
                batch = {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                if clean is not None:
                    batch["clean"] = clean[batch["indices"].cpu()].to(dev)
                if cfg.solver.channels_last:
                    batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
                with autocast(dev, s.amp):
                    out = criterion(ddp(batch), batch)
                losses = {k: v.float() for k, v in out.items() if k.endswith("_loss")}
                loss = sum(losses.values())
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {step}: "
                                             f"{ {k: v.item() for k, v in losses.items()} }")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if s.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                seen += batch["images"].shape[0] * dist.get_world_size()
                logged = {k: dist.all_reduce_mean(v).item() for k, v in losses.items()}
                lr = optimizer.param_groups[0]["lr"]
                bar.set_postfix({**{k.removesuffix("_loss"): f"{v:.3f}" for k, v in logged.items()},
                                 "lr": f"{lr:.2e}", "img/s": f"{seen / (time.perf_counter() - t0):.1f}"})
                bar.update(1)
                if writer:
                    for k, v in logged.items():
                        writer.add_scalar(f"train/{k}", v, step)
                    writer.add_scalar("train/loss", sum(logged.values()), step)
                    writer.add_scalar("train/lr", lr, step)
                if interrupt.requested or (stop_after_steps is not None and step >= stop_after_steps):
                    interrupted = True
                    break
            bar.close()
            if interrupted:
                snapshot("interrupted.pth")
                log.info("saved %s (step %d); continue with --resume-from", output_dir / "interrupted.pth", step)
                break
            log.info("epoch %d done: %s, %.1f img/s", epoch + 1,
                     " ".join(f"{k}={v:.4f}" for k, v in logged.items()), seen / max(time.perf_counter() - t0, 1e-9))
            scheduler.step()
            epoch += 1
            metrics = None
            if data.val and (epoch % s.evaluate_period == 0 or epoch == s.num_epochs):
                metrics = validate(model, data.val, cfg, data, progress)
                if main:
                    log.info("validation after epoch %d:\n%s", epoch, format_table(metrics))
                    atomic_write_json(output_dir / "metrics" / f"val_epoch_{epoch:03d}.json", metrics)
                    if writer:
                        for direction, values in metrics.items():
                            for k, v in values.items():
                                writer.add_scalar(f"val_{direction}/{k}", v, step)
                if metrics["t2i"]["R1"] > best["R1"]:
                    best = {"R1": metrics["t2i"]["R1"], "epoch": epoch}
                    snapshot("best.pth", metrics)
            elif not data.val:
                best = {"R1": -1.0, "epoch": epoch}  # no val split: the last epoch is the selected model
                snapshot("best.pth")
            snapshot("last.pth", metrics)
            if s.checkpoint_period and epoch % s.checkpoint_period == 0:
                snapshot(f"epoch_{epoch:03d}.pth", metrics)
    if writer:
        writer.close()
    if interrupted:
        return TrainResult({"step": step, "epoch": epoch}, model, output_dir, interrupted=True,
                           signal=interrupt.signum)

    final = {"best_epoch": best["epoch"], "val_best_R1": best["R1"]}
    if data.test:
        best_ckpt = load_checkpoint(output_dir / "best.pth") if main or not dist.is_dist() else None
        if dist.is_dist():
            objs = [best_ckpt["model"] if best_ckpt else None]
            torch.distributed.broadcast_object_list(objs, src=0)
            model.load_state_dict(objs[0])
        else:
            model.load_state_dict(best_ckpt["model"])
        test_metrics = validate(model, data.test, cfg, data, progress)
        final["test"] = test_metrics
        if main:
            print(f"TEST (model selected on val, epoch {best['epoch']}):\n{format_table(test_metrics)}")
    if main:
        atomic_write_json(output_dir / "metrics.json", final)
    return TrainResult(final, model, output_dir)


def _gather_rng_states() -> list:
    """Every rank's RNG states (rank order), so a resumed multi-process run is exact too."""
    state = rng_state()
    if not dist.is_dist():
        return [state]
    states: list = [None] * dist.get_world_size()
    torch.distributed.all_gather_object(states, state)
    return states
