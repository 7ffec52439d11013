"""Gallery index: building, skipping bad files, growing, atomic replacement, FAISS, shards."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import faiss
import numpy as np
import pytest

from search_fakes import (
    COLOURS,
    ColourEncoder,
    colour_histogram,
    make_gallery,
    pair_query,
    person_image,
)
from textreid.search import ann as ann_mod
from textreid.search.errors import HostileIndexError, UnsafeOutputError
from textreid.search.index import (
    build_faiss_index,
    build_index,
    merge_shards,
    read_index_dir,
    search_index,
)
from textreid.search.searcher import Searcher


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    p = tmp_path / "model.pth"
    p.write_bytes(b"fake checkpoint v1")
    return p


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_build_index_embeds_good_images_and_lists_bad_ones(tmp_path: Path, ckpt: Path) -> None:
    gallery = make_gallery(tmp_path / "gallery")
    enc = ColourEncoder()
    m = build_index(enc, tmp_path / "gallery", tmp_path / "idx", checkpoint_path=ckpt,
                    batch_size=4, progress=False)

    assert m.count == 15 and enc.images_seen == 15
    assert m.root == str((tmp_path / "gallery").resolve())
    assert m.checkpoint_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert m.embed_dim == 6 and m.index["type"] == "flat"
    reasons = {s["path"]: s["reason"] for s in m.skipped["images"]}
    assert m.skipped["count"] == 3
    assert set(reasons) == {"cam0/truncated.jpg", "cam1/empty.png", "cam2/notes.jpg"}
    assert "truncated" in reasons["cam0/truncated.jpg"]
    assert "0 bytes" in reasons["cam1/empty.png"]
    assert "not an image" in reasons["cam2/notes.jpg"]

    data = read_index_dir(tmp_path / "idx")
    on_disk = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert on_disk["skipped"]["count"] == 3 and on_disk["format_version"] == 1
    assert data.paths == sorted(data.paths)
    expected = {p.relative_to(tmp_path / "gallery").as_posix() for p in gallery.values()}
    assert set(data.paths) == expected
    assert data.embeddings.dtype == np.float32 and data.embeddings.shape == (15, 6)
    for rel, row in zip(data.paths, data.embeddings, strict=True):
        np.testing.assert_allclose(row, colour_histogram(tmp_path / "gallery" / rel), atol=1e-6)
    assert faiss.read_index(str(tmp_path / "idx" / "index.faiss")).ntotal == 15
    assert _leftovers(tmp_path) == []


def test_list_file_and_path_list_inputs(tmp_path: Path) -> None:
    gallery = make_gallery(tmp_path / "g")
    chosen = sorted(gallery.values())[:4]
    lst = tmp_path / "g" / "list.txt"
    lst.write_text("# gallery subset\n" + "\n".join(
        str(p.relative_to(tmp_path / "g")) for p in chosen) + "\n\n")
    m1 = build_index(ColourEncoder(), lst, tmp_path / "i1", progress=False)
    m2 = build_index(ColourEncoder(), chosen, tmp_path / "i2", progress=False)
    assert m1.count == m2.count == 4 and m1.root == m2.root
    assert read_index_dir(tmp_path / "i1").paths == read_index_dir(tmp_path / "i2").paths
    m3 = build_index(ColourEncoder(), [*chosen, tmp_path / "g" / "gone.jpg"], tmp_path / "i3",
                     progress=False)
    assert m3.count == 4 and m3.skipped["images"] == [{"path": "gone.jpg", "reason": "file not found"}]
    with pytest.raises(ValueError, match="no usable images.*missing.jpg: file not found"):
        build_index(ColourEncoder(), [tmp_path / "x" / "missing.jpg"], tmp_path / "i4",
                    progress=False)
    single = build_index(ColourEncoder(), chosen[0], tmp_path / "i5", progress=False)
    assert single.count == 1 and single.root == str(chosen[0].parent)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images found"):
        build_index(ColourEncoder(), tmp_path / "empty", tmp_path / "i6", progress=False)


def test_rerun_embeds_only_new_or_changed_images(tmp_path: Path, ckpt: Path) -> None:
    gallery = make_gallery(tmp_path / "g")
    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "idx", checkpoint_path=ckpt,
                progress=False)
    person_image(tmp_path / "g" / "new" / "a.png", "red", "red")
    person_image(tmp_path / "g" / "new" / "b.jpg", "blue", "blue")
    changed = gallery[("green", "white")]
    person_image(changed, "black", "black")  # same path, new content
    os.utime(changed, ns=(1_000_000_000, 1_000_000_000))

    enc = ColourEncoder()
    m = build_index(enc, tmp_path / "g", tmp_path / "idx", checkpoint_path=ckpt, progress=False)
    assert enc.images_seen == 3
    assert m.count == 17 and m.build["embedded"] == 3 and m.build["reused"] == 14
    assert m.build["reembedded_all"] is None
    data = read_index_dir(tmp_path / "idx")
    row = data.paths.index(changed.relative_to(tmp_path / "g").as_posix())
    np.testing.assert_allclose(data.embeddings[row], colour_histogram(changed), atol=1e-6)

    enc = ColourEncoder()
    build_index(enc, tmp_path / "g", tmp_path / "idx", checkpoint_path=ckpt, progress=False)
    assert enc.images_seen == 0
    assert _leftovers(tmp_path) == []


def test_checkpoint_change_reembeds_everything(tmp_path: Path, ckpt: Path) -> None:
    make_gallery(tmp_path / "g")
    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "idx", checkpoint_path=ckpt,
                progress=False)
    ckpt.write_bytes(b"fake checkpoint v2, retrained")
    enc = ColourEncoder()
    m = build_index(enc, tmp_path / "g", tmp_path / "idx", checkpoint_path=ckpt, progress=False)
    assert enc.images_seen == 15 and m.build["reused"] == 0
    assert "checkpoint changed" in m.build["reembedded_all"]
    assert m.checkpoint_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_interrupted_build_leaves_previous_index_intact(tmp_path: Path, ckpt: Path) -> None:
    make_gallery(tmp_path / "g")
    with pytest.raises(RuntimeError, match="simulated"):
        build_index(ColourEncoder(fail_after=4), tmp_path / "g", tmp_path / "fresh",
                    batch_size=4, progress=False)
    assert not (tmp_path / "fresh").exists() and _leftovers(tmp_path) == []

    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "idx", checkpoint_path=ckpt,
                progress=False)
    before = _snapshot(tmp_path / "idx")
    for i in range(6):
        person_image(tmp_path / "g" / "more" / f"{i}.png", COLOURS[i], "white")
    with pytest.raises(RuntimeError, match="simulated"):
        build_index(ColourEncoder(fail_after=2), tmp_path / "g", tmp_path / "idx",
                    checkpoint_path=ckpt, batch_size=2, progress=False)
    assert _snapshot(tmp_path / "idx") == before
    assert _leftovers(tmp_path) == []


def _brute_force(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q @ x.T  # [Q, N]
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, axis=1), ids


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_index_equals_numpy_brute_force() -> None:
    rng = np.random.default_rng(0)
    x, q = _unit_rows(rng, 2000, 32), _unit_rows(rng, 50, 32)
    index, info = build_faiss_index(x, "auto")
    assert info["type"] == "flat"
    ref_scores, ref_ids = _brute_force(x, q, 10)
    scores, ids = index.search(q, 10)  # faiss' own batch path
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    for rows in (slice(0, 1), slice(3, 6)):  # search_index: the numpy path
        scores, ids = search_index(index, q[rows], 10)
        np.testing.assert_array_equal(ids, ref_ids[rows])
        np.testing.assert_allclose(scores, ref_scores[rows], atol=1e-5)
    scores, ids = search_index(index, q[:2], 2000)  # k = N
    np.testing.assert_array_equal(ids, _brute_force(x, q[:2], 2000)[1])


def _clustered(
    rng: np.random.Generator, n: int, d: int, clusters: int, noise: float = 0.8
) -> np.ndarray:
    c = _unit_rows(rng, clusters, d)
    x = c[rng.integers(clusters, size=n)] + noise * _unit_rows(rng, n, d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_recall_is_high(kind: str) -> None:
    rng = np.random.default_rng(1)
    data = _clustered(rng, 12_200, 32, 100)
    x, q = data[:12_000], data[12_000:]  # held-out queries
    index, info = build_faiss_index(x, kind)
    assert info["type"] == kind
    assert ("nprobe" in info and info["nlist"] > 1) if kind == "ivf" else ("efSearch" in info)
    _, ids = index.search(q, 10)
    _, ref = _brute_force(x, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref, strict=True)])
    assert recall >= 0.95, (recall, info)


def test_auto_switches_to_ivf_above_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann_mod, "AUTO_FLAT_MAX", 1000)
    x = _clustered(np.random.default_rng(2), 3000, 16, 200, noise=0.2)
    index, info = build_faiss_index(x, "auto")
    assert info["type"] == "ivf" and faiss.extract_index_ivf(index).nprobe == info["nprobe"]
    # Structureless vectors: IVF would scan most cells, so auto falls back to exact search.
    noise = _unit_rows(np.random.default_rng(3), 3000, 64)
    index, info = build_faiss_index(noise, "auto")
    assert info["type"] == "flat" and "nprobe" in info["auto_fallback"]
    assert isinstance(index, faiss.IndexFlatIP)
    with pytest.raises(ValueError, match="valid: auto, flat, ivf, hnsw"):
        build_faiss_index(x, "annoy")


def test_shards_and_merge_equal_single_process_index(tmp_path: Path, ckpt: Path) -> None:
    make_gallery(tmp_path / "g")
    single = build_index(ColourEncoder(), tmp_path / "g", tmp_path / "single",
                         checkpoint_path=ckpt, progress=False)
    shard_dirs = []
    for rank in range(3):
        enc = ColourEncoder()
        m = build_index(enc, tmp_path / "g", tmp_path / "dist", checkpoint_path=ckpt,
                        rank=rank, world_size=3, progress=False)
        assert m.shard == {"rank": rank, "world_size": 3} and m.index["type"] == "none"
        shard_dirs.append(tmp_path / "dist" / f"shard-{rank:03d}-of-003")
        assert (shard_dirs[-1] / "manifest.json").is_file()
    assert sum(read_index_dir(d).manifest.count for d in shard_dirs) == 15

    with pytest.raises(ValueError, match=r"missing ranks \[2\]"):
        merge_shards(shard_dirs[:2], tmp_path / "bad")
    merged = merge_shards(shard_dirs, tmp_path / "dist")
    a, b = read_index_dir(tmp_path / "single"), read_index_dir(tmp_path / "dist")
    assert b.paths == a.paths and merged.root == single.root and merged.count == 15
    np.testing.assert_array_equal(b.embeddings, a.embeddings)
    assert merged.skipped == single.skipped
    assert merged.checkpoint_sha256 == single.checkpoint_sha256
    # Merging into the folder that holds the shards keeps them.
    assert all((d / "manifest.json").is_file() for d in shard_dirs)
    q = ColourEncoder().encode_text([pair_query("red", "black")]).numpy()
    ia = faiss.read_index(str(tmp_path / "single" / "index.faiss"))
    ib = faiss.read_index(str(tmp_path / "dist" / "index.faiss"))
    np.testing.assert_array_equal(ia.search(q, 5)[1], ib.search(q, 5)[1])


def test_merge_refuses_different_checkpoints(tmp_path: Path, ckpt: Path) -> None:
    make_gallery(tmp_path / "g")
    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "d", checkpoint_path=ckpt,
                rank=0, world_size=2, progress=False)
    other = tmp_path / "other.pth"
    other.write_bytes(b"another model")
    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "d", checkpoint_path=other,
                rank=1, world_size=2, progress=False)
    with pytest.raises(ValueError, match="sha256"):
        merge_shards([tmp_path / "d" / "shard-000-of-002", tmp_path / "d" / "shard-001-of-002"],
                     tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


# ----------------------------------------------------------------------------- never destroy


def _tree(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` with its bytes (what must survive a refused write)."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["images", "inside", "parent", "cwd"])
def test_out_never_overlaps_the_images(tmp_path: Path, where: str, monkeypatch) -> None:
    images = tmp_path / "photos"
    make_gallery(images)
    before = _tree(tmp_path)
    out = {"images": images, "inside": images / "cam0" / "index", "parent": tmp_path,
           "cwd": Path(".")}[where]
    monkeypatch.chdir(images if where == "cwd" else tmp_path)
    with pytest.raises(UnsafeOutputError, match=r"refusing --out .*(images folder|contains the images)"):
        build_index(ColourEncoder(), images, out, progress=False)
    assert _tree(tmp_path) == before  # not one file lost or added


def test_out_refuses_a_folder_of_other_files_and_keeps_them(tmp_path: Path) -> None:
    make_gallery(tmp_path / "g")
    work = tmp_path / "work"
    (work / "notes").mkdir(parents=True)
    (work / "thesis.tex").write_text("three years of work")
    (work / "notes" / "a.txt").write_text("keep me")
    before = _tree(work)
    with pytest.raises(UnsafeOutputError, match=r"'notes' and 1 more entries, which is not part"):
        build_index(ColourEncoder(), tmp_path / "g", work, progress=False)
    assert _tree(work) == before
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UnsafeOutputError, match="afile: it is a file"):
        build_index(ColourEncoder(), tmp_path / "g", tmp_path / "afile", progress=False)
    assert (tmp_path / "afile").read_text() == "x"
    # An index folder to which the user added a file is not replaced either.
    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "idx", progress=False)
    (tmp_path / "idx" / "my-notes.md").write_text("annotations")
    with pytest.raises(UnsafeOutputError, match="'my-notes.md'"):
        build_index(ColourEncoder(), tmp_path / "g", tmp_path / "idx", progress=False)
    assert (tmp_path / "idx" / "my-notes.md").read_text() == "annotations"
    # merge: the same rules
    with pytest.raises(UnsafeOutputError, match="'notes'"):
        merge_shards([tmp_path / "idx"], work)
    with pytest.raises(UnsafeOutputError, match="contains the images"):
        merge_shards([tmp_path / "idx"], tmp_path)
    assert _tree(work) == before and (tmp_path / "g" / "cam0").is_dir()


def test_replacing_an_index_or_an_empty_folder_is_allowed_and_atomic(tmp_path: Path) -> None:
    make_gallery(tmp_path / "g")
    (tmp_path / "empty").mkdir()
    assert build_index(ColourEncoder(), tmp_path / "g", tmp_path / "empty", progress=False).count == 15
    first = _tree(tmp_path / "empty")
    # A failing re-build leaves the previous index untouched.
    person_image(tmp_path / "g" / "new.png", "red", "red")
    with pytest.raises(RuntimeError, match="simulated"):
        build_index(ColourEncoder(fail_after=0), tmp_path / "g", tmp_path / "empty", progress=False)
    assert _tree(tmp_path / "empty") == first and _leftovers(tmp_path) == []
    assert build_index(ColourEncoder(), tmp_path / "g", tmp_path / "empty", progress=False).count == 16


def test_links_leading_out_of_the_images_folder_are_skipped(tmp_path: Path) -> None:
    make_gallery(tmp_path / "g")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    outside = person_image(tmp_path / "elsewhere.png", "red", "red")
    (tmp_path / "g" / "passwd.jpg").symlink_to(secret)
    (tmp_path / "g" / "outside.png").symlink_to(outside)
    m = build_index(ColourEncoder(), tmp_path / "g", tmp_path / "idx", progress=False)
    reasons = {s["path"]: s["reason"] for s in m.skipped["images"]}
    assert "outside the images folder" in reasons["passwd.jpg"]
    assert "outside the images folder" in reasons["outside.png"]
    assert "passwd.jpg" not in read_index_dir(tmp_path / "idx").paths


@pytest.mark.parametrize(
    ("entry", "why"),
    [("/etc/passwd", "outside the index root"), ("../../../../etc/passwd", "outside the index root"),
     ("cam0/../../x.png", "outside the index root"), ("cam0/readme.txt", "not an image file"),
     ("link.png", "outside the index root")],
)
def test_edited_paths_are_refused_on_load(tmp_path: Path, entry: str, why: str) -> None:
    make_gallery(tmp_path / "g")
    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "idx", progress=False)
    (tmp_path / "g" / "link.png").symlink_to("/etc/passwd")
    paths_file = tmp_path / "idx" / "paths.json"
    paths = json.loads(paths_file.read_text())
    paths[3] = entry
    paths_file.write_text(json.dumps(paths))
    with pytest.raises(HostileIndexError, match=rf"paths.json: entry 3 '{re.escape(entry)}' .*{why}"):
        read_index_dir(tmp_path / "idx")
    with pytest.raises(HostileIndexError, match=rf"entry 3 '{re.escape(entry)}'"):
        Searcher(tmp_path / "idx", encoder=ColourEncoder())


def test_cli_index_refuses_before_loading_anything(tmp_path: Path, monkeypatch, capsys) -> None:
    from textreid.cli import main

    images = tmp_path / "photos"
    make_gallery(images)
    before = _tree(tmp_path)
    monkeypatch.chdir(images)
    for out in (".", str(images), str(images / "cam1"), str(tmp_path)):
        rc = main(["index", "--checkpoint", "never-read.pth", "--images", str(images), "--out", out,
                   "--device", "cpu", "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and f"refusing --out {out}" in err and "Traceback" not in err
    rc = main(["index", "merge", str(images), "--out", str(tmp_path / "merged")])
    assert rc == 2 and "photos is not a textreid index" in capsys.readouterr().err
    assert _tree(tmp_path) == before
