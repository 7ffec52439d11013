"""The training loop: short and flat, read top to bottom. Resumable at any step, one process or many (torchrun).

``train`` = ``start_run`` (data, model, optimizer, loader, resume) → per epoch ``train_epoch``
(``train_step`` per batch) and ``end_epoch`` → ``final_test``. Everything a run works with is one
``Run`` (its position is ``Run.state``), passed explicitly: no closures over loop state.

Per epoch: identity-sampled batches → model(batch) → criterion → sum of ``*_loss`` terms → step.
After each epoch: lr schedule step, validation (Rank-1 on VAL selects ``best.pth``),
``last.pth`` (always) and ``epoch_N.pth`` (every CHECKPOINT_PERIOD). At the end the best
model is evaluated once on TEST. With ``TEST.EVERY_EPOCH`` (set by ``REPRODUCE authors``) TEST is
also evaluated after every epoch, and its maximum Rank-1 is reported beside the val-selected
figure as the authors' protocol (selection on test). Ctrl-C (or SIGTERM) saves ``interrupted.pth`` at the
current step; ``--resume-from`` continues from any of these files exactly.
"""

from __future__ import annotations

import logging
import math
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from textreid import dist
from textreid.config import Config, dump_yaml, to_dict, validate_config
from textreid.data.loaders import build_train_loader
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
from textreid.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from textreid.models.recipes import FRESH_MODULES, build_criterion
from textreid.models.recompute import set_recompute_stages

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
    results, _ = evaluate_split(model, records, preprocess=data.preprocess,
                                batch_size=cfg.test.ims_per_batch, num_workers=cfg.dataloader.num_workers,
                                amp=cfg.test.amp,
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


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint (with the sampler position and RNG states)."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    best: dict = field(default_factory=lambda: {"R1": -1.0, "epoch": -1})  # val t2i Rank-1 behind best.pth
    clean: torch.Tensor | None = None  # clean-pair division (RDE): clean[N] per training pair, this epoch
    # TEST.EVERY_EPOCH: {"epoch": e, "R1": .., "R5": .., "R10": .., "mAP": .., ...} (t2i test metrics) per epoch
    test_history: list[dict] = field(default_factory=list)

    @property
    def test_best(self) -> dict | None:
        """The epoch with the highest test t2i Rank-1 (the earliest on ties), or None before any."""
        return max(self.test_history, key=lambda h: (h["R1"], -h["epoch"]), default=None)


@dataclass
class Run:
    """Everything a training run works with, built once by ``start_run`` and passed explicitly."""

    cfg: Config
    output_dir: Path
    device: torch.device
    data: RunData
    model: nn.Module  # the plain model: checkpoints, validation
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler  # enabled only for fp16 autocast on CUDA
    loader: DataLoader
    criterion: Any  # model outputs + batch -> {"…_loss": weighted term}
    division: Any = None  # the clean-pair division (DIVISION.ENABLED), if any
    ddp: nn.Module | None = None  # what a step calls: the model, or DDP around it
    writer: Any = None  # TensorBoard SummaryWriter (rank 0, --use-tensorboard)
    state: TrainState = field(default_factory=TrainState)

    @property
    def sampler(self) -> Any:
        return self.loader.batch_sampler


def train(cfg: Config, *, output_dir: Path, resume_from: str | None = None, use_tensorboard: bool = False,
          device: str = "cpu", progress: bool = True, stop_after_steps: int | None = None) -> TrainResult:
    """Train per ``cfg``. ``stop_after_steps`` behaves like a Ctrl-C after that many steps."""
    run = start_run(cfg, output_dir=Path(output_dir), device=device, resume_from=resume_from,
                    use_tensorboard=use_tensorboard)
    with _Interrupt() as interrupt:
        while run.state.epoch < cfg.solver.num_epochs:
            if not train_epoch(run, interrupt=interrupt, stop_after_steps=stop_after_steps, progress=progress):
                save_snapshot(run, "interrupted.pth")
                log.info("saved %s (step %d); continue with --resume-from", run.output_dir / "interrupted.pth",
                         run.state.step)
                _close_writer(run)
                return TrainResult({"step": run.state.step, "epoch": run.state.epoch}, run.model, run.output_dir,
                                   interrupted=True, signal=interrupt.signum)
            end_epoch(run, progress=progress)
    _close_writer(run)
    return TrainResult(final_test(run, progress=progress), run.model, run.output_dir)


# --------------------------------------------------------------------------- before the first step
def start_run(cfg: Config, *, output_dir: Path, device: str, resume_from: str | None,
              use_tensorboard: bool) -> Run:
    """Process group, config checks, logs, seed, data, model, optimizer, loader; then resume, DDP, TensorBoard."""
    init_distributed(device)
    validate_config(cfg, world_size=dist.get_world_size())  # certain mistakes fail before any data are read
    if dist.is_main():
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(dump_yaml(cfg))
    setup_logging(output_dir / "train.log" if dist.is_main() else None)
    seed_everything(cfg.solver.seed, cfg.solver.deterministic)
    dev = torch.device(device)

    data = prepare_data(cfg)
    log.info("train: %d captions of %d identities; val: %d captions; test: %d captions",
             len(data.train), data.num_classes, len(data.val), len(data.test))
    if dist.is_main() and data.vocab is not None:
        data.vocab.save(output_dir / "vocab.json")  # also inside every checkpoint
    model = _build_model(cfg, data, dev)
    optimizer, scheduler, scaler = _build_optimization(cfg, model, dev)
    run = Run(cfg=cfg, output_dir=output_dir, device=dev, data=data, model=model, optimizer=optimizer,
              scheduler=scheduler, scaler=scaler, loader=_build_loader(cfg, data, dev),
              criterion=build_criterion(cfg), division=build_division(cfg))
    if resume_from:
        resume(run, resume_from)
    run.ddp = model
    if dist.is_dist():
        run.ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, forward_sync_buffers=False)
    if use_tensorboard and dist.is_main():
        from torch.utils.tensorboard import SummaryWriter

        run.writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"), purge_step=run.state.step)
    if len(run.sampler) == 0:
        raise ValueError(f"no complete batch: {len(data.train)} captions of {data.num_classes} ids cannot fill "
                         f"SOLVER.IMS_PER_BATCH {cfg.solver.ims_per_batch} with DATALOADER.IMS_PER_ID "
                         f"{cfg.dataloader.ims_per_id}")
    return run


def _build_model(cfg: Config, data: RunData, dev: torch.device) -> nn.Module:
    model = build_model_for_training(cfg, data).to(dev)
    set_recompute_stages(model, cfg.solver.recompute_stages)
    if cfg.solver.channels_last:  # oneDNN (CPU) and cuDNN (GPU) convolutions are faster in NHWC
        model = model.to(memory_format=torch.channels_last)
    if dist.is_dist() and cfg.solver.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def _build_optimization(cfg: Config, model: nn.Module, dev: torch.device) -> tuple:
    """Optimizer, learning-rate schedule and (fp16 on CUDA only) gradient scaler from SOLVER.*."""
    s = cfg.solver
    optimizer = build_optimizer(model, name=s.optimizer, base_lr=s.base_lr, weight_decay=s.weight_decay,
                                bias_lr_factor=s.bias_lr_factor, weight_decay_bias=s.weight_decay_bias,
                                betas=(s.adam_alpha, s.adam_beta), momentum=s.sgd_momentum, eps=s.adam_eps,
                                fresh_prefixes=FRESH_MODULES, fresh_lr_factor=s.lr_factor)
    scheduler = build_scheduler(optimizer, schedule=s.lrscheduler, num_epochs=s.num_epochs, steps=s.steps,
                                gamma=s.gamma, warmup_epochs=s.warmup_epochs, warmup_factor=s.warmup_factor,
                                warmup_method=s.warmup_method, target_factor=s.target_lr / s.base_lr)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda" and s.amp == "fp16")
    return optimizer, scheduler, scaler


def _build_loader(cfg: Config, data: RunData, dev: torch.device) -> DataLoader:
    """Identity-sampled training batches with the training augmentation."""
    return build_train_loader(data.train, transform=data.preprocess.transform(train=True), tokenizer=data.tokenizer,
                              batch_size=cfg.solver.ims_per_batch, ims_per_id=cfg.dataloader.ims_per_id,
                              seed=cfg.solver.seed, num_workers=cfg.dataloader.num_workers,
                              pin_memory=dev.type == "cuda", shipped_ids=data.preprocess.shipped_ids,
                              grouping=cfg.dataloader.sampler)


def resume(run: Run, path: str) -> None:
    """Continue exactly where a checkpoint of ``textreid train`` left off (weights, optimizer, sampler, RNG)."""
    ckpt = load_checkpoint(path)
    if "train_state" not in ckpt:
        raise CheckpointError(f"{path} holds no training state (it is not a best/last/epoch/interrupted "
                              f"checkpoint written by textreid train), so the run cannot be continued")
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler.is_enabled() and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    saved = ckpt["train_state"]
    run.state = TrainState(epoch=saved["epoch"], step=saved["step"], best=saved["best"], clean=saved.get("clean"),
                           test_history=list(saved.get("test_history", [])))
    run.sampler.load_state_dict(saved["sampler"])
    set_rng_state(saved["rng"][min(dist.get_rank(), len(saved["rng"]) - 1)])
    log.info("resumed from %s at epoch %d, step %d", path, run.state.epoch, run.state.step)


# --------------------------------------------------------------------------- the loop
def train_epoch(run: Run, *, interrupt: _Interrupt, stop_after_steps: int | None, progress: bool) -> bool:
    """The (rest of the) current epoch's steps; False if a signal or ``stop_after_steps`` stopped it."""
    s = run.cfg.solver
    run.sampler.set_epoch(run.state.epoch)
    if run.division and run.sampler.state_dict().get("consumed", 0) == 0:  # not when resuming mid-epoch
        run.state.clean = run.division.divide(
            run.model, run.data.train, epoch=run.state.epoch, transform=run.data.preprocess.transform(),
            tokenizer=run.data.tokenizer, device=run.device, amp=s.amp, shipped_ids=run.data.preprocess.shipped_ids,
            channels_last=s.channels_last)
    run.model.train()
    bar = tqdm(total=len(run.sampler), initial=run.sampler.state_dict().get("consumed", 0),
               desc=f"epoch {run.state.epoch + 1}/{s.num_epochs}", disable=not (progress and dist.is_main()),
               dynamic_ncols=True)
    t0, seen, logged = time.perf_counter(), 0, {}
    for batch in run.loader:
        logged = train_step(run, batch)
        seen += batch["images"].shape[0] * dist.get_world_size()
        _report_step(run, bar, logged, images_per_s=seen / (time.perf_counter() - t0))
        if interrupt.requested or (stop_after_steps is not None and run.state.step >= stop_after_steps):
            bar.close()
            return False
    bar.close()
    log.info("epoch %d done: %s, %.1f img/s", run.state.epoch + 1, " ".join(f"{k}={v:.4f}" for k, v in logged.items()),
             seen / max(time.perf_counter() - t0, 1e-9))
    return True


def train_step(run: Run, batch: dict) -> dict[str, float]:
    """Forward, the sum of the ``*_loss`` terms, backward, optimizer step; returns the terms (mean over ranks)."""
    s, dev = run.cfg.solver, run.device
    batch = {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if run.state.clean is not None:
        batch["clean"] = run.state.clean[batch["indices"].cpu()].to(dev)
    if s.channels_last:
        batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
    run.optimizer.zero_grad(set_to_none=True)  # before the forward: last step's gradients do not add to its peak
    with autocast(dev, s.amp):
        out = run.criterion(run.ddp(batch), batch)
    losses = {k: v.float() for k, v in out.items() if k.endswith("_loss")}
    loss = sum(losses.values())
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"non-finite loss at epoch {run.state.epoch + 1}, step {run.state.step}: "
                                 f"{ {k: v.item() for k, v in losses.items()} }")
    run.scaler.scale(loss).backward()
    if s.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), s.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.state.step += 1
    return {k: dist.all_reduce_mean(v).item() for k, v in losses.items()}


def _report_step(run: Run, bar: tqdm, logged: dict[str, float], *, images_per_s: float) -> None:
    """Loss terms, learning rate and speed on the progress bar and in TensorBoard."""
    lr = run.optimizer.param_groups[0]["lr"]
    bar.set_postfix({**{k.removesuffix("_loss"): f"{v:.3f}" for k, v in logged.items()},
                     "lr": f"{lr:.2e}", "img/s": f"{images_per_s:.1f}"})
    bar.update(1)
    if run.writer:
        for k, v in logged.items():
            run.writer.add_scalar(f"train/{k}", v, run.state.step)
        run.writer.add_scalar("train/loss", sum(logged.values()), run.state.step)
        run.writer.add_scalar("train/lr", lr, run.state.step)


def end_epoch(run: Run, *, progress: bool) -> None:
    """After an epoch: lr schedule step, validation (val Rank-1 selects best.pth), with TEST.EVERY_EPOCH the
    test split (kept in the state, so before last.pth), last.pth, epoch_N.pth."""
    s, state = run.cfg.solver, run.state
    with warnings.catch_warnings():
        # An epoch resumed at its very end runs no optimizer step in this process; torch then warns that the
        # schedule is stepped first, but the schedule is per epoch and its state came from the checkpoint.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        run.scheduler.step()
    state.epoch += 1
    metrics = None
    if run.data.val and (state.epoch % s.evaluate_period == 0 or state.epoch == s.num_epochs):
        metrics = _validate_epoch(run, progress=progress)
        if metrics["t2i"]["R1"] > state.best["R1"]:
            state.best = {"R1": metrics["t2i"]["R1"], "epoch": state.epoch}
            save_snapshot(run, "best.pth", metrics)
    elif not run.data.val:
        state.best = {"R1": -1.0, "epoch": state.epoch}  # no val split: the last epoch is the selected model
        save_snapshot(run, "best.pth")
    if run.cfg.test.every_epoch and run.data.test:
        _test_epoch(run, progress=progress)
    save_snapshot(run, "last.pth", metrics)
    if s.checkpoint_period and state.epoch % s.checkpoint_period == 0:
        save_snapshot(run, f"epoch_{state.epoch:03d}.pth", metrics)


def _validate_epoch(run: Run, *, progress: bool) -> dict:
    """Val metrics after this epoch: logged, metrics/val_epoch_N.json, TensorBoard."""
    metrics = validate(run.model, run.data.val, run.cfg, run.data, progress)
    if dist.is_main():
        log.info("validation after epoch %d:\n%s", run.state.epoch, format_table(metrics))
        atomic_write_json(run.output_dir / "metrics" / f"val_epoch_{run.state.epoch:03d}.json", metrics)
        if run.writer:
            for direction, values in metrics.items():
                for k, v in values.items():
                    run.writer.add_scalar(f"val_{direction}/{k}", v, run.state.step)
    return metrics


def _test_epoch(run: Run, *, progress: bool) -> None:
    """TEST.EVERY_EPOCH: test metrics after this epoch (the authors' protocol); kept in ``run.state``."""
    metrics = validate(run.model, run.data.test, run.cfg, run.data, progress)
    state = run.state
    state.test_history.append({"epoch": state.epoch, **metrics["t2i"]})
    if dist.is_main():
        best = state.test_best
        log.info("test after epoch %d (authors' protocol): t2i R1 %.2f; max so far %.2f (epoch %d)",
                 state.epoch, metrics["t2i"]["R1"], best["R1"], best["epoch"])
        atomic_write_json(run.output_dir / "metrics" / f"test_epoch_{state.epoch:03d}.json", metrics)
        if run.writer:
            for k, v in metrics["t2i"].items():
                run.writer.add_scalar(f"test_every_epoch_t2i/{k}", v, state.step)


def save_snapshot(run: Run, name: str, metrics: dict | None = None) -> None:
    """Write a resumable checkpoint ``name`` (rank 0); every rank's RNG state goes into it."""
    rngs = _gather_rng_states()
    if not dist.is_main():
        return
    data, state = run.data, run.state
    save_checkpoint(run.output_dir / name, model=run.model, config=to_dict(run.cfg),
                    preprocess=data.preprocess, optimizer=run.optimizer,
                    scheduler=run.scheduler,
                    extra={"num_classes": data.num_classes, "metrics": metrics or {},
                           "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
                           "train_state": {"epoch": state.epoch, "step": state.step, "best": state.best,
                                           "clean": state.clean, "test_history": state.test_history,
                                           "sampler": run.sampler.state_dict(), "rng": rngs}})


def _close_writer(run: Run) -> None:
    if run.writer:
        run.writer.close()


# --------------------------------------------------------------------------- after the last epoch
def final_test(run: Run, *, progress: bool) -> dict:
    """The model selected on val (best.pth), evaluated once on TEST; writes metrics.json.

    With TEST.EVERY_EPOCH the authors' figure goes beside it: the maximum over epochs of the test
    Rank-1 (``metrics.json["authors_protocol"]``), labelled as selected on test.
    """
    best, final = run.state.best, {"best_epoch": run.state.best["epoch"], "val_best_R1": run.state.best["R1"]}
    if run.data.test:
        best_ckpt = load_checkpoint(run.output_dir / "best.pth") if dist.is_main() or not dist.is_dist() else None
        if dist.is_dist():
            objs = [best_ckpt["model"] if best_ckpt else None]
            torch.distributed.broadcast_object_list(objs, src=0)
            run.model.load_state_dict(objs[0])
        else:
            run.model.load_state_dict(best_ckpt["model"])
        test_metrics = validate(run.model, run.data.test, run.cfg, run.data, progress)
        final["test"] = test_metrics
        if dist.is_main():
            print(f"TEST (model selected on val, epoch {best['epoch']}):\n{format_table(test_metrics)}")
    if run.state.test_history:
        final["authors_protocol"] = _authors_protocol(run.state)
    if dist.is_main():
        atomic_write_json(run.output_dir / "metrics.json", final)
    return final


def _authors_protocol(state: TrainState) -> dict:
    """The authors' reported figure: the best test t2i Rank-1 over epochs (TEST.EVERY_EPOCH), printed and logged."""
    best = state.test_best
    report = {"selection": "test split (the authors' protocol: best test Rank-1 over epochs, selected on test)",
              "best_epoch": best["epoch"], "t2i": {k: v for k, v in best.items() if k != "epoch"},
              "R1_per_epoch": {str(h["epoch"]): h["R1"] for h in state.test_history}}
    if dist.is_main():
        per_epoch = ", ".join(f"{h['epoch']}: {h['R1']:.2f}" for h in state.test_history)
        line = (f"TEST, authors' protocol (selection on test): max t2i Rank-1 {best['R1']:.2f} at epoch "
                f"{best['epoch']} (R5 {best['R5']:.2f}, R10 {best['R10']:.2f}, mAP {best['mAP']:.2f}); "
                f"per epoch {per_epoch}")
        print(line)
        log.info("%s", line)
    return report


def _gather_rng_states() -> list:
    """Every rank's RNG states (rank order), so a resumed multi-process run is exact too."""
    state = rng_state()
    if not dist.is_dist():
        return [state]
    states: list = [None] * dist.get_world_size()
    torch.distributed.all_gather_object(states, state)
    return states
