"""Typed configuration: dataclasses, YAML loading (the authors' UPPER_CASE files too) and overrides.

This module and ``cli.py`` are the only places that know about configuration. Everything else
takes explicit keyword arguments; ``to_dict``/``from_dict`` make a config self-describing inside
checkpoints.

Keys are matched case-insensitively, so ``SOLVER.BASE_LR`` (the authors' yacs spelling) and
``solver.base_lr`` name the same field. An unknown key fails with the nearest valid keys.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the authors' default (their torchvision ResNet-50 baseline)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_TOWERS = ("resnet50", "resnet101")  # image towers whose pixel statistics default to ImageNet's

# string keys whose values are names: matched case-insensitively (stored lower-case); a tuple lists
# the valid values
ENUM_KEYS: dict[str, tuple[str, ...] | None] = {
    "reproduce": ("ours", "authors"),
    "model.gru.onehot": None,
    "dataloader.sampler": ("balanced", "authors"),
    "input.erase_fill": ("zero", "mean"),
    "test.amp": ("auto", "bf16", "fp16", "off"),
}  # SOLVER.* names and EMBED_HEAD are checked with their exact spelling by config_problems

PACKAGED_CONFIGS = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A configuration file or override that cannot be applied; the message names the key."""


# --------------------------------------------------------------------------- model
@dataclass
class GRUConfig:
    onehot: str = "yes"  # word vectors: "yes" = learned embedding; "clip_vit" = frozen per-word table
    embedding_size: int = 512  # GRU input width (word-vector width after the optional linear layer)
    num_units: int = 512  # GRU hidden size per direction (output is 2x this)
    vocabulary_size: int = 12000  # learned embedding: number of words; table: its width (authors' quirk)
    dropout_keep_prob: float = 1.0  # authors' name; dropout between GRU layers = 1 - this
    max_length: int = 100  # captions are truncated to this many words
    num_layer: int = 1  # GRU layers
    word_table: str = ""  # .npy [V, E] word-vector table; "" = <dataset dir>/clip_vocab_vit.npy
    exact_max: bool = False  # True: max over valid steps only; False: authors' max(0, max_t h_t) quirk
    batch_max: bool = False  # True: the authors' exact batch-dependent max over zero-padded outputs (REPRODUCE authors)


@dataclass
class ResNetConfig:
    res5_stride: int = 2  # stride of the last stage (paper: 1 -> 24x8 map at 384x128)
    res5_dilation: int = 1  # kept for the authors' files; only 1 is supported
    pretrained: str = ""  # authors' key; alias of MODEL.PRETRAINED when set
    layers: list[int] = field(default_factory=list)  # blocks per stage; [] = the named model's
    width: int = 0  # CLIP ResNet stem width; 0 = the named model's (RN50/RN101: 64)
    output_dim: int = 0  # attention-pool output dim; 0 = the named model's (RN50: 1024, RN101: 512)
    heads: int = 0  # attention-pool heads; 0 = the named model's


@dataclass
class ViTConfig:
    patch_size: int = 0  # 0 = the named model's (ViT-B/16: 16)
    width: int = 0  # transformer width; 0 = the named model's
    layers: int = 0  # transformer depth; 0 = the named model's
    heads: int = 0  # attention heads; 0 = the named model's
    output_dim: int = 0  # projection dim; 0 = the named model's
    stride: int = 0  # patch-embedding stride; 0 = patch_size (no overlap), < patch_size overlaps


@dataclass
class TextTransformerConfig:
    context_length: int = 77  # CLIP BPE tokens per caption (longer captions are truncated)
    width: int = 0  # 0 = the CLIP model's
    layers: int = 0  # 0 = the CLIP model's
    heads: int = 0  # 0 = the CLIP model's
    output_dim: int = 0  # text projection dim; 0 = the CLIP model's
    vocab_size: int = 49408  # CLIP BPE vocabulary


@dataclass
class EmbeddingConfig:
    embed_head: str = "simple"  # "simple" (instance + global alignment) or "moco"
    feature_size: int = 256  # joint embedding dim; 0 = no embedding layers (the towers' outputs, IRRA/RDE)
    dropout_prob: float = 0.0  # dropout before the embedding layers
    epsilon: float = 0.1  # label smoothing of the instance loss


@dataclass
class MocoConfig:
    k: int = 2048  # queue length; must be a multiple of the (global) batch size
    m: float = 0.999  # momentum of the key encoders
    fc: bool = False  # separate 2-layer MLP projections for the contrastive branch
    temperature: float = 0.07  # InfoNCE temperature


@dataclass
class LossConfig:
    instance: float = 1.0  # identity classification with label smoothing
    global_align: float = 1.0  # the paper's global alignment loss
    infonce: float = 1.0  # momentum-queue InfoNCE (moco head only)
    sdm: float = 0.0  # similarity distribution matching (IRRA)
    itc: float = 0.0  # CLIP-style in-batch contrastive loss
    sdm_temperature: float = 0.02  # SDM / ITC logit temperature
    id: float = 0.0  # IRRA's identity loss (linear classifier, mean of the two cross-entropies)
    mlm: float = 0.0  # IRRA's implicit relation reasoning (masked-token prediction through the image)
    tal: float = 0.0  # RDE's triplet alignment loss on the global embeddings
    tse: float = 0.0  # RDE's triplet alignment loss on the token-selection embeddings


@dataclass
class IRRAConfig:
    cmt_depth: int = 4  # layers of the cross-modal transformer (training only)
    mask_prob: float = 0.15  # share of caption tokens to predict; of those 80% masked, 10% random, 10% kept


@dataclass
class RDEConfig:
    select_ratio: float = 0.3  # share of tokens the token-selection branch keeps (by class/EOT attention)
    tse_dim: int = 1024  # width of the token-selection embedding
    tau: float = 0.015  # triplet alignment loss temperature
    margin: float = 0.1  # triplet alignment loss margin
    retrieval_weight: float = 0.5  # test-time similarity = (1 - w) global + w token-selection
    text_aug: bool = True  # perturb training captions: 20% of tokens masked / replaced / deleted


@dataclass
class ModelConfig:
    device: str = "cpu"  # authors' key, ignored: the device is chosen on the command line
    visual_model: str = "m_resnet50"  # registry name of the image tower
    textual_model: str = "bigru"  # registry name of the text tower
    num_classes: int = 0  # identities of the training split; 0 = read from the data
    freeze: bool = False  # freeze both towers (only the heads train)
    weight: str = "imagenet"  # authors' key; "imagenet"/"clip" mean "load MODEL.PRETRAINED"
    pretrained: str = ""  # weight file; "" = where the authors' code reads it (ROOT/pretrained/...); "none" = random
    reinit_linear: bool = False  # moco head only: the authors' defect, re-init every nn.Linear after loading
    recipe: str = "textreid"  # training recipe: "textreid" (the paper), "irra" or "rde"
    gru: GRUConfig = field(default_factory=GRUConfig)
    resnet: ResNetConfig = field(default_factory=ResNetConfig)
    vit: ViTConfig = field(default_factory=ViTConfig)
    text_transformer: TextTransformerConfig = field(default_factory=TextTransformerConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    moco: MocoConfig = field(default_factory=MocoConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    irra: IRRAConfig = field(default_factory=IRRAConfig)
    rde: RDEConfig = field(default_factory=RDEConfig)


# --------------------------------------------------------------------------- data
@dataclass
class InputConfig:
    height: int = 384  # image height fed to the visual tower
    width: int = 128  # image width
    pixel_mean: list[float] = field(default_factory=list)  # [] = the tower family's (CLIP's, or ImageNet's)
    pixel_std: list[float] = field(default_factory=list)  # [] = the tower family's
    padding: int = 10  # pad before the random crop (training)
    use_aug: bool = True  # flip + pad/crop + random erasing during training
    erase_fill: str = "zero"  # random-erasing fill: "zero" (= the mean after normalising) or "mean" (authors')


@dataclass
class DatasetsConfig:
    train: list[str] = field(default_factory=lambda: ["cuhkpedes_train"])  # <dataset>_<split>
    val: list[str] = field(default_factory=lambda: ["auto"])  # model selection; "auto" = <train>_val if any; [] = none
    test: list[str] = field(default_factory=lambda: ["cuhkpedes_test"])  # reported once at the end
    use_onehot: bool = True  # authors' layout: use the shipped `onehot` word ids
    dir: str = ""  # dataset folder; "" = <root>/datasets/<dataset folder name>
    annotations: str = ""  # custom layout: JSONL/CSV file of (image path, person id, caption)
    noise_file: str = ""  # RDE's noise index .npy: training record i gets the caption of record file[i]
    noise_rate: float = 0.0  # else: shuffle this share of training captions among themselves ...
    noise_seed: int = 0  # ... with this seed


@dataclass
class DivisionConfig:
    enabled: bool = False  # RDE's consensus clean-pair division before every epoch (any model)
    start_epoch: int = 0  # epochs trained on every pair before the first division
    tau: float = 0.015  # per-pair triplet alignment loss used to rank pairs (as RDE's)
    margin: float = 0.1
    gmm_max_iter: int = 10  # two-component GaussianMixture on the min-max scaled losses
    gmm_tol: float = 0.01
    gmm_reg_covar: float = 0.0005
    batch_size: int = 0  # pairs per loss batch; 0 = SOLVER.IMS_PER_BATCH


@dataclass
class DataloaderConfig:
    num_workers: int = 4  # loader processes (0 = load in the main process)
    ims_per_id: int = 4  # K captions per identity in a batch (P = batch / K identities)
    sampler: str = "balanced"  # "balanced": every caption once per epoch; "authors": their floor(n/K) groups


@dataclass
class SolverConfig:
    ims_per_batch: int = 128  # global batch size (split across processes)
    num_epochs: int = 80
    checkpoint_period: int = 40  # epochs between periodic checkpoints (best and last always kept)
    evaluate_period: int = 1  # epochs between validations
    optimizer: str = "Adam"  # "Adam", "AdamW" or "SGD"
    base_lr: float = 1e-4
    bias_lr_factor: float = 2.0  # biases get this times the lr ...
    weight_decay: float = 4e-5
    weight_decay_bias: float = 0.0  # ... and this weight decay
    adam_alpha: float = 0.9  # Adam beta1 (authors' name)
    adam_beta: float = 0.999  # Adam beta2
    adam_eps: float = 1e-8  # Adam/AdamW epsilon (IRRA and RDE: 1e-3)
    lr_factor: float = 1.0  # lr multiplier of the recipe's freshly initialised modules (IRRA/RDE: 5)
    sgd_momentum: float = 0.9
    lrscheduler: str = "step"  # "step" or "cosine"
    warmup_factor: float = 0.1  # lr starts at this times base_lr ...
    warmup_epochs: int = 5  # ... and rises linearly over this many epochs
    warmup_method: str = "linear"  # "linear" or "constant"
    gamma: float = 0.1  # step decay factor
    steps: list[int] = field(default_factory=lambda: [40, 70])  # epochs at which lr *= gamma
    power: float = 0.9  # authors' key (poly schedule), unused
    target_lr: float = 0.0  # cosine schedule floor
    amp: str = "auto"  # "auto" (bf16 on GPU, fp32 on CPU), "bf16", "fp16" or "off"
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping
    seed: int = 0  # seeds python, numpy and torch; the sampler derives its order from it
    deterministic: bool = False  # deterministic algorithms (bit-exact resume on CPU)
    sync_bn: bool = False  # SyncBatchNorm under torch.distributed
    channels_last: bool = True  # NHWC images + conv weights (oneDNN on CPU: ~2x faster training)


@dataclass
class TestConfig:
    ims_per_batch: int = 128  # evaluation batch size
    rerank: bool = False  # add the authors' Jaccard re-ranking term
    rerank_k: int = 5  # neighbours in the re-ranking sets
    rerank_alpha: float = 0.05  # weight of the Jaccard term
    amp: str = "off"  # evaluation precision: "off" (fp32, default on every device), "auto", "bf16", "fp16"
    every_epoch: bool = False  # also evaluate TEST after every epoch (the authors' protocol: selection on test)


@dataclass
class Config:
    root: str = "./"  # data live under <root>/datasets/
    output_dir: str = "output"  # checkpoints, logs, metrics
    dtype: str = "float32"  # authors' key, unused
    amp_verbose: bool = False  # authors' key, unused
    reproduce: str = "ours"  # "authors": their exact training (sampler, erasing fill, re-init, caption cap, fp32)
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    datasets: DatasetsConfig = field(default_factory=DatasetsConfig)
    dataloader: DataloaderConfig = field(default_factory=DataloaderConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    test: TestConfig = field(default_factory=TestConfig)
    division: DivisionConfig = field(default_factory=DivisionConfig)


# --------------------------------------------------------------------------- loading
def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts/lists (lower-case keys), e.g. for a checkpoint."""
    return dataclasses.asdict(cfg)


def valid_keys(cfg: Any | None = None, prefix: str = "") -> list[str]:
    """Every dotted key a file or override may set, in lower case."""
    cfg = Config() if cfg is None else cfg
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys.extend(valid_keys(value, prefix + f.name + "."))
        else:
            keys.append(prefix + f.name)
    return keys


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key.lower(), valid_keys(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(k.upper() for k in close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _parse_scalar(text: str) -> Any:
    """A command-line or YAML string value: YAML first, then Python literals like ``(40, 70)``."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str) and value.strip()[:1] in "([{":
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    return value


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert ``value`` to the field's declared type or raise ConfigError naming ``key``."""
    origin = typing.get_origin(annotation)
    if isinstance(value, str) and annotation is not str:
        value = _parse_scalar(value)
    try:
        if origin is list:
            (item_type,) = typing.get_args(annotation)
            if isinstance(value, (str, int, float)):
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return [_coerce(key, v, item_type) for v in value]
        if annotation is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
                return value.lower() in ("true", "yes")
            raise TypeError
        if annotation is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if annotation is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if annotation is str:
            if isinstance(value, (dict, list)):
                raise TypeError
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        pass
    else:
        raise ConfigError(f"config key {key!r}: unsupported type {annotation!r}")
    type_name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"config key {key.upper()!r} expects {type_name}, got {value!r}")


def _enum(dotted_key: str, value: Any) -> Any:
    """Names (ENUM_KEYS) lower-cased and checked, so ``ONEHOT YES`` and ``yes`` take the same path."""
    key = dotted_key.lower()
    if key not in ENUM_KEYS or not isinstance(value, str):
        return value
    value = value.lower()
    if key == "model.gru.onehot" and value in ("true", "false"):  # unquoted YAML yes/no became a bool
        value = "yes" if value == "true" else "no"
    valid = ENUM_KEYS[key]
    if valid is not None and value not in valid:
        raise ConfigError(f"config key {dotted_key.upper()} = {value!r}: valid values are {', '.join(valid)}")
    return value


def set_value(cfg: Config, dotted_key: str, value: Any) -> None:
    """Set one dotted key (any case) on ``cfg`` with type checking."""
    node: Any = cfg
    parts = dotted_key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(type(node))
        name = part.lower()
        if name not in hints:
            raise _unknown(dotted_key)
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(node, name)):
                if not isinstance(value, dict):
                    raise ConfigError(f"config key {dotted_key!r} is a section, got {value!r}")
                merge_dict(cfg, value, prefix=".".join(parts) + ".")
                return
            setattr(node, name, _enum(dotted_key, _coerce(dotted_key, value, hints[name])))
            return
        node = getattr(node, name)
        if not dataclasses.is_dataclass(node):
            raise _unknown(dotted_key)


def merge_dict(cfg: Config, data: dict[str, Any], prefix: str = "") -> Config:
    """Merge nested dicts (UPPER or lower case keys) into ``cfg``."""
    for key, value in data.items():
        dotted = prefix + str(key)
        if isinstance(value, dict):
            node: Any = cfg
            for part in dotted.split("."):
                name = part.lower()
                if not dataclasses.is_dataclass(node) or name not in typing.get_type_hints(type(node)):
                    raise _unknown(dotted)
                node = getattr(node, name)
            if dataclasses.is_dataclass(node):
                merge_dict(cfg, value, prefix=dotted + ".")
                continue
        set_value(cfg, dotted, value)
    return cfg


def resolve_config_path(path: str | Path) -> Path:
    """A config path as given, or the name of a packaged config (``cuhkpedes/moco_...``)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    for name in (str(path), str(path) + ".yaml"):
        packaged = PACKAGED_CONFIGS / name
        if packaged.is_file():
            return packaged
    raise ConfigError(
        f"config file {str(path)!r} not found (neither a file nor a packaged config under "
        f"{PACKAGED_CONFIGS}; packaged: {', '.join(list_packaged_configs())})"
    )


def list_packaged_configs() -> list[str]:
    """Names of the configs shipped with the package, e.g. ``cuhkpedes/moco_gru_cliprn50...``."""
    return sorted(str(p.relative_to(PACKAGED_CONFIGS).with_suffix("")) for p in PACKAGED_CONFIGS.rglob("*.yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then ``KEY VALUE`` override pairs."""
    cfg = Config()
    if path is not None:
        resolved = resolve_config_path(path)
        try:
            data = yaml.safe_load(resolved.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{resolved}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{resolved}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            merge_dict(cfg, data)
        except ConfigError as exc:
            raise ConfigError(f"{resolved}: {exc}") from exc
    apply_overrides(cfg, overrides or [])
    return resolve(cfg)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``["SOLVER.BASE_LR", "2e-4", ...]`` pairs (the authors' ``opts`` style)."""
    if len(overrides) % 2:
        raise ConfigError(f"overrides come in KEY VALUE pairs; got an odd list: {overrides}")
    for key, value in zip(overrides[::2], overrides[1::2], strict=True):
        set_value(cfg, key, value)
    return cfg


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from ``to_dict`` output (e.g. stored in a checkpoint)."""
    return resolve(merge_dict(Config(), data))


AUTHORS_CAPTION_CAP = 105  # word ids per caption in the authors' training data (their dataset's pad length)


def reproduction_settings(cfg: Config) -> dict[str, Any]:
    """What ``REPRODUCE authors`` sets: each key restores one behaviour of the authors' code."""
    return {
        "dataloader.sampler": "authors",  # max(1, floor(n/K)) groups per id, padding by repetition
        "input.erase_fill": "mean",  # random erasing filled with the un-normalised pixel mean
        "model.reinit_linear": cfg.model.embedding.embed_head == "moco",  # their moco head re-inits every Linear
        "model.gru.max_length": AUTHORS_CAPTION_CAP,
        "model.gru.batch_max": True,  # their max over the batch's zero-padded GRU outputs
        "solver.amp": "off",  # fp32 training
        "test.amp": "off",  # fp32 evaluation
        "test.every_epoch": True,  # test Rank-1 every epoch; its maximum is what they reported
    }


def pixel_stats(cfg: Config) -> tuple[list[float], list[float]]:
    """INPUT.PIXEL_MEAN / PIXEL_STD, or the tower family's when unset: ImageNet's for torchvision
    ResNets (the authors' defaults), CLIP's for CLIP towers."""
    torchvision = cfg.model.visual_model.lower() in TORCHVISION_TOWERS
    mean = list(cfg.input.pixel_mean) or list(IMAGENET_MEAN if torchvision else CLIP_MEAN)
    std = list(cfg.input.pixel_std) or list(IMAGENET_STD if torchvision else CLIP_STD)
    return mean, std


def resolve(cfg: Config) -> Config:
    """Fill what depends on other keys: pixel statistics of the tower family; REPRODUCE authors."""
    cfg.input.pixel_mean, cfg.input.pixel_std = pixel_stats(cfg)
    if cfg.reproduce == "authors":
        for key, value in reproduction_settings(cfg).items():
            set_value(cfg, key, value)
    return cfg


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML (UPPER_CASE keys, readable by ``load_config``)."""

    def upper(node: Any) -> Any:
        if isinstance(node, dict):
            return {k.upper(): upper(v) for k, v in node.items()}
        return node

    return yaml.safe_dump(upper(to_dict(cfg)), sort_keys=False)


# --------------------------------------------------------------------------- validation
def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


_CHOICES = {  # key -> valid values (exact spelling; SOLVER.OPTIMIZER in any case, as build_optimizer reads it)
    "solver.optimizer": ("Adam", "AdamW", "SGD"),
    "solver.lrscheduler": ("step", "cosine"),
    "solver.warmup_method": ("linear", "constant"),
    "solver.amp": ("auto", "bf16", "fp16", "off"),
    "model.embedding.embed_head": ("simple", "moco"),
    "model.recipe": ("textreid", "irra", "rde"),
}

# key -> (is the value acceptable, what is expected, needed only for training)
_RULES: dict[str, tuple[typing.Callable[[Any], bool], str, bool]] = {
    "input.height": (lambda v: v >= 1, "an integer >= 1", False),
    "input.width": (lambda v: v >= 1, "an integer >= 1", False),
    "input.pixel_mean": (lambda v: len(v) == 3 and all(map(_finite, v)), "3 finite numbers", False),
    "input.pixel_std": (lambda v: len(v) == 3 and all(_finite(x) and x > 0 for x in v), "3 numbers > 0", False),
    "input.padding": (lambda v: v >= 0, "an integer >= 0", True),
    "dataloader.num_workers": (lambda v: v >= 0, "an integer >= 0 (0 = load in the main process)", False),
    "dataloader.ims_per_id": (lambda v: v >= 1, "an integer >= 1", True),
    "test.ims_per_batch": (lambda v: v >= 1, "an integer >= 1", False),
    "test.rerank_k": (lambda v: v >= 1, "an integer >= 1", False),
    "test.rerank_alpha": (lambda v: _finite(v) and v >= 0, "a finite number >= 0", False),
    "model.num_classes": (lambda v: v >= 0, "an integer >= 0 (0 = read from the data)", True),
    "model.embedding.feature_size": (lambda v: v >= 0, "an integer >= 0 (0 = no embedding layers)", True),
    "model.embedding.dropout_prob": (lambda v: 0 <= v < 1, "a number in [0, 1)", True),
    "model.embedding.epsilon": (lambda v: 0 <= v < 1, "a number in [0, 1)", True),
    "model.gru.max_length": (lambda v: v >= 1, "an integer >= 1", False),
    "model.gru.num_units": (lambda v: v >= 1, "an integer >= 1", True),
    "model.gru.num_layer": (lambda v: v >= 1, "an integer >= 1", True),
    "model.gru.dropout_keep_prob": (lambda v: 0 < v <= 1, "a number in (0, 1]", True),
    "model.moco.k": (lambda v: v >= 1, "an integer >= 1", True),
    "model.moco.m": (lambda v: 0 <= v <= 1, "a number in [0, 1]", True),
    "model.moco.temperature": (lambda v: _finite(v) and v > 0, "a finite number > 0", True),
    "model.losses.sdm_temperature": (lambda v: _finite(v) and v > 0, "a finite number > 0", True),
    "solver.ims_per_batch": (lambda v: v >= 1, "an integer >= 1", True),
    "solver.num_epochs": (lambda v: v >= 1, "an integer >= 1", True),
    "solver.checkpoint_period": (lambda v: v >= 0, "an integer >= 0 (0 = none)", True),
    "solver.evaluate_period": (lambda v: v >= 1, "an integer >= 1", True),
    "solver.base_lr": (lambda v: _finite(v) and v > 0, "a finite number > 0", True),
    "solver.bias_lr_factor": (lambda v: _finite(v) and v > 0, "a finite number > 0", True),
    "solver.weight_decay": (lambda v: _finite(v) and v >= 0, "a finite number >= 0", True),
    "solver.weight_decay_bias": (lambda v: _finite(v) and v >= 0, "a finite number >= 0", True),
    "solver.adam_alpha": (lambda v: 0 <= v < 1, "a number in [0, 1)", True),
    "solver.adam_beta": (lambda v: 0 <= v < 1, "a number in [0, 1)", True),
    "solver.sgd_momentum": (lambda v: _finite(v) and v >= 0, "a finite number >= 0", True),
    "solver.warmup_factor": (lambda v: _finite(v) and v > 0, "a finite number > 0", True),
    "solver.warmup_epochs": (lambda v: v >= 0, "an integer >= 0", True),
    "solver.gamma": (lambda v: _finite(v) and v > 0, "a finite number > 0", True),
    "solver.steps": (lambda v: all(s >= 0 for s in v), "epochs >= 0", True),
    "solver.target_lr": (lambda v: _finite(v) and v >= 0, "a finite number >= 0", True),
    "solver.grad_clip": (lambda v: _finite(v) and v >= 0, "a finite number >= 0 (0 = no clipping)", True),
    "solver.seed": (lambda v: v >= 0, "an integer >= 0", True),
}


def _value(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def config_problems(cfg: Config, *, training: bool = True, world_size: int = 1) -> list[str]:
    """Values that are certainly wrong, each naming its key and value (empty = fine).

    Only what can be decided from the configuration alone; ``training=False`` skips the keys
    that only training reads (evaluation and indexing take the model from the checkpoint).
    """
    problems = []
    for key, (ok, expected, train_only) in _RULES.items():
        if train_only and not training:
            continue
        value = _value(cfg, key)
        if not ok(value):  # NaN fails every comparison
            problems.append(f"{key.upper()} = {value!r}: expected {expected}")
    for key, choices in _CHOICES.items():
        value = _value(cfg, key)
        valid = {c.lower() for c in choices} if key == "solver.optimizer" else set(choices)
        spelled = str(value).lower() if key == "solver.optimizer" else value
        if (training or key == "solver.amp") and spelled not in valid:
            problems.append(f"{key.upper()} = {value!r}: expected one of {', '.join(choices)}")
    return problems + (_training_problems(cfg, world_size) if training and not problems else [])


def _training_problems(cfg: Config, world_size: int) -> list[str]:
    """Relations between keys that make training impossible (the per-key checks passed)."""
    s, k = cfg.solver, cfg.dataloader.ims_per_id
    problems = []
    if s.ims_per_batch % k:
        problems.append(f"SOLVER.IMS_PER_BATCH = {s.ims_per_batch} is not a multiple of DATALOADER.IMS_PER_ID = {k} "
                        f"(a batch is P identities x {k} captions)")
    elif (s.ims_per_batch // k) % world_size:
        problems.append(f"SOLVER.IMS_PER_BATCH = {s.ims_per_batch} gives {s.ims_per_batch // k} identities per batch, "
                        f"which do not split across {world_size} processes; use a multiple of {k * world_size}")
    if cfg.model.embedding.embed_head.lower() == "moco" and cfg.model.moco.k % s.ims_per_batch:
        problems.append(f"MODEL.MOCO.K = {cfg.model.moco.k} is not a multiple of SOLVER.IMS_PER_BATCH = "
                        f"{s.ims_per_batch} (the queue takes one global batch per step)")
    weights = {f.name: getattr(cfg.model.losses, f.name) for f in dataclasses.fields(cfg.model.losses)
               if "temperature" not in f.name and isinstance(getattr(cfg.model.losses, f.name), (int, float))}
    bad = {n: w for n, w in weights.items() if not (_finite(w) and w >= 0)}
    problems += [f"MODEL.LOSSES.{n.upper()} = {w!r}: expected a finite number >= 0" for n, w in bad.items()]
    if not bad and not any(weights.values()):
        problems.append("MODEL.LOSSES: every loss weight is 0, so there is nothing to train")
    return problems


def validate_config(cfg: Config, *, training: bool = True, world_size: int = 1) -> Config:
    """Refuse a configuration with certainly wrong values (ConfigError naming each key and value)."""
    problems = config_problems(cfg, training=training, world_size=world_size)
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg
