"""Resumable chunked benchmark rows (benchmarks/resume.py) on the tiny model."""
import json
import logging
from pathlib import Path
import sys
import types

import pytest
import torch

from conftest import shared_file
from test_benchmarks import _load


@pytest.fixture()
def resume():
    return _load("resume")


def _hp():  # what ChunkState reads of an EasyEdit hparams object
    return types.SimpleNamespace(rewrite_module_tmp="model.layers.{}.mlp.down_proj", layers=[1, 2])


def _method_module(cache=None, templates=None):
    mod = types.ModuleType("fake_easyedit_method")
    mod.cache_c, mod.cache_c_new = cache, cache is not None
    mod.CONTEXT_TEMPLATES_CACHE = templates
    return mod


def test_state_round_trip(resume, tiny_model, tmp_path):
    model = tiny_model
    hp = _hp()
    weights = resume.rewritten(model, hp)
    assert list(weights) == ["model.layers.1.mlp.down_proj.weight",
                             "model.layers.2.mlp.down_proj.weight"]
    with torch.no_grad():
        for p in weights.values():
            p.add_(0.5)
    edited = {n: p.detach().clone() for n, p in weights.items()}
    cache = torch.arange(12.0).reshape(2, 2, 3)
    templates = [["{}"], ["The sky. {}", "A man. {}"]]
    state = resume.ChunkState(tmp_path / "row")
    assert state.load(model, hp, "alphaedit", _method_module()) == (0, 0.0, 0)  # nothing yet
    state.save(model, hp, "alphaedit", _method_module(cache, templates), 3, 120.5, 1, 10)
    assert state.progress() == {"method": "alphaedit", "done": 3, "total": 10, "seconds": 120.5,
                                "last_step_seconds": None,  # no earlier save to time from
                                "peak_rss_mb": resume.peak_mb()}  # this process's so far
    assert resume.part_left(state.progress()) == 0.7
    assert resume.seconds_left(state.progress()) == 120.5 / 3 * 7  # at its own pace
    assert resume.seconds_left(dict(state.progress(), total=None)) is None
    assert resume.seconds_left(dict(state.progress(), done=0)) is None

    fresh = _load("common").load("tiny")[0]  # the unedited weights
    mod = _method_module()
    assert state.load(fresh, hp, "alphaedit", mod) == (3, 120.5, 1)
    for n, p in resume.rewritten(fresh, hp).items():
        assert torch.equal(p, edited[n]), n
    assert torch.equal(mod.cache_c, cache) and mod.cache_c_new is True
    assert mod.CONTEXT_TEMPLATES_CACHE == templates
    with pytest.raises(ValueError, match="holds a alphaedit state, not memit"):
        state.load(fresh, hp, "memit", mod)
    state.clear()
    assert not (tmp_path / "row").exists() and state.progress() is None


def test_a_save_records_the_seconds_per_call_since_the_previous_one(resume, tiny_model,
                                                                   tmp_path):
    """``last_step_seconds``: (editing seconds now - at the previous save) / calls since,
    across runs too (a resumed run saves the earlier runs' seconds plus its own)."""
    hp, mod = _hp(), _method_module()
    state = resume.ChunkState(tmp_path / "row")
    state.save(tiny_model, hp, "memit", mod, 3, 120.0, 1, 10)
    state.save(tiny_model, hp, "memit", mod, 5, 200.0, 2, 10)
    assert state.progress()["last_step_seconds"] == 40.0
    state.save(tiny_model, hp, "memit", mod, 6, 290.0, 2, 10)
    assert state.progress()["last_step_seconds"] == 90.0


def test_a_save_keeps_the_highest_peak_memory_of_the_rows_runs(resume, tiny_model, tmp_path):
    """A row made over several runs reports the peak of them all: each save keeps the higher
    of this process's peak and the one saved before (WISE's N = 1,000 rows' last run only
    scored, and its own peak said nothing of the editing); another method's state in the
    folder is not the row's. A state saved before the peak was recorded reads None."""
    hp, mod = _hp(), _method_module()
    state = resume.ChunkState(tmp_path / "row")
    state.save(tiny_model, hp, "memit", mod, 3, 120.0, 1, 10)
    assert state.progress()["peak_rss_mb"] == resume.peak_mb()
    path = tmp_path / "row" / "state.json"
    earlier = json.loads(path.read_text())
    path.write_text(json.dumps(dict(earlier, peak_rss_mb=1e9)))  # an earlier run's, higher
    state.save(tiny_model, hp, "memit", mod, 5, 200.0, 2, 10)
    assert state.progress()["peak_rss_mb"] == 1e9
    path.write_text(json.dumps(dict(earlier, peak_rss_mb=1.0)))  # lower than this process's
    state.save(tiny_model, hp, "memit", mod, 6, 290.0, 2, 10)
    assert state.progress()["peak_rss_mb"] == resume.peak_mb() > 1.0
    path.write_text(json.dumps(dict(earlier, peak_rss_mb=1e9)))
    state.save(tiny_model, hp, "alphaedit", mod, 1, 10.0, 1, 10)  # not the memit row's runs
    assert state.progress()["peak_rss_mb"] == resume.peak_mb()
    path.write_text(json.dumps({k: v for k, v in earlier.items() if k != "peak_rss_mb"}))
    assert state.progress()["peak_rss_mb"] is None


def test_a_save_cut_short_leaves_the_previous_state(resume, tiny_model, tmp_path):
    hp = _hp()
    state = resume.ChunkState(tmp_path / "row")
    mod = _method_module()  # MEMIT-like: no cache_c
    state.save(tiny_model, hp, "memit", mod, 1, 10.0, 1)
    first = {n: p.detach().clone() for n, p in resume.rewritten(tiny_model, hp).items()}
    # the next save died after writing its weights, before state.json pointed at them
    (tmp_path / "row" / "weights-2.pt").write_bytes(b"half a file")
    fresh = _load("common").load("tiny")[0]
    with torch.no_grad():
        for p in resume.rewritten(fresh, hp).values():
            p.zero_()
    assert state.load(fresh, hp, "memit", mod) == (1, 10.0, 1)
    for n, p in resume.rewritten(fresh, hp).items():
        assert torch.equal(p, first[n])
    state.save(tiny_model, hp, "memit", mod, 2, 20.0, 2)  # the next whole save: old files go
    assert sorted(p.name for p in (tmp_path / "row").iterdir()) == ["state.json", "weights-2.pt"]


def test_the_unedited_models_scores_are_kept_for_their_key_until_the_row_ends(resume,
                                                                             tiny_model,
                                                                             tmp_path):
    """``save_unedited`` / ``load_unedited``: read back for the same key only; later saves of
    the row keep the file, ``clear`` removes it with the rest."""
    from locft_easyedit.evaluate import Unedited

    state = resume.ChunkState(tmp_path / "row")
    key = {"model": "tiny", "arguments": {"batch_size": 1}, "requests": "ab12"}
    assert state.load_unedited(key) is None  # nothing kept yet
    kept = Unedited([torch.tensor([3, 1]), torch.tensor([2])],
                    {"probability": {"efficacy_score": 0.25, "neighborhood_prompts": 4}},
                    ["Paris", ""])
    state.save_unedited(kept, key)
    back = state.load_unedited(dict(key))
    assert [t.tolist() for t in back.locality] == [[3, 1], [2]]
    assert (back.before, back.answers) == (kept.before, kept.answers)
    assert state.load_unedited({**key, "arguments": {"batch_size": 32}}) is None
    state.save(tiny_model, _hp(), "memit", _method_module(), 1, 10.0, 1, 2)
    state.save(tiny_model, _hp(), "memit", _method_module(), 2, 20.0, 1, 2)
    assert sorted(p.name for p in state.folder.iterdir()) == [
        "state.json", "unedited.pt", "weights-2.pt"]
    state.clear()
    assert not state.folder.exists()


def test_ft_names_the_weight_itself(resume, tiny_model):
    hp = types.SimpleNamespace(rewrite_module_tmp="model.layers.{}.mlp.down_proj.weight",
                               layers=[3])
    assert list(resume.rewritten(tiny_model, hp)) == ["model.layers.3.mlp.down_proj.weight"]


def test_a_module_the_model_lacks_is_named(resume, tiny_model):
    hp = types.SimpleNamespace(rewrite_module_tmp="transformer.h.{}.mlp.c_proj", layers=[1])
    with pytest.raises(KeyError, match="transformer.h.1.mlp.c_proj.weight"):
        resume.rewritten(tiny_model, hp)


@pytest.mark.easyedit
@pytest.mark.parametrize("method,sets,paused_at", [
    ("ft-m", [], 10), ("rome", [], 10), ("wise", [], 10),
    # WISE's 1,000-edit rows pause past its save_freq 500: here every 4 edits a side memory
    # is saved and every 8 merged, so the pause after 10 falls between shards (2 kept, one
    # merge done) and the resumed run must go on from all of them
    ("wise", ["--set", "save_freq=4", "merge_freq=8"], 10),
    # MEMIT and AlphaEdit save after every call: two calls of 10, paused after the first
    # (AlphaEdit's cache_c of the first call carries into the second)
    ("memit", ["--set", "batch_size=10"], 1), ("alphaedit", ["--set", "batch_size=10"], 1)])
def test_a_paused_and_resumed_row_equals_one_run_whole(tmp_path, monkeypatch, method, sets,
                                                       paused_at):
    """FT-M and ROME (their rewritten weights; ROME's context templates), WISE (its own
    checkpoint: side memory, masks, edit history; numpy's random state; its context
    templates), MEMIT and AlphaEdit (their rewritten weights; AlphaEdit's cache_c), 20 tiny
    edits: paused after the first saved state, resumed by the same command, the row is the row
    of an uninterrupted run, and its state folder is gone."""
    import json
    import sys

    run = _load("run")
    monkeypatch.delenv(run.STATE_DIR, raising=False)  # the state beside the rows, read below
    args = ["--model", "tiny", "--methods", method, "--datasets", "zsre", "--n", "20",
            "--threads", "1", "--python", sys.executable] + sets
    paused = tmp_path / "paused.jsonl"
    assert run.main(args + ["--out", str(paused), "--max-minutes", "0.00001"]) == []
    (state,) = (run.state_root(paused) / "resume").iterdir()
    assert json.loads((state / "state.json").read_text())["chunks_done"] == paused_at
    if method == "wise" and sets:  # the paused WISE holds one merged shard (edits 1-8);
        # edits 9-10 are training
        import torch

        info = torch.load(state / "wise-10.pt", weights_only=False)["additional_info"]
        assert (info["merge_cnt"], len(info["memory_weight"]), info["editing_total_cnt"]) == (
            1, 1, 10)
    (resumed,) = run.main(args + ["--out", str(paused), "--max-minutes", "0.00001"])
    (whole,) = run.main(args + ["--out", str(tmp_path / "whole.jsonl")])
    assert resumed["runs"] == 2 and "runs" not in whole
    # its peak memory is of both runs (the first's kept in the state), the whole run's its own
    assert resumed["peak_rss_mb_all_runs"] is True and "peak_rss_mb_all_runs" not in whole
    for key in ("reliability", "generalization", "locality", "reliability_ci95",
                "cap_known_facts_acc_after"):
        assert resumed[key] == whole[key], key
    assert not state.exists()


def test_save_or_pause_saves_every_k_steps_and_pauses_past_the_budget(tmp_path):
    baselines = _load("baselines")
    state = types.SimpleNamespace(folder=tmp_path)
    saved = []
    for done in range(1, 26):  # 25 steps, a save every 10 and after the last; no budget
        baselines._save_or_pause(state, done, 25, 10, 0.0, None, "x", lambda s: saved.append(done))
    assert saved == [10, 20, 25]
    baselines._save_or_pause(None, 10, 25, 10, 0.0, None, "x", lambda s: saved.append(-1))
    assert saved == [10, 20, 25]  # no state, no save
    # a budget already spent (t0 far in the past): a save step saves, then pauses
    with pytest.raises(baselines.Paused, match="x: 20 of 25 done"):
        baselines._save_or_pause(state, 20, 25, 10, -1e9, 1, "x", lambda s: saved.append(20))
    assert saved[-1] == 20
    baselines._save_or_pause(state, 21, 25, 10, -1e9, 1, "x", lambda s: saved.append(21))
    baselines._save_or_pause(state, 25, 25, 10, -1e9, 1, "x", lambda s: saved.append(25))
    assert saved[-2:] == [20, 25]  # no save between saves; the last step saves, never pauses
    # --hold-last, no budget: it pauses at the save that leaves only the last piece
    baselines._save_or_pause(state, 10, 25, 10, 0.0, None, "x", lambda s: saved.append(10), True)
    with pytest.raises(baselines.Paused, match="x: 20 of 25 done"):
        baselines._save_or_pause(state, 20, 25, 10, 0.0, None, "x", lambda s: saved.append(20),
                                 True)
    baselines._save_or_pause(state, 25, 25, 10, 0.0, None, "x", lambda s: saved.append(25), True)
    assert saved[-3:] == [10, 20, 25]  # saved each time; the last step scores, never pauses


def test_a_killed_locft_row_goes_on_from_its_checkpoint(tmp_path, monkeypatch, caplog):
    """LocFT-BF, 20 tiny edits: the first run dies right after its first checkpoint (epoch
    10); the same command finishes the row from there, reading back the unedited model's
    scores the first run kept, and it is the row of a run that was never killed; the earlier
    run's editing time counts up to its checkpoint."""
    from locft_easyedit.locft import checkpoint

    run = _load("run")
    shared_file("zsre_2k.json")  # the row's requests; skips without the shared data
    monkeypatch.setattr(sys.modules["resume"], "LOCFT_CHECKPOINT",
                        {"checkpoint_every_epochs": 10, "checkpoint_every_minutes": None})
    real_save = checkpoint.Checkpointer.save

    def save_then_die(self, pos, *rest):
        real_save(self, pos, *rest)
        raise KeyboardInterrupt  # a kill right after the save

    state = tmp_path / "state"
    one = ["--one", "locft-bf", "zsre", "20", "--model", "tiny", "--threads", "1",
           "--no-capability", "--out", str(tmp_path / "rows.jsonl")]
    monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run.main(one + ["--state", str(state)])
    saved = torch.load(state / checkpoint.FILENAME, weights_only=True)
    assert saved["epoch"] == 10
    monkeypatch.setattr(checkpoint.Checkpointer, "save", real_save)
    caplog.set_level(logging.INFO, logger="locft_easyedit")
    caplog.set_level(logging.INFO, logger="benchmarks.run")
    from locft_easyedit import evaluate

    measure = evaluate.measure_unedited
    # the unedited model's scores were kept before the first edit: not measured again
    monkeypatch.setattr(evaluate, "measure_unedited", lambda *a, **k: pytest.fail("measured"))
    (resumed,) = run.main(one + ["--state", str(state)])
    assert "resuming from checkpoint" in caplog.text and "10 epochs" in caplog.text
    assert "the unedited model's scores read from" in caplog.text
    monkeypatch.setattr(evaluate, "measure_unedited", measure)
    (whole,) = run.main(one)
    assert resumed["runs"] == 2 and "runs" not in whole
    # LocFT's checkpoints do not keep the first run's peak: the row says its peak is the
    # last run's (report.py marks it)
    assert "peak_rss_mb_all_runs" not in resumed
    for key in ("reliability", "generalization", "locality", "reliability_em",
                "reliability_ci95", "answers_sample"):
        assert resumed[key] == whole[key], key
    assert torch.load(state / checkpoint.FILENAME, weights_only=True)["epoch"] > 10


def test_states_go_where_locft_state_dir_says(tmp_path, monkeypatch):
    """A paused row's state and lock lie in states/ beside the rows file unless
    $LOCFT_STATE_DIR names another folder."""
    run = _load("run")
    out = tmp_path / "results" / "rows.jsonl"
    tag = "memit@v_lr=0.1_zsre_100_embedded_smollm2-135m_abc_1000_None"
    monkeypatch.delenv(run.STATE_DIR, raising=False)
    beside = run.state_folder(out, "memit@v_lr=0.1", "zsre", 100, "embedded:smollm2-135m",
                              "abc_1000_None")
    assert beside == tmp_path / "results" / "states" / "resume" / tag
    assert run.lock_path(beside) == tmp_path / "results" / "states" / "locks" / (tag + ".lock")
    monkeypatch.setenv(run.STATE_DIR, str(tmp_path / "kept"))
    kept = run.state_folder(out, "memit@v_lr=0.1", "zsre", 100, "embedded:smollm2-135m",
                            "abc_1000_None")
    assert kept == tmp_path / "kept" / "resume" / tag
    assert run.lock_path(kept) == tmp_path / "kept" / "locks" / (tag + ".lock")


def test_paused_rows_are_read_back_from_their_folders(tmp_path, monkeypatch):
    """run.paused names each row with a saved state by (label, dataset, N), parsed from its
    folder's name (labels hold underscores and brackets), with its progress; a folder
    without a state (a row that finished, or never saved) is not paused."""
    run = _load("run")
    monkeypatch.delenv(run.STATE_DIR, raising=False)
    out = tmp_path / "rows.jsonl"
    assert run.paused(out) == {}
    for label, dataset, n, done in [("rome@v_num_grad_steps=50", "zsre", 100, 40),
                                    ("wise", "counterfact", 1000, 120),
                                    ("memit@layers=[3,4]", "wikibigedit", 100, None)]:
        folder = run.state_folder(out, label, dataset, n, "embedded:smollm2-135m", "f00_0_1")
        folder.mkdir(parents=True)
        if done is not None:
            (folder / "state.json").write_text(json.dumps(
                {"method": label.split("@")[0], "chunks_done": done, "seconds": 60.0 * done}))
    assert run.paused(out) == {
        ("rome@v_num_grad_steps=50", "zsre", 100): {"method": "rome", "done": 40,
                                                    "total": None, "seconds": 2400.0,
                                                    "last_step_seconds": None,
                                                    "peak_rss_mb": None},
        ("wise", "counterfact", 1000): {"method": "wise", "done": 120, "total": None,
                                        "seconds": 7200.0, "last_step_seconds": None,
                                        "peak_rss_mb": None}}
    assert run.progress_text(run.paused(out)[("wise", "counterfact", 1000)]) == \
        "120 edits, 120 min so far"
    assert run.progress_text({"method": "wise", "done": 1000, "total": 1000,
                              "seconds": 44529.0}) == \
        "1000 of 1000 edits, 742 min so far; its scoring is left"
    assert run.progress_text({"method": "memit", "done": 9, "total": 10, "seconds": 60.0}) == \
        "9 of 10 calls, 1 min so far"


def test_session_states_are_committed_and_their_locks_are_not(monkeypatch):
    """session.sh keeps paused rows' states, target vectors and side memories in
    benchmarks/results/states, which git tracks (a later session may get a new machine: only
    the repository goes on), and its locks/ (which mean nothing past the process holding
    them) is ignored."""
    import shutil
    import subprocess

    run = _load("run")
    session = (run.REPO / "benchmarks" / "session.sh").read_text()
    assert 'export LOCFT_STATE_DIR="${LOCFT_STATE_DIR:-$results/states}"' in session
    if shutil.which("git") is None or not (run.REPO / ".git").exists():
        pytest.skip("not a git checkout")
    results = run.REPO / "benchmarks" / "results"
    monkeypatch.delenv(run.STATE_DIR, raising=False)
    folder = run.state_folder(results / "edit_quality.jsonl", "rome", "zsre", 100,
                              "embedded:smollm2-135m", "abc")
    check = ["git", "-C", str(run.REPO), "check-ignore", "-q", "--no-index"]
    assert subprocess.run(check + [str(folder / "weights-3.pt")]).returncode == 1  # tracked
    assert subprocess.run(check + [str(run.lock_path(folder))]).returncode == 0  # ignored
    monkeypatch.setenv(run.STATE_DIR, str(results / "states"))  # as session.sh sets it
    target_cache, wise_cache = _load("target_cache"), _load("wise_cache")
    for kept in (target_cache.root() / "k3y" / "v.npz", wise_cache.root() / "k3y" / "state.json"):
        assert kept.is_relative_to(results / "states")
        assert subprocess.run(check + [str(kept)]).returncode == 1  # tracked


def test_a_row_another_process_is_running_is_skipped(tmp_path, monkeypatch, caplog):
    """Two queues (one per core) given the same row: the second finds its lock held and
    skips it, launching nothing; the lock goes with the holder, and the row runs after."""
    run = _load("run")
    shared_file("zsre_2k.json")  # the row's requests; skips without the shared data
    monkeypatch.delenv(run.STATE_DIR, raising=False)
    out = tmp_path / "rows.jsonl"
    hparams = str(run.REPO / "hparams" / "smollm2-135m.yaml")
    digest = run.settings_digest("locft-bf", hparams, {})
    folder = run.state_folder(out, "locft-bf", "zsre", 2, "tiny", f"{digest}_0_None")
    args = ["--model", "tiny", "--methods", "locft-bf", "--n", "2", "--threads", "1",
            "--no-capability", "--out", str(out)]
    with run.claim(folder) as mine:
        assert mine
        with run.claim(folder) as other:
            assert not other
        with caplog.at_level("WARNING"):
            assert run.main(args) == []
    assert "another process is running it" in caplog.text and not out.exists()
    (row,) = run.main(args)  # the lock went with its holder
    assert row["n"] == 2 and len(out.read_text().splitlines()) == 1
