"""Two gloo processes train a few steps: identical weights and queues, the single-process global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from conftest import FAST_OVERRIDES
from textreid.config import load_config
from textreid.data.readers import read_split
from textreid.data.sampler import IdentitySampler

STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, root: str, out: str, port: int) -> None:
    """One torchrun-like process: the environment torchrun sets, then the real train(). Forked from
    pytest (as DataLoader workers are): a spawned one would import torch and open_clip again, which
    cost ten times the two training steps."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from textreid.engine.trainer import train

    cfg = load_config("synth/tiny_moco", ["ROOT", root, *FAST_OVERRIDES])
    result = train(cfg, output_dir=Path(out) / "run", device="cpu", progress=False, stop_after_steps=STEPS)
    torch.save({"params": {k: v.detach() for k, v in result.model.named_parameters()},
                "buffers": {k: v for k, v in result.model.named_buffers() if k.startswith("queue.")}},
               Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_stay_in_sync(synth_root: Path, tmp_path: Path) -> None:
    mp.start_processes(_worker, args=(2, str(synth_root), str(tmp_path), _free_port()), nprocs=2, join=True,
                       start_method="fork")
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert r0["params"].keys() == r1["params"].keys()
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"]), "ranks' weights differ"
    assert all(torch.equal(r0["buffers"][k], r1["buffers"][k]) for k in r0["buffers"]), "ranks' queues differ"
    # only rank 0 writes; its checkpoint can resume
    assert (tmp_path / "run" / "interrupted.pth").is_file()

    # the queue holds the keys of both ranks, in the order of the single-process global batches
    records = read_split("synth_train", root=synth_root)
    cfg = load_config("synth/tiny_moco", FAST_OVERRIDES)
    single = IdentitySampler([r.person_id for r in records], batch_size=cfg.solver.ims_per_batch,
                             ims_per_id=cfg.dataloader.ims_per_id, seed=cfg.solver.seed, rank=0, world_size=1)
    expected = [records[i].person_id for batch in single.global_batches(0)[:STEPS] for i in batch]
    ids = r0["buffers"]["queue.id_queue"]
    assert ids[: len(expected)].tolist() == expected
    assert int(r0["buffers"]["queue.ptr"]) == len(expected) % cfg.model.moco.k
