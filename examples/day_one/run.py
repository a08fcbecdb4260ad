"""Day one with your own models, end to end and offline, in a few minutes.

Three local OpenAI-compatible models at different prices (``cheap-text`` gets arithmetic wrong,
``math-text`` gets it right, ``vision`` describes images) and a judge (``local_models.py``), then
the README's Day one steps through the ``mmroute`` command:

1. ``mmroute label`` on 30 queries (6 with an image), judged by the local judge;
2. ``mmroute train`` on those judgments (``--priors``: ``mmroute train --pool`` only, no data);
3. ``mmroute route`` previews a decision;
4. ``mmroute serve --explore thompson --retrain-every N --store ...``; chats go to it through the
   OpenAI SDK (images as data URLs), each answer gets a reward on ``/v1/feedback`` (1 when the
   product or the image's colour is right), until the server publishes a retrained router
   (``mmroute_router_version`` on ``/metrics``);
5. the preview (``mmroute route --json``) and the server (``/v1/route``) score the same query the same.

``python examples/day_one/run.py [--workdir DIR] [--priors] [--timeout 900]``; everything it starts
stops when it ends. It uses ``clip:tiny`` (random weights: the routing signal comes from the
judgments, not from the encoder's meaning).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import local_models  # noqa: E402 - the local models live next to this script

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 210)}
PRICES = {"cheap-text": (1e-7, 2e-7), "math-text": (1e-6, 4e-6), "vision": (5e-6, 1.5e-5)}


def write_inputs(work: Path, ports: dict[str, int]) -> None:
    """Images, ``my_queries.jsonl``, ``pool.yaml`` (the three models) and ``judge_pool.yaml``."""
    from PIL import Image

    (work / "images").mkdir(parents=True, exist_ok=True)
    for name, rgb in COLOURS.items():
        Image.new("RGB", (32, 24), rgb).save(work / "images" / f"{name}.png")
    rng = random.Random(1)
    queries: list[dict] = [{"text": f"What is {rng.randint(10, 99)} * {rng.randint(10, 99)}?"} for _ in range(14)]
    queries += [{"text": t} for t in (
        "Write a haiku about autumn.", "Explain what a hash map is.", "Give me three tips for sleeping better.",
        "Summarise the plot of Hamlet.", "What is the capital of France?", "Translate 'good morning' to Spanish.",
        "Why is the sky blue?", "Suggest a name for a cat.", "How do I reverse a list in Python?",
        "What does HTTP stand for?")]
    for name in COLOURS:
        queries += [{"text": "What colour is this image?", "images": [f"images/{name}.png"]},
                    {"text": "Describe the picture.", "images": [f"images/{name}.png"]}]
    (work / "my_queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))

    def entry(name: str, port: int, vision: bool) -> str:
        cin, cout = PRICES.get(name, (1e-6, 2e-6))
        return (f"  - name: openai/{name}\n"
                f"    litellm_params: {{api_base: \"http://127.0.0.1:{port}/v1\", api_key: os.environ/LOCAL_KEY}}\n"
                f"    supports_vision: {str(vision).lower()}\n    context_window: 32768\n"
                f"    input_cost_per_token: {cin:.1e}\n    output_cost_per_token: {cout:.1e}\n")

    (work / "pool.yaml").write_text("models:\n" + entry("cheap-text", ports["cheap-text"], False)
                                    + entry("math-text", ports["math-text"], False) + entry("vision", ports["vision"], True))
    (work / "judge_pool.yaml").write_text("models:\n" + entry("judge", ports["judge"], True))


def mmroute(work: Path, *args: str, timeout: float = 300) -> str:
    """Run one ``mmroute`` command in ``work``; show and return its stdout, fail loudly on error."""
    print(f"\n$ mmroute {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "mmroute.cli", *args], cwd=work, capture_output=True, text=True,
                          timeout=timeout)
    shown = "\n".join(line for line in (done.stdout + done.stderr).splitlines() if "it/s]" not in line)
    print(shown[-3000:], flush=True)
    if done.returncode != 0:
        raise SystemExit(f"mmroute {args[0]} failed (exit {done.returncode})")
    return done.stdout


def png_url(name: str, work: Path) -> str:
    return "data:image/png;base64," + base64.b64encode((work / "images" / f"{name}.png").read_bytes()).decode()


def one_chat(rng: random.Random, work: Path) -> tuple[str, list[dict], str | None]:
    """(kind, messages, the text a right answer contains; None: any answer is fine)."""
    kind = rng.choice(["math", "math", "chat", "image"])
    if kind == "math":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return kind, [{"role": "user", "content": f"What is {a} * {b}?"}], str(a * b)
    if kind == "chat":
        text = rng.choice(["Tell me a fun fact.", "Write a limerick about cheese.", "What is a monad?"])
        return kind, [{"role": "user", "content": text}], None
    colour = rng.choice(sorted(COLOURS))
    return kind, [{"role": "user", "content": [{"type": "text", "text": "What colour is this?"},
                                              {"type": "image_url", "image_url": {"url": png_url(colour, work)}}]}], colour


def version(url: str) -> str | None:
    """The version the server reports serving (``mmroute_router_version{version="v0002"} 1.0``)."""
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("mmroute_router_version{") and line.endswith(" 1.0"):
            return line.split('"')[1]
    return None


def attempts(url: str) -> float:
    """Retrains the server has finished, whatever their outcome (``mmroute_retrains_total``)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in httpx.get(url + "/metrics", timeout=10).text.splitlines()
               if line.startswith("mmroute_retrains_total{"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="where the files go (default: a new temporary folder)")
    ap.add_argument("--priors", action="store_true", help="start from `mmroute train --pool` only (no judgments)")
    ap.add_argument("--base-port", type=int, default=0, help="the local models take this port and the next three "
                    "(default: free ports)")
    ap.add_argument("--port", type=int, default=8010, help="mmroute serve's port")
    ap.add_argument("--retrain-every", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mmroute-day-one-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LOCAL_KEY", "sk-local")  # the pool reads it with os.environ/LOCAL_KEY
    print(f"working in {work}")
    servers = local_models.serve(args.base_port)
    serve: subprocess.Popen[bytes] | None = None
    try:
        write_inputs(work, {name: s.server_address[1] for name, s in zip(local_models.NAMES, servers)})
        encoder = "clip:tiny"
        router = "routers/mine"
        if args.priors:
            mmroute(work, "train", "--pool", "pool.yaml", "--encoder", encoder, "--out", router)
        else:
            mmroute(work, "label", "--queries", "my_queries.jsonl", "--pool", "pool.yaml", "--judge", "openai/judge",
                    "--judge-pool", "judge_pool.yaml", "--max-usd", "1", "--out", "judgments.jsonl", "--quiet")
            mmroute(work, "train", "--judgments", "judgments.jsonl", "--pool", "pool.yaml", "--encoder", encoder,
                    "--out", router, "--quiet")
        mmroute(work, "route", "--router", router, "--text", "What is 31 * 47?")

        url = f"http://127.0.0.1:{args.port}"
        log = (work / "serve.log").open("wb")
        cmd = [sys.executable, "-m", "mmroute.cli", "serve", "--router", router, "--store", "feedback.db",
               "--port", str(args.port), "--explore", "thompson", "--explore-share", "0.3", "--explore-usd", "1",
               "--retrain-every", str(args.retrain_every), "--retrain-min-holdout", "4"]
        print(f"\n$ mmroute {' '.join(cmd[3:])}   (log: {work / 'serve.log'})", flush=True)
        serve = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if serve.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"mmroute serve did not come up (see {work / 'serve.log'})")
            time.sleep(1)

        from openai import OpenAI

        client = OpenAI(base_url=url + "/v1", api_key="-", max_retries=0)
        first = version(url)
        rng, sent, rnd = random.Random(7), 0, 0
        while version(url) == first and time.monotonic() < deadline:
            rnd += 1
            tried = attempts(url)
            right = {"math": [0, 0], "image": [0, 0], "chat": [0, 0]}
            for _ in range(args.retrain_every):
                kind, messages, truth = one_chat(rng, work)
                raw = client.chat.completions.with_raw_response.create(model="mmroute", messages=messages)
                answer = raw.parse().choices[0].message.content or ""
                ok = truth is None or truth in answer
                right[kind][0] += ok
                right[kind][1] += 1
                httpx.post(url + "/v1/feedback", json={"decision_id": raw.headers["x-mmroute-decision-id"],
                                                       "reward": 1.0 if ok else 0.0}, timeout=10).raise_for_status()
                sent += 1
            print(f"round {rnd} on {version(url)}: right " + ", ".join(f"{k} {a}/{n}" for k, (a, n) in right.items()),
                  flush=True)
            wait_until = time.monotonic() + 30  # the server counts new judgments every 5 s, then retrains
            while attempts(url) == tried and time.monotonic() < min(wait_until, deadline):
                time.sleep(2)
        now = version(url)
        print(f"\n{sent} chats with feedback; router version {first} -> {now}")
        for line in (work / "serve.log").read_text().splitlines():
            if "mmroute.server: retrain" in line or "now serving" in line:
                print(line[:300])
        if now == first:
            raise SystemExit("the server did not publish a retrained router before --timeout")

        preview = json.loads(mmroute(work, "route", "--router", router, "--text", "What is 31 * 47?", "--json"))
        served = httpx.post(url + "/v1/route", json={"text": "What is 31 * 47?"}, timeout=30).json()
        same = ({c["model"]: round(c["utility"], 9) for c in preview["candidates"]}
                == {c["model"]: round(c["utility"], 9) for c in served["candidates"]})
        print(f"preview {preview['router_version']} and server {served['router_version']} score the query "
              f"{'the same' if same else 'DIFFERENTLY'}; the server (exploring) chose {served['model']} "
              f"with probability {served['propensity']:.2f}, the preview {preview['model']}")
        return 0 if same and preview["router_version"] == served["router_version"] else 1
    finally:
        if serve is not None:
            serve.terminate()
            try:
                serve.wait(timeout=20)
            except subprocess.TimeoutExpired:
                serve.kill()
        for s in servers:
            s.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
