"""The side-by-side the comparison asks for, and which of its rows are still to run.

A planned row counts as done when ``results/edit_quality.jsonl`` holds a row of that method,
dataset and N (on the embedded model) that ran lm-eval's capability pass, with the settings
its YAML holds NOW (the row's ``settings_sha256`` = ``run.settings_digest`` of today's file:
a baseline re-tuned after its row ran needs the row again), and, where seeds are planned, one
such row per seed. ``report.py --md`` lists the rest under "Rows still to run", each with the
command that makes it; ``python benchmarks/planned.py`` prints the same list.

``--run`` runs them shortest first (``--until HH:MM``: within a session; ``--max-hours``: only
the short ones; ``session.sh`` runs those on one core before the tuning grids, the rest after
them). A baseline's rows wait until its tuning grid has run and
its YAML holds the setting the rule chose (``waits_for_tuning``): an evaluation row made with
settings still to be tuned would only be made again.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

logger = logging.getLogger("benchmarks.planned")
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
    + [("wikibigedit", 1000, m) for m in ("locft-bf", LOCALITY_LABEL, "ft-m", "ultraedit")]
    + [(d, 100, m) for d in ("zsre", "counterfact", "wikibigedit")
       for m in ("rome", "memit", "alphaedit")]
    # LocFT-BF beside them at N = 100 on the other two datasets (ZsRE's: its seeds below), so
    # that "where LocFT-BF loses" compares them there too; minutes each
    + [(d, 100, "locft-bf") for d in ("counterfact", "wikibigedit")])
SEEDS = {("zsre", 100, "locft-bf"): (0, 1, 2)}  # LocFT-BF's spread over seeds
EASYEDIT_PYTHON = "$EASYEDIT_PY"  # the EasyEdit venv's python (benchmarks/EASYEDIT.md)
REUSE_TARGETS = ("memit", "alphaedit")  # run.py --reuse-targets (target_cache.py)
MAX_MINUTES = 100  # long EasyEdit rows pause and resume (run.py --max-minutes)
# the rows that can pause, and how many edits they make between saved states (a run cannot
# stop inside them): MEMIT / AlphaEdit one call of batch_size (100) edits, ROME / FT-M / WISE
# every 10 calls of one edit (baselines.SAVE_EVERY); LocFT and UltraEdit rows run whole
UNBROKEN_EDITS = {"memit": 100, "alphaedit": 100, "rome": 10, "ft-m": 10, "wise": 10}
MARGIN_MINUTES = 15.0  # --until: what is left for the session's last checks
# minutes a row spends after its editing (scoring, generation, lm-eval's capability pass, one
# thread): ~35 at N = 1,000 (the rows of 2026-12-03), a few at N = 100
AFTER_MINUTES = {100: 5, 1000: 35}
# a paused row that has edited this long is timed at its own pace (the machine and settings it
# runs on now) rather than from the method's other rows: WISE's dev rows ran at 31-68 s/edit
# under varying load, the ZsRE N = 1,000 row at 30-38. Not REUSE_TARGETS' rows: their first
# call may have read its vectors (3 min of MEMIT's ZsRE N = 1,000 row's first 77, calls 2 and 3
# 37 min each), so their pace so far understates the calls left.
OWN_PACE_SECONDS = 1800.0
# a row of an older capability.PROTOCOL (1) measured its peak memory with lm-eval's pass at 16
# documents a forward (~3 GB of logits): its peak MB is not comparable, and as a seed it would
# be averaged with rows that stop before the pass (LocFT-BF's ZsRE N = 100 seeds: 7763 MB vs
# 2041 / 2064)


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
    return " ".join(command_argv(dataset, n, method, seeds))


def base_method(method: str) -> str:
    """The method ``benchmarks/run.py`` runs for a planned method name (``LABELS``: a labelled
    variant runs its base method with settings)."""
    return LABELS.get(method, (method, []))[0]


def command_argv(dataset: str, n: int, method: str, seeds=(), easyedit_python=EASYEDIT_PYTHON,
                 python="python", max_minutes=MAX_MINUTES) -> list:
    """The row's command as a list: ``[interpreter, "benchmarks/run.py", options...]``."""
    base, sets = LABELS.get(method, (method, []))
    easyedit = not base.startswith("locft")
    parts = [easyedit_python if easyedit else python, "benchmarks/run.py", "--methods", base,
             "--datasets", dataset, "--n", str(n), "--threads", "1"]
    parts += ["--seeds", *map(str, seeds)] if seeds else []
    parts += ["--python", easyedit_python] if easyedit else []
    parts += ["--max-minutes", f"{max_minutes:g}"] if base in UNBROKEN_EDITS else []
    parts += ["--label", method, "--set", *sets] if sets else []
    # the ZsRE N = 100 row and the first call (100 edits) of the N = 1,000 row edit the same
    # records on the unedited model: whichever runs second reads the other's target vectors
    parts += ["--reuse-targets"] if base in REUSE_TARGETS else []
    return parts


def still_to_run(rows) -> list:
    """``[(dataset, n, method, why, seeds still to run)]`` for every planned row not done (all
    rows of the JSON lines, not only the latest of each), in the plan's order; its command:
    ``command(dataset, n, method, seeds)``."""
    from capability import PROTOCOL
    have = {}
    for r in rows:
        if r.get("model") == MODEL:
            have.setdefault((r["dataset"], r["n"], r["method"]), []).append(r)
    out = []
    for dataset, n, method in PLANNED + [k for k in SEEDS if k not in PLANNED]:
        found = have.get((dataset, n, method), [])
        with_cap = [r for r in found if "capability_protocol" in r]
        protocol = [r for r in with_cap if r["capability_protocol"] == PROTOCOL]
        current = [r for r in protocol if not is_stale(r)]
        want = SEEDS.get((dataset, n, method), ())
        if not found:
            why, missing = "no row yet", want
        elif not with_cap:
            why, missing = "its row predates the lm-eval capability pass", want
        elif not protocol:
            why, missing = ("its row ran an older capability protocol (its peak MB includes "
                            "lm-eval's pass: not comparable)"), want
        elif not current:
            why, missing = "its row ran with settings its YAML no longer holds", want
        else:
            missing = [s for s in want if s not in {r.get("seed") for r in current}]
            if not missing:
                continue
            why = "seeds " + " ".join(map(str, missing)) + " still to run"
        out.append((dataset, n, method, why, missing))
    return out


def hours_needed(dataset: str, n: int, method: str, rows, dev_rows=(), seeds=None,
                 progress=None):
    """Estimated hours of one core for the row: :func:`seconds_per_edit` times ``n`` per
    seed still to run (``seeds``; default: all of its planned seeds), plus ``AFTER_MINUTES``
    per run; None with nothing to go by. ``progress`` (``run.paused``: the row is paused):
    only the edits it has left, at the row's own pace so far when nothing else estimates it
    or it has edited for ``OWN_PACE_SECONDS`` (``REUSE_TARGETS``' rows excepted)."""
    from resume import part_left, seconds_left

    spe = seconds_per_edit(dataset, n, method, rows, dev_rows)
    runs = len(SEEDS.get((dataset, n, method), ()) if seeds is None else seeds) or 1
    if _own_pace_counts(method, progress, spe, runs):
        return seconds_left(progress) / 3600 + AFTER_MINUTES.get(n, 35) / 60
    if spe is None:
        return None
    return runs * (spe * n * part_left(progress) / 3600 + AFTER_MINUTES.get(n, 35) / 60)


def _own_pace_counts(method: str, progress, spe, runs: int = 1) -> bool:
    """Whether a paused row (``progress``: ``run.paused``'s) is timed at its own pace so far
    rather than at ``spe`` (:func:`seconds_per_edit`): it has a call done, and nothing else
    estimates it or, one run, it has edited for ``OWN_PACE_SECONDS`` (``REUSE_TARGETS``' rows
    excepted)."""
    from resume import seconds_left

    steady = (runs == 1 and progress and progress["seconds"] >= OWN_PACE_SECONDS
              and base_method(method) not in REUSE_TARGETS)
    return seconds_left(progress) is not None and (spe is None or bool(steady))


def pace(dataset: str, n: int, method: str, rows, dev_rows=(), progress=None, runs: int = 1):
    """Expected seconds per edit of the row's next edits: a paused row's own pace so far where
    :func:`_own_pace_counts`, else :func:`seconds_per_edit`; None with nothing to go by."""
    spe = seconds_per_edit(dataset, n, method, rows, dev_rows)
    if _own_pace_counts(method, progress, spe, runs):
        return progress["seconds"] * progress["total"] / (progress["done"] * n)
    return spe


def latest_pace(progress, n: int):
    """Seconds per edit of a paused row's latest calls (``last_step_seconds``, from its last
    save), None without: a long row's calls can take far longer than its expected pace
    (AlphaEdit's ZsRE N = 1,000 row: 48 min a call at the N = 100 row's pace; its calls 7-10
    took 65, 62, 83 and 47 min, the other core busy throughout, the cause not profiled),
    so a piece that cannot pause is timed at the slower of this and :func:`pace`."""
    if not progress or not progress.get("last_step_seconds") or not progress.get("total"):
        return None
    return progress["last_step_seconds"] * progress["total"] / n


def seconds_per_edit(dataset: str, n: int, method: str, rows, dev_rows=()):
    """Expected seconds per edit of the row: the method's latest row on ``dataset``, else on
    any dataset (rows that read part of their work from another row's do not count), else the
    slowest of its dev rows that paid for their work (``tune_baselines``' rows, 100 ZsRE
    edits); None with nothing to go by."""
    from tune_baselines import base_of, reused

    mine = [r for r in rows if r.get("model") == MODEL and r.get("method") == method
            and r.get("seconds_per_edit") and not reused(r)]
    here = [r for r in mine if r["dataset"] == dataset]
    base = base_method(method)
    paid = [r["seconds_per_edit"] for r in dev_rows
            if base_of(r) == base
            and r.get("seconds_per_edit") and not reused(r)]
    return (here or mine)[-1]["seconds_per_edit"] if mine else max(paid) if paid else None


def waits_for_tuning(method: str, dev_rows) -> str | None:
    """Why a tuned baseline's planned rows must wait, or None: its dev grid
    (``tune_baselines.GRIDS``) still has rows to run, or its YAML does not hold the setting
    the rule chose yet (``tune_baselines.py --apply``). LocFT's
    rows wait for nothing."""
    import tune_baselines as tune
    from baselines import easyedit_yaml

    base = base_method(method)
    if base not in tune.GRIDS:
        return None
    every = tune.by_method(dev_rows)
    left, chosen, moved = tune.choice_state(base, every, easyedit_yaml(base))
    if left:
        return f"its tuning grid has {len(left)} of {len(tune.grid(base, every))} rows to run"
    if moved:
        return (f"its YAML does not hold the chosen `{chosen['method']}` yet "
                f"({', '.join(f'{k}={v}' for k, v in moved.items())})")
    return None


def shortest_first(todo, rows, dev_rows, max_hours=None, stopped=None) -> list:
    """``[(hours or None, row)]`` for :func:`still_to_run`'s rows ``todo``, those expected to
    take the fewest hours of one core first (:func:`hours_needed`; rows with nothing to go by
    last, in the plan's order). With ``max_hours``, only the rows expected to take at most that
    long. Why this order: a session's two cores make about 5 core-hours and the plan holds ~60;
    the short rows (N = 100, LocFT's) fill RESULTS.md first instead of waiting sessions behind
    WISE's 1,000-edit rows (~20 h each), and the total is the same (every long row can pause).
    ``stopped``: ``run.paused``, for what a paused row has left."""
    stopped = stopped or {}
    timed = [(hours_needed(d, n, m, rows, dev_rows, seeds, stopped.get((m, d, n))), i,
              (d, n, m, why, seeds))
             for i, (d, n, m, why, seeds) in enumerate(todo)]
    if max_hours is not None:
        timed = [t for t in timed if t[0] is not None and t[0] <= max_hours]
    return [(h, row) for h, _, row in sorted(timed, key=lambda t: (t[0] is None, t[0] or 0,
                                                                   t[1]))]



def run_ready(rows_path, tuning_path, easyedit_python: str, until=None, methods=None,
              threads=1, max_hours=None) -> list:
    """Run the rows still to run that wait for no tuning, shortest first
    (:func:`shortest_first`; ``max_hours``: only rows expected to take at most that long),
    through ``run.main`` (a paused row goes on from its state; one another process runs is
    skipped). ``until`` (``HH:MM``, a session's end): a row starts only if its longest part
    that cannot pause (``UNBROKEN_EDITS``; a whole LocFT / UltraEdit row with its scoring),
    timed at :func:`pace` (a paused row's own pace once it counts), fits before it with
    ``MARGIN_MINUTES`` to spare, and pausable rows pause in time. Passes over the list repeat
    while one of them got a row further (a row made, a paused row's progress moved): a row
    skipped because the other core held it, or one that paused on ``--max-minutes``, is taken
    again while time is left; a row made once is not run again (should it still count as to
    run, a pass would make it again and again). Returns the rows made."""
    made, ran = [], set()
    while True:
        made_now, moved = _one_pass(rows_path, tuning_path, easyedit_python, until, methods,
                                    threads, max_hours, ran)
        made += made_now
        if not moved:
            return made


def fit(n: int, base: str, spe: float, progress, runs: int, left: float) -> tuple:
    """``(minutes, budget, hold_last)`` of a row with ``left`` minutes before a session's end,
    timed at ``spe`` seconds per edit (:func:`pace`): ``minutes``, its next part that cannot
    pause (all of a row that cannot pause, with its scoring; else ``UNBROKEN_EDITS``' piece,
    at the slower of ``spe`` and :func:`latest_pace`, with the scoring when it is the row's
    last); ``budget``, its ``--max-minutes``: the editing minutes after which it starts no
    further piece, so that a piece started before then, the last one with its scoring if this
    run may reach it, ends ``MARGIN_MINUTES`` before the end; ``hold_last`` (``--hold-last``):
    the run has no time to score the row after its last piece, so it pauses before that
    piece even if it edits faster than timed (near the end it keeps the whole budget for
    editing, where taking the scoring's minutes off it left a piece or none)."""
    from resume import part_left

    after = AFTER_MINUTES.get(n, 35)
    if base not in UNBROKEN_EDITS:
        whole = runs * (n * spe / 60 + after)
        return whole, left - MARGIN_MINUTES - whole, False
    call = UNBROKEN_EDITS[base] * max(spe, latest_pace(progress, n) or 0) / 60
    pieces = math.ceil(round(n * part_left(progress)) / UNBROKEN_EDITS[base])
    budget = left - MARGIN_MINUTES - call
    if pieces <= 1:
        return call + after, budget - after, False
    if (pieces - 1) * call <= budget - after:  # this run may reach the last piece and score
        return call, budget - after, False
    return call, budget, True  # no time to score: it pauses before the last piece, however fast


def _one_pass(rows_path, tuning_path, easyedit_python, until, methods, threads, max_hours,
              ran: set):
    """One pass of :func:`run_ready` over the rows still to run, leaving those in ``ran``
    (adding the ones it makes): (rows made, whether a row got further)."""
    import run
    import tune_baselines as tune
    from common import read_jsonl

    end = tune.deadline(until, time.time()) if until else None
    made, moved = [], False
    rows = read_jsonl(rows_path)
    for _, (dataset, n, method, why, seeds) in shortest_first(
            still_to_run(rows), rows, read_jsonl(tuning_path), max_hours,
            run.paused(rows_path)):
        base = base_method(method)
        if (methods and base not in methods and method not in methods) \
                or (dataset, n, method) in ran:
            continue
        rows, dev_rows = read_jsonl(rows_path), read_jsonl(tuning_path)  # the other core's too
        wait = waits_for_tuning(method, dev_rows)
        if wait:
            logger.info("not yet %s N=%d %s: %s", dataset, n, method, wait)
            continue
        max_minutes = MAX_MINUTES
        hold_last = False
        before = run.paused(rows_path).get((method, dataset, n))
        if end is not None:
            left = (end - time.time()) / 60
            runs = max(1, len(seeds))
            spe = pace(dataset, n, method, rows, dev_rows, before, runs) or 0.0
            piece, budget, hold_last = fit(n, base, spe, before, runs, left)
            if piece + MARGIN_MINUTES >= left:
                logger.info("not starting %s N=%d %s: it needs ~%.0f min without a pause, "
                            "%.0f left before %s", dataset, n, method, piece + MARGIN_MINUTES,
                            left, until)
                continue
            max_minutes = min(MAX_MINUTES, budget)
        argv = command_argv(dataset, n, method, seeds, easyedit_python, sys.executable,
                            max(max_minutes, 1.0))
        argv += ["--hold-last"] if hold_last else []
        argv[argv.index("--threads") + 1] = str(threads)
        logger.info("running %s N=%d %s (%s)%s", dataset, n, method, why,
                    ", --hold-last: no time to score after its last piece" if hold_last else "")
        made_here = run.main(argv[2:] + ["--out", str(rows_path)])
        made += made_here
        if made_here:
            ran.add((dataset, n, method))
        moved = moved or bool(made_here) or run.paused(rows_path).get(
            (method, dataset, n)) != before
    return made, moved


def markdown(rows, dev_rows=(), stopped=None) -> str:
    """The planned rows still to run, as :func:`shortest_first` orders them, each with its
    hours, what it waits for and its command; ``stopped`` (``run.paused``): how far a paused
    row got."""
    import run

    stopped = stopped or {}
    timed = shortest_first(still_to_run(rows), rows, dev_rows, stopped=stopped)
    if not timed:
        return "- none: every planned row exists with the current settings"
    hours, todo = [h for h, _ in timed], [row for _, row in timed]
    waits = [waits_for_tuning(m, dev_rows) for _, _, m, _, _ in todo]
    known = [h for h in hours if h is not None]
    return "\n".join([f"{len(todo)} of the {len(PLANNED) + len(SEEDS)} planned rows, in the "
                      "order `--run` takes them (shortest first; "
                      f"`{EASYEDIT_PYTHON}`: the EasyEdit venv's python, benchmarks/EASYEDIT.md; "
                      "a row already there is skipped, a paused one goes on; hours: one "
                      "core's, estimated from the method's earlier rows, `hours_needed`):", ""]
                     + [f"- {d} N={n} {m}: {why}; "
                        + (f"~{h:.1f} h" if h is not None else "no row to estimate its time")
                        + (f" (paused at {run.progress_text(stopped[(m, d, n)])})"
                           if (m, d, n) in stopped else "")
                        + (f"; waits: {w}" if w else "")
                        + f". `{command(d, n, m, seeds)}`"
                        for (d, n, m, why, seeds), h, w in zip(todo, hours, waits)]
                     + ["", f"About {sum(known):.0f} hour{'' if round(sum(known)) == 1 else 's'}"
                            " of one core in all"
                        + (f", besides {len(hours) - len(known)} rows with no estimate"
                           if len(known) < len(hours) else "") + "."])


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", nargs="?", default=str(HERE / "results" / "edit_quality.jsonl"))
    ap.add_argument("--tuning", default=str(HERE / "results" / "tuning.jsonl"),
                    help="the dev rows, for the time of methods with no row here yet and "
                         "(--run) whether a baseline's tuning is done")
    ap.add_argument("--run", action="store_true",
                    help="run the rows still to run, shortest first, into JSONL; a baseline's "
                         "rows wait until its tuning grid has run and its YAML holds the "
                         "chosen setting; a paused row goes on, one another process (the "
                         "other core) runs is skipped; passes over the list repeat while one "
                         "got a row further")
    ap.add_argument("--easyedit-python", default=sys.executable,
                    help="--run: the EasyEdit venv's python, for the baselines' rows "
                         "(LocFT's rows run with the interpreter running this script)")
    ap.add_argument("--until", metavar="HH:MM",
                    help="--run: finish by this time (a session's end; the nearest such "
                         "time, past midnight too): a row starts only if its longest part "
                         "that cannot pause fits, with "
                         f"{MARGIN_MINUTES:.0f} min to spare, and pausable rows pause in time")
    ap.add_argument("--methods", nargs="+", help="--run: only these methods' rows")
    ap.add_argument("--max-hours", type=float, metavar="H",
                    help="--run: only the rows expected to take at most H hours of one core "
                         "(session.sh runs these before the tuning grids, the longer ones "
                         "after them)")
    ap.add_argument("--threads", type=int, default=1, help="--run: torch threads per row")
    args = ap.parse_args(argv)
    from common import read_jsonl

    if args.run:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        run_ready(Path(args.jsonl).resolve(), Path(args.tuning).resolve(),
                  args.easyedit_python, args.until, args.methods, args.threads,
                  args.max_hours)

    import run

    text = markdown(read_jsonl(args.jsonl), read_jsonl(args.tuning), run.paused(Path(args.jsonl)))
    print(text)
    return text


if __name__ == "__main__":
    main()
