"""IRRA's and RDE's recipes: branch pieces against naive versions, the criteria, the clean-pair
division and noisy correspondences, and both tiny configs trained end to end (train -> test ->
index -> search), with resume and two processes in the slow set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textreid import losses
from textreid.cli import main
from textreid.config import load_config
from textreid.criterion import RDECriterion, TextReIDCriterion
from textreid.data.noise import load_index, noisy_records, shuffle_index
from textreid.data.readers import read_split
from textreid.engine.demo import search_rank1
from textreid.engine.division import clean_probability, consensus, split_clean
from textreid.engine.trainer import train
from textreid.models.branches import TextPerturbation, mask_for_mlm
from textreid.models.checkpoint import load_checkpoint
from textreid.models.text_transformer import ClipTextTower
from textreid.models.tokens import tower_tokens
from textreid.models.visual import build_visual_tower
from textreid.search.searcher import Searcher

V = 49408  # CLIP BPE: 49405 = <|mask|>, 49406 / 49407 = start / end of text

TINY = ["INPUT.HEIGHT", "64", "INPUT.WIDTH", "32", "INPUT.PADDING", "2", "MODEL.VIT.LAYERS", "1",
        "MODEL.TEXT_TRANSFORMER.LAYERS", "1", "MODEL.RDE.TSE_DIM", "32", "SOLVER.IMS_PER_BATCH", "16",
        "SOLVER.NUM_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "0", "DATALOADER.NUM_WORKERS", "0",
        "TEST.IMS_PER_BATCH", "64"]


def _tokens(lengths: list[int], width: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        out[i, 0], out[i, n + 1] = V - 2, V - 1
        out[i, 1:n + 1] = torch.randint(1, V - 3, (n,), generator=g)
    return out


# --------------------------------------------------------------------------- pieces
def test_mlm_masking_follows_bert_rules() -> None:
    tokens = _tokens([10] * 400, width=12)
    torch.manual_seed(0)
    masked, labels = mask_for_mlm(tokens, vocab_size=V, prob=0.15)
    picked = labels > 0
    assert torch.equal(labels[picked], tokens[picked])  # labels are the original ids
    assert not picked[:, 0].any() and not picked[:, 11].any()  # never start/end of text
    assert torch.equal(masked[~picked], tokens[~picked])
    assert abs(picked[:, 1:11].float().mean().item() - 0.15) < 0.02
    share_masked = (masked[picked] == V - 3).float().mean().item()
    assert abs(share_masked - 0.8) < 0.05
    assert picked.any(dim=1).all()  # at least one token per caption


def test_text_perturbation_deletes_in_order() -> None:
    tokens = _tokens([9] * 300, width=12)
    torch.manual_seed(1)
    out = TextPerturbation(vocab_size=V, prob=0.2).prepare({"tokens": tokens})["tokens"]
    lengths_before = (tokens > 0).sum(1)
    lengths_after = (out > 0).sum(1)
    deleted = (lengths_before - lengths_after).float().mean().item() / 9
    assert abs(deleted - 0.2 * 0.2) < 0.02  # 20% of the picked 20% are deleted
    assert (out[:, 0] == V - 2).all() and (out.argmax(1) == lengths_after - 1).all()  # EOT right after the words
    kept = out[(out > 0) & (out < V - 3)]
    assert abs((out == V - 3).sum().item() / (kept.numel() + (out == V - 3).sum().item()) - 0.12) < 0.03


def test_token_outputs_match_the_towers() -> None:
    torch.manual_seed(0)
    vit = build_visual_tower("clip_vit_b16", image_size=(64, 32), width=64, layers=2, heads=2,
                             output_dim=32).eval()
    images = torch.randn(3, 3, 64, 32)
    feats = tower_tokens(vit, images, attention=True)
    torch.testing.assert_close(feats["pooled"], vit(images), atol=1e-5, rtol=1e-5)
    assert feats["tokens"].shape == (3, 1 + 8, 32) and feats["attention"].shape == (3, 9, 9)
    torch.testing.assert_close(feats["attention"].sum(-1), torch.ones(3, 9))
    text = ClipTextTower(context_length=12, width=64, layers=2, heads=2, output_dim=32).eval()
    batch = {"tokens": _tokens([3, 7, 10])}
    feats = tower_tokens(text, batch, attention=True)
    torch.testing.assert_close(feats["pooled"], text(batch), atol=1e-5, rtol=1e-5)
    assert torch.all(feats["attention"].triu(1) == 0)  # causal


def _naive_tal(img: torch.Tensor, txt: torch.Tensor, ids: list[int], tau: float, margin: float) -> torch.Tensor:
    s = F.normalize(txt, dim=1) @ F.normalize(img, dim=1).t()
    out = []
    for i in range(len(ids)):
        total = 0.0
        for m in (s, s.t()):
            pos = [j for j in range(len(ids)) if ids[j] == ids[i]]
            neg = [j for j in range(len(ids)) if ids[j] != ids[i]]
            w = torch.softmax(torch.stack([m[i, j] / tau for j in pos]), 0)
            p = sum(w[n] * m[i, j] for n, j in enumerate(pos))
            h = tau * math.log(sum(math.exp(m[i, j].item() / tau) for j in neg))
            total += max(0.0, margin + h - p.item())
        out.append(total)
    return torch.tensor(out)


def test_tal_matches_a_naive_loop() -> None:
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    ids = [0, 0, 1, 2, 2, 3]
    got = losses.tal_per_pair(img, txt, torch.tensor(ids), tau=0.1, margin=0.3)
    torch.testing.assert_close(got, _naive_tal(img, txt, ids, 0.1, 0.3).float(), atol=1e-5, rtol=1e-5)


def test_rde_criterion_weights_pairs_and_others_drop_noisy_ones() -> None:
    g = torch.Generator().manual_seed(1)
    out = {"image_embeds": torch.randn(4, 5, generator=g), "text_embeds": torch.randn(4, 5, generator=g),
           "image_tse": torch.randn(4, 5, generator=g), "text_tse": torch.randn(4, 5, generator=g)}
    batch = {"person_ids": torch.tensor([0, 0, 1, 2]), "clean": torch.tensor([1.0, 0.0, 1.0, 1.0])}
    got = RDECriterion({"tal": 1.0, "tse": 2.0})(out, batch)
    per = losses.tal_per_pair(out["image_embeds"], out["text_embeds"], batch["person_ids"])
    torch.testing.assert_close(got["tal_loss"], per[[0, 2, 3]].sum())
    # a criterion without per-pair weights sees the batch without the noisy pair
    crit = TextReIDCriterion({"instance": 0.0, "global_align": 1.0, "infonce": 0.0, "sdm": 1.0})
    got = crit(out, batch)
    keep = [0, 2, 3]
    sub = {k: v[keep] for k, v in out.items()}
    expected = crit(sub, {"person_ids": batch["person_ids"][keep]})
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def test_division_separates_a_bimodal_loss_vector() -> None:
    rng = np.random.default_rng(0)
    clean_losses = rng.normal(0.2, 0.05, 800)
    noisy_losses = rng.normal(0.8, 0.05, 200)
    prob = clean_probability(np.concatenate([clean_losses, noisy_losses]))
    votes = split_clean(prob)
    assert votes[:800].mean() > 0.98 and votes[800:].mean() < 0.02
    # consensus of two divisions: agreement decides, split votes are a coin flip
    a, b = np.array([1, 1, 0, 0] * 250), np.array([1, 0, 1, 0] * 250)
    kept = consensus([a, b], torch.Generator().manual_seed(0))
    assert (kept[0::4] == 1).all() and (kept[3::4] == 0).all()
    split = torch.cat([kept[1::4], kept[2::4]])
    assert 0.4 < split.mean().item() < 0.6
    assert split_clean(np.linspace(0.6, 1.0, 200)).sum() == 197  # nothing looks noisy: the lowest ~1% are


def test_noise_index_shuffle_and_files(synth_root: Path, tmp_path: Path) -> None:
    records = read_split("synth_train", root=synth_root)
    index = shuffle_index(len(records), rate=0.5, seed=3)
    assert (index != np.arange(len(records))).mean() > 0.45 and sorted(index.tolist()) == list(range(len(records)))
    assert np.array_equal(index, shuffle_index(len(records), rate=0.5, seed=3))
    moved, clean = noisy_records(records, rate=0.5, seed=3)
    assert [r.image_path for r in moved] == [r.image_path for r in records]
    assert all(m.caption == records[j].caption for m, j in zip(moved, index.tolist(), strict=True))
    assert clean.sum() >= (index == np.arange(len(records))).sum()
    np.save(tmp_path / "noise.npy", index)
    moved_again, _ = noisy_records(records, noise_file=str(tmp_path / "noise.npy"))
    assert moved_again == moved
    np.save(tmp_path / "short.npy", index[:-1])
    with pytest.raises(ValueError, match="training split has"):
        load_index(tmp_path / "short.npy", len(records))


# --------------------------------------------------------------------------- end to end
def _run_cli_recipe(config: str, synth_root: Path, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "run"
    args = ["--root", str(synth_root), "--device", "cpu", "--quiet"]
    assert main(["train", "--config-file", config, "--output-dir", str(out), *args, *TINY, *extra]) == 0
    final = json.loads((out / "metrics.json").read_text())
    assert main(["test", "--config-file", config, "--checkpoint-file", str(out / "best.pth"), "--output-dir",
                 str(tmp_path / "test"), *args, *TINY, *extra]) == 0
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert metrics["t2i"]["R1"] == pytest.approx(final["test"]["t2i"]["R1"], abs=1e-4)
    records = read_split("synth_test", root=synth_root)
    listing = tmp_path / "gallery.txt"
    listing.write_text("\n".join(sorted({str(r.image_path) for r in records})))
    assert main(["index", "--checkpoint", str(out / "best.pth"), "--images", str(listing), "--out",
                 str(tmp_path / "index"), "--device", "cpu", "--quiet"]) == 0
    # the search index holds the same (combined, for RDE) embedding the evaluation ranks with
    assert search_rank1(Searcher(tmp_path / "index"), records) == pytest.approx(metrics["t2i"]["R1"], abs=1e-6)
    return final


def test_irra_tiny_trains_tests_indexes_and_searches(synth_root: Path, tmp_path: Path) -> None:
    _run_cli_recipe("synth/tiny_irra", synth_root, tmp_path)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "sdm_loss" in log and "id_loss" in log and "mlm_loss" in log
    state = load_checkpoint(tmp_path / "run" / "best.pth")["model"]
    assert "classifier.weight" in state and any(k.startswith("branches.mlm.cross_attn") for k in state)


def test_rde_tiny_trains_with_division_tests_indexes_and_searches(synth_root: Path, tmp_path: Path) -> None:
    _run_cli_recipe("synth/tiny_rde", synth_root, tmp_path, "DATASETS.NOISE_RATE", "0.3", "DIVISION.START_EPOCH", "0")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "tal_loss" in log and "tse_loss" in log
    assert "clean-pair division before epoch 1" in log and "noisy correspondences:" in log
    ckpt = load_checkpoint(tmp_path / "run" / "last.pth")
    clean = ckpt["train_state"]["clean"]
    assert clean is not None and clean.shape == (96,) and 0 < clean.sum() < 96


@pytest.mark.slow
@pytest.mark.parametrize("config", ["synth/tiny_irra", "synth/tiny_rde"])
def test_recipe_resume_mid_epoch_is_exact(config: str, synth_root: Path, tmp_path: Path) -> None:
    cfg = load_config(config, ["ROOT", str(synth_root), *TINY, "DATASETS.NOISE_RATE", "0.3",
                               "SOLVER.NUM_EPOCHS", "2", "SOLVER.DETERMINISTIC", "True"])
    straight = train(cfg, output_dir=tmp_path / "a", device="cpu", progress=False)
    cut = train(cfg, output_dir=tmp_path / "b", device="cpu", progress=False, stop_after_steps=9)
    assert cut.interrupted
    resumed = train(cfg, output_dir=tmp_path / "b", device="cpu", progress=False,
                    resume_from=str(tmp_path / "b" / "interrupted.pth"))
    a = load_checkpoint(tmp_path / "a" / "last.pth")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pth")["model"]
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert straight.metrics["test"] == resumed.metrics["test"]


def _gloo_worker(rank: int, world: int, config: str, root: str, out: str, port: int) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    cfg = load_config(config, ["ROOT", root, *TINY, "DATASETS.NOISE_RATE", "0.3", "DIVISION.START_EPOCH", "0"])
    result = train(cfg, output_dir=Path(out) / "run", device="cpu", progress=False, stop_after_steps=3)
    torch.save({k: v.detach() for k, v in result.model.named_parameters()}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("config", ["synth/tiny_irra", "synth/tiny_rde"])
def test_recipe_two_gloo_processes_stay_in_sync(config: str, synth_root: Path, tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_gloo_worker, args=(2, config, str(synth_root), str(tmp_path), port), nprocs=2, join=True,
                       start_method="spawn")
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "ranks' weights differ"
    ckpt = load_checkpoint(tmp_path / "run" / "interrupted.pth")
    if config.endswith("rde"):  # both ranks used the same division, gathered from both shards
        assert ckpt["train_state"]["clean"] is not None


def test_synth_writes_noisy_training_splits(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--ids", "6", "--images-per-id", "2", "--workers", "1", "--quiet",
                 "--noise-rates", "0.5"]) == 0
    records = read_split("synth_train", dataset_dir=out)
    index = load_index(out / "noiseindex" / "synth_0.5.npy", len(records))
    assert np.array_equal(index, shuffle_index(len(records), rate=0.5, seed=0))
