"""Our checkpoint format (atomic writes, clear errors) and the import of the authors' best.pth layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from authors_format import export_authors
from conftest import tiny_config
from textreid.config import Config, to_dict
from textreid.models.build import build_model
from textreid.models.checkpoint import (
    CheckpointError,
    convert_authors_state_dict,
    is_authors_checkpoint,
    load_authors_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from textreid.models.textreid import TextReID

TABLE = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)


def _cfg(head: str) -> Config:
    return tiny_config(head=head)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randn(4, 3, 32, 16, generator=g),
        "person_ids": torch.tensor([0, 0, 3, 4]),
        "word_ids": torch.randint(1, 20, (4, 5), generator=g),
        "lengths": torch.tensor([5, 2, 3, 1]),
    }


def _trained(head: str, seed: int = 0) -> TextReID:
    """A tiny model after one training step (moco: queues hold keys, pointer moved)."""
    torch.manual_seed(seed)
    model = build_model(_cfg(head), num_classes=5, vocab_size=20, word_table=TABLE)
    model.train()(_batch())
    return model.eval()


def _embeddings(model: TextReID) -> tuple[torch.Tensor, torch.Tensor]:
    b = _batch(1)
    with torch.no_grad():
        return model.eval().embed_images(b["images"]), model.embed_texts(b)


# --------------------------------------------------------------------------- our format
def test_save_load_roundtrip(tmp_path: Path) -> None:
    model = _trained("simple")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    path = save_checkpoint(
        tmp_path / "sub" / "best.pth",
        model=model,
        config=to_dict(_cfg("simple")),
        vocab={"words": ["<pad>", "a"]},
        optimizer=opt,
        extra={"epoch": 7},
    )
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == "textreid-v1" and ckpt["epoch"] == 7 and ckpt["scheduler"] is None
    assert ckpt["config"]["model"]["embedding"]["feature_size"] == 12
    assert ckpt["vocab"] == {"words": ["<pad>", "a"]} and "param_groups" in ckpt["optimizer"]
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt["model"][k], v), k
    assert [p.name for p in path.parent.iterdir()] == ["best.pth"]  # no temp files left
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.pth", model=model, config={}, vocab=None, extra={"model": 1})


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _trained("simple")
    path = save_checkpoint(tmp_path / "last.pth", model=model, config={"a": 1}, vocab=None)
    before = path.read_bytes()

    def crash(obj: object, f: object, *a: object, **k: object) -> None:
        f.write(b"PK\x03\x04 half a zip")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model=model, config={"a": 2}, vocab=None)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pth")
    text = tmp_path / "notes.pth"
    text.write_text("hello, not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(text)
    good = save_checkpoint(tmp_path / "good.pth", model=_trained("simple"), config={}, vocab=None)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="is truncated"):
        load_checkpoint(cut)
    other = tmp_path / "list.pth"
    torch.save([1, 2], other)
    with pytest.raises(CheckpointError, match="expected a checkpoint dict"):
        load_checkpoint(other)


# --------------------------------------------------------------------------- authors' files
@pytest.mark.parametrize("head", ["moco", "simple"])
@pytest.mark.parametrize("module_prefix", [False, True])
def test_authors_import_reproduces_embeddings(tmp_path: Path, head: str, module_prefix: bool) -> None:
    source = _trained(head, seed=1)
    path = tmp_path / "best.pth"
    torch.save(export_authors(source, head, module_prefix), path)
    ckpt = load_checkpoint(path)
    assert is_authors_checkpoint(ckpt) and not is_authors_checkpoint({"format": "textreid-v1", "model": {}})

    torch.manual_seed(99)  # a different initialisation
    fresh = build_model(_cfg(head), num_classes=5, vocab_size=20, word_table=TABLE)
    load_authors_checkpoint(fresh, path)
    src_sd, new_sd = source.state_dict(), fresh.state_dict()
    assert set(src_sd) == set(new_sd)
    for k in src_sd:
        assert torch.equal(src_sd[k], new_sd[k]), k
    for a, b in zip(_embeddings(source), _embeddings(fresh), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    if head == "moco":
        assert int(fresh.queue.ptr) == 4 and fresh.queue.id_queue[:4].tolist() == [0, 0, 3, 4]


def test_convert_transposes_queues() -> None:
    source = _trained("moco")
    converted = convert_authors_state_dict(export_authors(source, "moco")["model"], head="moco")
    assert converted["queue.text_queue"].shape == (8, 12) and converted["queue.id_queue"].shape == (8,)
    assert converted["queue.ptr"].shape == ()
    assert not any(k.startswith(("embed_model.", "v_encoder_q", "t_encoder_q")) for k in converted)


def test_authors_import_mismatches_are_named() -> None:
    source = _trained("moco")
    exported = export_authors(source, "moco")
    simple = build_model(_cfg("simple"), num_classes=5, vocab_size=20, word_table=TABLE)
    with pytest.raises(CheckpointError, match="EMBED_HEAD moco"):
        load_authors_checkpoint(simple, exported)
    wrong_classes = build_model(_cfg("moco"), num_classes=7, vocab_size=20, word_table=TABLE)
    with pytest.raises(CheckpointError, match=r"projection: file \(12, 5\) vs model \(12, 7\)\s+projection is.*NUM_CLASSES"):
        load_authors_checkpoint(wrong_classes, exported)
    target = build_model(_cfg("moco"), num_classes=5, vocab_size=20, word_table=TABLE)
    broken = dict(exported["model"])
    del broken["textual_model.gru.weight_hh_l0"]
    broken["embed_model.extra_thing"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_authors_checkpoint(target, {"model": broken})
    assert "missing from the file (1): textual.gru.weight_hh_l0" in str(err.value)
    assert "not used by the model (1): embed_model.extra_thing" in str(err.value)
