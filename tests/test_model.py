"""TextReID model (simple and moco heads) and the config -> model builder, with tiny towers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import tiny_config
from textreid import losses
from textreid.config import Config
from textreid.criterion import TextReIDCriterion
from textreid.models.build import TEXT_TOWERS, build_model, tokenizer_kind
from textreid.models.gru import BiGRUTower
from textreid.models.recipes import build_criterion
from textreid.models.text_transformer import ClipTextTower
from textreid.models.textreid import TextReID
from textreid.models.visual import build_visual_tower


class TinyVisual(nn.Module):
    """Conv + BN + global pool: enough to have parameters and buffers."""

    def __init__(self, out_dim: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, out_dim, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_dim)
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(images)).mean(dim=(2, 3))  # [B, out_dim]


def _batch(b: int = 4, seed: int = 0, ids: list[int] | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 6, (b,), generator=g)
    word_ids = torch.randint(1, 20, (b, 6), generator=g)
    word_ids[torch.arange(6)[None, :] >= lengths[:, None]] = 0
    return {
        "images": torch.randn(b, 3, 8, 8, generator=g),
        "person_ids": torch.tensor(ids if ids is not None else [0, 0, 1, 2][:b]),
        "word_ids": word_ids,
        "lengths": lengths,
    }


def _model(head: str = "simple", **kw: object) -> TextReID:
    torch.manual_seed(0)
    text = BiGRUTower(vocab_size=20, embed_size=6, hidden_size=5)
    return TextReID(visual=TinyVisual(), textual=text, num_classes=3, feature_size=8, head=head, **kw)  # type: ignore[arg-type]


def test_layers_and_init() -> None:
    model = _model()
    assert model.v_embed_layer.weight.shape == (8, 10) and model.t_embed_layer.weight.shape == (8, 10)
    assert torch.count_nonzero(model.v_embed_layer.bias) == 0
    # Kaiming normal, fan_out: std = sqrt(2 / fan_out) -> check on a large layer
    big = TextReID(visual=TinyVisual(400), textual=TinyVisual(400), num_classes=500, feature_size=300)
    assert abs(big.v_embed_layer.weight.std().item() - (2 / 300) ** 0.5) < 0.005
    bound = (6 / (300 + 500)) ** 0.5  # Xavier uniform
    assert big.projection.shape == (300, 500) and big.projection.abs().max() <= bound
    assert abs(big.projection.std().item() - bound / 3**0.5) < 0.003
    assert model.embed_dim == 8 and model.num_classes == 3


def _weights(**kw: float) -> dict[str, float]:
    return {"instance": 1.0, "global_align": 1.0, "infonce": 1.0, **kw}


def test_simple_head_losses_match_loss_functions() -> None:
    model = _model()
    criterion = TextReIDCriterion(_weights(global_align=0.5, sdm=2.0))
    model.train()
    batch = _batch()
    out = criterion(model(batch), batch)
    assert set(out) == {"instance_loss", "global_align_loss", "sdm_loss"}  # itc weight 0: omitted
    ids = batch["person_ids"]
    # BatchNorm in train mode uses batch statistics: recompute the embeddings in train mode
    v = model.v_embed_layer(model.visual(batch["images"]))
    t = model.t_embed_layer(model.textual(batch))
    torch.testing.assert_close(out["instance_loss"], losses.instance_loss(model.projection, v, t, ids, epsilon=0.1))
    torch.testing.assert_close(out["global_align_loss"], 0.5 * losses.global_align_loss(v, t, ids))
    torch.testing.assert_close(out["sdm_loss"], 2.0 * losses.sdm_loss(v, t, ids, temperature=0.02))
    sum(out.values()).backward()
    assert model.projection.grad is not None and model.visual.conv.weight.grad is not None


def test_eval_forward_returns_raw_embeddings() -> None:
    model = _model().eval()
    batch = _batch()
    out = model(batch)
    torch.testing.assert_close(out["image_embeds"], model.embed_images(batch["images"]))
    torch.testing.assert_close(out["text_embeds"], model.embed_texts(batch))
    assert out["image_embeds"].shape == (4, 8)


def test_unknown_names_raise() -> None:
    with pytest.raises(ValueError, match="valid: simple, moco"):
        _model(head="clip")
    with pytest.raises(ValueError, match="unknown loss weight"):
        TextReIDCriterion({"triplet": 1.0})


def _naive_infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, queue_ids: list[int], batch_ids: list[int], t: float) -> torch.Tensor:
    kept = [j for j, qid in enumerate(queue_ids) if qid not in batch_ids]
    total = torch.zeros(())
    for i in range(q.shape[0]):
        logits = torch.stack([q[i] @ k[i], *[q[i] @ queue[j] for j in kept]]) / t
        total = total - torch.log_softmax(logits, dim=0)[0]
    return total / q.shape[0]


@pytest.mark.parametrize("fc", [False, True])
def test_moco_step(fc: bool) -> None:
    model = _model(head="moco", moco_k=8, moco_m=0.75, moco_fc=fc)
    # query and key start equal (copies made after init)
    for q, k in zip(model.visual.parameters(), model.v_encoder_k.parameters(), strict=True):
        assert torch.equal(q, k) and not k.requires_grad
    # make the key encoders differ, and give the queue known ids
    with torch.no_grad():
        for p in [*model.v_encoder_k.parameters(), *model.t_encoder_k.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
        if fc:
            for p in [*model.v_fc_k.parameters(), *model.t_fc_k.parameters()]:
                p.add_(0.1 * torch.randn_like(p))
        model.queue.id_queue.copy_(torch.tensor([0, 5, 2, -1, 6, 1, 7, 9]))
    before = copy.deepcopy(model)
    batch = _batch(ids=[0, 0, 1, 2])
    model.train()
    out = TextReIDCriterion(_weights())(model(batch), batch)
    assert set(out) == {"instance_loss", "global_align_loss", "infonce_loss"}

    # independent expectation: momentum-updated keys, naive filtered InfoNCE
    m = 0.75
    expect_vk, expect_tk = copy.deepcopy(before.v_encoder_k), copy.deepcopy(before.t_encoder_k)
    with torch.no_grad():
        for q, k in zip(before.visual.parameters(), expect_vk.parameters(), strict=True):
            k.copy_(m * k + (1 - m) * q)
        for q, k in zip(before.textual.parameters(), expect_tk.parameters(), strict=True):
            k.copy_(m * k + (1 - m) * q)
        if fc:
            v_proj, t_proj = copy.deepcopy(before.v_fc_k), copy.deepcopy(before.t_fc_k)
            for q, k in zip(before.v_fc_q.parameters(), v_proj.parameters(), strict=True):
                k.copy_(m * k + (1 - m) * q)
            for q, k in zip(before.t_fc_q.parameters(), t_proj.parameters(), strict=True):
                k.copy_(m * k + (1 - m) * q)
        else:
            # the authors project keys with the QUERY embedding layers
            v_proj, t_proj = before.v_embed_layer, before.t_embed_layer
        v_k = F.normalize(v_proj(expect_vk(batch["images"])), dim=1)
        t_k = F.normalize(t_proj(expect_tk(batch)), dim=1)
        v_feat, t_feat = before.visual(batch["images"]), before.textual(batch)
        if fc:
            v_q, t_q = F.normalize(before.v_fc_q(v_feat), dim=1), F.normalize(before.t_fc_q(t_feat), dim=1)
        else:
            v_q = F.normalize(before.v_embed_layer(v_feat), dim=1)
            t_q = F.normalize(before.t_embed_layer(t_feat), dim=1)
    queue_ids, batch_ids = [0, 5, 2, -1, 6, 1, 7, 9], [0, 1, 2]
    expected = _naive_infonce(v_q, t_k, before.queue.text_queue, queue_ids, batch_ids, 0.07)
    expected = expected + _naive_infonce(t_q, v_k, before.queue.image_queue, queue_ids, batch_ids, 0.07)
    torch.testing.assert_close(out["infonce_loss"], expected, atol=1e-5, rtol=1e-5)

    # key encoders updated with the formula; queue holds this step's keys
    for k_got, k_exp in zip(model.v_encoder_k.parameters(), expect_vk.parameters(), strict=True):
        torch.testing.assert_close(k_got, k_exp)
    torch.testing.assert_close(model.queue.image_queue[:4], v_k)
    torch.testing.assert_close(model.queue.text_queue[:4], t_k)
    torch.testing.assert_close(model.queue.text_queue[4:], before.queue.text_queue[4:])
    assert model.queue.id_queue.tolist() == [0, 0, 1, 2, 6, 1, 7, 9] and int(model.queue.ptr) == 4

    # the trainer sums *_loss entries; gradients reach the query side only
    sum(v for k, v in out.items() if k.endswith("_loss")).backward()
    assert model.visual.conv.weight.grad is not None
    assert all(p.grad is None for p in model.v_encoder_k.parameters())


def test_reinit_linear_like_authors_touches_attention_pool_and_keys() -> None:
    torch.manual_seed(0)
    visual = build_visual_tower("m_resnet50", image_size=(32, 32), layers=[1, 1, 1, 1], width=8, heads=2, output_dim=16)
    text = BiGRUTower(vocab_size=20, embed_size=6, hidden_size=5)
    model = TextReID(visual=visual, textual=text, num_classes=3, feature_size=8, head="moco", moco_k=8)
    q_proj = model.visual.attnpool.q_proj.weight.clone()
    conv = model.visual.conv1.weight.clone()
    assert torch.equal(model.visual.attnpool.q_proj.weight, model.v_encoder_k.attnpool.q_proj.weight)
    model.reinit_linear_like_authors()
    assert not torch.equal(model.visual.attnpool.q_proj.weight, q_proj)
    assert not torch.equal(model.visual.attnpool.q_proj.weight, model.v_encoder_k.attnpool.q_proj.weight)
    assert torch.equal(model.visual.conv1.weight, conv)  # convolutions untouched
    assert torch.count_nonzero(model.visual.attnpool.c_proj.bias) == 0


def test_freeze_towers() -> None:
    model = _model(freeze_towers=True).train()
    assert not any(p.requires_grad for p in model.visual.parameters())
    assert not model.visual.training and not model.textual.training and model.training
    assert model.projection.requires_grad and model.v_embed_layer.weight.requires_grad


# --------------------------------------------------------------------------- builder
def _tiny_cfg(head: str = "moco", text: str = "bigru", onehot: str = "clip_vit") -> Config:
    cfg = tiny_config(size=(64, 32), head=head, text=text, onehot=onehot)
    cfg.model.losses.sdm = 0.5
    return cfg


def test_build_model_from_config() -> None:
    table = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    cfg = _tiny_cfg()
    model, criterion = build_model(cfg, num_classes=5, vocab_size=20, word_table=table), build_criterion(cfg)
    assert model.head == "moco" and model.queue.image_queue.shape == (8, 12)
    assert model.visual.grid == (4, 2) and model.visual.out_dim == 16
    assert model.textual.embed is None and torch.equal(model.textual.word_table, torch.from_numpy(table))
    assert model.projection.shape == (12, 5) and criterion.weights["sdm"] == 0.5
    batch = {**_batch(), "images": torch.randn(4, 3, 64, 32)}
    out = criterion(model.train()(batch), batch)
    assert set(out) == {"instance_loss", "global_align_loss", "infonce_loss", "sdm_loss"}
    assert tokenizer_kind(_tiny_cfg()) == "words"


def test_build_learned_embedding_and_clip_transformer() -> None:
    model = build_model(_tiny_cfg("simple", onehot="yes"), num_classes=5, vocab_size=33, word_table=None)
    assert isinstance(model.textual.embed, nn.Embedding) and model.textual.embed.num_embeddings == 33
    assert not hasattr(model, "queue")
    cfg = _tiny_cfg("simple", text="clip_transformer")
    model = build_model(cfg, num_classes=5, vocab_size=0, word_table=None)
    assert isinstance(model.textual, ClipTextTower) and model.t_embed_layer.in_features == 12
    assert tokenizer_kind(cfg) == "clip_bpe"
    emb = model.eval().embed_texts({"tokens": torch.tensor([[49406, 320, 49407, 0]])})
    assert emb.shape == (1, 12)


def test_build_errors_are_actionable() -> None:
    with pytest.raises(ValueError, match="MODEL.GRU.ONEHOT"):
        build_model(_tiny_cfg(), num_classes=5, vocab_size=20, word_table=None)
    with pytest.raises(ValueError, match="20 words but the word table only 10 rows"):
        build_model(_tiny_cfg(), num_classes=5, vocab_size=20, word_table=np.zeros((10, 6), np.float32))
    cfg = _tiny_cfg()
    cfg.model.textual_model = "lstm"
    with pytest.raises(KeyError, match="valid names: " + ", ".join(sorted(TEXT_TOWERS))):
        build_model(cfg, num_classes=5, vocab_size=20, word_table=None)
    cfg = _tiny_cfg()
    cfg.model.pretrained = "/nonexistent/RN50.pt"
    with pytest.raises(FileNotFoundError, match="MODEL.PRETRAINED"):
        build_model(cfg, num_classes=5, vocab_size=20, word_table=np.zeros((20, 6), np.float32))
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        build_model(_tiny_cfg(), num_classes=0, vocab_size=20, word_table=np.zeros((20, 6), np.float32))


def test_build_reinit_linear_option() -> None:
    cfg = _tiny_cfg()
    table = np.zeros((20, 6), np.float32)
    torch.manual_seed(0)
    plain = build_model(cfg, num_classes=5, vocab_size=20, word_table=table)
    assert torch.equal(plain.visual.attnpool.k_proj.weight, plain.v_encoder_k.attnpool.k_proj.weight)
    cfg.model.reinit_linear = True
    reinit = build_model(cfg, num_classes=5, vocab_size=20, word_table=table)
    assert not torch.equal(reinit.visual.attnpool.k_proj.weight, reinit.v_encoder_k.attnpool.k_proj.weight)
