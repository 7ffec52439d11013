"""`textreid synth` and `textreid data check` as a user runs them (the foundation's acceptance path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from textreid.cli import main


def test_synth_then_check_passes(synth_root: Path, capsys) -> None:
    rc = main(["data", "check", "--config-file", "synth/tiny_moco", "--root", str(synth_root), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "synth_train" in out and "synth_test" in out and out.strip().endswith("OK")


def test_synth_command_writes_both_layouts(tmp_path: Path, capsys) -> None:
    rc = main(["synth", "--out", str(tmp_path / "s"), "--ids", "8", "--images-per-id", "2", "--workers", "1",
               "--image-size", "48", "24", "--val-fraction", "0.25", "--test-fraction", "0.375", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["image_size"] == [48, 24]
    assert [summary["splits"][s]["ids"] for s in ("train", "val", "test")] == [3, 2, 3]
    from PIL import Image

    first = next((tmp_path / "s" / "imgs").rglob("*.jpg"))
    assert Image.open(first).size == (24, 48)  # (width, height)
    assert summary["splits"]["train"]["captions"] == 2 * 2 * summary["splits"]["train"]["ids"]
    for name in ("annotations/train.json", "annotations/test.json", "clip_vocab_vit.npy", "reid_raw.json",
                 "preview.jpg"):
        assert (tmp_path / "s" / name).is_file(), name


def test_corrupted_copy_fails_naming_each_problem(synth_root: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "root"
    shutil.copytree(synth_root, root)
    synth = root / "datasets" / "synth"
    test = json.loads((synth / "annotations" / "test.json").read_text())
    deleted = test["annotations"][0]["file_path"]
    (synth / "imgs" / deleted).unlink()  # a deleted image
    val = json.loads((synth / "annotations" / "val.json").read_text())
    val["annotations"][3]["sentence"] = "   "  # an empty caption
    (synth / "annotations" / "val.json").write_text(json.dumps(val))
    text = (synth / "annotations" / "train.json").read_text()
    (synth / "annotations" / "train.json").write_text(text[: len(text) // 2])  # a truncated JSON

    rc = main(["data", "check", "--config-file", "synth/tiny_moco", "--root", str(root), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "train.json" in out and "line" in out  # where the JSON breaks
    assert "val.json" in out and "entry 3" in out and "empty" in out.lower()
    assert "test.json" in out and deleted in out
    assert "FAILED" in out
