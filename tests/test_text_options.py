"""The other text paths: a CLIP word table built by `textreid vocab` for raw captions, and the
beyond-the-paper configuration (CLIP ViT + CLIP text transformer + SDM + momentum contrast)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from clip_factory import save_openai_jit, tiny_clip
from conftest import FAST_OVERRIDES
from textreid.cli import main
from textreid.config import load_config
from textreid.data.vocab import Vocabulary
from textreid.engine.trainer import train
from textreid.models.checkpoint import load_checkpoint


def test_vocab_command_then_train_on_raw_captions(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(synth_root, root)
    synth = root / "datasets" / "synth"
    authors_table = (synth / "clip_vocab_vit.npy").read_bytes()
    clip = tiny_clip("vit", seed=1).eval()
    save_openai_jit(clip, tmp_path / "ViT-tiny.pt")
    raw = ["DATASETS.TRAIN", '("synth_raw_train", )', "DATASETS.VAL", '("synth_raw_val", )',
           "DATASETS.TEST", '("synth_raw_test", )']

    rc = main(["vocab", "--clip", str(tmp_path / "ViT-tiny.pt"), "--config-file", "synth/tiny_moco", "--root",
               str(root), "--device", "cpu", "--quiet", *raw])
    assert rc == 0
    vocab = Vocabulary.load(synth / "vocab.json")
    table = np.load(synth / "vocab_vectors.npy")
    assert table.shape == (len(vocab), 32)  # one CLIP text embedding per word
    assert (synth / "clip_vocab_vit.npy").read_bytes() == authors_table  # the authors' table is untouched
    word = next(w for w in vocab.words if w.isalpha())
    import open_clip

    with torch.no_grad():
        expected = clip.encode_text(open_clip.tokenize([word], context_length=16))[0].numpy()
    np.testing.assert_allclose(table[vocab.words.index(word)], expected, atol=1e-4)

    cfg = load_config("synth/tiny_moco", ["ROOT", str(root), *FAST_OVERRIDES, *raw, "SOLVER.NUM_EPOCHS", "1"])
    result = train(cfg, output_dir=tmp_path / "run", device="cpu", progress=False)
    assert set(result.metrics["test"]) == {"t2i", "i2t"}
    ckpt = load_checkpoint(tmp_path / "run" / "best.pth")
    assert ckpt["preprocess"]["vocab"]["words"] == vocab.words
    assert torch.equal(ckpt["model"]["textual.word_table"], torch.from_numpy(table))


def test_beyond_the_paper_config_trains(synth_root: Path, tmp_path: Path) -> None:
    tiny = ["MODEL.PRETRAINED", "none", "MODEL.VIT.WIDTH", "32", "MODEL.VIT.LAYERS", "1", "MODEL.VIT.HEADS", "2",
            "MODEL.VIT.OUTPUT_DIM", "32", "MODEL.TEXT_TRANSFORMER.WIDTH", "32", "MODEL.TEXT_TRANSFORMER.LAYERS",
            "1", "MODEL.TEXT_TRANSFORMER.HEADS", "2", "MODEL.TEXT_TRANSFORMER.OUTPUT_DIM", "32",
            "MODEL.TEXT_TRANSFORMER.CONTEXT_LENGTH", "48", "MODEL.EMBEDDING.FEATURE_SIZE", "32",
            "MODEL.MOCO.K", "64", "INPUT.HEIGHT", "64", "INPUT.WIDTH", "32", "SOLVER.IMS_PER_BATCH", "16",
            "SOLVER.NUM_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "0", "DATALOADER.NUM_WORKERS", "0",
            "DATASETS.TRAIN", '("synth_train", )', "DATASETS.VAL", '("synth_val", )',
            "DATASETS.TEST", '("synth_test", )', "ROOT", str(synth_root)]
    cfg = load_config("cuhkpedes/vitb16_cliptext_sdm_moco", tiny)
    result = train(cfg, output_dir=tmp_path / "vit", device="cpu", progress=False)
    log = (tmp_path / "vit" / "train.log").read_text()
    assert "sdm_loss" in log and "infonce_loss" in log and "instance_loss" in log
    assert "global_align_loss" not in log  # weight 0 in this config
    assert set(result.metrics["test"]) == {"t2i", "i2t"}
    metrics = json.loads((tmp_path / "vit" / "metrics.json").read_text())
    assert metrics["test"] == result.metrics["test"]  # the file holds what the run returned
    for direction in ("t2i", "i2t"):
        m = metrics["test"][direction]
        assert 0 <= m["R1"] <= m["R5"] <= m["R10"] <= 100 and 0 < m["mAP"] <= 100
    # MODEL.VIT.* reached the ViT: 64x32 images in 16-pixel patches are a 4x2 grid of width 32
    weights = load_checkpoint(tmp_path / "vit" / "best.pth")["model"]
    assert weights["visual.positional_embedding"].shape == (4 * 2 + 1, 32)
    assert weights["visual.proj"].shape == (32, 32)
