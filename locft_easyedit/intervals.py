"""Percentile bootstrap intervals over edits.

A benchmark row's scores are means over the edits of one run; the interval says how much
they would move with another draw of edits from the same data. Every score is resampled
with the SAME draws of edits (a row's intervals describe one resampled population), and an
edit counts with all of its prompts: :func:`locft_easyedit.evaluate.per_request` gives each
edit's ``[sum, count]`` (a CounterFact edit has about ten neighbourhood prompts, a ZsRE edit
one), and a resample's score is the pooled mean ``sum(sums) / sum(counts)``, as the row's.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


def bootstrap_ci(per_edit: Mapping[str, Sequence[Sequence[float]]], resamples: int = RESAMPLES,
                 level: float = LEVEL, seed: int = 0) -> Dict[str, List[float]]:
    """``{score: [low, high]}``: the ``level`` percentile interval of each score's pooled mean
    over ``resamples`` resamples of the edits (with replacement, ``seed`` fixed, so a row's
    intervals are reproducible). A score no edit has (every count 0) gets ``[nan, nan]``."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    lengths = {len(v) for v in per_edit.values()}
    if len(lengths) > 1:
        raise ValueError(f"every score needs one [sum, count] per edit; lengths {lengths}")
    n = lengths.pop() if lengths else 0
    if n == 0:
        return {k: [float("nan"), float("nan")] for k in per_edit}
    names = list(per_edit)
    sums = np.array([[float(e[0]) for e in per_edit[k]] for k in names])     # (scores, n)
    counts = np.array([[float(e[1]) for e in per_edit[k]] for k in names])
    rng = np.random.default_rng(seed)
    means = np.empty((len(names), resamples))
    block = max(1, 2_000_000 // n)  # bounded memory for 100K-edit rows
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        draw = rng.integers(0, n, size=(stop - start, n))
        # per score: the resample's pooled sum over its pooled count (NaN if it has none)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[:, start:stop] = sums[:, draw].sum(-1) / counts[:, draw].sum(-1)
    tail = (1 - level) / 2 * 100
    out = {}
    for k, m in zip(names, means):
        m = m[~np.isnan(m)]
        out[k] = ([float(np.percentile(m, tail)), float(np.percentile(m, 100 - tail))]
                  if m.size else [float("nan"), float("nan")])
    return out
