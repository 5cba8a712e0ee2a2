"""WISE's trained side memory shared between tuning rows (benchmarks/wise_cache.py), and a
WISE row killed after its last save (while scoring) going on with its edits."""
import dataclasses
import json
import subprocess
import sys

import pytest

from test_benchmarks import REPO, _load


@pytest.fixture()
def wc():
    return _load("wise_cache")


@dataclasses.dataclass
class _HP:  # the fields of a WISE hparams object that matter here
    edit_lr: float = 0.9
    alpha: float = 2.0
    act_ratio: float = 0.5
    load_path: str = None
    model_name: str = "/some/where"


def _requests(loc="Who wrote Hamlet? Shakespeare"):
    return [{"prompt": "The capital of France is", "target_new": "Rome", "loc_prompt": loc}]


def test_the_folder_moves_with_what_training_reads_and_only_that(wc, tiny_model, tiny_tok,
                                                                tmp_path):
    def folder(hp=None, reqs=None, model=tiny_model, tok=tiny_tok):
        return wc.folder(tmp_path, hp or _HP(), model, tok, reqs or _requests())

    base = folder()
    assert base.parent == tmp_path and base == folder()
    # read only when routing at inference, or local to the run: the same memory
    assert folder(_HP(act_ratio=0.85)) == base
    assert folder(_HP(load_path="/tmp/wise-10.pt", model_name="/else/where")) == base
    # what training reads: a memory of its own
    assert folder(_HP(edit_lr=0.3)) != base and folder(_HP(alpha=10.0)) != base
    assert folder(reqs=_requests(loc="Who painted Guernica? Picasso")) != base
    sequential = _HP()
    sequential.sequential_edit = True
    assert folder(sequential) != base
    other = __import__("copy").deepcopy(tiny_tok)  # another tokenizer, same weights
    other.add_tokens(["zzqqx"])
    assert folder(tok=other) != base
    with __import__("torch").no_grad():
        next(tiny_model.parameters())[0, 0] += 1.0
    assert folder() != base


def test_complete_means_every_edit_saved(wc, tmp_path):
    state = _load("resume").ChunkState(tmp_path / "m")
    assert not wc.complete(state, 3)
    state.folder.mkdir()
    (state.folder / "state.json").write_text(json.dumps({"chunks_done": 2}))
    assert not wc.complete(state, 3) and wc.complete(state, 2)


def test_a_row_with_a_read_memory_breaks_ties_at_the_speed_of_the_row_that_trained():
    tune = _load("tune_baselines")
    yaml = {"method": "wise@yaml", "base_method": "wise", "reliability": 0.9,
            "generalization": 0.5, "locality": 0.5, "seconds_per_edit": 80.0}
    reread = {"method": "wise@act_ratio=0.7", "base_method": "wise", "reliability": 0.9,
              "generalization": 0.5, "locality": 0.501, "seconds_per_edit": 0.1,
              "memory_from_cache": True, "overrides": {"act_ratio": 0.7}}
    faster = {"method": "wise@edit_lr=0.3", "base_method": "wise", "reliability": 0.9,
              "generalization": 0.5, "locality": 0.499, "seconds_per_edit": 70.0,
              "overrides": {"edit_lr": 0.3}}
    rows = [yaml, reread, faster]
    assert tune.reused(reread) and not tune.reused(yaml)
    assert tune.speed(reread, rows) == 80.0 and tune.speed(faster, rows) == 70.0
    assert tune.choose(rows) is faster
    assert [g for g in tune.GRIDS["wise"][1:4]] == [{"act_ratio": r} for r in (0.7, 0.85, 1.0)]


def _one(tmp_path, state, *extra):
    """One WISE row of 6 tiny edits through ``run.py --one`` (a subprocess, as main runs it)."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--one", "wise", "zsre", "6",
           "--model", "tiny", "--threads", "1", "--no-capability", "--out",
           str(tmp_path / "rows.jsonl"), "--state", str(state), *extra]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    (row,) = [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
    return row


SCORES = ("reliability", "generalization", "locality", "reliability_em", "locality_ci95")


@pytest.mark.easyedit
def test_a_row_reading_the_side_memory_equals_the_row_training_it(tmp_path, monkeypatch):
    """WISE on 6 tiny edits: the row that trains and keeps its side memory, a row that reads
    it back, and a row of another act_ratio that reads it too and routes like a row that trains
    its own with that act_ratio."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = _load("run")
    args = ["--model", "tiny", "--methods", "wise", "--datasets", "zsre", "--n", "6",
            "--threads", "1", "--python", sys.executable, "--no-capability"]
    (first,) = run.main(args + ["--out", str(tmp_path / "a.jsonl"), "--reuse-memory"])
    (second,) = run.main(args + ["--out", str(tmp_path / "b.jsonl"), "--reuse-memory"])
    (moved,) = run.main(args + ["--out", str(tmp_path / "c.jsonl"), "--reuse-memory",
                                "--set", "act_ratio=1.5"])
    (own,) = run.main(args + ["--out", str(tmp_path / "d.jsonl"), "--set", "act_ratio=1.5"])
    assert "memory_from_cache" not in first and first["easyedit_calls"] == 6
    assert second["memory_from_cache"] and moved["memory_from_cache"]
    assert second["easyedit_calls"] == 0 and "--reuse-memory" in second["command"]
    for key in SCORES:
        assert first[key] == second[key], key
        assert moved[key] == own[key], key
    # act_ratio routes: at the YAML's (0.5, and 0.7 with its margins x5 since tuning) every query
    # goes to the side memory of the tiny model (measured both: rel 0.38, loc 0.35), at 1.5
    # only some (rel 0.22, loc 1.00); unedited rel is 0.02
    assert first["reliability"] > 0.3 and first["locality"] < 0.5
    assert moved["locality"] > first["locality"] and moved["reliability"] < first["reliability"]
    with pytest.raises(SystemExit):
        run.main(["--model", "tiny", "--methods", "memit", "--reuse-memory"])


@pytest.mark.easyedit
def test_a_wise_row_killed_after_its_last_save_scores_its_edits(tmp_path, monkeypatch):
    """A row whose state says all edits are done (killed while scoring) loads WISE's
    checkpoint without an edit call and scores as the row that made it, not the bare model."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    state = tmp_path / "state"
    whole = _one(tmp_path, state)  # --one keeps its state: as if killed before the row was kept
    assert json.loads((state / "state.json").read_text())["chunks_done"] == 6
    again = _one(tmp_path, state)
    assert again["runs"] == 2 and again["easyedit_calls"] == 6
    for key in SCORES:
        assert again[key] == whole[key], key
    assert whole["reliability"] > 0.3  # WISE's edits are in (measured 0.38; unedited 0.02)
