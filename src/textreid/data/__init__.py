"""Data layer: dataset files → records → tensors → batches (see docs/ARCHITECTURE.md)."""

from textreid.data.check import CheckReport, check_datasets
from textreid.data.loaders import (
    CaptionDataset,
    EvalLoaders,
    GalleryImage,
    ImageDataset,
    TextDataset,
    TrainLoader,
    build_eval_loaders,
    build_train_loader,
    collate,
    gallery_and_queries,
)
from textreid.data.readers import (
    DATASETS,
    SPLITS,
    DatasetSpec,
    Split,
    dataset_dir,
    load_split,
    parse_dataset_name,
    read_split,
    scan_split,
    word_table_path,
)
from textreid.data.records import DataError, Problem, Record
from textreid.data.sampler import IdentitySampler
from textreid.data.text import ClipTokenizer, WordTokenizer, build_tokenizer
from textreid.data.transforms import build_transforms
from textreid.data.vocab import Vocabulary, tokenize

__all__ = [
    "DATASETS", "SPLITS", "CaptionDataset", "CheckReport", "ClipTokenizer", "DataError", "DatasetSpec",
    "EvalLoaders", "GalleryImage", "IdentitySampler", "ImageDataset", "Problem", "Record", "Split",
    "TextDataset", "TrainLoader", "Vocabulary", "WordTokenizer", "build_eval_loaders", "build_tokenizer",
    "build_train_loader", "build_transforms", "check_datasets", "collate", "dataset_dir",
    "gallery_and_queries", "load_split", "parse_dataset_name", "read_split", "scan_split", "tokenize",
    "word_table_path",
]
