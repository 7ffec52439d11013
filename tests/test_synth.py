"""The synthetic pedestrian generator: layout, counts, splits, word ids, determinism, content."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from textreid.data.synth import (
    JPEG_QUALITY,
    generate,
    render_image,
    sample_person,
    view_of,
    word_vectors,
)

SMALL = {"num_ids": 12, "images_per_id": 2, "image_size": (64, 24), "progress": False}
MEN_WORDS = {"man", "guy", "male", "boy", "he", "his"}
WOMEN_WORDS = {"woman", "lady", "girl", "female", "she", "her"}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def load_annotations(root: Path) -> dict[str, list[dict]]:
    return {s: json.loads((root / "annotations" / f"{s}.json").read_text())["annotations"]
            for s in ("train", "val", "test")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("synth")
    out = {}
    for name, seed, workers in (("a", 0, 1), ("b", 0, 2), ("c", 1, 1)):
        out[name] = (base / name, generate(base / name, seed=seed, workers=workers, **SMALL))
    return out


def test_layout_counts_and_image_ids(runs: dict) -> None:
    root, summary = runs["a"]
    for name in ("clip_vocab_vit.npy", "reid_raw.json", "attributes.json", "preview.jpg"):
        assert (root / name).is_file(), name
    ann = load_annotations(root)
    by_image: dict[int, list[dict]] = defaultdict(list)
    for split, entries in ann.items():
        assert summary["splits"][split]["captions"] == len(entries)
        for e in entries:
            assert set(e) == {"image_id", "id", "file_path", "sentence", "onehot"}
            assert isinstance(e["sentence"], str) and e["sentence"].strip()
            by_image[e["image_id"]].append({**e, "split": split})
    assert len(by_image) == 12 * 2  # image ids are unique across the whole dataset
    for group in by_image.values():  # exactly the two captions of one image share its id
        assert len(group) == 2
        assert len({(g["file_path"], g["id"], g["split"]) for g in group}) == 1
        assert group[0]["sentence"] != group[1]["sentence"]
    paths = [g[0]["file_path"] for g in by_image.values()]
    assert len(set(paths)) == len(paths)
    for p in paths:
        assert "/" in p and not p.startswith("/")
        with Image.open(root / "imgs" / p) as im:
            assert im.format == "JPEG" and im.size == (24, 64)  # image_size is (height, width)

    raw = json.loads((root / "reid_raw.json").read_text())
    assert len(raw) == 24
    by_path = {g[0]["file_path"]: g for g in by_image.values()}
    for rec in raw:
        group = by_path[rec["file_path"]]
        assert rec["split"] == group[0]["split"] and rec["id"] == group[0]["id"]
        assert rec["captions"] == [g["sentence"] for g in group]
        assert rec["processed_tokens"] == [words(c) for c in rec["captions"]]
    with Image.open(root / "preview.jpg") as im:
        assert im.width > 2 * 24 and im.height >= 64


def test_splits_are_disjoint_and_numbered(runs: dict) -> None:
    root, summary = runs["a"]
    ann = load_annotations(root)
    ids = {s: {e["id"] for e in entries} for s, entries in ann.items()}
    assert ids["train"] == set(range(10))  # contiguous 0..N_train-1
    assert len(ids["val"]) == 1 and len(ids["test"]) == 1
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert {s: v["ids"] for s, v in summary["splits"].items()} == {"train": 10, "val": 1, "test": 1}
    assert all(v["images"] * 2 == v["captions"] for v in summary["splits"].values())
    attrs = json.loads((root / "attributes.json").read_text())["persons"]
    assert {p["id"]: p["split"] for p in attrs} == {i: s for s in ids for i in ids[s]}


def test_onehot_encodes_the_sentence_with_the_train_vocabulary(runs: dict) -> None:
    root, summary = runs["a"]
    ann = load_annotations(root)
    table = np.load(root / "clip_vocab_vit.npy")
    assert table.dtype == np.float32 and table.shape == (summary["vocab_size"], 512)
    np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, rtol=1e-5)
    # Train captions contain only vocabulary words, so word -> id is readable from them.
    word_id: dict[str, int] = {}
    for e in ann["train"]:
        ws = words(e["sentence"])
        assert len(ws) == len(e["onehot"])
        for w, i in zip(ws, e["onehot"], strict=True):
            assert word_id.setdefault(w, i) == i
    assert sorted(word_id.values()) == list(range(table.shape[0]))  # a bijection onto 0..V-1
    for split in ("val", "test"):
        for e in ann[split]:
            assert e["onehot"] == [word_id[w] for w in words(e["sentence"]) if w in word_id]
    # row i is the documented pseudo-embedding of word i; colour words share a component
    by_id = sorted(word_id, key=word_id.get)
    np.testing.assert_array_equal(table, word_vectors(by_id))
    red, blue, shirt = word_vectors(["red", "blue", "shirt"])
    assert red @ blue > red @ shirt + 0.2


def test_same_seed_same_bytes_any_worker_count(runs: dict) -> None:
    (root_a, _), (root_b, _), (root_c, _) = runs["a"], runs["b"], runs["c"]
    ha, hb, hc = file_hashes(root_a), file_hashes(root_b), file_hashes(root_c)
    assert len(ha) > 24 and ha == hb  # workers=1 vs workers=2
    assert ha.keys() == hc.keys()
    assert ha["annotations/train.json"] != hc["annotations/train.json"]
    images_same = [k for k in ha if k.endswith(".jpg") and ha[k] == hc[k]]
    assert not images_same


def test_siblings_differ_in_one_or_two_attributes(runs: dict) -> None:
    data = json.loads(runs["a"][0].joinpath("attributes.json").read_text())
    keys, persons = data["attribute_keys"], data["persons"]
    by_id = {p["id"]: p for p in persons}

    def ndiff(a: dict, b: dict) -> int:
        return sum(a[k] != b[k] for k in keys)

    close = [(p["id"], q["id"]) for p in persons for q in persons
             if p["id"] < q["id"] and 1 <= ndiff(p["attributes"], q["attributes"]) <= 2]
    assert close
    siblings = [p for p in persons if p["sibling_of"] is not None]
    assert siblings
    for p in siblings:
        parent = by_id[p["sibling_of"]]
        assert parent["split"] == p["split"]
        assert 1 <= ndiff(p["attributes"], parent["attributes"]) <= 2


def test_captions_name_gender_and_top_colour(runs: dict) -> None:
    root = runs["a"][0]
    persons = {p["id"]: p["attributes"] for p in json.loads((root / "attributes.json").read_text())["persons"]}
    for entries in load_annotations(root).values():
        for e in entries:
            a, ws = persons[e["id"]], set(words(e["sentence"]))
            own, other = (MEN_WORDS, WOMEN_WORDS) if a["gender"] == "man" else (WOMEN_WORDS, MEN_WORDS)
            assert ws & own and not ws & other, e["sentence"]
            colour = {"grey": {"grey", "gray"}}.get(a["top_colour"], {a["top_colour"]})
            assert ws & colour, e["sentence"]


def plain_person(top_colour: str, bag: str | None = None) -> dict:
    p = sample_person(5, 3)
    p["attributes"].update(top_type="t-shirt", sleeves="short", top_colour=top_colour, top_pattern="plain",
                           pattern_colour=None, inner_colour=None, bag_type=bag,
                           bag_colour="black" if bag else None, hair_length="short")
    return p


@pytest.mark.parametrize("view", ["front", "back", "side"])
def test_image_follows_top_colour(view: str) -> None:
    for k in range(3):  # same seed and index: same pose, background and lighting; only the top differs
        red = np.asarray(render_image(plain_person("red"), view, seed=0, image_index=k), dtype=np.float32)
        blue = np.asarray(render_image(plain_person("blue"), view, seed=0, image_index=k), dtype=np.float32)
        changed = np.abs(red - blue).sum(axis=2) > 60  # [H, W]
        assert changed.sum() > 0.03 * changed.size
        rows = np.nonzero(changed)[0]
        assert 0.1 * red.shape[0] < rows.mean() < 0.6 * red.shape[0]  # the torso, not the legs or sky
        red_minus_blue = [(im[changed][:, 0] - im[changed][:, 2]).mean() for im in (red, blue)]
        assert red_minus_blue[0] > red_minus_blue[1] + 80


def test_backpack_shows_mostly_from_behind() -> None:
    area = {}
    for view in ("front", "back"):
        with_bag = np.asarray(render_image(plain_person("white", "backpack"), view, seed=0), dtype=np.float32)
        without = np.asarray(render_image(plain_person("white"), view, seed=0), dtype=np.float32)
        area[view] = (np.abs(with_bag - without).sum(axis=2) > 60).mean()
    assert area["back"] > 0.04 and area["back"] > 1.5 * area["front"]


def test_bad_arguments_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 3"):
        generate(tmp_path / "x", num_ids=2, progress=False)
    with pytest.raises(ValueError, match="no training persons"):
        generate(tmp_path / "x", num_ids=4, val_fraction=0.5, test_fraction=0.4, progress=False)
    real = tmp_path / "cuhkpedes"
    (real / "annotations").mkdir(parents=True)
    (real / "annotations" / "train.json").write_text('{"annotations": []}')
    with pytest.raises(FileExistsError, match="did not make"):
        generate(real, num_ids=3, progress=False)
    assert (real / "annotations" / "train.json").read_text() == '{"annotations": []}'


def test_rerun_into_same_folder_replaces_the_dataset(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    generate(out, num_ids=6, images_per_id=1, image_size=(48, 16), workers=1, progress=False)
    summary = generate(out, num_ids=3, images_per_id=1, image_size=(48, 16), workers=1, progress=False)
    images = sorted(p.name for p in (out / "imgs").rglob("*") if p.is_file())
    assert len(images) == 3 and not any(".tmp" in n for n in images)
    assert sum(len(v) for v in load_annotations(out).values()) == 2 * 3
    assert summary["splits"]["train"]["ids"] == 1
    assert not any(".tmp" in p.name for p in out.rglob("*"))


def test_images_are_reproducible_from_attributes_json(runs: dict) -> None:
    root = runs["a"][0]
    data = json.loads((root / "attributes.json").read_text())
    raw = json.loads((root / "reid_raw.json").read_text())
    person = data["persons"][4]
    for k, rec in enumerate(r for r in raw if r["id"] == person["id"]):
        img = render_image(person, view_of(person, k), seed=data["seed"], image_index=k,
                           image_size=tuple(data["image_size"]))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
        assert buf.getvalue() == (root / "imgs" / rec["file_path"]).read_bytes()
