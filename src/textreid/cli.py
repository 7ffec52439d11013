"""The ``textreid`` command: the only place that reads argv (and, with config/, configuration).

Each subcommand parses its flags, builds explicit arguments and calls one library function.
Imports are done inside the handlers so ``textreid --help`` stays fast. Every failure goes
through one path (:mod:`textreid.errors`): one line on stderr naming the culprit and exit
status 2 (1 for an internal error, 130/143 when interrupted); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from textreid.config import load_config, validate_config

DEFAULT_SYNTH_IDS = 1000


# --------------------------------------------------------------------------- helpers
def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config-file", required=required, metavar="FILE",
                   help="YAML config (a path, or a packaged name such as cuhkpedes/moco_gru_cliprn50_ls_bs128_2048)")
    p.add_argument("--root", default=None, metavar="DIR",
                   help="data root: datasets are read from DIR/datasets/<name>/ (default: config ROOT, './')")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides, e.g. SOLVER.BASE_LR 2e-4 (after all flags)")


def _config(args: argparse.Namespace, training: bool = False):
    """The config of the command line, refused when a value is certainly wrong (before any data are read)."""
    cfg = load_config(args.config_file, args.opts)
    if args.root is not None:
        cfg.root = args.root
    return validate_config(cfg, training=training, world_size=int(os.environ.get("WORLD_SIZE", "1")))


def _default_output_dir(cfg, config_file: str) -> Path:
    """The authors' convention: <root>/output/<config folder>/<config name>."""
    p = Path(config_file)
    return Path(cfg.root) / "output" / p.parent.name / p.stem


def _device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return f"cuda:{local_rank}"
    return "cpu"


# --------------------------------------------------------------------------- commands
def cmd_synth(args: argparse.Namespace) -> int:
    from textreid.data.synth import generate

    summary = generate(args.out, num_ids=args.ids, seed=args.seed, images_per_id=args.images_per_id,
                       image_size=tuple(args.image_size), val_fraction=args.val_fraction,
                       test_fraction=args.test_fraction, workers=args.workers, progress=not args.quiet)
    if args.noise_rates:  # noisy training splits in RDE's noise-index format
        from textreid.data.noise import write_noise_files
        from textreid.data.readers import read_split

        train = read_split("synth_train", dataset_dir=args.out)
        files = write_noise_files(args.out, "synth", train, rates=args.noise_rates, seed=args.seed)
        summary = {**summary, "noise_files": [str(f) for f in files]}
    print(json.dumps(summary, indent=2))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from textreid.data.check import check_datasets, identity_minimums
    from textreid.engine.setup import val_names

    cfg = _config(args, training=True)
    val = val_names(cfg)  # the splits `train` validates on ("auto" resolved the same way)
    names = list(dict.fromkeys(cfg.datasets.train + val + cfg.datasets.test))
    ids_per_batch = cfg.solver.ims_per_batch // cfg.dataloader.ims_per_id
    report = check_datasets(names, root=cfg.root, dataset_dir=cfg.datasets.dir,
                            annotations=cfg.datasets.annotations, max_length=_max_length(cfg),
                            open_images=not args.no_open_images, progress=not args.quiet,
                            min_ids=identity_minimums(cfg.datasets.train, val + cfg.datasets.test,
                                                      ids_per_batch=ids_per_batch),
                            optional=[n for n in val if n not in cfg.datasets.val])
    print(report.table())
    for note in report.notes:
        print(f"NOTE {note}")
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    print("OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)")
    return 0 if report.ok else 1


def _max_length(cfg) -> int:
    if cfg.model.textual_model == "clip_transformer":
        return cfg.model.text_transformer.context_length
    return cfg.model.gru.max_length


def cmd_vocab(args: argparse.Namespace) -> int:
    from textreid.engine.vocab import build_vocab_and_table

    cfg = _config(args)
    out = build_vocab_and_table(cfg, clip_checkpoint=args.clip, device=_device(args.device), progress=not args.quiet)
    print(json.dumps(out, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from textreid.engine.trainer import train

    cfg = _config(args, training=True)
    output_dir = Path(args.output_dir) if args.output_dir else _default_output_dir(cfg, args.config_file)
    result = train(cfg, output_dir=output_dir, resume_from=args.resume_from, use_tensorboard=args.use_tensorboard,
                   device=_device(args.device), progress=not args.quiet)
    if result.interrupted and result.signal:  # saved interrupted.pth; a non-zero status stops `train && test`
        import signal

        print(f"textreid train: stopped by {signal.Signals(result.signal).name} after saving "
              f"{output_dir / 'interrupted.pth'} (continue with --resume-from)", file=sys.stderr)
        return 128 + result.signal
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from textreid.engine.evaluator import test

    cfg = _config(args)
    output_dir = Path(args.output_dir) if args.output_dir else _default_output_dir(cfg, args.config_file)
    test(cfg, checkpoint_file=args.checkpoint_file, output_dir=output_dir, rerank=args.rerank or cfg.test.rerank,
         save_features=args.save_features, split=args.split, device=_device(args.device),
         progress=not args.quiet)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from textreid.engine.setup import convert_authors_checkpoint

    out = convert_authors_checkpoint(_config(args), args.checkpoint_file, args.out)
    print(f"wrote {out} (usable by textreid.load, index, search and serve)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    import textreid
    from textreid import dist
    from textreid.search.index import build_index, merge_shards, rank_world_from_env, shard_dir_name
    from textreid.search.store import check_output_dir

    rank, world = rank_world_from_env()
    # refuse a dangerous --out before loading the model or reading any image
    check_output_dir(args.out, [args.images] if Path(args.images).is_dir() else [])
    if world > 1:  # under torchrun: each rank embeds its shard, rank 0 joins them
        from textreid.engine.runtime import init_distributed

        init_distributed(_device(args.device))
    encoder = textreid.load(args.checkpoint, device=_device(args.device))
    manifest = build_index(encoder, Path(args.images), Path(args.out), checkpoint_path=args.checkpoint,
                           batch_size=args.batch_size, progress=not args.quiet, index_type=args.index_type,
                           rank=rank, world_size=world)
    if world > 1:
        dist.barrier()
        if rank != 0:
            return 0
        manifest = merge_shards([Path(args.out) / shard_dir_name(r, world) for r in range(world)],
                                Path(args.out), index_type=args.index_type)
    print(json.dumps(manifest.to_dict(), indent=2, default=str))
    return 0


def cmd_index_merge(args: argparse.Namespace) -> int:
    from textreid.search.index import merge_shards

    manifest = merge_shards([Path(s) for s in args.shards], Path(args.out), index_type=args.index_type)
    print(json.dumps(manifest.to_dict(), indent=2, default=str))
    return 0


def _searcher(args: argparse.Namespace):
    import textreid
    from textreid.search.searcher import Searcher

    encoder = textreid.load(args.checkpoint, device=_device(args.device)) if args.checkpoint else None
    return Searcher(args.index, encoder=encoder, device=_device(args.device))


def _search_like(searcher, like: str, k: int) -> list:
    """``--like``: an image file (embedded with the index's model) or an index position."""
    if like.strip().isdigit() and not Path(like).exists():
        return searcher.similar(int(like), k)
    return searcher.search_image(Path(like), k)


def _search_text(searcher, queries: list[str], k: int) -> tuple[list, list[list[str]]]:
    """Results for text queries and, per query, the words the model ignored (warned about)."""
    from textreid.search.query import check_queries

    queries[:] = check_queries(queries)
    ignored = [searcher.ignored_words(q) for q in queries]
    for q, words in zip(queries, ignored, strict=True):
        if words:
            print(f"textreid search: warning: ignored words unknown to the model in {q!r}: "
                  f"{', '.join(words)}", file=sys.stderr)
    return searcher.search(queries, k=k), ignored


def cmd_search(args: argparse.Namespace) -> int:
    from textreid.search.errors import QueryError
    from textreid.search.html import render_results
    from textreid.search.searcher import results_as_json

    queries = list(args.query)
    if args.queries_file:
        lines = Path(args.queries_file).read_text(encoding="utf-8").splitlines()
        queries += [line.strip() for line in lines if line.strip()]
    if bool(queries) == bool(args.like):
        raise QueryError("give description(s), --queries-file FILE or --like IMAGE (one of them)")
    searcher = _searcher(args)
    if args.like:
        results, ignored = [_search_like(searcher, args.like, args.k)], None
        queries = [f"more like {args.like}"]
    else:
        results, ignored = _search_text(searcher, queries, args.k)
    if args.json:
        out = results_as_json(queries, results, searcher.manifest.root)
        for entry, words in zip(out, ignored or [[]] * len(out), strict=True):
            entry["ignored_words"] = words
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        for q, hits in zip(queries, results, strict=True):
            print(f"# {q}")
            for h in hits:
                print(f"{h.rank:3d}  {h.score:.4f}  {h.path}")
    if args.html:
        print(f"wrote {render_results(queries, results, Path(args.html))}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from textreid.search.server import serve

    serve(_searcher(args), host=args.host, port=args.port, max_k=args.max_k,
          max_query_chars=args.max_query_chars)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from textreid.engine.demo import run_demo

    run_demo(Path(args.out), num_ids=args.ids, seed=args.seed, epochs=args.epochs, device=_device(args.device),
             progress=not args.quiet)
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textreid", description="Text-based person search (TextReID and beyond).",
                                     epilog="exit status: 0 ok; 1 `data check` found problems, or an internal error; "
                                            "2 a problem with your input (config, data, checkpoint, index, files); "
                                            "130/143 interrupted (SIGINT/SIGTERM)")
    parser.add_argument("--debug", action="store_true",
                        help="on failure also print the Python traceback (allowed anywhere on the line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in (_synth_parser, _data_parser, _vocab_parser, _train_parser, _test_parser, _convert_parser,
                       _index_parser, _search_parser, _serve_parser, _demo_parser):  # the order of `--help`
        add_parser(sub)
    return parser


def _command(sub, name: str, help_: str, fn) -> argparse.ArgumentParser:
    """A sub-command parser that runs ``fn`` and takes ``--quiet``."""
    p = sub.add_parser(name, help=help_, description=help_)
    p.set_defaults(fn=fn)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _synth_parser(sub) -> None:
    p = _command(sub, "synth", "generate the synthetic pedestrian dataset (authors' layout + raw layout)", cmd_synth)
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write, e.g. data/datasets/synth")
    p.add_argument("--ids", type=int, default=DEFAULT_SYNTH_IDS, help="number of persons")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images-per-id", type=int, default=4)
    p.add_argument("--image-size", type=int, nargs=2, default=[192, 64], metavar=("H", "W"),
                   help="pixels of every image (small ones make cheap CPU experiments)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the persons in val")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of the persons in test")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--noise-rates", type=float, nargs="+", default=[], metavar="RATE",
                   help="also write noiseindex/synth_<RATE>.npy: that share of training captions moved to other "
                        "pairs' images (train on one with DATASETS.NOISE_FILE)")


def _data_parser(sub) -> None:
    p = sub.add_parser("data", help="dataset tools", description="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    p = data_sub.add_parser("check", help="count ids/images/captions per split and validate every entry",
                            description="count ids/images/captions per split and validate every entry; "
                                        "exit status 1 when anything is wrong")
    p.set_defaults(fn=cmd_data_check)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-open-images", action="store_true", help="only check that image files exist")
    _add_config_args(p)


def _vocab_parser(sub) -> None:
    p = _command(sub, "vocab", "build the word vocabulary from training captions and its CLIP word-vector table",
                 cmd_vocab)
    p.add_argument("--clip", required=True, metavar="CKPT", help="local CLIP checkpoint (OpenAI .pt, open_clip, safetensors)")
    p.add_argument("--device", default="auto")
    _add_config_args(p)


def _train_parser(sub) -> None:
    p = _command(sub, "train", "train a model (the authors' train_net.py flags are accepted)", cmd_train)
    p.add_argument("--output-dir", default=None, metavar="DIR", help="default: <root>/output/<config dir>/<config name>")
    p.add_argument("--resume-from", default=None, metavar="CKPT", help="continue a run exactly where it stopped")
    p.add_argument("--use-tensorboard", action="store_true", help="write TensorBoard scalars to <output>/tensorboard")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    _add_config_args(p)


def _test_parser(sub) -> None:
    p = _command(sub, "test", "evaluate a checkpoint (ours or the authors' best.pth); writes metrics.json", cmd_test)
    p.add_argument("--checkpoint-file", required=True, metavar="CKPT")
    p.add_argument("--output-dir", default=None, metavar="DIR")
    p.add_argument("--rerank", action="store_true", help="also report the authors' Jaccard re-ranking")
    p.add_argument("--save-features", action="store_true", help="write features.npz (embeddings, person ids, image ids)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--device", default="auto")
    _add_config_args(p)


def _convert_parser(sub) -> None:
    p = _command(sub, "convert", "turn the authors' best.pth (+ their yaml and dataset) into a self-describing "
                                 "checkpoint", cmd_convert)
    p.add_argument("--checkpoint-file", required=True, metavar="BEST_PTH")
    p.add_argument("--out", required=True, metavar="CKPT", help="where to write our checkpoint")
    _add_config_args(p)


def _index_parser(sub) -> None:
    p = _command(sub, "index", "embed a folder (or list) of images into a searchable index "
                               "(`textreid index merge SHARD... --out DIR` joins torchrun shards)", cmd_index)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by textreid train")
    p.add_argument("--images", required=True, metavar="DIR|LIST", help="folder (searched recursively) or list file")
    p.add_argument("--out", required=True, metavar="INDEX_DIR")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--index-type", default="auto", help="auto (exact below 50k images, else IVF) | flat | ivf | hnsw")
    p.add_argument("--device", default="auto")


def _index_merge_parser() -> argparse.ArgumentParser:
    """``textreid index merge SHARD... --out DIR``: routed by ``main`` before the ``index`` parser sees it."""
    p = argparse.ArgumentParser(prog="textreid index merge", description="join index shards into one index")
    p.add_argument("shards", nargs="+", metavar="SHARD_DIR")
    p.add_argument("--out", required=True, metavar="INDEX_DIR")
    p.add_argument("--index-type", default="auto")
    return p


def _search_parser(sub) -> None:
    p = _command(sub, "search", "search an index by text, or for images like a given one", cmd_search)
    p.add_argument("--index", required=True, metavar="INDEX_DIR")
    p.add_argument("query", nargs="*", help="description(s), e.g. 'a man in a grey hoodie with a black backpack'")
    p.add_argument("--like", metavar="IMAGE|POSITION",
                   help="more like this person: an image file (an indexed one, or any other, embedded with "
                        "the index's model) or an image's position in the index; the image itself is left out")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--queries-file", metavar="FILE", help="one description per line")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--html", metavar="OUT.html", help="also write a page of result thumbnails")
    p.add_argument("--checkpoint", metavar="CKPT", help="model to embed queries (default: the index's)")
    p.add_argument("--device", default="auto")


def _serve_parser(sub) -> None:
    p = _command(sub, "serve", "web page + JSON API over an index (localhost by default)", cmd_serve)
    p.add_argument("--index", required=True, metavar="INDEX_DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-k", type=int, default=100, help="largest k a request may ask for")
    p.add_argument("--max-query-chars", type=int, default=500, help="longest description a request may send")
    p.add_argument("--checkpoint", metavar="CKPT", help="model to embed queries (default: the index's)")
    p.add_argument("--device", default="auto")


def _demo_parser(sub) -> None:
    p = _command(sub, "demo", "synthetic data -> train the tiny CPU model -> evaluate -> results page", cmd_demo)
    p.add_argument("--out", default="demo", metavar="DIR", help="working folder (data, checkpoints, results)")
    p.add_argument("--ids", type=int, default=None, help="persons to generate (default: the demo's)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``textreid`` command; returns the exit status (see :mod:`textreid.errors`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    # `textreid index merge SHARD... --out DIR` shares the `index` parser; route it here.
    if argv[:2] == ["index", "merge"]:
        args = _index_merge_parser().parse_args(argv[2:])
        args.fn, args.command = cmd_index_merge, "index merge"
    else:
        args = build_parser().parse_args(argv)
    command = " ".join(filter(None, [args.command, getattr(args, "data_command", None)]))
    try:
        return args.fn(args)
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into a message
        return _report(command, exc, debug)
    except KeyboardInterrupt as exc:  # Ctrl-C outside the trainer's own handling
        return _report(command, exc, debug)


def _report(command: str, exc: BaseException, debug: bool) -> int:
    """Print the failure as one line (plus the traceback with --debug); return the exit status."""
    from textreid.errors import describe

    status, message = describe(exc)
    if debug:
        import traceback

        traceback.print_exception(exc)
    print(f"textreid {command}: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
