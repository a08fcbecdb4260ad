"""Routing latency against the physical floor: open_clip's own encode of the same inputs.

For each query kind (text-only, text+image) this times, one query at a time:
  floor   - open_clip alone: tokenizer + encode_text (+ preprocess + encode_image) on the
            ViT-B-32 architecture (random weights: the compute is the same as real weights);
  route   - mmroute's Router.route on a fresh query (decode, features, Bradley-Terry, filters,
            policy, the RouteDecision), cache cold;
  cached  - Router.route on a query seen before (embedding cache hit).
It prints p50/p95 and route/floor ratios (goal: routing adds < 15 % on top of encoding).
Prints numbers; asserts nothing.

    .venv/bin/python benchmarks/bench_route.py [--n 40] [--encoder clip:ViT-B-32:random] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from mmroute.features import ClipEncoder, EmbeddingCache, FeaturePipeline  # noqa: E402
from mmroute.pool import ModelPool, ModelSpec  # noqa: E402
from mmroute.preference import BradleyTerry  # noqa: E402
from mmroute.query import Query  # noqa: E402
from mmroute.router import Router  # noqa: E402

WORDS = ("route cost image model answer quality vision text budget cascade verify judge prompt token "
         "photo chart table diagram count colour shape explain compare summarise translate").split()


def make_queries(n: int, with_image: bool, seed: int) -> list[Query]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        text = f"q{i} " + " ".join(rng.choice(WORDS, size=30))
        imgs = []
        if with_image:
            arr = rng.integers(0, 255, size=(256, 256, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            imgs = [buf.getvalue()]
        out.append(Query.build(text, imgs))
    return out


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, p))


def floor_times(enc: ClipEncoder, queries: list[Query]) -> list[float]:
    """open_clip alone on the same inputs (PIL images already decoded: the floor is generous)."""
    pils = [[im.to_pil() for im in q.images] for q in queries]
    times = []
    with torch.inference_mode():
        for q, ims in zip(queries, pils):
            t0 = time.perf_counter()
            enc.model.encode_text(enc.tokenizer([q.text]), normalize=True)
            if ims:
                enc.model.encode_image(torch.stack([enc.preprocess(im) for im in ims]), normalize=True)
            times.append(time.perf_counter() - t0)
    return times


def route_times(router: Router, queries: list[Query]) -> list[float]:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        router.route(q)
        times.append(time.perf_counter() - t0)
    return times


def build_router(spec: str, n_models: int = 8) -> Router:
    pipeline = FeaturePipeline.from_spec(spec, cache=EmbeddingCache(100_000))
    rng = np.random.default_rng(0)
    names = [f"bench/model-{i}" for i in range(n_models)]
    X = rng.standard_normal((4000, pipeline.dim)).astype(np.float32)
    pairs = np.array([rng.choice(names, 2, replace=False) for _ in range(4000)], dtype=object)
    y = (rng.random(4000) < 0.5).astype(float)
    model = BradleyTerry(rank=16, seed=0).fit(X, pairs, y, models=names)
    pool = ModelPool(models=tuple(ModelSpec(name=n, supports_vision=i % 2 == 0, input_cost_per_token=1e-7 * (i + 1),
                                            output_cost_per_token=4e-7 * (i + 1), context_window=32000)
                                  for i, n in enumerate(names)))
    return Router(pipeline, model, pool)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="queries per kind")
    ap.add_argument("--encoder", default="clip:ViT-B-32:random")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    router = build_router(args.encoder)
    enc = next(e for e in router.pipeline.encoders if isinstance(e, ClipEncoder))
    print(f"encoder {args.encoder}, {args.n} queries per kind, torch threads {args.threads}, "
          f"{os.cpu_count()} CPUs; times in ms")
    print(f"{'kind':<12} {'floor p50':>10} {'route p50':>10} {'ratio p50':>10} {'floor p95':>10} {'route p95':>10} "
          f"{'ratio p95':>10} {'cached p50':>11} {'cached p95':>11}")
    for kind, with_image in (("text", False), ("text+image", True)):
        warm = make_queries(3, with_image, seed=99)
        floor_times(enc, warm)
        route_times(router, warm)
        qs = make_queries(args.n, with_image, seed=1 if with_image else 2)
        fl, ro, ca = [], [], []
        for q in qs:  # interleave so load changes hit both sides alike
            fl += floor_times(enc, [q])
            ro += route_times(router, [q])
            ca += route_times(router, [q])
        print(f"{kind:<12} {pct(fl, 50):10.1f} {pct(ro, 50):10.1f} {pct(ro, 50) / pct(fl, 50):10.3f} "
              f"{pct(fl, 95):10.1f} {pct(ro, 95):10.1f} {pct(ro, 95) / pct(fl, 95):10.3f} "
              f"{pct(ca, 50):11.2f} {pct(ca, 95):11.2f}")


if __name__ == "__main__":
    main()
