"""Dataset readers: every supported file layout → ``list[Record]``, one record per caption.

Dataset names in configs are ``<dataset>_<split>`` (``cuhkpedes_train``, ``rstpreid_test``).
The registry ``DATASETS`` maps each dataset to its default folder ``<root>/datasets/<folder>``
and its layout:

* ``authors``: the TextReID authors' pre-processed files, ``annotations/{split}.json`` =
  ``{"annotations": [{"image_id", "id", "file_path", "sentence", "onehot"}, ...]}`` (one entry
  per caption, ``file_path`` relative to ``imgs/``) and ``clip_vocab_vit.npy`` [V, 512]; records
  carry ``word_ids = onehot``.
* ``per_image``: one JSON list of per-image entries ``{"split", "id", "file_path" | "img_path",
  "captions": [str, ...]}`` (``reid_raw.json``, ``ICFG-PEDES.json``, ``data_captions.json``);
  extra keys such as ``processed_tokens`` are ignored. Image ids are assigned per unique file
  path, in first-seen order within the split.
* ``custom``: the user's own file (``DATASETS.ANNOTATIONS``), JSON Lines, CSV or a JSON list of
  objects with keys/columns ``image`` (path relative to the file's folder, or absolute),
  ``person_id`` (any string or integer), ``caption`` and optional ``split`` (default ``train``)::

      {"image": "imgs/0001_a.jpg", "person_id": "alice", "caption": "a woman in a red coat"}

      image,person_id,caption,split
      imgs/0001_a.jpg,alice,a woman in a red coat,train

Person ids: the instance loss needs training labels 0..N-1, so ids of ``per_image`` and
``custom`` data are remapped per split to 0..N-1 in sorted order of the original ids (numeric
order for integers and digit strings, then the other strings). The authors' layout keeps its
ids, except a train split whose ids are not exactly 0..N-1, which is remapped the same way.
``load_split`` returns the label → original id mapping.

Relative ``dataset_dir`` and ``annotations`` paths are taken relative to ``root``.
Files are validated while read: every defect becomes a ``Problem`` naming the file and the
entry index; ``read_split`` (strict) raises ``DataError`` listing them, ``scan_split`` returns
them and keeps only the entries without problems. Images are checked for existence only
(``data/check.py`` opens them).

Statistics of the public datasets (for orientation; the files are not shipped):

====================  =========================================================================
cuhkpedes             train 11,003 ids / 34,054 images / 68,120 captions; val 1,000 ids /
                      3,078 images / 6,158 captions; test 1,000 ids / 3,074 images / 6,156 captions
icfgpedes             train 3,102 ids / 34,674 images; test 1,000 ids / 19,848 images; one caption
                      per image; no val split (``icfgpedes_val`` reads as empty)
rstpreid              train 3,701 ids / 18,505 images; val 200 / 1,000; test 200 / 1,000;
                      two captions per image
====================  =========================================================================
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textreid.data.records import DataError, Problem, Record

SPLITS = ("train", "val", "test")
WORD_TABLE_FILE = "clip_vocab_vit.npy"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives and how its files are laid out."""

    name: str
    folder: str  # default folder under <root>/datasets/ ("" = folder of the annotations file)
    layout: str  # "authors" | "per_image" | "custom"
    annotation_file: str = ""  # per_image: the JSON list's file name
    path_key: str = "file_path"  # per_image: key of the image path in an entry
    splits: tuple[str, ...] = SPLITS  # splits the public release has
    description: str = ""


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("cuhkpedes", "cuhkpedes", "authors",
                    description="CUHK-PEDES, the TextReID authors' pre-processed layout"),
        DatasetSpec("cuhkpedes_raw", "cuhkpedes", "per_image", "reid_raw.json",
                    description="CUHK-PEDES, the original reid_raw.json"),
        DatasetSpec("icfgpedes", "icfgpedes", "per_image", "ICFG-PEDES.json", splits=("train", "test"),
                    description="ICFG-PEDES (train/test only)"),
        DatasetSpec("rstpreid", "rstpreid", "per_image", "data_captions.json", path_key="img_path",
                    description="RSTPReid"),
        DatasetSpec("synth", "synth", "authors",
                    description="synthetic pedestrians (data/synth/), authors' layout"),
        DatasetSpec("synth_raw", "synth", "per_image", "reid_raw.json",
                    description="synthetic pedestrians (data/synth/), reid_raw.json"),
        DatasetSpec("custom", "", "custom",
                    description="your own JSONL/CSV file given as DATASETS.ANNOTATIONS"),
    )
}


@dataclass
class Split:
    """Everything read for one ``<dataset>_<split>``."""

    name: str  # e.g. "cuhkpedes_train"
    dataset: str
    split: str
    records: list[Record]  # entries without problems only
    problems: list[Problem]
    files: list[Path]  # annotation files read
    original_ids: dict[int, int | str] = field(default_factory=dict)  # person label -> source id


# --------------------------------------------------------------------------- names and paths
def parse_dataset_name(name: str) -> tuple[str, str]:
    """``"cuhkpedes_raw_train"`` → ``("cuhkpedes_raw", "train")``; errors list the valid names."""
    dataset, sep, split = name.rpartition("_")
    if not sep or split not in SPLITS:
        raise DataError(
            f"dataset name {name!r} should be <dataset>_<split> with split one of "
            f"{', '.join(SPLITS)} (e.g. cuhkpedes_train); datasets: {', '.join(DATASETS)}"
        )
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r} (in {name!r}); valid datasets: {', '.join(DATASETS)}")
    return dataset, split


def _spec(name: str) -> DatasetSpec:
    """The spec of a dataset given as ``cuhkpedes`` or ``cuhkpedes_train``."""
    return DATASETS[name] if name in DATASETS else DATASETS[parse_dataset_name(name)[0]]


def _under_root(path: str | Path, root: str | Path) -> Path:
    p = Path(path).expanduser()
    return (p if p.is_absolute() else Path(root).expanduser() / p).absolute()


def annotations_path(annotations: str | Path, root: str | Path = ".") -> Path:
    """The custom layout's annotation file (relative paths are taken relative to ``root``)."""
    if not str(annotations):
        raise DataError(
            "dataset 'custom' needs an annotation file: set DATASETS.ANNOTATIONS to a .jsonl, .csv or "
            ".json file with keys image, person_id, caption[, split]"
        )
    return _under_root(annotations, root)


def _folder(name: str, root: str | Path, override: str | Path, annotations: str | Path) -> Path:
    spec = _spec(name)
    if spec.layout == "custom":
        return annotations_path(annotations, root).parent
    if str(override):
        return _under_root(override, root)
    return _under_root(Path("datasets") / spec.folder, root)


def dataset_dir(
    name: str, root: str | Path = ".", dataset_dir: str | Path = "", annotations: str | Path = ""
) -> Path:
    """The folder of a dataset: ``dataset_dir`` if given, else ``<root>/datasets/<folder>``.

    For ``custom`` it is the folder of the annotation file.
    """
    return _folder(name, root, dataset_dir, annotations)


def word_table_path(name: str, root: str | Path = ".", dataset_dir: str | Path = "") -> Path | None:
    """The authors' ``clip_vocab_vit.npy`` of an authors'-layout dataset, if the file exists."""
    if _spec(name).layout != "authors":
        return None
    path = _folder(name, root, dataset_dir, "") / WORD_TABLE_FILE
    return path if path.is_file() else None


# --------------------------------------------------------------------------- small helpers
_BAD = object()  # marks a value that failed validation


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {int: "int", str: "str", list: "list", dict: "object", float: "float"}
    if isinstance(types, tuple):
        return " or ".join(names.get(t, t.__name__) for t in types)
    return names.get(types, types.__name__)


def _found(value: Any) -> str:
    if value is None:
        return "null"
    kind = {dict: "object", list: "list", str: "str", bool: "bool", int: "int", float: "float"}
    return f"{kind.get(type(value), type(value).__name__)} {_short(value)}"


def _get(entry: dict, key: str, types: type | tuple[type, ...], report: Callable[[str], None]) -> Any:
    """``entry[key]`` if present with the right type (bool is not an int), else report and _BAD."""
    if key not in entry:
        present = ", ".join(map(str, entry)) or "none"
        report(f"missing key {key!r} (keys present: {present})")
        return _BAD
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, types):
        report(f"key {key!r} should be {_type_name(types)}, found {_found(value)}")
        return _BAD
    return value


def _load_json(path: Path, problems: list[Problem], hint: str = "") -> tuple[bool, Any]:
    """(True, data) or (False, None) after recording why the file cannot be used."""
    if not path.is_file():
        problems.append(Problem(str(path), None, "file not found" + (f" ({hint})" if hint else "")))
        return False, None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.append(Problem(str(path), None, f"not UTF-8 text (bad byte at offset {exc.start})"))
        return False, None
    except OSError as exc:
        problems.append(Problem(str(path), None, f"cannot be read: {exc}"))
        return False, None
    try:
        return True, json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(
            Problem(str(path), None, f"not valid JSON at line {exc.lineno}, column {exc.colno}: "
                    f"{exc.msg} (truncated or partly downloaded file?)")
        )
        return False, None


def _word_table_rows(path: Path, problems: list[Problem]) -> int | None:
    """Number of rows of a .npy word table, read from its header only."""
    try:
        shape = np.load(path, mmap_mode="r").shape
    except Exception as exc:  # numpy raises EOFError, ValueError, OSError, UnpicklingError...
        problems.append(Problem(str(path), None, f"cannot read the word table: {exc}"))
        return None
    if len(shape) != 2:
        problems.append(Problem(str(path), None, f"word table should be 2-D [V, D], found shape {shape}"))
        return None
    return int(shape[0])


def _id_sort_key(value: int | str) -> tuple[int, int, str]:
    """Integers and digit strings in numeric order, then other strings alphabetically."""
    if isinstance(value, int):
        return (0, value, "")
    text = value.strip()
    if text.lstrip("-").isdigit():
        return (0, int(text), value)
    return (1, 0, value)


@dataclass(slots=True)
class _Row:
    """One caption before validation across entries (image ids, existence, id remapping)."""

    index: int  # entry index in the source file
    path: Path  # absolute image path
    person: int | str  # person id as in the file
    image_key: int | None  # authors' image_id; None = assign per path
    caption: str
    word_ids: tuple[int, ...] | None = None


# --------------------------------------------------------------------------- layouts
def _read_authors(folder: Path, split: str, problems: list[Problem], files: list[Path]) -> list[_Row]:
    file = folder / "annotations" / f"{split}.json"
    files.append(file)
    ok, data = _load_json(
        file, problems,
        f"the authors' layout expects {folder}/annotations/{{train,val,test}}.json and {folder}/imgs/",
    )
    if not ok:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        found = (f"an object with keys {', '.join(map(str, data))}" if isinstance(data, dict)
                 else _found(data))
        problems.append(Problem(str(file), None,
                                f'expected {{"annotations": [...]}} at the top level, found {found}'))
        return []
    table = folder / WORD_TABLE_FILE
    vocab_size = _word_table_rows(table, problems) if table.is_file() else None
    imgs = folder / "imgs"
    rows: list[_Row] = []
    for i, entry in enumerate(data["annotations"]):
        errors: list[str] = []
        if not isinstance(entry, dict):
            problems.append(Problem(str(file), i, f"entry should be an object, found {_found(entry)}"))
            continue
        image_id = _get(entry, "image_id", int, errors.append)
        person = _get(entry, "id", int, errors.append)
        rel = _get(entry, "file_path", str, errors.append)
        sentence = _get(entry, "sentence", str, errors.append)
        onehot = _get(entry, "onehot", list, errors.append)
        if rel is not _BAD and not rel.strip():
            errors.append("empty 'file_path'")
        if sentence is not _BAD and not sentence.strip():
            errors.append("empty caption ('sentence')")
        if onehot is not _BAD:
            errors += _onehot_errors(onehot, vocab_size, table)
        if errors:
            problems.extend(Problem(str(file), i, e) for e in errors)
            continue
        rows.append(_Row(i, imgs / rel, person, image_id, sentence, tuple(onehot)))
    return rows


def _onehot_errors(onehot: list, vocab_size: int | None, table: Path) -> list[str]:
    if not onehot:
        return ["empty 'onehot' list"]
    for pos, v in enumerate(onehot):
        if isinstance(v, bool) or not isinstance(v, int):
            return [f"'onehot' should be a list of int, found {_found(v)} at position {pos}"]
    low, high = min(onehot), max(onehot)
    if low < 0:
        return [f"'onehot' id {low} at position {onehot.index(low)} is negative"]
    if vocab_size is not None and high >= vocab_size:
        return [f"'onehot' id {high} at position {onehot.index(high)} is out of range of the word "
                f"table {table} ({vocab_size} rows)"]
    return []


def _read_per_image(
    spec: DatasetSpec, folder: Path, split: str, problems: list[Problem], files: list[Path]
) -> list[_Row]:
    file = folder / spec.annotation_file
    files.append(file)
    ok, data = _load_json(
        file, problems,
        f"dataset {spec.name!r} expects {file} (a JSON list of per-image entries) and {folder}/imgs/",
    )
    if not ok:
        return []
    if not isinstance(data, list):
        hint = ("; this looks like the authors' layout (annotations/<split>.json)"
                if isinstance(data, dict) and "annotations" in data else "")
        problems.append(Problem(str(file), None,
                                f"expected a JSON list of per-image entries, found {_found(data)}{hint}"))
        return []
    imgs = folder / "imgs"
    rows: list[_Row] = []
    for i, entry in enumerate(data):
        errors: list[str] = []
        if not isinstance(entry, dict):
            problems.append(Problem(str(file), i, f"entry should be an object, found {_found(entry)}"))
            continue
        entry_split = _get(entry, "split", str, errors.append)
        if entry_split is not _BAD and entry_split not in SPLITS:
            errors.append(f"'split' should be one of {', '.join(SPLITS)}, found {entry_split!r}")
        if errors:
            problems.extend(Problem(str(file), i, e) for e in errors)
            continue
        if entry_split != split:
            continue
        person = _get(entry, "id", (int, str), errors.append)
        rel = _get(entry, spec.path_key, str, errors.append)
        captions = _get(entry, "captions", list, errors.append)
        if person is not _BAD and isinstance(person, str) and not person.strip():
            errors.append("empty 'id'")
        if rel is not _BAD and not rel.strip():
            errors.append(f"empty {spec.path_key!r}")
        if captions is not _BAD and not captions:
            errors.append("'captions' is an empty list")
        if errors:
            problems.extend(Problem(str(file), i, e) for e in errors)
            continue
        for j, caption in enumerate(captions):
            if not isinstance(caption, str):
                problems.append(Problem(str(file), i, f"caption {j} should be str, found {_found(caption)}"))
            elif not caption.strip():
                problems.append(Problem(str(file), i, f"caption {j} is empty"))
            else:
                rows.append(_Row(i, imgs / rel, person, None, caption))
    return rows


def _custom_entries(file: Path, problems: list[Problem]) -> list[tuple[str, Any, str]]:
    """(location, entry, parse error or "") of a JSONL/CSV/JSON file; location = "line N"."""
    suffix = file.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv", ".json"):
        problems.append(Problem(str(file), None,
                                f"unsupported annotation file type {suffix!r}: use .jsonl, .csv or .json"))
        return []
    if suffix == ".json":
        ok, data = _load_json(file, problems)
        if not ok:
            return []
        if not isinstance(data, list):
            problems.append(Problem(str(file), None, f"expected a JSON list of objects, found {_found(data)}"))
            return []
        return [("", e, "") for e in data]
    if not file.is_file():
        problems.append(Problem(str(file), None, "file not found (set DATASETS.ANNOTATIONS)"))
        return []
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(file), None, f"cannot be read as UTF-8 text: {exc}"))
        return []
    entries: list[tuple[str, Any, str]] = []
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        columns = reader.fieldnames or []
        missing = [c for c in ("image", "person_id", "caption") if c not in columns]
        if missing:
            problems.append(Problem(str(file), None, f"missing column(s) {', '.join(missing)} in the header "
                                    f"(found: {', '.join(columns) or 'no header'})"))
            return []
        for row in reader:
            if None in row:
                entries.append((f"line {reader.line_num}", None, "more fields than header columns"))
                continue
            entries.append((f"line {reader.line_num}", {k: v for k, v in row.items() if v is not None}, ""))
        return entries
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append((f"line {lineno}", json.loads(line), ""))
        except json.JSONDecodeError as exc:
            entries.append((f"line {lineno}", None, f"not valid JSON at column {exc.colno}: {exc.msg}"))
    return entries


def _read_custom(file: Path, split: str, problems: list[Problem], files: list[Path]) -> list[_Row]:
    files.append(file)
    rows: list[_Row] = []
    for i, (where, entry, parse_error) in enumerate(_custom_entries(file, problems)):
        prefix = f"{where}: " if where else ""
        errors: list[str] = []
        if parse_error:
            problems.append(Problem(str(file), i, prefix + parse_error))
            continue
        if not isinstance(entry, dict):
            problems.append(Problem(str(file), i, f"{prefix}entry should be an object, found {_found(entry)}"))
            continue
        image = _get(entry, "image", str, errors.append)
        person = _get(entry, "person_id", (int, str), errors.append)
        caption = _get(entry, "caption", str, errors.append)
        entry_split = entry.get("split") or "train"
        if not isinstance(entry_split, str) or entry_split not in SPLITS:
            errors.append(f"'split' should be one of {', '.join(SPLITS)}, found {_short(entry_split)}")
        if image is not _BAD and not image.strip():
            errors.append("empty 'image'")
        if person is not _BAD and isinstance(person, str) and not person.strip():
            errors.append("empty 'person_id'")
        if caption is not _BAD and not caption.strip():
            errors.append("empty caption")
        if errors:
            problems.extend(Problem(str(file), i, prefix + e) for e in errors)
            continue
        if entry_split != split:
            continue
        path = Path(image).expanduser()
        path = path if path.is_absolute() else file.parent / path
        # ids 7 and "7" name the same person (CSV only has strings)
        rows.append(_Row(i, path.absolute(), str(person), None, caption))
    return rows


# --------------------------------------------------------------------------- shared checks
def _finish(
    rows: list[_Row], *, file: Path, split: str, remap: str, imgs_dir: Path | None, problems: list[Problem]
) -> tuple[list[Record], dict[int, int | str]]:
    """Cross-entry checks, image ids, person-id remapping → records of the entries without problems.

    ``remap``: "always" (per split), "if_needed" (only when ids are not 0..N-1) or "never".
    """
    bad: set[int] = set()  # positions in ``rows``
    if imgs_dir is not None and rows and not imgs_dir.is_dir():
        problems.append(Problem(str(imgs_dir), None, f"image folder not found ({len(rows)} captions refer to it)"))
        return [], {}

    # one image = one person and one path: conflicting duplicates are reported at the later entry
    first: dict[Any, tuple[int | str, Path, int]] = {}
    for pos, row in enumerate(rows):
        key = row.image_key if row.image_key is not None else row.path
        seen = first.setdefault(key, (row.person, row.path, row.index))
        what = f"image_id {key}" if row.image_key is not None else f"image {row.path}"
        if seen[0] != row.person:
            problems.append(Problem(str(file), row.index, f"{what} has person id {_short(row.person)} here "
                                    f"but {_short(seen[0])} at entry {seen[2]}"))
            bad.add(pos)
        elif seen[1] != row.path:
            problems.append(Problem(str(file), row.index, f"image_id {key} has file path {str(row.path)!r} "
                                    f"here but {str(seen[1])!r} at entry {seen[2]}"))
            bad.add(pos)

    exists: dict[Path, bool] = {}
    for pos, row in enumerate(rows):
        if row.path not in exists:
            exists[row.path] = os.path.isfile(row.path)
            if not exists[row.path]:
                problems.append(Problem(str(file), row.index, f"image file not found: {row.path}"))
        if not exists[row.path]:
            bad.add(pos)

    kept = [row for pos, row in enumerate(rows) if pos not in bad]
    originals = sorted({row.person for row in kept}, key=_id_sort_key)
    if remap == "never" or (remap == "if_needed" and originals == list(range(len(originals)))):
        label = {p: p for p in originals}
    else:
        label = {p: i for i, p in enumerate(originals)}
    image_ids: dict[Path, int] = {}
    records = []
    for row in kept:
        image_id = row.image_key if row.image_key is not None else image_ids.setdefault(row.path, len(image_ids))
        records.append(Record(row.path, int(label[row.person]), image_id, row.caption, split,
                              row.word_ids, row.index))
    return records, {int(v): k for k, v in label.items()}


# --------------------------------------------------------------------------- public API
def load_split(
    name: str,
    *,
    root: str | Path = ".",
    dataset_dir: str | Path = "",
    annotations: str | Path = "",
) -> Split:
    """Read and validate one ``<dataset>_<split>``; problems are collected, never raised.

    ``dataset_dir`` overrides ``<root>/datasets/<folder>``; ``annotations`` is the custom layout's
    file. Entries with problems are left out of ``records``.
    """
    dataset, split = parse_dataset_name(name)
    spec = DATASETS[dataset]
    problems: list[Problem] = []
    files: list[Path] = []
    if spec.layout == "custom":
        file = annotations_path(annotations, root)
        rows = _read_custom(file, split, problems, files)
        imgs_dir, remap = None, "always"
    else:
        folder = _folder(dataset, root, dataset_dir, "")
        if spec.layout == "authors":
            rows = _read_authors(folder, split, problems, files)
            remap = "if_needed" if split == "train" else "never"
        else:
            rows = _read_per_image(spec, folder, split, problems, files)
            remap = "always"
        imgs_dir = folder / "imgs"
    records, original_ids = _finish(rows, file=files[0], split=split, remap=remap, imgs_dir=imgs_dir,
                                    problems=problems)
    problems.sort(key=lambda p: (p.file, -1 if p.index is None else p.index))  # stable: file order
    return Split(name, dataset, split, records, problems, files, original_ids)


def scan_split(
    name: str,
    *,
    root: str | Path = ".",
    dataset_dir: str | Path = "",
    annotations: str | Path = "",
) -> tuple[list[Record], list[Problem]]:
    """Records of the valid entries and the problems found (nothing raised for bad entries)."""
    result = load_split(name, root=root, dataset_dir=dataset_dir, annotations=annotations)
    return result.records, result.problems


def read_split(
    name: str,
    *,
    root: str | Path = ".",
    dataset_dir: str | Path = "",
    annotations: str | Path = "",
    strict: bool = True,
) -> list[Record]:
    """Records of one ``<dataset>_<split>``; with ``strict`` any problem raises ``DataError``.

    Without ``strict`` the entries with problems are skipped silently.
    """
    result = load_split(name, root=root, dataset_dir=dataset_dir, annotations=annotations)
    if strict and result.problems:
        raise DataError.from_problems(name, result.problems)
    return result.records
