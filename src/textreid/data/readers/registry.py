"""Dataset names (``<dataset>_<split>``), the registry of layouts, and where each dataset lives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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


def folder_of(name: str, root: str | Path, override: str | Path, annotations: str | Path) -> Path:
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
    return folder_of(name, root, dataset_dir, annotations)


def word_table_path(name: str, root: str | Path = ".", dataset_dir: str | Path = "") -> Path | None:
    """The authors' ``clip_vocab_vit.npy`` of an authors'-layout dataset, if the file exists."""
    if _spec(name).layout != "authors":
        return None
    path = folder_of(name, root, dataset_dir, "") / WORD_TABLE_FILE
    return path if path.is_file() else None

