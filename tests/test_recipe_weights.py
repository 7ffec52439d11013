"""MODEL.PRETRAINED with a checkpoint in IRRA's layout (and RDE's): every entry lands where it belongs.

The files are written here in their real layout: ``torch.save({"model": state_dict, "optimizer", ...})``
in float16, with key names and shapes built from their modules' definitions (IRRA's ``model/build.py``
and ``clip_model.py``, RDE's ``CrossEmbeddingLayer_tse.py``), not from our model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from textreid.cli import main
from textreid.config import load_config
from textreid.models import clip_weights
from textreid.models.build import build_model
from textreid.models.clip_weights import ClipWeightsError

W, PATCH, CONTEXT, VOCAB, CLASSES, TSE = 64, 16, 48, 49408, 5, 32
GRID = (4, 2)  # INPUT 64x32, patch 16: a non-square grid, as IRRA's 24x8 at 384x128
SMALL = ["INPUT.HEIGHT", "64", "INPUT.WIDTH", "32", "INPUT.PADDING", "2", "MODEL.VIT.LAYERS", "1",
         "MODEL.TEXT_TRANSFORMER.LAYERS", "1", "MODEL.RDE.TSE_DIM", str(TSE)]


def _block(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    """IRRA's ResidualAttentionBlock (``clip_model.py``): nn.MultiheadAttention, ln_1, mlp.c_fc/c_proj, ln_2."""
    return {f"{prefix}attn.in_proj_weight": (3 * width, width), f"{prefix}attn.in_proj_bias": (3 * width,),
            f"{prefix}attn.out_proj.weight": (width, width), f"{prefix}attn.out_proj.bias": (width,),
            f"{prefix}ln_1.weight": (width,), f"{prefix}ln_1.bias": (width,),
            f"{prefix}mlp.c_fc.weight": (4 * width, width), f"{prefix}mlp.c_fc.bias": (4 * width,),
            f"{prefix}mlp.c_proj.weight": (width, 4 * width), f"{prefix}mlp.c_proj.bias": (width,),
            f"{prefix}ln_2.weight": (width,), f"{prefix}ln_2.bias": (width,)}


def _ln(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (width,), f"{prefix}.bias": (width,)}


def _linear(prefix: str, out: int, inp: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (out, inp), f"{prefix}.bias": (out,)}


def _bn(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    return {**_ln(prefix, width), f"{prefix}.running_mean": (width,), f"{prefix}.running_var": (width,),
            f"{prefix}.num_batches_tracked": ()}


def their_shapes(recipe: str, *, classes: int = CLASSES) -> dict[str, tuple[int, ...]]:
    """Key -> shape of IRRA's (``irra``) or RDE's (``rde``) model at our tiny sizes (1 layer per tower)."""
    v = "base_model.visual."
    shapes = {f"{v}class_embedding": (W,), f"{v}positional_embedding": (GRID[0] * GRID[1] + 1, W),
              f"{v}proj": (W, W), f"{v}conv1.weight": (W, 3, PATCH, PATCH), **_ln(f"{v}ln_pre", W),
              **_block(f"{v}transformer.resblocks.0.", W), **_ln(f"{v}ln_post", W),
              "base_model.positional_embedding": (CONTEXT, W), "base_model.text_projection": (W, W),
              "base_model.token_embedding.weight": (VOCAB, W), **_block("base_model.transformer.resblocks.0.", W),
              **_ln("base_model.ln_final", W)}
    if recipe == "irra":  # model/build.py: classifier, cross_attn, cross_modal_transformer, LNs, mlm_head
        shapes.update({**_linear("classifier", classes, W), "cross_attn.in_proj_weight": (3 * W, W),
                       "cross_attn.in_proj_bias": (3 * W,), **_linear("cross_attn.out_proj", W, W),
                       **_block("cross_modal_transformer.resblocks.0.", W), **_ln("ln_pre_t", W),
                       **_ln("ln_pre_i", W), **_ln("ln_post", W), **_linear("mlm_head.dense", W, W),
                       **_ln("mlm_head.ln", W), **_linear("mlm_head.fc", VOCAB, W)})
    else:  # CrossEmbeddingLayer_tse.py: Visual/TexualEmbeddingLayer(input_dim, embed_dim), MLP(.., 2 layers)
        for layer, linears in (("visul_emb_layer", ("linear", "fc")), ("texual_emb_layer", ("linear",))):
            for name in linears:
                shapes.update(_linear(f"{layer}.{name}", TSE, W))
            shapes.update({**_linear(f"{layer}.mlp.layers.0", TSE // 2, W),
                           **_linear(f"{layer}.mlp.layers.1", TSE, TSE // 2),
                           **_bn(f"{layer}.mlp.bns.0", TSE // 2), **_bn(f"{layer}.mlp.bns.1", TSE)})
    return shapes


def write_their_checkpoint(path: Path, recipe: str, *, seed: int = 0, **kw) -> dict[str, torch.Tensor]:
    """Random weights in their layout, saved as their Checkpointer does (float16 after convert_weights)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, shape in their_shapes(recipe, **kw).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = (torch.randn(shape, generator=g) * 0.1).half()
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "scheduler": {"last_epoch": 60},
                "num_epoch": 60, "iteration": 0, "epoch": 37}, path)
    return sd


def ours(key: str) -> str | None:
    """Where each of their keys goes in our model (None: RDE creates it but never applies it)."""
    if key.startswith("base_model.visual."):
        return "visual." + key[len("base_model.visual."):]
    if key.startswith("base_model."):
        return "textual." + key[len("base_model."):]
    if key.startswith(("visul_emb_layer.linear.", "visul_emb_layer.mlp.bns.1.", "texual_emb_layer.mlp.bns.1.")):
        return None
    for theirs, mine in (("visul_emb_layer.fc.", "branches.tse.visual_layer.linear."),
                         ("visul_emb_layer.", "branches.tse.visual_layer."),
                         ("texual_emb_layer.", "branches.tse.textual_layer.")):
        if key.startswith(theirs):
            return mine + key[len(theirs):]
    return key if key.startswith("classifier.") else "branches.mlm." + key


def _model(config: str, path: Path | str, *extra: str, classes: int = CLASSES):
    cfg = load_config(config, ["MODEL.PRETRAINED", str(path), *SMALL, *extra])
    return build_model(cfg, num_classes=classes, vocab_size=0, word_table=None)


@pytest.mark.parametrize("recipe", ["irra", "rde"])
def test_their_checkpoint_fills_towers_and_heads(recipe: str, tmp_path: Path, caplog, monkeypatch) -> None:
    path = tmp_path / "best.pth"
    theirs = write_their_checkpoint(path, recipe)
    reads = []
    real_read = clip_weights._read_state_dict
    monkeypatch.setattr(clip_weights, "_read_state_dict", lambda p: reads.append(p) or real_read(p))
    with caplog.at_level(logging.INFO, logger="textreid"):
        model = _model(f"synth/tiny_{recipe}", path)
    assert reads == [path]  # one read serves the image tower, the text tower and the heads
    state = model.state_dict()
    mapped = {ours(k): v for k, v in theirs.items() if ours(k) is not None}
    for key, value in mapped.items():
        assert key in state, key
        torch.testing.assert_close(state[key], value.to(state[key].dtype), rtol=0, atol=0, msg=key)
    # every weight of the model came from the file (none kept its random initialisation)
    assert sorted(k for k in state if k not in mapped and not k.endswith("attn_mask")) == []
    assert "IRRA/RDE layout" in caplog.text and "heads loaded" in caplog.text


def test_irra_checkpoint_starts_rde_with_fresh_token_selection(tmp_path: Path, caplog) -> None:
    """The common fine-tuning path: RDE's recipe from IRRA's weights (their MLM branch is not in RDE)."""
    path = tmp_path / "irra_best.pth"
    theirs = write_their_checkpoint(path, "irra", classes=11)
    with caplog.at_level(logging.INFO, logger="textreid"):
        model = _model("synth/tiny_rde", path)
    state = model.state_dict()
    torch.testing.assert_close(state["visual.proj"], theirs["base_model.visual.proj"].float())
    torch.testing.assert_close(state["textual.text_projection"], theirs["base_model.text_projection"].float())
    assert "in the file but not in this recipe's model: branches.mlm (28), classifier (2)" in caplog.text
    assert "kept their fresh initialisation: branches.tse (" in caplog.text


def test_classifier_of_another_dataset_keeps_its_fresh_initialisation(tmp_path: Path, caplog) -> None:
    path = tmp_path / "best.pth"
    theirs = write_their_checkpoint(path, "irra", classes=CLASSES + 3)
    with caplog.at_level(logging.INFO, logger="textreid"):
        model = _model("synth/tiny_irra", path)
    assert model.classifier.weight.shape == (CLASSES, W)
    torch.testing.assert_close(model.branches["mlm"].mlm_head.fc.weight, theirs["mlm_head.fc.weight"].float())
    assert "kept their fresh initialisation: classifier (2)" in caplog.text


def _one_line_error(config: str, path: Path, *extra: str) -> str:
    with pytest.raises(ClipWeightsError) as info:
        _model(config, path, *extra)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_unknown_layout_and_misfits_are_refused_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    sd = write_their_checkpoint(path, "irra")
    torch.save({"model": {**sd, "prompt_learner.ctx": torch.zeros(4, W)}}, path)
    assert "'prompt_learner.ctx'" in _one_line_error("synth/tiny_irra", path)
    write_their_checkpoint(path, "rde")
    msg = _one_line_error("synth/tiny_rde", path, "MODEL.RDE.TSE_DIM", str(2 * TSE))
    assert "branches.tse.textual_layer.linear.bias" in msg and f"({TSE},)" in msg
    msg = _one_line_error("synth/tiny_rde", path, "MODEL.VIT.WIDTH", "128")  # towers that do not fit
    assert "conv1.weight" in msg
    msg = _one_line_error("synth/tiny_rde", path, "INPUT.HEIGHT", "96")  # a non-square grid is not resized
    assert "non-square grid of 8 cells" in msg


@pytest.mark.slow
def test_cli_fine_tunes_rde_from_an_irra_checkpoint(synth_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "irra_best.pth"
    write_their_checkpoint(path, "irra")
    out = tmp_path / "run"
    rc = main(["train", "--config-file", "synth/tiny_rde", "--root", str(synth_root), "--output-dir", str(out),
               "--device", "cpu", "--quiet", "MODEL.PRETRAINED", str(path), *SMALL, "SOLVER.IMS_PER_BATCH", "16",
               "SOLVER.NUM_EPOCHS", "1", "SOLVER.WARMUP_EPOCHS", "0", "DATALOADER.NUM_WORKERS", "0"])
    assert rc == 0
    assert "IRRA/RDE layout" in (out / "train.log").read_text()


def test_their_checkpoint_as_model_weight_points_to_pretrained(tmp_path: Path) -> None:
    from textreid.engine.setup import load_initial_weights

    path = tmp_path / "best.pth"
    write_their_checkpoint(path, "irra")
    model = _model("synth/tiny_irra", "none")
    with pytest.raises(ValueError, match="give it as MODEL.PRETRAINED"):
        load_initial_weights(model, path)
