"""Reuse WISE's trained side memory between tuning rows that differ only in ``act_ratio``.

WISE routes each query at inference: its side memory answers when the activation distance
between side and main memory passes ``act_ratio`` times the smallest mean in-scope distance
recorded while editing (``WISEAdapter.forward`` out of editing mode). Training never reads
``act_ratio``; so the rows of a grid that move only it would train the very same side memory
(100 edits: about 2.2 hours on one core here) and differ only in how it is consulted.

With ``run.py --reuse-memory`` a WISE row that trains saves WISE's own checkpoint
(``resume.ChunkState.save_wise``: side memories, masks, activation records, edit history)
into a folder named by a SHA-256 of everything the training depends on:

* every setting but :data:`INFERENCE_ONLY`, and but :data:`RUN_LOCAL` (the run's own resume
  checkpoint; the model folder's path, for which the weights stand);
* ``sequential_edit`` (set on the hparams object at run time, not a field);
* the model's weights before editing (``target_cache.model_fingerprint``) and its tokenizer
  (``target_cache.tokenizer_fingerprint``);
* every request as WISE gets it, with its ``loc_prompt``, in order;
* numpy's seed (WISE draws its weight masks with numpy).

A later row with the same key loads that checkpoint into a fresh adapter built with ITS
settings (so its ``act_ratio`` routes) instead of editing; it says ``memory_from_cache``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # benchmarks/target_cache.py, also when loaded from a file
    sys.path.insert(0, str(HERE))

from target_cache import kept, model_fingerprint, tokenizer_fingerprint  # noqa: E402

INFERENCE_ONLY = frozenset({"act_ratio"})  # read by WISEAdapter.forward out of editing only
RUN_LOCAL = frozenset({"load_path", "model_name"})
NUMPY_SEED = 0


def root() -> Path:
    """Where the trained side memories are kept: ``wise_memories`` (``target_cache.kept``),
    one sub-folder per key."""
    return kept("wise_memories")


def settings_for_training(hp) -> dict:
    """WISE's settings its training may read (all but ``INFERENCE_ONLY`` and ``RUN_LOCAL``)."""
    out = {k: v for k, v in sorted(dataclasses.asdict(hp).items())
           if k not in INFERENCE_ONLY | RUN_LOCAL}
    out["sequential_edit"] = getattr(hp, "sequential_edit", False)
    return out


def folder(root: Path, hp, model, tok, requests: list) -> Path:
    """Where the side memory trained by this row's settings on ``requests`` is kept."""
    key = hashlib.sha256(json.dumps({
        "method": "wise", "settings": settings_for_training(hp),
        "model": model_fingerprint(model), "tokenizer": tokenizer_fingerprint(tok),
        "requests": requests, "numpy_seed": NUMPY_SEED,
    }, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return Path(root) / key


def complete(state, n: int) -> bool:
    """Whether ``state`` (a ``resume.ChunkState``) holds WISE after all ``n`` edits."""
    path = state.folder / "state.json"
    return path.is_file() and json.loads(path.read_text()).get("chunks_done") == n
