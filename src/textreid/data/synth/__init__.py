"""Synthetic pedestrians: a deterministic generator of drawn people, captions and both dataset layouts.

No real text-based person search dataset can be downloaded by the project, so this package is the
built-in data for the demo and the tests. Each person is a set of attributes (gender, hair, top,
bottom, shoes, optional hat, bag and glasses); every image of that person is drawn from those
attributes with PIL under a different view (front/back/side), pose, scale, position, background,
lighting, blur and noise; every image gets two captions written from the same attributes. About
30 % of the persons of each split are "siblings": copies of an earlier person of the same split
with one or two attributes changed, so retrieval needs the fine details.

Output (``out_dir`` is the dataset folder, e.g. ``data/datasets/synth``)::

    annotations/{train,val,test}.json   the authors' CUHK-PEDES layout, one entry per caption
    clip_vocab_vit.npy                  float32 [V, 512] pseudo word vectors (see word_vectors)
    reid_raw.json                       the raw layout: one record per image, two captions each
    imgs/synth/cam_{a,b}/pNNNNN_KK.jpg  the images (camera a: even image index, b: odd)
    attributes.json                     ground truth per person (also marks the folder as ours)
    preview.jpg                         contact sheet of a few persons

Modules, in the order the data flows: ``attributes`` (who a person is), ``painter`` and ``figure``
(drawing a person), ``rendering`` (backdrop, camera effects), ``captions`` (phrase tables and
grammar), ``vectors`` (vocabulary and word table), ``writer`` (``generate``: files on disk).

Determinism: a person is a function of (seed, person id) and of the earlier persons of its split;
an image and its captions are functions of (seed, person id, image index) only, so the bytes do
not depend on the number of worker processes. ``image_size`` is (height, width), as in the SPEC.
"""

from __future__ import annotations

from textreid.data.synth.attributes import (
           ATTRIBUTE_KEYS,
           COLOURS,
           VIEWS,
           attribute_diff,
           sample_person,
           view_of,
)
from textreid.data.synth.captions import make_captions
from textreid.data.synth.rendering import render_image
from textreid.data.synth.vectors import build_vocabulary, word_vectors
from textreid.data.synth.writer import GENERATOR, IMAGE_FOLDER, JPEG_QUALITY, generate

__all__ = ["ATTRIBUTE_KEYS", "COLOURS", "GENERATOR", "IMAGE_FOLDER", "JPEG_QUALITY", "VIEWS", "attribute_diff",
           "build_vocabulary", "generate", "make_captions", "render_image", "sample_person", "view_of",
           "word_vectors"]
