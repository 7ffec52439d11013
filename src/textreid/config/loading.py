"""Loading a configuration: YAML files (the authors' UPPER_CASE ones too), ``KEY VALUE`` overrides,
checkpoint dicts, and the keys that depend on other keys (``resolve``).

Keys are matched case-insensitively; an unknown key fails with the nearest valid keys.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml

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
)


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
