"""textreid.load / Encoder: a saved tiny model encodes texts and images exactly like the model by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import textreid
from conftest import tiny_config
from textreid.config import CLIP_MEAN, CLIP_STD, Config, to_dict
from textreid.data.text import ClipTokenizer, WordTokenizer
from textreid.data.transforms import build_transforms
from textreid.data.vocab import Vocabulary
from textreid.models.build import build_model
from textreid.models.checkpoint import CheckpointError, save_checkpoint

CAPTIONS = ["a woman in a red coat", "a man with black trousers and a white bag", "red shoes"]


def _cfg(text: str = "bigru") -> Config:
    return tiny_config(text=text, max_length=4, context_length=16)


def _images(tmp_path: Path) -> list[Image.Image | Path]:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (40 + 4 * i, 20, 3), dtype=np.uint8) for i in range(3)]
    path = tmp_path / "person.png"
    Image.fromarray(arrays[2]).save(path)
    return [Image.fromarray(arrays[0]), Image.fromarray(arrays[1]).convert("L"), path]


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module, Vocabulary]:
    vocab = Vocabulary.build(CAPTIONS)
    table = np.random.default_rng(1).standard_normal((len(vocab), 6)).astype(np.float32)
    torch.manual_seed(0)
    cfg = _cfg()
    model = build_model(cfg, num_classes=4, vocab_size=len(vocab), word_table=table)
    path = save_checkpoint(tmp_path / "best.pth", model=model, config=to_dict(cfg), vocab=vocab.to_dict())
    return path, model.eval(), vocab


def test_load_and_encode_match_model_by_hand(saved: tuple[Path, torch.nn.Module, Vocabulary], tmp_path: Path) -> None:
    path, model, vocab = saved
    enc = textreid.load(path)
    assert isinstance(enc, textreid.Encoder)
    assert enc.embed_dim == 12 and enc.device == torch.device("cpu") and enc.checkpoint_path == path
    assert enc.vocab == vocab and enc.config.model.embedding.embed_head == "moco"
    assert not enc.model.training

    text = enc.encode_text(CAPTIONS, batch_size=2)
    assert text.shape == (3, 12) and text.dtype == torch.float32
    torch.testing.assert_close(text.norm(dim=1), torch.ones(3))
    with torch.no_grad():
        by_hand = F.normalize(model.embed_texts(WordTokenizer(vocab, max_length=4)(CAPTIONS)), dim=1)
    torch.testing.assert_close(text, by_hand, atol=1e-5, rtol=1e-5)

    images = _images(tmp_path)
    emb = enc.encode_images(images, batch_size=2)
    assert emb.shape == (3, 12)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    transform = build_transforms(height=32, width=16, mean=CLIP_MEAN, std=CLIP_STD, train=False)
    pil = [images[0], images[1].convert("RGB"), Image.open(images[2]).convert("RGB")]
    with torch.no_grad():
        by_hand = F.normalize(model.embed_images(torch.stack([transform(im) for im in pil])), dim=1)
    torch.testing.assert_close(emb, by_hand, atol=1e-5, rtol=1e-5)
    assert enc.encode_text([]).shape == (0, 12)


def test_in_memory_model_keeps_its_training_mode(saved: tuple[Path, torch.nn.Module, Vocabulary]) -> None:
    _, model, vocab = saved
    model.train()
    transform = build_transforms(height=32, width=16, mean=[0.5] * 3, std=[0.5] * 3, train=False)
    enc = textreid.Encoder(model, WordTokenizer(vocab, max_length=4), transform)  # e.g. the trainer's model
    out = enc.encode_text(CAPTIONS[:1])
    assert out.shape == (1, 12) and model.training
    assert torch.is_tensor(enc.encode_images([torch.zeros(3, 32, 16)]))


def test_load_errors(saved: tuple[Path, torch.nn.Module, Vocabulary], tmp_path: Path) -> None:
    path, model, _ = saved
    enc = textreid.load(path)
    with pytest.raises(TypeError, match="list of strings"):
        enc.encode_text("one caption")
    with pytest.raises(FileNotFoundError, match="image not found"):
        enc.encode_images([tmp_path / "missing.jpg"])
    authors = tmp_path / "authors.pth"
    torch.save({"model": {f"visual_model.{k}": v for k, v in model.visual.state_dict().items()}}, authors)
    with pytest.raises(CheckpointError, match="authors' best.pth"):
        textreid.load(authors)


def test_clip_transformer_checkpoint(tmp_path: Path) -> None:
    cfg = _cfg("clip_transformer")
    cfg.model.embedding.embed_head = "simple"
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=4, vocab_size=0, word_table=None).eval()
    path = save_checkpoint(tmp_path / "clip.pth", model=model, config=to_dict(cfg), vocab=None)
    enc = textreid.load(path)
    out = enc.encode_text(CAPTIONS)
    with torch.no_grad():
        by_hand = F.normalize(model.embed_texts(ClipTokenizer(16)(CAPTIONS)), dim=1)
    torch.testing.assert_close(out, by_hand, atol=1e-5, rtol=1e-5)
    # CLIP's byte-pair tokens read any string: nothing is unknown, only blanks are refused.
    assert enc.ignored_words("zzzz qqqq") == [] and enc.encode_text(["zzzz !!!"]).shape[0] == 1
    with pytest.raises(ValueError, match="empty"):
        enc.encode_text([" "])


def test_bad_text_and_image_inputs_get_clear_errors(saved: tuple[Path, torch.nn.Module, Vocabulary]) -> None:
    path, _, _ = saved
    enc = textreid.load(path)
    with pytest.raises(ValueError, match="text 2 is empty"):
        enc.encode_text(["a red coat", ""])
    with pytest.raises(ValueError, match="text 1 is empty"):
        enc.encode_text(["  \t"])
    with pytest.raises(TypeError, match="text 1 must be a string, got NoneType"):
        enc.encode_text([None])
    with pytest.raises(textreid.UnknownWordsError, match="'zzzz', 'qqqq' are not in the model's vocabulary") as e:
        enc.encode_text(["a red coat", "zzzz qqqq"])
    assert isinstance(e.value, ValueError) and e.value.words == ["zzzz", "qqqq"]
    with pytest.raises(textreid.UnknownWordsError, match="no words at all"):
        enc.encode_text(["!!! ???"])
    assert enc.ignored_words("a red zzzz coat") == ["zzzz"]
    assert enc.encode_text(["a red zzzz coat"]).shape == (1, 12)  # partly unknown: embedded
    for single in ("a.jpg", Path("a.jpg"), Image.new("RGB", (16, 32)), torch.zeros(3, 32, 16)):
        with pytest.raises(TypeError, match="expects a list of images, got a single"):
            enc.encode_images(single)
