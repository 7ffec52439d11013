"""Shared fixtures: tiny datasets written in each real file layout under a temporary root."""

from __future__ import annotations

import os

# One compute thread (torch, faiss, BLAS), in this process and the processes tests start, unless
# OMP_NUM_THREADS says otherwise: the tests' models are tiny, so a second thread gains nothing on
# a quiet machine, and on a busy one threads that wait for each other (OpenMP barriers) made
# training steps ten times slower. Set before numpy and torch are imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import csv  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# the hidden word list of the authors'-layout fixture: onehot ids index it
FIXTURE_WORDS = ["a", "man", "woman", "in", "red", "blue", "green", "coat", "shirt", "with",
                 "black", "white", "bag", "hat", "pants"]


def fixture_sentence(pid: int, img: int, cap: int) -> str:
    """A deterministic caption made of FIXTURE_WORDS only."""
    person = ("man", "woman")[pid % 2]
    colour = ("red", "blue", "green")[(pid + img) % 3]
    garment = ("coat", "shirt")[cap % 2]
    extra = ("black", "white")[(img + cap) % 2]
    item = ("bag", "hat", "pants")[pid % 3]
    return f"A {person} in {colour} {garment}, with {extra} {item}."


def fixture_onehot(sentence: str) -> list[int]:
    return [FIXTURE_WORDS.index(w) for w in re.findall(r"[a-z]+", sentence.lower())]


def write_image(path: Path, value: int = 0, size: tuple[int, int] = (8, 16)) -> Path:
    """A tiny RGB PNG (W x H = size) whose colour depends on ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((37 * value) % 256, (91 * value + 40) % 256, (53 * value + 90) % 256)
    Image.new("RGB", size, colour).save(path)
    return path


def write_authors_layout(folder: Path, splits: dict[str, list[int]], images_per_id: int = 2,
                         captions_per_image: int = 2) -> None:
    """``folder/annotations/{split}.json``, ``folder/imgs/...`` and ``folder/clip_vocab_vit.npy``."""
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    image_id = 0
    for split, ids in splits.items():
        entries = []
        for pid in ids:
            for img in range(images_per_id):
                rel = f"{split}/{pid:04d}_{img}.png"
                write_image(folder / "imgs" / rel, pid * 10 + img)
                for cap in range(captions_per_image):
                    sentence = fixture_sentence(pid, img, cap)
                    entries.append({"image_id": image_id, "id": pid, "file_path": rel,
                                    "sentence": sentence, "onehot": fixture_onehot(sentence)})
                image_id += 1
        (folder / "annotations" / f"{split}.json").write_text(json.dumps({"annotations": entries}))
    np.save(folder / "clip_vocab_vit.npy", np.zeros((len(FIXTURE_WORDS), 4), dtype=np.float32))


def write_per_image_layout(folder: Path, file_name: str, splits: dict[str, list[int | str]], *,
                           path_key: str = "file_path", images_per_id: int = 2,
                           captions_per_image: int = 2) -> list[dict]:
    """One JSON list of per-image entries (CUHK reid_raw.json / ICFG / RSTPReid style)."""
    entries = []
    for split, ids in splits.items():
        for n, pid in enumerate(ids):
            for img in range(images_per_id):
                rel = f"{split}/{pid}_{img}.jpg"
                write_image(folder / "imgs" / rel, n * 10 + img)
                captions = [fixture_sentence(n, img, c) for c in range(captions_per_image)]
                entries.append({"split": split, "id": pid, path_key: rel, "captions": captions,
                                "processed_tokens": [c.lower().split() for c in captions]})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file_name).write_text(json.dumps(entries))
    return entries


@pytest.fixture
def authors_root(tmp_path: Path) -> Path:
    """Root with datasets/cuhkpedes in the authors' layout: train ids 0..2, val 10, test 20..21."""
    write_authors_layout(tmp_path / "datasets" / "cuhkpedes", {"train": [0, 1, 2], "val": [10], "test": [20, 21]})
    return tmp_path


@pytest.fixture
def raw_cuhk_root(tmp_path: Path) -> Path:
    """Root with datasets/cuhkpedes/reid_raw.json: train ids 12, 5, 9 (not contiguous), test 40."""
    write_per_image_layout(tmp_path / "datasets" / "cuhkpedes", "reid_raw.json",
                           {"train": [12, 5, 9], "val": [30], "test": [40]})
    return tmp_path


@pytest.fixture
def icfg_root(tmp_path: Path) -> Path:
    """Root with datasets/icfgpedes/ICFG-PEDES.json: train and test only, one caption per image."""
    write_per_image_layout(tmp_path / "datasets" / "icfgpedes", "ICFG-PEDES.json",
                           {"train": [0, 1, 2], "test": [3, 4]}, captions_per_image=1)
    return tmp_path


@pytest.fixture
def rstp_root(tmp_path: Path) -> Path:
    """Root with datasets/rstpreid/data_captions.json using the key ``img_path``."""
    write_per_image_layout(tmp_path / "datasets" / "rstpreid", "data_captions.json",
                           {"train": [7, 3], "val": [100], "test": [200, 201]}, path_key="img_path")
    return tmp_path


CUSTOM_ROWS = [  # (image, person_id, caption, split)
    ("pics/a1.png", "alice", "a woman in a red coat", "train"),
    ("pics/a1.png", "alice", "red coat, black bag", "train"),
    ("pics/b1.png", "bob", "a man in a blue shirt", "train"),
    ("pics/c1.png", "10", "a man with a hat", "train"),
    ("pics/c2.png", "9", "a man with a green hat", ""),
    ("pics/t1.png", "zed", "a woman in white", "test"),
]


@pytest.fixture
def custom_jsonl(tmp_path: Path) -> Path:
    """A custom JSONL annotation file (split omitted where CUSTOM_ROWS has "")."""
    folder = tmp_path / "mine"
    lines = []
    for i, (image, pid, caption, split) in enumerate(CUSTOM_ROWS):
        write_image(folder / image, i)
        entry = {"image": image, "person_id": int(pid) if pid.isdigit() else pid, "caption": caption}
        if split:
            entry["split"] = split
        lines.append(json.dumps(entry))
    (folder / "ann.jsonl").write_text("\n".join(lines) + "\n\n")
    return folder / "ann.jsonl"


@pytest.fixture
def custom_csv(tmp_path: Path) -> Path:
    """The same rows as ``custom_jsonl`` as a CSV file with a header."""
    folder = tmp_path / "mine_csv"
    with open(folder.mkdir(parents=True) or folder / "ann.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "person_id", "caption", "split"])
        for i, row in enumerate(CUSTOM_ROWS):
            write_image(folder / row[0], i)
            writer.writerow(row)
    return folder / "ann.csv"


# --------------------------------------------------------------------------- synthetic runs
# A tiny synthetic dataset (generated once per session) and config overrides that make the
# demo configuration train in seconds on CPU; shared by the engine and search tests.
def tiny_config(*, size: tuple[int, int] = (32, 16), head: str = "moco", text: str = "bigru",
                onehot: str = "clip_vit", max_length: int | None = None, context_length: int = 20):
    """A model config small enough to build and step in milliseconds: random towers, a one-block-per-stage
    CLIP ResNet, a 6-wide word table into a 5-unit BiGRU or a one-layer text transformer, 12-d embeddings."""
    from textreid.config import Config

    cfg = Config()
    cfg.model.pretrained = "none"  # random towers (unset = the authors' weight files)
    cfg.input.height, cfg.input.width = size
    r = cfg.model.resnet
    r.layers, r.width, r.heads, r.output_dim, r.res5_stride = [1, 1, 1, 1], 8, 2, 16, 1
    cfg.model.textual_model = text
    g = cfg.model.gru
    g.onehot, g.embedding_size, g.num_units = onehot, 6, 5
    if max_length is not None:
        g.max_length = max_length
    t = cfg.model.text_transformer
    t.width, t.layers, t.heads, t.output_dim, t.context_length = 16, 1, 2, 12, context_length
    cfg.model.embedding.embed_head = head
    cfg.model.embedding.feature_size = 12
    cfg.model.moco.k = 8
    return cfg


FAST_OVERRIDES = [
    "INPUT.HEIGHT", "64", "INPUT.WIDTH", "32", "INPUT.PADDING", "2",
    "MODEL.RESNET.WIDTH", "8", "MODEL.RESNET.OUTPUT_DIM", "64", "MODEL.RESNET.HEADS", "2",
    "MODEL.GRU.NUM_UNITS", "32", "MODEL.EMBEDDING.FEATURE_SIZE", "32", "MODEL.MOCO.K", "64",
    "SOLVER.IMS_PER_BATCH", "16", "SOLVER.NUM_EPOCHS", "2", "SOLVER.WARMUP_EPOCHS", "1",
    "SOLVER.STEPS", "(1, )", "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "64",
]


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A data root holding datasets/synth: 24 persons x 3 images x 2 captions, 64x32 pixels."""
    from textreid.data.synth import generate

    root = tmp_path_factory.mktemp("synth_root")
    generate(root / "datasets" / "synth", num_ids=24, seed=3, images_per_id=3, image_size=(64, 32),
             val_fraction=0.17, test_fraction=0.17, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def trained_run(synth_root: Path, tmp_path_factory) -> Path:
    """The engine tests' shared run: `textreid train` of synth/tiny_moco + FAST_OVERRIDES (2 epochs).

    Trained once per session through the real CLI (with TensorBoard); tests read its files and
    never write into the folder.
    """
    from textreid.cli import main

    out = tmp_path_factory.mktemp("trained_run") / "run"
    rc = main(["train", "--config-file", "synth/tiny_moco", "--root", str(synth_root), "--output-dir", str(out),
               "--device", "cpu", "--quiet", "--use-tensorboard", *FAST_OVERRIDES])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def one_epoch_run(synth_root: Path, tmp_path_factory) -> Path:
    """The same configuration stopped after 1 of its epochs' worth (SOLVER.NUM_EPOCHS 1); read-only too."""
    from textreid.config import load_config
    from textreid.engine.trainer import train

    out = tmp_path_factory.mktemp("one_epoch_run") / "run"
    cfg = load_config("synth/tiny_moco", ["ROOT", str(synth_root), *FAST_OVERRIDES, "SOLVER.NUM_EPOCHS", "1"])
    train(cfg, output_dir=out, device="cpu", progress=False)
    return out
