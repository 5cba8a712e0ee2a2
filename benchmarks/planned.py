"""The side-by-side the comparison asks for, and which of its rows are still to run.

A planned row counts as done when ``results/edit_quality.jsonl`` holds a row of that method,
dataset and N (on the embedded model) that ran lm-eval's capability pass, with the settings
its YAML holds NOW (the row's ``settings_sha256`` = ``run.settings_digest`` of today's file:
a baseline re-tuned after its row ran needs the row again), and, where seeds are planned, one
such row per seed. ``report.py --md`` lists the rest under "Rows still to run", each with the
command that makes it; ``python benchmarks/planned.py`` prints the same list.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

MODEL = "embedded:smollm2-135m"
# LocFT-BF with the strongest locality option of benchmarks/LOCALITY.md (issue 18's frontier:
# key penalty 0.003 instead of the shipped null-space projection), as its own method name
LOCALITY_LABEL = "locft-bf+kp0.003"
LABELS = {LOCALITY_LABEL: ("locft-bf", ["key_penalty_weight=0.003", "null_space_energy=0"])}
PLANNED = (
    [("zsre", 1000, m) for m in ("locft-bf", LOCALITY_LABEL, "locft-df", "ft-m", "memit",
                                 "alphaedit", "ultraedit", "wise")]
    + [("counterfact", 1000, m) for m in ("locft-bf", LOCALITY_LABEL, "locft-df", "ft-m",
                                          "ultraedit", "wise")]
    + [("wikibigedit", 1000, m) for m in ("locft-bf", "ft-m", "ultraedit")]
    + [(d, 100, m) for d in ("zsre", "counterfact", "wikibigedit")
       for m in ("rome", "memit", "alphaedit")]
    # LocFT-BF beside them at N = 100 on the other two datasets (ZsRE's: its seeds below), so
    # that "where LocFT-BF loses" compares them there too; minutes each
    + [(d, 100, "locft-bf") for d in ("counterfact", "wikibigedit")])
SEEDS = {("zsre", 100, "locft-bf"): (0, 1, 2)}  # LocFT-BF's spread over seeds
EASYEDIT_PYTHON = "$EASYEDIT_PY"  # the EasyEdit venv's python (benchmarks/EASYEDIT.md)
REUSE_TARGETS = ("memit", "alphaedit")  # run.py --reuse-targets (target_cache.py)
MAX_MINUTES = 100  # long EasyEdit rows pause and resume (run.py --max-minutes)
# minutes a row spends after its editing (scoring, generation, lm-eval's capability pass, one
# thread): ~35 at N = 1,000 (the rows of 2026-12-03), a few at N = 100
AFTER_MINUTES = {100: 5, 1000: 35}


def _current_digest(method: str, row: dict) -> str:
    import run

    base = row.get("base_method", method)
    overrides = dict(row.get("overrides") or {})
    if row.get("seed") is not None:  # run.py adds the seed to a row's overrides, not its digest
        overrides.pop("seed", None)
    hparams = run.REPO / row["hparams"] if base.startswith("locft") else None
    if hparams is not None and not hparams.is_file():
        return ""
    return run.settings_digest(base, str(hparams or ""), overrides)


def is_stale(row: dict) -> bool:
    """Whether ``row`` ran with settings its YAML no longer holds (a seed-combined row of
    ``report.load_rows`` is judged by its last seed's row)."""
    return (row.get("settings_sha256") is not None
            and row["settings_sha256"] != _current_digest(row["method"], row))


def command(dataset: str, n: int, method: str, seeds=()) -> str:
    base, sets = LABELS.get(method, (method, []))
    easyedit = not base.startswith("locft")
    parts = [EASYEDIT_PYTHON if easyedit else "python", "benchmarks/run.py", "--methods", base,
             "--datasets", dataset, "--n", str(n), "--threads", "1"]
    parts += ["--seeds", *map(str, seeds)] if seeds else []
    parts += ["--python", EASYEDIT_PYTHON] if easyedit else []
    parts += ["--max-minutes", str(MAX_MINUTES)] if base in ("rome", "memit", "alphaedit",
                                                             "ft-m", "wise") else []
    parts += ["--label", method, "--set", *sets] if sets else []
    # the ZsRE N = 100 row and the first call (100 edits) of the N = 1,000 row edit the same
    # records on the unedited model: whichever runs second reads the other's target vectors
    parts += ["--reuse-targets"] if base in REUSE_TARGETS else []
    return " ".join(parts)


def still_to_run(rows) -> list:
    """``[(dataset, n, method, why, command)]`` for every planned row not done (all rows of
    the JSON lines, not only the latest of each)."""
    have = {}
    for r in rows:
        if r.get("model") == MODEL:
            have.setdefault((r["dataset"], r["n"], r["method"]), []).append(r)
    out = []
    for dataset, n, method in PLANNED + [k for k in SEEDS if k not in PLANNED]:
        found = have.get((dataset, n, method), [])
        with_cap = [r for r in found if "capability_protocol" in r]
        current = [r for r in with_cap if not is_stale(r)]
        want = SEEDS.get((dataset, n, method), ())
        if not found:
            why, missing = "no row yet", want
        elif not with_cap:
            why, missing = "its row predates the lm-eval capability pass", want
        elif not current:
            why, missing = "its row ran with settings its YAML no longer holds", want
        else:
            missing = [s for s in want if s not in {r.get("seed") for r in current}]
            if not missing:
                continue
            why = "seeds " + " ".join(map(str, missing)) + " still to run"
        out.append((dataset, n, method, why, command(dataset, n, method, missing)))
    return out


def hours_needed(dataset: str, n: int, method: str, rows, dev_rows=()):
    """Estimated hours of one core for the row: seconds per edit of the method's latest row
    on ``dataset``, else on any dataset, else the slowest of its dev rows that paid for their
    work (``tune_baselines``' rows, 100 ZsRE edits), times ``n * seeds``, plus
    ``AFTER_MINUTES`` per run; None with nothing to go by."""
    mine = [r for r in rows if r.get("model") == MODEL and r.get("method") == method
            and r.get("seconds_per_edit") and not r.get("targets_from_cache")]
    here = [r for r in mine if r["dataset"] == dataset]
    base = LABELS.get(method, (method, []))[0]
    paid = [r["seconds_per_edit"] for r in dev_rows
            if (r.get("base_method") or r["method"].split("@", 1)[0]) == base
            and r.get("seconds_per_edit") and not r.get("targets_from_cache")
            and not r.get("memory_from_cache")]
    spe = ((here or mine)[-1]["seconds_per_edit"] if mine else max(paid) if paid else None)
    if spe is None:
        return None
    runs = len(SEEDS.get((dataset, n, method), ())) or 1
    return runs * (spe * n / 3600 + AFTER_MINUTES.get(n, 35) / 60)


def markdown(rows, dev_rows=()) -> str:
    todo = still_to_run(rows)
    if not todo:
        return "- none: every planned row exists with the current settings"
    hours = [hours_needed(d, n, m, rows, dev_rows) for d, n, m, _, _ in todo]
    known = [h for h in hours if h is not None]
    return "\n".join([f"{len(todo)} of the {len(PLANNED) + len(SEEDS)} planned rows "
                      f"(`{EASYEDIT_PYTHON}`: the EasyEdit venv's python, benchmarks/EASYEDIT.md; "
                      "a row already there is skipped, a paused one goes on; hours: one "
                      "core's, estimated from the method's earlier rows, `hours_needed`):", ""]
                     + [f"- {d} N={n} {m}: {why}; "
                        + (f"~{h:.1f} h" if h is not None else "no row to estimate its time")
                        + f". `{cmd}`" for (d, n, m, why, cmd), h in zip(todo, hours)]
                     + ["", f"About {sum(known):.0f} hours of one core in all"
                        + (f", besides {len(hours) - len(known)} rows with no estimate"
                           if len(known) < len(hours) else "") + "."])


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", nargs="?", default=str(HERE / "results" / "edit_quality.jsonl"))
    ap.add_argument("--tuning", default=str(HERE / "results" / "tuning.jsonl"),
                    help="the dev rows, for the time of methods with no row here yet")
    args = ap.parse_args(argv)
    from common import read_jsonl

    text = markdown(read_jsonl(args.jsonl), read_jsonl(args.tuning))
    print(text)
    return text


if __name__ == "__main__":
    main()
