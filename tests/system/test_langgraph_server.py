"""The real ``langgraph dev`` server (``langgraph-cli[inmem]``) serving ``langgraph.json``'s graph.

One server for the module (it is slow to start: the example router trains on the first run), on a
free port of 127.0.0.1, from a temporary copy of ``langgraph.json`` whose paths point back at the
repository (the in-memory server writes its ``.langgraph_api`` folder beside the config). It is
stopped by its process group. Everything is offline: the example router's ``replay/`` models.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
KNOWN = "What is the capital of Peru?"  # recorded in mmroute/example_data/answers.jsonl
UNKNOWN = "Which river runs through the city of Atlantis?"


def _cli() -> str:
    beside = Path(sys.executable).with_name("langgraph")
    found = str(beside) if beside.exists() else shutil.which("langgraph")
    if found is None:
        pytest.skip("the `langgraph` CLI is not installed (pip install 'langgraph-cli[inmem]', in the dev extra)")
    try:
        import langgraph_api  # noqa: F401  # the in-memory server `langgraph dev` runs
    except ImportError:
        pytest.skip("langgraph-cli is installed without its [inmem] extra (pip install 'langgraph-cli[inmem]')")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config_copy(folder: Path) -> Path:
    """The repo's langgraph.json with its relative paths made absolute (what is served is unchanged)."""
    cfg = json.loads((REPO / "langgraph.json").read_text())
    path, attr = cfg["graphs"]["cascade"].rsplit(":", 1)
    cfg["graphs"]["cascade"] = f"{(REPO / path).resolve()}:{attr}"
    cfg["dependencies"] = [str((REPO / d).resolve()) for d in cfg["dependencies"]]
    out = folder / "langgraph.json"
    out.write_text(json.dumps(cfg))
    return out


def _log_tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cli = _cli()
    folder = tmp_path_factory.mktemp("langgraph_dev")
    port = _free_port()
    db = folder / "feedback.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "MMROUTE_FEEDBACK_DB": str(db), "MMROUTE_MAX_ESCALATIONS": "1", "LANGGRAPH_CLI_NO_ANALYTICS": "1",
           "LANGSMITH_TRACING": "false", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("MMROUTE_ROUTER", None)  # the default: the example router, offline
    log = folder / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([cli, "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload",
                                 "--config", str(_config_copy(folder))],
                                cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{_log_tail(log)}")
            try:
                if httpx.get(f"{base}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev was not ready within 180s:\n{_log_tail(log)}")
            time.sleep(0.5)
        with httpx.Client(base_url=base, timeout=300) as client:
            yield {"client": client, "db": db, "log": log}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def _user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def _thread(client: httpx.Client) -> str:
    r = client.post("/threads", json={})
    assert r.status_code == 200, r.text
    return str(r.json()["thread_id"])


def _ok(r: httpx.Response, log: Path) -> Any:
    assert r.status_code == 200, f"{r.status_code} {r.text}\n{_log_tail(log)}"
    out = r.json()
    assert "__error__" not in out, f"{out['__error__']}\n{_log_tail(log)}"
    return out


def _sse(lines: Iterator[str]) -> list[tuple[str, Any]]:
    """Server-sent events as (event, parsed data)."""
    events, event = [], None
    for line in lines:
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event is not None:
            events.append((event, json.loads(line.split(":", 1)[1])))
    return events


def test_langgraph_dev_serves_runs_streams_and_resumes_feedback(server: dict[str, Any]) -> None:
    from mmroute.data.store import FeedbackStore
    from mmroute.offline import OFFLINE_FALLBACK_TEXT

    client, log = server["client"], server["log"]

    # runs/wait on a recorded question: a recorded answer, then the feedback interrupt
    thread = _thread(client)
    out = _ok(client.post(f"/threads/{thread}/runs/wait", json={"assistant_id": "cascade", "input": _user(KNOWN)}), log)
    answer = out["messages"][-1]
    assert answer["type"] == "ai" and answer["content"] != OFFLINE_FALLBACK_TEXT
    assert answer["response_metadata"]["model_name"].startswith("replay/") and out["status"] == "accepted"
    (request,) = [i["value"] for i in out["__interrupt__"]]
    assert request["kind"] in ("rating", "pairwise") and request["question"] == KNOWN
    state = client.get(f"/threads/{thread}/state").json()
    assert state["next"] == ["feedback"]

    # resume the interrupt with the user's verdict: it becomes a judgment in MMROUTE_FEEDBACK_DB
    resume = {"rating": "good"} if request["kind"] == "rating" else {"winner": "model_b"}
    done = _ok(client.post(f"/threads/{thread}/runs/wait",
                           json={"assistant_id": "cascade", "command": {"resume": resume}}), log)
    assert "__interrupt__" not in done and done["feedback"]["judgment_id"]
    assert client.get(f"/threads/{thread}/state").json()["next"] == []
    store = FeedbackStore(server["db"])
    try:
        assert [j.id for j in store.iter_judgments()] == [done["feedback"]["judgment_id"]]
    finally:
        store.close()

    # runs/stream on an unrecorded question: token chunks from the generate node, then the
    # labelled offline stand-in (which asks for no feedback: no model answered)
    thread = _thread(client)
    body = {"assistant_id": "cascade", "input": _user(UNKNOWN), "stream_mode": ["messages-tuple", "values"]}
    with client.stream("POST", f"/threads/{thread}/runs/stream", json=body) as resp:
        assert resp.status_code == 200
        events = _sse(resp.iter_lines())
    assert not [d for e, d in events if e == "error"], events
    tokens = [d[0]["content"] for e, d in events
              if e == "messages" and d[1].get("langgraph_node") == "generate" and d[0]["content"]]
    assert len(tokens) >= 3 and "".join(tokens) == OFFLINE_FALLBACK_TEXT
    final = [d for e, d in events if e == "values"][-1]
    assert final["messages"][-1]["content"] == OFFLINE_FALLBACK_TEXT
    assert final["messages"][-1]["response_metadata"]["offline_fallback"] is True
    assert final["status"] == "accepted" and final["feedback"] is None
