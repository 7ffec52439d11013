"""Loss and division parity with IRRA's and RDE's own code, run unchanged from their repositories.

    python benchmarks/parity_irra_rde.py --irra-repo /path/to/IRRA --rde-repo /path/to/RDE/2024-CVPR-RDE

The same features / logits / labels go into their functions and ours; printed: the max absolute
difference per quantity (target <= 1e-5). Their files are imported as they are; what is CPU-hostile
or only needed for their plots is neutralised at run time: ``Tensor.cuda`` and ``.to("cuda")``
become no-ops, and matplotlib / pylab / prettytable (imported by RDE's training loop module, unused by
the division) are stand-in modules when not installed.

Quantities: SDM (IRRA ``compute_sdm``), ID (``compute_id``), MLM (``compute_mlm`` on full scores vs
ours on the masked positions, as our model computes it), per-pair TAL (RDE ``compute_per_loss``),
the weighted TAL terms of a step (RDE ``compute_rbs`` vs ``RDECriterion``), and the clean-pair
division of a fixed loss vector pair (RDE ``get_loss`` with a stand-in model/loader returning those
losses vs ``clean_probability`` + ``split_clean``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

from textreid import losses
from textreid.criterion import RDECriterion
from textreid.engine.division import clean_probability, split_clean


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _neutralise_cuda() -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    original_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and (args[0] == "cuda" or (isinstance(args[0], torch.device) and args[0].type == "cuda")):
            return self
        if str(kwargs.get("device", "")) == "cuda":
            return self
        return original_to(self, *args, **kwargs)

    torch.Tensor.to = to  # type: ignore[method-assign]


def _stub_plot_modules() -> None:
    for name in ("matplotlib", "matplotlib.pyplot", "pylab", "prettytable"):
        try:
            importlib.import_module(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.xticks = stub.yticks = stub.PrettyTable = lambda *a, **k: None  # type: ignore[attr-defined]
            stub.np = np  # type: ignore[attr-defined]
            stub.pyplot = stub  # type: ignore[attr-defined]
            sys.modules[name] = stub


def _batch(seed: int, b: int = 64, d: int = 512, c: int = 40):
    g = torch.Generator().manual_seed(seed)
    img, txt = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    ids = torch.randint(0, c, (b,), generator=g)
    return img, txt, ids, g


def irra_parity(repo: Path) -> dict[str, float]:
    theirs = _load("irra_objectives", repo / "model" / "objectives.py")
    out: dict[str, float] = {"SDM": 0.0, "ID": 0.0, "MLM": 0.0}
    for seed in range(5):
        img, txt, ids, g = _batch(seed)
        ref = theirs.compute_sdm(img, txt, ids, logit_scale=torch.tensor(50.0))
        out["SDM"] = max(out["SDM"], (ref - losses.sdm_loss(img, txt, ids, temperature=0.02)).abs().item())
        il, tl = torch.randn(64, 40, generator=g), torch.randn(64, 40, generator=g)
        out["ID"] = max(out["ID"], (theirs.compute_id(il, tl, ids) - losses.id_loss(il, tl, ids)).abs().item())
        scores = torch.randn(64 * 77, 2000, generator=g)
        labels = torch.randint(1, 2000, (64 * 77,), generator=g) * (torch.rand(64 * 77, generator=g) < 0.15)
        ours = losses.mlm_loss(scores[labels > 0], labels[labels > 0])
        out["MLM"] = max(out["MLM"], (theirs.compute_mlm(scores, labels) - ours).abs().item())
    return out


def rde_loss_parity(repo: Path) -> dict[str, float]:
    theirs = _load("rde_objectives", repo / "model" / "objectives.py")
    out = {"TAL per pair": 0.0, "TAL step (compute_rbs)": 0.0}
    for seed in range(5):
        img, txt, ids, g = _batch(seed)
        ref, _ = theirs.compute_per_loss(img, txt, ids, tau=0.015, margin=0.1, loss_type="TAL")
        ours = losses.tal_per_pair(img, txt, ids, tau=0.015, margin=0.1)
        out["TAL per pair"] = max(out["TAL per pair"], (ref - ours).abs().max().item())
        i2, t2 = torch.randn(64, 1024, generator=g), torch.randn(64, 1024, generator=g)
        hat = (torch.rand(64, generator=g) < 0.7).float()
        bge, tse = theirs.compute_rbs(img, txt, i2, t2, ids, label_hat=hat, tau=0.015, margin=0.1, loss_type="TAL")
        got = RDECriterion({"tal": 1.0, "tse": 1.0})(
            {"image_embeds": img, "text_embeds": txt, "image_tse": i2, "text_tse": t2},
            {"person_ids": ids, "clean": hat})
        delta = max((bge - got["tal_loss"]).abs().item(), (tse - got["tse_loss"]).abs().item())
        out["TAL step (compute_rbs)"] = max(out["TAL step (compute_rbs)"], delta)
    return out


def rde_division_parity(repo: Path) -> dict[str, float]:
    """RDE's get_loss on a stand-in model whose per-pair losses are a fixed bimodal vector pair."""
    sys.path.insert(0, str(repo))
    _stub_plot_modules()
    processor = _load("rde_processor", repo / "processor" / "processor.py")
    rng = np.random.default_rng(0)
    n, noisy = 2000, 600
    loss_a = np.concatenate([rng.gamma(2.0, 0.1, n - noisy), rng.normal(1.2, 0.2, noisy)]).astype(np.float32)
    loss_b = np.concatenate([rng.gamma(2.0, 0.12, n - noisy), rng.normal(1.0, 0.3, noisy)]).astype(np.float32)

    class Model:
        args = types.SimpleNamespace(noisy_rate=0.2, dataset_name="CUHK-PEDES")

        def eval(self):
            return self

        def compute_per_loss(self, batch):
            idx = batch["index"]
            return (torch.from_numpy(loss_a)[idx], torch.from_numpy(loss_b)[idx], torch.zeros(len(idx)),
                    torch.zeros(len(idx)))

    batches = [{"index": torch.arange(i, min(i + 128, n))} for i in range(0, n, 128)]
    class Dataset:
        real_correspondences = None

        def __len__(self) -> int:
            return n

    class Loader(list):
        dataset = Dataset()

    np.random.seed(0)  # their GaussianMixture draws its k-means start from numpy's global state
    pred_a, pred_b = processor.get_loss(Model(), Loader(batches))
    out, state = {}, np.random.RandomState(0)  # continues across the two fits, as numpy's global state did
    for name, vec, ref in (("division A", loss_a, pred_a), ("division B", loss_b, pred_b)):
        vec64 = torch.from_numpy(vec)
        scaled = ((vec64 - vec64.min()) / (vec64.max() - vec64.min())).numpy()  # their float32 scaling
        ours = split_clean(clean_probability(scaled, max_iter=10, tol=1e-2, reg_covar=5e-4, seed=state))
        out[name + " (pairs that differ)"] = float((ours != ref.numpy()).sum())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--irra-repo", type=Path, required=True, help="a checkout of anosorae/IRRA")
    p.add_argument("--rde-repo", type=Path, required=True, help="RDE's code folder (…/2024-CVPR-RDE)")
    a = p.parse_args()
    _neutralise_cuda()
    torch.manual_seed(0)
    rows = {**irra_parity(a.irra_repo), **rde_loss_parity(a.rde_repo), **rde_division_parity(a.rde_repo)}
    print(f"{'quantity':36s} max |theirs - ours|")
    for k, v in rows.items():
        print(f"{k:36s} {v:.3g}")
    worst = max(v for k, v in rows.items() if "differ" not in k)
    print(f"worst loss delta {worst:.3g} ({'within' if worst <= 1e-5 else 'ABOVE'} 1e-5); "
          f"division: {'identical' if all(v == 0 for k, v in rows.items() if 'differ' in k) else 'DIFFERS'}")


if __name__ == "__main__":
    main()
