"""Vocabulary and tokenizers: hand-computed expectations and open_clip's own tokenizer as reference."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from textreid.data.text import ClipTokenizer, WordTokenizer, build_tokenizer
from textreid.data.vocab import Vocabulary, tokenize


def test_tokenize() -> None:
    assert tokenize("A Woman's RED t-shirt, 2 bags!") == ["a", "woman", "s", "red", "t", "shirt", "2", "bags"]
    assert tokenize("  ...  ") == []
    assert tokenize("snake_case Café") == ["snake", "case", "café"]


def test_build_orders_by_frequency_then_alphabet() -> None:
    vocab = Vocabulary.build(["b a c", "a b", "a d", "c"], min_count=1)
    # counts: a 3, b 2, c 2, d 1
    assert vocab.words == ["<pad>", "<unk>", "a", "b", "c", "d"]
    assert (vocab.pad_id, vocab.unk_id, len(vocab)) == (0, 1, 6)
    assert Vocabulary.build(["b a c", "a b", "a d", "c"], min_count=2).words == ["<pad>", "<unk>", "a", "b", "c"]


def test_encode_unknown_and_truncation() -> None:
    vocab = Vocabulary.build(["red coat", "red bag"])  # red, bag, coat
    assert vocab.encode("Red hat, red COAT") == [2, 1, 2, 4]
    assert vocab.encode("Red hat, red COAT", max_length=2) == [2, 1]
    no_unk = Vocabulary(["red", "coat"])
    assert no_unk.encode("red hat coat") == [0, 1]  # unknown words dropped


def test_save_load_round_trip(tmp_path: Path) -> None:
    vocab = Vocabulary.build(["a man in a red coat", "a woman"])
    vocab.save(tmp_path / "v.json")
    loaded = Vocabulary.load(tmp_path / "v.json")
    assert loaded == vocab and loaded.words == vocab.words and loaded.unk_id == 1
    assert Vocabulary.from_dict(vocab.to_dict()).encode("a red hat") == vocab.encode("a red hat")
    aligned = Vocabulary(["x", "y"])
    assert Vocabulary.from_dict(json.loads(json.dumps(aligned.to_dict()))).pad_id is None
    (tmp_path / "bad.json").write_text('{"words": [1, 2]')
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="'words' should be a list of strings"):
        Vocabulary.from_dict({"words": [1, 2]})
    with pytest.raises(ValueError, match="not found"):
        Vocabulary.load(tmp_path / "missing.json")


def test_from_aligned_recovers_hidden_words() -> None:
    hidden = ["woman", "a", "red", "coat", "man", "blue", "unused"]
    ids = {w: i for i, w in enumerate(hidden)}
    sentences = ["A woman, red coat.", "a man", "blue coat", "a blue coat man"]
    onehots = [[ids[w] for w in s.lower().replace(",", "").replace(".", "").split()] for s in sentences]
    # misaligned pair: the tokenizer sees 4 words, onehot has 3 -> ignored
    sentences.append("woman's coat red")
    onehots.append([ids["red"], ids["red"], ids["red"]])
    # a minority vote for id 2 ("red") is outvoted
    sentences.append("blue")
    onehots.append([ids["red"]])
    sentences += ["red", "red"]
    onehots += [[ids["red"]], [ids["red"]]]
    vocab = Vocabulary.from_aligned(sentences, onehots, size=len(hidden))
    assert vocab.words == hidden[:-1] + ["<w6>"]
    assert vocab.pad_id is None and vocab.unk_id is None and vocab.num_placeholders == 1
    assert vocab.encode("A man in a blue coat") == [1, 4, 1, 5, 3]  # "in" unknown: dropped
    with pytest.raises(ValueError, match="pair 0 has id 9"):
        Vocabulary.from_aligned(["a"], [[9]], size=3)


def test_word_tokenizer_padding_lengths_truncation() -> None:
    vocab = Vocabulary.build(["a red coat", "a man"])  # a, coat, man, red -> 2, 3, 4, 5
    tok = WordTokenizer(vocab, max_length=3)
    out = tok(["a man", "a red coat a man", ""])
    assert out["word_ids"].dtype == torch.long and out["lengths"].dtype == torch.long
    assert out["word_ids"].tolist() == [[2, 4, 0], [2, 5, 3], [1, 0, 0]]  # empty -> one <unk>
    assert out["lengths"].tolist() == [2, 3, 1]
    assert tok.truncated == 1
    ids = tok.from_ids([[7], [1, 2, 3, 4, 5]])
    assert ids["word_ids"].tolist() == [[7, 0, 0], [1, 2, 3]] and ids["lengths"].tolist() == [1, 3]
    assert tok.truncated == 2
    short = tok(["a", "man"])  # L = longest in batch
    assert short["word_ids"].shape == (2, 1)
    aligned = WordTokenizer(Vocabulary(["x", "y"]), max_length=5)
    assert aligned(["zzz"])["word_ids"].tolist() == [[0]] and aligned(["zzz"])["lengths"].tolist() == [1]


def test_clip_tokenizer_matches_open_clip_and_keeps_eot() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    reference = SimpleTokenizer()
    tok = ClipTokenizer(context_length=77)
    texts = ["A woman in a red coat.", ""]
    out = tok(texts)["tokens"]
    assert out.shape == (2, 77) and out.dtype == torch.long
    assert torch.equal(out, reference(texts, context_length=77))
    assert out[1, :2].tolist() == [tok.sot_id, tok.eot_id]
    long_text = " ".join(["red"] * 200)
    cut = tok([long_text, "a man"])["tokens"]
    assert cut[0, 0] == tok.sot_id and cut[0, -1] == tok.eot_id
    assert int(cut[0].argmax()) == 76  # CLIP pools at the EOT = largest id
    assert tok.truncated == 1
    clone = pickle.loads(pickle.dumps(tok))
    assert torch.equal(clone(["a man"])["tokens"], cut[1:])
    short = ClipTokenizer(context_length=8)(["a man in a red coat with a black bag"])["tokens"]
    assert short.shape == (1, 8) and short[0, -1] == tok.eot_id


def test_build_tokenizer() -> None:
    vocab = Vocabulary.build(["a b"])
    assert isinstance(build_tokenizer("words", vocab=vocab, max_length=7), WordTokenizer)
    assert build_tokenizer("words", vocab=vocab, max_length=7).max_length == 7
    assert build_tokenizer("clip_bpe", context_length=32).context_length == 32
    with pytest.raises(ValueError, match="needs a vocabulary"):
        build_tokenizer("words")
    with pytest.raises(ValueError, match="words, clip_bpe"):
        build_tokenizer("bert")
