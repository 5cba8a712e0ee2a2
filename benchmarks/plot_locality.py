"""Plot locality vs reliability (and generalization) of the runs in a results JSONL file.

    python benchmarks/plot_locality.py benchmarks/results/locality.jsonl benchmarks/locality.png
"""
from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(run: dict) -> str:
    o = run.get("overrides") or {}
    return ", ".join(f"{k}={v}" for k, v in o.items()) or "default YAML"


def main(src: str, dst: str) -> None:
    runs = [json.loads(line) for line in open(src) if line.strip()]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, run in enumerate(runs):
        p = run["post"]
        ax.scatter(p["locality"], p["reliability"], color="tab:blue")
        ax.scatter(p["locality"], p["generalization"], color="tab:orange", marker="x")
        ax.annotate(f"{label(run)} (n={run['n']})", (p["locality"], p["generalization"]),
                    fontsize=6, xytext=(2, -12 - 9 * (i % 4)), textcoords="offset points",
                    rotation=-20)
    ax.scatter([0.90], [0.49], color="tab:red", marker="s")
    ax.annotate("MEMIT (issue 10 table, 50 edits)", (0.90, 0.49), fontsize=6,
                xytext=(-120, 5), textcoords="offset points")
    ax.axvline(0.90, color="grey", lw=0.6, ls="--")
    ax.axhline(0.99, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("locality (EasyEdit neighbourhood score)")
    ax.set_ylabel("reliability (dots) / generalization (x)")
    ax.set_title("LocFT-BF on SmolLM2-135M, ZsRE: locality vs reliability", fontsize=10)
    ax.set_xlim(0.3, 1.0)
    ax.set_ylim(0.3, 1.02)
    fig.tight_layout()
    fig.savefig(dst, dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:3])
