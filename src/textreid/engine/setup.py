"""From a Config to what a run needs: records per split, vocabulary, tokenizer, word table, model.

This is the config edge of the engine: it turns configuration into explicit arguments for the
data layer and the model builder, so train, test, vocab and the demo share one path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textreid.config import Config, pixel_stats
from textreid.data.noise import noisy_records
from textreid.data.preprocess import Preprocess, image_spec
from textreid.data.readers import DATASETS, parse_dataset_name, read_split
from textreid.data.readers import dataset_dir as resolve_dataset_dir
from textreid.data.records import Record
from textreid.data.vocab import Vocabulary
from textreid.models.build import build_model, tokenizer_kind

log = logging.getLogger("textreid")

VOCAB_FILE = "vocab.json"  # a vocabulary built by `textreid vocab` (or from the training captions)
TABLE_FILE = "vocab_vectors.npy"  # its CLIP word vectors, row i = word i of vocab.json
AUTHORS_TABLE_FILE = "clip_vocab_vit.npy"  # the authors' table, rows = their `onehot` ids


@dataclass
class RunData:
    """Everything data-side that a run needs, resolved once."""

    train: list[Record]
    val: list[Record]
    test: list[Record]
    preprocess: Preprocess  # tokenizer, vocabulary, shipped-ids decision, image transforms
    word_table: np.ndarray | None
    num_classes: int
    vocab_size: int

    @property
    def vocab(self) -> Vocabulary | None:
        return self.preprocess.vocab

    @property
    def tokenizer(self):
        """A fresh tokenizer of the spec."""
        return self.preprocess.text_tokenizer()


def read_splits(cfg: Config, names: list[str], strict: bool = True) -> list[Record]:
    """All records of the named splits (e.g. ["cuhkpedes_train"]) under the configured root."""
    records: list[Record] = []
    for name in names:
        records.extend(read_split(name, root=cfg.root, dataset_dir=cfg.datasets.dir,
                                  annotations=cfg.datasets.annotations, strict=strict))
    return records


def val_names(cfg: Config) -> list[str]:
    """Validation splits; "auto" means <train dataset>_val for each training dataset whose release has
    a val split (ICFG-PEDES has none). `train` and `data check` both read these."""
    names = []
    for name in cfg.datasets.val:
        if name != "auto":
            names.append(name)
            continue
        for train_name in cfg.datasets.train:
            dataset, _ = parse_dataset_name(train_name)
            if "val" in DATASETS[dataset].splits:
                names.append(f"{dataset}_val")
    return list(dict.fromkeys(names))


def dataset_folder(cfg: Config, name: str) -> Path:
    """The folder of a dataset split name under the configured root."""
    return Path(resolve_dataset_dir(name, root=cfg.root, dataset_dir=cfg.datasets.dir))


def resolve_vocab(cfg: Config, train: list[Record], shipped_ids: bool) -> Vocabulary:
    """The word vocabulary: recovered from the authors' ids, read from vocab.json, or built."""
    if shipped_ids:
        size = 1 + max((max(r.word_ids) for r in train if r.word_ids), default=0)
        table = word_table_path(cfg, shipped_ids)
        if table is not None and table.is_file():
            size = max(size, int(np.load(table, mmap_mode="r").shape[0]))
        return Vocabulary.from_aligned([r.caption for r in train], [r.word_ids for r in train], size)
    vocab_file = dataset_folder(cfg, cfg.datasets.train[0]) / VOCAB_FILE
    if vocab_file.is_file():
        return Vocabulary.load(vocab_file)
    if cfg.model.gru.onehot.lower() != "yes":
        raise FileNotFoundError(
            f"{vocab_file} not found: MODEL.GRU.ONEHOT {cfg.model.gru.onehot!r} needs a word vocabulary and its "
            f"vector table. Build both with: textreid vocab --clip CLIP.pt --config-file ... --root {cfg.root}; "
            f"or set MODEL.GRU.ONEHOT yes for a learned word embedding.")
    return Vocabulary.build([r.caption for r in train])


def word_table_path(cfg: Config, shipped_ids: bool) -> Path | None:
    """Where the frozen word-vector table lives (None for a learned embedding or CLIP BPE).

    MODEL.GRU.WORD_TABLE wins; else the authors' ``clip_vocab_vit.npy`` when the records carry their
    word ids, or the ``vocab_vectors.npy`` that ``textreid vocab`` wrote beside ``vocab.json``.
    """
    if tokenizer_kind(cfg) != "words" or cfg.model.gru.onehot.lower() == "yes":
        return None
    if cfg.model.gru.word_table:
        path = Path(cfg.model.gru.word_table)
        return path if path.is_absolute() else Path(cfg.root) / path
    return dataset_folder(cfg, cfg.datasets.train[0]) / (AUTHORS_TABLE_FILE if shipped_ids else TABLE_FILE)


def load_word_table(path: str, *, onehot: str) -> np.ndarray | None:
    """The word-vector table as float32 [V, E] ("" = none); a missing file fails with its path."""
    if not path:
        return None
    table_file = Path(path)
    if not table_file.is_file():
        raise FileNotFoundError(
            f"word-vector table {table_file} not found (MODEL.GRU.ONEHOT {onehot!r}). The authors' "
            f"CUHK-PEDES ships it as {AUTHORS_TABLE_FILE}; for other data run `textreid vocab --clip CLIP.pt "
            f"...` (writes {VOCAB_FILE} + {TABLE_FILE}), or set MODEL.GRU.ONEHOT yes for a learned embedding.")
    table = np.load(table_file).astype(np.float32)
    if table.ndim != 2:
        raise ValueError(f"{table_file}: expected a [V, D] word table, found shape {table.shape}")
    return table


def _image_spec(cfg: Config):
    mean, std = pixel_stats(cfg)
    i = cfg.input
    return image_spec(height=i.height, width=i.width, mean=mean, std=std, padding=i.padding, augment=i.use_aug,
                      erase_fill=i.erase_fill)


def build_preprocess(cfg: Config, train: list[Record]) -> Preprocess:
    """The one decision of how captions and images become tensors, from the config and the training records.

    Shipped word ids (the authors' ``onehot``) feed the BiGRU when DATASETS.USE_ONEHOT and every
    training record carries them; the vocabulary then indexes their table. Otherwise captions are
    tokenised with vocab.json or a vocabulary built from the training captions, for every split.
    """
    kind = tokenizer_kind(cfg)
    words = kind == "words"
    shipped = words and cfg.datasets.use_onehot and bool(train) and all(r.word_ids is not None for r in train)
    table = word_table_path(cfg, shipped)
    return Preprocess(
        tokenizer=kind,
        image=_image_spec(cfg),
        vocab=resolve_vocab(cfg, train, shipped) if words else None,
        shipped_ids=shipped,
        max_words=cfg.model.gru.max_length,
        context_length=cfg.model.text_transformer.context_length,
        word_table=str(table) if table is not None else "",
    )


def prepare_data(cfg: Config, *, splits: tuple[str, ...] = ("val", "test")) -> RunData:
    """Read the training split (+ ``splits``) and decide the preprocessing (vocabulary, word table, ...)."""
    train = read_splits(cfg, cfg.datasets.train)
    if not train:
        raise ValueError(f"DATASETS.TRAIN {cfg.datasets.train} has no records")
    d = cfg.datasets
    if d.noise_file or d.noise_rate:  # noisy correspondences (RDE's settings)
        train, clean = noisy_records(train, noise_file=d.noise_file, rate=d.noise_rate, seed=d.noise_seed)
        log.info("noisy correspondences: %d of %d training captions describe another person", (~clean).sum(), len(train))
    val = read_splits(cfg, val_names(cfg)) if "val" in splits else []
    test = read_splits(cfg, cfg.datasets.test) if "test" in splits else []
    spec = build_preprocess(cfg, train)
    table = load_word_table(spec.word_table, onehot=cfg.model.gru.onehot)
    num_classes = len({r.person_id for r in train})
    vocab = spec.vocab
    if cfg.model.gru.onehot.lower() == "yes":
        vocab_size = max(cfg.model.gru.vocabulary_size, len(vocab) if vocab else 0)
    else:
        vocab_size = len(vocab) if vocab else 0
    return RunData(train, val, test, spec, table, num_classes, vocab_size)


def build_model_for_training(cfg: Config, data: RunData):
    """The model of ``cfg``: towers from MODEL.PRETRAINED, or everything from the MODEL.WEIGHT checkpoint."""
    if cfg.model.num_classes and cfg.model.num_classes != data.num_classes:
        log.warning("MODEL.NUM_CLASSES is %d but the training split has %d identities; the classifier gets %d",
                    cfg.model.num_classes, data.num_classes, data.num_classes)

    weights = initial_weights_path(cfg)
    model = build_model(cfg, num_classes=data.num_classes, vocab_size=data.vocab_size, word_table=data.word_table,
                        load_pretrained=weights is None)
    if weights is not None:
        load_initial_weights(model, weights)
    return model


def initial_weights_path(cfg: Config) -> Path | None:
    """MODEL.WEIGHT as the authors use it: "imagenet"/"clip"/"" = start from MODEL.PRETRAINED, else a
    checkpoint (ours or their best.pth) to start training from; relative paths are under ROOT."""
    if cfg.model.weight.lower() in ("", "imagenet", "clip"):
        return None
    path = Path(cfg.model.weight)
    path = path if path.is_absolute() else Path(cfg.root) / path
    if not path.is_file():
        raise FileNotFoundError(f"MODEL.WEIGHT {cfg.model.weight!r}: checkpoint {path} not found (use 'imagenet' "
                                f"to start from MODEL.PRETRAINED)")
    return path


def load_initial_weights(model, path: str | Path) -> list[str]:
    """Copy a checkpoint's weights into ``model`` before training (fine-tuning).

    Entries whose shape differs (e.g. the identity classifier of another number of persons, a queue of
    another length) keep their fresh initialisation; their names are returned and logged. The frozen
    word-vector tables are never taken from the file: they belong to this run's vocabulary (another
    dataset may have the same words in another order), not to what was learnt.
    """
    from textreid.models.checkpoint import (
        convert_authors_state_dict,
        detect_authors_head,
        is_authors_checkpoint,
        load_checkpoint,
    )
    from textreid.models.recipe_weights import is_recipe_layout
    from textreid.models.state_dict import diff_state_dicts, strip_prefix

    ckpt = load_checkpoint(path)
    if is_authors_checkpoint(ckpt):
        source = convert_authors_state_dict(ckpt["model"], head=detect_authors_head(ckpt["model"]))
    else:
        source = ckpt["model"]
    if is_recipe_layout(strip_prefix(source)):
        raise ValueError(f"MODEL.WEIGHT {path}: a checkpoint in IRRA's/RDE's layout (base_model.*); give it as "
                         f"MODEL.PRETRAINED (and leave MODEL.WEIGHT at 'imagenet'), which maps their keys")
    target = model.state_dict()
    diff = diff_state_dicts(target, source)
    if any(not k.endswith("word_table") for k in diff.missing):
        raise ValueError(f"{path}: does not fit this model, missing {diff.missing[:8]} (check MODEL.* against the run "
                         f"that wrote it)")
    own = [k for k in target if k.endswith("word_table")]
    skipped = [k for k in diff.wrong_shape_keys if k not in own]
    model.load_state_dict({k: v for k, v in source.items() if k in target and k not in skipped and k not in own},
                          strict=False)
    log.info("initialised from %s%s%s", path, f"; kept fresh (shape differs): {', '.join(skipped)}" if skipped else "",
             f"; word tables from this run's vocabulary: {', '.join(own)}" if own else "")
    return skipped


def preprocess_from_checkpoint(ckpt: dict, cfg: Config, *, source: str) -> Preprocess:
    """The spec stored in our checkpoint; for files written before it was stored, rebuilt from their config and
    vocabulary (a vocabulary without <pad>/<unk> was recovered from shipped ids, so those were used)."""
    if ckpt.get("preprocess") is not None:
        return Preprocess.from_dict(ckpt["preprocess"], source=source)
    vocab = Vocabulary.from_dict(ckpt["vocab"], source=f"{source} (vocab)") if ckpt.get("vocab") else None
    kind = tokenizer_kind(cfg)
    return Preprocess(
        tokenizer=kind,
        image=_image_spec(cfg),
        vocab=vocab if kind == "words" else None,
        shipped_ids=kind == "words" and vocab is not None and vocab.pad_id is None and cfg.datasets.use_onehot,
        max_words=cfg.model.gru.max_length,
        context_length=cfg.model.text_transformer.context_length,
    )


def load_authors_model(cfg: Config, checkpoint: str | Path | dict, *, splits: tuple[str, ...] = ("test",)):
    """The authors' ``best.pth`` in a model built from their YAML, plus the run's data.

    Their file holds weights only: the word table comes from the dataset folder and the word
    vocabulary is recovered from their annotations (so free text can be encoded too). The identity
    classifier takes its size from the file (it plays no part in evaluation), whatever
    MODEL.NUM_CLASSES or the training split say.
    """
    from textreid.models.checkpoint import (
        convert_authors_state_dict,
        detect_authors_head,
        load_authors_checkpoint,
        load_checkpoint,
    )

    ckpt = load_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    data = prepare_data(cfg, splits=splits)
    converted = convert_authors_state_dict(ckpt, head=detect_authors_head(ckpt))
    classes = converted["projection"].shape[1] if "projection" in converted else data.num_classes
    model = build_model(cfg, num_classes=classes, vocab_size=data.vocab_size, word_table=data.word_table,
                        load_pretrained=False)
    load_authors_checkpoint(model, ckpt)
    return model.eval(), data


def convert_authors_checkpoint(cfg: Config, checkpoint_file: str | Path, out: str | Path) -> Path:
    """Write the authors' ``best.pth`` as our self-describing checkpoint (for textreid.load / search)."""
    from textreid.config import to_dict
    from textreid.models.checkpoint import is_authors_checkpoint, load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(checkpoint_file)
    if not is_authors_checkpoint(ckpt):
        raise ValueError(f"{checkpoint_file} is not in the authors' layout (no visual_model.* / embed_model.* keys)")
    model, data = load_authors_model(cfg, ckpt, splits=())
    return save_checkpoint(Path(out), model=model, config=to_dict(cfg), preprocess=data.preprocess,
                           extra={"num_classes": model.num_classes, "converted_from": str(checkpoint_file),
                                  "epoch": ckpt.get("epoch"), "iteration": ckpt.get("iteration")})


def load_model_for_eval(cfg: Config, checkpoint_file: str | Path, *, device: str, split: str = "test"):
    """Model + data (records of ``split`` and the preprocessing spec) for evaluating a checkpoint.

    Our checkpoints carry their own model config, preprocessing spec and word table; the command-line
    config only says where the data are. The authors' files are read with their YAML.
    """
    from textreid.api import load
    from textreid.models.checkpoint import is_authors_checkpoint, load_checkpoint

    ckpt = load_checkpoint(checkpoint_file)
    if is_authors_checkpoint(ckpt):
        model, data = load_authors_model(cfg, ckpt, splits=(split,))
        model.to(device)
    else:
        del ckpt
        encoder = load(checkpoint_file, device=device)
        model = encoder.model
        names = cfg.datasets.test if split == "test" else val_names(cfg)
        records = read_splits(cfg, names)
        data = RunData(train=[], val=records if split == "val" else [], test=records if split == "test" else [],
                       preprocess=encoder.preprocess, word_table=None, num_classes=model.num_classes, vocab_size=0)
    return model.eval(), data
