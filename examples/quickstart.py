"""Quick start: train a router on judgments, route text and image queries, record feedback, retrain.

Runs offline on the synthetic example set (`preference_data/example`):

    .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from mmroute.data.formats import read_judgments  # noqa: E402
from mmroute.data.store import FeedbackStore  # noqa: E402
from mmroute.pool import ModelPool  # noqa: E402
from mmroute.router import Router  # noqa: E402
from mmroute.training import resolve_image_paths, retrain, train_router  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "preference_data" / "example"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mmroute-quickstart-"))
    res = read_judgments(EXAMPLE / "judgments.jsonl")  # strict: a bad line raises, naming file and line
    judgments = resolve_image_paths(res.items, res.base_dir)
    router = train_router(judgments, encoder="clip:tiny", pool=ModelPool.load(EXAMPLE / "pool.yaml"))
    router.save(work / "router")  # versions/v0001 + CURRENT; safetensors + JSON

    router = Router.load(work / "router")
    image = sorted((EXAMPLE / "images").iterdir())[0]
    for query in ["What is 37 * 12?", {"text": "What colour is the shape?", "images": [str(image)]}]:
        d = router.route(query)
        print(f"{d.model:<22} fallbacks={d.fallbacks}\n  {d.reason}")

    store = FeedbackStore(work / "feedback.db")
    # e.g. users preferred the math model's answers on arithmetic; retraining holds out a fifth of
    # the new queries and needs at least 20 held-out judgments to compare the routers fairly
    for i in range(150):
        store.record(f"What is {i} * {i + 7}?", "replay/math-text", "replay/large-vision", "model_a")
    report = retrain(work / "router", store)
    print(report.summary())
    print("after retraining:", Router.load(work / "router").route("What is 37 * 12?").model)


if __name__ == "__main__":
    main()
