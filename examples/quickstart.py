"""Quick start: train a router on judgments, route text and image queries, record feedback, retrain.

Runs offline on the synthetic example set shipped with mmroute (`mmroute.example_dir()`):

    .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no pretrained weights are needed: clip:tiny is random

from mmroute import FeedbackStore, ModelPool, Router, example_dir, read_judgments, retrain, train_router  # noqa: E402
from mmroute.offline import use_local_cost_map  # noqa: E402

use_local_cost_map()  # LiteLLM (imported when the pool looks up model facts) uses its bundled price map

EXAMPLE = example_dir()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mmroute-quickstart-"))
    res = read_judgments(EXAMPLE / "judgments.jsonl")  # strict: a bad line raises, naming file and line
    router = train_router(res.items, base_dir=res.base_dir, encoder="clip:tiny",  # images relative to the file
                          pool=ModelPool.load(EXAMPLE / "pool.yaml"))
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
