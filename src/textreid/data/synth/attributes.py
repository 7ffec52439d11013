"""Who a synthetic person is: attribute tables, sampling, siblings, and the persons of each split.

A person is ``{"id", "split", "sibling_of", "changed", "attributes", "render"}``: ``attributes``
are what captions name (``ATTRIBUTE_KEYS``), ``render`` the drawing details they do not (skin,
build, exact shades). A person is a function of (seed, person id) and of the earlier persons of
its split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
VIEWS = ("front", "back", "side")
SIBLING_FRACTION = 0.3  # share of each split's persons that copy an earlier one with 1-2 changes

COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "white": (238, 238, 232),
    "grey": (128, 128, 130),
    "red": (200, 32, 38),
    "blue": (38, 72, 190),
    "green": (42, 140, 64),
    "yellow": (236, 200, 44),
    "pink": (236, 130, 172),
    "purple": (118, 52, 150),
    "brown": (112, 74, 42),
    "orange": (240, 128, 32),
}
# Real clothing is mostly dark or neutral; keep every colour frequent enough to be learnable.
_COLOUR_WEIGHTS = {"black": 2.0, "white": 1.6, "grey": 1.4, "blue": 1.4, "red": 1.0, "green": 0.8,
                   "yellow": 0.6, "pink": 0.7, "purple": 0.6, "brown": 0.9, "orange": 0.5}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (24, 20, 18),
    "brown": (96, 60, 34),
    "blonde": (214, 178, 104),
    "grey": (158, 158, 154),
}
_SKIN_TONES = ((241, 205, 180), (224, 172, 138), (198, 140, 100), (160, 105, 70), (110, 72, 48))

_TOPS = {
    "man": ("t-shirt", "shirt", "jacket", "coat", "hoodie", "sweater"),
    "woman": ("t-shirt", "shirt", "blouse", "jacket", "coat", "hoodie", "sweater", "dress"),
}
_SLEEVES = {"t-shirt": ("short",), "shirt": ("short", "long"), "blouse": ("short", "long", "sleeveless"),
            "jacket": ("long",), "coat": ("long",), "hoodie": ("long",), "sweater": ("long",),
            "dress": ("short", "sleeveless")}
_PATTERNS = {"t-shirt": ("plain", "stripes", "logo"), "shirt": ("plain", "stripes", "checks"),
             "blouse": ("plain", "stripes"), "jacket": ("plain",), "coat": ("plain",),
             "hoodie": ("plain", "stripes", "logo"), "sweater": ("plain", "stripes", "checks"),
             "dress": ("plain", "stripes", "checks")}
OPEN_TOPS = ("jacket", "coat")  # may be worn open over an inner top of another colour
_BOTTOMS = {"man": ("trousers", "jeans", "shorts"), "woman": ("trousers", "jeans", "shorts", "skirt")}
_JEANS_COLOURS = ("blue", "black", "grey")
_SHOES = ("sneakers", "boots", "shoes")
_SHOE_COLOURS = ("black", "white", "brown", "grey", "red", "blue")
_HATS = ("cap", "beanie", "hat")
_BAGS = ("backpack", "handbag", "shoulder bag")

ATTRIBUTE_KEYS = ("gender", "hair_colour", "hair_length", "top_type", "top_colour", "sleeves",
                  "top_pattern", "pattern_colour", "inner_colour", "bottom_type", "bottom_colour",
                  "shoes_type", "shoes_colour", "hat_type", "hat_colour", "bag_type", "bag_colour",
                  "glasses")


def _colour_options(exclude: object = None) -> tuple[list[str], list[float]]:
    names = [c for c in COLOURS if c != exclude]
    return names, [_COLOUR_WEIGHTS[c] for c in names]


def _options(key: str, a: dict[str, Any]) -> tuple[list[Any], list[float]]:
    """Allowed values of attribute ``key`` given the keys before it (ATTRIBUTE_KEYS order), with weights."""
    g = a.get("gender")
    if key == "gender":
        return ["man", "woman"], [1.0, 1.0]
    if key == "hair_colour":
        return list(HAIR_COLOURS), [0.45, 0.3, 0.15, 0.1]
    if key == "hair_length":
        return ["short", "long"], ([0.88, 0.12] if g == "man" else [0.2, 0.8])
    if key == "top_type":
        tops = list(_TOPS[g])
        return tops, [0.8 if t == "dress" else 1.0 for t in tops]
    if key == "top_colour":
        return _colour_options()
    if key == "sleeves":
        return list(_SLEEVES[a["top_type"]]), [1.0] * len(_SLEEVES[a["top_type"]])
    if key == "top_pattern":
        pats = list(_PATTERNS[a["top_type"]])
        rest = (0.45 / (len(pats) - 1)) if len(pats) > 1 else 0.0
        return pats, [0.55 if p == "plain" else rest for p in pats] if len(pats) > 1 else [1.0]
    if key == "pattern_colour":
        return ([None], [1.0]) if a["top_pattern"] == "plain" else _colour_options(a["top_colour"])
    if key == "inner_colour":
        if a["top_type"] not in OPEN_TOPS:
            return [None], [1.0]
        names, w = _colour_options(a["top_colour"])
        return [None, *names], [sum(w) * 0.7, *w]
    if key == "bottom_type":
        return ([None], [1.0]) if a["top_type"] == "dress" else (list(_BOTTOMS[g]), [1.0] * len(_BOTTOMS[g]))
    if key == "bottom_colour":
        if a["bottom_type"] is None:
            return [None], [1.0]
        if a["bottom_type"] == "jeans":
            return list(_JEANS_COLOURS), [3.0, 1.5, 1.0]
        return _colour_options()
    if key == "shoes_type":
        return list(_SHOES), [1.2, 0.8, 1.0]
    if key == "shoes_colour":
        return list(_SHOE_COLOURS), [2.0, 1.8, 1.0, 0.8, 0.5, 0.5]
    if key == "hat_type":
        return [None, *_HATS], [0.72, 0.12, 0.09, 0.07]
    if key == "hat_colour":
        return ([None], [1.0]) if a["hat_type"] is None else _colour_options()
    if key == "bag_type":
        return [None, *_BAGS], ([0.45, 0.3, 0.05, 0.2] if g == "man" else [0.35, 0.2, 0.25, 0.2])
    if key == "bag_colour":
        return ([None], [1.0]) if a["bag_type"] is None else _colour_options()
    if key == "glasses":
        return [False, True], [0.8, 0.2]
    raise KeyError(f"unknown attribute {key!r}; valid: {', '.join(ATTRIBUTE_KEYS)}")


def weighted(rng: np.random.Generator, values: Sequence[Any], weights: Sequence[float]) -> Any:
    """One of ``values``, drawn with probabilities proportional to ``weights``."""
    w = np.asarray(weights, dtype=np.float64)
    return values[int(rng.choice(len(values), p=w / w.sum()))]


def pick(rng: np.random.Generator, values: Sequence[Any]) -> Any:
    """One of ``values``, uniformly."""
    return values[int(rng.integers(len(values)))]


def _fill(a: dict[str, Any], rng: np.random.Generator, force: str | None = None) -> dict[str, Any] | None:
    """Sample missing or no-longer-valid keys in order; ``force`` must take a new value (None if impossible)."""
    a = dict(a)
    for key in ATTRIBUTE_KEYS:
        values, weights = _options(key, a)
        if key == force:
            keep = [i for i, v in enumerate(values) if v != a.get(key)]
            if not keep:
                return None
            a[key] = weighted(rng, [values[i] for i in keep], [weights[i] for i in keep])
        elif key not in a or a[key] not in values:
            a[key] = weighted(rng, values, weights)
    return a


def attribute_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Names of the attributes on which two persons differ."""
    return [k for k in ATTRIBUTE_KEYS if a.get(k) != b.get(k)]


def _mutate(parent: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A sibling: the parent's attributes with one or two of them changed (dependants kept valid)."""
    target = 1 if rng.random() < 0.55 else 2
    keys = [k for k in ATTRIBUTE_KEYS if k != "gender"]
    for _ in range(200):
        child: dict[str, Any] | None = dict(parent)
        for _ in range(target):
            child = _fill(child, rng, force=pick(rng, keys)) if child is not None else None
        if child is not None and 1 <= len(attribute_diff(parent, child)) <= 2:
            return child
    # Every person has a top colour, and recolouring it invalidates nothing else.
    child = _fill(parent, rng, force="top_colour")
    assert child is not None
    return child


def _sample_render(rng: np.random.Generator) -> dict[str, Any]:
    """Per-person drawing details that captions do not name (skin, build, exact shades)."""
    parts = ("hair", "top", "pattern", "inner", "bottom", "shoes", "hat", "bag")
    return {
        "skin": list(pick(rng, _SKIN_TONES)),
        "build": round(float(rng.uniform(0.92, 1.08)), 4),
        "height": round(float(rng.uniform(0.95, 1.04)), 4),
        "shade": {p: round(float(rng.uniform(0.8, 1.16)), 4) for p in parts},
        "logo": pick(rng, ("circle", "square", "star", "bar")),
        "bag_side": pick(rng, (-1, 1)),
        "view_offset": int(rng.integers(len(VIEWS))),
    }


def sample_person(seed: int, person_id: int) -> dict[str, Any]:
    """A fresh random person (no sibling logic): ``{"id", "attributes", "render"}``."""
    rng = np.random.default_rng([seed, person_id, 0])
    attrs = _fill({}, rng)
    assert attrs is not None
    return {"id": person_id, "attributes": attrs, "render": _sample_render(rng)}


def split_sizes(num_ids: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Persons per split; each split gets at least one (errors name the argument to change)."""
    if num_ids < 3:
        raise ValueError(f"num_ids must be at least 3 (one person each for train, val and test), got {num_ids}")
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    n_val = max(1, round(num_ids * val_fraction))
    n_test = max(1, round(num_ids * test_fraction))
    n_train = num_ids - n_val - n_test
    if n_train < 1:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training persons "
            f"out of num_ids={num_ids} ({n_val} val + {n_test} test); lower the fractions or raise num_ids"
        )
    return {"train": n_train, "val": n_val, "test": n_test}


def _signature(a: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(a[k] for k in ATTRIBUTE_KEYS)


def make_persons(seed: int, sizes: dict[str, int]) -> list[dict[str, Any]]:
    """All persons, ids contiguous in split order (train 0..N_train-1, then val, then test)."""
    persons: list[dict[str, Any]] = []
    for split_index, split in enumerate(SPLITS):
        persons.extend(_split_persons(seed, split_index, start=len(persons), n=sizes[split]))
    return persons


def _split_persons(seed: int, split_index: int, *, start: int, n: int) -> list[dict[str, Any]]:
    """The ``n`` distinct persons of one split, ids ``start``..; about SIBLING_FRACTION of them are siblings."""
    split_rng = np.random.default_rng([seed, split_index, 7])
    n_sib = min(n - 1, round(SIBLING_FRACTION * n))
    sib_slots = set(split_rng.choice(np.arange(1, n), size=n_sib, replace=False).tolist()) if n_sib else set()
    members: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for j in range(n):
        pid = start + j
        rng = np.random.default_rng([seed, pid, 0])
        parent = None
        for _ in range(50):  # persons of one split are all distinct
            if j in sib_slots:
                parent = pick(rng, members)
                attrs = _mutate(parent["attributes"], rng)
            else:
                attrs = _fill({}, rng)
            if _signature(attrs) not in seen:
                break
        seen.add(_signature(attrs))
        members.append({
            "id": pid,
            "split": SPLITS[split_index],
            "sibling_of": None if parent is None else parent["id"],
            "changed": [] if parent is None else attribute_diff(parent["attributes"], attrs),
            "attributes": attrs,
            "render": _sample_render(rng),
        })
    return members


def view_of(person: dict[str, Any], image_index: int) -> str:
    """The view of a person's image: the views rotate from a per-person offset."""
    return VIEWS[(person["render"]["view_offset"] + image_index) % len(VIEWS)]

