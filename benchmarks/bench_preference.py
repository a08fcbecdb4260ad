"""Benchmark BradleyTerry on this machine: fit time at production scale and single-update latency.

Prints numbers, asserts nothing (timings depend on the machine and its load). Targets: fit of
100k judgments x 512-d x 20 models in < 10 s on 2 threads; one partial_fit in < 10 ms.

    .venv/bin/python benchmarks/bench_preference.py [--n 100000] [--d 512] [--models 20]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from mmroute.preference import BradleyTerry


def simulate(n: int, d: int, M: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CLIP-like features (unit norm) and judgments from a known rank-4 contextual BT model."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    b = rng.standard_normal(M)
    P = rng.standard_normal((4, d)) * np.sqrt(d) / np.sqrt(4)
    V = rng.standard_normal((M, 4)) * 0.5
    ia = rng.integers(0, M, n)
    ib = (ia + rng.integers(1, M, n)) % M
    s = b[None, :] + (X @ P.T) @ V.T
    z = s[np.arange(n), ia] - s[np.arange(n), ib]
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    names = np.array([f"model-{i}" for i in range(M)], dtype=object)
    return X, names[np.stack([ia, ib], 1)], y, z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--updates", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, load average {os.getloadavg()}")

    X, pairs, y, z = simulate(args.n + 5000, args.d, args.models)
    Xtr, ptr, ytr = X[: args.n], pairs[: args.n], y[: args.n]
    Xte, pte, yte, zte = X[args.n :], pairs[args.n :], y[args.n :], z[args.n :]

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    model = BradleyTerry(rank=16, seed=0).fit(Xtr, ptr, ytr)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(f"fit: {args.n} judgments x {args.d}-d x {args.models} models: {wall:.2f} s wall, {cpu:.2f} s CPU")
    bayes = np.mean((zte > 0) == (yte > 0.5))
    print(f"  held-out accuracy {model.accuracy(Xte, pte, yte):.4f} (Bayes rate {bayes:.4f}), "
          f"log-loss {model.log_loss(Xte, pte, yte):.4f}")

    lat = []
    for i in range(args.updates):
        j = i % len(Xte)
        t = time.perf_counter()
        model.partial_fit(Xte[j : j + 1], pte[j : j + 1], yte[j : j + 1])
        lat.append(time.perf_counter() - t)
    lat_ms = np.array(lat[5:]) * 1e3  # skip warm-up
    print(f"partial_fit, 1 judgment: p50 {np.percentile(lat_ms, 50):.2f} ms, "
          f"p95 {np.percentile(lat_ms, 95):.2f} ms, max {lat_ms.max():.2f} ms ({len(lat_ms)} updates)")

    t = time.perf_counter()
    model.partial_fit(Xte[:1000], pte[:1000], yte[:1000])
    print(f"partial_fit, 1000 judgments: {(time.perf_counter() - t) * 1e3:.1f} ms")
    t = time.perf_counter()
    for _ in range(20):
        model.expected_quality(Xte[:1])
    print(f"expected_quality, 1 query: {(time.perf_counter() - t) / 20 * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
