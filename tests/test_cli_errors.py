"""One error path: every failure of the `textreid` command is one line naming the culprit, exit 2.

Run in-process through ``textreid.cli.main`` (no torch start-up per case); each case asserts the
message names the file/key/value, the exit status, that no traceback is printed, and that
nothing on disk was lost.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import FAST_OVERRIDES
from textreid import cli
from textreid.cli import main
from textreid.errors import describe


def _run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err
    return rc, err


def _one_line_error(rc: int, err: str, *culprits: str, status: int = 2) -> str:
    assert rc == status, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("textreid ")]
    assert len(lines) == 1, err
    for culprit in culprits:
        assert culprit in lines[0], (culprit, lines[0])
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- bad config
@pytest.mark.parametrize("override, culprits", [
    (["SOLVER.NUM_EPOCHS", "0"], ["SOLVER.NUM_EPOCHS", "0"]),
    (["SOLVER.IMS_PER_BATCH", "62"], ["SOLVER.IMS_PER_BATCH", "62", "DATALOADER.IMS_PER_ID"]),
    (["MODEL.MOCO.K", "100"], ["MODEL.MOCO.K", "100", "SOLVER.IMS_PER_BATCH"]),
    (["SOLVER.BASE_LR", "nan"], ["SOLVER.BASE_LR", "nan"]),
    (["SOLVER.BASE_LR", "-1e-4"], ["SOLVER.BASE_LR", "-0.0001"]),
    (["DATALOADER.NUM_WORKERS", "-2"], ["DATALOADER.NUM_WORKERS", "-2"]),
    (["SOLVER.OPTIMIZER", "adamm"], ["SOLVER.OPTIMIZER", "adamm", "Adam, AdamW, SGD"]),
    (["SOLVER.LRSCHEDULER", "Cosine"], ["SOLVER.LRSCHEDULER", "Cosine", "step, cosine"]),  # read case-sensitively
    (["SOLVER.BASE_LRR", "1"], ["SOLVER.BASE_LRR", "SOLVER.BASE_LR"]),  # unknown key: the nearest
])
def test_bad_config_refused_before_any_data_is_read(tmp_path: Path, capsys, override, culprits) -> None:
    out = tmp_path / "run"
    rc, err = _run(capsys, "train", "--config-file", "synth/tiny_moco", "--root", str(tmp_path / "no-data"),
                   "--output-dir", str(out), "--device", "cpu", "--quiet", *override)
    line = _one_line_error(rc, err, "config error", *culprits)
    assert "not found" not in line  # the config is refused before the (missing) data are looked at
    assert not out.exists()


def test_epochs_zero_is_refused_by_the_library_too(tmp_path: Path) -> None:
    from textreid.config import ConfigError, load_config
    from textreid.engine.trainer import train

    cfg = load_config("synth/tiny_moco", ["SOLVER.NUM_EPOCHS", "0", "ROOT", str(tmp_path)])
    with pytest.raises(ConfigError, match="SOLVER.NUM_EPOCHS = 0"):
        train(cfg, output_dir=tmp_path / "run", device="cpu", progress=False)


def test_every_packaged_config_is_valid() -> None:
    from textreid.config import config_problems, list_packaged_configs, load_config

    assert {n: config_problems(load_config(n)) for n in list_packaged_configs()} == {
        n: [] for n in list_packaged_configs()}


def test_bad_yaml_names_the_file_and_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  BASE_LR: [1,\n")
    rc, err = _run(capsys, "train", "--config-file", str(bad), "--root", str(tmp_path))
    _one_line_error(rc, err, str(bad), "line")


# --------------------------------------------------------------------------- bad data
def test_bad_data_names_file_and_line_exit_2(synth_root: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "root"
    shutil.copytree(synth_root, root)
    train_json = root / "datasets" / "synth" / "annotations" / "train.json"
    train_json.write_text(train_json.read_text()[:5000])  # a truncated download
    before = _snapshot(root)
    rc, err = _run(capsys, "train", "--config-file", "synth/tiny_moco", "--root", str(root), "--output-dir",
                   str(tmp_path / "run"), "--device", "cpu", "--quiet", *FAST_OVERRIDES)
    _one_line_error(rc, err, "data error", str(train_json), "line 1, column")
    assert _snapshot(root) == before


def test_too_few_identities_are_flagged_by_data_check(synth_root: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "root"
    shutil.copytree(synth_root, root)
    for split in ("train", "val"):
        file = root / "datasets" / "synth" / "annotations" / f"{split}.json"
        entries = json.loads(file.read_text())["annotations"]
        first = entries[0]["id"]
        file.write_text(json.dumps({"annotations": [e for e in entries if e["id"] == first]}))
    rc = main(["data", "check", "--config-file", "synth/tiny_moco", "--root", str(root), "--quiet", "--no-open-images",
               *FAST_OVERRIDES])
    out = capsys.readouterr().out
    assert rc == 1
    assert "synth_train has 1 person(s), too few: a training batch needs 4 distinct persons" in out
    assert "synth_val has 1 person(s), too few: ranking needs at least 2 persons" in out
    assert "synth_test" not in "".join(line for line in out.splitlines() if line.startswith("PROBLEM"))


def test_auto_val_means_the_same_in_data_check_and_train(icfg_root: Path, synth_root: Path, capsys) -> None:
    from textreid.config import load_config
    from textreid.engine.setup import val_names

    # ICFG-PEDES has no val split: "auto" validates on nothing, and data check does not call that a problem
    icfg = ["DATASETS.TRAIN", "('icfgpedes_train',)", "DATASETS.VAL", "('auto',)", "DATASETS.TEST",
            "('icfgpedes_test',)", "SOLVER.IMS_PER_BATCH", "8", "MODEL.MOCO.K", "64"]
    assert val_names(load_config("synth/tiny_moco", icfg)) == []
    rc = main(["data", "check", "--config-file", "synth/tiny_moco", "--root", str(icfg_root), "--quiet",
               "--no-open-images", *icfg])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "icfgpedes_val" not in out
    # a dataset with a val split: "auto" is <train dataset>_val, checked by data check as train reads it
    auto = ["DATASETS.VAL", "('auto',)"]
    assert val_names(load_config("synth/tiny_moco", auto)) == ["synth_val"]
    rc = main(["data", "check", "--config-file", "synth/tiny_moco", "--root", str(synth_root), "--quiet",
               "--no-open-images", *auto])
    out = capsys.readouterr().out
    assert rc == 0 and "synth_val" in out


# --------------------------------------------------------------------------- bad checkpoint
def test_truncated_checkpoint_given_to_test_names_the_file(tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "best.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:600])  # a copy that stopped half-way
    rc, err = _run(capsys, "test", "--config-file", "synth/tiny_moco", "--root", str(tmp_path), "--checkpoint-file",
                   str(ckpt), "--output-dir", str(tmp_path / "t"), "--device", "cpu")
    _one_line_error(rc, err, "checkpoint error", str(ckpt), "truncated")


def test_garbage_resume_checkpoint_names_the_file(synth_root: Path, tmp_path: Path, capsys) -> None:
    garbage = tmp_path / "interrupted.pth"
    garbage.write_bytes(b"not a checkpoint at all\n" * 10)
    rc, err = _run(capsys, "train", "--config-file", "synth/tiny_moco", "--root", str(synth_root), "--output-dir",
                   str(tmp_path / "run"), "--resume-from", str(garbage), "--device", "cpu", "--quiet",
                   *FAST_OVERRIDES)
    _one_line_error(rc, err, "checkpoint error", str(garbage))
    assert garbage.read_bytes() == b"not a checkpoint at all\n" * 10


def test_missing_checkpoint_names_the_path(tmp_path: Path, capsys) -> None:
    rc, err = _run(capsys, "test", "--config-file", "synth/tiny_moco", "--root", str(tmp_path), "--checkpoint-file",
                   str(tmp_path / "nope.pth"), "--device", "cpu")
    _one_line_error(rc, err, str(tmp_path / "nope.pth"), "not found")


# --------------------------------------------------------------------------- files and disks
@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on device"),
                                         (errno.EROFS, "read-only file system"),
                                         (errno.EACCES, "permission denied")])
def test_write_failures_name_the_path(tmp_path: Path, capsys, monkeypatch, code, words) -> None:
    import textreid.fileio as fileio

    def failing_replace(src, dst):  # the rename (or a write) fails without naming a file, as write(2) does
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    out = tmp_path / "s"
    rc, err = _run(capsys, "synth", "--out", str(out), "--ids", "4", "--images-per-id", "1", "--workers", "1",
                   "--quiet")
    line = _one_line_error(rc, err, words, str(out))
    assert "textreid synth:" in line
    assert not list(out.rglob("*.tmp")), "the temporary file of the failed write is removed"


def test_os_errors_are_described_with_their_path() -> None:
    assert describe(FileNotFoundError(errno.ENOENT, "No such file", "/x/y.json")) == (
        2, "file not found: /x/y.json")
    assert describe(IsADirectoryError(errno.EISDIR, "Is a directory", "/x")) == (2, "is a directory, not a file: /x")
    assert describe(OSError(errno.EADDRINUSE, "Address already in use"))[0] == 2
    assert describe(json.JSONDecodeError("Expecting value", '{\n  "a": }', 9)) == (
        2, "not valid JSON at line 2, column 8: Expecting value")
    assert describe(KeyboardInterrupt()) == (130, "interrupted")


# --------------------------------------------------------------------------- internal errors, --debug
def test_internal_error_says_so_and_debug_shows_the_traceback(monkeypatch, capsys) -> None:
    def broken(args):
        return {}["missing"]  # a genuine bug, not a user error

    monkeypatch.setattr(cli, "cmd_synth", broken)
    rc, err = _run(capsys, "synth", "--out", "x")
    line = _one_line_error(rc, err, "internal error", "KeyError", "--debug", status=1)
    assert line.startswith("textreid synth: internal error")
    rc, err = _run(capsys, "synth", "--out", "x", "--debug")
    assert rc == 1 and "Traceback" in err and "KeyError" in err and "internal error" in err.splitlines()[-1]
