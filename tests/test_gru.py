"""BiGRUTower: packing, the authors' max quirk, batch independence, word tables."""

from __future__ import annotations

import pytest
import torch

from textreid.models.gru import BiGRUTower


def _batch(lengths: list[int], vocab: int, gen: torch.Generator, width: int | None = None) -> dict[str, torch.Tensor]:
    width = width or max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, vocab, (n,), generator=gen)
    return {"word_ids": ids, "lengths": torch.tensor(lengths)}


def _naive(tower: BiGRUTower, text: dict[str, torch.Tensor], exact: bool) -> torch.Tensor:
    """Per caption, unpacked: run the GRU on the valid words only and take the max over time."""
    rows = []
    for ids, n in zip(text["word_ids"], text["lengths"].tolist(), strict=True):
        x = tower.word_vectors(ids[None, :n])  # [1, n, E]
        h, _ = tower.gru(x)  # [1, n, 2H]
        feat = h[0].max(dim=0).values
        rows.append(feat if exact else torch.clamp(feat, min=0))
    return torch.stack(rows)


@pytest.mark.parametrize("exact", [False, True])
def test_matches_naive_per_caption_loop(exact: bool) -> None:
    torch.manual_seed(0)
    tower = BiGRUTower(vocab_size=30, embed_size=8, hidden_size=6, exact_max=exact)
    text = _batch([5, 2, 7, 1], 30, torch.Generator().manual_seed(1), width=9)
    out = tower(text)
    assert out.shape == (4, 12) and tower.out_dim == 12
    torch.testing.assert_close(out, _naive(tower, text, exact), atol=1e-6, rtol=1e-5)


def test_quirk_vs_exact_and_authors_zero_padding() -> None:
    torch.manual_seed(0)
    quirk = BiGRUTower(vocab_size=30, embed_size=8, hidden_size=16)
    exact = BiGRUTower(vocab_size=30, embed_size=8, hidden_size=16, exact_max=True)
    exact.load_state_dict(quirk.state_dict())
    text = _batch([1, 2, 6], 30, torch.Generator().manual_seed(2))
    q, e = quirk(text), exact(text)
    assert (e < 0).any(), "a one-word caption should have negative features for the test to mean something"
    torch.testing.assert_close(q, e.clamp_min(0))
    # the authors' computation: max over the zero-padded unpacked output of the batch
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        quirk.word_vectors(text["word_ids"]), text["lengths"], batch_first=True, enforce_sorted=False
    )
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(quirk.gru(packed)[0], batch_first=True)
    authors = padded.max(dim=1).values
    torch.testing.assert_close(q[:2], authors[:2])  # shorter than the longest: identical


def test_batch_independence() -> None:
    torch.manual_seed(0)
    tower = BiGRUTower(vocab_size=40, embed_size=8, hidden_size=6)
    gen = torch.Generator().manual_seed(3)
    target = _batch([3], 40, gen)
    alone = tower(target)[0]
    for others in ([8, 1], [3, 3, 3], [1]):
        text = _batch(others, 40, gen, width=10)
        ids = torch.cat([text["word_ids"], torch.nn.functional.pad(target["word_ids"], (0, 7))])
        lengths = torch.cat([text["lengths"], target["lengths"]])
        out = tower({"word_ids": ids, "lengths": lengths})
        torch.testing.assert_close(out[-1], alone, atol=1e-6, rtol=1e-5)


def test_frozen_word_table_with_and_without_linear() -> None:
    table = torch.randn(20, 8)
    same = BiGRUTower(vocab_size=20, embed_size=8, hidden_size=4, word_table=table)
    assert same.embed is None and "word_table" in same.state_dict()
    assert not any(p is same.word_table for p in same.parameters())
    keys = set(same.state_dict())
    assert {"gru.weight_ih_l0", "gru.weight_hh_l0", "gru.weight_ih_l0_reverse", "gru.weight_hh_l0_reverse"} <= keys
    assert not any("bias" in k for k in keys)
    ids = torch.tensor([[3, 7, 0]])
    torch.testing.assert_close(same.word_vectors(ids)[0, 1], table[7])
    wider = BiGRUTower(vocab_size=20, embed_size=6, hidden_size=4, word_table=table)
    assert isinstance(wider.embed, torch.nn.Linear) and wider.embed.in_features == 8
    torch.testing.assert_close(wider.word_vectors(ids)[0, 1], wider.embed(table[7]))
    out = wider({"word_ids": ids, "lengths": torch.tensor([2])})
    assert out.shape == (1, 8)


def test_learned_embedding_padding_row_is_zero() -> None:
    tower = BiGRUTower(vocab_size=12, embed_size=4, hidden_size=3)
    assert isinstance(tower.embed, torch.nn.Embedding) and tower.embed.padding_idx == 0
    assert torch.count_nonzero(tower.embed.weight[0]) == 0
    assert tower.word_table is None and "word_table" not in tower.state_dict()


@pytest.mark.parametrize("lengths", [[0, 2], [2, 5]])
def test_bad_lengths_raise_clear_error(lengths: list[int]) -> None:
    tower = BiGRUTower(vocab_size=12, embed_size=4, hidden_size=3)
    text = {"word_ids": torch.ones(2, 4, dtype=torch.long), "lengths": torch.tensor(lengths)}
    with pytest.raises(ValueError, match=r"expected 1\.\.4"):
        tower(text)


def test_gradients_flow_through_packing() -> None:
    tower = BiGRUTower(vocab_size=12, embed_size=4, hidden_size=3, exact_max=True)
    text = _batch([4, 2], 12, torch.Generator().manual_seed(4))
    tower(text).sum().backward()
    assert tower.gru.weight_ih_l0.grad is not None and tower.gru.weight_ih_l0.grad.abs().sum() > 0
