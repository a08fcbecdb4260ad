"""A process killed (SIGKILL) while publishing a router leaves the old or the new one, never half."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmroute.checkpoint import list_versions
from mmroute.data.example import example_dir
from mmroute.errors import InvalidInputError
from mmroute.query import Query

EXAMPLE = example_dir()  # the packaged example set

WRITER = textwrap.dedent("""
    import os, sys
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    from mmroute.router import Router
    r = Router.load(sys.argv[1])
    print("ready", flush=True)
    while True:  # publish versions as fast as possible until killed
        r.save(sys.argv[1])
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_during_publish_never_leaves_a_half_router(tmp_path):
    from mmroute.data.formats import read_judgments
    from mmroute.pool import ModelPool
    from mmroute.router import Router
    from mmroute.data.formats import resolve_image_paths
    from mmroute.training import train_router

    res = read_judgments(EXAMPLE / "judgments.jsonl")
    judgments = resolve_image_paths(res.items, res.base_dir)[:300]
    router = train_router(judgments, encoder="clip:tiny", pool=ModelPool.load(EXAMPLE / "pool.yaml"),
                          model_params={"rank": 4})
    root = tmp_path / "router"
    router.save(root)
    expected = router.route("What is 6 * 7?").model_dump()
    rng = np.random.default_rng(0)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.6)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        loaded = Router.load(root)  # whatever CURRENT names is complete and verifies
        assert loaded.route("What is 6 * 7?").model_dump() == expected
    assert len(list_versions(root)) >= 2  # the writer did publish in between kills


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=300))
def test_any_text_gives_a_query_or_a_clear_error(text):
    try:
        q = Query(text=text)
    except InvalidInputError as exc:
        assert "neither text nor images" in str(exc)
        return
    q.text.encode("utf-8")  # always sendable to a provider
    assert "\x00" not in q.text


@settings(max_examples=150, deadline=None)
@given(content=st.recursive(
    st.one_of(st.none(), st.integers(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["type", "text", "image_url", "url", "data", "role", "content"]),
                                            inner, max_size=3)),
    max_leaves=8))
def test_arbitrary_message_content_never_crashes_unclearly(content):
    from mmroute.errors import MMRouteError

    try:
        Query.from_messages([{"role": "user", "content": content}])
    except MMRouteError:
        pass
