"""Reuse MEMIT's and AlphaEdit's target vectors between tuning rows that compute the same ones.

Most of a MEMIT / AlphaEdit call is spent finding each request's target vector ``z``
(``v_num_grad_steps`` steps of gradient descent through the model, ~40 s a request on one
core here); the rest (keys, covariance, the solve) takes seconds. ``z`` depends on the model
as the call finds it, the request, the context templates and the ``v_*`` settings, and NOT on
the covariance knobs (``mom2_*``), AlphaEdit's null-space threshold or ``L2``. So the tuning
rows that move only those knobs would compute the very vectors the YAML row computed.

EasyEdit already reads and writes such vectors (its ``cache_template``, from the MEMIT
paper's code: one ``.npz`` per request, named by layer, ``clamp_norm_factor`` and
``case_id``). Here the folder they go in is named by a SHA-256 of everything else ``z``
depends on, so a vector is only ever reused where it would be recomputed bit for bit:

* the ``compute_z`` that computes it (MEMIT's, also for AlphaEdit: :data:`Z_AS`);
* every setting except :data:`Z_FREE` (those ``compute_z`` never reads);
* the model's weights as the call finds them (a SHA-256 of every parameter's bytes: a later
  chunk, after earlier edits, gets a folder of its own);
* the context templates (generated before the key, as the call would), the tokenizer
  (:func:`tokenizer_fingerprint`) and its padding side;

and ``case_id`` is a SHA-256 of the whole request. The tuning grid and the planned MEMIT /
AlphaEdit rows turn it on (``run.py --reuse-targets``; ``planned.py``: the ZsRE N = 100 row and
the first call of N = 1,000 share their vectors); rows record how many vectors came from the
cache (``targets_from_cache``), and their ``seconds_per_edit`` leaves those vectors'
computation out (``tune_baselines`` breaks ties on the speed of the row that computed them;
``report.py`` marks it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

# settings compute_z never reads: the covariance, the projection, the update's regulariser
Z_FREE = frozenset({"mom2_dataset", "mom2_n_samples", "mom2_dtype", "mom2_update_weight",
                    "mom2_adjustment", "stats_dir", "nullspace_threshold", "L2", "P_loc"})
METHODS = ("memit", "alphaedit")  # the apply functions that take a cache_template
# AlphaEdit's compute_z is MEMIT's: EasyEdit's copy of it differs in names and in two
# equivalent expressions, and for the same settings, model, templates and request the two
# compute the same vector bit for bit (measured 2026-12-03: all 100 dev vectors of MEMIT
# v_lr 0.1 and of AlphaEdit clamp_norm_factor 4 / v_weight_decay 1e-3, whose z settings are
# the same; tests/test_target_cache.py checks it on the tiny model). So both name their
# vectors' folder as MEMIT does (its method and alg_name), and each reads the other's.
Z_AS = {"memit": ("memit", "MEMIT"), "alphaedit": ("memit", "MEMIT")}


# env: the folder a benchmark session keeps what a later one goes on from (session.sh:
# benchmarks/results/states, which git tracks): paused rows' states (run.state_root), and
# the vectors and side memories later rows read
STATE_ENV = "LOCFT_STATE_DIR"


def kept(name: str) -> Path:
    """``$LOCFT_STATE_DIR/<name>`` when that is set (a session on a new machine finds there
    what was committed: found 2026-12-04, neither the work tree's ignored files nor
    ``~/.cache`` were kept), else ``<name>`` under the project's cache folder
    (``locft_easyedit.models.cache_dir``)."""
    import os

    from locft_easyedit.models import cache_dir

    return Path(os.environ[STATE_ENV]) / name if os.environ.get(STATE_ENV) else cache_dir() / name


def root() -> Path:
    """Where the vectors are kept: ``easyedit_targets`` (:func:`kept`; ~2 KB a vector), one
    sub-folder per key."""
    return kept("easyedit_targets")


def holds_any(folder: Path) -> bool:
    """Whether ``folder`` (:func:`root`, ``wise_cache.root``) holds anything: on a new machine
    it does not, and a row that would read an earlier row's vectors computes them again."""
    return Path(folder).is_dir() and any(Path(folder).iterdir())


def model_fingerprint(model) -> str:
    """SHA-256 over every parameter's name, dtype, shape and bytes."""
    import torch

    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def tokenizer_fingerprint(tok) -> str:
    """SHA-256 of what the tokenizer does: its class, special tokens and, for a fast one, its
    whole definition (vocabulary, merges, normalizer, pre-tokenizer), else its vocabulary. The
    same weights with another tokenizer give other vectors (found 2026-12-04: a wrongly
    converted tokenizer of the embedded model, ``locft_easyedit.models.tokenizer_problem``)."""
    backend = getattr(tok, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else sorted(tok.get_vocab().items())
    return hashlib.sha256(json.dumps([type(tok).__name__, tok.all_special_tokens, body],
                                     default=str).encode()).hexdigest()


def settings_for_z(hp) -> dict:
    """The method's settings that ``compute_z`` may read (all but :data:`Z_FREE`)."""
    return {k: v for k, v in sorted(dataclasses.asdict(hp).items()) if k not in Z_FREE}


def case_id(request: dict) -> str:
    """A name for the request made of all of it."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str)
                          .encode()).hexdigest()[:20]


def prepare(root: Path, method: str, module, model, tok, hp, requests: list) -> tuple:
    """Before one call of ``method`` on ``requests``: set each request's ``case_id``, and
    return ``(cache_template for the call, how many of its vectors are already cached)``.
    ``module`` is the method's EasyEdit module (its context templates are generated here,
    into its own cache, when the call would generate them)."""
    if method not in METHODS:
        raise ValueError(f"{method} takes no cache of target vectors (only {METHODS})")
    templates = module.get_context_templates(model, tok)
    as_method, as_alg = Z_AS[method]
    key = hashlib.sha256(json.dumps({
        "method": as_method, "settings": {**settings_for_z(hp), "alg_name": as_alg},
        "model": model_fingerprint(model), "templates": templates,
        "tokenizer": tokenizer_fingerprint(tok), "padding_side": tok.padding_side,
    }, sort_keys=True, default=str).encode()).hexdigest()[:24]
    folder = Path(root) / key
    template = str(folder / "z_layer{}_clamp{}_{}.npz")
    hits = 0
    for r in requests:
        r["case_id"] = case_id({k: v for k, v in r.items() if k != "case_id"})
        hits += Path(template.format(hp.layers[-1], hp.clamp_norm_factor, r["case_id"])).is_file()
    return template, hits
