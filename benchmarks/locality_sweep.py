"""Locality options (issue 18): reliability, generalization and locality of LocFT-BF settings on
the embedded model, one row per (setting, data split), and the reliability-locality frontier.

Each setting runs in its own process (so ``peak_rss_mb`` is that setting's), on N edits of a
dataset split: tune on a dev split (``--offset 1000``), then measure the chosen settings on
records they were not tuned on (``--offset 0``). Rows go to ``--out`` (JSON lines); a setting
whose row is there (same data, N, offset, overrides) is skipped, so the same command resumes.

    python benchmarks/locality_sweep.py --data zsre_2k.json --n 100 --offset 1000 \\
        --setting kl4 --setting "kl4+ns0.9=null_space_energy=0.9" --threads 1
    python benchmarks/locality_sweep.py --report          # markdown table (LOCALITY.md)
    python benchmarks/locality_sweep.py --plot benchmarks/plots/locality_frontier.png

A setting is ``NAME`` or ``NAME=KEY=VALUE,KEY=VALUE`` (hparams overrides on top of
``--hparams``, YAML values). Scores: reliability / generalization = teacher-forced token
accuracy on the prompts / rephrasings (EasyEdit's), locality = EasyEdit's neighbourhood score
(argmax agreement before vs after on the locality prompts); on CounterFact also the
neighbourhood score NS (the true object preferred to the new one on the neighbour prompts),
before and after.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from common import REPO, data_path, load, with_overrides  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "locality_sweep.jsonl"
logger = logging.getLogger("benchmarks.locality_sweep")


def parse_setting(text: str):
    """``(name, ["KEY=VALUE", ...])`` from ``NAME`` or ``NAME=KEY=VALUE,KEY=VALUE``."""
    name, _, rest = text.partition("=")
    return name, [kv for kv in rest.split(",") if kv] if rest else []


def row_key(row: dict) -> tuple:
    return (row["data"], row["n"], row["offset"], json.dumps(row["overrides"], sort_keys=True),
            row["hparams"])


def read_rows(out: Path) -> list:
    if not out.is_file():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def run_one(args, name: str, sets: list) -> dict:
    """Edit and score one setting in this process; the row."""
    import torch

    from locft_easyedit import LocFTHyperParams, apply_locft_to_model, load_dataset
    from locft_easyedit.evaluate import edit_and_score

    if args.threads:
        torch.set_num_threads(args.threads)
    hp, overrides = with_overrides(LocFTHyperParams.from_hparams(args.hparams), sets)
    data = Path(args.data) if Path(args.data).is_file() else data_path(args.data)
    model, tok, _ = load(hp.model_name, dtype=hp.dtype)
    requests = load_dataset(data, None, n=args.n, offset=args.offset)
    cf = "counterfact" in data.name.lower()  # NS: CounterFact's neighbour prompts
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scored = edit_and_score(model, tok, requests,
                            lambda m: apply_locft_to_model(m, tok, requests, hp),
                            generation=False, probabilities=cf, progress=not args.quiet)
    after, before = scored.after, scored.before
    row = {"setting": name, "data": data.name, "n": len(requests), "offset": args.offset,
           "hparams": args.hparams, "overrides": overrides,
           "reliability": after["reliability"], "generalization": after.get("generalization"),
           "locality": after.get("locality"), "seconds": scored.seconds,
           "seconds_per_edit": scored.seconds / len(requests),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_before_edit_mb": rss0 / 1024,
           "threads": torch.get_num_threads(),
           "machine": f"{platform.machine()} {os.cpu_count()} cores, cpu",
           "load_avg_1min": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M"),
           "command": "python benchmarks/locality_sweep.py " + " ".join(args.argv)}
    if cf:
        row["ns_before"] = before["probability"]["neighborhood_score"]
        row["ns_after"] = after["probability"]["neighborhood_score"]
        row["es_after"] = after["probability"].get("efficacy_score")
    return row


def report(rows: list) -> str:
    def f(x):
        return "-" if x is None or x != x else f"{x:.3f}"

    lines = ["| data | N | offset | setting | overrides | reliability | generalization | "
             "locality | NS before -> after | s / edit | peak RSS MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ns = (f"{f(r['ns_before'])} -> {f(r['ns_after'])}"
              if "counterfact" in r["data"] and "ns_after" in r else "-")
        sets = " ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "(YAML)"
        lines.append(f"| {r['data']} | {r['n']} | {r['offset']} | {r['setting']} | {sets} | "
                     f"{f(r['reliability'])} | {f(r['generalization'])} | {f(r['locality'])} | "
                     f"{ns} | {r['seconds_per_edit']:.2f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def family(setting: str) -> str:
    """The options a setting turns on, without their values: ``kl4+kp0.003`` -> ``kl+kp``."""
    import re

    return "+".join(re.sub(r"[\d.]+", "", t) for t in setting.split("+"))


def plot(rows: list, path: Path, baselines: Path) -> None:
    """Reliability against locality: one curve per option family and data split (points
    joined in order of locality), MEMIT and AlphaEdit (ZsRE, N = 100, the runner's rows) as
    crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    series = {}
    for r in rows:
        if r.get("locality") is None:
            continue
        split = "dev" if r["offset"] else "eval"
        key = (r["data"].split("_")[0], r["n"], split, family(r["setting"]))
        series.setdefault(key, []).append(r)
    for i, (key, rs) in enumerate(sorted(series.items())):
        rs = sorted(rs, key=lambda r: r["locality"])
        data, n, split, fam = key
        ax.plot([r["locality"] for r in rs], [r["reliability"] for r in rs],
                marker="o" if data == "zsre" else "s", ls="-" if split == "dev" else ":",
                color=f"C{i % 10}", label=f"{fam} ({data}, {n}, {split})")
        for r in rs:
            ax.annotate(r["setting"], (r["locality"], r["reliability"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    for r in read_rows(baselines):
        if r.get("method") in ("memit", "alphaedit") and r.get("dataset") == "zsre" \
                and r.get("n") == 100:
            ax.scatter(r["locality"], r["reliability"], marker="x", s=60, color="k")
            ax.annotate(f"{r['method']} (zsre, 100)", (r["locality"], r["reliability"]),
                        fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.axvline(0.90, ls=":", color="grey")
    ax.axhline(0.99, ls=":", color="grey")
    ax.set_xlabel("locality (EasyEdit neighbourhood score)")
    ax.set_ylabel("reliability (token accuracy)")
    ax.set_title("LocFT-BF locality options, embedded SmolLM2-135M")
    ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hparams", default="hparams/smollm2-135m.yaml")
    ap.add_argument("--data", default="zsre_2k.json",
                    help="a dataset file, or its name in the shared data folder")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--offset", type=int, default=1000,
                    help="first record (default 1000: the dev split; 0 = evaluation)")
    ap.add_argument("--setting", action="append", default=[],
                    help="NAME or NAME=KEY=VALUE,KEY=VALUE (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--report", action="store_true", help="print the markdown table")
    ap.add_argument("--plot", type=Path, default=None, help="write the frontier plot")
    ap.add_argument("--baselines", type=Path,
                    default=REPO / "benchmarks" / "results" / "edit_quality.jsonl")
    args = ap.parse_args(argv)
    args.argv = [a for a in argv if a != "--one"]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.report:
        print(report(read_rows(args.out)))
        return
    if args.plot:
        plot(read_rows(args.out), args.plot, args.baselines)
        return
    if args.one:
        name, sets = parse_setting(args.setting[0])
        row = run_one(args, name, sets)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: row[k] for k in ("setting", "reliability", "generalization",
                                              "locality", "seconds")}))
        return
    done = {row_key(r) for r in read_rows(args.out)}
    for text in args.setting:
        name, sets = parse_setting(text)
        from locft_easyedit import LocFTHyperParams

        _, overrides = with_overrides(LocFTHyperParams.from_hparams(args.hparams), sets)
        data = Path(args.data).name
        if (data, args.n, args.offset, json.dumps(overrides, sort_keys=True),
                args.hparams) in done:
            logger.info("%s: row exists, skipped", name)
            continue
        cmd = [sys.executable, __file__, "--one", "--setting", text, "--data", args.data,
               "--n", str(args.n), "--offset", str(args.offset), "--hparams", args.hparams,
               "--threads", str(args.threads), "--out", str(args.out)]
        cmd += ["--quiet"] if args.quiet else []
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
