"""Writing a synthetic dataset: both layouts, the word table, the images and a contact sheet.

The annotations are written last: their presence means the dataset is complete. Every file is
written atomically, and a folder that holds a dataset this generator did not make is refused.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from textreid.data.synth.attributes import (
    ATTRIBUTE_KEYS,
    SPLITS,
    make_persons,
    split_sizes,
    view_of,
)
from textreid.data.synth.captions import make_captions
from textreid.data.synth.rendering import render_image
from textreid.data.synth.vectors import build_vocabulary, word_vectors
from textreid.data.vocab import Vocabulary, tokenize
from textreid.fileio import atomic_write_bytes

GENERATOR = "textreid.data.synth"
FORMAT_VERSION = 1
IMAGE_FOLDER = "synth"  # under imgs/, like the real data's CUHK01/, Market/ ...
JPEG_QUALITY = 90
_OUR_NAMES = ("annotations", "imgs", "reid_raw.json", "clip_vocab_vit.npy", "preview.jpg")


def generate(out_dir: str | Path, num_ids: int = 1000, seed: int = 0, *, images_per_id: int = 4,
             image_size: tuple[int, int] = (192, 64), val_fraction: float = 0.1, test_fraction: float = 0.1,
             workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Write a synthetic pedestrian dataset to ``out_dir`` (both layouts); return a summary dict."""
    t_start = time.perf_counter()
    sizes = split_sizes(num_ids, val_fraction, test_fraction)
    h, w, workers = _check_arguments(images_per_id, image_size, workers)
    out = Path(out_dir)
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)

    persons = make_persons(seed, sizes)
    # An interrupted re-run must not leave the previous, complete-looking annotations in place.
    for stale in [out / "annotations" / f"{s}.json" for s in SPLITS] + [out / "reid_raw.json"]:
        stale.unlink(missing_ok=True)
    _write_json(out / "attributes.json", {
        "generator": GENERATOR, "format": FORMAT_VERSION, "seed": seed, "num_ids": num_ids,
        "images_per_id": images_per_id, "image_size": [h, w], "attribute_keys": list(ATTRIBUTE_KEYS),
        "persons": persons}, indent=1)

    width = max(5, len(str(num_ids - 1)))  # digits of the person id in file names
    tasks = [(seed, p, images_per_id, (h, w), str(out / "imgs"), width) for p in persons]
    results = _run_tasks(tasks, workers=workers, progress=progress, images_per_id=images_per_id)
    records = [{"image_id": p["id"] * images_per_id + r["image_index"], "id": p["id"], "split": p["split"], **r}
               for p, res in zip(persons, results, strict=True) for r in res]
    _remove_stale_images(out, records)

    vocab = build_vocabulary([c for r in records if r["split"] == "train" for c in r["captions"]])
    buf = io.BytesIO()
    np.save(buf, word_vectors(vocab))
    atomic_write_bytes(out / "clip_vocab_vit.npy", buf.getvalue(), durable=False)
    _write_json(out / "reid_raw.json", [
        {"split": r["split"], "id": r["id"], "file_path": r["file_path"], "captions": r["captions"],
         "processed_tokens": [tokenize(c) for c in r["captions"]]} for r in records])
    _make_preview(out, persons, records, images_per_id, (h, w))
    captions = _write_annotations(out, records, Vocabulary(vocab))

    return {"out_dir": str(out), "seed": seed, "num_ids": num_ids, "images_per_id": images_per_id,
            "image_size": [h, w],
            "splits": {s: {"ids": sizes[s], "images": sizes[s] * images_per_id, "captions": captions[s]}
                       for s in SPLITS},
            "vocab_size": len(vocab),
            "siblings": sum(p["sibling_of"] is not None for p in persons),
            "seconds": round(time.perf_counter() - t_start, 2)}


def _check_arguments(images_per_id: int, image_size: tuple[int, int], workers: int | None) -> tuple[int, int, int]:
    """Validated (height, width, workers); errors name the argument."""
    if images_per_id < 1:
        raise ValueError(f"images_per_id must be at least 1, got {images_per_id}")
    h, w = (int(v) for v in image_size)
    if h < 32 or w < 12:
        raise ValueError(f"image_size is (height, width) and must be at least (32, 12), got {tuple(image_size)}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return h, w, workers


def _write_json(path: Path, obj: Any, indent: int | None = None) -> None:
    # not durable: thousands of small files; atomic is what keeps a killed run from leaving half a file
    atomic_write_bytes(path, json.dumps(obj, ensure_ascii=False, indent=indent).encode("utf-8"), durable=False)


def _check_out_dir(out: Path) -> None:
    """Refuse to write over a dataset that this generator did not make (e.g. a real CUHK-PEDES copy)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir {out} exists and is not a folder")
    found = [n for n in _OUR_NAMES if (out / n).exists()]
    if not found:
        return
    marker = out / "attributes.json"
    try:
        ours = json.loads(marker.read_text(encoding="utf-8")).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise FileExistsError(
            f"{out} already holds {', '.join(found)} but no attributes.json written by {GENERATOR}; "
            "it looks like a dataset this generator did not make. Pass an empty or new folder, "
            "or delete that folder yourself if it is disposable."
        )


def _render_task(task: tuple[int, dict[str, Any], int, tuple[int, int], str, int]) -> list[dict[str, Any]]:
    """Worker: draw, save and caption every image of one person."""
    seed, person, images_per_id, image_size, img_root, width = task
    out = []
    for k in range(images_per_id):
        view = view_of(person, k)
        rel = f"{IMAGE_FOLDER}/cam_{'ab'[k % 2]}/p{person['id']:0{width}d}_{k:02d}.jpg"
        img = render_image(person, view, seed=seed, image_index=k, image_size=image_size)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
        atomic_write_bytes(Path(img_root) / rel, buf.getvalue(), durable=False)
        out.append({"image_index": k, "file_path": rel, "view": view,
                    "captions": make_captions(person, view, seed=seed, image_index=k)})
    return out


def _run_tasks(tasks: list[tuple], *, workers: int, progress: bool, images_per_id: int) -> list[list[dict[str, Any]]]:
    """``_render_task`` over ``tasks`` in order, in a process pool when ``workers`` > 1."""
    results: list[list[dict[str, Any]]] = []
    n_workers = min(workers, len(tasks))
    total = len(tasks) * images_per_id
    if n_workers <= 1:
        with tqdm(total=total, disable=not progress, desc="synth", unit="img") as bar:
            for t in tasks:
                results.append(_render_task(t))
                bar.update(images_per_id)
        return results
    # fork where it exists: workers then need not re-import textreid.data (which pulls in torch);
    # they only use numpy and PIL. The pool starts before tqdm's monitor thread exists.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(n_workers) as pool, tqdm(total=total, disable=not progress, desc="synth", unit="img") as bar:
        chunk = max(1, len(tasks) // (n_workers * 16))
        for res in pool.imap(_render_task, tasks, chunksize=chunk):
            results.append(res)
            bar.update(images_per_id)
    return results


def _remove_stale_images(out: Path, records: list[dict[str, Any]]) -> None:
    """Delete images of a previous, larger run and temp files of a killed one."""
    expected = {r["file_path"] for r in records}
    for cam_dir in (out / "imgs" / IMAGE_FOLDER).glob("cam_*"):
        for f in cam_dir.iterdir():
            rel = f"{IMAGE_FOLDER}/{cam_dir.name}/{f.name}"
            if rel not in expected and (re.fullmatch(r"p\d+_\d+\.jpg", f.name) or ".tmp" in f.name):
                f.unlink()


def _write_annotations(out: Path, records: list[dict[str, Any]], vocab: Vocabulary) -> dict[str, int]:
    """The authors' layout, one entry per caption with its word ids (``onehot``); returns captions per split."""
    counts = {}
    for split in SPLITS:
        entries = [{"image_id": r["image_id"], "id": r["id"], "file_path": r["file_path"], "sentence": c,
                    "onehot": vocab.encode(c)}
                   for r in records if r["split"] == split for c in r["captions"]]
        _write_json(out / "annotations" / f"{split}.json", {"annotations": entries})
        counts[split] = len(entries)
    return counts


def _make_preview(out: Path, persons: list[dict[str, Any]], records: list[dict[str, Any]],
                  images_per_id: int, image_size: tuple[int, int]) -> None:
    """Contact sheet: up to 8 persons (sibling pairs first) x their first 6 images."""
    by_id = {p["id"]: p for p in persons}
    chosen: list[int] = []
    for p in persons:
        if p["split"] == "train" and p["sibling_of"] is not None and len(chosen) < 6:
            for pid in (p["sibling_of"], p["id"]):
                if pid not in chosen:
                    chosen.append(pid)
    for p in persons:
        if len(chosen) >= 8:
            break
        if p["id"] not in chosen:
            chosen.append(p["id"])
    chosen = chosen[:8]
    h, w = image_size
    cols = min(images_per_id, 6)
    label_w, gap = 44, 2
    sheet = Image.new("RGB", (label_w + cols * (w + gap), len(chosen) * (h + gap)), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    paths = {(r["id"], r["image_index"]): r["file_path"] for r in records}
    for row, pid in enumerate(chosen):
        y = row * (h + gap)
        d.text((3, y + 3), f"id {pid}", fill=(0, 0, 0), font=font)
        sib = by_id[pid]["sibling_of"]
        if sib is not None:
            d.text((3, y + 16), f"~{sib}", fill=(160, 0, 0), font=font)
        for k in range(cols):
            with Image.open(out / "imgs" / paths[(pid, k)]) as im:
                sheet.paste(im.convert("RGB"), (label_w + k * (w + gap), y))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=JPEG_QUALITY)
    atomic_write_bytes(out / "preview.jpg", buf.getvalue(), durable=False)
