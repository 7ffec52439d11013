"""Captions of a synthetic person: phrase tables and a small grammar with five sentence styles.

A caption names only what its image's view shows (no logo from behind, no glasses from the
back). The wording is drawn from the phrase tables below, so ``vectors.py`` can group the words
(colour, clothing, footwear, ...) from the same tables. Captions of an image are a function of
(seed, person id, image index) only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from textreid.data.synth.attributes import pick, weighted

TOP_WORDS = {"t-shirt": ("t-shirt", "T-shirt", "tee shirt", "tshirt", "tee"),
              "shirt": ("shirt", "button-up shirt", "button down shirt", "collared shirt"),
              "blouse": ("blouse", "top"), "jacket": ("jacket", "zip-up jacket"),
              "coat": ("coat", "long coat", "overcoat"), "hoodie": ("hoodie", "hooded sweatshirt", "hooded top"),
              "sweater": ("sweater", "jumper", "pullover"), "dress": ("dress",)}
BOTTOM_WORDS = {"trousers": ("trousers", "pants", "slacks"), "jeans": ("jeans", "denim jeans", "denim pants"),
                 "shorts": ("shorts", "short pants"), "skirt": ("skirt", "knee length skirt", "short skirt")}
SHOE_WORDS = {"sneakers": ("sneakers", "trainers", "tennis shoes", "running shoes"),
               "boots": ("boots", "ankle boots"), "shoes": ("shoes", "leather shoes", "dress shoes", "flat shoes")}
HAT_WORDS = {"cap": ("cap", "baseball cap", "ball cap"), "beanie": ("beanie", "knit hat", "wool hat"),
              "hat": ("hat", "sun hat", "wide brimmed hat")}
BAG_WORDS = {"backpack": ("backpack", "rucksack", "school bag"), "handbag": ("handbag", "purse", "hand bag"),
              "shoulder bag": ("shoulder bag", "messenger bag", "crossbody bag", "side bag")}
SLEEVE_WORDS = {"short": ("short-sleeved", "short sleeve", "short sleeved"), "long": ("long-sleeved", "long sleeve"),
                 "sleeveless": ("sleeveless",)}
SUBJECTS = {"man": ("A man", "The man", "This man", "A young man", "The guy", "A male", "This guy", "A boy"),
             "woman": ("A woman", "The woman", "This woman", "A young woman", "The lady", "A girl", "The girl",
                       "A female", "This lady")}
NEUTRAL_SUBJECTS = ("A person", "The pedestrian", "This person")
GLASSES_WORDS = ("glasses", "eyeglasses", "a pair of glasses", "spectacles")
_MODIFIABLE = {"blue", "green", "grey", "brown", "pink", "purple"}  # may be "dark ..."/"light ..."


def _article(np_text: str) -> str:
    return ("an " if np_text[:1].lower() in "aeiou" else "a ") + np_text


def _join(items: Sequence[str], rng: np.random.Generator) -> str:
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    comma = ", and " if rng.random() < 0.3 else " and "
    return ", ".join(items[:-1]) + comma + items[-1]


class _Phrases:
    """Noun phrases and predicates for one caption, drawn with the caption's RNG."""

    def __init__(self, person: dict[str, Any], view: str, rng: np.random.Generator):
        self.a, self.sh, self.view, self.rng = person["attributes"], person["render"]["shade"], view, rng
        man = self.a["gender"] == "man"
        self.he, self.his = ("he", "his") if man else ("she", "her")

    def chance(self, q: float) -> bool:
        return bool(self.rng.random() < q)

    def colour(self, name: str, shade: float) -> str:
        word = "gray" if name == "grey" and self.chance(0.3) else name
        if name in _MODIFIABLE and shade < 0.88 and self.chance(0.6):
            return "dark " + word
        if name in _MODIFIABLE and shade > 1.09 and self.chance(0.6):
            return "light " + word
        return word

    def top(self) -> str:
        a, rng = self.a, self.rng
        t = a["top_type"]
        noun = pick(rng, TOP_WORDS[t])
        c = self.colour(a["top_colour"], self.sh["top"])
        plain_c = c
        if (t in ("shirt", "blouse", "dress") and self.chance(0.5)) or (t == "t-shirt" and self.chance(0.12)):
            sl = pick(rng, SLEEVE_WORDS[a["sleeves"]])
            c = f"{sl} {c}" if self.chance(0.6) else f"{c} {sl}"
        pat = a["top_pattern"]
        pc = self.colour(a["pattern_colour"], self.sh["pattern"]) if a["pattern_colour"] else ""
        if pat == "stripes":
            np_text = pick(rng, (f"{c} and {pc} striped {noun}", f"{c} {noun} with {pc} stripes",
                                  f"striped {c} and {pc} {noun}"))
        elif pat == "checks":
            np_text = pick(rng, (f"{c} and {pc} plaid {noun}", f"{c} and {pc} checkered {noun}",
                                  f"{c} {noun} with a {pc} check pattern", f"checked {c} and {pc} {noun}"))
        elif pat == "logo" and self.view != "back":
            np_text = pick(rng, (f"{c} {noun} with a {pc} logo on the front", f"{c} {noun} with a {pc} graphic on it",
                                  f"{c} {noun} that has a {pc} print on the chest"))
        else:
            np_text = f"{c} colored {noun}" if c == plain_c and self.chance(0.06) else f"{c} {noun}"
        np_text = _article(np_text)
        if a["inner_colour"] and self.view == "front" and self.chance(0.85):
            ic = self.colour(a["inner_colour"], self.sh["inner"])
            np_text += pick(rng, (f" over {_article(ic)} {pick(rng, ('shirt', 'top', 't-shirt'))}",
                                   f" with {_article(ic)} shirt underneath", f" on top of {_article(ic)} shirt"))
        return np_text

    def bottom(self) -> str:
        a, rng = self.a, self.rng
        noun = pick(rng, BOTTOM_WORDS[a["bottom_type"]])
        c = self.colour(a["bottom_colour"], self.sh["bottom"])
        if a["bottom_type"] == "skirt":
            return _article(f"{c} {noun}")
        return pick(rng, (f"{c} {noun}", f"a pair of {c} {noun}", f"{c} {noun}"))

    def shoes(self) -> str:
        noun = pick(self.rng, SHOE_WORDS[self.a["shoes_type"]])
        c = self.colour(self.a["shoes_colour"], self.sh["shoes"])
        return f"a pair of {c} {noun}" if self.chance(0.3) else f"{c} {noun}"

    def hat(self) -> str:
        noun = pick(self.rng, HAT_WORDS[self.a["hat_type"]])
        return _article(f"{self.colour(self.a['hat_colour'], self.sh['hat'])} {noun}")

    def bag(self) -> str:
        noun = pick(self.rng, BAG_WORDS[self.a["bag_type"]])
        c = self.colour(self.a["bag_colour"], self.sh["bag"])
        return _article(f"{c} {noun}")

    def bag_place(self) -> str:
        return {"backpack": f" on {self.his} back", "handbag": f" in {self.his} hand",
                "shoulder bag": pick(self.rng, (f" over {self.his} shoulder", f" on {self.his} shoulder",
                                                 " across the body"))}[self.a["bag_type"]]

    def hair(self) -> str:
        length = pick(self.rng, ("long", "shoulder length", "long")) if self.a["hair_length"] == "long" \
            else pick(self.rng, ("short", "short", "cropped"))
        c = self.colour(self.a["hair_colour"], 1.0)
        if c == "blonde" and self.chance(0.3):
            c = "blond"
        return f"{length} {c} hair" if self.chance(0.75) else f"{c} {length} hair"

    def predicate(self, item: str) -> str:
        """A verb phrase about one item, for '<He/She> ...' sentences."""
        rng = self.rng
        if item == "bag":
            verb = pick(rng, ("is carrying", "carries", "has", "is holding") if self.a["bag_type"] == "handbag"
                         else ("is carrying", "carries", "has"))
            return f"{verb} {self.bag()}" + (self.bag_place() if self.chance(0.5) else "")
        if item == "hat":
            return pick(rng, (f"is wearing {self.hat()}", f"has {self.hat()} on {self.his} head",
                               f"wears {self.hat()}"))
        if item == "glasses":
            return pick(rng, ("wears glasses", "has glasses on", f"is wearing {pick(rng, GLASSES_WORDS)}"))
        if item == "shoes":
            return pick(rng, (f"has {self.shoes()} on", f"is wearing {self.shoes()}", f"wears {self.shoes()}"))
        if item == "hair":
            return pick(rng, (f"has {self.hair()}", f"has got {self.hair()}"))
        if item == "top":
            return pick(rng, (f"is wearing {self.top()}", f"wears {self.top()}", f"has on {self.top()}"))
        if item == "bottom":
            return pick(rng, (f"is wearing {self.bottom()}", f"has on {self.bottom()}", f"wears {self.bottom()}"))
        raise KeyError(item)

    def sentence(self, items: Sequence[str]) -> str:
        """One sentence about one or two items, with the pronoun or a possessive as subject."""
        if len(items) == 1 and items[0] == "hair" and self.chance(0.4):
            length = "long" if self.a["hair_length"] == "long" else "short"
            return f"{self.his.capitalize()} hair is {length} and {self.colour(self.a['hair_colour'], 1.0)}."
        if len(items) == 1 and items[0] == "shoes" and self.chance(0.3):
            return f"{self.his.capitalize()} shoes are {self.colour(self.a['shoes_colour'], self.sh['shoes'])}."
        if len(items) == 1 and items[0] == "bag" and self.a["bag_type"] == "backpack" and self.chance(0.3):
            return f"{self.bag().capitalize()} is on {self.his} back."
        preds = [self.predicate(i) for i in items]
        if self.chance(0.15):
            preds[0] = "is also " + preds[0][3:] if preds[0].startswith("is ") else "also " + preds[0]
        return f"{self.he.capitalize()} " + " and ".join(preds) + "."


def _caption(person: dict[str, Any], view: str, rng: np.random.Generator) -> str:
    """One caption: an opening sentence in one of five styles, then sentences about what is left."""
    a = person["attributes"]
    ph = _Phrases(person, view, rng)
    extras = _extras(ph)
    gender_word = pick(rng, ("man", "guy", "male") if a["gender"] == "man" else ("woman", "lady", "girl", "female"))
    subject = pick(rng, SUBJECTS[a["gender"]])
    neutral = ph.chance(0.1)
    style = weighted(rng, ("wear", "in", "sentences", "participle", "this_is"), (0.35, 0.15, 0.2, 0.15, 0.15))
    listed, outfit = _outfit(ph, extras, style)
    with_hair, trail = _attachments(ph, extras, style)
    if neutral and (not extras or style == "this_is"):
        neutral = False
    subj = pick(rng, NEUTRAL_SUBJECTS) if neutral else subject
    sentences = _opening(ph, style, subj, gender_word, with_hair, outfit + trail, listed, extras)
    while extras:
        take = extras[:2] if ph.chance(0.45) else extras[:1]
        extras = extras[len(take):]
        sentences.append(ph.sentence(take))
    if view == "back" and ph.chance(0.12):
        sentences.append(f"{ph.he.capitalize()} is walking away from the camera.")
    elif view == "side" and ph.chance(0.12):
        sentences.append(f"{ph.he.capitalize()} is walking.")
    text = " ".join(sentences)
    text = text[0].upper() + text[1:]
    if ph.chance(0.07):
        text = text.lower()
    if ph.chance(0.05):
        text = text.rstrip(".")
    return text


def _extras(ph: _Phrases) -> list[str]:
    """Items besides the clothes that the caption mentions, in random order (some left out, as people do)."""
    a, view = ph.a, ph.view
    extras = []
    if not ph.chance(0.15):
        extras.append("hair")
    if not ph.chance(0.15):
        extras.append("shoes")
    if a["hat_type"]:
        extras.append("hat")
    if a["bag_type"] and not (a["bag_type"] == "backpack" and view == "front" and ph.chance(0.4)):
        extras.append("bag")
    if a["glasses"] and view != "back" and not ph.chance(0.25):
        extras.append("glasses")
    ph.rng.shuffle(extras)
    return extras


def _outfit(ph: _Phrases, extras: list[str], style: str) -> tuple[list[str], str]:
    """The items of the opening sentence (shoes and the hat sometimes join the clothes) and their phrase.

    Items that join are removed from ``extras``.
    """
    a, rng = ph.a, ph.rng
    listed = ["top"] + (["bottom"] if a["bottom_type"] else [])
    if rng.random() < 0.2:
        listed.reverse()
    for item in ("shoes", "hat"):
        if item in extras and style != "sentences" and ph.chance(0.5):
            extras.remove(item)
            listed.append(item)
    phrase = {"top": ph.top, "bottom": ph.bottom, "shoes": ph.shoes, "hat": ph.hat}
    nps = [phrase[i]() for i in listed]
    if len(nps) == 2 and listed[0] == "top" and ph.chance(0.35):
        layered = a["top_type"] in ("jacket", "coat", "hoodie", "sweater")
        return listed, f"{nps[0]} {pick(rng, ('over', 'with', 'and') if layered else ('with', 'and'))} {nps[1]}"
    return listed, _join(nps, rng)


def _attachments(ph: _Phrases, extras: list[str], style: str) -> tuple[str, str]:
    """Hair after the subject (" with long hair") and a bag after the outfit, taken out of ``extras``."""
    with_hair = ""
    if "hair" in extras and style in ("wear", "participle", "this_is") and ph.chance(0.5):
        extras.remove("hair")
        with_hair = f" with {ph.hair()}"
    trail = ""
    if "bag" in extras and style in ("wear", "in", "participle") and ph.chance(0.35):
        extras.remove("bag")
        trail = f", with {ph.bag()}{ph.bag_place()}" if ph.chance(0.6) else f" and carrying {ph.bag()}"
    return with_hair, trail


def _opening(ph: _Phrases, style: str, subj: str, gender_word: str, with_hair: str, outfit: str,
             listed: list[str], extras: list[str]) -> list[str]:
    """The first sentence(s) in ``style``; "sentences" names one item after the other instead."""
    rng = ph.rng
    if style == "wear":
        verb = pick(rng, ("is wearing", "wears", "is dressed in", "has on", "is in"))
        return [f"{subj}{with_hair} {verb} {outfit}."]
    if style == "in":
        return [f"{subj} in {outfit}."]
    if style == "participle":
        return [f"{subj}{with_hair} {pick(rng, ('wearing', 'dressed in'))} {outfit}."]
    if style == "this_is":
        rel = pick(rng, ("who is wearing", "wearing", "in", "dressed in"))
        opening = pick(rng, ("This is", "The person is", "It is"))
        return [f"{opening} {_article(gender_word)}{with_hair} {rel} {outfit}."]
    first = extras.pop(0) if extras and extras[0] == "hair" else None
    sentences = [f"{subj} {ph.predicate(first)}." if first else f"{subj} {ph.predicate('top')}."]
    rest = ([] if first is None else ["top"]) + [i for i in listed if i != "top"]
    while rest:
        take = rest[:2] if ph.chance(0.5) else rest[:1]
        rest = rest[len(take):]
        sentences.append(ph.sentence(take))
    return sentences


def make_captions(person: dict[str, Any], view: str, *, seed: int, image_index: int = 0, n: int = 2) -> list[str]:
    """``n`` distinct captions of one image of ``person`` (they may mention only what ``view`` shows)."""
    rng = np.random.default_rng([seed, person["id"], image_index, 2])
    captions: list[str] = []
    for _ in range(20 * n):
        c = _caption(person, view, rng)
        if c not in captions:
            captions.append(c)
        if len(captions) == n:
            return captions
    while len(captions) < n:  # a tiny attribute set may leave too few wordings; repeats are harmless
        captions.append(captions[-1])
    return captions
