"""Test set-up: offline before anything imports litellm / open_clip / huggingface_hub."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MMROUTE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the repo; tests that need them skip (with the reason) where absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (they ship beside the repo in CI only)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture
def scripted():
    """The offline `scripted/<name>` LiteLLM provider, answering "a fine answer" unless told otherwise."""
    from mmroute.llm import ScriptedLLM, reply

    s = ScriptedLLM(default=reply("a fine answer")).install()
    yield s
    s.reset()


@pytest.fixture
def registered_policy():
    """A policy class registered (under "test-first-listed") for the test, unregistered after:
    it prefers the first listed candidate, to show a new policy class needs no router change."""
    from dataclasses import dataclass

    import numpy as np

    from mmroute.policy import POLICIES, Scored, register_policy

    @register_policy
    @dataclass
    class FirstListed:
        name: str = "test-first-listed"

        @property
        def knob(self) -> float:
            return 0.0

        def utilities(self, s: Scored) -> np.ndarray:
            return -np.arange(len(s.models), dtype=float)

        def to_json(self) -> dict[str, str]:
            return {"name": self.name}

        @classmethod
        def from_json(cls, d: dict[str, str]) -> "FirstListed":
            return cls()

    yield FirstListed
    POLICIES.pop("test-first-listed", None)
