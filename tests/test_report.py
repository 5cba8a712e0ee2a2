"""The generated comparison (benchmarks/report.py --md) on made-up rows."""
from test_benchmarks import _load


def _row(method, rel, rel_ci, loc, loc_ci, ppl=None):
    r = {"method": method, "dataset": "zsre", "n": 1000, "model": "m", "reliability": rel,
         "reliability_ci95": rel_ci, "locality": loc, "locality_ci95": loc_ci,
         "seconds_per_edit": 1.0, "hparams": "h.yaml", "command": f"run {method}"}
    if ppl is not None:
        r["cap_heldout_text_word_perplexity_after"] = ppl
    return r


def test_losses_count_only_intervals_apart():
    report = _load("report")
    rows = [_row("locft-bf", 0.99, [0.98, 1.0], 0.44, [0.41, 0.47], ppl=30.0),
            _row("memit", 0.60, [0.55, 0.65], 0.85, [0.83, 0.87], ppl=25.0),
            _row("alphaedit", 0.30, [0.25, 0.35], 0.46, [0.43, 0.49])]
    text = report.losses(rows)
    assert text.split("\n\n") == [
        "LocFT-BF loses on locality (memit: zsre N=1000), on held-out word perplexity (memit: "
        "zsre N=1000). Everywhere else in these rows it is ahead, or behind by less than the "
        "intervals (seconds: by less than 10%).",
        "- zsre N=1000: memit locality 0.850 (0.830-0.870) vs LocFT-BF 0.440 (0.410-0.470) "
        "(intervals apart)\n"
        "- zsre N=1000: memit held-out word perplexity 25.0 vs LocFT-BF 30.0 (no intervals)",
        "Ahead of LocFT-BF within the intervals, or for seconds per edit within 10% (not "
        "losses): zsre N=1000 alphaedit locality 0.460 (0.430-0.490) vs 0.440 (0.410-0.470)."]
    # a tie alone is no loss; seconds per edit within 10% are the machine's load
    assert report.losses(rows[:1] + rows[2:]).startswith(
        "LocFT-BF loses nowhere in these rows by more than the intervals.\n\nAhead of")
    quicker = dict(rows[2], locality=0.40, seconds_per_edit=0.95)
    assert report.losses([rows[0], quicker]) == (
        "LocFT-BF loses nowhere in these rows by more than the intervals.\n\nAhead of "
        "LocFT-BF within the intervals, or for seconds per edit within 10% (not losses): "
        "zsre N=1000 alphaedit seconds per edit 0.950 vs 1.000.")
    assert "alphaedit: zsre N=1000" in report.losses(
        [rows[0], dict(quicker, seconds_per_edit=0.85)])
    # a row made with settings its YAML no longer holds says so, in the paragraph and below
    old = report.losses([rows[0], dict(rows[1], stale=True)]).split("\n\n")
    assert old[0].startswith("LocFT-BF loses on locality (memit: zsre N=1000 (old settings))")
    assert old[1].startswith("- zsre N=1000: memit (old settings) locality 0.850")
    doc = report.markdown(rows, "rows.jsonl", "benchmarks/plots", tuning="### memit\n")
    for part in ("## Edit quality", "| zsre | 1000 | memit | 0.600 (0.550-0.650) |",
                 "## Where LocFT-BF loses", "## The baselines' tuning (dev split)",
                 "![pareto_reliability_locality.png](plots/pareto_reliability_locality.png)",
                 "| zsre | 1000 | memit | `h.yaml` | - | - | - | `run memit` |"):
        assert part in doc, part
    assert report.losses(rows[:1]) == "- nowhere in these rows"


def test_seconds_of_a_row_that_read_its_vectors_are_marked_and_not_compared():
    """A row that read part of its target vectors from another row's run (the ZsRE N = 100
    row and the first call of N = 1,000) did not pay for them: its s/edit is starred,
    explained, left out of "where LocFT-BF loses" and of the seconds-per-edit plot."""
    report = _load("report")
    ref = _row("locft-bf", 0.99, [0.98, 1.0], 0.44, [0.41, 0.47])
    ref["seconds_per_edit"] = 2.0
    read = dict(_row("memit", 0.60, [0.55, 0.65], 0.40, [0.37, 0.43]),
                seconds_per_edit=0.5, targets_from_cache=100)
    paid = dict(_row("alphaedit", 0.30, [0.25, 0.35], 0.40, [0.37, 0.43]),
                seconds_per_edit=0.5)
    assert report.losses([ref, read, paid]).split("\n\n")[1:] == [
        "- zsre N=1000: alphaedit seconds per edit 0.500 vs LocFT-BF 2.000 (no intervals)"]
    cost = report.table([read, paid], report.COST)
    assert "| 0.500\\* |" in cost.splitlines()[2] and "| 0.500 |" in cost.splitlines()[3]
    assert report.READ_ELSEWHERE_NOTE in report.markdown([ref, read], "rows.jsonl")
    assert report.READ_ELSEWHERE_NOTE not in report.markdown([ref, paid], "rows.jsonl")
    # a peak measured with lm-eval's batched pass inside it (capability protocol 1) is marked
    old = dict(paid, capability_protocol=1, peak_rss_mb=7762.6)
    assert "| 7762.6† |" in report.table([old], report.COST)
    assert report.PEAK_WITH_PASS_NOTE in report.markdown([ref, old], "rows.jsonl")
    assert report.PEAK_WITH_PASS_NOTE not in report.markdown([ref, paid], "rows.jsonl")
    # a row made over several runs whose state did not keep their peaks: its last run's only
    last = dict(paid, runs=21, peak_rss_mb=1812.4)
    assert "| 1812.4‡ |" in report.table([last], report.COST)
    assert report.PEAK_LAST_RUN_NOTE in report.markdown([ref, last], "rows.jsonl")
    kept = dict(last, peak_rss_mb_all_runs=True)
    assert "| 1812.4 |" in report.table([kept], report.COST)
    assert report.PEAK_LAST_RUN_NOTE not in report.markdown([ref, kept], "rows.jsonl")


def test_rows_of_several_seeds_show_mean_and_spread(tmp_path):
    import json

    report = _load("report")
    rows = [dict(_row("locft-bf", rel, [rel - 0.01, rel + 0.01], 0.6, [0.5, 0.7]), seed=seed)
            for seed, rel in ((0, 0.97), (1, 0.99), (2, 0.98))]
    rows.append(_row("memit", 0.6, [0.55, 0.65], 0.85, [0.83, 0.87]))
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = {r["method"]: r for r in report.load_rows(path)}
    bf = got["locft-bf"]
    assert bf["seeds"] == [0, 1, 2] and "reliability_ci95" not in bf
    assert abs(bf["reliability"] - 0.98) < 1e-12 and abs(bf["reliability_sd"] - 0.01) < 1e-12
    assert "| zsre | 1000 | locft-bf | 0.980 ± 0.010 (3 seeds) |" in report.table([bf])
    assert "seeds" not in got["memit"]
    # a seed whose capability pass ran an older protocol is not averaged with the others
    rows[0]["capability_protocol"], rows[1]["capability_protocol"] = 1, 2
    rows[2]["capability_protocol"] = 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bf = {r["method"]: r for r in report.load_rows(path)}["locft-bf"]
    assert bf["seeds"] == [1, 2] and bf["capability_protocol"] == 2
    assert abs(bf["reliability"] - 0.985) < 1e-12


def test_markdown_goes_between_the_markers_of_an_existing_file(tmp_path):
    report = _load("report")
    doc = "# Title\n\nintro\n\n## Edit quality\n\n| t |\n"
    target = tmp_path / "RESULTS.md"
    target.write_text(f"# Results\n\n## Side by side\n\nkept\n{report.BEGIN}\nold\n"
                      f"{report.END}\n\n## Later\nkept too\n")
    report.write_markdown(target, doc)
    assert target.read_text() == (f"# Results\n\n## Side by side\n\nkept\n{report.BEGIN}\n"
                                  f"intro\n\n### Edit quality\n\n| t |\n{report.END}\n\n"
                                  "## Later\nkept too\n")
    fresh = tmp_path / "NEW.md"
    report.write_markdown(fresh, doc)
    assert fresh.read_text() == doc


def test_rows_still_to_run_name_what_is_missing_stale_or_unseeded():
    """A planned row counts only with lm-eval's capability pass, with the settings its YAML
    holds now, and one row per planned seed; the rest is listed with its command."""
    planned, run = _load("planned"), _load("run")
    shipped = "hparams/smollm2-135m.yaml"
    digest = run.settings_digest("locft-bf", str(run.REPO / shipped))

    def row(method, dataset, n, **kw):
        return {"method": method, "dataset": dataset, "n": n, "model": planned.MODEL,
                "hparams": shipped, "settings_sha256": digest, "capability_protocol": 2, **kw}

    rows = [row("locft-bf", "zsre", 1000),
            {k: v for k, v in row("locft-bf", "counterfact", 1000).items()
             if k != "capability_protocol"},  # made before lm-eval
            row("locft-bf", "wikibigedit", 1000, settings_sha256="0" * 12),  # YAML changed since
            row("locft-bf+kp0.003", "counterfact", 1000, capability_protocol=1),
            row("locft-bf", "zsre", 100, seed=0, overrides={"seed": 0}),
            row("locft-bf", "zsre", 100, seed=2, overrides={"seed": 2}),
            row("locft-bf+kp0.003", "zsre", 1000, base_method="locft-bf",
                overrides={"key_penalty_weight": 0.003, "null_space_energy": 0},
                settings_sha256=run.settings_digest(
                    "locft-bf", str(run.REPO / shipped),
                    {"key_penalty_weight": 0.003, "null_space_energy": 0}))]
    todo = {(d, n, m): (why, planned.command(d, n, m, seeds))
            for d, n, m, why, seeds in planned.still_to_run(rows)}
    assert ("zsre", 1000, "locft-bf") not in todo
    assert ("zsre", 1000, "locft-bf+kp0.003") not in todo
    assert todo[("counterfact", 1000, "locft-bf")][0] == \
        "its row predates the lm-eval capability pass"
    assert todo[("wikibigedit", 1000, "locft-bf")][0] == \
        "its row ran with settings its YAML no longer holds"
    assert todo[("zsre", 100, "locft-bf")] == (
        "seeds 1 still to run",
        "python benchmarks/run.py --methods locft-bf --datasets zsre --n 100 --threads 1 "
        "--seeds 1")
    assert todo[("counterfact", 1000, "locft-bf+kp0.003")][0].startswith(
        "its row ran an older capability protocol")
    assert todo[("counterfact", 1000, "locft-bf+kp0.003")][1].endswith(
        "--label locft-bf+kp0.003 --set key_penalty_weight=0.003 null_space_energy=0")
    assert todo[("zsre", 1000, "memit")] == (
        "no row yet", "$EASYEDIT_PY benchmarks/run.py --methods memit --datasets zsre --n 1000 "
        "--threads 1 --python $EASYEDIT_PY --max-minutes 100 --reuse-targets")
    assert todo[("zsre", 100, "rome")][1].endswith("--max-minutes 100")  # no vectors to share
    assert len(todo) == len(planned.PLANNED) + len(planned.SEEDS) - 2
    assert planned.markdown(rows).splitlines()[0].startswith(f"{len(todo)} of the ")
    assert planned.is_stale(rows[2]) and not planned.is_stale(rows[0])
    report = _load("report")
    assert "| wikibigedit | 1000 | locft-bf (old settings) |" in report.table(
        [dict(rows[2], stale=True)])


def test_hours_still_to_run_come_from_the_methods_earlier_rows():
    """A row's time: seconds per edit of the method's latest row on that dataset, else on any,
    else its slowest dev row that paid for its work, x N x seeds + the time after editing."""
    planned = _load("planned")
    m = planned.MODEL
    rows = [{"method": "memit", "dataset": "zsre", "n": 100, "model": m, "seconds_per_edit": 36.0},
            {"method": "memit", "dataset": "counterfact", "n": 100, "model": m,
             "seconds_per_edit": 18.0},
            {"method": "memit", "dataset": "counterfact", "n": 1000, "model": m,
             "seconds_per_edit": 2.0, "targets_from_cache": 100},  # not its whole cost
            {"method": "locft-bf", "dataset": "zsre", "n": 1000, "model": m,
             "seconds_per_edit": 1.8}]
    dev = [{"method": "rome@yaml", "base_method": "rome", "seconds_per_edit": 72.0,
            "offset": 1000, "n": 100},
           {"method": "rome@layers=[3]", "base_method": "rome", "seconds_per_edit": 36.0,
            "offset": 1000, "n": 100},
           {"method": "alphaedit@L2=10", "base_method": "alphaedit", "seconds_per_edit": 5.0,
            "targets_from_cache": 100}]  # read its vectors: says nothing of the cost
    assert planned.hours_needed("counterfact", 100, "memit", rows) == 0.5 + 5 / 60
    assert planned.hours_needed("wikibigedit", 1000, "memit", rows) == 5 + 35 / 60
    assert planned.hours_needed("wikibigedit", 100, "rome", rows, dev) == 2 + 5 / 60
    assert planned.hours_needed("zsre", 100, "alphaedit", rows, dev) is None
    assert planned.hours_needed("zsre", 100, "locft-bf", rows) == 3 * (0.05 + 5 / 60)  # seeds
    text = planned.markdown(rows, dev)
    assert "- wikibigedit N=100 rome: no row yet; ~2.1 h; waits: its tuning grid has 6 of 8 " \
        "rows to run. `" in text
    # paused at 75 of 100 calls (run.paused): a quarter of the edits are left
    stopped = {("rome", "wikibigedit", 100): {"method": "rome", "done": 75, "total": 100,
                                              "seconds": 5400.0}}
    assert planned.hours_needed("wikibigedit", 100, "rome", rows, dev,
                                progress=stopped[("rome", "wikibigedit", 100)]) == 0.5 + 5 / 60
    assert "- wikibigedit N=100 rome: no row yet; ~0.6 h (paused at 75 of 100 calls, 90 min " \
        "so far); waits: " in planned.markdown(rows, dev, stopped)
    # a row that has edited for OWN_PACE_SECONDS goes at its own pace (here 36 s/call, half the
    # slowest dev row's 72): 50 calls left of 100
    brisk = {"method": "rome", "done": 50, "total": 100, "seconds": 1800.0}
    assert planned.hours_needed("wikibigedit", 100, "rome", rows, dev, progress=brisk) \
        == 0.5 + 5 / 60
    assert planned.hours_needed("wikibigedit", 100, "rome", rows, dev,
                                progress=dict(brisk, seconds=1799.0)) == 1 + 5 / 60
    # ... but not a row whose first call may have read its target vectors (--reuse-targets)
    assert planned.hours_needed("counterfact", 100, "memit", rows,
                                progress=dict(brisk, method="memit")) == 0.25 + 5 / 60
    assert "- zsre N=100 alphaedit: no row yet; no row to estimate its time; waits: its " \
        "tuning grid has 8 of 8 rows to run. `" in text
    # a paused row with no other row to go by: its own pace so far (30 of 100 calls in
    # 35 min: 70 calls at 70 s) plus the time after editing
    paused = {"method": "alphaedit", "done": 30, "total": 100, "seconds": 2100.0}
    assert planned.hours_needed("zsre", 100, "alphaedit", rows, dev, progress=paused) == \
        70 * 70 / 3600 + 5 / 60
    assert planned.hours_needed("zsre", 100, "alphaedit", rows, dev,
                                progress=dict(paused, total=None)) is None
    assert text.splitlines()[-1].startswith("About ") and "rows with no estimate." in text


def test_rows_still_to_run_go_shortest_first_and_max_hours_keeps_the_short_ones():
    """planned.py --run (and its list) takes the rows expected to be shortest first, those with
    nothing to go by last; --max-hours keeps only the rows known to fit in it (session.sh runs
    those before the tuning grids, the longer ones after)."""
    planned = _load("planned")
    m = planned.MODEL
    rows = [{"method": "memit", "dataset": "zsre", "n": 100, "model": m, "seconds_per_edit": 36.0},
            {"method": "locft-bf", "dataset": "zsre", "n": 1000, "model": m,
             "seconds_per_edit": 1.8},
            {"method": "wise", "dataset": "zsre", "n": 100, "model": m, "seconds_per_edit": 70.0}]
    todo = planned.still_to_run(rows)
    timed = planned.shortest_first(todo, rows, [])
    order = [row for _, row in timed]
    hours = [planned.hours_needed(d, n, k, rows, [], seeds) for d, n, k, _, seeds in order]
    assert [h for h, _ in timed] == hours
    assert sorted(order) == sorted(todo)
    known = [h for h in hours if h is not None]
    assert known == sorted(known) and hours[:len(known)] == known  # None last
    assert order[0][:3] == ("counterfact", 100, "locft-bf")  # 1.8 s x 100 + 5 min
    # no row of the method anywhere (ROME, FT-M, ...): nothing to go by, last, in plan order
    unknown = [r for r in todo if planned.hours_needed(*r[:3], rows, [], r[4]) is None]
    assert order[len(known):] == unknown and ("zsre", 100, "rome") in [r[:3] for r in unknown]
    assert [r[:3] for r in order if r[2] == "wise"] == [("zsre", 1000, "wise"),
                                                         ("counterfact", 1000, "wise")]
    short = [row for _, row in planned.shortest_first(todo, rows, [], max_hours=2)]
    assert short == [r for r, h in zip(order, hours) if h is not None and h <= 2]
    assert ("zsre", 100, "memit") in [r[:3] for r in short]  # 1 h + 5 min
    assert ("zsre", 1000, "memit") not in [r[:3] for r in short]  # 10 h
    text = planned.markdown(rows)
    assert text.splitlines()[2].startswith("- counterfact N=100 locft-bf: no row yet; ~0.1 h. ")


def test_plots_draw_a_row_of_old_settings_hollow_and_apart(tmp_path, monkeypatch):
    """A row made with settings its YAML no longer holds (UltraEdit's N = 100 before its lr
    was tuned) is a hollow mark in the plots, not joined to the line of the method's rows of
    today's settings; one legend entry says what hollow means."""
    from pathlib import Path

    import matplotlib.figure

    report = _load("report")
    drawn, save = {}, matplotlib.figure.Figure.savefig

    def record(fig, path, **kw):
        drawn[Path(path).name] = (
            [[(ln.get_label(), list(ln.get_xdata()), ln.get_markerfacecolor())
              for ln in ax.lines] for ax in fig.axes],
            [t.get_text() for lg in fig.legends for t in lg.get_texts()])
        return save(fig, path, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    rows = [{"method": m, "dataset": "zsre", "n": n, "reliability": 0.5, "locality": loc,
             "seconds_per_edit": 1.0, "stale": stale}
            for m, n, loc, stale in (("locft-bf", 100, 0.7, False), ("locft-bf", 1000, 0.5, False),
                                     ("ultraedit", 100, 0.6, True),
                                     ("ultraedit", 1000, 0.2, False))]
    report.plots(rows, tmp_path)
    lines, legend = drawn["retention_vs_n.png"]
    locality = lines[0]  # the first panel: locality against N
    assert ("locft-bf", [100, 1000], "C0") in locality
    assert ("ultraedit", [1000], "C1") in locality  # today's settings: its own line
    assert ("_old", [100], "none") in locality  # hollow, alone
    assert legend == ["locft-bf", "ultraedit", report.OLD_SETTINGS]
    assert drawn["pareto_reliability_locality.png"][1][-1] == report.OLD_SETTINGS
    drawn.clear()  # a method with old-settings rows only still has its colour in the legend
    report.plots([r for r in rows if r["n"] == 100], tmp_path)
    assert drawn["retention_vs_n.png"][1] == ["locft-bf", "ultraedit", report.OLD_SETTINGS]
    assert drawn["seconds_per_edit_vs_n.png"][1] == ["locft-bf", "ultraedit",
                                                     report.OLD_SETTINGS]


def test_read_jsonl_skips_blank_lines_and_a_missing_file_is_empty(tmp_path):
    common = _load("common")
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert common.read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert common.read_jsonl(tmp_path / "none.jsonl") == []


def _dev_rows(method, grid, best):
    """One made-up dev row per setting of ``grid``; ``best`` scores highest."""
    tune = _load("tune_baselines")
    return [{"method": tune.label(method, o), "base_method": method, "offset": tune.DEV_OFFSET,
             "n": tune.DEV_N, "overrides": o, "reliability": 0.9 if o == best else 0.5,
             "generalization": 0.5, "locality": 0.5, "seconds_per_edit": 1.0} for o in grid]


def test_a_baselines_rows_wait_for_its_tuning_and_its_yaml():
    """Planned rows of a tuned baseline wait until every row of its dev grid has run and its
    YAML holds the chosen setting; LocFT's wait for nothing."""
    planned, tune = _load("planned"), _load("tune_baselines")
    grid = tune.GRIDS["ft-m"]
    assert planned.waits_for_tuning("locft-bf", []) is None
    assert planned.waits_for_tuning("locft-bf+kp0.003", []) is None
    assert planned.waits_for_tuning("ft-m", _dev_rows("ft-m", grid[:-1], {"layers": [26]})) \
        == f"its tuning grid has 1 of {len(grid)} rows to run"
    # the shipped FT-M YAML holds layers [26], its grid's choice
    assert planned.waits_for_tuning("ft-m", _dev_rows("ft-m", grid, {"layers": [26]})) is None
    assert planned.waits_for_tuning("ft-m", _dev_rows("ft-m", grid, {"lr": 1e-2})) == (
        "its YAML does not hold the chosen `ft-m@lr=0.01` yet (lr=0.01)")
    text = planned.markdown([], _dev_rows("ft-m", grid[:2], {}))
    assert "- zsre N=1000 ft-m: no row yet; ~0.9 h; waits: its tuning grid has 4 of " in text


def test_run_ready_passes_again_while_a_row_got_further(tmp_path, monkeypatch):
    """``planned.py --run`` goes over the rows again while a pass got one further (a row
    made, a paused row's progress moved): a row the other core held, or one that paused on
    --max-minutes, is taken again; a pass where nothing moved ends it."""
    import json
    import sys
    import types

    planned = _load("planned")
    # per dataset, what each call of its FT-M row does: "locked" (the other core runs it),
    # "paused" (a chunk more done), "made" (the row finished); past the list: nothing moves
    script = {"zsre": ["locked", "made"], "counterfact": ["paused", "paused"],
              "wikibigedit": ["locked"]}
    progress, calls = {}, []

    def main(argv):
        dataset = argv[argv.index("--datasets") + 1]
        calls.append(dataset)
        did = script[dataset].pop(0) if script[dataset] else "locked"
        if did == "paused":
            key = ("ft-m", dataset, 1000)
            done = progress.get(key, {"done": 0})["done"] + 1
            progress[key] = {"method": "ft-m", "done": done, "total": 100, "seconds": 60.0 * done}
        return [{"dataset": dataset}] if did == "made" else []

    monkeypatch.setitem(sys.modules, "run", types.SimpleNamespace(
        main=main, paused=lambda out: dict(progress)))
    rows, dev = tmp_path / "rows.jsonl", tmp_path / "tuning.jsonl"
    rows.write_text("")
    dev.write_text("".join(json.dumps(r) + "\n" for r in _dev_rows(
        "ft-m", _load("tune_baselines").GRIDS["ft-m"], {"layers": [26]})))
    made = planned.run_ready(rows, dev, "/venv/python", methods=["ft-m"])
    # pass 1: zsre locked, counterfact paused; pass 2: zsre made (the fake writes no row, so
    # it still counts as to run), counterfact paused; pass 3: nothing moves, zsre not run again
    assert sorted(calls) == ["counterfact"] * 3 + ["wikibigedit"] * 3 + ["zsre"] * 2
    assert made == [{"dataset": "zsre"}]
    assert progress[("ft-m", "counterfact", 1000)]["done"] == 2 and len(progress) == 1


def _queue_with_a_paused_ftm_row(tmp_path, monkeypatch, progress, minutes):
    """``planned.run_ready --until`` with ``minutes`` left over FT-M's planned rows, its ZsRE
    N = 1,000 row made at 60 s/edit and its CounterFact N = 1,000 row paused at ``progress``;
    ``{dataset: argv}`` of the rows it started (the fake ``run`` makes none)."""
    import json
    import sys
    import types

    planned = _load("planned")  # puts benchmarks/ on the path
    import tune_baselines  # the module run_ready imports

    calls = []
    stopped = {("ft-m", "counterfact", 1000): progress}
    monkeypatch.setitem(sys.modules, "run", types.SimpleNamespace(
        main=lambda argv: calls.append(argv) or [], paused=lambda out: dict(stopped)))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"method": "ft-m", "dataset": "zsre", "n": 1000,
                                "model": planned.MODEL, "seconds_per_edit": 60.0}) + "\n")
    dev = tmp_path / "tuning.jsonl"
    dev.write_text("".join(json.dumps(r) + "\n" for r in _dev_rows(
        "ft-m", _load("tune_baselines").GRIDS["ft-m"], {"layers": [26]})))
    monkeypatch.setattr(tune_baselines, "deadline", lambda hhmm, now: now + minutes * 60)
    planned.run_ready(rows, dev, "/venv/python", until="HH:MM", methods=["ft-m"])
    return {a[a.index("--datasets") + 1]: a for a in calls}


def _budget(argv) -> float:
    return float(argv[argv.index("--max-minutes") + 1])


def test_run_ready_times_a_paused_rows_piece_at_its_own_pace(tmp_path, monkeypatch):
    """``--until``: a paused row that has edited for OWN_PACE_SECONDS is timed at its own pace
    (30 s/edit here), not at its method's other row (60 s/edit): its 10 unbroken edits need
    5 min, so with 24 min left it starts and pauses in time (24 - 15 - 5); a row of the same
    method with nothing of its own (10 min + 15) does not start."""
    started = _queue_with_a_paused_ftm_row(tmp_path, monkeypatch, {
        "method": "ft-m", "done": 100, "total": 1000, "seconds": 3000.0}, 24)
    assert list(started) == ["counterfact"]
    assert 3.5 <= _budget(started["counterfact"]) <= 4


def test_a_pieces_minutes_follow_the_latest_calls_and_the_last_adds_its_scoring():
    """``planned.fit``: AlphaEdit's ZsRE N = 1,000 row at 9 of 10 calls, its N = 100 row's
    pace 28.5 s/edit (47.5 min a call) but its latest call 80 min: the last call is timed at
    80 min plus 35 min of scoring, and --max-minutes leaves room for both; two calls left, the
    next one is timed alone, and the scoring counts only where the run may reach the last
    and score it; where it may not, the run holds the last piece back (--hold-last)."""
    planned = _load("planned")
    late = {"method": "alphaedit", "done": 9, "total": 10, "seconds": 30000.0,
            "last_step_seconds": 4800.0}
    assert planned.latest_pace(late, 1000) == 48.0
    assert planned.fit(1000, "alphaedit", 28.5, late, 1, 150) == (115.0, 20.0, False)
    no_latest = dict(late, last_step_seconds=None)  # a state saved before it was recorded
    assert planned.fit(1000, "alphaedit", 28.5, no_latest, 1, 150) == (82.5, 52.5, False)
    two_left = dict(late, done=8)
    assert planned.fit(1000, "alphaedit", 28.5, two_left, 1, 150) == (80.0, 55.0, True)
    assert planned.fit(1000, "alphaedit", 28.5, two_left, 1, 300) == (80.0, 170.0, False)
    assert planned.fit(1000, "ft-m", 60.0, None, 1, 60) == (10.0, 35.0, True)  # 100 pieces left
    assert planned.fit(100, "locft-bf", 2.4, None, 3, 60) == (27.0, 18.0, False)  # 3 x (4 + 5)


def test_near_the_end_a_run_edits_up_to_its_last_piece_and_holds_that_back(tmp_path,
                                                                            monkeypatch):
    """A paused FT-M row at 950 of 1,000 edits, 30 s/edit (5 pieces of 10 edits, 5 min
    each): with 60 min left the last piece's 35 min of scoring do not fit after the first
    four (60 - 15 - 5 = 40 < 20 + 35), so the run keeps all 40 min for editing and pauses
    before the last piece (--hold-last), where taking the scoring off the budget left 5 min:
    one piece; with 80 min left it may reach the last piece and score (60 - 35 = 25 >= 20)."""
    near = {"method": "ft-m", "done": 950, "total": 1000, "seconds": 28500.0}
    started = _queue_with_a_paused_ftm_row(tmp_path, monkeypatch, near, 60)
    assert "--hold-last" in started["counterfact"]
    assert 39.5 <= _budget(started["counterfact"]) <= 40
    started = _queue_with_a_paused_ftm_row(tmp_path, monkeypatch, near, 80)
    assert "--hold-last" not in started["counterfact"]
    assert 24.5 <= _budget(started["counterfact"]) <= 25


def test_run_ready_times_a_paused_rows_piece_by_its_latest_calls(tmp_path, monkeypatch):
    """A paused FT-M row at 30 s/edit so far whose latest edits took 90 s each: its 10
    unbroken edits need 15 min, so with 24 min left it does not start (at its pace so far,
    5 min, it would), nor do the rows with nothing of their own (10 min + 15); with 40 min
    left it starts and pauses in time (40 - 15 - 15)."""
    late = {"method": "ft-m", "done": 100, "total": 1000, "seconds": 3000.0,
            "last_step_seconds": 90.0}
    assert _queue_with_a_paused_ftm_row(tmp_path, monkeypatch, late, 24) == {}
    started = _queue_with_a_paused_ftm_row(tmp_path, monkeypatch, late, 40)
    assert 9.5 <= _budget(started["counterfact"]) <= 10


def test_run_ready_starts_what_fits_before_the_deadline(tmp_path, monkeypatch):
    """``planned.py --run --until``: rows that wait for tuning are left; a row that cannot
    pause starts only if all of it fits; a pausable one gets --max-minutes to stop in time."""
    import json
    import sys
    import types

    planned = _load("planned")
    calls = []
    monkeypatch.setitem(sys.modules, "run", types.SimpleNamespace(
        main=lambda argv: calls.append(argv) or [], paused=lambda out: {}))
    m = planned.MODEL
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in [
        {"method": "locft-bf", "dataset": "zsre", "n": 1000, "model": m,
         "seconds_per_edit": 2.4},  # 40 min + 35 after: 75 min unbroken
        {"method": "ft-m", "dataset": "zsre", "n": 1000, "model": m, "seconds_per_edit": 60.0}]))
    dev = tmp_path / "tuning.jsonl"
    dev.write_text("".join(json.dumps(r) + "\n" for r in _dev_rows(
        "ft-m", _load("tune_baselines").GRIDS["ft-m"], {"layers": [26]})))
    import tune_baselines  # the module run_ready imports (benchmarks/ is on the path now)

    # 60 min left before the deadline, whatever the time of day (HH:MM past midnight would
    # name a time already gone today)
    monkeypatch.setattr(tune_baselines, "deadline", lambda hhmm, now: now + 3600)
    planned.run_ready(rows, dev, "/venv/python", until="HH:MM", methods=["locft-bf", "ft-m"])
    by_row = {(a[a.index("--datasets") + 1], a[a.index("--n") + 1],
               a[a.index("--label") + 1] if "--label" in a else a[1]): a for a in calls}
    assert ("zsre", "1000", "locft-bf") not in by_row  # 75 + 15 min do not fit in 60
    assert ("wikibigedit", "1000", "locft-bf") not in by_row  # no row yet: as fast as zsre's
    assert ("counterfact", "100", "locft-bf") in by_row  # 4 min + 5 after + 15
    assert ("zsre", "1000", "locft-bf+kp0.003") in by_row  # its base method's label
    ftm = by_row[("zsre", "1000", "ft-m")]  # pauses every 10 edits (10 min)
    assert ftm[ftm.index("--python") + 1] == "/venv/python" and ftm[-2:] == ["--out", str(rows)]
    assert 34.5 <= float(ftm[ftm.index("--max-minutes") + 1]) <= 35  # 60 - 15 - 10
    assert not any(a[1] == "memit" for a in calls)  # not asked for (and not tuned)
    calls.clear()
    planned.run_ready(rows, dev, "/venv/python", methods=["memit", "rome"])
    assert calls == []  # their grids have rows to run
