"""Shared fixtures: a tiny random Llama model for unit tests, the embedded model for e2e."""
from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from locft_easyedit.synthetic import build_tiny_model, build_tokenizer, synthetic_facts

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LOCFT_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``easyedit`` run against the real EasyEdit: skipped, saying so, where it is
    not importable (CI has none). Run all of them, and only them, under the EasyEdit venv:
    ``$EASYEDIT_PY -m pytest -m easyedit`` (benchmarks/EASYEDIT.md)."""
    from locft_easyedit.easyedit import easyedit_available

    if easyedit_available():
        return
    skip = pytest.mark.skip(reason="EasyEdit (easyeditor) is not importable here (CI has none): "
                                   "run `$EASYEDIT_PY -m pytest -m easyedit` with the EasyEdit "
                                   "virtual environment (benchmarks/EASYEDIT.md)")
    for item in items:
        if item.get_closest_marker("easyedit"):
            item.add_marker(skip)


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is missing: these tests read the shared data sets from "
                    "../shared/data (or set LOCFT_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def tiny_tok():
    return build_tokenizer()


@pytest.fixture(scope="session")
def _tiny_base(tiny_tok):
    return build_tiny_model(len(tiny_tok))


@pytest.fixture
def tiny_model(_tiny_base):
    """A fresh copy of the tiny random model for each test."""
    return copy.deepcopy(_tiny_base)


@pytest.fixture(scope="session")
def facts():
    return synthetic_facts(32, seed=0)


@pytest.fixture
def tiny_hp():
    from locft_easyedit import LocFTHyperParams

    return LocFTHyperParams(model_name="tiny", layers=[2], lr=1e-2, num_epochs=60,
                            mini_batch_size=8, device="cpu")


@pytest.fixture(scope="session")
def embedded():
    """``(model, tokenizer)`` of the embedded SmolLM2-135M (converted and cached on first use)."""
    from locft_easyedit import load_default_model

    return load_default_model()


@pytest.fixture(scope="session")
def zsre_path():
    return shared_file("zsre_2k.json")


def state_snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@contextmanager
def nan_at_forward(model, call: int = 3):
    """The ``call``-th forward of the last decoder layer's MLP outputs NaN (a diverging run)."""
    calls = {"n": 0}

    def poison(module, args, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == call else output

    handle = model.model.layers[-1].mlp.register_forward_hook(poison)
    try:
        yield
    finally:
        handle.remove()
