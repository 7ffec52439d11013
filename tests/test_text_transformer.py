"""ClipTextTower: reproduces CLIP's encode_text from every file format; sizes, truncation, errors."""

from __future__ import annotations

import pytest
import torch

from clip_factory import (
    EMBED_DIM,
    TEXT_CFG,
    save_openai_jit,
    save_safetensors,
    save_state_dict,
    tiny_clip,
)
from textreid.models.clip_weights import ClipWeightsError
from textreid.models.text_transformer import ClipTextTower

SOT, EOT = 49406, 49407


def _tokens(lengths: list[int], context: int, seed: int = 0) -> torch.Tensor:
    """CLIP-style rows: <sot> ids... <eot> then zero padding."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(len(lengths), context, dtype=torch.long)
    for i, n in enumerate(lengths):
        out[i, 0] = SOT
        out[i, 1 : n + 1] = torch.randint(1, SOT, (n,), generator=gen)
        out[i, n + 1] = EOT
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_text")
    model = tiny_clip("vit", seed=5)
    return {
        "model": model,
        "jit": save_openai_jit(model, root / "ViT-tiny.pt", fp16=False),
        "open_clip": save_state_dict(model, root / "epoch_1.pt", open_clip_checkpoint=True),
        "safetensors": save_safetensors(model, root / "open_clip_model.safetensors"),
    }


@pytest.mark.parametrize("fmt", ["jit", "open_clip", "safetensors"])
def test_reproduces_encode_text(files, fmt):
    tower = ClipTextTower(pretrained=files[fmt]).eval()
    context = TEXT_CFG["context_length"]
    assert tower.out_dim == EMBED_DIM and tower.context_length == context
    tokens = _tokens([0, 3, 9, context - 2], context)
    with torch.no_grad():
        expected = files["model"].encode_text(tokens)
        torch.testing.assert_close(tower({"tokens": tokens}), expected, rtol=1e-5, atol=1e-5)
        # trailing padding can be dropped: causal attention never looks ahead of <eot>
        short = tokens[:2, :5]
        torch.testing.assert_close(tower({"tokens": short}), expected[:2], rtol=1e-5, atol=1e-5)


def test_shorter_context_keeps_the_first_positions(files):
    tower = ClipTextTower(pretrained=files["safetensors"], context_length=8).eval()
    assert tower.context_length == 8 and tower.positional_embedding.shape[0] == 8
    tokens = _tokens([2, 6], 8)
    padded = torch.cat(
        [tokens, torch.zeros(2, TEXT_CFG["context_length"] - 8, dtype=torch.long)], dim=1
    )
    with torch.no_grad():
        torch.testing.assert_close(
            tower({"tokens": tokens}), files["model"].encode_text(padded), rtol=1e-5, atol=1e-5
        )
        with pytest.raises(ValueError, match="at most 8"):
            tower({"tokens": padded})


def test_size_mismatch_names_the_file(files):
    with pytest.raises(ClipWeightsError) as info:
        ClipTextTower(pretrained=files["jit"], width=128, heads=2)
    msg = str(info.value)
    assert str(files["jit"]) in msg and "token_embedding.weight" in msg


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "ViT-B-16.pt"
    with pytest.raises(ClipWeightsError) as info:
        ClipTextTower(pretrained=path)
    assert str(path) in str(info.value)


def test_random_init_is_fine_tunable():
    torch.manual_seed(0)
    tower = ClipTextTower(
        context_length=12, vocab_size=EOT + 1, width=32, layers=1, heads=2, output_dim=24
    )
    out = tower({"tokens": _tokens([1, 4, 10], 12)})
    assert out.shape == (3, 24) and tower.out_dim == 24
    out.sum().backward()
    grads = {name: p.grad for name, p in tower.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert (
        grads["text_projection"].abs().sum() > 0 and grads["token_embedding.weight"].abs().sum() > 0
    )
