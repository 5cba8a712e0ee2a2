"""Plot locality vs reliability (and generalization) of the runs in a results JSONL file.

    python benchmarks/plot_locality.py benchmarks/results/locality.jsonl benchmarks/locality.png \
        [benchmarks/results/edit_quality.jsonl]

MEMIT, for reference, is its ZsRE row in the runner's results (``benchmarks/run.py``; the
optional third argument, by default ``results/edit_quality.jsonl``) with the runs' N if there
is one, else its latest ZsRE row; without a MEMIT row the plot has no MEMIT point.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RUNNER_ROWS = Path(__file__).resolve().parent / "results" / "edit_quality.jsonl"


def label(run: dict) -> str:
    o = run.get("overrides") or {}
    return ", ".join(f"{k}={v}" for k, v in o.items()) or "default YAML"


def memit_row(path, n: int) -> dict | None:
    """MEMIT's ZsRE row in the runner's JSON lines: the latest with ``n`` edits, else the latest."""
    path = Path(path)
    if not path.is_file():
        return None
    rows = [r for r in map(json.loads, filter(str.strip, path.read_text().splitlines()))
            if r.get("method") == "memit" and r.get("dataset") == "zsre"]
    same_n = [r for r in rows if r["n"] == n]
    return (same_n or rows or [None])[-1]


def main(src: str, dst: str, reference: str = str(RUNNER_ROWS)) -> None:
    runs = [json.loads(line) for line in open(src) if line.strip()]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, run in enumerate(runs):
        p = run["post"]
        ax.scatter(p["locality"], p["reliability"], color="tab:blue")
        ax.scatter(p["locality"], p["generalization"], color="tab:orange", marker="x")
        ax.annotate(f"{label(run)} (n={run['n']})", (p["locality"], p["generalization"]),
                    fontsize=6, xytext=(2, -12 - 9 * (i % 4)), textcoords="offset points",
                    rotation=-20)
    memit = memit_row(reference, runs[0]["n"] if runs else 0)
    if memit is None:
        print(f"no MEMIT ZsRE row in {reference}: plotted without it", file=sys.stderr)
    else:
        point = (memit["locality"], memit["reliability"])
        ax.scatter(*point, color="tab:red", marker="s")
        ax.annotate(f"MEMIT ({Path(reference).name}, {memit['n']} edits)", point, fontsize=6,
                    xytext=(-120, 5), textcoords="offset points")
        ax.axvline(point[0], color="grey", lw=0.6, ls="--")
    ax.axhline(0.99, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("locality (EasyEdit neighbourhood score)")
    ax.set_ylabel("reliability (dots) / generalization (x)")
    ax.set_title("LocFT-BF on SmolLM2-135M, ZsRE: locality vs reliability", fontsize=10)
    ax.set_xlim(0.3, 1.0)
    ax.set_ylim(0.3, 1.02)
    fig.tight_layout()
    fig.savefig(dst, dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:4])
