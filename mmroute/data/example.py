"""The synthetic example set: a small, fully offline preference data set the project makes itself.

It exists so that every part of mmroute (training, routing, the replay LLM provider, verifiers,
the evaluation harness) can be exercised end to end without network access or licensed data.
Everything in it is SYNTHETIC: the images are drawn shapes and the "answers" come from simulated
models with a fixed skill per task category. See ``mmroute/example_data/README.md``.

The committed copy ships inside the package (``mmroute/example_data``, package data), so an
installed wheel has it too; :func:`example_dir` is the one way to find it.

Reproducibility is byte-for-byte: randomness comes only from ``random.Random(seed).random()``
(a stream Python keeps stable), shapes are rasterised with integer arithmetic in numpy, and PNGs
are written by a tiny encoder using stored (uncompressed) deflate blocks, so no zlib/Pillow
version can change a byte. Pillow is used to check the images read back.
"""

from __future__ import annotations

import argparse
import atexit
import math
import random
import shutil
import struct
import tempfile
import threading
import zlib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np

from .formats import Outcome, outcomes_to_judgments, write_jsonl

SOURCE = "synthetic:mmroute-example"
SIZE = 96
N_SAMPLES = 3
EXAMPLE_PACKAGE_DIR = "example_data"  # inside the mmroute package; shipped as package data
_EXTRACTED: Path | None = None
_EXTRACT_LOCK = threading.Lock()

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220),
    "yellow": (235, 200, 30), "purple": (140, 60, 180), "orange": (240, 130, 30),
}
SHAPES = ("circle", "square", "triangle")

#: The candidate models: LiteLLM ids under the custom provider ``replay``.
MODELS: dict[str, dict[str, Any]] = {
    "replay/tiny-text": {"supports_vision": False, "input_cost_per_token": 5e-08, "output_cost_per_token": 2e-07,
                         "context_window": 8192, "tags": ["text-only", "cheap"]},
    "replay/small-vision": {"supports_vision": True, "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07,
                            "context_window": 32768, "tags": ["vision", "cheap"]},
    "replay/large-vision": {"supports_vision": True, "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                            "context_window": 128000, "tags": ["vision", "expensive"]},
    "replay/math-text": {"supports_vision": False, "input_cost_per_token": 5e-07, "output_cost_per_token": 1.5e-06,
                         "context_window": 16384, "tags": ["text-only", "math"]},
}
TOKENS_PER_IMAGE = 85  # a 96x96 image is one low-detail tile

#: Probability that one sampled answer is correct, per model and category. ``None``: the model is
#: text-only and the query has an image, so it answers blind (a guess, right by chance only).
SKILLS: dict[str, dict[str, float | None]] = {
    "replay/tiny-text": {"colour": None, "count": None, "arithmetic": 0.30, "trivia": 0.90, "writing": 0.55},
    "replay/small-vision": {"colour": 0.92, "count": 0.35, "arithmetic": 0.45, "trivia": 0.65, "writing": 0.65},
    "replay/large-vision": {"colour": 0.97, "count": 0.90, "arithmetic": 0.92, "trivia": 0.95, "writing": 0.92},
    "replay/math-text": {"colour": None, "count": None, "arithmetic": 0.97, "trivia": 0.55, "writing": 0.45},
}

TRIVIA: list[tuple[str, str]] = [
    ("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"), ("What is the capital of Canada?", "Ottawa"),
    ("What is the capital of Australia?", "Canberra"), ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Egypt?", "Cairo"), ("What is the capital of Kenya?", "Nairobi"),
    ("What is the capital of Norway?", "Oslo"), ("What is the capital of Peru?", "Lima"),
    ("What is the chemical symbol for gold?", "Au"), ("What is the chemical symbol for iron?", "Fe"),
    ("What is the chemical symbol for sodium?", "Na"), ("What is the chemical symbol for silver?", "Ag"),
    ("What is the chemical symbol for potassium?", "K"), ("What is the chemical symbol for lead?", "Pb"),
    ("Which planet is closest to the Sun?", "Mercury"), ("Which planet is the largest in the Solar System?", "Jupiter"),
    ("Which planet is known as the Red Planet?", "Mars"), ("Which planet has the most prominent rings?", "Saturn"),
    ("How many sides does a hexagon have?", "6"), ("How many sides does an octagon have?", "8"),
    ("How many days are in a leap year?", "366"), ("How many minutes are in an hour?", "60"),
    ("Who wrote 'Romeo and Juliet'?", "William Shakespeare"), ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
    ("Who developed the theory of general relativity?", "Albert Einstein"),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen"),
    ("What is the largest ocean on Earth?", "Pacific Ocean"), ("What is the longest river in Africa?", "Nile"),
    ("What is the tallest mountain on Earth?", "Mount Everest"), ("What is the hardest natural substance?", "Diamond"),
    ("What gas do plants absorb from the air?", "Carbon dioxide"), ("What is the freezing point of water in Celsius?", "0"),
    ("What is the boiling point of water in Celsius at sea level?", "100"),
    ("What language has the most native speakers?", "Mandarin Chinese"),
    ("In which year did the first human land on the Moon?", "1969"),
    ("What is the smallest prime number?", "2"), ("What is the square root of 81?", "9"),
    ("Which element has atomic number 1?", "Hydrogen"),
]
TOPICS = ["autumn rain", "a lighthouse", "the first snow", "a lost key", "city traffic", "an old library",
          "a morning run", "the ocean at night", "a broken umbrella", "a new job", "a garden", "a train journey"]
WRITING = ["Write a haiku about {t}.", "Write a two-sentence story about {t}.",
           "Write a short, friendly product description for {t}.", "Write a limerick about {t}."]


class _Rng:
    """Only ``random.Random.random()`` is used: its stream is stable across Python versions."""

    def __init__(self, seed: int):
        self._r = random.Random(seed)

    def random(self) -> float:
        return self._r.random()

    def int(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi]."""
        return lo + min(int(self._r.random() * (hi - lo + 1)), hi - lo)

    def choice(self, seq: list[Any] | tuple[Any, ...]) -> Any:
        return seq[self.int(0, len(seq) - 1)]

    def shuffle(self, seq: list[Any]) -> None:
        for i in range(len(seq) - 1, 0, -1):
            j = self.int(0, i)
            seq[i], seq[j] = seq[j], seq[i]


# --------------------------------------------------------------------------- images


def _png(indices: np.ndarray, palette: list[tuple[int, int, int]]) -> bytes:
    """Encode a (h, w) array of palette indices (< 4, w divisible by 4) as a 2-bit palette PNG."""
    h, w = indices.shape
    q = indices.astype(np.uint8).reshape(h, w // 4, 4)
    packed = (q[:, :, 0] << 6) | (q[:, :, 1] << 4) | (q[:, :, 2] << 2) | q[:, :, 3]
    raw = b"".join(b"\x00" + bytes(row) for row in packed.astype(np.uint8))
    blocks = [b"\x78\x01"]
    for start in range(0, len(raw), 65535):  # stored deflate blocks: no compressor, no version drift
        chunk = raw[start:start + 65535]
        final = 1 if start + 65535 >= len(raw) else 0
        blocks.append(struct.pack("<BHH", final, len(chunk), len(chunk) ^ 0xFFFF) + chunk)
    blocks.append(struct.pack(">I", zlib.adler32(raw)))

    def chunk_(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    plte = b"".join(bytes(c) for c in palette)
    return (b"\x89PNG\r\n\x1a\n" + chunk_(b"IHDR", struct.pack(">IIBBBBB", w, h, 2, 3, 0, 0, 0))
            + chunk_(b"PLTE", plte) + chunk_(b"IDAT", b"".join(blocks)) + chunk_(b"IEND", b""))


_YY, _XX = np.mgrid[0:SIZE, 0:SIZE]


def _draw(canvas: np.ndarray, shape: str, cx: int, cy: int, r: int, value: int) -> None:
    """Integer rasterisation (identical on every platform)."""
    if shape == "circle":
        mask = (_XX - cx) ** 2 + (_YY - cy) ** 2 <= r * r
    elif shape == "square":
        mask = (abs(_XX - cx) <= r) & (abs(_YY - cy) <= r)
    else:  # triangle, apex up: half-width grows linearly from the apex to the base
        top, height = cy - r, 2 * r
        dy = _YY - top
        mask = (dy >= 0) & (dy <= height) & (abs(_XX - cx) * height <= dy * r)
    canvas[mask] = value


def _colour_image(rng: _Rng) -> tuple[bytes, str, str]:
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    canvas = np.zeros((SIZE, SIZE), dtype=np.uint8)
    r = rng.int(18, 30)
    _draw(canvas, shape, rng.int(r + 4, SIZE - r - 5), rng.int(r + 4, SIZE - r - 5), r, 1)
    return _png(canvas, [(255, 255, 255), COLOURS[colour], (0, 0, 0), (0, 0, 0)]), colour, shape


def _count_image(rng: _Rng) -> tuple[bytes, int]:
    n = rng.int(1, 6)
    main, other = rng.choice(list(COLOURS)), rng.choice(list(COLOURS))
    canvas = np.zeros((SIZE, SIZE), dtype=np.uint8)
    placed: list[tuple[int, int, int]] = []
    n_distractors = rng.int(0, 2)
    for k in range(n + n_distractors):
        r = rng.int(6, 9)
        for _ in range(200):  # rejection sampling for non-overlapping shapes
            cx, cy = rng.int(r + 2, SIZE - r - 3), rng.int(r + 2, SIZE - r - 3)
            if all((cx - x) ** 2 + (cy - y) ** 2 > (r + rr + 4) ** 2 for x, y, rr in placed):
                break
        else:  # pragma: no cover - 96x96 always has room for 8 small shapes
            continue
        placed.append((cx, cy, r))
        _draw(canvas, "circle" if k < n else "square", cx, cy, r, 1 if k < n else 2)
    return _png(canvas, [(255, 255, 255), COLOURS[main], COLOURS[other], (0, 0, 0)]), n


# --------------------------------------------------------------------------- answers


def _sample(rng: _Rng, cat: str, gold: str, p: float | None, ctx: dict[str, Any]) -> tuple[str, bool]:
    """One sampled answer and whether it is correct; wrong answers vary so weak models are inconsistent."""
    if p is None:  # text-only model on an image query: it never saw the image and guesses
        guess = rng.choice(list(COLOURS)) if cat == "colour" else str(rng.int(1, 6))
        lead = "I can't see any image, but my guess is"
        return (f"{lead} {guess}." if cat == "colour" else f"{lead} {guess} circles."), guess == gold
    ok = rng.random() < p
    if cat == "colour":
        c = gold if ok else rng.choice([c for c in COLOURS if c != gold])
        return f"The {ctx['shape']} is {c}.", ok
    if cat == "count":
        n = int(gold) if ok else max(0, int(gold) + rng.choice([-2, -1, 1, 2]))
        ok = ok or n == int(gold)
        return f"There {'is' if n == 1 else 'are'} {n} circle{'' if n == 1 else 's'}.", ok
    if cat == "arithmetic":
        v = int(gold) if ok else int(gold) + rng.choice([-1, 1]) * rng.int(1, 12) * rng.choice([1, 1, 10])
        return f"{ctx['expr']} = {v}", v == int(gold)
    if cat == "trivia":
        a = gold if ok else rng.choice([x for _, x in TRIVIA if x != gold])
        return f"{a}.", ok
    topic = ctx["topic"]
    if ok:
        return rng.choice([f"Here is a piece about {topic}, with a clear image and a quiet ending.",
                           f"A careful, on-topic answer about {topic} in the requested form.",
                           f"({ctx['form']}) {topic.capitalize()}: vivid, concise, and in the requested form."]), True
    return rng.choice([f"Sure! Here is something about {rng.choice([t for t in TOPICS if t != topic])}.",
                       "I'm not sure what to write.",
                       f"{topic} {topic} {topic}."]), False


def _cost(model: str, text: str, n_images: int, answer: str) -> float:
    m = MODELS[model]
    prompt = math.ceil(len(text) / 4) + (n_images * TOKENS_PER_IMAGE if m["supports_vision"] else 0)
    out = math.ceil(len(answer) / 4)
    return round(prompt * m["input_cost_per_token"] + out * m["output_cost_per_token"], 12)


def _categories(n: int, rng: _Rng) -> list[str]:
    colour, count = round(n * 0.25), round(n * 0.25)
    arith, trivia = round(n / 6), round(n / 6)
    cats = ["colour"] * colour + ["count"] * count + ["arithmetic"] * arith + ["trivia"] * trivia
    cats += ["writing"] * max(0, n - len(cats))
    cats = cats[:n]
    rng.shuffle(cats)
    return cats


def _pool_yaml() -> str:
    lines = ["# Candidate models of the SYNTHETIC example set (LiteLLM ids under the custom provider 'replay').",
             "# Prices are explicit: LiteLLM does not know these models.", "models:"]
    for name, m in MODELS.items():
        lines += [f"  - name: {name}", f"    supports_vision: {'true' if m['supports_vision'] else 'false'}",
                  f"    input_cost_per_token: {m['input_cost_per_token']!r}",
                  f"    output_cost_per_token: {m['output_cost_per_token']!r}",
                  f"    context_window: {m['context_window']}"]
        if m["supports_vision"]:
            lines.append(f"    tokens_per_image: {TOKENS_PER_IMAGE}")
        lines.append(f"    tags: [{', '.join(m['tags'])}]")
    return "\n".join(lines) + "\n"


_README = """# Example preference data (SYNTHETIC)

**Everything in this folder is synthetic**, generated by `mmroute.data.example.generate_example`
(seed {seed}, {n} queries). No real model produced these answers and no person judged them; every
record says so in its `source` field (`{source}`). Regenerate with

    python -m mmroute.data.example mmroute/example_data --seed {seed} --n-queries {n}

(the output is byte-for-byte identical; `tests/test_data_formats.py` checks it).

| file | what |
|---|---|
| `images/*.png` | 96x96 drawn shapes (2-bit palette PNGs) |
| `outcomes.jsonl` | per query, each model's score = fraction of its {k} sampled answers that are correct, and its cost in USD |
| `judgments.jsonl` | every model pair of every outcome (higher score wins; equal scores tie, both 0 is `tie (bothbad)`) |
| `answers.jsonl` | the recorded answers for the `replay` LLM provider: `{{"id", "query", "answers": {{model: [3 samples]}}, "gold", "category", "correct", "source"}}` |
| `pool.yaml` | the four candidate models with explicit prices, context windows and vision support |

Query categories ({counts}): `colour` ("What colour is the shape?", image), `count` ("How many
circles?", image, squares are distractors), `arithmetic` (text), `trivia` (text, short gold
answer) and `writing` (open-ended, no gold; a sample is "correct" when the simulator drew a good one).

Models and their per-sample probability of a correct answer (`blind`: text-only model on an image
query, it answers without seeing the image, so only a lucky guess is right):

| model | vision | $/1M in / out | colour | count | arithmetic | trivia | writing |
|---|---|---|---|---|---|---|---|
{skills}

Wrong answers vary between samples (a different wrong colour, count, sum or fact), so a weak
model is also an inconsistent one: an answer-consistency verifier has something to find.
"""  # noqa: E501 - a markdown table row written out verbatim (wrapping it would change the generated README)


def generate_example(out_dir: str | Path, seed: int = 0, n_queries: int = 240) -> dict[str, int]:
    """Write the synthetic example set into ``out_dir`` (deterministic, byte for byte).

    Returns counts of what was written (queries, images, judgments).
    """
    if n_queries < 1:
        raise ValueError("n_queries must be at least 1")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = _Rng(seed)
    cats = _categories(n_queries, rng)
    trivia_order = list(range(len(TRIVIA)))
    rng.shuffle(trivia_order)
    outcomes: list[Outcome] = []
    answers: list[dict[str, Any]] = []
    n_images = 0
    for i, cat in enumerate(cats):
        qid = f"ex-{i:04d}"
        images: list[str] = []
        ctx: dict[str, Any] = {}
        if cat == "colour":
            png, gold, shape = _colour_image(rng)
            ctx["shape"] = shape
            text = rng.choice(["What colour is the shape?", f"What colour is the {shape} in this picture?",
                               "Which colour is the shape in the image? Answer with one word."])
        elif cat == "count":
            png, n = _count_image(rng)
            gold = str(n)
            text = rng.choice(["How many circles are in the image?", "Count the circles in this picture.",
                               "How many circles?"])
        elif cat == "arithmetic":
            if rng.random() < 0.6:
                a, b = rng.int(11, 99), rng.int(2, 19)
                ctx["expr"], gold = f"{a} * {b}", str(a * b)
            else:
                a, b = rng.int(100, 999), rng.int(100, 999)
                ctx["expr"], gold = f"{a} + {b}", str(a + b)
            text = f"What is {ctx['expr']}?"
        elif cat == "trivia":
            text, gold = TRIVIA[trivia_order[i % len(TRIVIA)]]
        else:
            form = rng.choice(WRITING)
            ctx["topic"], ctx["form"] = rng.choice(TOPICS), form.split(" about")[0].split(" for")[0]
            text, gold = form.format(t=ctx["topic"]), ""
        if cat in ("colour", "count"):
            name = f"images/{qid}.png"
            (out / name).write_bytes(png)
            images, n_images = [name], n_images + 1
        query = {"text": text, "images": images}
        samples: dict[str, list[str]] = {}
        correct: dict[str, list[bool]] = {}
        for model, skills in SKILLS.items():
            got = [_sample(rng, cat, gold, skills[cat], ctx)
                   for _ in range(N_SAMPLES)]
            samples[model] = [a for a, _ in got]
            correct[model] = [ok for _, ok in got]
        scores = {m: round(sum(c) / N_SAMPLES, 4) for m, c in correct.items()}
        costs = {m: _cost(m, text, len(images), samples[m][0]) for m in SKILLS}
        outcomes.append(Outcome(query=query, scores=scores, costs=costs, id=qid, source=SOURCE, category=cat))
        answers.append({"id": qid, "query": query, "answers": samples, "gold": gold, "category": cat,
                        "correct": correct, "source": SOURCE})
    written = {f"ex-{i:04d}.png" for i, c in enumerate(cats) if c in ("colour", "count")}
    for stale in (out / "images").glob("ex-*.png"):  # from an earlier run with other settings
        if stale.name not in written:
            stale.unlink()
    write_jsonl(out / "outcomes.jsonl", outcomes)
    judgments = outcomes_to_judgments(outcomes)
    write_jsonl(out / "judgments.jsonl", judgments)
    write_jsonl(out / "answers.jsonl", answers)
    (out / "pool.yaml").write_text(_pool_yaml(), encoding="utf-8", newline="\n")
    counts = {c: cats.count(c) for c in ("colour", "count", "arithmetic", "trivia", "writing")}
    skills_table = "\n".join(
        f"| `{m}` | {'yes' if MODELS[m]['supports_vision'] else 'no'} | "
        f"{MODELS[m]['input_cost_per_token'] * 1e6:g} / {MODELS[m]['output_cost_per_token'] * 1e6:g} | "
        + " | ".join("blind" if s[c] is None else f"{s[c]:.2f}" for c in counts) + " |"
        for m, s in SKILLS.items())
    (out / "README.md").write_text(_README.format(
        seed=seed, n=n_queries, source=SOURCE, k=N_SAMPLES, skills=skills_table,
        counts=", ".join(f"{n} {c}" for c, n in counts.items())), encoding="utf-8", newline="\n")
    return {"queries": n_queries, "images": n_images, "judgments": len(judgments)}


def example_dir() -> Path:
    """The committed example set (package data ``mmroute/example_data``) as a real folder.

    Read with :mod:`importlib.resources` so it works from a source checkout and an installed
    wheel alike; from a zipped install the folder is copied out once per process (callers pass
    plain paths to open_clip / PIL / SQLite, which need files on disk).

    Returns:
        The folder holding the example judgments, outcomes, pool and images.
    """
    global _EXTRACTED
    res = resources.files("mmroute") / EXAMPLE_PACKAGE_DIR
    if isinstance(res, Path):
        return res
    with _EXTRACT_LOCK:
        if _EXTRACTED is None:
            out = Path(tempfile.mkdtemp(prefix="mmroute-example-"))
            atexit.register(shutil.rmtree, out, True)
            _EXTRACTED = copy_tree(res, out / EXAMPLE_PACKAGE_DIR)
        return _EXTRACTED


def copy_tree(src: Traversable, dest: Path) -> Path:
    """Copy a resource folder to disk (``importlib.resources.as_file`` takes folders only from 3.12)."""
    dest.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():
        if child.is_dir():
            copy_tree(child, dest / child.name)
        else:
            (dest / child.name).write_bytes(child.read_bytes())
    return dest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write mmroute's synthetic example preference set.")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-queries", type=int, default=240)
    args = ap.parse_args(argv)
    print(generate_example(args.out_dir, seed=args.seed, n_queries=args.n_queries))


if __name__ == "__main__":
    main()


__all__ = ["generate_example", "example_dir", "MODELS", "SKILLS", "SOURCE"]
