"""An independent exporter to the authors' ``best.pth`` key layout, for import tests."""

from __future__ import annotations

import torch

from textreid.models.textreid import TextReID


def export_authors(model: TextReID, head: str, module_prefix: bool = False) -> dict:
    """Independent exporter: writes ``model`` in the authors' key layout (their Model/MoCoHead/SimpleHead)."""
    no_table = lambda sd: {k: v for k, v in sd.items() if k != "word_table"}  # noqa: E731 (theirs is not a buffer)
    sd: dict[str, torch.Tensor] = {}
    for k, v in model.visual.state_dict().items():
        sd[f"visual_model.{k}"] = v
    for k, v in no_table(model.textual.state_dict()).items():
        sd[f"textual_model.{k}"] = v
    if head == "moco":
        for k, v in model.visual.state_dict().items():
            sd[f"embed_model.v_encoder_q.{k}"] = v  # the same module registered twice
        for k, v in no_table(model.textual.state_dict()).items():
            sd[f"embed_model.t_encoder_q.{k}"] = v
        for k, v in model.v_encoder_k.state_dict().items():
            sd[f"embed_model.v_encoder_k.{k}"] = v
        for k, v in no_table(model.t_encoder_k.state_dict()).items():
            sd[f"embed_model.t_encoder_k.{k}"] = v
        for name in ("v_embed_layer", "t_embed_layer"):
            for k, v in getattr(model, name).state_dict().items():
                sd[f"embed_model.{name}.{k}"] = v
        sd["embed_model.t_queue"] = model.queue.text_queue.t().clone()  # [D, K]
        sd["embed_model.v_queue"] = model.queue.image_queue.t().clone()
        sd["embed_model.id_queue"] = model.queue.id_queue.view(1, -1).clone()  # [1, K]
        sd["embed_model.queue_ptr"] = model.queue.ptr.view(1).clone()  # [1]
    else:
        for ours, theirs in (("v_embed_layer", "visual_embed_layer"), ("t_embed_layer", "textual_embed_layer")):
            for k, v in getattr(model, ours).state_dict().items():
                sd[f"embed_model.{theirs}.{k}"] = v
    sd["embed_model.loss_evaluator.projection"] = model.projection.detach().clone()
    if module_prefix:
        sd = {f"module.{k}": v for k, v in sd.items()}
    return {"model": sd, "optimizer": {"state": {}, "param_groups": []}, "scheduler": {"last_epoch": 3}, "iteration": 120, "epoch": 3}
