"""build_word_table: each row is CLIP's encode_text of that word alone; special words are zero; atomic save."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from open_clip.tokenizer import tokenize

from clip_factory import EMBED_DIM, TEXT_CFG, save_openai_jit, tiny_clip
from textreid.models.word_table import build_word_table, save_word_table

WORDS = ["<pad>", "woman", "red", "backpack", "t-shirt", "<unk>", "greyish-blue"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    model = tiny_clip("resnet", seed=11)
    return model, save_openai_jit(model, tmp_path_factory.mktemp("wt") / "RN-tiny.pt", fp16=False)


def test_rows_equal_encode_text_of_each_word_alone(clip):
    model, path = clip
    table = build_word_table(WORDS, path, batch_size=2, progress=False)
    assert table.dtype == np.float32 and table.shape == (len(WORDS), EMBED_DIM)
    for i, word in enumerate(WORDS):
        if word.startswith("<"):
            assert not table[i].any(), word
            continue
        with (
            torch.no_grad()
        ):  # independent tokenisation: open_clip's own tokenize() of the word alone
            expected = model.encode_text(
                tokenize([word], context_length=TEXT_CFG["context_length"])
            )[0]
        np.testing.assert_allclose(table[i], expected.numpy(), rtol=1e-5, atol=1e-5, err_msg=word)
    assert len({tuple(r) for r in table[1:5]}) == 4  # distinct words, distinct vectors
    # the batch size only changes how the work is split
    np.testing.assert_allclose(
        build_word_table(WORDS, path, batch_size=64, progress=False), table, rtol=1e-5, atol=1e-6
    )


def test_normalize_option_and_empty_vocabulary(clip):
    _, path = clip
    unit = build_word_table(["woman", "<pad>"], path, progress=False, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit[0]), 1.0, rtol=1e-5)
    assert not unit[1].any()
    assert build_word_table([], path, progress=False).shape == (0, EMBED_DIM)


def test_save_is_atomic_and_loadable(tmp_path):
    table = np.arange(12, dtype=np.float64).reshape(4, 3)
    path = tmp_path / "sub" / "clip_vocab_vit.npy"
    save_word_table(path, table)
    save_word_table(path, table * 2)  # overwrite in place
    loaded = np.load(path)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, (table * 2).astype(np.float32))
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "clip_vocab_vit.npy"
    ]  # no temporary left


def test_missing_checkpoint_names_the_path(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    with pytest.raises(ValueError) as info:
        build_word_table(["woman"], path, progress=False)
    assert str(path) in str(info.value)
