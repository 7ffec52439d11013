"""``check_datasets``: the counts table and the problems it reports."""

from __future__ import annotations

import json
from pathlib import Path

from textreid.data.check import check_datasets


def test_clean_dataset_table(authors_root: Path) -> None:
    report = check_datasets(["cuhkpedes_train", "cuhkpedes_val", "cuhkpedes_test"], root=authors_root,
                            progress=False)
    assert report.ok and report.problems == []
    counts = [(r.name, r.ids, r.images, r.captions, r.truncated, r.problems) for r in report.rows]
    assert counts == [("cuhkpedes_train", 3, 6, 12, 0, 0), ("cuhkpedes_val", 1, 2, 4, 0, 0),
                      ("cuhkpedes_test", 2, 4, 8, 0, 0)]
    lines = report.table().splitlines()
    assert lines[0].split()[:2] == ["dataset", "split"] and "truncated (>100 words)" in lines[0]
    assert lines[2].split() == ["cuhkpedes_train", "3", "6", "12", "0", "0"]
    assert "no problems found" in str(report)


def test_unreadable_image_and_truncated_captions(authors_root: Path) -> None:
    folder = authors_root / "datasets" / "cuhkpedes"
    file = folder / "annotations" / "train.json"
    entries = json.loads(file.read_text())["annotations"]
    (folder / "imgs" / entries[6]["file_path"]).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    entries[0]["sentence"] += " a black hat"
    entries[0]["onehot"] += [0, 10, 13]  # 8 + 3 words; every other caption has 8
    file.write_text(json.dumps({"annotations": entries}))
    report = check_datasets(["cuhkpedes_train"], root=authors_root, max_length=8, progress=False)
    assert not report.ok
    assert [(p.file, p.index) for p in report.problems] == [(str(file), 6)]
    assert f"image {folder / 'imgs' / entries[6]['file_path']} cannot be read" in report.problems[0].message
    assert report.rows[0].truncated == 1
    assert report.rows[0].problems == 1
    # without opening images the corrupt file goes unnoticed (existence only)
    assert check_datasets(["cuhkpedes_train"], root=authors_root, open_images=False, progress=False).ok


def test_reader_problems_empty_split_and_bad_names(icfg_root: Path, tmp_path: Path) -> None:
    file = icfg_root / "datasets" / "icfgpedes" / "ICFG-PEDES.json"
    entries = json.loads(file.read_text())
    entries[1]["captions"] = [""]
    file.write_text(json.dumps(entries))
    report = check_datasets(["icfgpedes_train", "icfgpedes_val", "market_test", "custom_train"],
                            root=icfg_root, progress=False)
    text = [str(p) for p in report.problems]
    assert f"{file}: entry 1: caption 0 is empty" in text
    assert f"{file}: no captions for split 'val' (icfgpedes has no val split)" in text
    assert any(t.startswith("market_test: unknown dataset 'market'") for t in text)
    assert any("DATASETS.ANNOTATIONS" in t for t in text)
    assert [r.problems for r in report.rows] == [1, 1, 1, 1]
    assert (report.rows[0].captions, report.rows[0].images) == (5, 5)
