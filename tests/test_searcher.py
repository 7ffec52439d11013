"""Searcher (text -> ranked gallery images) and the HTML result page."""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
from pathlib import Path

import faiss
import numpy as np
import pytest
from PIL import Image

from conftest import tiny_config
from search_fakes import (
    COLOURS,
    ColourEncoder,
    colour_histogram,
    make_gallery,
    pair_query,
    person_image,
)
from textreid.search.errors import UnknownWordsError
from textreid.search.html import render_results
from textreid.search.index import build_index
from textreid.search.searcher import Hit, Searcher, results_as_json


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Path, dict[tuple[str, str], Path], Path]:
    gallery = make_gallery(tmp_path / "g")
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"weights")
    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "idx", checkpoint_path=ckpt,
                progress=False)
    return tmp_path / "idx", gallery, ckpt


def test_search_ranks_the_described_person_first(built) -> None:
    idx, gallery, _ = built
    s = Searcher(idx, encoder=ColourEncoder())
    pairs = list(itertools.combinations(COLOURS, 2))
    results = s.search([pair_query(a, b) for a, b in pairs], k=5)
    assert len(results) == len(pairs)
    for (a, b), hits in zip(pairs, results, strict=True):
        assert hits[0].path == str(gallery[(a, b)])
        assert Path(hits[0].path).is_absolute()
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        # Independent expectation: the cosine of the two histograms.
        q = ColourEncoder().encode_text([pair_query(a, b)]).numpy()[0]
        assert hits[0].score == pytest.approx(float(q @ colour_histogram(hits[0].path)), abs=1e-5)
    single = s.search(pair_query("green", "yellow"), k=1)
    assert len(single) == 1 and single[0][0].path == str(gallery[("green", "yellow")])


def test_search_embeddings_matches_text_search(built) -> None:
    idx, _, _ = built
    enc = ColourEncoder()
    s = Searcher(idx, encoder=enc)
    q = enc.encode_text([pair_query("blue", "white"), pair_query("red", "yellow")])
    by_text = s.search([pair_query("blue", "white"), pair_query("red", "yellow")], k=15)
    by_vec = s.search_embeddings(q.numpy() * 3.0, k=15)  # scale does not matter: normalised
    assert [[h.path for h in r] for r in by_text] == [[h.path for h in r] for r in by_vec]
    np.testing.assert_allclose(
        [h.score for h in by_text[0]], [h.score for h in by_vec[0]], atol=1e-6
    )
    assert len(s.search_embeddings(q[0], k=3)[0]) == 3  # a single [D] vector is accepted
    js = results_as_json(["blue and white"], by_text[:1], s.manifest.root)
    assert js[0]["query"] == "blue and white" and js[0]["k"] == 15
    assert js[0]["results"][0]["path"] == s.relative_paths[by_text[0][0].index]
    assert js[0]["results"][0]["rank"] == 1


def test_bad_arguments_get_clear_errors(built) -> None:
    idx, _, _ = built
    s = Searcher(idx, encoder=ColourEncoder())
    for k in (0, 16, -1):
        with pytest.raises(ValueError, match="between 1 and 15"):
            s.search("red", k=k)
    for k in ("3", 2.0, True):
        with pytest.raises(TypeError, match="integer"):
            s.search("red", k=k)
    with pytest.raises(ValueError, match="empty"):
        s.search("   ")
    with pytest.raises(ValueError, match="query 2 is empty"):
        s.search(["red", ""])
    with pytest.raises(ValueError, match="no queries"):
        s.search([])
    with pytest.raises(ValueError, match=r"\[N, 6\]"):
        s.search_embeddings(np.ones((2, 5)), k=3)
    with pytest.raises(ValueError, match="non-zero"):
        s.search_embeddings(np.zeros((1, 6)), k=3)


def test_encoder_is_loaded_from_the_manifest_checkpoint(built, monkeypatch) -> None:
    idx, gallery, ckpt = built
    import textreid.api

    calls = []

    def fake_load(path, device="cpu", dtype=None):
        calls.append((str(path), device))
        return ColourEncoder()

    monkeypatch.setattr(textreid.api, "load", fake_load)
    s = Searcher(idx, device="cpu")
    assert calls == [(str(ckpt.resolve()), "cpu")]
    assert s.search(pair_query("red", "black"))[0][0].path == str(gallery[("red", "black")])

    ckpt.unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.pth.*pass the same model"):
        Searcher(idx)


def test_wrong_dimension_shard_and_missing_index_are_refused(built, tmp_path: Path) -> None:
    idx, _, _ = built

    class Wide(ColourEncoder):
        embed_dim = 8

    with pytest.raises(ValueError, match="8-d embeddings"):
        Searcher(idx, encoder=Wide())
    with pytest.raises(FileNotFoundError, match="not a textreid index"):
        Searcher(tmp_path / "nowhere", encoder=ColourEncoder())
    build_index(ColourEncoder(), tmp_path / "g", tmp_path / "d", rank=0, world_size=2,
                progress=False)
    with pytest.raises(ValueError, match="index merge"):
        Searcher(tmp_path / "d" / "shard-000-of-002", encoder=ColourEncoder())


def test_ivf_index_gives_the_same_answers(tmp_path: Path) -> None:
    folder = tmp_path / "g"
    for i, (a, b) in enumerate(itertools.product(COLOURS, repeat=2)):
        for j in range(3):
            person_image(folder / f"{a}_{b}_{j}.png", a, b, size=(16 + j, 36 + i % 2))
    m = build_index(ColourEncoder(), folder, tmp_path / "idx", index_type="ivf", progress=False)
    assert m.index["type"] == "ivf" and m.count == 108 and m.index["nprobe"] >= 1
    s = Searcher(tmp_path / "idx", encoder=ColourEncoder())
    assert faiss.extract_index_ivf(s.index).nprobe == m.index["nprobe"]
    top = s.search(pair_query("blue", "yellow"), k=3)[0]
    assert {Path(h.path).name.rsplit("_", 1)[0] for h in top} <= {"blue_yellow", "yellow_blue"}


def _data_uri_sizes(page: str) -> list[tuple[int, int]]:
    sizes = []
    for b64 in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page):
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            sizes.append(im.size)
    return sizes


def test_render_results_page(built, tmp_path: Path) -> None:
    idx, gallery, _ = built
    big = person_image(tmp_path / "big" / "tall.png", "red", "black", size=(100, 300))
    s = Searcher(idx, encoder=ColourEncoder())
    queries = [pair_query("red", "black"), "<script>alert(1)</script> blue and white"]
    results = s.search(queries, k=4)
    results[0].append(Hit(path=str(big), score=0.1, rank=5))
    results[1].append(Hit(path=str(tmp_path / "gone.png"), score=0.0, rank=5))
    truth = [{str(gallery[("red", "black")]), str(big)}, {"/nowhere/else.png"}]
    out = render_results(queries, results, tmp_path / "out" / "page.html", ground_truth=truth,
                         title="Demo & results")
    page = out.read_text(encoding="utf-8")

    assert page.startswith("<!doctype html>") and "Demo &amp; results" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('class="hit correct"') == 2  # rank 1 of query 1 and the big image
    assert page.count('class="hit incorrect"') == 8
    assert page.count("unreadable") == 1  # the missing file has no thumbnail
    assert "red_black" in page and "tall.png" in page
    sizes = _data_uri_sizes(page)
    assert len(sizes) == 9  # one per readable hit; all embedded, so the page is portable
    assert (43, 128) in sizes  # the 100x300 image was downscaled to 128 px high
    assert all(h <= 128 for _, h in sizes)
    assert "2 of 5 correct; first correct at rank 1" in page

    plain = render_results(queries[:1], results[:1], tmp_path / "plain.html")
    plain_page = plain.read_text(encoding="utf-8")
    assert 'class="hit"' in plain_page and "hit correct" not in plain_page
    assert "hit incorrect" not in plain_page and "&#10003;" not in plain_page
    with pytest.raises(ValueError, match="ground-truth"):
        render_results(queries, results, tmp_path / "x.html", ground_truth=truth[:1])


def test_real_tiny_checkpoint_end_to_end(tmp_path: Path) -> None:
    """textreid.load'ed model: index, then a Searcher that loads the model from the manifest."""
    import torch

    from textreid.api import load
    from textreid.config import to_dict
    from textreid.data.vocab import Vocabulary
    from textreid.models.build import build_model
    from textreid.models.checkpoint import save_checkpoint

    captions = ["a woman in a red coat", "a man in black trousers with a white bag"]
    cfg = tiny_config(head="simple", max_length=8)
    vocab = Vocabulary.build(captions)
    table = np.random.default_rng(1).standard_normal((len(vocab), 6)).astype(np.float32)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=3, vocab_size=len(vocab), word_table=table)
    ckpt = save_checkpoint(tmp_path / "best.pth", model=model, config=to_dict(cfg),
                           vocab=vocab.to_dict())

    folder = tmp_path / "g"
    for i, (a, b) in enumerate(itertools.combinations(COLOURS, 2)):
        person_image(folder / f"{i:02d}_{a}_{b}.png", a, b)
    enc = load(ckpt)
    m = build_index(enc, folder, tmp_path / "idx", progress=False)
    assert m.checkpoint_path == str(Path(ckpt).resolve()) and m.count == 15 and m.embed_dim == 12

    s = Searcher(tmp_path / "idx")  # the model comes from the manifest
    hits = s.search(captions, k=15)
    paths = sorted(str(p) for p in folder.iterdir())
    g = enc.encode_images(paths)  # [15, 12]
    sims = (enc.encode_text(captions) @ g.T).numpy()  # [2, 15], reference by hand
    for qi in range(2):
        order = np.argsort(-sims[qi], kind="stable")
        np.testing.assert_allclose([h.score for h in hits[qi]], sims[qi][order], atol=1e-4)
        assert hits[qi][0].path == paths[order[0]]


def test_unknown_words_are_refused_or_reported(built) -> None:
    idx, gallery, _ = built
    s = Searcher(idx, encoder=ColourEncoder())
    for q, named in [("zzzz qqqq", "'zzzz', 'qqqq' are not"), ("!!! ???", "no words at all")]:
        with pytest.raises(UnknownWordsError, match=named):
            s.search(q, k=3)
    with pytest.raises(ValueError, match="empty"):
        s.search("\x00 \t", k=3)
    with pytest.raises(UnknownWordsError, match="'zzzz'"):
        s.search(["red", "zzzz"], k=3)
    assert s.ignored_words("a person wearing red and black zzzz") == ["zzzz"]
    hits = s.search("a person wearing red and black zzzz", k=1)[0]
    assert hits[0].path == str(gallery[("red", "black")])


def test_more_like_this_uses_the_stored_embedding_and_leaves_the_image_out(built) -> None:
    idx, gallery, _ = built
    s = Searcher(idx, encoder=ColourEncoder())
    i = s.image_position(gallery[("red", "black")])
    assert i is not None and s.paths[i] == str(gallery[("red", "black")])
    hits = s.similar(i, k=4)
    assert [h.rank for h in hits] == [1, 2, 3, 4] and i not in [h.index for h in hits]
    expected = s.search_embeddings(np.asarray(s.embeddings[i]), k=5)[0]
    assert [h.index for h in hits] == [h.index for h in expected if h.index != i][:4]
    assert len(s.similar(i, k=14)) == 14  # every other image
    with pytest.raises(ValueError, match="between 1 and 14"):
        s.similar(i, k=15)
    with pytest.raises(ValueError, match=r"no image 15: the index holds images 0..14"):
        s.similar(15)
    # An indexed file is looked up; another file is embedded with the index's model.
    assert [h.index for h in s.search_image(gallery[("red", "black")], k=4)] == [h.index for h in hits]
    other = person_image(Path(idx).parent / "query.png", "red", "black")
    top = s.search_image(other, k=2)
    assert top[0].path == str(gallery[("red", "black")]) and top[0].score == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError, match="image not found"):
        s.search_image(Path(idx).parent / "nope.png")


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture()
def cli_index(built, monkeypatch):
    """The built index, with textreid.load answering the fake model (the CLI loads the index's)."""
    import textreid.api

    monkeypatch.setattr(textreid.api, "load", lambda path, device="cpu", dtype=None: ColourEncoder())
    return built


def test_cli_refuses_unknown_words_and_reports_ignored_ones(cli_index, capsys) -> None:
    from textreid.cli import main

    idx, gallery, _ = cli_index
    assert main(["search", "--index", str(idx), "zzzz qqqq", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "'zzzz', 'qqqq'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["search", "--index", str(idx), "   ", "--device", "cpu"]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["search", "--index", str(idx), "-k", "0", "red", "--device", "cpu"]) == 2
    assert "between 1 and 15" in capsys.readouterr().err
    rc = main(["search", "--index", str(idx), "--json", "-k", "2", "--device", "cpu",
               pair_query("red", "black") + " blorp"])
    out = capsys.readouterr()
    assert rc == 0 and "ignored words unknown to the model" in out.err and "blorp" in out.err
    data = json.loads(out.out)
    assert data[0]["ignored_words"] == ["blorp"]
    assert data[0]["results"][0]["path"] == gallery[("red", "black")].relative_to(idx.parent / "g").as_posix()


def test_cli_more_like_this(cli_index, capsys, tmp_path: Path) -> None:
    from textreid.cli import main

    idx, gallery, _ = cli_index
    s = Searcher(idx, encoder=ColourEncoder())
    i = s.image_position(gallery[("blue", "white")])
    expected = [h.path for h in s.similar(i, 3)]
    for like in (str(gallery[("blue", "white")]), str(i)):
        assert main(["search", "--index", str(idx), "--like", like, "-k", "3", "--device", "cpu"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"# more like {like}" and [ln.split()[-1] for ln in lines[1:]] == expected
    other = person_image(tmp_path / "probe.png", "blue", "white")
    assert main(["search", "--index", str(idx), "--like", str(other), "-k", "1", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(str(gallery[("blue", "white")]))
    assert main(["search", "--index", str(idx), "--like", "99", "--device", "cpu"]) == 2
    assert "no image 99" in capsys.readouterr().err
    assert main(["search", "--index", str(idx), "--like", "3", "red", "--device", "cpu"]) == 2
    assert "one of them" in capsys.readouterr().err


def test_cli_refuses_a_hostile_index(cli_index, capsys) -> None:
    from textreid.cli import main

    idx, _, _ = cli_index
    paths = json.loads((idx / "paths.json").read_text())
    paths[0] = "../../../../../etc/passwd.jpg"
    (idx / "paths.json").write_text(json.dumps(paths))
    for argv in (["search", "--index", str(idx), "red"], ["serve", "--index", str(idx), "--port", "0"]):
        assert main([*argv, "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert "entry 0 '../../../../../etc/passwd.jpg'" in err and "outside the index root" in err


def test_cli_serve_port_in_use(cli_index, capsys) -> None:
    import socket

    from textreid.cli import main

    idx, _, _ = cli_index
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--index", str(idx), "--port", str(port), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "Traceback" not in err
