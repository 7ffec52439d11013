"""Readers: every layout on files written here, id remapping, and actionable errors on bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import CUSTOM_ROWS, FIXTURE_WORDS, write_authors_layout, write_image
from textreid.data.readers import (
    DATASETS,
    dataset_dir,
    load_split,
    parse_dataset_name,
    read_split,
    scan_split,
    word_table_path,
)
from textreid.data.records import DataError

# --------------------------------------------------------------------------- names


def test_parse_dataset_name() -> None:
    assert parse_dataset_name("cuhkpedes_train") == ("cuhkpedes", "train")
    assert parse_dataset_name("cuhkpedes_raw_test") == ("cuhkpedes_raw", "test")
    assert parse_dataset_name("synth_raw_val") == ("synth_raw", "val")
    with pytest.raises(DataError) as err:
        parse_dataset_name("market_train")
    for name in DATASETS:
        assert name in str(err.value)
    with pytest.raises(DataError, match="train, val, test"):
        parse_dataset_name("cuhkpedes_validation")


def test_dataset_dir_defaults_and_overrides(tmp_path: Path) -> None:
    assert dataset_dir("cuhkpedes_train", tmp_path) == tmp_path / "datasets" / "cuhkpedes"
    assert dataset_dir("synth_raw_test", tmp_path) == tmp_path / "datasets" / "synth"
    assert dataset_dir("rstpreid", tmp_path, "elsewhere") == tmp_path / "elsewhere"
    assert dataset_dir("rstpreid", tmp_path, "/abs/data") == Path("/abs/data")
    assert dataset_dir("custom_train", tmp_path, annotations="mine/a.csv") == tmp_path / "mine"
    with pytest.raises(DataError, match="DATASETS.ANNOTATIONS"):
        dataset_dir("custom_train", tmp_path)


# --------------------------------------------------------------------------- layouts


def test_authors_layout(authors_root: Path) -> None:
    folder = authors_root / "datasets" / "cuhkpedes"
    entries = json.loads((folder / "annotations" / "train.json").read_text())["annotations"]
    records = read_split("cuhkpedes_train", root=authors_root)
    assert len(records) == len(entries) == 3 * 2 * 2
    for i, (r, e) in enumerate(zip(records, entries, strict=True)):
        assert r.image_path == folder / "imgs" / e["file_path"] and r.image_path.is_absolute()
        assert (r.person_id, r.image_id, r.caption, r.split) == (e["id"], e["image_id"], e["sentence"], "train")
        assert r.word_ids == tuple(e["onehot"])
        assert r.source_index == i
    # evaluation splits keep the file's ids
    assert {r.person_id for r in read_split("cuhkpedes_test", root=authors_root)} == {20, 21}
    assert word_table_path("cuhkpedes_train", authors_root) == folder / "clip_vocab_vit.npy"
    assert word_table_path("cuhkpedes_raw_train", authors_root) is None


def test_authors_train_ids_remapped_only_when_not_contiguous(tmp_path: Path) -> None:
    write_authors_layout(tmp_path / "datasets" / "synth", {"train": [9, 3, 7], "test": [50, 60]})
    split = load_split("synth_train", root=tmp_path)
    entries = json.loads((tmp_path / "datasets/synth/annotations/train.json").read_text())["annotations"]
    expected = {3: 0, 7: 1, 9: 2}  # sorted original ids -> 0..N-1
    assert [r.person_id for r in split.records] == [expected[e["id"]] for e in entries]
    assert split.original_ids == {0: 3, 1: 7, 2: 9}
    assert {r.person_id for r in read_split("synth_test", root=tmp_path)} == {50, 60}


def test_raw_cuhk_layout(raw_cuhk_root: Path) -> None:
    folder = raw_cuhk_root / "datasets" / "cuhkpedes"
    entries = [e for e in json.loads((folder / "reid_raw.json").read_text()) if e["split"] == "train"]
    split = load_split("cuhkpedes_raw_train", root=raw_cuhk_root)
    records = split.records
    assert len(records) == sum(len(e["captions"]) for e in entries) == 12
    label = {5: 0, 9: 1, 12: 2}
    expected = [(folder / "imgs" / e["file_path"], label[e["id"]], c, i)
                for i, e in enumerate(entries) for c in e["captions"]]
    assert [(r.image_path, r.person_id, r.caption, r.source_index) for r in records] == expected
    assert split.original_ids == {0: 5, 1: 9, 2: 12}
    # one image id per file path, first-seen order
    assert [r.image_id for r in records] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert all(r.word_ids is None for r in records)
    test = read_split("cuhkpedes_raw_test", root=raw_cuhk_root)
    assert {r.person_id for r in test} == {0} and {r.split for r in test} == {"test"}
    # the source index is the entry index in the whole file
    all_entries = json.loads((folder / "reid_raw.json").read_text())
    assert all(all_entries[r.source_index]["split"] == "test" for r in test)


def test_icfg_has_no_val(icfg_root: Path) -> None:
    assert len(read_split("icfgpedes_train", root=icfg_root)) == 3 * 2
    assert {r.person_id for r in read_split("icfgpedes_test", root=icfg_root)} == {0, 1}
    assert read_split("icfgpedes_val", root=icfg_root) == []


def test_rstpreid_uses_img_path(rstp_root: Path) -> None:
    folder = rstp_root / "datasets" / "rstpreid"
    records = read_split("rstpreid_train", root=rstp_root)
    assert len(records) == 2 * 2 * 2
    assert records[0].image_path == folder / "imgs" / "train" / "7_0.jpg"
    assert records[0].person_id == 1  # ids 3, 7 -> 0, 1
    assert len(read_split("rstpreid_val", root=rstp_root)) == 4


@pytest.mark.parametrize("fixture", ["custom_jsonl", "custom_csv"])
def test_custom_layout(fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(fixture)
    split = load_split("custom_train", annotations=path)
    train_rows = [(i, row) for i, row in enumerate(CUSTOM_ROWS) if row[3] in ("train", "")]
    label = {"9": 0, "10": 1, "alice": 2, "bob": 3}  # numeric ids first, then names
    assert [(r.image_path, r.person_id, r.caption, r.source_index) for r in split.records] == [
        (path.parent / row[0], label[row[1]], row[2], i) for i, row in train_rows
    ]
    assert [r.image_id for r in split.records] == [0, 0, 1, 2, 3]  # a1.png shared
    assert split.original_ids == {v: k for k, v in label.items()}
    test = read_split("custom_test", annotations=path)
    assert [(r.person_id, r.caption) for r in test] == [(0, "a woman in white")]


def test_custom_relative_to_root_and_absolute_images(tmp_path: Path) -> None:
    img = write_image(tmp_path / "elsewhere" / "x.png")
    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps({"image": str(img), "person_id": 3, "caption": "a man"}) + "\n")
    records = read_split("custom_train", root=tmp_path, annotations="ann/a.jsonl")
    assert records[0].image_path == img and records[0].person_id == 0


# --------------------------------------------------------------------------- bad files


def _entries(root: Path, split: str = "train") -> tuple[Path, list[dict]]:
    file = root / "datasets" / "cuhkpedes" / "annotations" / f"{split}.json"
    return file, json.loads(file.read_text())["annotations"]


def _write(file: Path, entries: list) -> None:
    file.write_text(json.dumps({"annotations": entries}))


def _error(name: str, root: Path, **kw) -> str:
    with pytest.raises(DataError) as err:
        read_split(name, root=root, **kw)
    return str(err.value)


def test_missing_image_names_file_entry_and_image(authors_root: Path) -> None:
    file, entries = _entries(authors_root)
    image = file.parents[1] / "imgs" / entries[5]["file_path"]
    image.unlink()
    message = _error("cuhkpedes_train", authors_root)
    assert f"{file}: entry 4: image file not found: {image}" in message  # entries 4 and 5 share it
    records, problems = scan_split("cuhkpedes_train", root=authors_root)
    assert len(records) == len(entries) - 2 and len(problems) == 1


def test_missing_image_folder(authors_root: Path) -> None:
    imgs = authors_root / "datasets" / "cuhkpedes" / "imgs"
    imgs.rename(imgs.with_name("images"))
    assert f"{imgs}: image folder not found" in _error("cuhkpedes_train", authors_root)


def test_truncated_json_reports_line_and_column(authors_root: Path) -> None:
    file, _ = _entries(authors_root)
    text = file.read_text()
    file.write_text(text[: len(text) // 2])
    message = _error("cuhkpedes_train", authors_root)
    assert str(file) in message and "not valid JSON at line 1, column" in message


def test_missing_file_explains_layout(tmp_path: Path) -> None:
    message = _error("cuhkpedes_val", tmp_path)
    assert str(tmp_path / "datasets/cuhkpedes/annotations/val.json") in message and "file not found" in message


@pytest.mark.parametrize(
    ("index", "change", "expected"),
    [
        (3, {"sentence": "   "}, "empty caption"),
        (2, {"onehot": None}, "missing key 'onehot'"),
        (7, {"id": "7"}, "key 'id' should be int, found str '7'"),
        (1, {"image_id": True}, "key 'image_id' should be int, found bool"),
        (6, {"onehot": [0, 99]}, "'onehot' id 99 at position 1 is out of range of the word table"),
        (6, {"onehot": [0, -1]}, "'onehot' id -1 at position 1 is negative"),
        (0, {"onehot": [0, "x"]}, "'onehot' should be a list of int, found str 'x' at position 1"),
    ],
)
def test_bad_entry_names_file_and_index(authors_root: Path, index: int, change: dict, expected: str) -> None:
    file, entries = _entries(authors_root)
    for key, value in change.items():
        if value is None:
            del entries[index][key]
        else:
            entries[index][key] = value
    _write(file, entries)
    message = _error("cuhkpedes_train", authors_root)
    assert f"{file}: entry {index}: {expected}" in message
    assert message.startswith("1 problem(s) in cuhkpedes_train")
    if "word table" in expected:
        assert f"({len(FIXTURE_WORDS)} rows)" in message


def test_onehot_range_not_checked_without_table(authors_root: Path) -> None:
    file, entries = _entries(authors_root)
    entries[0]["onehot"] = [1000]
    _write(file, entries)
    (file.parents[1] / "clip_vocab_vit.npy").unlink()
    assert read_split("cuhkpedes_train", root=authors_root)[0].word_ids == (1000,)


def test_conflicting_image_ids(authors_root: Path) -> None:
    file, entries = _entries(authors_root)
    entries[1]["id"] = 2  # entry 0 and 1 share image_id 0
    entries[3]["file_path"] = entries[4]["file_path"]  # entries 2 and 3 share image_id 1
    _write(file, entries)
    message = _error("cuhkpedes_train", authors_root)
    assert f"{file}: entry 1: image_id 0 has person id 2 here but 0 at entry 0" in message
    assert f"{file}: entry 3: image_id 1 has file path" in message and "at entry 2" in message


def test_wrong_top_level_and_entry_types(authors_root: Path) -> None:
    file, entries = _entries(authors_root)
    file.write_text(json.dumps(entries))
    assert 'expected {"annotations": [...]} at the top level, found list' in _error("cuhkpedes_train", authors_root)
    _write(file, [entries[0], ["not", "an", "object"]])
    assert f"{file}: entry 1: entry should be an object, found list" in _error("cuhkpedes_train", authors_root)


def test_per_image_layout_errors(raw_cuhk_root: Path) -> None:
    file = raw_cuhk_root / "datasets" / "cuhkpedes" / "reid_raw.json"
    entries = json.loads(file.read_text())
    entries[0]["captions"][1] = ""
    entries[1]["split"] = "validation"
    del entries[2]["file_path"]
    entries[3]["captions"] = "one string"
    entries[4]["file_path"] = entries[0]["file_path"]  # entry 4 is person 9, entry 0 person 12
    file.write_text(json.dumps(entries))
    message = _error("cuhkpedes_raw_train", raw_cuhk_root)
    assert f"{file}: entry 0: caption 1 is empty" in message
    assert f"{file}: entry 1: 'split' should be one of train, val, test, found 'validation'" in message
    assert f"{file}: entry 2: missing key 'file_path'" in message
    assert f"{file}: entry 3: key 'captions' should be list, found str" in message
    image = file.parent / "imgs" / entries[0]["file_path"]
    assert f"{file}: entry 4: image {image} has person id 9 here but 12 at entry 0" in message
    records, problems = scan_split("cuhkpedes_raw_train", root=raw_cuhk_root)
    assert {p.index for p in problems} == {0, 1, 2, 3, 4}
    assert {r.source_index for r in records} == {0, 5}
    file.write_text(json.dumps({"annotations": []}))
    assert "looks like the authors' layout" in _error("cuhkpedes_raw_train", raw_cuhk_root)


def test_per_image_conflicting_person_for_same_path(rstp_root: Path) -> None:
    file = rstp_root / "datasets" / "rstpreid" / "data_captions.json"
    entries = json.loads(file.read_text())
    entries[2]["img_path"] = entries[0]["img_path"]  # entry 0: person 7, entry 2: person 3
    file.write_text(json.dumps(entries))
    message = _error("rstpreid_train", rstp_root)
    assert f"{file}: entry 2: image {file.parent / 'imgs' / entries[0]['img_path']} has person id 3 here but 7 at entry 0" in message


def test_custom_errors(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(
        '{"image": "a.png", "person_id": 1, "caption": "ok"}\n'
        '{"image": "a.png", "person_id": 1, "caption": "ok\n'
        '{"image": "a.png", "caption": "no id"}\n'
        '{"image": "a.png", "person_id": 1, "caption": "", "split": "dev"}\n'
    )
    message = _error("custom_train", tmp_path, annotations=jsonl)
    assert f"{jsonl}: entry 1: line 2: not valid JSON" in message
    assert f"{jsonl}: entry 2: line 3: missing key 'person_id'" in message
    assert f"{jsonl}: entry 3: line 4: 'split' should be one of train, val, test, found 'dev'" in message
    assert f"{jsonl}: entry 3: line 4: empty caption" in message
    bad_csv = tmp_path / "b.csv"
    bad_csv.write_text("image,caption\na.png,a man\n")
    assert f"{bad_csv}: missing column(s) person_id in the header" in _error("custom_train", tmp_path, annotations=bad_csv)
    other = tmp_path / "c.txt"
    other.write_text("")
    assert "unsupported annotation file type '.txt'" in _error("custom_train", tmp_path, annotations=other)
    assert "DATASETS.ANNOTATIONS" in _error("custom_train", tmp_path)


def test_error_lists_first_20_and_count(authors_root: Path) -> None:
    file, entries = _entries(authors_root)
    for e in entries:
        e["sentence"] = ""
        e["onehot"] = []
    _write(file, entries)
    message = _error("cuhkpedes_train", authors_root)
    assert message.startswith("24 problem(s) in cuhkpedes_train")
    assert message.count("\n  - ") == 20 and "... and 4 more" in message


def test_word_table_shape_checked(authors_root: Path) -> None:
    table = authors_root / "datasets" / "cuhkpedes" / "clip_vocab_vit.npy"
    np.save(table, np.zeros(5))
    assert f"{table}: word table should be 2-D [V, D], found shape (5,)" in _error("cuhkpedes_train", authors_root)


def test_csv_unterminated_quote_names_its_line_and_keeps_the_rows_after(custom_csv: Path) -> None:
    lines = custom_csv.read_text().splitlines()
    lines[2] = 'pics/a1.png,alice,"red coat, black bag,train'  # the closing quote is missing
    custom_csv.write_text("\n".join(lines) + "\n")
    records, problems = scan_split("custom_train", annotations=custom_csv)
    assert [str(p) for p in problems] == [
        f"{custom_csv}: entry 1: line 3: unterminated quote: a quoted field must end on its line (add the closing \")"]
    # every other row is still read: 5 train captions minus the broken one (a CSV reader would have
    # run the quoted field to the end of the file, swallowing them)
    expected = [c for i, (_, _, c, s) in enumerate(CUSTOM_ROWS) if s != "test" and i != 1]
    assert sorted(r.caption for r in records) == sorted(expected) and len(expected) == 4
    test_records, _ = scan_split("custom_test", annotations=custom_csv)
    assert [r.caption for r in test_records] == ["a woman in white"]


def test_csv_field_errors_name_the_line(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    bad = tmp_path / "b.csv"
    bad.write_text('image,person_id,caption\n\na.png,1,ok\na.png,"1"x,bad quote\na.png,1,too,many\n')
    message = _error("custom_train", tmp_path, annotations=bad)
    assert f"{bad}: entry 1: line 4: not valid CSV" in message
    assert f"{bad}: entry 2: line 5: more fields than header columns (4 > 3)" in message


def test_json_errors_name_file_line_and_column(authors_root: Path, tmp_path: Path) -> None:
    file, _ = _entries(authors_root)
    file.write_text('{"annotations": [\n  {"image_id": 0,\n   "id": 0 "file_path": "x.png"}\n]}\n')
    assert f"{file}: not valid JSON at line 3, column 12: Expecting ',' delimiter" in _error("cuhkpedes_train",
                                                                                              authors_root)
    custom = tmp_path / "list.json"
    custom.write_text('[{"image": "a.png",\n  "person_id": 1,, "caption": "x"}]')
    assert f"{custom}: not valid JSON at line 2, column 18" in _error("custom_train", tmp_path, annotations=custom)
