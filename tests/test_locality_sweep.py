"""The locality sweep (benchmarks/locality_sweep.py) on the tiny random model: one row per
setting (each in its own process), a rerun skips finished rows, report and plot."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_locality_sweep",
                                                  REPO / "benchmarks" / "locality_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sweep_rows_resume_report_and_plot(tmp_path, monkeypatch):
    from conftest import shared_file

    data = shared_file("zsre_2k.json")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hp = tmp_path / "tiny.yaml"
    hp.write_text("alg_name: LocFT\nmodel_name: tiny\nlayers: [2]\nlr: 1.0e-2\nnum_epochs: 3\n"
                  "mini_batch_size: 4\ndevice: cpu\nkey_tokens: 1024\n")
    sweep = _load()
    out = tmp_path / "rows.jsonl"
    argv = ["--hparams", str(hp), "--data", str(data), "--n", "6", "--offset", "1000",
            "--out", str(out), "--quiet", "--setting", "plain",
            "--setting", "ns=null_space_rank=16,neighbour_weight=1"]
    sweep.main(argv)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["setting"] for r in rows] == ["plain", "ns"]
    assert rows[0]["overrides"] == {} and rows[1]["overrides"] == {
        "null_space_rank": 16, "neighbour_weight": 1}
    for r in rows:
        assert (r["n"], r["offset"], r["data"]) == (6, 1000, "zsre_2k.json")
        assert r["seconds_per_edit"] > 0 and r["peak_rss_mb"] > r["rss_before_edit_mb"] * 0.5
    assert rows[0]["locality"] != rows[1]["locality"] or \
        rows[0]["reliability"] != rows[1]["reliability"]  # the options change the edit
    sweep.main(argv)  # resumes: nothing new
    assert len(out.read_text().splitlines()) == 2
    table = _capture(sweep, ["--report", "--out", str(out)], monkeypatch)
    assert "| zsre_2k.json | 6 | 1000 | ns | null_space_rank=16 neighbour_weight=1 |" in table
    png = tmp_path / "frontier.png"
    sweep.main(["--plot", str(png), "--out", str(out), "--baselines", str(tmp_path / "none")])
    assert png.stat().st_size > 5000


def _capture(mod, argv, monkeypatch):
    printed = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: printed.append(" ".join(map(str, a))))
    mod.main(argv)
    monkeypatch.undo()
    return "\n".join(printed)
