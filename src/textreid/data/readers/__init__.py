"""Dataset readers: every supported file layout → ``list[Record]``, one record per caption.

Modules: ``registry`` (dataset names, folders), ``entries`` (field checks, cross-entry checks),
``layouts`` (the authors' and the per-image files), ``custom`` (JSONL / CSV / JSON of your own).

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

  One CSV row per line: a quoted field must end on its line, so an unterminated quote is
  reported at its line and the following rows are still read.

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

from pathlib import Path

from textreid.data.readers.custom import read_custom
from textreid.data.readers.entries import finish
from textreid.data.readers.layouts import read_authors, read_per_image
from textreid.data.readers.registry import (
    DATASETS,
    SPLITS,
    WORD_TABLE_FILE,
    DatasetSpec,
    Split,
    annotations_path,
    dataset_dir,
    folder_of,
    parse_dataset_name,
    word_table_path,
)
from textreid.data.records import DataError, Problem, Record

__all__ = [
    "DATASETS", "SPLITS", "WORD_TABLE_FILE", "DatasetSpec", "Split", "annotations_path", "dataset_dir",
    "load_split", "parse_dataset_name", "read_split", "scan_split", "word_table_path",
]


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
        rows = read_custom(file, split, problems, files)
        imgs_dir, remap = None, "always"
    else:
        folder = folder_of(dataset, root, dataset_dir, "")
        if spec.layout == "authors":
            rows = read_authors(folder, split, problems, files)
            remap = "if_needed" if split == "train" else "never"
        else:
            rows = read_per_image(spec, folder, split, problems, files)
            remap = "always"
        imgs_dir = folder / "imgs"
    records, original_ids = finish(rows, file=files[0], split=split, remap=remap, imgs_dir=imgs_dir,
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
