"""Markdown table and PNG plots from the JSON lines of ``benchmarks/run.py``.

    python benchmarks/report.py benchmarks/results/edit_quality.jsonl --plots benchmarks/plots

Prints two markdown tables, one row per method x dataset x N x model (the latest run of
each): edit quality (reliability, generalization, locality) and what the edits cost
(capability before/after, seconds per edit, memory, the machine's load when the row started),
and for CounterFact rows the papers' probability scores (ES / PS / NS, before and after).
``--answers`` adds what greedy generation said to each row's first prompts. ``--plots DIR``
writes ``reliability_vs_n.png`` (reliability and generalization, token accuracy and
generation exact match, per dataset), ``retention_vs_n.png`` (locality, known-fact accuracy
and held-out word perplexity after editing, through lm-eval), ``seconds_per_edit_vs_n.png``
and ``pareto_reliability_locality.png`` (one point per method and N, with the 95% intervals
over edits). A figure with an interval reads ``value (low-high)``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # tune_baselines, loaded from a file
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SPEED_NOISE  # noqa: E402
# whether part of a row's costly work was read from another row's identical run (MEMIT's /
# AlphaEdit's target vectors, WISE's side memory): its seconds_per_edit leaves that work out,
# so it is marked and not compared or plotted
from tune_baselines import reused as read_elsewhere  # noqa: E402

METHOD_ORDER = ("locft-bf", "locft-df", "ft-m", "rome", "memit", "alphaedit", "ultraedit",
                "wise")
QUALITY = [("reliability", "rel (tok)"), ("reliability_em", "rel (EM)"),
           ("generalization", "gen (tok)"), ("generalization_em", "gen (EM)"),
           ("locality", "loc")]
PROBS = [(f"{k}_{w}", f"{label} {w}") for k, label in
         (("efficacy_score", "ES"), ("paraphrase_score", "PS"), ("neighborhood_score", "NS"))
         for w in ("before", "after")]
COST = [("cap_known_facts_acc_after", "known facts after"),
        ("cap_heldout_text_word_perplexity_before", "word ppl before"),
        ("cap_heldout_text_word_perplexity_after", "word ppl after"),
        ("seconds_per_edit", "s/edit"), ("peak_rss_mb", "peak MB"),
        ("load_avg_1min_at_start", "load at start")]


def combine_seeds(rows: list) -> dict:
    """One row for runs with several seeds: each figure's mean, its standard deviation over
    the seeds (``<figure>_sd``) instead of an interval, and ``seeds``."""
    import statistics

    out = {k: v for k, v in rows[-1].items() if not k.endswith("_ci95")}
    for key in {k for k, v in rows[0].items() if isinstance(v, (int, float))
                and not isinstance(v, bool)}:
        values = [r.get(key) for r in rows]
        if key in ("n", "seed", "capability_protocol", "offset") or any(
                not isinstance(v, (int, float)) for v in values):
            continue
        out[key] = statistics.fmean(values)
        out[key + "_sd"] = statistics.stdev(values)
    out["seeds"] = sorted(r["seed"] for r in rows)
    return out


def load_rows(path) -> list:
    """The latest row of each method x dataset x N x model; where rows of two or more seeds
    exist (``run.py --seeds``) with the same capability protocol (the newest among them),
    their :func:`combine_seeds` row instead."""
    latest, seeded = {}, {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            key = (r["method"], r["dataset"], r["n"], r["model"])
            latest[key] = r
            if r.get("seed") is not None:
                seeded.setdefault(key, {})[r["seed"]] = r
    for key, by_seed in seeded.items():
        # only seeds measured alike: of the newest capability protocol among them
        newest = max(r.get("capability_protocol", 0) for r in by_seed.values())
        alike = [r for r in by_seed.values() if r.get("capability_protocol", 0) == newest]
        if len(alike) >= 2:
            latest[key] = combine_seeds(alike)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(latest.values(), key=lambda r: (r["model"], r["dataset"], r["n"],
                                                  order.get(r["method"], 99)))


def mark_stale(rows: list) -> list:
    """``rows`` with ``stale`` set on each: made with a YAML that has changed since
    (``planned.is_stale``; ``planned.py`` lists its re-run); the tables say "(old settings)",
    the plots draw it hollow."""
    import planned

    for r in rows:
        r["stale"] = planned.is_stale(r)
    return rows


READ_ELSEWHERE_NOTE = ("\\* part of the row's costly work was read from another row's "
                       "identical computation: MEMIT's / AlphaEdit's target vectors "
                       "(`--reuse-targets`, `target_cache.py`; the ZsRE N = 100 row and the "
                       "first call of the N = 1,000 row edit the same records on the unedited "
                       "model) or WISE's side memory (`--reuse-memory`, `wise_cache.py`). Its "
                       "s/edit leaves that work out and is not compared or plotted")


# a row of capability protocol 1 (2026-12-02) ran lm-eval's pass at 16 documents a forward
# and within its peak memory (~3 GB of logits); from protocol 2 on the peak stops before it
PEAK_WITH_PASS_NOTE = ("† peak MB with lm-eval's capability pass at 16 documents a forward "
                       "(capability protocol 1: ~3 GB of logits), not comparable with the "
                       "other rows', which stop before the pass")


def _peak_with_pass(r: dict) -> bool:
    return r.get("capability_protocol") == 1 and r.get("peak_rss_mb") is not None


# a row made over several runs whose saved state did not keep their peaks (a baseline's state
# saved before resume.py kept them; LocFT's checkpoints) carries the peak of its last run only
PEAK_LAST_RUN_NOTE = ("‡ peak MB of the row's last run only: it was made over several runs "
                      "whose saved state did not keep their peaks (EasyEdit baselines' states "
                      "saved before 2026-12-06, LocFT's checkpoints), and its editing may have "
                      "peaked higher (WISE's N = 1,000 rows: a last run that only scored, its "
                      "1,000 edits all made by the earlier ones)")


def _peak_last_run(r: dict) -> bool:
    return r.get("runs", 1) > 1 and not r.get("peak_rss_mb_all_runs")


def _mark(r: dict, key: str) -> str:
    """The footnote mark of a figure measured unlike the others (see the notes it names)."""
    if key == "seconds_per_edit" and read_elsewhere(r):
        return "\\*"
    if key == "peak_rss_mb" and _peak_with_pass(r):
        return "†"
    if key == "peak_rss_mb" and _peak_last_run(r):
        return "‡"
    return ""


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _ci_key(key: str) -> str:
    return key + "_ci95"


def _with_ci(r: dict, key: str) -> str:
    """The value, and its 95% interval when the row has one: ``0.644 (0.611-0.676)``; over
    seeds, the mean and standard deviation: ``0.644 ± 0.012 (3 seeds)``."""
    if r.get(key + "_sd") is not None and r.get(key) is not None:
        return f"{_fmt(r[key])} ± {_fmt(float(r[key + '_sd']))} ({len(r['seeds'])} seeds)"
    ci = r.get(_ci_key(key))
    if ci is None or r.get(key) is None:
        return _fmt(r.get(key))
    return f"{_fmt(r[key])} ({_fmt(float(ci[0]))}-{_fmt(float(ci[1]))})"


def _name(r: dict) -> str:
    """The row's method, marked where it is a stand-in or ran with settings its YAML no
    longer holds (``stale``: ``planned.is_stale``)."""
    return (r["method"] + (" (stand-in)" if "implementation" in r else "")
            + (" (old settings)" if r.get("stale") else ""))


def table(rows, columns=QUALITY) -> str:
    head = ["dataset", "N", "method"] + [label for _, label in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        method = _name(r)
        cells = [r["dataset"], str(r["n"]), method] + [_with_ci(r, k) + _mark(r, k)
                                                       for k, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return (text or "(empty)").replace("\n", " ").replace("|", "\\|")


def answers(rows) -> str:
    """Greedy answers to each row's first edit prompts, next to their targets."""
    lines = []
    for r in rows:
        sample = r.get("answers_sample") or []
        if not sample:
            continue
        lines += [f"**{r['dataset']} N={r['n']} {r['method']}**", "",
                  "| prompt | target | answer |", "| --- | --- | --- |"]
        lines += [f"| {_cell(a['prompt'])} | {_cell(a['target'])} | {_cell(a['answer'])} |"
                  for a in sample]
        lines.append("")
    return "\n".join(lines)


# (field, name, higher is better) compared with LocFT-BF in "where LocFT-BF loses"
VERSUS = [("reliability", "reliability", True), ("generalization", "generalization", True),
          ("locality", "locality", True),
          ("neighborhood_score_after", "neighbourhood score (NS) after", True),
          ("cap_known_facts_acc_after", "known facts kept", True),
          ("cap_heldout_text_word_perplexity_after", "held-out word perplexity", False),
          ("seconds_per_edit", "seconds per edit", False)]
REFERENCE = "locft-bf"


def _beaten(rows) -> list:
    """``[(ref, row, key, name, how)]``: each figure where another row beats LocFT-BF's on
    the same dataset, N and model; ``how`` says whether their 95% intervals are apart."""
    found = []
    for ref in (r for r in rows if r["method"] == REFERENCE):
        for key, name, higher in VERSUS:
            if ref.get(key) is None:
                continue
            for r in rows:
                if (r["method"] == REFERENCE or r["dataset"] != ref["dataset"]
                        or r["n"] != ref["n"] or r["model"] != ref["model"]
                        or r.get(key) is None
                        or (key == "seconds_per_edit" and read_elsewhere(r))):
                    continue
                better = r[key] > ref[key] if higher else r[key] < ref[key]
                if not better:
                    continue
                a, b = ref.get(_ci_key(key)), r.get(_ci_key(key))
                if key == "seconds_per_edit" and r[key] > ref[key] * (1 - SPEED_NOISE):
                    how = WITHIN_NOISE
                elif a and b:
                    apart = (b[0] > a[1]) if higher else (b[1] < a[0])
                    how = "intervals apart" if apart else WITHIN
                else:
                    how = "no intervals"
                found.append((ref, r, key, name, how))
    return found


WITHIN = "within the intervals: not a loss"
WITHIN_NOISE = f"within {SPEED_NOISE:.0%} of its time: the machine's load, not a loss"


def losses(rows) -> str:
    """Where another method beats LocFT-BF on the same dataset and N, figure by figure: a
    loss when their 95% intervals do not overlap (or, without intervals, any margin: said).
    First one paragraph (per figure: who beats it where), then each loss with its figures,
    then the leads that lie within the intervals."""
    found = _beaten(rows)
    if not found:
        return "- nowhere in these rows"
    lost = [f for f in found if f[4] not in (WITHIN, WITHIN_NOISE)]
    parts = []
    if lost:
        by_figure = {}
        for ref, r, _, name, _ in lost:
            by_figure.setdefault(name, {}).setdefault(r["method"], []).append(
                f"{ref['dataset']} N={ref['n']}"
                + (" (old settings)" if r.get("stale") or ref.get("stale") else ""))
        said = [f"{name} ({'; '.join(m + ': ' + ', '.join(w) for m, w in who.items())})"
                for name, who in by_figure.items()]
        parts.append("LocFT-BF loses on " + ", on ".join(said) + ". Everywhere else in these "
                     "rows it is ahead, or behind by less than the intervals (seconds: "
                     f"by less than {SPEED_NOISE:.0%}).")
        parts.append("\n".join(
            f"- {ref['dataset']} N={ref['n']}: {_name(r)} {name} {_with_ci(r, key)} vs "
            f"{_name(ref).replace(REFERENCE, 'LocFT-BF')} {_with_ci(ref, key)} ({how})"
            for ref, r, key, name, how in lost))
    else:
        parts.append("LocFT-BF loses nowhere in these rows by more than the intervals.")
    tied = [f for f in found if f[4] in (WITHIN, WITHIN_NOISE)]
    if tied:
        parts.append("Ahead of LocFT-BF within the intervals, or for seconds per edit within "
                     f"{SPEED_NOISE:.0%} (not losses): " + "; ".join(
            f"{ref['dataset']} N={ref['n']} {_name(r)} {name} {_with_ci(r, key)} vs "
            f"{_with_ci(ref, key)}" for ref, r, key, name, _ in tied) + ".")
    return "\n\n".join(parts)


OLD_SETTINGS = "hollow: old settings"  # a row made with a YAML since re-tuned (``stale``)


def plots(rows, out_dir) -> list:
    """The four PNGs of the module's docstring; a row made with settings its YAML no longer
    holds (``stale``, set by :func:`mark_stale`) is a hollow mark, not joined to the line of
    the method's current rows (the table calls it "(old settings)")."""
    import matplotlib
    import matplotlib.lines

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets = sorted({r["dataset"] for r in rows})
    # the known methods in their order, then any other (a --label: LocFT with other options)
    methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in rows)] + sorted(
        {r["method"] for r in rows} - set(METHOD_ORDER))
    colour = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    hollow = set()  # the methods drawn hollow in the figure being made (its legend says so)
    metrics = [("reliability", "reliability (token acc)"),
               ("reliability_em", "reliability (generation EM)"),
               ("generalization", "generalization (token acc)"),
               ("generalization_em", "generalization (generation EM)")]

    def series(ds, m, key, stale=False):
        pts = sorted((r["n"], r[key]) for r in rows
                     if r["dataset"] == ds and r["method"] == m and r.get(key) is not None
                     and bool(r.get("stale")) == stale
                     and not (key == "seconds_per_edit" and read_elsewhere(r)))
        return [p[0] for p in pts], [p[1] for p in pts]

    def panel(ax, ds, key, title, log_y=False):
        for m in methods:
            x, y = series(ds, m, key)
            if x:
                ax.plot(x, y, marker="o", label=m, color=colour[m])
            x, y = series(ds, m, key, stale=True)  # not joined to the rows of today's settings
            if x:
                ax.plot(x, y, ls="none", marker="o", mfc="none", color=colour[m],
                        label="_old")  # "_": no legend entry of its own (see save)
                hollow.add(m)
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        else:
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{ds}: {title}", fontsize=9)
        ax.set_xlabel("N edits (all scored after the last)")
        ax.grid(alpha=0.3)

    def save(fig, axes, name):
        labels = {}  # one legend for the figure: every method that appears in any panel
        for ax in fig.axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                labels.setdefault(lab, h)
        for m in methods:  # a method with hollow marks only still names its colour
            if m in hollow and m not in labels:
                labels[m] = matplotlib.lines.Line2D([], [], ls="none", marker="o",
                                                    color=colour[m])
        if hollow:  # one grey hollow mark says it for every colour, last
            labels[OLD_SETTINGS] = matplotlib.lines.Line2D([], [], ls="none", marker="o",
                                                           mfc="none", color="grey")
            hollow.clear()
        fig.legend(list(labels.values()), list(labels), loc="upper center",
                   ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, 1.0))
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        return out_dir / name

    fig, axes = plt.subplots(len(datasets), len(metrics), squeeze=False,
                             figsize=(4 * len(metrics), 3.4 * len(datasets)))
    for i, ds in enumerate(datasets):
        for j, (key, title) in enumerate(metrics):
            panel(axes[i][j], ds, key, title)
    first = save(fig, axes, "reliability_vs_n.png")
    kept = [("locality", "locality (neighbourhood, token acc)", False),
            ("cap_known_facts_acc_after", "known facts after (lm-eval acc)", False),
            ("cap_heldout_text_word_perplexity_after", "held-out word perplexity after",
             True)]
    fig, axes = plt.subplots(len(datasets), len(kept), squeeze=False,
                             figsize=(4 * len(kept), 3.4 * len(datasets)))
    for i, ds in enumerate(datasets):
        for j, (key, title, log_y) in enumerate(kept):
            panel(axes[i][j], ds, key, title, log_y=log_y)
            if key != "locality":  # the unedited model's value, for reference
                before = [r[key.replace("after", "before")] for r in rows
                          if r["dataset"] == ds and key.replace("after", "before") in r]
                if before:
                    axes[i][j].axhline(before[0], color="grey", ls="--", lw=1,
                                       label="before editing")
    retention = save(fig, axes, "retention_vs_n.png")
    fig, axes = plt.subplots(1, len(datasets), squeeze=False, figsize=(5 * len(datasets), 3.6))
    for i, ds in enumerate(datasets):
        panel(axes[0][i], ds, "seconds_per_edit", "seconds per edit (CPU)", log_y=True)
    second = save(fig, axes, "seconds_per_edit_vs_n.png")
    fig, axes = plt.subplots(1, len(datasets), squeeze=False, figsize=(5 * len(datasets), 4))
    for i, ds in enumerate(datasets):
        ax = axes[0][i]
        for m in methods:
            pts = [r for r in rows if r["dataset"] == ds and r["method"] == m
                   and r.get("locality") is not None]
            for r in pts:  # one point per N, with its intervals over edits where it has them
                xerr = yerr = None
                if r.get("locality_ci95"):
                    lo, hi = r["locality_ci95"]
                    xerr = [[r["locality"] - lo], [hi - r["locality"]]]
                if r.get("reliability_ci95"):
                    lo, hi = r["reliability_ci95"]
                    yerr = [[r["reliability"] - lo], [hi - r["reliability"]]]
                ax.errorbar(r["locality"], r["reliability"], xerr=xerr, yerr=yerr, fmt="o",
                            color=colour[m], capsize=2,
                            **({"mfc": "none", "label": "_old"} if r.get("stale")
                               else {"label": m}))
                if r.get("stale"):
                    hollow.add(m)
                ax.annotate(f"N={r['n']}", (r["locality"], r["reliability"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.05)
        ax.set_xlabel("locality (neighbourhood, token acc)")
        ax.set_ylabel("reliability (token acc)")
        ax.set_title(f"{ds}: reliability vs locality (upper right is better)", fontsize=9)
        ax.grid(alpha=0.3)
    pareto = save(fig, axes, "pareto_reliability_locality.png")
    return [first, retention, second, pareto]


def provenance(rows) -> str:
    """One line per row: its settings, digest, date, machine load and the command."""
    lines = ["| dataset | N | method | settings | digest | date | load | command |",
             "|" + " --- |" * 8]
    for r in rows:
        sets = " ".join(f"{k}={json.dumps(v)}" for k, v in (r.get("overrides") or {}).items())
        lines.append("| " + " | ".join([
            r["dataset"], str(r["n"]), r["method"],
            f"`{r.get('hparams', '-')}`" + (f" + `{sets}`" if sets else ""),
            r.get("settings_sha256") or "-", r.get("date", "-"),
            _fmt(r.get("load_avg_1min_at_start")), f"`{r.get('command', '-')}`"]) + " |")
    return "\n".join(lines)


def markdown(rows, source: str, plot_dir=None, tuning=None, todo=None) -> str:
    """The whole comparison document, from the rows alone."""
    with_probs = [r for r in rows if r.get("efficacy_score_after") is not None]
    parts = [
        "# Side by side: LocFT-BF and the baselines (generated)", "",
        f"Written by `python benchmarks/report.py {source} --md ...` from the JSON lines "
        "alone: do not edit by hand, re-run it. Every edit is scored after the last one "
        "(benchmarks/run.py). A figure with an interval reads `value (low-high)`: the 95% "
        "percentile bootstrap interval over edits (1,000 resamples; over documents for the "
        "capability figures). Capability: lm-evaluation-harness on local tasks "
        "(benchmarks/lm_eval_tasks: held-out pydoc text, known CounterFact facts no run "
        "edits); rows made before it carry the older NQ-proxy fields instead and show `-`.",
        "", "## Edit quality", "", table(rows, QUALITY),
        "", "## What the edits cost", "", table(rows, COST)]
    if any(read_elsewhere(r) for r in rows):
        parts += ["", READ_ELSEWHERE_NOTE]
    if any(_peak_with_pass(r) for r in rows):
        parts += ["", PEAK_WITH_PASS_NOTE]
    if any(_peak_last_run(r) for r in rows):
        parts += ["", PEAK_LAST_RUN_NOTE]
    if with_probs:
        parts += ["", "## CounterFact probability scores", "", table(with_probs, PROBS)]
    parts += ["", "## Where LocFT-BF loses", "",
              "Every figure where another method beats LocFT-BF on the same data and N "
              "(a loss when the 95% intervals are apart or the rows have none; for seconds "
              f"per edit, when it is faster by more than {SPEED_NOISE:.0%}):", "",
              losses(rows)]
    if tuning:
        parts += ["", "## The baselines' tuning (dev split)", "", tuning]
    if todo:
        parts += ["", "## Rows still to run", "", todo]
    if plot_dir:
        rel = Path(plot_dir)
        hollow = ["A hollow mark is a row of old settings (its YAML re-tuned since; the "
                  "tables say \"(old settings)\"), not joined to the line of its method's "
                  "current rows.", ""] if any(r.get("stale") for r in rows) else []
        parts += ["", "## Plots", ""] + hollow + [f"![{n}]({rel.name}/{n})" for n in (
            "reliability_vs_n.png", "retention_vs_n.png", "seconds_per_edit_vs_n.png",
            "pareto_reliability_locality.png")]
    parts += ["", "## Rows", "", provenance(rows), ""]
    return "\n".join(parts)


BEGIN, END = "<!-- report.py: begin (generated; do not edit) -->", "<!-- report.py: end -->"


def write_markdown(path: Path, doc: str) -> None:
    """Write ``doc`` to ``path``; if ``path`` already holds the BEGIN / END markers, only what
    lies between them is replaced (one level deeper, without the title), the rest kept."""
    if path.is_file() and BEGIN in path.read_text() and END in path.read_text():
        text = path.read_text()
        body = "\n".join(("#" + line if line.startswith("## ") else line)
                         for line in doc.splitlines()[1:]).strip("\n")
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        path.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")
    else:
        path.write_text(doc)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", nargs="?",
                    default=str(Path(__file__).resolve().parent / "results" / "edit_quality.jsonl"))
    ap.add_argument("--plots", default=None, help="folder for the PNG plots")
    ap.add_argument("--md", default=None, metavar="PATH",
                    help="write the whole comparison document (tables, intervals, where "
                         "LocFT-BF loses, the baselines' tuning, plots, provenance) to PATH; "
                         "into a file with the report.py markers (benchmarks/RESULTS.md), "
                         "between them")
    ap.add_argument("--tuning", default=str(Path(__file__).resolve().parent / "results" /
                                            "tuning.jsonl"),
                    help="tuning rows of benchmarks/tune_baselines.py for --md")
    ap.add_argument("--answers", action="store_true",
                    help="also print each row's sample of greedy answers")
    args = ap.parse_args(argv)
    rows = mark_stale(load_rows(args.jsonl))
    with_probs = [r for r in rows if r.get("efficacy_score_after") is not None]
    text = "\n\n".join([table(rows, QUALITY), table(rows, COST)]
                       + ([table(with_probs, PROBS)] if with_probs else [])
                       + ([answers(rows)] if args.answers else []))
    print(text)
    if args.plots:
        for p in plots(rows, args.plots):
            print(f"wrote {p}")
    if args.md:
        import planned
        import run
        import tune_baselines
        from common import read_jsonl

        tuning = tune_baselines.report(Path(args.tuning)) if Path(args.tuning).is_file() else None
        every = read_jsonl(args.jsonl)
        todo = planned.markdown(every, read_jsonl(args.tuning), run.paused(Path(args.jsonl)))
        write_markdown(Path(args.md), markdown(rows, args.jsonl, args.plots, tuning, todo))
        print(f"wrote {args.md}")
    return text


if __name__ == "__main__":
    main()
