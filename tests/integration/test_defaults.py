"""Defaults that match "best for the money": the train-time lambda, vision inferred from the data,
training names mapped to deployments, and loud name mismatches."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from _local_http import LocalHTTPServer

from mmroute.cli import main
from mmroute.data.example import example_dir
from mmroute.data.formats import Judgment, QueryRecord, read_judgments
from mmroute.errors import ConfigError, DataFormatError, RoutingWarning
from mmroute.policy import CostAwarePolicy, choose_batch
from mmroute.policy_calibration import calibrate_quality_tolerance, routed_stats
from mmroute.pool import ModelPool, ModelSpec
from mmroute.router import Router
from mmroute.data.formats import resolve_image_paths
from mmroute.training import train_router

EXAMPLE = example_dir()
FAST = {"rank": 4, "l2": 1e-2}  # fixed capacity: skips the held-out grid search


def example_judgments(n: int = 480) -> list[Judgment]:
    res = read_judgments(EXAMPLE / "judgments.jsonl")
    return resolve_image_paths(res.items[:n], res.base_dir)


@pytest.fixture(scope="module")
def default_router() -> Router:
    return train_router(example_judgments(), encoder="clip:tiny", pool=ModelPool.load(EXAMPLE / "pool.yaml"),
                        model_params=FAST)


# -- the default lambda -------------------------------------------------------------------------

def test_quality_tolerance_calibration_on_known_numbers():
    # two queries, an expensive strong model and a cheap one 0.05 worse on each
    quality = np.array([[0.90, 0.85], [0.80, 0.75]])
    cost = np.array([[1.0, 0.1], [1.0, 0.1]])
    loose = calibrate_quality_tolerance(quality, cost, tolerance=0.06)
    assert loose.reference_model == 0 and loose.reference_quality == pytest.approx(0.85)
    assert loose.quality == pytest.approx(0.80) and loose.cost == pytest.approx(0.1)  # cheap everywhere
    tight = calibrate_quality_tolerance(quality, cost, tolerance=0.01)
    assert tight.quality == pytest.approx(0.85) and tight.cost == pytest.approx(1.0)   # strong everywhere
    # the edge is where both queries switch (0.05 / 0.9 quality points per USD); the lambda stays a
    # window (10 %) below it, so a small change of a cost or a quality gap cannot flip them
    assert tight.boundary == pytest.approx(0.05 / 0.9, rel=1e-6)
    assert tight.boundary / 1.1 / 1.03 < tight.lam <= tight.boundary / 1.1 and tight.flip_share == 0.0
    assert routed_stats(quality, cost, np.ones_like(quality, bool), 0.05 / 0.9 * 1.01)[0] < 0.85 - 0.01


def test_quality_tolerance_stays_within_tolerance_of_best_single_model():
    rng = np.random.default_rng(0)
    quality = rng.uniform(0.2, 0.9, size=(200, 5))
    cost = rng.uniform(1e-5, 1e-2, size=(200, 5))
    eligible = rng.uniform(size=(200, 5)) > 0.2
    cal = calibrate_quality_tolerance(quality, cost, eligible, tolerance=0.02)
    assert cal.quality >= cal.reference_quality - 0.02 - 1e-9
    assert cal.cost < cal.cost_at_zero
    # a little more lambda than the edge would break the tolerance; lambda is at or below the edge, where
    # a 10 % change of lambda either way switches at most 5 % of the queries
    assert routed_stats(quality, cost, eligible, cal.boundary * 1.05)[0] < cal.reference_quality - 0.02
    assert cal.lam <= cal.boundary and cal.flip_share <= 0.05 and cal.window == 0.1
    with pytest.raises(ConfigError, match="tolerance"):
        calibrate_quality_tolerance(quality, cost, tolerance=-1)


def test_default_lambda_keeps_clear_of_a_query_type_switching_at_once():
    # 60 queries of one type (same predicted qualities and costs up to 0.2 %) and 40 others: at the edge
    # of the tolerance the whole type switches at once; the boundary lambda left it one rounding error
    # from flipping (issue 19: "a utility gap of 0.0005")
    rng = np.random.default_rng(1)
    typed = np.tile([0.95, 0.60], (60, 1)), np.c_[np.full(60, 1.2e-3) * rng.uniform(1, 1.002, 60), np.full(60, 1.8e-4)]
    other = np.tile([0.50, 0.90], (40, 1)), np.tile([1.2e-3, 1.8e-4], (40, 1))
    quality, cost = np.vstack([typed[0], other[0]]), np.vstack([typed[1], other[1]])
    cal = calibrate_quality_tolerance(quality, cost)
    ok = np.ones_like(quality, bool)
    assert routed_stats(quality, cost, ok, cal.boundary * 1.01)[0] < cal.reference_quality - 0.02  # the edge
    assert 0 < (choose_batch(quality, cost, ok, cal.boundary)[:60] == 1).sum() < 60  # inside the type
    assert cal.flip_share == 0.0 and cal.lam <= cal.boundary / 1.1
    # the choice survives a 5 % change of every cost either way: the utility gap is not a rounding error
    for f in (0.95, 1.05):
        assert np.array_equal(choose_batch(quality, cost * f, ok, cal.lam), choose_batch(quality, cost, ok, cal.lam))
    pick = choose_batch(quality, cost, ok, cal.lam)
    assert (pick[:60] == 0).all() and (pick[60:] == 1).all()


def test_default_policy_trades_cost_and_says_how(default_router: Router):
    r = default_router
    assert isinstance(r.policy, CostAwarePolicy) and r.policy.lam > 0
    choice = r.metadata["policy_choice"]
    assert choice["method"] == "quality-tolerance" and choice["tolerance"] == 0.02
    assert choice["lam"] == r.policy.lam and choice["reference_model"] in r.pool.names
    assert choice["quality"] >= choice["reference_quality"] - 0.02 - 1e-9
    assert choice["cost"] < choice["cost_at_zero"]  # it saves money against lambda=0


def test_default_policy_is_saved_with_the_router(default_router: Router, tmp_path: Path):
    default_router.save(tmp_path / "r")
    back = Router.load(tmp_path / "r")
    assert back.policy.knob == default_router.policy.knob
    assert back.metadata["policy_choice"] == default_router.metadata["policy_choice"]


def test_lambda_zero_stays_available_explicitly():
    r = train_router(example_judgments(120), encoder="clip:tiny", pool=ModelPool.load(EXAMPLE / "pool.yaml"),
                     model_params=FAST, policy=CostAwarePolicy(0.0))
    assert r.policy.knob == 0.0 and r.metadata["policy_choice"]["method"] == "given"


def test_train_targets_and_their_exclusivity():
    pool = ModelPool.load(EXAMPLE / "pool.yaml")
    r = train_router(example_judgments(240), encoder="clip:tiny", pool=pool, model_params=FAST,
                     target_strong_share=0.25)
    choice = r.metadata["policy_choice"]
    assert choice["method"] == "target-strong-share" and choice["strong_model"] in pool.names
    with pytest.raises(ConfigError, match="at most one"):
        train_router(example_judgments(40), encoder="clip:tiny", pool=pool, policy=CostAwarePolicy(1.0),
                     target_cost=1e-4)


# -- vision inferred from the data ----------------------------------------------------------------

def _synthetic_judgments() -> list[Judgment]:
    """acme/eye-* are judged on image queries, acme/words only on text; LiteLLM knows none of them."""
    img = str(EXAMPLE / "images" / "ex-0005.png")
    out = []
    for i in range(12):
        out.append(Judgment(query=QueryRecord(text=f"what is in picture {i}?", images=[img]),
                            model_a="acme/eye-big", model_b="acme/eye-small", winner="model_a" if i % 3 else "model_b"))
        out.append(Judgment(query=QueryRecord(text=f"spell word number {i}"), model_a="acme/words",
                            model_b="acme/eye-small", winner="model_a" if i % 2 else "model_b"))
    return out


def test_vision_is_inferred_from_judgments_on_image_queries():
    with pytest.warns(RoutingWarning, match="acme/words: vision support, context window unknown"):
        r = train_router(_synthetic_judgments(), encoder="clip:tiny", model_params=FAST)
    assert r.pool["acme/eye-big"].supports_vision is True and r.pool["acme/eye-small"].supports_vision is True
    assert r.pool["acme/words"].supports_vision is None  # never judged on an image: still unknown
    assert any("acme/eye-big: supports_vision=True inferred" in n for n in r.metadata["notes"])
    d = r.route({"text": "what is this?", "images": [str(EXAMPLE / "images" / "ex-0005.png")]})
    assert d.model in {"acme/eye-big", "acme/eye-small"} and set(d.fallbacks) | {d.model} == {"acme/eye-big", "acme/eye-small"}


def test_an_explicit_pool_value_wins_over_the_data():
    pool = ModelPool(models=[ModelSpec(name=n, supports_vision=(False if n == "acme/eye-small" else None),
                                       input_cost_per_token=1e-6, output_cost_per_token=1e-6, context_window=9999)
                             for n in ("acme/eye-big", "acme/eye-small", "acme/words")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoutingWarning)
        r = train_router(_synthetic_judgments(), encoder="clip:tiny", pool=pool, model_params=FAST)
    assert r.pool["acme/eye-small"].supports_vision is False
    assert r.pool["acme/eye-big"].supports_vision is True


def test_litellm_false_wins_over_the_data():
    from mmroute.pool import litellm_facts

    name = "gpt-3.5-turbo"
    if litellm_facts(name).get("supports_vision") is not False:
        pytest.skip(f"this LiteLLM's map does not say {name} lacks vision")
    js = [j.model_copy(update={"model_b": name}) if j.model_b == "acme/eye-small" else j for j in _synthetic_judgments()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoutingWarning)
        r = train_router(js, encoder="clip:tiny", model_params=FAST)
    assert r.pool[name].supports_vision is False and r.pool["acme/eye-big"].supports_vision is True


# -- training names -> deployments ----------------------------------------------------------------

def _deployed_pool() -> ModelPool:
    """The example pool deployed under other names; each lists its training name as an alias."""
    base = ModelPool.load(EXAMPLE / "pool.yaml")
    return ModelPool(models=tuple(m.model_copy(update={"name": m.name.replace("replay/", "azure/", 1),
                                                       "aliases": (m.name,)}) for m in base.models))


def test_aliases_map_training_names_to_pool_models_at_train_time():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RoutingWarning)  # every pool model has judgments: no warning
        r = train_router(example_judgments(240), encoder="clip:tiny", pool=_deployed_pool(), model_params=FAST)
    assert r.models == ["azure/tiny-text", "azure/small-vision", "azure/large-vision", "azure/math-text"]
    assert sorted(r.model.models_) == sorted(r.models)
    q = r.predict_quality(["What is 17 * 23?"])[0]
    assert np.ptp(q) > 0.05  # trained ratings, not a neutral 0.5 each
    assert r.route("What is 17 * 23?").model.startswith("azure/")


def test_aliases_map_at_load_time(default_router: Router, tmp_path: Path):
    default_router.save(tmp_path / "r")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RoutingWarning)
        deployed = Router.load(tmp_path / "r", pool=_deployed_pool())
    queries = ["What is 17 * 23?", {"text": "What colour is the shape?", "images": [str(EXAMPLE / "images" / "ex-0005.png")]}]
    np.testing.assert_allclose(deployed.predict_quality(queries), default_router.predict_quality(queries), atol=1e-5)
    assert deployed.route(queries[1]).model == default_router.route(queries[1]).model.replace("replay/", "azure/")


def test_pool_file_aliases_and_env_references(tmp_path: Path, monkeypatch):
    f = tmp_path / "pool.yaml"
    f.write_text("models:\n  - name: openai/gpt-4o\n    aliases: gpt-4o-2024-05-13\n"
                 "    litellm_params: {api_base: 'http://127.0.0.1:1/v1', api_key: os.environ/MMROUTE_TEST_KEY}\n")
    pool = ModelPool.load(f)
    spec = pool["openai/gpt-4o"]
    assert spec.aliases == ("gpt-4o-2024-05-13",) and pool.canonical("gpt-4o-2024-05-13") == "openai/gpt-4o"
    assert pool.canonical("gpt-4o") is None
    monkeypatch.delenv("MMROUTE_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="MMROUTE_TEST_KEY"):
        spec.call_params()
    monkeypatch.setenv("MMROUTE_TEST_KEY", "sk-from-env")
    assert spec.call_params() == {"api_base": "http://127.0.0.1:1/v1", "api_key": "sk-from-env"}
    assert spec.litellm_params["api_key"] == "os.environ/MMROUTE_TEST_KEY"  # the secret is not stored


def test_one_training_name_cannot_map_to_two_models():
    with pytest.raises(ValueError, match="'x' of 'b' also names 'a'"):
        ModelPool(models=[{"name": "a", "aliases": ["x"]}, {"name": "b", "aliases": ["x"]}])
    with pytest.raises(ValueError, match="also names 'a'"):
        ModelPool(models=[{"name": "a"}, {"name": "b", "aliases": ["a"]}])


class _Server(LocalHTTPServer):
    """An OpenAI-compatible endpoint on 127.0.0.1 that records the headers it gets."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                srv.headers.append({k.lower(): v for k, v in self.headers.items()})
                data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": "hi"}}],
                                   "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler)


@pytest.fixture()
def server() -> Iterator[_Server]:
    with _Server() as s:
        yield s


def test_calls_use_the_pool_models_litellm_params_with_env_keys(server: _Server, monkeypatch):
    from mmroute.llm import complete

    monkeypatch.setenv("MMROUTE_TEST_KEY", "sk-from-env")
    url = server.url
    pool = ModelPool(models=[{"name": "openai/my-deployment", "aliases": ["gpt-4o-2024-05-13"],
                              "input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6,
                              "litellm_params": {"api_base": url, "api_key": "os.environ/MMROUTE_TEST_KEY"}}])
    ans = complete("hello", ["openai/my-deployment"], pool=pool, timeout=10)
    assert ans.text == "hi"
    assert server.headers[-1]["authorization"] == "Bearer sk-from-env"


# -- silent name mismatches -----------------------------------------------------------------------

def test_train_warns_for_every_pool_model_without_judgments():
    base = ModelPool.load(EXAMPLE / "pool.yaml")
    pool = ModelPool(models=(*base.models, ModelSpec(name="openai/gpt-4o-typo", supports_vision=True,
                                                     input_cost_per_token=1e-6, output_cost_per_token=1e-6,
                                                     context_window=128000)))
    with pytest.warns(RoutingWarning, match="'openai/gpt-4o-typo' has no judgments") as rec:
        r = train_router(example_judgments(120), encoder="clip:tiny", pool=pool, model_params=FAST)
    assert len([w for w in rec if "has no judgments" in str(w.message)]) == 1
    assert any("openai/gpt-4o-typo" in n for n in r.metadata["notes"])


def test_load_refuses_a_pool_that_matches_no_trained_model(default_router: Router, tmp_path: Path):
    default_router.save(tmp_path / "r")
    other = ModelPool(models=[ModelSpec(name="openai/gpt-4o"), ModelSpec(name="openai/gpt-4o-mini")]).resolved()
    with pytest.raises(ConfigError, match="no model of the pool .* was trained"):
        Router.load(tmp_path / "r", pool=other)
    partial = ModelPool(models=(*ModelPool.load(EXAMPLE / "pool.yaml").models[:2], *other.models))
    with pytest.warns(RoutingWarning, match="'openai/gpt-4o' was not trained") as rec:
        Router.load(tmp_path / "r", pool=partial)
    assert len([w for w in rec if "was not trained" in str(w.message)]) == 2


# -- pool file errors keep their place ------------------------------------------------------------

def test_pool_yaml_error_keeps_line_and_column(tmp_path: Path):
    f = tmp_path / "pool.yaml"
    f.write_text("models:\n  - name: a\n    tags: [x, y\n  - name: b\n")
    with pytest.raises(DataFormatError, match=r"line \d+, column \d+") as e:
        ModelPool.load(f)
    assert e.value.line is not None and str(e.value).startswith(f"{f}:{e.value.line}: not valid YAML")


def test_pool_json_error_keeps_line_and_column(tmp_path: Path):
    f = tmp_path / "pool.json"
    f.write_text('{"models": [\n  {"name": "a"},\n  {"name": "b",}\n]}\n')
    with pytest.raises(DataFormatError, match=r"line 3, column 16") as e:
        ModelPool.load(f)
    assert e.value.line == 3


# -- the CLI --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_judgments(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("data") / "judgments.jsonl"
    f.write_text("".join(j.model_dump_json() + "\n" for j in example_judgments(240)))
    return f


def test_cli_train_prints_the_default_policy_and_route_shows_it(small_judgments: Path, tmp_path: Path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--judgments", str(small_judgments), "--pool", str(EXAMPLE / "pool.yaml"),
                 "--encoder", "clip:tiny", "--out", str(out), "--rank", "4", "--l2", "0.01", "--quiet"]) == 0
    printed = capsys.readouterr().out
    lam = Router.load(out).policy.knob
    assert lam > 0 and f"policy: cost-aware, lambda={lam:.6g} (least cost keeping predicted quality within 0.02" in printed
    assert main(["route", "--router", str(out), "--text", "What is 9 * 7?"]) == 0
    assert f"policy: cost-aware, lambda={lam:.6g} (least cost" in capsys.readouterr().out
    assert main(["route", "--router", str(out), "--text", "What is 9 * 7?", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["policy"] == "cost-aware" and d["knob"] == lam and d["policy_choice"]["method"] == "quality-tolerance"
    assert main(["route", "--router", str(out), "--text", "What is 9 * 7?", "--lam", "0", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["knob"] == 0.0 and d["policy_choice"] == {"method": "command line"}


@pytest.mark.parametrize("flag,value,method", [("--lam", "0", "given"), ("--target-cost", "0.0005", "target-cost"),
                                               ("--target-strong-share", "0.3", "target-strong-share")])
def test_cli_train_policy_knobs(small_judgments: Path, tmp_path: Path, capsys, flag, value, method):
    out = tmp_path / "r"
    assert main(["train", "--judgments", str(small_judgments), "--pool", str(EXAMPLE / "pool.yaml"),
                 "--encoder", "clip:tiny", "--out", str(out), "--rank", "4", "--l2", "0.01", "--quiet",
                 flag, value]) == 0
    r = Router.load(out)
    assert r.metadata["policy_choice"]["method"] == method
    assert f"policy: cost-aware, lambda={r.policy.knob:.6g}" in capsys.readouterr().out
    if flag == "--target-cost":
        assert r.metadata["policy_choice"]["cost"] <= 0.0005


def test_cli_train_knobs_are_mutually_exclusive(small_judgments: Path, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--judgments", str(small_judgments), "--encoder", "clip:tiny", "--out", str(tmp_path / "r"),
              "--lam", "1", "--target-cost", "0.001"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_cli_train_warns_on_stderr_and_reports_inferred_vision(tmp_path: Path, capsys):
    f = tmp_path / "j.jsonl"
    f.write_text("".join(j.model_dump_json() + "\n" for j in _synthetic_judgments()))
    assert main(["train", "--judgments", str(f), "--encoder", "clip:tiny", "--out", str(tmp_path / "r"),
                 "--rank", "4", "--l2", "0.01", "--quiet"]) == 0
    cap = capsys.readouterr()
    assert "inferred: acme/eye-big: supports_vision=True inferred" in cap.out
    assert "warning: acme/words: vision support, context window unknown" in cap.err
    # unknown prices: one error-level line for every model at once, with the fix, not one per model
    assert cap.err.count("error: prices unknown for every model") == 1 and "sets input_cost_per_token" in cap.err
    assert "warning: acme/words: prices" not in cap.err


def test_train_records_the_best_rated_model_and_a_margin_keeps_queries_on_it(default_router: Router):
    r = default_router
    default = r.metadata["default_model"]
    assert default == r.metadata["policy_choice"]["default_model"] and default in r.pool.names
    sure = train_router(example_judgments(), encoder="clip:tiny", pool=ModelPool.load(EXAMPLE / "pool.yaml"),
                        model_params=FAST, policy=CostAwarePolicy(0.0), margin=10.0)
    assert sure.policy == CostAwarePolicy(0.0, margin=10.0, default=sure.metadata["default_model"])
    # a margin larger than any quality gap: every text query goes to the best-rated model
    for text in ("What is 9 * 7?", "Write a haiku about the sea", "Translate 'bonjour' to English"):
        assert sure.route(text).model == sure.metadata["default_model"]


def test_cli_margin_on_train_and_route(small_judgments: Path, tmp_path: Path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--judgments", str(small_judgments), "--pool", str(EXAMPLE / "pool.yaml"),
                 "--encoder", "clip:tiny", "--out", str(out), "--rank", "4", "--l2", "0.01", "--quiet",
                 "--margin", "0.05"]) == 0
    r = Router.load(out)
    default = r.metadata["default_model"]
    assert r.policy == CostAwarePolicy(r.policy.knob, margin=0.05, default=default)
    assert f"margin=0.05 for {default}" in capsys.readouterr().out
    assert main(["route", "--router", str(out), "--text", "What is 9 * 7?", "--margin", "100", "--lam", "0",
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"] == default and "kept on the default model" in d["reason"]
    assert main(["route", "--router", str(out), "--text", "x", "--margin", "1", "--threshold", "0.5",
                 "--strong", "a", "--weak", "b"]) == 2
    assert "--margin belongs to the cost-aware policy" in capsys.readouterr().err
