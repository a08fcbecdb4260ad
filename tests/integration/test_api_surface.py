"""The public surface: a small lazy top-level API, trimmed subpackage exports, no import side effects."""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mmroute

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "open_clip", "litellm", "langgraph", "langchain_core", "sentence_transformers")


def _run(code: str, env: dict[str, str], cwd: Path = REPO) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _clean_env() -> dict[str, str]:
    """No mmroute/LiteLLM settings at all; LiteLLM's remote price map URL points at a closed local
    port, so the fetch it tries at import fails at once instead of going out to the network."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", LITELLM_MODEL_COST_MAP_URL="http://127.0.0.1:9/prices.json")
    return env


def test_top_level_names_resolve_to_their_owners():
    assert mmroute.__all__ == sorted(mmroute.__all__) and set(mmroute.__all__) == set(mmroute._EXPORTS)
    assert 12 <= len(mmroute.__all__) <= 16  # small on purpose: the README's main job and little more
    for name in mmroute.__all__:
        owner = importlib.import_module(mmroute._EXPORTS[name])
        assert getattr(mmroute, name) is getattr(owner, name), name
        assert name in dir(mmroute)
    ns: dict[str, object] = {}
    exec("from mmroute import *", ns)
    assert {n for n in ns if not n.startswith("__")} == set(mmroute.__all__)


def test_unknown_top_level_name_is_an_attribute_error_naming_the_module():
    with pytest.raises(AttributeError, match=r"module 'mmroute' has no attribute 'NoSuchThing'"):
        mmroute.NoSuchThing  # noqa: B018
    with pytest.raises(ImportError, match="NoSuchThing"):
        exec("from mmroute import NoSuchThing", {})
    assert not hasattr(mmroute, "ScriptedLLM")  # test doubles are not part of the main API


def test_import_mmroute_is_light_and_touches_nothing():
    out = _run(
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "import mmroute, mmroute.offline\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'env_same': dict(os.environ) == before, 'n': len(mmroute.__all__)}))\n",
        _clean_env())
    assert out == {"heavy": [], "env_same": True, "n": len(mmroute.__all__)}


def test_importing_the_llm_layer_sets_no_env_and_registers_no_provider():
    out = _run(
        "import json, os, sys, warnings\n"
        "before = dict(os.environ)\n"
        "import mmroute.llm, mmroute.testing, mmroute.offline, mmroute.graph, mmroute.verify\n"
        "import litellm\n"
        "providers = [e.get('provider') for e in litellm.custom_provider_map]\n"
        "env_same = dict(os.environ) == before\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    late = mmroute.offline.use_local_cost_map()\n"
        "env_after_late = 'LITELLM_LOCAL_MODEL_COST_MAP' in os.environ\n"
        "mmroute.testing.ScriptedLLM().install()\n"
        "after = sorted(e.get('provider') for e in litellm.custom_provider_map)\n"
        "print(json.dumps({'env_same': env_same, 'providers': providers, 'late': late,\n"
        "                  'warned': any('after litellm was imported' in str(x.message) for x in w),\n"
        "                  'env_after_late': env_after_late, 'after_install': after}))\n",
        _clean_env())
    assert out == {"env_same": True, "providers": [], "late": False, "warned": True, "env_after_late": False,
                   "after_install": ["replay", "scripted"]}


def test_use_local_cost_map_before_litellm_sets_it_and_respects_a_caller_choice():
    code = ("import json, os, sys\nfrom mmroute.offline import use_local_cost_map\n"
            "ok = use_local_cost_map()\n"
            "print(json.dumps({'ok': ok, 'value': os.environ.get('LITELLM_LOCAL_MODEL_COST_MAP'),"
            " 'litellm': 'litellm' in sys.modules}))\n")
    assert _run(code, _clean_env()) == {"ok": True, "value": "True", "litellm": False}
    assert _run(code, {**_clean_env(), "LITELLM_LOCAL_MODEL_COST_MAP": "False"}) == \
        {"ok": False, "value": "False", "litellm": False}


@pytest.mark.parametrize(("package", "internal"), [
    ("mmroute.graph", ["judgment_id", "decision_to_state", "latest_query", "resolve_goto", "best_answer",
                       "feedback_request", "parse_feedback", "to_tool_calls", "create_plan_node", "QueryState"]),
    ("mmroute.llm", ["fail", "sleep", "reply", "ScriptedLLM", "Step", "tool_call", "classify_error", "retry_after_s",
                     "register_offline_providers", "ReplayLLM", "estimate_tokens"]),
    ("mmroute.verify", ["extract_number", "majority", "answers_equal", "judge_messages", "parse_judgment",
                        "load_mot_cascade", "MotItem", "JUDGE_SYSTEM"]),
    ("mmroute.features", ["STATS", "l2_normalize", "cache_key", "text_hash", "query_stats", "parse_part"]),
    ("mmroute.data", ["ERROR_KINDS", "iter_records", "models_in"]),
    ("mmroute.eval", ["JudgmentArrays", "outcome_judgments", "outcomes_from_anchor", "sweep", "threshold_sweep"]),
])
def test_subpackages_export_what_users_need_and_keep_helpers_in_their_modules(package, internal):
    mod = importlib.import_module(package)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{package}.__all__ names missing {name!r}"
    for name in internal:
        assert name not in mod.__all__ and name not in vars(mod), f"{package} still exports {name!r}"


def test_test_doubles_and_offline_providers_have_one_public_home():
    import mmroute.llm.providers as providers
    import mmroute.llm.recorded as recorded
    import mmroute.llm.scripted as scripted
    import mmroute.offline as offline
    import mmroute.testing as testing

    for name in ("ScriptedLLM", "ScriptedCall", "Step", "reply", "fail", "sleep", "length", "malformed", "refuse",
                 "tool_call"):
        assert name in testing.__all__ and getattr(testing, name) is getattr(scripted, name)
    assert offline.register_offline_providers is providers.register_offline_providers
    assert offline.ReplayLLM is providers.ReplayLLM and offline.ReplayAnswers is recorded.ReplayAnswers
    for name in offline.__all__:
        assert hasattr(offline, name), name
    with pytest.raises(AttributeError, match="module 'mmroute.offline' has no attribute 'nope'"):
        offline.nope  # noqa: B018


def test_library_modules_do_not_write_the_environment():
    """Only mmroute.offline sets a variable (when asked to); the rest of the package only reads, except
    where a command must hand a setting to a library that reads nothing else (marked as such)."""
    writes = re.compile(r"os\.environ\.(setdefault|update|pop|clear)\(|os\.environ\[[^\]]+\]\s*=[^=]|os\.putenv\(|"
                        r"del\s+os\.environ")
    offenders = [f"{path.relative_to(REPO)}:{i}: {line.strip()}"
                 for path in sorted((REPO / "mmroute").rglob("*.py")) if path.name != "offline.py"
                 for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if writes.search(line) and "# explicit environment write" not in line]
    assert offenders == []
    assert writes.search('os.environ.setdefault("X", "1")') and writes.search('os.environ["X"] = "1"')
    assert not writes.search('os.environ["X"] == "1"') and not writes.search('os.environ.get("X")')


def test_example_data_is_package_data():
    ex = mmroute.example_dir()
    assert ex == Path(mmroute.__file__).parent / "example_data"
    for name in ("judgments.jsonl", "outcomes.jsonl", "answers.jsonl", "pool.yaml", "README.md"):
        assert (ex / name).is_file(), name
    assert len(list((ex / "images").glob("*.png"))) > 0
    res = mmroute.read_judgments(ex / "judgments.jsonl")
    assert res.items and not res.errors
    assert not (REPO / "graphs" / "__init__.py").exists()  # graphs/ holds the served file, it is not a package


def test_public_signatures_name_their_types_not_any():
    import inspect

    from mmroute.graph import RoutingMiddleware, nodes, served
    from mmroute.training import train_router
    from mmroute.verify import Verifier, llm_generate

    cases = [
        (mmroute.create_cascade_graph, ["router", "verifier", "feedback_store", "checkpointer"]),
        (mmroute.create_router_node, ["router"]), (nodes.create_parse_node, ["router"]),
        (nodes.create_plan_node, ["router"]), (nodes.create_verify_node, ["verifier", "router"]),
        (nodes.create_finalize_node, ["router", "store"]), (nodes.create_feedback_node, ["router", "store"]),
        (RoutingMiddleware.__init__, ["router", "pool", "verifier"]),
        (served.make_graph, ["router", "verifier", "feedback_store", "checkpointer"]),
        (train_router, ["policy"]), (llm_generate, ["pool"]), (Verifier.verify, ["query", "answer"]),
    ]
    for func, params in cases:
        sig = inspect.signature(func)
        for p in params:
            ann = sig.parameters[p].annotation
            assert ann is not inspect.Parameter.empty and str(ann) not in ("Any", "typing.Any"), (func.__qualname__, p)
    from typing import Any
    for field in ("router", "verifier"):
        assert mmroute.RoutedChatModel.model_fields[field].annotation is not Any, field


def test_use_local_cost_map_after_litellm_changes_nothing(monkeypatch):
    import types
    import warnings

    from mmroute.offline import LOCAL_COST_MAP_VAR, use_local_cost_map

    if "litellm" not in sys.modules:  # it only asks whether litellm was imported
        monkeypatch.setitem(sys.modules, "litellm", types.ModuleType("litellm"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a caller's own setting is no cause for a warning
        monkeypatch.setenv(LOCAL_COST_MAP_VAR, "True")
        assert use_local_cost_map() is True
        monkeypatch.setenv(LOCAL_COST_MAP_VAR, "False")
        assert use_local_cost_map() is False and os.environ[LOCAL_COST_MAP_VAR] == "False"
    monkeypatch.delenv(LOCAL_COST_MAP_VAR)
    with pytest.warns(RuntimeWarning, match="after litellm was imported"):
        assert use_local_cost_map() is False
    assert LOCAL_COST_MAP_VAR not in os.environ  # too late to matter, so not set


def test_example_dir_from_a_zipped_install_is_a_real_folder_with_the_same_files(tmp_path):
    import zipfile

    src = REPO / "mmroute"
    archive = tmp_path / "mmroute.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, "mmroute/" + path.relative_to(src).as_posix())
    out = _run("import json, mmroute\nfrom mmroute import example_dir\nd = example_dir()\n"
               "files = sorted(p.relative_to(d).as_posix() for p in d.rglob('*') if p.is_file())\n"
               "print(json.dumps({'module': mmroute.__file__, 'dir': str(d), 'same': example_dir() == d, 'files': files,"
               " 'pool': (d / 'pool.yaml').read_text()}))\n",
               {**_clean_env(), "PYTHONPATH": str(archive)}, cwd=tmp_path)
    assert out["module"].startswith(str(archive))  # imported from the zip, not the checkout
    ex = REPO / "mmroute" / "example_data"
    assert not out["dir"].startswith(str(archive)) and out["same"]
    assert out["files"] == sorted(p.relative_to(ex).as_posix() for p in ex.rglob("*") if p.is_file())
    assert out["pool"] == (ex / "pool.yaml").read_text()


# -- types and docs of the fifteen names ------------------------------------------------------------
_ALLOWED_ANY = re.compile(r"\b(?:dict|Mapping|typing\.Mapping|collections\.abc\.Mapping)\[str,\s*(?:typing\.)?Any\]")


def _bare_any(annotation: object) -> bool:
    """An annotation mentions ``Any`` other than as a JSON dict's values (``dict[str, Any]``)."""
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return re.search(r"\bAny\b", _ALLOWED_ANY.sub("", text)) is not None


def _public_callables(obj: object):
    """``(qualified name, function, is_property)`` for a top-level name and the public methods its
    class defines in mmroute (inherited LangChain/pydantic machinery is theirs, not ours)."""
    import inspect

    if not inspect.isclass(obj):
        yield obj.__name__, obj, False
        return
    for name, member in vars(obj).items():
        if name.startswith("_") and name != "__init__":
            continue
        is_prop = isinstance(member, (property, functools.cached_property))
        fn = member.fget if isinstance(member, property) else member.func if is_prop else \
            member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        if callable(fn) and getattr(fn, "__module__", "").startswith("mmroute"):
            yield f"{obj.__name__}.{name}", fn, is_prop


def _signature_problems(qualname: str, fn: object) -> list[str]:
    import inspect

    sig = inspect.signature(fn)  # type: ignore[arg-type]
    out = [f"{qualname}({p.name}: {p.annotation})" for p in sig.parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD and p.annotation is not inspect.Parameter.empty
           and _bare_any(p.annotation)]
    if sig.return_annotation is not inspect.Signature.empty and _bare_any(sig.return_annotation):
        out.append(f"{qualname} -> {sig.return_annotation}")
    return out


def test_the_any_check_catches_a_bare_any():
    from typing import Any

    def bad(x: Any, y: list[Any], z: dict[str, Any], **kw: Any) -> Any | None:
        return None

    assert _signature_problems("bad", bad) == ["bad(x: Any)", "bad(y: list[Any])", "bad -> Any | None"]


def test_top_level_api_has_precise_types_and_google_docstrings():
    import inspect

    any_problems, doc_problems = [], []
    for top in mmroute.__all__:
        obj = getattr(mmroute, top)
        if inspect.isclass(obj):
            doc = (inspect.getdoc(obj) or "") + (inspect.getdoc(vars(obj).get("__init__")) or "")
            if "Args:" not in doc and "Attributes:" not in doc:
                doc_problems.append(f"{top}: neither the class nor its __init__ documents Args:/Attributes:")
        for qualname, fn, is_prop in _public_callables(obj):
            any_problems += _signature_problems(qualname, fn)
            doc = inspect.getdoc(fn) or ""
            if is_prop or qualname.endswith(".__init__"):  # a summary line; __init__ is the class's
                if is_prop and not doc:
                    doc_problems.append(f"{qualname}: no docstring")
                continue
            sig = inspect.signature(fn)
            if [p for p in sig.parameters if p not in ("self", "cls")] and "Args:" not in doc:
                doc_problems.append(f"{qualname}: no Args:")
            if sig.return_annotation not in ("None", None, inspect.Signature.empty) and "Returns:" not in doc:
                doc_problems.append(f"{qualname}: no Returns:")
    assert not any_problems, any_problems
    assert not doc_problems, doc_problems


def test_py_typed_ships_in_the_wheel_config():
    import tomllib

    cfg = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in cfg["tool"]["setuptools"]["package-data"]["mmroute"]
    assert (REPO / "mmroute" / "py.typed").is_file()
