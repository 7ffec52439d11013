"""The engine end to end on generated data: train → test through the real CLI, exact resume.

The 2-epoch and 1-epoch runs are trained once per session (``trained_run``, ``one_epoch_run`` in
conftest.py) and shared by these tests.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST_OVERRIDES
from textreid.cli import main
from textreid.config import load_config
from textreid.data.readers import read_split
from textreid.engine.demo import search_rank1
from textreid.engine.trainer import train
from textreid.models.checkpoint import load_checkpoint
from textreid.search.searcher import Searcher


def _cfg(root: Path, *extra: str):
    return load_config("synth/tiny_moco", ["ROOT", str(root), *FAST_OVERRIDES, *extra])


def test_train_then_test_through_the_cli(synth_root: Path, trained_run: Path, tmp_path: Path) -> None:
    out = trained_run  # `textreid train` through the CLI (conftest)
    for name in ("best.pth", "last.pth", "metrics.json", "train.log", "config.yaml", "vocab.json"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir())
    final = json.loads((out / "metrics.json").read_text())
    assert final["best_epoch"] in (1, 2)
    assert set(final["test"]) == {"t2i", "i2t"}
    assert (out / "metrics" / "val_epoch_001.json").is_file()
    assert not list(out.glob(".*.tmp*")), "no temp files left behind"

    test_dir = tmp_path / "test"
    rc = main(["test", "--config-file", "synth/tiny_moco", "--root", str(synth_root), "--checkpoint-file",
               str(out / "best.pth"), "--output-dir", str(test_dir), "--device", "cpu", "--quiet", "--rerank",
               "--save-features", *FAST_OVERRIDES])
    assert rc == 0
    metrics = json.loads((test_dir / "metrics.json").read_text())
    assert set(metrics) >= {"t2i", "i2t", "t2i_rerank", "i2t_rerank"}
    for key in ("R1", "R5", "R10", "mAP", "mINP"):
        # the same model on the same split: `textreid test` equals the trainer's final test
        assert metrics["t2i"][key] == pytest.approx(final["test"]["t2i"][key], abs=1e-4)
    feats = np.load(test_dir / "features.npz")
    n_images = len({r for r in feats["image_ids"].tolist()})
    assert feats["image_feats"].shape[0] == n_images == 4 * 3  # 4 test persons x 3 images, de-duplicated
    assert feats["text_feats"].shape[0] == 4 * 3 * 2
    assert np.allclose(np.linalg.norm(feats["text_feats"], axis=1), 1, atol=1e-5)

    # the search path (index the test gallery, type each caption) ranks exactly like the evaluation
    records = read_split("synth_test", root=synth_root)
    listing = tmp_path / "gallery.txt"
    listing.write_text("\n".join(sorted({str(r.image_path) for r in records})))
    rc = main(["index", "--checkpoint", str(out / "best.pth"), "--images", str(listing), "--out",
               str(tmp_path / "index"), "--device", "cpu", "--quiet"])
    assert rc == 0
    searcher = Searcher(tmp_path / "index")
    assert search_rank1(searcher, records) == pytest.approx(metrics["t2i"]["R1"], abs=1e-6)
    queries = tmp_path / "queries.txt"
    queries.write_text(records[0].caption + "\n" + records[1].caption + "\n")
    rc = main(["search", "--index", str(tmp_path / "index"), "--queries-file", str(queries), "-k", "3",
               "--html", str(tmp_path / "hits.html"), "--device", "cpu"])
    assert rc == 0 and "<img" in (tmp_path / "hits.html").read_text()


def test_resume_mid_epoch_gives_bit_identical_weights(synth_root: Path, trained_run: Path, tmp_path: Path) -> None:
    # the straight run is the shared one; stop mid-epoch (8 batches per epoch), then resume with loader workers: augmentation seeds are
    # per sample, so worker count and the interruption point cannot change the result
    cut = train(_cfg(synth_root), output_dir=tmp_path / "b", device="cpu", progress=False, stop_after_steps=5)
    assert cut.interrupted and (tmp_path / "b" / "interrupted.pth").is_file()
    # interrupted again exactly at the end of epoch 1 (8 batches): the resumed epoch is empty
    cut = train(_cfg(synth_root), output_dir=tmp_path / "b", device="cpu", progress=False, stop_after_steps=8,
                resume_from=str(tmp_path / "b" / "interrupted.pth"))
    assert cut.interrupted and (tmp_path / "b" / "interrupted.pth").is_file()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train(_cfg(synth_root, "DATALOADER.NUM_WORKERS", "1"), output_dir=tmp_path / "b", device="cpu",
                        progress=False, resume_from=str(tmp_path / "b" / "interrupted.pth"))
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]  # the empty resumed epoch is no misuse
    a = load_checkpoint(trained_run / "last.pth")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pth")["model"]
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ after resume: {different[:5]}"
    assert json.loads((trained_run / "metrics.json").read_text())["test"] == resumed.metrics["test"]


def test_resume_at_epoch_boundary(synth_root: Path, one_epoch_run: Path, trained_run: Path,
                                  tmp_path: Path) -> None:
    """A finished 1-epoch run continued to 2 epochs equals the straight 2-epoch run."""
    shutil.copytree(one_epoch_run, tmp_path / "c")  # the shared runs stay untouched
    ckpt = load_checkpoint(tmp_path / "c" / "last.pth")
    assert ckpt["train_state"]["epoch"] == 1
    resumed = train(_cfg(synth_root), output_dir=tmp_path / "c", device="cpu", progress=False,
                    resume_from=str(tmp_path / "c" / "last.pth"))
    continued = load_checkpoint(tmp_path / "c" / "last.pth")["model"]
    ref = load_checkpoint(trained_run / "last.pth")["model"]
    assert all(torch.equal(continued[k], ref[k]) for k in ref)
    assert resumed.metrics["test"] == json.loads((trained_run / "metrics.json").read_text())["test"]


def _textreid_in_child(argv: list[str], log: str) -> None:
    """``textreid ARGV`` in a forked child (a spawned ``python -m textreid.cli`` would spend most of
    the test importing torch again), its output in ``log``; exits with the command's status."""
    import os
    import sys

    f = open(log, "w", buffering=1)  # noqa: SIM115 - open until the child exits
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    sys.stdout = sys.stderr = f
    sys.exit(main(argv))


def test_ctrl_c_saves_a_resumable_checkpoint(synth_root: Path, tmp_path: Path) -> None:
    """A real SIGINT to a process running `textreid train`: it finishes the step, writes
    interrupted.pth and exits 130, so `textreid train ... && textreid test ...` stops there."""
    import multiprocessing
    import os
    import signal
    import time

    out, log = tmp_path / "run", tmp_path / "train.out"
    argv = ["train", "--config-file", "synth/tiny_moco", "--root", str(synth_root), "--output-dir", str(out),
            "--device", "cpu", "--quiet", *FAST_OVERRIDES, "SOLVER.NUM_EPOCHS", "50"]
    proc = multiprocessing.get_context("fork").Process(target=_textreid_in_child, args=(argv, str(log)))
    proc.start()
    try:
        deadline = time.time() + 600  # generous: a shared machine under load (a quiet one needs seconds)
        while not (out / "last.pth").is_file():  # at least one epoch done: training is under way
            assert proc.is_alive(), log.read_text()
            assert time.time() < deadline, "training did not start"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGINT)
        proc.join(timeout=300)
    finally:
        proc.kill()
        proc.join()
    output = log.read_text()
    assert proc.exitcode == 130, output
    ckpt = load_checkpoint(out / "interrupted.pth")
    assert ckpt["train_state"]["step"] >= 8  # one epoch is 8 steps
    assert ckpt["train_state"]["epoch"] < 50
    assert "stopped by SIGINT" in output and "resume-from" in output
    assert "Traceback" not in output


def test_sigterm_saves_and_exits_143(synth_root: Path, tmp_path: Path, capsys) -> None:
    """SIGTERM (a scheduler's stop) to a running `textreid train`, in this process: the trainer's
    handler turns it into a checkpoint at the current step and the command exits 128 + 15."""
    import os
    import signal
    import threading
    import time

    def send_when_handled() -> None:  # only once the trainer has installed its handler (never kills pytest)
        deadline = time.time() + 60
        while time.time() < deadline:
            if getattr(signal.getsignal(signal.SIGTERM), "__self__", None).__class__.__name__ == "_Interrupt":
                time.sleep(0.5)  # let a step or two run
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.02)

    sender = threading.Thread(target=send_when_handled, daemon=True)
    sender.start()
    out = tmp_path / "run"
    rc = main(["train", "--config-file", "synth/tiny_moco", "--root", str(synth_root), "--output-dir", str(out),
               "--device", "cpu", "--quiet", *FAST_OVERRIDES, "SOLVER.NUM_EPOCHS", "50"])
    sender.join()
    err = capsys.readouterr().err
    assert rc == 143, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    ckpt = load_checkpoint(out / "interrupted.pth")
    assert 1 <= ckpt["train_state"]["step"] and ckpt["train_state"]["epoch"] < 50
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again


def test_model_weight_starts_training_from_a_checkpoint(synth_root: Path, one_epoch_run: Path) -> None:
    """MODEL.WEIGHT (the authors' key) names a checkpoint to fine-tune from; fresh layers where shapes differ."""
    from textreid.engine.setup import build_model_for_training, prepare_data

    weights = str(one_epoch_run / "last.pth")
    source = load_checkpoint(weights)["model"]
    cfg = _cfg(synth_root, "MODEL.WEIGHT", weights)
    model = build_model_for_training(cfg, prepare_data(cfg))
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())

    longer_queue = _cfg(synth_root, "MODEL.WEIGHT", weights, "MODEL.MOCO.K", "128")
    model = build_model_for_training(longer_queue, prepare_data(longer_queue))
    assert torch.equal(model.state_dict()["projection"], source["projection"])
    assert model.state_dict()["queue.id_queue"].shape == (128,)  # kept fresh: the shape differs

    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHT"):
        build_model_for_training(_cfg(synth_root, "MODEL.WEIGHT", "nope.pth"), prepare_data(cfg))


def test_model_weight_of_other_persons_keeps_a_fresh_classifier_and_this_runs_word_table(
        synth_root: Path, one_epoch_run: Path, tmp_path: Path, caplog) -> None:
    """Fine-tuning from a model trained on other persons (bench_noise's pretraining): the identity
    classifier for another number of persons keeps its fresh weights (logged); the frozen word table
    is this run's (the same words may sit in another order there); everything else is the file's."""
    from textreid.engine.setup import build_model_for_training, prepare_data

    ckpt = load_checkpoint(one_epoch_run / "last.pth")
    source = ckpt["model"]
    dim, persons = source["projection"].shape
    source["projection"] = torch.randn(dim, persons + 7)  # a classifier for 7 more persons
    own_table = source["textual.word_table"].clone()
    source["textual.word_table"] = own_table.flip(0)  # another vocabulary order
    other = tmp_path / "other_persons.pth"
    torch.save(ckpt, other)

    cfg = _cfg(synth_root, "MODEL.WEIGHT", str(other))
    fresh = build_model_for_training(_cfg(synth_root), prepare_data(cfg)).state_dict()
    caplog.set_level("INFO", logger="textreid")
    model = build_model_for_training(cfg, prepare_data(cfg)).state_dict()
    assert model["projection"].shape == (dim, persons) and not torch.equal(model["projection"][:, :persons],
                                                                           source["projection"][:, :persons])
    assert torch.equal(model["textual.word_table"], own_table)
    assert torch.equal(model["textual.word_table"], fresh["textual.word_table"])
    assert all(torch.equal(v, source[k]) for k, v in model.items() if k not in ("projection",) and "word_table" not in k)
    assert "kept fresh (shape differs): projection" in caplog.text


def test_bench_noise_fine_tunes_every_run_from_the_pretrained_model(tmp_path: Path) -> None:
    """bench_noise's plan: with --init every run (plain and divided, every rate and seed) starts from it."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_noise

    init = tmp_path / "pre.pth"
    init.write_bytes(b"")
    a = bench_noise.parse_args(["--root", "r", "--init", str(init), "--rates", "0.5", "--seeds", "0", "1",
                                "--division-start", "0", "SOLVER.NUM_EPOCHS", "3"])
    rows = bench_noise.plan(a)
    assert list(rows) == ["clean", "clean, clean-pair division", "50% noisy, plain", "50% noisy, clean-pair division"]
    for runs in rows.values():
        assert len(runs) == 2
        for o in runs:
            assert o[o.index("MODEL.WEIGHT") + 1] == str(init.resolve()) and o[:2] == ["SOLVER.NUM_EPOCHS", "3"]
    assert "fine-tuned from" in bench_noise.init_description(a)
    with pytest.raises(SystemExit):  # one way to say where the runs start
        bench_noise.parse_args(["--root", "r", "--init", str(init), "--pretrain-root", "p"])
    scratch = bench_noise.parse_args(["--root", "r", "--rates", "0.5", "--seeds", "0"])
    assert all("MODEL.WEIGHT" not in o for runs in bench_noise.plan(scratch).values() for o in runs)
    assert bench_noise.init_description(scratch) == "from random initialisation"


def test_test_every_epoch_reports_the_authors_protocol_across_a_resume(synth_root: Path, trained_run: Path,
                                                                       tmp_path: Path, capsys) -> None:
    """TEST.EVERY_EPOCH: one test figure per epoch, kept through a stop and resume, and their maximum
    reported beside the val-selected figure as the authors' protocol; training itself is unchanged."""
    assert "authors_protocol" not in json.loads((trained_run / "metrics.json").read_text())  # off by default
    out = tmp_path / "e"
    cfg = _cfg(synth_root, "TEST.EVERY_EPOCH", "True")
    cut = train(cfg, output_dir=out, device="cpu", progress=False, stop_after_steps=12)  # epoch 2 of 2, mid-way
    assert cut.interrupted
    saved = load_checkpoint(out / "interrupted.pth")["train_state"]["test_history"]
    assert [h["epoch"] for h in saved] == [1]
    epoch1 = json.loads((out / "metrics" / "test_epoch_001.json").read_text())["t2i"]
    assert saved[0]["R1"] == epoch1["R1"]
    capsys.readouterr()
    resumed = train(cfg, output_dir=out, device="cpu", progress=False, resume_from=str(out / "interrupted.pth"))
    printed = capsys.readouterr().out
    report = resumed.metrics["authors_protocol"]
    assert "selected on test" in report["selection"]
    epoch2 = json.loads((out / "metrics" / "test_epoch_002.json").read_text())["t2i"]
    assert report["R1_per_epoch"] == {"1": epoch1["R1"], "2": epoch2["R1"]}
    best = 1 if epoch1["R1"] >= epoch2["R1"] else 2
    assert report["best_epoch"] == best and report["t2i"] == (epoch1, epoch2)[best - 1]
    assert json.loads((out / "metrics.json").read_text())["authors_protocol"] == report
    assert "authors' protocol (selection on test): max t2i Rank-1" in printed
    assert f"{report['t2i']['R1']:.2f} at epoch {best}" in printed
    assert "TEST (model selected on val" in printed  # ours stays beside it
    # evaluating TEST every epoch leaves training alone: same weights and val-selected test as the plain run
    a = load_checkpoint(trained_run / "last.pth")["model"]
    b = load_checkpoint(out / "last.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["test"] == json.loads((trained_run / "metrics.json").read_text())["test"]
    # the epoch-2 figure is the test metric of the epoch-2 model
    rc = main(["test", "--config-file", "synth/tiny_moco", "--root", str(synth_root), "--checkpoint-file",
               str(out / "last.pth"), "--output-dir", str(tmp_path / "t"), "--device", "cpu", "--quiet",
               *FAST_OVERRIDES])
    assert rc == 0
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["t2i"]["R1"] == pytest.approx(epoch2["R1"])


def test_bench_noise_random_control_keeps_the_divisions_share_and_restores_it() -> None:
    """The control run: the divided run's overrides, a random division keeping the share the real one kept."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_noise

    from textreid.engine.division import CleanPairDivision

    a = bench_noise.parse_args(["--root", "r", "--rates", "0.8", "--seeds", "0", "1", "--random-control"])
    rows = bench_noise.plan(a)
    divided = "80% noisy, clean-pair division"
    results = {divided: {0: {"division": {"kept": 0.6}}, 1: {"division": {"kept": 0.3}}}}
    controls = bench_noise.random_controls(a, rows, results)
    assert [(c[1], c[3]) for c in controls] == [(0, 0.6), (1, 0.3)]
    assert all(c[2] == rows[divided][i] and "DIVISION.ENABLED" in c[2] for i, c in enumerate(controls))
    real = CleanPairDivision.divide
    with bench_noise._random_division(0.3, seed=1):
        division = CleanPairDivision(start_epoch=1)
        assert division.divide(None, list(range(10)), epoch=0) is None
        kept = division.divide(None, list(range(4000)), epoch=1)
        assert abs(float(kept.mean()) - 0.3) < 0.03
        assert not torch.equal(kept, division.divide(None, list(range(4000)), epoch=2))  # redrawn each epoch
    assert CleanPairDivision.divide is real


def test_recomputed_stages_train_to_the_same_weights(synth_root: Path, one_epoch_run: Path, tmp_path: Path,
                                                     monkeypatch) -> None:
    """SOLVER.RECOMPUTE_STAGES reaches the trainer's model and changes nothing but memory: same weights,
    BatchNorm statistics and queues after an epoch."""
    import textreid.models.recompute as recompute

    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return recompute.torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(recompute, "checkpoint", counted)
    cfg = _cfg(synth_root, "SOLVER.NUM_EPOCHS", "1", "SOLVER.RECOMPUTE_STAGES", "2")
    train(cfg, output_dir=tmp_path / "run", device="cpu", progress=False)
    assert calls  # the stem and layer1 went through the recomputation
    ours = load_checkpoint(tmp_path / "run" / "last.pth")["model"]
    plain = load_checkpoint(one_epoch_run / "last.pth")["model"]
    assert ours.keys() == plain.keys()
    assert all(torch.equal(ours[k], plain[k]) for k in plain), [k for k in plain if not torch.equal(ours[k], plain[k])]
