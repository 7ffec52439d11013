"""Side by side with the authors' code: the same inputs through theirs and ours, max deltas printed.

    python benchmarks/parity_authors.py --authors-repo /path/to/TextReID [--steps 20] [--work-dir DIR]

Their ``lib/`` is imported unchanged from ``--authors-repo`` (``authors_code.AuthorsCode``; ``.cuda()``
redirected at run time). Both models are built from their unchanged YAML
(``moco_gru_cliprn50_ls_bs128_2048``) with small sizes given as overrides (input 128x64, 8 ids,
queue 32), ``REPRODUCE authors`` on ours, and the same random CLIP RN50 file under
``ROOT/pretrained/clip/RN50.pt`` plus a random word table under ``ROOT/datasets/cuhkpedes`` (nothing
is downloaded). Our model then takes their initial weights (their key encoders and linear layers are
re-initialised by their moco head) through our importer of their checkpoints.

Checks: towers (eval), one training step (losses, gradients absolute and relative, key encoders,
queues), the same step with our key-encoder update rounded as theirs (a diagnostic: what is left is
autograd's summation order), ``--steps`` training steps with each side's optimizer and warm-up
learning rate on the same batches (final weights: absolute, per tensor, whole model; ``--sgd`` repeats
them with SGD), the LR schedule of the full 80-epoch run, their identity sampler's epoch against ours
under ``DATALOADER.SAMPLER authors``, and evaluation metrics with and without re-ranking. Runs on CPU
in a few minutes on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from authors_code import AuthorsCode  # noqa: E402

from textreid.config import load_config  # noqa: E402
from textreid.data.sampler import IdentitySampler, authors_epoch  # noqa: E402
from textreid.engine.optim import build_scheduler  # noqa: E402
from textreid.engine.trainer import _build_optimization as build_optimization  # noqa: E402
from textreid.metrics import evaluate  # noqa: E402
from textreid.models.build import build_model  # noqa: E402
from textreid.models.checkpoint import convert_authors_state_dict  # noqa: E402
from textreid.models.recipes import build_criterion  # noqa: E402

YAML = "configs/cuhkpedes/moco_gru_cliprn50_ls_bs128_2048.yaml"
IDS, PER_ID, VOCAB = 8, 2, 64
SIZES = ["INPUT.HEIGHT", 128, "INPUT.WIDTH", 64, "MODEL.NUM_CLASSES", IDS, "MODEL.MOCO.K", 32,
         "SOLVER.IMS_PER_BATCH", IDS * PER_ID]
ROWS: list[tuple[str, float, str]] = []


def report(name: str, value: float, note: str = "") -> None:
    ROWS.append((name, value, note))
    print(f"{name:<64} {value:>10.3e}  {note}", flush=True)


def make_root(work: Path) -> Path:
    """ROOT with a random CLIP RN50 TorchScript file (as OpenAI ships RN50.pt) and a word table."""
    clip_file = work / "pretrained" / "clip" / "RN50.pt"
    if not clip_file.is_file():
        import open_clip

        clip_file.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        clip = open_clip.create_model("RN50", pretrained=None).eval()
        with torch.no_grad():  # CLIP zero-inits each block's last BN: randomise so every weight matters
            for m in clip.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        clip.register_buffer("input_resolution", torch.tensor(224))
        for name in ("context_length", "vocab_size"):
            value = getattr(clip, name)
            delattr(clip, name)
            clip.register_buffer(name, torch.tensor(value))
        torch.jit.save(torch.jit.script(clip), str(clip_file))
    table = work / "datasets" / "cuhkpedes" / "clip_vocab_vit.npy"
    table.parent.mkdir(parents=True, exist_ok=True)
    np.save(table, np.random.default_rng(0).standard_normal((VOCAB, 512)).astype(np.float32))
    return work


def build_pair(ac: AuthorsCode, root: Path, extra: tuple = ()):
    """Their model and ours (REPRODUCE authors) holding the same weights; ``extra``: config pairs for both."""
    their_cfg = ac.config(YAML, ["ROOT", str(root), *SIZES, *extra])
    torch.manual_seed(0)
    theirs = ac.build_model(their_cfg)
    cfg = load_config(ac.repo / YAML, ["ROOT", str(root), *map(str, SIZES), "REPRODUCE", "authors",
                                        "SOLVER.CHANNELS_LAST", "false", *map(str, extra)])
    table = np.load(root / "datasets" / "cuhkpedes" / "clip_vocab_vit.npy")
    ours = build_model(cfg, num_classes=IDS, vocab_size=VOCAB, word_table=table)
    missing, unexpected = ours.load_state_dict(convert_authors_state_dict(theirs.state_dict(), head="moco"),
                                               strict=False)
    assert not unexpected and all(k.endswith("word_table") for k in missing), (missing, unexpected)
    return theirs, ours, their_cfg, cfg


def make_batch(ac: AuthorsCode, seed: int):
    """IDS ids x PER_ID captions: images, their Caption objects, our tokens."""
    g = torch.Generator().manual_seed(seed)
    pids = torch.arange(IDS).repeat_interleave(PER_ID)
    images = torch.randn(len(pids), 3, 128, 64, generator=g)
    lengths = torch.randint(3, 30, (len(pids),), generator=g)
    word_ids = [torch.randint(1, VOCAB, (int(n),), generator=g).tolist() for n in lengths]
    padded = torch.zeros(len(pids), int(lengths.max()), dtype=torch.long)
    for i, ids in enumerate(word_ids):
        padded[i, : len(ids)] = torch.tensor(ids)
    ours = {"images": images, "person_ids": pids, "word_ids": padded, "lengths": lengths}
    return images, ac.captions(word_ids, pids.tolist()), ours


def max_delta(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def check_towers(ac, theirs, ours) -> None:
    theirs.eval(), ours.eval()
    images, captions, batch = make_batch(ac, 1)
    with torch.no_grad():
        report("visual tower (CLIP RN50 from RN50.pt), eval", max_delta(theirs.visual_model(images),
                                                                       ours.visual(images)))
        t_theirs = theirs.textual_model(captions)
        report("text tower (BiGRU, their batch max), eval", max_delta(t_theirs, ours.textual(batch)))
        ours.textual.batch_max = False  # our default: max(0, max over valid steps), batch-independent
        t_ours = ours.textual(batch)
        ours.textual.batch_max = True
    shorter = batch["lengths"] < batch["lengths"].max()
    report("text tower, our default max, captions shorter than the longest", max_delta(t_theirs[shorter],
                                                                                      t_ours[shorter]))
    report("text tower, our default max, the batch's longest caption", max_delta(t_theirs[~shorter],
                                                                               t_ours[~shorter]),
           "can differ only where all its steps are < 0 (ours clamps at 0)")
    with torch.no_grad():
        v_t, t_t = theirs(images, captions)
        v_o, t_o = ours.embed_images(images), ours.embed_texts(batch)
    report("embeddings (image, text), eval", max(max_delta(v_t, v_o), max_delta(t_t, t_o)))


KEY_ENCODERS = ("v_encoder_k.", "t_encoder_k.")


def _is_key_buffer(key: str) -> bool:
    """A key encoder's BatchNorm statistics: ours copies the query's each step, theirs keeps its own."""
    return key.startswith(KEY_ENCODERS) and key.rsplit(".", 1)[-1] in ("running_mean", "running_var",
                                                                        "num_batches_tracked")


def _theirs_as_ours(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return convert_authors_state_dict(tensors, head="moco")


# mathematically zero gradient: a key bias adds the same q.b to every key's logit of a query, and the
# attention softmax ignores a shift shared by all keys; what autograd computes for it is rounding noise
ZERO_GRADIENT = "attnpool.k_proj.bias"  # a suffix: the query tower's and its key copy's


def _rel_delta(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over max |b|: the delta relative to the tensor's scale."""
    return max_delta(a, b) / max(float(b.detach().abs().max()), 1e-30)


def one_step(ac, theirs, ours, cfg) -> dict:
    """One training forward + backward on both sides (same batch): deltas of losses, gradients, keys, queues."""
    theirs.train(), ours.train()
    images, captions, batch = make_batch(ac, 2)
    l_t = theirs(images, captions)
    l_o = {k: v for k, v in build_criterion(cfg)(ours(batch), batch).items() if k.endswith("_loss")}
    out = {f"loss {name}": max_delta(l_t[name], l_o[name]) for name in ("instance_loss", "infonce_loss",
                                                                        "global_align_loss")}
    sum(l_t.values()).backward()
    sum(l_o.values()).backward()
    grads_t = _theirs_as_ours({k: p.grad for k, p in theirs.named_parameters() if p.grad is not None})
    grads_o = {k: p.grad for k, p in ours.named_parameters() if p.grad is not None}
    assert set(grads_t) == set(grads_o), sorted(set(grads_t) ^ set(grads_o))[:6]
    scored = [k for k in grads_o if not k.endswith(ZERO_GRADIENT)]
    out["grads"] = len(grads_o)
    out["grad abs"] = max((max_delta(grads_t[k], grads_o[k]), k) for k in scored)
    out["grad rel"] = max((_rel_delta(grads_t[k], grads_o[k]), k) for k in scored)
    out["grad scale"] = max(float(grads_o[k].abs().max()) for k in scored)
    out["grad zero"] = max(max(float(grads_t[k].abs().max()), float(grads_o[k].abs().max())) for k in grads_o if k.endswith(ZERO_GRADIENT))
    state_t, state_o = _theirs_as_ours(theirs.state_dict()), ours.state_dict()
    params = {k for k, _ in ours.named_parameters()} | {k for k in state_o if k.startswith(KEY_ENCODERS)
                                                         and not _is_key_buffer(k)}
    keys = [k for k in params if k.startswith(KEY_ENCODERS) and "word_table" not in k]
    out["key params"] = max(max_delta(state_t[k], state_o[k]) for k in keys)
    buffers = [k for k in state_o if _is_key_buffer(k) and state_o[k].is_floating_point()]
    out["key BN"] = max(max_delta(state_t[k], state_o[k]) for k in buffers)
    out["queues"] = max(max_delta(state_t[k].float(), state_o[k].float()) for k in state_o if k.startswith("queue."))
    return out


def check_one_step(ac, theirs, ours, cfg) -> None:
    d = one_step(ac, theirs, ours, cfg)
    for name in ("instance_loss", "infonce_loss", "global_align_loss"):
        report(f"one step: {name}", d[f"loss {name}"])
    report(f"one step: gradients ({d['grads']} tensors), max abs", d["grad abs"][0],
           f"{d['grad abs'][1]}; gradients reach |g| = {d['grad scale']:.0f}")
    report("one step: gradients, max relative (per tensor: max|delta| / max|g|)", d["grad rel"][0],
           f"worst: {d['grad rel'][1]}")
    report("one step: attnpool.k_proj.bias gradient, both sides (0 in exact arithmetic)", d["grad zero"],
           "rounding noise of a zero gradient; left out above")
    report("one step: momentum key encoders (parameters)", d["key params"])
    report("one step: key encoders' BN running statistics", d["key BN"],
           "never used (see README); ours copies the query's")
    report("one step: queues (image, text keys; ids; pointer)", d["queues"])


@contextlib.contextmanager
def their_momentum_rounding():
    """Our key-encoder update with their arithmetic, k * m + q * (1 - m) (two roundings), instead of our
    fused ``k.mul_(m).add_(q, alpha=1 - m)`` (one multiply-add rounding): a diagnostic only."""
    import textreid.models.textreid as ours_module

    @torch.no_grad()
    def update(query, key, m):
        for q, k in zip(query.parameters(), key.parameters(), strict=True):
            k.copy_(k * m + q * (1.0 - m))
        for qb, kb in zip(query.buffers(), key.buffers(), strict=True):
            if kb.data_ptr() != qb.data_ptr():
                kb.copy_(qb)

    saved = ours_module.momentum_update
    ours_module.momentum_update = update
    try:
        yield
    finally:
        ours_module.momentum_update = saved


def _grad_taps(layers: dict[str, torch.nn.Module], store: dict) -> None:
    """Keep the gradients reaching each layer's output (an embedding) and input (a tower's output)."""
    def tap(name):
        def hook(module, inputs, output):
            if output.requires_grad:  # not the key projections (no_grad)
                output.register_hook(lambda g: store.__setitem__(f"{name} output", g))
                inputs[0].register_hook(lambda g: store.__setitem__(f"{name} input", g))
        return hook

    for name, layer in layers.items():
        layer.register_forward_hook(tap(name))


def check_one_step_their_rounding(ac, root: Path) -> None:
    """The same step with the key-encoder update rounded as theirs: what is left is autograd's summation order."""
    theirs, ours, _, cfg = build_pair(ac, root)
    taps_t, taps_o = {}, {}
    _grad_taps({"image": theirs.embed_model.v_embed_layer, "text": theirs.embed_model.t_embed_layer}, taps_t)
    _grad_taps({"image": ours.v_embed_layer, "text": ours.t_embed_layer}, taps_o)
    with their_momentum_rounding():
        d = one_step(ac, theirs, ours, cfg)
    tag = "one step, key update rounded as theirs:"
    report(f"{tag} losses", max(d[f"loss {n}"] for n in ("instance_loss", "infonce_loss", "global_align_loss")))
    report(f"{tag} queues", d["queues"])
    for where, label in (("output", "embeddings"), ("input", "tower outputs")):
        report(f"{tag} gradient at the {label}, relative", max(_rel_delta(taps_t[f"{m} {where}"],
                                                                          taps_o[f"{m} {where}"])
                                                               for m in ("image", "text")))
    report(f"{tag} gradients, max abs", d["grad abs"][0], d["grad abs"][1])
    report(f"{tag} gradients, max relative", d["grad rel"][0], d["grad rel"][1])


def check_training(ac, root: Path, steps: int, optimizer: str = "Adam") -> None:
    """``steps`` steps of each side's own optimizer and (epoch-1 warm-up) learning rate on the same batches."""
    theirs, ours, their_cfg, cfg = build_pair(ac, root, ("SOLVER.OPTIMIZER", optimizer))
    opt_t, _ = ac.optimizer_and_scheduler(their_cfg, theirs)  # their scheduler sets the warm-up start lr
    opt_o, _, _ = build_optimization(cfg, ours, torch.device("cpu"))  # what `textreid train` builds
    lrs = sorted({g["lr"] for g in opt_t.param_groups}), sorted({g["lr"] for g in opt_o.param_groups})
    assert len(lrs[0]) == len(lrs[1]) and all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(*lrs, strict=True)), lrs
    theirs.train(), ours.train()
    criterion = build_criterion(cfg)
    initial = {k: v.clone() for k, v in ours.state_dict().items()}
    for step in range(steps):
        images, captions, batch = make_batch(ac, 100 + step)
        opt_t.zero_grad()
        sum(theirs(images, captions).values()).backward()
        opt_t.step()
        opt_o.zero_grad()
        sum(v for k, v in criterion(ours(batch), batch).items() if k.endswith("_loss")).backward()
        opt_o.step()
    state_t, state_o = _theirs_as_ours(theirs.state_dict()), ours.state_dict()
    deltas = {k: _weight_deltas(state_t[k], v, initial[k]) for k, v in state_o.items()
              if "word_table" not in k and v.is_floating_point() and not _is_key_buffer(k)}
    scored = {k: d for k, d in deltas.items() if not k.endswith(ZERO_GRADIENT)}
    tag = f"{steps} {optimizer} steps (REPRODUCE authors): weights,"
    for i, (what, note) in enumerate([("max abs", "all parameters and buffers but the key encoders' BN statistics"),
                                      ("max relative per element (max|delta| / max|w|)", ""),
                                      ("relative in norm (|delta| / |w|)", ""),
                                      ("relative to the change (|delta| / |w_end - w_start|)", "")]):
        worst = max(scored, key=lambda k: scored[k][i])  # noqa: B023
        report(f"{tag} {what}", scored[worst][i], f"worst: {worst}" + (f"; {note}" if note else ""))
    zero = [d for k, d in deltas.items() if k.endswith(ZERO_GRADIENT)]
    flat = [torch.cat([(state_t[k].double() - state_o[k].double()).flatten() for k in scored]),
            torch.cat([state_o[k].double().flatten() for k in scored])]
    report(f"{tag} relative, whole model (|delta| / |w| over all of them)", float(flat[0].norm() / flat[1].norm()))
    report(f"{steps} {optimizer} steps: attnpool.k_proj.bias (zero gradient), relative in norm", max(d[2] for d in zero),
           "Adam turns its rounding-noise gradient into full-size steps, on both sides")


def _weight_deltas(theirs: torch.Tensor, ours: torch.Tensor, start: torch.Tensor) -> tuple[float, ...]:
    """max |delta|; over max |w|; |delta| / |w| and / |w - w_start| (Frobenius norms)."""
    delta = (theirs.double() - ours.double()).norm()
    return (max_delta(theirs, ours), _rel_delta(theirs, ours), float(delta / ours.double().norm().clamp_min(1e-30)),
            float(delta / (ours.double() - start.double()).norm().clamp_min(1e-30)))


def check_schedule(ac, root: Path) -> None:
    their_cfg = ac.config(YAML, ["ROOT", str(root)])
    cfg = load_config(ac.repo / YAML, ["ROOT", str(root), "REPRODUCE", "authors"])
    param = torch.nn.Parameter(torch.zeros(1))
    opt_t = torch.optim.Adam([{"params": [param], "lr": their_cfg.SOLVER.BASE_LR}], lr=their_cfg.SOLVER.BASE_LR)
    sched_t = ac.lib.solver.make_lr_scheduler(their_cfg, opt_t)
    s = cfg.solver
    opt_o = torch.optim.Adam([param], lr=s.base_lr)
    sched_o = build_scheduler(opt_o, schedule=s.lrscheduler, num_epochs=s.num_epochs, steps=s.steps, gamma=s.gamma,
                              warmup_epochs=s.warmup_epochs, warmup_factor=s.warmup_factor,
                              warmup_method=s.warmup_method, target_factor=s.target_lr / s.base_lr)
    worst = 0.0
    for _ in range(s.num_epochs):
        worst = max(worst, abs(opt_t.param_groups[0]["lr"] - opt_o.param_groups[0]["lr"]))
        sched_t.step()
        sched_o.step()
    report(f"LR schedule, {s.num_epochs} epochs (warm-up, steps {s.steps})", worst)


def check_sampler(ac) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(300), rng.integers(1, 11, size=300)).tolist()  # 1-10 captions per id
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(5)).tolist()
    theirs = ac.sampler_batches(labels, order, batch_size=128, ims_per_id=4, python_seed=7)
    ours = authors_epoch(labels, order, random.Random(7), ims_per_id=4, ids_per_batch=32)
    report("sampler: batches differing from theirs (same shuffle + draws)", float(theirs != ours),
           f"{len(theirs)} batches each; ours by default: "
           f"{len(IdentitySampler(labels, batch_size=128, rank=0, world_size=1))} (every caption once)")


def check_evaluation(ac) -> None:
    g = torch.Generator().manual_seed(3)
    image_pids = torch.arange(40).repeat_interleave(2)
    image = torch.randn(len(image_pids), 32, generator=g)
    text_pids = image_pids.repeat_interleave(2)
    text = image.repeat_interleave(2, 0) + 1.5 * torch.randn(len(text_pids), 32, generator=g)
    ours = evaluate(text, text_pids, image, image_pids, rerank=True)
    t, i = torch.nn.functional.normalize(text, dim=1), torch.nn.functional.normalize(image, dim=1)
    sim = t @ i.T
    cases = {"t2i": (sim, text_pids, image_pids), "i2t": (sim.T, image_pids, text_pids),
             "t2i_rerank": (sim + ac.rerank_term(t, i), text_pids, image_pids),
             "i2t_rerank": (sim.T + ac.rerank_term(i, t), image_pids, text_pids)}
    for name, (s, q, gids) in cases.items():
        cmc, mean_ap = ac.rank(s, q, gids)
        theirs = [*cmc.tolist(), float(mean_ap)]
        mine = [ours[name][k] for k in ("R1", "R5", "R10", "mAP")]
        report(f"evaluation {name}: R1/R5/R10/mAP (points)", max(abs(a - b) for a, b in zip(theirs, mine, strict=True)),
               f"R1 {mine[0]:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors-repo", required=True, help="a work tree of github.com/BrandonHanx/TextReID")
    parser.add_argument("--steps", type=int, default=20, help="training steps compared (default 20; 0 skips them)")
    parser.add_argument("--sgd", action="store_true", help="also compare --steps steps of SGD (diagnostic)")
    parser.add_argument("--work-dir", default="", help="keeps the random RN50.pt between runs (default: temp)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="parity_"))
    with AuthorsCode(args.authors_repo) as ac:
        root = make_root(work)
        print(f"{'check':<64} {'max delta':>10}  note")
        check_schedule(ac, root)
        check_sampler(ac)
        check_evaluation(ac)
        theirs, ours, their_cfg, cfg = build_pair(ac, root)
        check_towers(ac, theirs, ours)
        check_one_step(ac, theirs, ours, cfg)
        check_one_step_their_rounding(ac, root)
        if args.steps > 0:
            check_training(ac, root, args.steps)  # the paper's optimizer
        if args.steps > 0 and args.sgd:  # linear in the gradient: no per-element normalisation
            check_training(ac, root, args.steps, "SGD")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
