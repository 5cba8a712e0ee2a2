"""What every benchmark script shares: where the data sets are, how a model is loaded, and the
tiny test configuration.

* data: ``$LOCFT_SHARED_DATA`` if set, else ``<repo>/../shared/data`` (:func:`data_dir`);
  :func:`data_path` names both when a file is missing;
* models: :func:`load` gives ``(model, tokenizer, model_dir)`` for ``tiny`` (the random Llama
  of the tests), ``embedded:smollm2-135m`` or a local model folder;
* :func:`corpus_parts`: the local text (CPython's pydoc_data) split into statistics and
  held-out parts; :func:`stats_corpus`: the text MEMIT / AlphaEdit / ROME's covariance
  statistics are taken from (``mom2_dataset`` in their YAML: ``STATS_CORPORA``);
* :func:`tiny_hparams`: the LocFT settings the benchmarks use on the tiny model;
* ``--set KEY=VALUE`` overrides of hparams fields: :func:`add_set_argument`,
  :func:`with_overrides`;
* :func:`read_jsonl`: the rows of a JSON-lines results file.

The scripts import it as ``common`` with this folder on ``sys.path`` (run as a script, Python
puts it there; loaded from a file, the script adds it).
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # use this checkout's package without installing it
    sys.path.insert(0, str(REPO))

DATA_ENV = "LOCFT_SHARED_DATA"
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
TINY = "tiny"
DATA_FILES = {"zsre": "zsre_2k.json", "counterfact": "counterfact_2k.json",
              "wikibigedit": "wikibigedit_2k.json"}  # in the shared data folder
CORPUS_SPLIT = 0.9  # pydoc_data.topics: first 90% for covariance stats, last 10% held out
TINY_NAME = "tiny-llama"  # the tiny model's _name_or_path (EasyEdit's stats path is built from it)
# two runs of the very same work differ by this much in seconds on this shared machine
# (AlphaEdit's dev rows computing the same target vectors: 47.8 vs 52.3 s/edit): speeds
# closer than this are not told apart (report.py's losses, tune_baselines' tie-break)
SPEED_NOISE = 0.10


def read_jsonl(path) -> list:
    """The rows of the JSON-lines file ``path`` (blank lines skipped; [] if there is none)."""
    path = Path(path)
    return ([json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if path.is_file() else [])


def data_dir() -> Path:
    """The folder of the shared data sets: ``$LOCFT_SHARED_DATA``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)


def data_path(name: str) -> Path:
    """``data_dir() / name``; a clear error (naming the variable and the default) if absent."""
    path = data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"data file {path} is missing: set {DATA_ENV} to the folder that holds {name} "
            f"(unset, it is {DEFAULT_DATA_DIR})")
    return path


def corpus_parts():
    """``(stats_text, heldout_text)``: pydoc_data.topics in sorted-key order, split by chars
    at ``CORPUS_SPLIT`` (statistics for MEMIT/AlphaEdit before it, held-out text after)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    cut = int(len(text) * CORPUS_SPLIT)
    return text[:cut], text[cut:]


def _stdlib_docstrings() -> list:
    """Every docstring (module, class, function) of the installed CPython standard library,
    files in sorted path order, tests, idlelib, lib2to3, turtledemo and site-packages left
    out: about 1.3M characters (300K tokens of the embedded model) on CPython 3.11."""
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "__pycache__"}
    docs = []
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        docs += [d for node in ast.walk(tree)
                 if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                      ast.AsyncFunctionDef))
                 and (d := ast.get_docstring(node))]
    return docs


# mom2_dataset -> what its text is; both hold only the statistics part of pydoc_data.topics
# (its held-out part is the capability perplexity text)
STATS_CORPORA = {
    "pydoc_topics": "pydoc_data.topics, sorted keys, first {split:.0%}",
    "stdlib_docs": "pydoc_data.topics, sorted keys, first {split:.0%}, then every docstring of "
                   "the standard library (sorted paths; no tests, idlelib, lib2to3, turtledemo)",
}


@functools.lru_cache(maxsize=None)
def stats_corpus(name: str) -> tuple:
    """``(text, description)`` of the covariance-statistics corpus ``name`` (``STATS_CORPORA``);
    a ``ValueError`` naming the choices for any other name."""
    import platform

    if name not in STATS_CORPORA:
        raise ValueError(f"mom2_dataset {name!r} is not a local corpus; choose one of "
                         f"{sorted(STATS_CORPORA)} (nothing is downloaded)")
    text = corpus_parts()[0]
    if name == "stdlib_docs":
        text = text + "\n\n" + "\n\n".join(_stdlib_docstrings())
    desc = STATS_CORPORA[name].format(split=CORPUS_SPLIT)
    return text, f"{desc} (CPython {platform.python_version()}, {len(text)} chars)"


def load(model_arg: str, device=None, dtype=None):
    """``(model, tok, model_dir)`` in eval mode. ``tiny`` is the in-memory random Llama of the
    tests (``model_dir`` ``tiny-llama``); anything else goes through
    :func:`locft_easyedit.load_model` (a local folder or ``embedded:smollm2-135m``, which
    ``model_dir`` gives as the resolved folder)."""
    if model_arg == TINY:
        from locft_easyedit.synthetic import build_tiny_model, build_tokenizer

        tok = build_tokenizer()
        model = build_tiny_model(len(tok))  # seeded: the same weights every time
        model.config._name_or_path = TINY_NAME
        if device is not None or dtype is not None:
            import torch

            dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
            model.to(device=device, dtype=dtype)
        return model, tok, TINY_NAME
    from locft_easyedit import load_model
    from locft_easyedit.models import resolve_model_name

    model, tok = load_model(model_arg, device=device, dtype=dtype)
    return model, tok, resolve_model_name(model_arg)


def tiny_hparams(**overrides):
    """:class:`LocFTHyperParams` for the tiny model (layer 2 of 4, lr 1e-2), with ``overrides``."""
    from locft_easyedit import LocFTHyperParams

    return LocFTHyperParams(**{"model_name": TINY, "layers": [2], "lr": 1e-2, **overrides})


def add_set_argument(ap) -> None:
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override hparams fields (YAML values), e.g. lr=1e-3 layers=[18]")


def parse_sets(sets) -> dict:
    """``{key: value}`` of ``--set KEY=VALUE`` arguments, values read as YAML."""
    import yaml

    bad = [s for s in sets if "=" not in s]
    if bad:
        raise SystemExit(f"--set takes KEY=VALUE, got {bad[0]!r}")
    return {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in sets)}


def with_overrides(hp, sets):
    """``(hp with the --set KEY=VALUE fields replaced, {key: value})``."""
    from locft_easyedit import LocFTHyperParams

    overrides = parse_sets(sets)
    return LocFTHyperParams.from_dict({**hp.to_dict(), **overrides}, source="--set"), overrides
