"""``mmroute train`` chooses the router family with the same code as ``eval --cv``; a router holds
any family (route, save, load); ``train --cache``; the ``imgstats`` encoder."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.cli import main
from mmroute.data.example import example_dir
from mmroute.errors import ConfigError, InvalidInputError

EXAMPLE = example_dir()  # the packaged example set


# ------------------------------------------------------------------------------------------ imgstats
def test_imgstats_is_deterministic_in_range_and_tells_images_apart():
    from mmroute.features import FeaturePipeline

    imgs = sorted(str(p) for p in (EXAMPLE / "images").iterdir())[:3]
    queries = [{"text": "What colour is the shape? 2+2", "images": [im]} for im in imgs] + ["plain text, no image"]
    a = FeaturePipeline.from_spec("imgstats").transform(queries)
    b = FeaturePipeline.from_spec("imgstats").transform(queries)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 16 + 5) and (a >= 0).all() and (a <= 1).all()
    img_block = a[:3, 8:16]
    assert len({tuple(r.round(6)) for r in img_block}) == 3   # three pictures, three different rows
    assert not a[3, 8:16].any()                               # no image: zero image block


def test_imgstats_spec_strings():
    from mmroute.features import canonical_spec, parse_spec

    assert canonical_spec("st:minilm+imgstats") == "st:minilm+imgstats"
    assert parse_spec("imgstats")[0].id == "imgstats"
    with pytest.raises(ConfigError, match="takes no options"):
        parse_spec("imgstats:big")


def test_image_stats_measure_what_they_say():
    from PIL import Image

    from mmroute.features.imgstats import IMAGE_STATS, image_stats

    flat = image_stats(Image.new("RGB", (200, 100), (128, 128, 128)))
    rng = np.random.default_rng(0)
    busy = image_stats(Image.fromarray(rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)))
    col = dict(zip(IMAGE_STATS, range(len(IMAGE_STATS))))
    assert flat[col["aspect"]] == pytest.approx(0.75)               # 2:1 landscape
    assert flat[col["entropy"]] == 0 and flat[col["edge_density"]] == 0 and flat[col["colourfulness"]] == 0
    assert busy[col["entropy"]] > 0.9 and busy[col["edge_density"]] > 0.5 and busy[col["colourfulness"]] > 0.3


# ------------------------------------------------------------------------------------ train + router
@pytest.fixture(scope="module")
def judgments():
    from mmroute.data.formats import read_judgments
    from mmroute.data.formats import resolve_image_paths

    res = read_judgments(EXAMPLE / "judgments.jsonl")
    return resolve_image_paths(res.items, res.base_dir)


@pytest.fixture(scope="module")
def pool():
    from mmroute.pool import ModelPool

    return ModelPool.load(EXAMPLE / "pool.yaml")


def test_train_uses_the_same_selection_as_eval(judgments, pool, monkeypatch):
    import mmroute.preference.family_selection as fs
    from mmroute.eval.baselines import FamilyQuality, JudgmentArrays
    from mmroute.training import train_router

    calls: list[str] = []
    real = fs.select_family

    def spy(data, **kw):
        sel = real(data, **kw)
        calls.append(str(sel.params))
        return sel

    monkeypatch.setattr(fs, "select_family", spy)
    router = train_router(judgments, encoder="clip:tiny", pool=pool, families=True)
    assert len(calls) == 1 and str(router.metadata["model_params"]) == calls[0]
    assert router.metadata["family_selection"], "the candidates' held-out scores are recorded"
    # the eval harness's router goes through the very same function
    X = np.zeros((3, 4), dtype=np.float32)
    J = JudgmentArrays(np.arange(3), np.zeros(3), np.ones(3), np.ones(3), np.ones(3), 2)
    FamilyQuality().fit(X, J)
    assert len(calls) == 2


def test_family_router_routes_saves_and_loads(judgments, pool, tmp_path):
    from mmroute.router import Router
    from mmroute.training import train_router

    router = train_router(judgments, encoder="clip:tiny", pool=pool, families=True)
    img = str(sorted((EXAMPLE / "images").iterdir())[0])
    d = router.route({"text": "What colour is the shape?", "images": [img]})
    assert d.model in ("replay/small-vision", "replay/large-vision")  # never a text-only model
    router.save(tmp_path / "r")
    back = Router.load(tmp_path / "r")
    assert type(back.model) is type(router.model)
    qs = ["What is 9 * 7?", {"text": "Describe it", "images": [img]}]
    np.testing.assert_allclose(back.predict_quality(qs), router.predict_quality(qs), rtol=1e-5, atol=1e-6)


def test_pointwise_family_in_a_router_uses_its_quality_directly(judgments, pool):
    from mmroute.features import FeaturePipeline
    from mmroute.preference.families import MeanFamily, RoutingData
    from mmroute.router import Router

    names = pool.names
    data = RoutingData(np.zeros((2, 3), np.float32), [0, 1], [0, 1], [1, 2], [1.0, 1.0], [1.0, 1.0], names[:3],
                       np.array([[0.9, 0.2, 0.1], [0.7, 0.4, 0.3]]))
    fam = MeanFamily().fit(data)
    router = Router(FeaturePipeline.from_spec("clip:tiny"), fam, pool)
    q = router.predict_quality(["What is 2 + 2?"])[0]
    expect = {names[0]: 0.8, names[1]: 0.3, names[2]: 0.2}
    for m, v in expect.items():
        assert q[names.index(m)] == pytest.approx(v)
    assert q[names.index(names[3])] == pytest.approx(0.5)  # a pool model the family never saw: neutral


def test_retrain_refuses_a_family_it_cannot_warm_start(judgments, pool, tmp_path):
    from mmroute.data.store import FeedbackStore
    from mmroute.preference.families import MeanFamily
    from mmroute.retraining import retrain
    from mmroute.training import train_router

    router = train_router(judgments, encoder="clip:tiny", pool=pool, families=True)
    router.model = MeanFamily().fit(__import__("mmroute.preference.families", fromlist=["RoutingData"]).RoutingData(
        np.zeros((1, 1), np.float32), [0], [0], [1], [1.0], [1.0], pool.names))
    router.save(tmp_path / "r")
    store = FeedbackStore(tmp_path / "fb.db")
    store.add(judgments[0])
    rep = retrain(tmp_path / "r", store)
    assert not rep.accepted and "cannot be warm-started" in rep.reason


def test_exploration_refuses_a_family_without_a_posterior(pool):
    from mmroute.features import FeaturePipeline
    from mmroute.learning import ExploringRouter, ThompsonPolicy
    from mmroute.preference.families import MeanFamily, RoutingData
    from mmroute.router import Router

    data = RoutingData(np.zeros((1, 1), np.float32), [0], [0], [1], [1.0], [1.0], pool.names)
    router = Router(FeaturePipeline.from_spec("clip:tiny"), MeanFamily().fit(data), pool)
    with pytest.raises(InvalidInputError, match="exploration needs a Bradley-Terry router"):
        ExploringRouter(router, ThompsonPolicy())


def test_cli_train_cache_skips_encoding_the_second_time(tmp_path, monkeypatch, capsys):
    from mmroute.features.cache import CACHE_FILE
    from mmroute.features.clip import ClipEncoder

    argv = ["train", "--judgments", str(EXAMPLE / "judgments.jsonl"), "--pool", str(EXAMPLE / "pool.yaml"),
            "--encoder", "clip:tiny", "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "r1")]) == 0
    assert (tmp_path / "cache" / CACHE_FILE).is_file()

    def boom(self, *a, **k):
        raise AssertionError("encoded although every query is in the cache")

    monkeypatch.setattr(ClipEncoder, "encode_texts", boom)
    monkeypatch.setattr(ClipEncoder, "encode_images", boom)
    assert main(argv + ["--out", str(tmp_path / "r2")]) == 0
    assert "saved" in capsys.readouterr().out


def test_a_chosen_bradley_terry_family_is_served_as_plain_bradley_terry(judgments, pool, monkeypatch):
    import mmroute.preference.family_selection as fs
    from mmroute.preference import BradleyTerry
    from mmroute.preference.families import BTFamily
    from mmroute.training import train_router

    real = fs.select_family
    monkeypatch.setattr(fs, "select_family", lambda data, **kw: real(data, **{**kw, "candidates": [
        lambda: BTFamily(rank=2, l2=0.01)]}))
    router = train_router(judgments, encoder="clip:tiny", pool=pool, families=True)
    assert type(router.model) is BradleyTerry  # so `mmroute retrain` can warm-start it as before


def test_cli_train_is_bradley_terry_unless_families_is_asked_for(tmp_path, monkeypatch):
    """The default stays retrainable and explorable; family choice is opt-in, as in `eval --cv`."""
    import mmroute.preference.family_selection as fs
    from mmroute.preference import BradleyTerry
    from mmroute.router import Router

    calls = []
    real = fs.select_family
    monkeypatch.setattr(fs, "select_family", lambda *a, **k: calls.append(1) or real(*a, **k))
    argv = ["train", "--judgments", str(EXAMPLE / "judgments.jsonl"), "--pool", str(EXAMPLE / "pool.yaml"),
            "--encoder", "clip:tiny", "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "bt")]) == 0
    assert calls == [] and isinstance(Router.load(tmp_path / "bt").model, BradleyTerry)
    assert main(argv + ["--families", "--out", str(tmp_path / "fam")]) == 0
    assert calls == [1]
