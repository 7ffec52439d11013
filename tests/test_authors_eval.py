"""`textreid test` on a checkpoint in the authors' best.pth layout with an authors'-style YAML, unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import textreid
from authors_format import export_authors
from textreid.cli import main
from textreid.config import load_config
from textreid.data.transforms import build_transforms
from textreid.models.build import build_model

AUTHORS_YAML = """\
MODEL:
  WEIGHT: "imagenet"
  VISUAL_MODEL: "m_resnet50"
  TEXTUAL_MODEL: "bigru"
  NUM_CLASSES: 16
  GRU:
    ONEHOT: "clip_vit"
    EMBEDDING_SIZE: 512
    NUM_UNITS: 32
    VOCABULARY_SIZE: 512
    DROPOUT_KEEP_PROB: 1.0
    MAX_LENGTH: 100
  RESNET:
    RES5_STRIDE: 1
    LAYERS: [1, 1, 1, 1]
    WIDTH: 8
    OUTPUT_DIM: 64
    HEADS: 2
  EMBEDDING:
    EMBED_HEAD: 'moco'
    FEATURE_SIZE: 32
    DROPOUT_PROB: 0.0
    EPSILON: 0.1
  MOCO:
    FC: False
    K: 64
INPUT:
  HEIGHT: 64
  WIDTH: 32
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]
DATASETS:
  TRAIN: ("synth_train", )
  TEST: ("synth_test", )
DATALOADER:
  NUM_WORKERS: 0
SOLVER:
  IMS_PER_BATCH: 16
TEST:
  IMS_PER_BATCH: 16
"""


def test_authors_best_pth_evaluates_unchanged(synth_root: Path, tmp_path: Path) -> None:
    yaml_path = tmp_path / "moco_tiny.yaml"
    yaml_path.write_text(AUTHORS_YAML)
    cfg = load_config(yaml_path)
    table = np.load(synth_root / "datasets" / "synth" / "clip_vocab_vit.npy")
    torch.manual_seed(0)
    source = build_model(cfg, num_classes=16, vocab_size=table.shape[0], word_table=table, load_pretrained=False)
    source.eval()
    torch.save(export_authors(source, "moco", module_prefix=True), tmp_path / "best.pth")

    out = tmp_path / "eval"
    rc = main(["test", "--config-file", str(yaml_path), "--checkpoint-file", str(tmp_path / "best.pth"),
               "--root", str(synth_root), "--output-dir", str(out), "--device", "cpu", "--quiet",
               "--save-features"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"t2i", "i2t"} <= set(metrics)

    # independent expectation: the source model run by hand on the files of the authors' layout
    ann = json.loads((synth_root / "datasets" / "synth" / "annotations" / "test.json").read_text())["annotations"]
    transform = build_transforms(height=64, width=32, mean=cfg.input.pixel_mean, std=cfg.input.pixel_std,
                                 train=False)
    first = {}
    for a in ann:
        first.setdefault(a["image_id"], a["file_path"])
    images = torch.stack([transform(Image.open(synth_root / "datasets" / "synth" / "imgs" / p).convert("RGB"))
                          for p in first.values()])
    lengths = torch.tensor([len(a["onehot"]) for a in ann])
    word_ids = torch.zeros(len(ann), int(lengths.max()), dtype=torch.long)
    for i, a in enumerate(ann):
        word_ids[i, : len(a["onehot"])] = torch.tensor(a["onehot"])
    with torch.no_grad():
        img = torch.nn.functional.normalize(source.embed_images(images), dim=1).numpy()
        txt = torch.nn.functional.normalize(source.embed_texts({"word_ids": word_ids, "lengths": lengths}), dim=1)
    feats = np.load(out / "features.npz")
    assert feats["image_ids"].tolist() == list(first)
    np.testing.assert_allclose(feats["image_feats"], img, atol=1e-5)
    np.testing.assert_allclose(feats["text_feats"], txt.numpy(), atol=1e-5)

    # converted once, the same weights serve textreid.load (free text) and a search index
    rc = main(["convert", "--config-file", str(yaml_path), "--checkpoint-file", str(tmp_path / "best.pth"),
               "--root", str(synth_root), "--out", str(tmp_path / "ours.pth")])
    assert rc == 0
    encoder = textreid.load(tmp_path / "ours.pth")
    typed = encoder.encode_text([a["sentence"] for a in ann])  # free text through the recovered vocabulary
    np.testing.assert_allclose(typed.numpy(), txt.numpy(), atol=1e-5)
    paths = [synth_root / "datasets" / "synth" / "imgs" / p for p in first.values()]
    np.testing.assert_allclose(encoder.encode_images(paths).numpy(), img, atol=1e-5)
