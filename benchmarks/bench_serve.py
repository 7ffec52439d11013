"""Web-server load test: bounded concurrent clients against ``textreid serve`` on 127.0.0.1.

    .venv/bin/python benchmarks/bench_serve.py                   # 50 clients x 20 requests
    .venv/bin/python benchmarks/bench_serve.py --clients 20 --requests 50

What it does (all in a temporary folder, removed afterwards):
  1. saves a tiny real TextReID checkpoint (random weights: CLIP-style ResNet image tower of
     width 8 at 64x32 pixels, BiGRU text tower over a 20-word vocabulary, 64-d embeddings) and
     paints ``--images`` (300) two-colour "pedestrians" of 32x64 pixels;
  2. ``textreid index`` embeds them (exact search) and ``textreid serve --port 0`` serves the
     index in a separate process, bound to 127.0.0.1 only;
  3. ``--clients`` asyncio clients, each on one keep-alive connection, send ``--requests``
     requests each, back to back: 70% ``/api/search?q=<random colour description>&k=10``,
     20% ``/api/similar?i=<random>&k=10``, 10% ``/image/<random>``.

It reports requests/s (completed requests over the wall time from the first request to the
last response), latency p50 / p99 / max (time.perf_counter from sending a request to reading
its whole response), and errors (non-200 answers, timeouts, broken connections). Bounded:
at most 200 clients x 1000 requests, --deadline seconds in all (default 300), 30 s per request;
only 127.0.0.1 is ever contacted. Target (issue 9): 0 errors and p99 <= 5x p50 at 50 clients
on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COLOURS = ["red", "green", "blue", "yellow", "white", "black", "grey", "pink"]
ITEMS = ["coat", "shirt", "trousers", "skirt", "bag", "shoes"]
RGB = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220), "yellow": (240, 220, 40),
       "white": (245, 245, 245), "black": (15, 15, 15), "grey": (128, 128, 128), "pink": (250, 150, 200)}


def make_model_and_gallery(work: Path, n_images: int, seed: int) -> tuple[Path, Path]:
    """A tiny random-weight checkpoint and a folder of painted two-colour figures."""
    import torch
    from PIL import Image

    from textreid.config import Config, to_dict
    from textreid.data.vocab import Vocabulary
    from textreid.models.build import build_model
    from textreid.models.checkpoint import save_checkpoint

    cfg = Config()
    cfg.model.pretrained = "none"  # random towers (unset = the authors' weight files)
    cfg.input.height, cfg.input.width = 64, 32
    r = cfg.model.resnet
    r.layers, r.width, r.heads, r.output_dim, r.res5_stride = [1, 1, 1, 1], 8, 2, 32, 1
    cfg.model.textual_model = "bigru"
    cfg.model.gru.onehot = "clip_vit"
    cfg.model.gru.embedding_size, cfg.model.gru.num_units, cfg.model.gru.max_length = 16, 16, 24
    cfg.model.embedding.embed_head = "simple"
    cfg.model.embedding.feature_size = 64
    vocab = Vocabulary.build([f"a person in a {c} {i} with" for c in COLOURS for i in ITEMS])
    table = np.random.default_rng(seed).standard_normal((len(vocab), 16)).astype(np.float32)
    torch.manual_seed(seed)
    model = build_model(cfg, num_classes=8, vocab_size=len(vocab), word_table=table)
    ckpt = save_checkpoint(work / "tiny.pth", model=model, config=to_dict(cfg), vocab=vocab.to_dict())
    rng = np.random.default_rng(seed)
    gallery = work / "gallery"
    for n in range(n_images):
        top, bottom = rng.choice(COLOURS, 2)
        a = np.empty((64, 32, 3), dtype=np.uint8)
        a[:40], a[40:] = RGB[top], RGB[bottom]
        a = np.clip(a.astype(np.int16) + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8)
        (gallery / f"cam{n % 4}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(gallery / f"cam{n % 4}" / f"{n:04d}_{top}_{bottom}.png")
    return Path(ckpt), gallery


def _textreid(*args: str, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "textreid.cli", *args]
    if kw.pop("background", False):
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)


def start_server(index: Path) -> tuple[subprocess.Popen, int]:
    proc = _textreid("serve", "--index", str(index), "--host", "127.0.0.1", "--port", "0",
                     "--device", "cpu", background=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if m := re.search(r"at http://127\.0\.0\.1:(\d+)/", line):
            return proc, int(m.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"the server did not start: {proc.stdout.read()[-2000:]}")


async def _request(reader, writer, path: str, timeout: float) -> int:
    """One GET on a keep-alive connection; returns the status after reading the whole body."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    await asyncio.wait_for(reader.readexactly(length), timeout)
    return status


def _paths(rng: random.Random, n_images: int) -> str:
    u = rng.random()
    if u < 0.7:
        q = f"a person in a {rng.choice(COLOURS)} {rng.choice(ITEMS)} with {rng.choice(COLOURS)} {rng.choice(ITEMS)}"
        return "/api/search?q=" + q.replace(" ", "%20") + "&k=10"
    if u < 0.9:
        return f"/api/similar?i={rng.randrange(n_images)}&k=10"
    return f"/image/{rng.randrange(n_images)}"


async def client(port: int, n: int, n_images: int, seed: int, out: list, errors: list) -> None:
    rng = random.Random(seed)
    reader = writer = None
    for _ in range(n):
        path = _paths(rng, n_images)
        t0 = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
            status = await _request(reader, writer, path, 30)
            if status != 200:
                errors.append(f"{status} {path}")
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
            errors.append(f"{type(e).__name__} {path}")
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        out.append(time.perf_counter() - t0)
    if writer is not None:
        writer.close()


async def drive(port: int, clients: int, requests: int, n_images: int, deadline: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    tasks = [client(port, requests, n_images, 1000 + c, latencies, errors) for c in range(clients)]
    await asyncio.wait_for(asyncio.gather(*tasks), deadline)
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000.0
    return {"requests": len(latencies) + len(errors), "ok": len(latencies), "errors": len(errors),
            "error_kinds": sorted(set(errors))[:5], "seconds": wall, "rps": len(latencies) / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20, help="requests per client")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20, help="sequential requests before measuring")
    ap.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole load")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (1 <= args.clients <= 200 and 1 <= args.requests <= 1000 and 10 <= args.images <= 5000):
        raise SystemExit("bounds: 1..200 clients, 1..1000 requests each, 10..5000 images")
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        ckpt, gallery = make_model_and_gallery(work, args.images, args.seed)
        _textreid("index", "--checkpoint", str(ckpt), "--images", str(gallery), "--out",
                  str(work / "index"), "--device", "cpu", "--quiet")
        print(f"tiny model + {args.images}-image index in {time.perf_counter() - t:.1f} s")
        proc, port = start_server(work / "index")
        try:
            asyncio.run(drive(port, 1, args.warmup, args.images, 60))
            res = asyncio.run(drive(port, args.clients, args.requests, args.images, args.deadline))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{args.clients} clients x {args.requests} requests on 127.0.0.1:{port} "
          f"(70% /api/search, 20% /api/similar, 10% /image), {os.cpu_count()} CPU cores")
    print(f"requests/s {res['rps']:.1f}   p50 {res['p50_ms']:.1f} ms   p99 {res['p99_ms']:.1f} ms   "
          f"max {res['max_ms']:.1f} ms   errors {res['errors']} of {res['requests']}"
          + (f" ({', '.join(res['error_kinds'])})" if res["errors"] else ""))
    ratio = res["p99_ms"] / res["p50_ms"]
    ok = res["errors"] == 0 and ratio <= 5
    print(f"p99/p50 = {ratio:.2f}; target 0 errors and p99 <= 5x p50: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
