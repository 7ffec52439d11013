"""Faithful by default, exact on request: weights where the authors load them, REPRODUCE authors,
evaluation in fp32, classifier-agnostic evaluation, and one word-id decision across layouts."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from authors_format import export_authors
from clip_factory import save_openai_jit, tiny_clip
from textreid.cli import main
from textreid.config import CLIP_MEAN, IMAGENET_MEAN, IMAGENET_STD, ConfigError, load_config
from textreid.data.sampler import IdentitySampler, authors_epoch
from textreid.data.transforms import build_transforms
from textreid.models.build import build_model, default_weight_files, pretrained_path


# an authors'-style YAML (their keys, no weight file named), sized by the tiny CLIP factory's RN
def _authors_yaml(visual: str, head: str = "simple", extra: str = "") -> str:
    return f"""\
MODEL:
  WEIGHT: "imagenet"
  VISUAL_MODEL: "{visual}"
  TEXTUAL_MODEL: "bigru"
  NUM_CLASSES: 6
  GRU:
    ONEHOT: "yes"
    NUM_UNITS: 16
    EMBEDDING_SIZE: 16
    VOCABULARY_SIZE: 30
  RESNET:
    RES5_STRIDE: 1
{extra}  EMBEDDING:
    EMBED_HEAD: '{head}'
    FEATURE_SIZE: 32
  MOCO:
    K: 16
INPUT:
  HEIGHT: 64
  WIDTH: 32
"""


CLIP_SIZES = "    LAYERS: [1, 1, 1, 1]\n    WIDTH: 8\n    OUTPUT_DIM: 32\n    HEADS: 4\n"


def _cfg(tmp_path: Path, text: str, *overrides: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return load_config(path, ["ROOT", str(tmp_path), *overrides])


# --------------------------------------------------------------------------- weights
@pytest.mark.parametrize("visual, expected", [
    ("m_resnet50", "pretrained/clip/RN50.pt"), ("m_resnet101", "pretrained/clip/RN101.pt"),
    ("resnet50", "pretrained/torchvision/resnet50-19c8e357.pth"),
])
def test_missing_default_weight_file_is_an_error_naming_it(tmp_path: Path, visual: str, expected: str) -> None:
    cfg = _cfg(tmp_path, _authors_yaml(visual))
    with pytest.raises(FileNotFoundError) as err:
        build_model(cfg, num_classes=6, vocab_size=30, word_table=None)
    message = str(err.value)
    assert str(tmp_path / expected) in message and "\n" not in message
    assert "MODEL.PRETRAINED none" in message


def test_clip_file_at_the_authors_location_is_loaded(tmp_path: Path) -> None:
    clip = tiny_clip("resnet", seed=1)
    (tmp_path / "pretrained" / "clip").mkdir(parents=True)
    save_openai_jit(clip, tmp_path / "pretrained" / "clip" / "RN50.pt")
    cfg = _cfg(tmp_path, _authors_yaml("m_resnet50", extra=CLIP_SIZES))
    assert cfg.input.pixel_mean == list(CLIP_MEAN)  # CLIP tower, YAML silent: CLIP's statistics
    model = build_model(cfg, num_classes=6, vocab_size=30, word_table=None)
    torch.testing.assert_close(model.visual.conv1.weight, clip.visual.conv1.weight)
    torch.testing.assert_close(model.visual.layer4[0].bn3.running_var, clip.visual.layer4[0].bn3.running_var)


def test_torchvision_file_found_in_the_torch_hub_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(2)
    reference = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1])
    cache = tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert cache in default_weight_files("resnet50", tmp_path)
    cache.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cache)  # the file torchvision writes: a plain state dict with fc.*
    cfg = _cfg(tmp_path, _authors_yaml("resnet50", extra="    LAYERS: [1, 1, 1, 1]\n"))
    assert (cfg.input.pixel_mean, cfg.input.pixel_std) == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert pretrained_path(cfg) == str(cache)
    model = build_model(cfg, num_classes=6, vocab_size=30, word_table=None)
    torch.testing.assert_close(model.visual.state_dict()["trunk.conv1.weight"]
                               if "trunk.conv1.weight" in model.visual.state_dict()
                               else model.visual.state_dict()["conv1.weight"], reference.conv1.weight)


def test_random_initialisation_only_when_asked(tmp_path: Path, caplog) -> None:
    cfg = _cfg(tmp_path, _authors_yaml("m_resnet50", extra=CLIP_SIZES), "MODEL.PRETRAINED", "None")
    with caplog.at_level("INFO", logger="textreid"):
        build_model(cfg, num_classes=6, vocab_size=30, word_table=None)
    assert "MODEL.PRETRAINED none" in caplog.text


# --------------------------------------------------------------------------- REPRODUCE authors
def test_reproduce_switch_sets_each_piece_and_default_keeps_ours(tmp_path: Path) -> None:
    ours = _cfg(tmp_path, _authors_yaml("m_resnet50", head="moco"))
    assert (ours.reproduce, ours.dataloader.sampler, ours.input.erase_fill, ours.model.reinit_linear,
            ours.model.gru.max_length, ours.test.amp, ours.test.every_epoch) == (
        "ours", "balanced", "zero", False, 100, "off", False)
    theirs = _cfg(tmp_path, _authors_yaml("m_resnet50", head="moco"), "REPRODUCE", "AUTHORS")
    assert (theirs.dataloader.sampler, theirs.input.erase_fill, theirs.model.reinit_linear,
            theirs.model.gru.max_length, theirs.solver.amp, theirs.test.amp, theirs.test.every_epoch) == (
        "authors", "mean", True, 105, "off", "off", True)
    simple = _cfg(tmp_path, _authors_yaml("m_resnet50", head="simple"), "REPRODUCE", "authors")
    assert simple.model.reinit_linear is False  # their simple head re-initialises only its own layers
    with pytest.raises(ConfigError, match="REPRODUCE"):
        _cfg(tmp_path, _authors_yaml("m_resnet50"), "REPRODUCE", "paper")


def test_enum_values_are_case_insensitive(tmp_path: Path) -> None:
    for spelling in ("YES", "yes", "Yes"):
        cfg = _cfg(tmp_path, _authors_yaml("m_resnet50"), "MODEL.GRU.ONEHOT", spelling)
        assert cfg.model.gru.onehot == "yes"
    assert _cfg(tmp_path, _authors_yaml("m_resnet50"), "REPRODUCE", "Authors").reproduce == "authors"


def test_reinit_linear_applies_to_the_moco_head_only(tmp_path: Path) -> None:
    def visual_attnpool(head: str, reinit: str) -> torch.Tensor:
        cfg = _cfg(tmp_path, _authors_yaml("m_resnet50", head=head, extra=CLIP_SIZES), "MODEL.PRETRAINED", "none",
                   "MODEL.REINIT_LINEAR", reinit)
        torch.manual_seed(0)
        return build_model(cfg, num_classes=6, vocab_size=30, word_table=None).visual.attnpool.q_proj.weight

    torch.testing.assert_close(visual_attnpool("simple", "true"), visual_attnpool("simple", "false"))
    assert not torch.allclose(visual_attnpool("moco", "true"), visual_attnpool("moco", "false"))


def _their_group_count(n: int, k: int = 4) -> int:
    return max(1, n // k)


def test_authors_sampler_epoch_matches_their_formula() -> None:
    # 40 identities with 1..7 captions: one group each, so an epoch is exactly floor(40 / P) batches
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), rng.integers(1, 8, size=40)).tolist()
    sampler = IdentitySampler(labels, batch_size=32, ims_per_id=4, grouping="authors", rank=0, world_size=1)
    assert len(sampler) == math.floor(sum(_their_group_count(n) for n in Counter(labels).values()) / 8) == 5
    ours = IdentitySampler(labels, batch_size=32, ims_per_id=4, rank=0, world_size=1)
    assert len(ours) > len(sampler)  # ours uses every caption once


def test_authors_epoch_groups_padding_and_ids() -> None:
    counts = {0: 2, 1: 3, 2: 9, 3: 4, 4: 13, 5: 1, 6: 8, 7: 5}
    labels = [pid for pid, n in counts.items() for _ in range(n)]
    order = list(np.random.default_rng(1).permutation(len(labels)))
    batches = authors_epoch(labels, order, random.Random(0), ims_per_id=4, ids_per_batch=2)
    used = Counter()
    for batch in batches:
        groups = [batch[i:i + 4] for i in range(0, len(batch), 4)]
        owners = [{labels[i] for i in g} for g in groups]
        assert all(len(o) == 1 for o in owners) and len({o.pop() for o in owners}) == 2
        for g in groups:
            used[labels[g[0]]] += 1
            if counts[labels[g[0]]] < 4:  # padded by repeating each caption ceil(4/n) times, in shuffled order
                n = counts[labels[g[0]]]
                mine = [i for i in order if labels[i] == labels[g[0]]]
                assert g == [i for i in mine for _ in range(-(-4 // n))][:4]
    assert all(used[p] <= _their_group_count(n) for p, n in counts.items())
    assert len(batches) <= sum(_their_group_count(n) for n in counts.values()) // 2


def test_erasing_fill_is_the_unnormalised_mean_under_authors() -> None:
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.25, 0.25]
    black = Image.new("RGB", (16, 32), (0, 0, 0))
    fills = {}
    for fill in ("zero", "mean"):
        tf = build_transforms(height=32, width=16, mean=mean, std=std, train=True, padding=0, erase_fill=fill)
        for seed in range(50):
            torch.manual_seed(seed)
            x = tf(black)
            erased = x[0] != -mean[0] / std[0]
            if erased.any():
                fills[fill] = [float(x[c][erased].unique()[0]) for c in range(3)]
                break
    assert fills["zero"] == [0.0, 0.0, 0.0]
    assert fills["mean"] == pytest.approx(mean)


# --------------------------------------------------------------------------- evaluation
def test_raw_layout_model_evaluates_the_same_on_both_layouts(synth_root: Path, tmp_path: Path) -> None:
    """Captions are tokenised with the run's vocabulary even when a split ships ids of another one."""
    from conftest import FAST_OVERRIDES
    from textreid.data.readers import read_split
    from textreid.engine.trainer import train
    from textreid.models.checkpoint import load_checkpoint

    cfg = load_config("synth/tiny_moco", ["ROOT", str(synth_root), *FAST_OVERRIDES, "SOLVER.NUM_EPOCHS", "1",
                                           "MODEL.GRU.ONEHOT", "YES", "DATASETS.TRAIN", "('synth_raw_train',)",
                                           "DATASETS.VAL", "()", "DATASETS.TEST", "()"])
    run = tmp_path / "run"
    train(cfg, output_dir=run, progress=False)
    spec = load_checkpoint(run / "best.pth")["preprocess"]
    assert spec["shipped_ids"] is False and spec["vocab"]["words"][:2] == ["<pad>", "<unk>"]
    authors_test = read_split("synth_test", root=synth_root)
    assert all(r.word_ids is not None for r in authors_test)  # ids of the authors' table, not of this vocabulary

    r1 = {}
    for split in ("synth_test", "synth_raw_test"):
        out = tmp_path / split
        assert main(["test", "--config-file", "synth/tiny_moco", "--checkpoint-file", str(run / "best.pth"),
                     "--root", str(synth_root), "--output-dir", str(out), "--device", "cpu", "--quiet",
                     "DATASETS.TEST", f"('{split}',)", *FAST_OVERRIDES]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        r1[split] = (metrics["t2i"]["R1"], metrics["t2i"]["mAP"], metrics["i2t"]["R1"])
    assert r1["synth_test"] == r1["synth_raw_test"]


def test_authors_checkpoint_with_another_classifier_size_evaluates(synth_root: Path, tmp_path: Path, caplog) -> None:
    from test_authors_eval import AUTHORS_YAML

    yaml_path = tmp_path / "moco_tiny.yaml"
    yaml_path.write_text(AUTHORS_YAML)  # NUM_CLASSES: 16
    cfg = load_config(yaml_path)
    table = np.load(synth_root / "datasets" / "synth" / "clip_vocab_vit.npy")
    source = build_model(cfg, num_classes=5, vocab_size=table.shape[0], word_table=table, load_pretrained=False)
    torch.save(export_authors(source.eval(), "moco"), tmp_path / "best.pth")
    with caplog.at_level("INFO", logger="textreid"):
        rc = main(["test", "--config-file", str(yaml_path), "--checkpoint-file", str(tmp_path / "best.pth"),
                   "--root", str(synth_root), "--output-dir", str(tmp_path / "eval"), "--device", "cpu", "--quiet"])
    assert rc == 0 and (tmp_path / "eval" / "metrics.json").is_file()
    assert "NUM_CLASSES" not in caplog.text  # no line claiming another classifier size is used


def test_evaluation_runs_in_fp32_unless_asked(synth_root: Path, tmp_path: Path, monkeypatch) -> None:
    import textreid.engine.evaluator as evaluator
    from test_authors_eval import AUTHORS_YAML

    seen = []
    real = evaluator.autocast
    monkeypatch.setattr(evaluator, "autocast", lambda device, amp: seen.append(amp) or real(device, amp))
    yaml_path = tmp_path / "moco_tiny.yaml"
    yaml_path.write_text(AUTHORS_YAML)
    cfg = load_config(yaml_path)
    table = np.load(synth_root / "datasets" / "synth" / "clip_vocab_vit.npy")
    source = build_model(cfg, num_classes=16, vocab_size=table.shape[0], word_table=table, load_pretrained=False)
    torch.save(export_authors(source.eval(), "moco"), tmp_path / "best.pth")
    for extra, expected in (([], "off"), (["TEST.AMP", "BF16"], "bf16")):
        seen.clear()
        assert main(["test", "--config-file", str(yaml_path), "--checkpoint-file", str(tmp_path / "best.pth"),
                     "--root", str(synth_root), "--output-dir", str(tmp_path / "eval"), "--device", "cpu",
                     "--quiet", *extra]) == 0
        assert seen and set(seen) == {expected}


def test_split_with_ids_of_another_word_table_is_tokenised(trained_run: Path, synth_root: Path, caplog) -> None:
    """A model trained on shipped ids, evaluated on a split whose ids index another table (another dataset's
    word order): its captions are tokenised with the model's vocabulary, with a warning, not fed as ids."""
    import dataclasses

    from textreid.api import load
    from textreid.data.loaders import tokenize_items
    from textreid.data.readers import read_split
    from textreid.engine.evaluator import embed_split

    encoder = load(trained_run / "best.pth", device="cpu")
    spec = encoder.preprocess
    assert spec.shipped_ids
    records = read_split("synth_test", root=synth_root)
    size = len(spec.vocab)
    perm = np.random.default_rng(0).permutation(size)  # the same words in another table's order
    moved = [dataclasses.replace(r, word_ids=tuple(int(perm[i]) for i in r.word_ids)) for r in records]
    items = [{"caption": r.caption, "word_ids": list(r.word_ids)} for r in moved]
    fed_as_ids = tokenize_items(items, spec.text_tokenizer(), shipped_ids=True)["word_ids"]
    assert not torch.equal(fed_as_ids, tokenize_items(items, spec.text_tokenizer())["word_ids"])

    assert spec.vocab.id_agreement([r.caption for r in records], [r.word_ids for r in records]) == 1.0
    assert spec.vocab.id_agreement([r.caption for r in moved], [r.word_ids for r in moved]) < 0.2
    with caplog.at_level("WARNING", logger="textreid"):
        own = embed_split(encoder.model, records, preprocess=spec)
        assert "shipped word ids" not in caplog.text
        other = embed_split(encoder.model, moved, preprocess=spec)
    assert "shipped word ids name their caption's word" in caplog.text and "test split (images under" in caplog.text
    assert torch.allclose(own["text_feats"], other["text_feats"], atol=1e-6)
