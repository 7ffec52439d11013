"""`textreid demo`: synthetic pedestrians → train the tiny model (moco head) → evaluate → results page.

Everything lands under one folder (default ``demo/``): ``datasets/synth`` (generated once),
``output/tiny_moco`` (checkpoints, logs, metrics.json), ``index`` (the test gallery as a search
index) and ``results.html`` (three example queries with their top-10 and ground truth).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from textreid.config import load_config
from textreid.engine.setup import prepare_data

log = logging.getLogger("textreid")

DEMO_CONFIG = "synth/tiny_moco"
DEMO_IDS = 500


def chance_level(records) -> dict[str, float]:
    """Expected text-to-image R1 and mAP of a random ranking (per query: #relevant / gallery size)."""
    images: dict[int, int] = {}
    for r in records:
        images[r.image_id] = r.person_id
    per_person: dict[int, int] = {}
    for pid in images.values():
        per_person[pid] = per_person.get(pid, 0) + 1
    g = len(images)
    r1 = sum(per_person[r.person_id] / g for r in records) / len(records)
    return {"R1": 100.0 * r1}


def run_demo(out: Path, *, num_ids: int | None = None, seed: int = 0, epochs: int | None = None,
             device: str = "cpu", progress: bool = True) -> dict:
    """Run the whole demo; returns the final metrics (also in ``out/output/tiny_moco/metrics.json``)."""
    from textreid.api import load
    from textreid.data.synth import generate
    from textreid.engine.trainer import train
    from textreid.metrics import format_table
    from textreid.search.html import render_results
    from textreid.search.index import build_index
    from textreid.search.searcher import Searcher

    t0 = time.perf_counter()
    out = Path(out)
    synth_dir = out / "datasets" / "synth"
    if not (synth_dir / "annotations" / "test.json").is_file():
        print(f"[1/4] generating {num_ids or DEMO_IDS} synthetic persons into {synth_dir}")
        generate(synth_dir, num_ids=num_ids or DEMO_IDS, seed=seed, progress=progress)
    else:
        print(f"[1/4] using the synthetic set in {synth_dir}")

    overrides = ["ROOT", str(out), "SOLVER.SEED", str(seed)]
    if epochs is not None:
        overrides += ["SOLVER.NUM_EPOCHS", str(epochs)]
    cfg = load_config(DEMO_CONFIG, overrides)
    run_dir = out / "output" / "tiny_moco"
    print(f"[2/4] training {DEMO_CONFIG} on {device} for {cfg.solver.num_epochs} epochs -> {run_dir}")
    final = train(cfg, output_dir=run_dir, device=device, progress=progress).metrics

    print("[3/4] test split (model selected on val):")
    data = prepare_data(cfg)
    chance = chance_level(data.test)
    print(format_table(final["test"]))
    print(f"chance level (random ranking): t2i R1 = {chance['R1']:.2f}")

    print("[4/4] indexing the test gallery and writing the results page")
    gallery = sorted({str(r.image_path) for r in data.test})
    encoder = load(run_dir / "best.pth", device=device)
    build_index(encoder, [Path(p) for p in gallery], out / "index", checkpoint_path=run_dir / "best.pth",
                progress=progress)
    searcher = Searcher(out / "index", encoder=encoder)
    search_r1 = search_rank1(searcher, data.test)
    print(f"search path: Rank-1 over all {len(data.test)} test captions = {search_r1:.2f} "
          f"(evaluation: {final['test']['t2i']['R1']:.2f})")
    examples = [data.test[i] for i in _example_indices(len(data.test))]
    queries = [r.caption for r in examples]
    hits = searcher.search(queries, k=10)
    truth = [{str(x.image_path) for x in data.test if x.person_id == r.person_id} for r in examples]
    page = render_results(queries, hits, out / "results.html", ground_truth=truth,
                          title="textreid demo: synthetic test split")
    summary = {"test": final["test"], "chance_t2i_R1": chance["R1"], "search_R1": search_r1,
               "seconds": time.perf_counter() - t0,
               "results_page": str(page)}
    print(f"done in {summary['seconds'] / 60:.1f} min; open {page}")
    return summary


def search_rank1(searcher, records) -> float:
    """Rank-1 (%) of free-text search: each caption as typed text, top hit of the same person."""
    person_of = {Path(r.image_path).resolve(): r.person_id for r in records}
    hits = searcher.search([r.caption for r in records], k=1)
    return 100.0 * sum(person_of[Path(h[0].path).resolve()] == r.person_id for h, r in zip(hits, records, strict=True)) / len(records)


def _example_indices(n: int) -> list[int]:
    """Three queries spread over the split (deterministic)."""
    return sorted({0, n // 3, (2 * n) // 3})[:3] if n >= 3 else list(range(n))
