"""Serving throughput and overheads, measured against baselines in the same run.

1. ``/v1/route`` of ``mmroute serve`` (a subprocess) at 1, 8, 32, 128 concurrent clients, against
   ``Router.route`` called in-process one query at a time, for text and text+image queries.
   Every query is new (no embedding-cache hits), so each one is encoded.
2. ``/v1/chat/completions`` through the server against a direct ``litellm.acompletion`` to the
   same upstream (a local OpenAI-compatible app in another subprocess), one request at a time.
3. Through the real LiteLLM proxy (``mmroute proxy``): the ``mmroute`` model group against a
   group with the same deployments under LiteLLM's default strategy (simple-shuffle).

Prints figures; asserts nothing. Client, server, upstream and proxy share the machine's cores,
so absolute figures depend on the machine and its load; the ratios are what to compare.

    nice -n 10 .venv/bin/python benchmarks/bench_serve.py [--encoder clip:tiny] [--n 128] [--chat-n 60]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402  (module level: the upstream's annotations resolve here)

REPO = Path(__file__).resolve().parents[1]
WORDS = ("route cost image model answer quality vision text budget cascade verify judge prompt token "
         "photo chart table diagram count colour shape explain compare summarise translate").split()
MODELS = ("text", "vision", "big")


# -- the upstream (run as `bench_serve.py --upstream PORT`) ----------------------------------------------

def run_upstream(port: int) -> None:
    import uvicorn

    app = FastAPI()

    @app.post("/{name}/v1/chat/completions")
    async def chat(name: str, request: Request) -> dict:
        body = await request.json()
        return {"id": "chatcmpl-up", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                                                                               "content": f"answer from {name}"}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- helpers ----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_url(rng: np.random.Generator, size: int = 224) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def make_queries(n: int, with_image: bool, seed: int, tag: str) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"text": f"{tag}{i} " + " ".join(rng.choice(WORDS, size=30)),
             "images": [png_url(rng)] if with_image else []} for i in range(n)]


def stats(latencies: list[float], wall: float) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000
    return {"n": len(latencies), "qps": len(latencies) / wall, "p50": float(np.percentile(ms, 50)),
            "p95": float(np.percentile(ms, 95))}


def row(label: str, s: dict[str, float], base: dict[str, float] | None = None) -> str:
    ratio = f"{s['qps'] / base['qps']:6.2f}x" if base else "   1.00x"
    return f"  {label:<38} {s['n']:>5} {s['qps']:>9.1f} {s['p50']:>9.1f} {s['p95']:>9.1f}  {ratio}"


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not come up in {timeout_s}s: {log.read_text()[-2000:]}")
        time.sleep(0.3)


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, *args], env=full_env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def train(folder: Path, encoder: str, upstream: str) -> None:
    from mmroute.data import Judgment, QueryRecord
    from mmroute.policy import CostAwarePolicy
    from mmroute.pool import ModelPool
    from mmroute.training import train_router

    prices = {"text": 1e-8, "vision": 1e-6, "big": 1e-4}
    pool = ModelPool(models=[{"name": f"openai/{m}", "supports_vision": m != "text", "input_cost_per_token": prices[m],
                              "output_cost_per_token": prices[m],
                              "litellm_params": {"api_base": f"{upstream}/{m}/v1", "api_key": "x"}} for m in MODELS])
    rng = np.random.default_rng(0)
    queries = [QueryRecord(text=f"training question {i}", images=[png_url(rng, 32)] if i % 2 else []) for i in range(6)]
    pairs = [("openai/big", "openai/vision"), ("openai/vision", "openai/text"), ("openai/big", "openai/text")]
    judgments = [Judgment(query=q, model_a=a, model_b=b, winner="model_a") for q in queries for a, b in pairs]
    router = train_router(judgments, encoder=encoder, pool=pool, policy=CostAwarePolicy(lam=1e4),
                          model_params={"max_epochs": 40}, progress=False)
    router.save(folder)


# -- measurements -------------------------------------------------------------------------------------------

def in_process(router_dir: Path, queries: list[dict]) -> dict[str, float]:
    from mmroute.router import Router

    router = Router.load(router_dir)
    router.route({"text": "warm up", "images": queries[0]["images"]})
    lat = []
    t0 = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        router.route(q)
        lat.append(time.perf_counter() - t)
    return stats(lat, time.perf_counter() - t0)


async def http_load(url: str, bodies: list[dict], concurrency: int, headers: dict[str, str] | None = None,
                    timeout_s: float = 300) -> dict[str, float]:
    import httpx

    lat: list[float] = []
    it = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as client:
        async def worker() -> None:
            for body in it:
                t = time.perf_counter()
                r = await client.post(url, json=body)
                r.raise_for_status()
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*[worker() for _ in range(concurrency)]), timeout_s)
        return stats(lat, time.perf_counter() - t0)


async def direct_litellm(upstream: str, n: int) -> dict[str, float]:
    import litellm

    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await litellm.acompletion(model="openai/text", api_base=f"{upstream}/text/v1", api_key="x",
                                  messages=[{"role": "user", "content": f"direct {i} what is 2 + 2?"}])
        lat.append(time.perf_counter() - t)
    return stats(lat, time.perf_counter() - t0)


def chat_bodies(n: int, tag: str, model: str = "mmroute") -> list[dict]:
    return [{"model": model, "messages": [{"role": "user", "content": f"{tag} {i} what is 2 + 2?"}]} for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--encoder", default="clip:tiny")
    ap.add_argument("--n", type=int, default=128, help="requests per /v1/route measurement")
    ap.add_argument("--concurrency", default="1,8,32,128")
    ap.add_argument("--chat-n", type=int, default=60, help="requests per chat / proxy measurement")
    ap.add_argument("--skip-proxy", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (server and in-process alike)")
    args = ap.parse_args()
    if args.upstream:
        run_upstream(args.upstream)
        return
    import torch

    torch.set_num_threads(args.threads)
    levels = [int(c) for c in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="mmroute-bench-serve-"))
    procs: list[subprocess.Popen] = []
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        procs.append(start([__file__, "--upstream", str(up_port)], work / "upstream.log"))
        print(f"encoder {args.encoder}; torch threads {args.threads}; {os.cpu_count()} CPUs (shared: see load below)")
        print(f"load average at start: {os.getloadavg()}")
        train(work / "router", args.encoder, upstream)
        port = free_port()
        server = f"http://127.0.0.1:{port}"
        procs.append(start(["-m", "mmroute.cli", "serve", "--router", str(work / "router"), "--port", str(port),
                            "--log-level", "warning"], work / "server.log", env))
        wait_http(upstream + "/docs", procs[0], 60, work / "upstream.log")
        wait_http(server + "/healthz", procs[1], 240, work / "server.log")

        print("\n/v1/route: throughput (queries/s) and latency (ms), every query new")
        print(f"  {'':<38} {'n':>5} {'q/s':>9} {'p50':>9} {'p95':>9}  vs in-process")
        for kind, with_image in (("text", False), ("text+image", True)):
            base = in_process(work / "router", make_queries(min(args.n, 64), with_image, 1, f"in-{kind}-"))
            print(row(f"{kind}: Router.route in-process", base))
            asyncio.run(http_load(server + "/v1/route", make_queries(8, with_image, 2, f"warm-{kind}-"), 4))
            for c in levels:
                qs = make_queries(args.n, with_image, 10 + c, f"http-{kind}-{c}-")
                s = asyncio.run(http_load(server + "/v1/route", qs, c))
                print(row(f"{kind}: server, {c} clients", s, base))

        print(f"\nchat, one request at a time ({args.chat_n} requests; upstream answers at once)")
        asyncio.run(direct_litellm(upstream, 5))
        direct = asyncio.run(direct_litellm(upstream, args.chat_n))
        asyncio.run(http_load(server + "/v1/chat/completions", chat_bodies(5, "warm"), 1))
        served = asyncio.run(http_load(server + "/v1/chat/completions", chat_bodies(args.chat_n, "served"), 1))
        print(f"  direct litellm.acompletion      p50 {direct['p50']:7.1f} ms  p95 {direct['p95']:7.1f} ms")
        print(f"  through mmroute serve           p50 {served['p50']:7.1f} ms  p95 {served['p95']:7.1f} ms"
              f"  overhead p50 {served['p50'] - direct['p50']:+.1f} ms ({served['p50'] / direct['p50']:.2f}x)")

        if not args.skip_proxy:
            import yaml

            key = "sk-" + secrets.token_hex(16)
            model_list = [{"model_name": group, "model_info": {"mmroute_model": f"openai/{m}"},
                           "litellm_params": {"model": f"openai/{m}", "api_base": f"{upstream}/{m}/v1", "api_key": "x"}}
                          for group in ("mmroute", "plain") for m in MODELS]
            (work / "config.yaml").write_text(yaml.safe_dump({"model_list": model_list}))
            pport = free_port()
            proxy = f"http://127.0.0.1:{pport}"
            procs.append(start(["-m", "mmroute.cli", "proxy", "--config", str(work / "config.yaml"), "--router",
                                str(work / "router"), "--port", str(pport), "--log-level", "warning"],
                               work / "proxy.log", {**env, "LITELLM_MASTER_KEY": key}))
            wait_http(proxy + "/health/liveliness", procs[-1], 300, work / "proxy.log")
            auth = {"Authorization": f"Bearer {key}"}
            print(f"\nLiteLLM proxy, one request at a time ({args.chat_n} requests per group, interleaved in rounds)")
            res: dict[str, list[dict[str, float]]] = {"plain": [], "mmroute": []}
            for group in ("plain", "mmroute"):
                asyncio.run(http_load(proxy + "/v1/chat/completions", chat_bodies(5, f"warm-{group}", group), 1, auth))
            rounds = 3
            for r in range(rounds):
                for group in ("plain", "mmroute"):
                    res[group].append(asyncio.run(http_load(
                        proxy + "/v1/chat/completions", chat_bodies(args.chat_n // rounds, f"{group}-{r}", group), 1, auth)))
            p = {g: float(np.median([s["p50"] for s in v])) for g, v in res.items()}
            p95 = {g: float(np.median([s["p95"] for s in v])) for g, v in res.items()}
            print(f"  default strategy (simple-shuffle) p50 {p['plain']:7.1f} ms  p95 {p95['plain']:7.1f} ms")
            print(f"  mmroute strategy                  p50 {p['mmroute']:7.1f} ms  p95 {p95['mmroute']:7.1f} ms"
                  f"  overhead p50 {p['mmroute'] - p['plain']:+.1f} ms ({p['mmroute'] / p['plain']:.2f}x)")
        print(f"\nload average at end: {os.getloadavg()}")
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
