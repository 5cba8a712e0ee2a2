"""The baselines' tuning rule and report (benchmarks/tune_baselines.py), on made-up rows."""
import json

import pytest

from test_benchmarks import _load


@pytest.fixture(scope="module")
def tune():
    return _load("tune_baselines")


# AlphaEdit's z settings before its grid chose MEMIT's (tune_baselines --apply, 2026-12-04)
ALPHAEDIT_UNTUNED = {"clamp_norm_factor": 0.75, "v_lr": 0.1, "v_weight_decay": 0.5}


@pytest.fixture
def untuned_alphaedit(tune, tmp_path, monkeypatch):
    """AlphaEdit's shipped YAML with its z settings as they were before tuning, in place of
    the shipped one for every reader (``baselines.easyedit_yaml``): the cases below need an
    AlphaEdit YAML whose target vectors differ from MEMIT's YAML's, which ``--apply`` may undo
    in the shipped file (it did: the chosen row has MEMIT's z settings)."""
    import yaml

    import baselines  # on sys.path once tune_baselines is loaded

    shipped = baselines.easyedit_yaml
    cfg = {**yaml.safe_load(shipped("alphaedit").read_text()), **ALPHAEDIT_UNTUNED}
    path = tmp_path / "alphaedit_smollm2-135m.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setattr(baselines, "easyedit_yaml",
                        lambda method: path if method == "alphaedit" else shipped(method))


def _row(method, overrides, rel, gen, loc, spe, offset=1000, n=100):
    return {"method": method, "base_method": method.split("@")[0], "overrides": overrides,
            "offset": offset, "n": n, "reliability": rel, "generalization": gen,
            "locality": loc, "seconds_per_edit": spe}


def test_the_deadline_is_the_nearest_hh_mm(tune):
    """--until HH:MM names the nearest such time: later today, past today (nothing starts),
    or after midnight for a session that crosses it."""
    from datetime import datetime

    def at(day, hh, mm):
        return datetime(2026, 12, day, hh, mm).timestamp()

    assert tune.deadline("18:30", at(3, 15, 40)) == at(3, 18, 30)
    assert tune.deadline("15:00", at(3, 15, 5)) == at(3, 15, 0)  # gone: nothing fits
    assert tune.deadline("01:40", at(3, 23, 0)) == at(4, 1, 40)
    assert tune.deadline("23:50", at(4, 0, 10)) == at(3, 23, 50)


def test_speeds_within_the_machines_noise_tie_and_the_fewest_moved_settings_win(tune):
    """AlphaEdit's grid of 2026-12-03 evening: clamp_norm_factor 4 / v_weight_decay 1e-3
    scored the YAML's exactly, in 47.7 vs 52.3 s/edit of the same amount of work (within
    SPEED_NOISE, 10%): the YAML wins; a row faster by more than that still wins."""
    yaml = _row("alphaedit@yaml", {}, 0.347, 0.303, 0.879, 52.25)
    clamp = _row("alphaedit@clamp_norm_factor=4,v_weight_decay=0.001",
                 {"clamp_norm_factor": 4, "v_weight_decay": 0.001}, 0.347, 0.303, 0.879, 47.68)
    assert tune.choose([yaml, clamp]) is yaml
    quick = dict(clamp, seconds_per_edit=45.0)  # 14% faster
    assert tune.choose([yaml, quick]) is quick
    other = _row("alphaedit@L2=10", {"L2": 10}, 0.347, 0.303, 0.879, 50.0)
    assert tune.choose([clamp, other]) is other  # one setting moved, not two


def test_labels_name_the_knobs(tune):
    assert tune.label("memit", {}) == "memit@yaml"
    assert tune.label("memit", {"v_lr": 0.1, "layers": [2, 3]}) == "memit@layers=[2,3],v_lr=0.1"


def test_rule_best_mean_then_fastest_among_ties(tune, tmp_path):
    rows = [_row("memit@yaml", {}, 0.6, 0.5, 0.8, 27.0),              # 0.633
            _row("memit@v_lr=0.1", {"v_lr": 0.1}, 0.9, 0.7, 0.7, 30.0),  # 0.767
            _row("memit@L=1", {"L": 1}, 0.9, 0.69, 0.7, 20.0),          # 0.763: tied, faster
            _row("memit@x=1", {"x": 1}, 1.0, 1.0, 1.0, 1.0, offset=0),  # evaluation: ignored
            _row("ft-m@yaml", {}, 0.4, 0.3, 0.2, 2.0)]
    path = tmp_path / "tuning.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = tune.load_rows(path)
    assert sorted(got) == ["ft-m", "memit"] and len(got["memit"]) == 3
    assert tune.choose(got["memit"])["method"] == "memit@L=1"
    text = tune.report(path)
    assert "chosen: `memit@L=1` (`--set L=1`)" in text
    assert "chosen: `ft-m@yaml` (the shipped YAML)" in text
    assert "| v_lr=0.1 | 0.900 | 0.700 | 0.700 | 0.767 | 30.00 |  |" in text


def test_every_grid_starts_from_the_shipped_yaml_and_names_real_keys(tune):
    import yaml

    for method, grid in tune.GRIDS.items():
        assert grid[0] == {}
        shipped = yaml.safe_load((tune.HERE / "easyedit_hparams" /
                                  f"{method}_smollm2-135m.yaml").read_text())
        for overrides in grid[1:]:
            assert set(overrides) <= set(shipped), (method, overrides)


def test_a_row_that_cannot_finish_before_until_is_not_started(tune, tmp_path, monkeypatch,
                                                            untuned_alphaedit):
    """--until: a one-call MEMIT row starts only if its like rows' longest editing + 15 min
    fits (a row reading the YAML row's vectors is like the rows that read them); WISE rows
    (they pause) get --max-minutes 15 min short of it."""
    import sys
    import types

    yaml = dict(_row("memit@yaml", {}, 0.6, 0.4, 0.8, 40.0), seconds=4000.0)   # 67 min
    cached = dict(_row("memit@mom2_update_weight=1500", {"mom2_update_weight": 1500},
                       0.6, 0.4, 0.8, 9.0), seconds=900.0, targets_from_cache=100)  # 15 min
    rows = [yaml, cached]
    assert tune.minutes_needed("memit", {"mom2_update_weight": 50000}, rows) == 30.0
    assert tune.minutes_needed("memit", {"v_lr": 0.1}, rows) == 4000 / 60 + 15
    assert tune.minutes_needed("alphaedit", {}, []) is None
    # no dev row yet: its evaluation rows of 100 edits; the first row reading vectors: unknown
    elsewhere = [{"method": "alphaedit", "n": 100, "seconds": 3000.0}]
    assert tune.minutes_needed("alphaedit", {}, [], elsewhere) == 50 + 15
    assert tune.minutes_needed("memit", {"mom2_update_weight": 500}, [yaml], elsewhere) is None
    # the vectors are not on this machine (a new one): the row pays, like the YAML row
    assert tune.minutes_needed("memit", {"mom2_update_weight": 50000}, rows,
                               cached=False) == 4000 / 60 + 15
    path = tmp_path / "tuning.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # AlphaEdit has no dev row: its 100-edit evaluation row (40 min) says its YAML row's time
    (tmp_path / "edit_quality.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"method": "alphaedit", "n": 100, "seconds": 2400.0},
        {"method": "alphaedit", "n": 1000, "seconds": 24000.0}]))
    assert tune.evaluation_rows(tmp_path / "edit_quality.jsonl", "alphaedit") == [
        {"method": "alphaedit", "n": 100, "seconds": 2400.0}]
    calls = []
    fake = types.SimpleNamespace(
        baselines=types.SimpleNamespace(easyedit_available=lambda python: None),
        main=lambda argv: calls.append(argv) or [], paused=lambda out: {})
    monkeypatch.setitem(sys.modules, "run", fake)
    monkeypatch.setattr(tune, "GRIDS", {**tune.GRIDS, "memit": [
        {}, {"mom2_update_weight": 1500}, {"mom2_update_weight": 50000}, {"v_lr": 0.1}]})
    # 44.5 min left, whatever the time of day (HH:MM past midnight names a time gone today)
    monkeypatch.setattr(tune, "deadline", lambda hhmm, now: now + 44.5 * 60)
    until = "HH:MM"
    argv = ["--methods", "memit", "alphaedit", "wise", "--out", str(path), "--until", until]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tune.main(argv)  # no vectors on this machine: every MEMIT row would pay (67 + 15 min)
    # WISE's rows that read a trained memory wait for the row training it (none finished)
    trains = [tune.label("wise", o) for o in tune.GRIDS["wise"] if not set(o) & {"act_ratio"}]
    # yaml and 1500 are done: not run again
    assert [a[a.index("--label") + 1] for a in calls] == trains
    calls.clear()
    (tmp_path / "cache" / "locft_easyedit" / "easyedit_targets" / "0123").mkdir(parents=True)
    tune.main(argv)
    labels = [a[a.index("--label") + 1] for a in calls]
    # 50000 fits (30 min); v_lr (82) does not; nor does any AlphaEdit row that computes its
    # vectors (55 min each: its evaluation row of 100 edits took 40), but the one with MEMIT's
    # YAML z settings reads memit@yaml's vectors: like a MEMIT row that read them (30 min)
    memits = tune.label("alphaedit", {"clamp_norm_factor": 4, "v_lr": 0.5,
                                      "v_weight_decay": 1e-3})
    assert labels == ["memit@mom2_update_weight=50000", memits] + trains
    wise_minutes = [float(a[a.index("--max-minutes") + 1]) for a in calls[2:]]
    assert all(28 < m <= 30 for m in wise_minutes)


def test_an_alphaedit_row_with_memits_z_settings_is_timed_as_one_reading_its_vectors(
        tune, untuned_alphaedit):
    """AlphaEdit's compute_z is MEMIT's (target_cache.Z_AS): its row with the z settings of
    MEMIT's YAML reads the MEMIT YAML row's vectors, so --until times it like the rows that
    read vectors (its own, else MEMIT's), not like one that computes them."""
    memit, alpha = tune.z_settings("memit", {}), tune.z_settings("alphaedit", {})
    same = {k: v for k, v in memit.items() if alpha.get(k) != v}
    assert same and memit != alpha and tune.z_settings("alphaedit", same) == memit
    assert tune.z_settings("wise", {}) is None
    memit_yaml = dict(_row("memit@yaml", {}, 0.6, 0.4, 0.8, 40.0), seconds=4000.0)
    memit_read = dict(_row("memit@L=1", {"mom2_update_weight": 1}, 0.6, 0.4, 0.8, 9.0),
                      seconds=1500.0, targets_from_cache=100)
    alpha_yaml = dict(_row("alphaedit@yaml", {}, 0.3, 0.3, 0.9, 50.0), seconds=5000.0)
    alpha_read = dict(_row("alphaedit@L2=10", {"L2": 10}, 0.3, 0.3, 0.9, 8.0), seconds=900.0,
                      targets_from_cache=100)
    assert tune.minutes_needed("alphaedit", same, [alpha_yaml]) == 5000 / 60 + 15
    assert tune.minutes_needed("alphaedit", same, [alpha_yaml, alpha_read],
                               others=[memit_yaml, memit_read]) == 900 / 60 + 15
    # no AlphaEdit row read vectors yet: as long as MEMIT's that did
    assert tune.minutes_needed("alphaedit", same, [alpha_yaml],
                               others=[memit_yaml, memit_read]) == 1500 / 60 + 15
    # a MEMIT row that read its vectors computed nothing; other z settings share nothing
    assert tune.minutes_needed("alphaedit", same, [alpha_yaml],
                               others=[dict(memit_yaml, targets_from_cache=100)]) == 5000 / 60 + 15
    assert tune.minutes_needed("alphaedit", {"v_lr": 0.7}, [alpha_yaml],
                               others=[memit_yaml]) == 5000 / 60 + 15
    assert tune.minutes_needed("alphaedit", same, [alpha_yaml], others=[memit_yaml],
                               cached=False) == 5000 / 60 + 15  # a new machine


def test_a_row_reading_an_unfinished_rows_work_waits_for_it(tune):
    """Two cores on one grid: a row that would read the target vectors / side memory of an
    earlier row waits while that row has not finished (else it would compute them itself)."""
    grid = tune.GRIDS["memit"]
    yaml = _row("memit@yaml", {}, 0.6, 0.4, 0.8, 40.0)
    assert tune.unfinished_payer("memit", {"mom2_update_weight": 1500}, []) == "memit@yaml"
    assert tune.unfinished_payer("memit", {"mom2_update_weight": 1500}, [yaml]) is None
    assert tune.unfinished_payer("memit", {"v_lr": 0.1}, []) is None  # it pays
    assert tune.unfinished_payer("memit", {}, []) is None
    assert tune.unfinished_payer("wise", {"n_iter": 15, "act_ratio": 0.7}, []) == \
        "wise@n_iter=15"
    assert tune.unfinished_payer("ft-m", {"lr": 1e-3}, []) is None  # nothing is shared
    assert grid[1] == {"mom2_update_weight": 1500}


def test_the_report_lists_the_grid_rows_still_to_run_with_their_minutes(tune, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setattr(tune, "GRIDS", {"memit": [{}, {"mom2_update_weight": 500},
                                                  {"v_lr": 0.1}],
                                        "wise": [{}, {"act_ratio": 0.7}]})
    rows = [dict(_row("memit@yaml", {}, 0.6, 0.4, 0.8, 36.0), seconds=3600.0)]
    path = tmp_path / "tuning.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert tune.report(path).splitlines()[-1] == (
        "Grid rows still to run (4, about 1.2 hours of one core besides 3 with no estimate): "
        "`memit@mom2_update_weight=500` (no estimate), `memit@v_lr=0.1` ~75 min, "
        "`wise@yaml` (no estimate), `wise@act_ratio=0.7` (no estimate).")
    # once a row has read vectors, a row whose payer is still to run (earlier in the grid)
    # counts as one that reads: v_lr 0.1 pays (75 min), v_lr 0.1 with 500 reads its (30)
    rows.append(dict(_row("memit@mom2_update_weight=500", {"mom2_update_weight": 500},
                          0.6, 0.4, 0.8, 9.0), seconds=900.0, targets_from_cache=100))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setitem(tune.GRIDS, "memit", [
        {}, {"mom2_update_weight": 500}, {"v_lr": 0.1},
        {"v_lr": 0.1, "mom2_update_weight": 500}])
    assert tune.report(path).splitlines()[-1] == (
        "Grid rows still to run (4, about 1.8 hours of one core besides 2 with no estimate): "
        "`memit@v_lr=0.1` ~75 min, `memit@mom2_update_weight=500,v_lr=0.1` ~30 min, "
        "`wise@yaml` (no estimate), `wise@act_ratio=0.7` (no estimate).")
    # a paused row (its state beside the rows, read back from its folder's name) counts the
    # part it has left: 1 of 4 calls done, so 3/4 of 75 min
    from test_benchmarks import _load

    run = _load("run")
    monkeypatch.delenv(run.STATE_DIR, raising=False)

    def pause(name, method, done, total, seconds):
        folder = run.state_folder(path, name, tune.DEV_DATASET, tune.DEV_N,
                                  "embedded:smollm2-135m", "d1g35t_1000_None")
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps(
            {"method": method, "chunks_done": done, "chunks_total": total, "seconds": seconds}))
        return tune.report(path).splitlines()[-1]

    paused_memit = "`memit@v_lr=0.1` ~56 min (paused at 1 of 4 calls, 20 min so far), " \
        "`memit@mom2_update_weight=500,v_lr=0.1` ~30 min, "
    assert pause("memit@v_lr=0.1", "memit", 1, 4, 1200.0) == (
        "Grid rows still to run (4, about 1.4 hours of one core besides 2 with no estimate): "
        + paused_memit + "`wise@yaml` (no estimate), `wise@act_ratio=0.7` (no estimate).")
    # a paused row with no finished row of its method to go by: its own pace so far
    # (20 of 100 edits in 10 min: 40 min for the 80 left) plus the 15-minute margin
    assert pause(tune.label("wise", {}), "wise", 20, 100, 600.0) == (
        "Grid rows still to run (4, about 2.4 hours of one core besides 1 with no estimate): "
        + paused_memit + "`wise@yaml` ~55 min (paused at 20 of 100 edits, 10 min so far), "
        "`wise@act_ratio=0.7` (no estimate).")


def test_the_easyedit_venv_script_refuses_a_folder_that_is_not_easyedit(tmp_path):
    """benchmarks/easyedit_venv.sh checks its source argument before it makes anything."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "easyedit_venv.sh"
    (tmp_path / "requirements.txt").write_text("torch\n")  # but no easyeditor/
    out = subprocess.run(["bash", str(script), str(tmp_path), str(tmp_path / "venv")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "usage:" in out.stderr and "easyeditor/" in out.stderr
    assert not (tmp_path / "venv").exists()


def test_the_session_script_refuses_bad_arguments_and_a_python_without_easyedit(tmp_path):
    """benchmarks/session.sh (one core's queue) checks its arguments and that the EasyEdit
    interpreter imports easyeditor before it starts any row."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "session.sh"
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")  # imports nothing
    fake.chmod(0o755)
    for args, says in (([], "usage:"), (["x", "18:00", str(fake)], "usage:"),
                       (["0", "6pm", str(fake)], "usage:"),
                       (["0", "18:00", str(fake), str(tmp_path)], "cannot import easyeditor")):
        out = subprocess.run(["bash", str(script), *args], capture_output=True, text=True)
        assert out.returncode == 2 and says in out.stderr, (args, out.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python"]  # no row, no file


def test_the_session_script_runs_short_rows_then_the_grids_then_the_long_rows(tune, tmp_path):
    """benchmarks/session.sh, shortest work first: the planned rows of at most 2 h, the grids
    (MEMIT's and AlphaEdit's rows, which cannot pause, before ROME's and WISE's, which fill
    what is left), then the longer planned rows; each pinned to the core and timed by --until."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("taskset") is None:
        pytest.skip("no taskset here")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "session.sh"
    log = tmp_path / "calls"
    for name in ("python", "easyedit"):  # record each call instead of running it
        fake = tmp_path / name
        fake.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
        fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", str(script), "0", "21:20", str(tmp_path / "easyedit"),
                          str(tmp_path)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    calls = [c.split() for c in log.read_text().splitlines()]
    assert calls[0][0] == "easyedit" and calls[0][1] == "-c"  # can it import easyeditor?
    # the embedded model converted by the main environment (the venv's transformers reads
    # its tokenizer wrongly), before any row
    assert calls[1][:2] == ["python", "-c"] and "default_model_dir()" in " ".join(calls[1])
    short, grids, long = calls[2:]
    assert short[:2] == ["python", "benchmarks/planned.py"] and "--run" in short
    assert short[short.index("--max-hours") + 1] == "2"
    assert grids[:2] == ["easyedit", "benchmarks/tune_baselines.py"]
    methods = grids[grids.index("--methods") + 1:grids.index("--threads")]
    assert sorted(methods) == sorted(tune.GRIDS) and \
        max(methods.index("memit"), methods.index("alphaedit")) < \
        min(methods.index("rome"), methods.index("wise"))
    assert long[:2] == ["python", "benchmarks/planned.py"] and "--max-hours" not in long
    for call in (short, grids, long):
        assert call[call.index("--until") + 1] == "21:20"
        assert call[call.index("--threads") + 1] == "1"


def test_rows_computing_the_same_vectors_tie_at_one_speed_and_the_yaml_wins(tune):
    """AlphaEdit's grid of 2026-12-03: the YAML row and mom2_n_samples 200000 computed the
    same target vectors (47.8 vs 52.3 s/edit: the machine's load, not the setting); they and
    a row that read those vectors count as equally fast, and the YAML (nothing moved) wins
    the tie; a setting whose vectors cost less still wins on speed."""
    yaml = _row("alphaedit@yaml", {}, 0.347, 0.303, 0.879, 52.25)
    more = _row("alphaedit@mom2_n_samples=200000", {"mom2_n_samples": 200000},
                0.348, 0.307, 0.873, 47.79)
    read = dict(_row("alphaedit@L2=10", {"L2": 10}, 0.35, 0.30, 0.88, 16.0),
                targets_from_cache=100)
    rows = [more, read, yaml]
    assert [tune.speed(r, rows) for r in rows] == [52.25, 52.25, 52.25]
    assert tune.choose(rows) is yaml
    cheaper = _row("alphaedit@v_num_grad_steps=12", {"v_num_grad_steps": 12},
                   0.347, 0.303, 0.877, 30.0)
    assert tune.choose(rows + [cheaper]) is cheaper


def test_apply_writes_the_choice_into_a_copy_of_the_yaml(tune, tmp_path):
    """--apply: the chosen values replace their lines (comments kept), a comment with the dev
    scores goes above the first key, the rest of the file is unchanged; a second apply does
    nothing; a grid with rows to run is refused."""
    import yaml

    from test_benchmarks import REPO

    def grid_rows(method, best):
        return [_row(tune.label(method, o), o, 0.9 if o == best else 0.5, 0.5, 0.5, 10.0)
                for o in tune.GRIDS[method]]

    path = tmp_path / "tuning.jsonl"
    for method, best, key, line in (
            # a grid value the shipped YAML does not hold (it holds the chosen 1500 now)
            ("memit", {"mom2_update_weight": 500}, "mom2_update_weight",
             "mom2_update_weight: 500"),
            # (its act_margin [10, 100, 50] and act_ratio 0.7 are the chosen ones now)
            ("wise", {"n_iter": 15}, "n_iter", "n_iter: 15")):
        shipped = REPO / "benchmarks" / "easyedit_hparams" / f"{method}_smollm2-135m.yaml"
        copy = tmp_path / shipped.name
        copy.write_text(shipped.read_text())
        path.write_text("".join(json.dumps(r) + "\n" for r in grid_rows(method, best)))
        said = tune.apply_choice(method, path, copy, today=__import__("datetime").date(2026, 12, 4))
        assert said == f"{method}: wrote {key}={best[key]} into {copy}"
        text = copy.read_text()
        assert line in text.splitlines()
        assert yaml.safe_load(text) == {**yaml.safe_load(shipped.read_text()), **best}
        assert tune.yaml_settings(copy)["v_lr" if method == "memit" else "edit_lr"] in (0.5, 0.9)
        note = [x for x in text.splitlines() if x.startswith("# ")]
        joined = " ".join(x[2:] for x in note)
        assert (f"Tuned (issue 16, benchmarks/tune_baselines.py --apply, rule in its docstring; "
                f"dev split ZsRE records 1000-1099, N=100, 2026-12-04): {key} ") in joined
        assert "(rel / gen / loc 0.900 / 0.500 / 0.500, mean 0.633) over (mean of the three): " \
               "yaml 0.500;" in joined
        # one note (an earlier apply's is replaced), the rest of the file as shipped but the key
        assert sum(x.startswith(tune.TUNED_NOTE) for x in text.splitlines()) == 1
        rest = tune.without_tuned_note(text.splitlines())
        was = tune.without_tuned_note(shipped.read_text().splitlines())
        assert len(rest) == len(was)
        assert [a for a, b in zip(rest, was) if a != b] == [line]
        assert tune.apply_choice(method, path, copy) == \
            f"{method}: {copy.name} already holds the chosen `{tune.label(method, best)}`"
    # UltraEdit's YAML holds lr 3e-5, its chosen row says --set lr=3e-05 (a string to YAML):
    # both are what EasyEdit reads as 3e-05; nothing to write
    rows = grid_rows("ultraedit", {"lr": 3e-5})
    for r in rows:
        r["overrides"] = {k: json.dumps(v) for k, v in r["overrides"].items()}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shipped = REPO / "benchmarks" / "easyedit_hparams" / "ultraedit_smollm2-135m.yaml"
    copy = tmp_path / shipped.name
    copy.write_text(shipped.read_text())
    assert tune.apply_choice("ultraedit", path, copy).endswith("already holds the chosen "
                                                                "`ultraedit@lr=3e-05`")
    assert copy.read_text() == shipped.read_text()
    assert tune.yaml_value(3e-5) == "3.0e-05" and yaml.safe_load("x: 3.0e-05")["x"] == 3e-5
    assert tune.yaml_value(0.5) == "0.5" and tune.yaml_value([10.0, 1.0]) == "[10.0, 1.0]"
    path.write_text(json.dumps(grid_rows("memit", {})[0]) + "\n")
    with pytest.raises(SystemExit, match="memit: the grid has 11 rows to run"):
        tune.apply_choice("memit", path, copy)


def test_romes_v_rows_follow_memits_same_change(tune, tmp_path):
    """FOLLOWS: a v_* row of ROME's waits until MEMIT's YAML row and its row of the same change
    have run, then runs only if that change scored above MEMIT's YAML by more than TIE; the
    layer rows never wait; the rows left out leave the grid (and so its rows-to-run count) and
    are named in the report."""
    memit = [_row("memit@yaml", {}, 0.569, 0.397, 0.796, 47.0),                       # 0.587
             _row("memit@v_lr=0.1", {"v_lr": 0.1}, 0.289, 0.260, 0.927, 52.0),        # 0.492
             _row("memit@clamp_norm_factor=10", {"clamp_norm_factor": 10},
                  0.590, 0.410, 0.800, 47.0),                                           # 0.600
             _row("memit@v_weight_decay=0.5", {"v_weight_decay": 0.5},
                  0.571, 0.399, 0.797, 47.0)]                                           # 0.589
    every = {"memit": memit}
    assert tune.skipped("rome", every) == {
        "rome@v_lr=0.1": "`memit@v_lr=0.1` scored 0.492, not above `memit@yaml` 0.587 by "
                         "more than 0.005",
        "rome@v_weight_decay=0.5": "`memit@v_weight_decay=0.5` scored 0.589, not above "
                                   "`memit@yaml` 0.587 by more than 0.005"}
    assert tune.waits_for_lead("rome", {"v_num_grad_steps": 50}, every) == \
        "memit@v_num_grad_steps=50"
    assert tune.waits_for_lead("rome", {"clamp_norm_factor": 10}, every) is None  # it runs
    assert tune.waits_for_lead("rome", {"layers": [3]}, every) is None
    assert tune.waits_for_lead("rome", {"v_lr": 0.1}, {}) == "memit@yaml"
    assert tune.skipped("rome", {}) == {} and tune.skipped("memit", every) == {}
    assert [tune.label("rome", o) for o in tune.grid("rome", every)] == [
        "rome@yaml", "rome@layers=[3]", "rome@layers=[8]", "rome@layers=[15]",
        "rome@v_num_grad_steps=50", "rome@clamp_norm_factor=10"]
    rome = [_row(tune.label("rome", o), o, 0.5, 0.5, 0.5, 100.0)
            for o in tune.grid("rome", every) if o != {"v_num_grad_steps": 50}]
    left, chosen, _ = tune.choice_state("rome", {**every, "rome": rome}, "unused.yaml")
    assert left == ["rome@v_num_grad_steps=50"] and chosen is None
    path = tmp_path / "tuning.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in memit + rome))
    text = tune.report(path)
    assert ("Left out by the rule for methods that follow another's grid (`FOLLOWS`, in "
            "`tune_baselines.py`): `rome@v_lr=0.1` (`memit@v_lr=0.1` scored 0.492") in text
    assert "`rome@v_num_grad_steps=50`" in text.split("Grid rows still to run")[1]
