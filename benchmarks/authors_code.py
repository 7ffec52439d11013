"""Run the TextReID authors' code (github.com/BrandonHanx/TextReID) unchanged, on CPU or GPU.

Their ``lib/`` package is imported from a work tree the user points at (``--authors-repo DIR``);
nothing of it is copied into this project and no file of theirs is edited. What would stop it
from running on a CPU is neutralised at run time, by monkeypatching, while an ``AuthorsCode``
object is active:

- ``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` (hard-coded in their losses, their text
  tower's word table and their moco head) move to the harness's device instead of CUDA — a
  no-op on CPU, the original behaviour on a GPU;
- nothing else is needed for building the model, a training step, their sampler, their LR
  schedule and their metrics; their trainer and ``inference()`` (which read stale files from the
  output folder) are not used.

Their code needs ``yacs`` (their config) and ``tabulate`` (their metric table):
``pip install yacs tabulate``.

    from authors_code import AuthorsCode
    with AuthorsCode("/path/to/TextReID") as ac:
        cfg = ac.config("configs/cuhkpedes/moco_gru_cliprn50_ls_bs128_2048.yaml",
                        ["ROOT", "/data/root", "INPUT.HEIGHT", 128])
        model = ac.build_model(cfg)                  # their lib.models.model.build_model
        captions = ac.captions([[3, 5, 9]], [0])     # their Caption objects, as their dataset makes
        losses = model.train()(images, captions)     # {"instance_loss", "infonce_loss", ...}

Used by ``benchmarks/parity_authors.py`` (numerical parity) and the side-by-side speed
benchmarks. The test suite never needs their repository.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

# their modules, imported once their work tree is on sys.path
_MODULES = {
    "config": "lib.config",
    "model": "lib.models.model",
    "losses": "lib.models.losses",
    "solver": "lib.solver",
    "sampler": "lib.data.samplers.triplet_batch_sampler",
    "transforms": "lib.data.transforms",
    "caption": "lib.utils.caption",
    "evaluation": "lib.data.metrics.evaluation",
    "checkpoint": "lib.utils.checkpoint",
}


class AuthorsCode:
    """The authors' ``lib`` imported from ``repo`` with ``.cuda()`` redirected to ``device``.

    Use as a context manager (or call ``close()``): the monkeypatches are undone on exit and
    their ``lib`` package is removed from ``sys.modules``, so another work tree can be loaded.
    """

    def __init__(self, repo: str | Path, *, device: str | torch.device = "cpu") -> None:
        self.repo = Path(repo).expanduser().resolve()
        if not (self.repo / "lib" / "models" / "model.py").is_file():
            raise FileNotFoundError(
                f"{self.repo}: not a TextReID work tree (no lib/models/model.py); clone "
                "https://github.com/BrandonHanx/TextReID and pass its folder as --authors-repo"
            )
        for dep in ("yacs", "tabulate"):
            if importlib.util.find_spec(dep) is None:
                raise ModuleNotFoundError(f"the authors' code needs {dep!r}: pip install yacs tabulate")
        if "lib" in sys.modules and not str(getattr(sys.modules["lib"], "__file__", "")).startswith(str(self.repo)):
            raise RuntimeError(f"another package named 'lib' is already imported ({sys.modules['lib']}); "
                               "run the authors' code in a fresh process")
        self.device = torch.device(device)
        self._saved: dict[str, Any] = {}
        self._patch()
        sys.path.insert(0, str(self.repo))
        try:
            self.lib = SimpleNamespace(**{k: importlib.import_module(v) for k, v in _MODULES.items()})
        except Exception:
            self.close()
            raise

    # ----------------------------------------------------------------------- patches
    def _patch(self) -> None:
        device = self.device

        def tensor_cuda(t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return t.to(device, non_blocking=bool(kwargs.get("non_blocking", False)))

        def module_cuda(m: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
            return m.to(device)

        self._saved = {"tensor_cuda": torch.Tensor.cuda, "module_cuda": nn.Module.cuda}
        torch.Tensor.cuda = tensor_cuda  # type: ignore[method-assign]
        nn.Module.cuda = module_cuda  # type: ignore[method-assign]

    def close(self) -> None:
        """Undo the monkeypatches and forget their modules."""
        if self._saved:
            torch.Tensor.cuda = self._saved["tensor_cuda"]  # type: ignore[method-assign]
            nn.Module.cuda = self._saved["module_cuda"]  # type: ignore[method-assign]
            self._saved = {}
        if str(self.repo) in sys.path:
            sys.path.remove(str(self.repo))
        for name in [n for n in sys.modules if n == "lib" or n.startswith("lib.")]:
            del sys.modules[name]

    def __enter__(self) -> AuthorsCode:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------------- their objects
    def config(self, yaml_file: str | Path | None = None, opts: list[Any] | None = None):
        """Their yacs config: their defaults, then ``yaml_file`` (relative to the repo), then ``opts`` pairs."""
        cfg = self.lib.config.cfg.clone()
        if yaml_file is not None:
            path = Path(yaml_file)
            cfg.merge_from_file(str(path if path.is_absolute() else self.repo / path))
        if opts:
            cfg.merge_from_list([str(o) if isinstance(o, Path) else o for o in opts])
        cfg.MODEL.DEVICE = str(self.device)
        return cfg

    def build_model(self, cfg) -> nn.Module:
        """Their ``Model(cfg)`` (loads ROOT/pretrained/clip/RN50.pt etc. exactly as their code does)."""
        return self.lib.model.build_model(cfg).to(self.device)

    def optimizer_and_scheduler(self, cfg, model: nn.Module):
        """Their ``make_optimizer`` and ``make_lr_scheduler``."""
        optimizer = self.lib.solver.make_optimizer(cfg, model)
        return optimizer, self.lib.solver.make_lr_scheduler(cfg, optimizer)

    def captions(self, word_ids: list[list[int]], person_ids: list[int], *, max_length: int = 105) -> list:
        """Their ``Caption`` objects for ``onehot`` word ids, built as their dataset's ``__getitem__`` does."""
        Caption = self.lib.caption.Caption
        out = []
        for ids, pid in zip(word_ids, person_ids, strict=True):
            caption = Caption([torch.tensor(ids)], max_length=max_length, padded=False)
            caption.add_field("id", torch.tensor(pid))
            out.append(caption.to(self.device))
        return out

    def sampler_batches(self, person_ids: list[int], order: list[int], *, batch_size: int, ims_per_id: int,
                        python_seed: int) -> list[list[int]]:
        """Their ``TripletSampler`` epoch for dataset ``person_ids``, given the shuffled index ``order``
        (what their RandomSampler yields) and the seed of Python's ``random`` (their id draws)."""
        import random

        class _Ids:  # the only dataset method their sampler calls
            def __len__(self) -> int:
                return len(person_ids)

            def get_id_info(self, i: int) -> tuple[int, int]:
                return i, person_ids[i]

        sampler = self.lib.sampler.TripletSampler(list(order), _Ids(), batch_size, ims_per_id, drop_last=True)
        state = random.getstate()
        random.seed(python_seed)
        try:
            return [list(map(int, b)) for b in sampler._prepare_batches()]
        finally:
            random.setstate(state)

    def train_transform(self, cfg):
        """Their training transform (random erasing filled with ``INPUT.PIXEL_MEAN``)."""
        return self.lib.transforms.build_transforms(cfg, is_train=True)

    def rank(self, similarity: torch.Tensor, q_pids: torch.Tensor, g_pids: torch.Tensor,
             topk=(1, 5, 10)) -> tuple[torch.Tensor, torch.Tensor]:
        """Their CMC (%) at ``topk`` and mAP (%) for a ``[Q, G]`` similarity."""
        cmc, mean_ap, _ = self.lib.evaluation.rank(similarity, q_pids, g_pids, torch.tensor(topk), get_mAP=True)
        return cmc, mean_ap

    def rerank_term(self, q_feats: torch.Tensor, g_feats: torch.Tensor, k: int = 5, alpha: float = 0.05):
        """Their ``k_reciprocal`` Jaccard term added to the similarity (normalised features)."""
        return self.lib.evaluation.k_reciprocal(q_feats, g_feats, neighbor_num=k, alpha=alpha)
