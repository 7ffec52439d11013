"""Typed configuration: dataclasses, YAML loading (the authors' UPPER_CASE files too) and overrides.

This package and ``cli.py`` are the only places that know about configuration. Everything else
takes explicit keyword arguments; ``to_dict``/``from_dict`` make a config self-describing inside
checkpoints.

Keys are matched case-insensitively, so ``SOLVER.BASE_LR`` (the authors' yacs spelling) and
``solver.base_lr`` name the same field. An unknown key fails with the nearest valid keys.

- ``schema.py``: the tree of dataclasses and their defaults;
- ``loading.py``: files, overrides, checkpoint dicts, keys that depend on other keys;
- ``validation.py``: values that are certainly wrong.
"""

from textreid.config.loading import (
    AUTHORS_CAPTION_CAP,
    apply_overrides,
    dump_yaml,
    from_dict,
    list_packaged_configs,
    load_config,
    merge_dict,
    pixel_stats,
    reproduction_settings,
    resolve,
    resolve_config_path,
    set_value,
    to_dict,
    valid_keys,
)
from textreid.config.schema import (
    CLIP_MEAN,
    CLIP_STD,
    ENUM_KEYS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PACKAGED_CONFIGS,
    TORCHVISION_TOWERS,
    Config,
    ConfigError,
    DataloaderConfig,
    DatasetsConfig,
    DivisionConfig,
    EmbeddingConfig,
    GRUConfig,
    InputConfig,
    IRRAConfig,
    LossConfig,
    MocoConfig,
    ModelConfig,
    RDEConfig,
    ResNetConfig,
    SolverConfig,
    TestConfig,
    TextTransformerConfig,
    ViTConfig,
)
from textreid.config.validation import config_problems, validate_config

__all__ = [
    "AUTHORS_CAPTION_CAP", "CLIP_MEAN", "CLIP_STD", "ENUM_KEYS", "IMAGENET_MEAN", "IMAGENET_STD",
    "PACKAGED_CONFIGS", "TORCHVISION_TOWERS", "Config", "ConfigError", "DataloaderConfig",
    "DatasetsConfig", "DivisionConfig", "EmbeddingConfig", "GRUConfig", "IRRAConfig", "InputConfig",
    "LossConfig", "MocoConfig", "ModelConfig", "RDEConfig", "ResNetConfig", "SolverConfig",
    "TestConfig", "TextTransformerConfig", "ViTConfig", "apply_overrides", "config_problems",
    "dump_yaml", "from_dict", "list_packaged_configs", "load_config", "merge_dict", "pixel_stats",
    "reproduction_settings", "resolve", "resolve_config_path", "set_value", "to_dict", "valid_keys",
    "validate_config",
]
