"""Target vectors shared between tuning rows (benchmarks/target_cache.py)."""
import copy
import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from test_benchmarks import _load


@pytest.fixture()
def tc():
    return _load("target_cache")


@dataclasses.dataclass
class _HP:  # the fields of a MEMIT hparams object that matter here
    layers: list = dataclasses.field(default_factory=lambda: [1, 2])
    clamp_norm_factor: float = 4.0
    v_lr: float = 0.5
    mom2_update_weight: float = 15000.0
    mom2_n_samples: int = 50000
    alg_name: str = "MEMIT"


@dataclasses.dataclass
class _AlphaHP(_HP):  # AlphaEdit's: MEMIT's fields and three that compute_z never reads
    alg_name: str = "AlphaEdit"
    nullspace_threshold: float = 2e-2
    L2: float = 1.0
    P_loc: str = "p.pt"


def _module(templates):
    mod = types.ModuleType("fake_memit")
    mod.calls = 0

    def get_context_templates(model, tok):
        mod.calls += 1
        return templates

    mod.get_context_templates = get_context_templates
    return mod


def _requests():
    return [{"prompt": "The capital of {} is", "subject": "France", "target_new": {"str": "Rome"}},
            {"prompt": "{} plays", "subject": "Messi", "target_new": {"str": "tennis"}}]


def _right_padded(tok):
    tok = copy.deepcopy(tok)  # the fixture is shared
    tok.padding_side = "right"
    return tok


def test_the_folder_moves_with_what_z_depends_on_and_only_that(tc, tiny_model, tiny_tok,
                                                             tmp_path):
    tok = _right_padded(tiny_tok)
    templates = [["{}"], ["The sky. {}"]]

    def folder(hp=None, mod=None, reqs=None):
        template, hits = tc.prepare(tmp_path, "memit", mod or _module(templates), tiny_model,
                                    tok, hp or _HP(), reqs or _requests())
        return template.rsplit("/", 1)[0], hits

    base, hits = folder()
    assert hits == 0 and base.startswith(str(tmp_path))
    # the covariance knobs are not read by compute_z: same vectors, same folder
    assert folder(_HP(mom2_update_weight=1500, mom2_n_samples=200000))[0] == base
    # what compute_z reads: a folder of its own
    assert folder(_HP(v_lr=0.1))[0] != base
    assert folder(_HP(layers=[1, 3]))[0] != base
    assert folder(mod=_module([["{}"], ["Another. {}"]]))[0] != base
    other = copy.deepcopy(tok)  # another tokenizer (one more word), same weights
    other.add_tokens(["zzqqx"])
    assert tc.prepare(tmp_path, "memit", _module(templates), tiny_model, other, _HP(),
                      _requests())[0].rsplit("/", 1)[0] != base
    with torch.no_grad():
        tiny_model.model.layers[0].mlp.down_proj.weight[0, 0] += 1e-3
    assert folder()[0] != base  # an edited model (a later chunk) computes other vectors
    with pytest.raises(ValueError, match="only"):
        tc.prepare(tmp_path, "rome", _module(templates), tiny_model, tok, _HP(), _requests())


def test_alphaedit_reads_memits_vectors_for_the_same_z_settings(tc, tiny_model, tiny_tok,
                                                                tmp_path):
    """AlphaEdit's compute_z is MEMIT's (``Z_AS``): with the same z settings both name the
    same folder; AlphaEdit's own settings (null space, L2) do not move it, its v_* do."""
    tok = _right_padded(tiny_tok)
    mod = _module([["{}"], ["The sky. {}"]])

    def folder(method, hp):
        return tc.prepare(tmp_path, method, mod, tiny_model, tok, hp,
                          _requests())[0].rsplit("/", 1)[0]

    memit = folder("memit", _HP())
    assert folder("alphaedit", _AlphaHP()) == memit
    assert folder("alphaedit", _AlphaHP(nullspace_threshold=1e-2, L2=10.0)) == memit
    assert folder("alphaedit", _AlphaHP(v_lr=0.1)) != memit


def test_case_ids_name_the_whole_request_and_hits_are_counted(tc, tiny_model, tiny_tok,
                                                              tmp_path):
    tok = _right_padded(tiny_tok)
    mod = _module([["{}"]])
    reqs = _requests()
    template, hits = tc.prepare(tmp_path, "memit", mod, tiny_model, tok, _HP(), reqs)
    assert mod.calls == 1 and hits == 0
    ids = [r["case_id"] for r in reqs]
    assert len(set(ids)) == 2 and all(len(i) == 20 for i in ids)
    other = _requests()
    other[0]["target_new"]["str"] = "Paris"
    tc.prepare(tmp_path, "memit", mod, tiny_model, tok, _HP(), other)
    assert other[0]["case_id"] != ids[0] and other[1]["case_id"] == ids[1]
    # EasyEdit writes <folder>/z_layer{layer}_clamp{clamp}_{case_id}.npz; one of them exists
    path = template.format(2, 4.0, ids[1])
    Path(path).parent.mkdir(parents=True)
    np.savez(path, v_star=np.zeros(3))
    again = _requests()
    assert tc.prepare(tmp_path, "memit", mod, tiny_model, tok, _HP(), again) == (template, 1)
    assert [r["case_id"] for r in again] == ids  # a case_id already there is not hashed in


def test_a_cached_row_breaks_ties_at_the_speed_of_the_row_that_paid(tmp_path):
    tune = _load("tune_baselines")
    yaml = {"method": "memit@yaml", "reliability": 0.6, "generalization": 0.4,
            "locality": 0.8, "seconds_per_edit": 40.0}
    cached = {"method": "memit@mom2_update_weight=1500", "reliability": 0.6,
              "generalization": 0.4, "locality": 0.801, "seconds_per_edit": 2.0,
              "targets_from_cache": 100, "overrides": {"mom2_update_weight": 1500}}
    slower = {"method": "memit@v_lr=0.1", "reliability": 0.6, "generalization": 0.4,
              "locality": 0.799, "seconds_per_edit": 30.0, "overrides": {"v_lr": 0.1}}
    rows = [yaml, cached, slower]
    assert tune.speed(cached, rows) == 40.0 and tune.speed(slower, rows) == 30.0
    assert tune.choose(rows) is slower  # all tied; the cached row is not the fast one it looks
    cached["locality"] = 0.9  # a clear win needs no tie-break
    assert tune.choose(rows) is cached
    # a row that read another method's vectors (AlphaEdit: MEMIT's) and has no payer among its
    # own rows counts as slow as the slowest of its rows that computed theirs
    alpha = [{"method": "alphaedit@yaml", "seconds_per_edit": 52.0},
             {"method": "alphaedit@L2=10", "seconds_per_edit": 3.0, "targets_from_cache": 100,
              "overrides": {"L2": 10}},
             {"method": "alphaedit@v_lr=0.5", "seconds_per_edit": 4.0,
              "targets_from_cache": 100, "overrides": {"v_lr": 0.5}},
             {"method": "alphaedit@v_lr=0.1", "seconds_per_edit": 47.0,
              "overrides": {"v_lr": 0.1}}]
    assert [tune.speed(r, alpha) for r in alpha] == [52.0, 52.0, 52.0, 47.0]


@pytest.mark.easyedit
def test_a_row_reading_its_targets_equals_the_row_computing_them(tmp_path, monkeypatch):
    """MEMIT on 4 tiny edits: the row that computes and caches its target vectors, the row
    that reads all 4 of them back, and a row with another mom2_update_weight that reads them
    too; the first two give the same scores as a row with no cache at all."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = _load("run")
    args = ["--model", "tiny", "--methods", "memit", "--datasets", "zsre", "--n", "4",
            "--threads", "1", "--python", sys.executable, "--no-capability"]
    (plain,) = run.main(args + ["--out", str(tmp_path / "plain.jsonl")])
    (first,) = run.main(args + ["--out", str(tmp_path / "a.jsonl"), "--reuse-targets"])
    (second,) = run.main(args + ["--out", str(tmp_path / "b.jsonl"), "--reuse-targets"])
    (moved,) = run.main(args + ["--out", str(tmp_path / "c.jsonl"), "--reuse-targets",
                                "--set", "mom2_update_weight=1500"])
    assert "targets_from_cache" not in plain
    assert first["targets_from_cache"] == 0
    assert second["targets_from_cache"] == 4 and moved["targets_from_cache"] == 4
    for key in ("reliability", "generalization", "locality", "reliability_ci95"):
        assert first[key] == plain[key] == second[key], key
    assert "--reuse-targets" in second["command"]
    with pytest.raises(SystemExit):
        run.main(["--model", "tiny", "--methods", "rome", "--reuse-targets"])


@pytest.mark.easyedit
def test_the_first_call_of_a_longer_row_reads_the_shorter_rows_vectors(tmp_path, monkeypatch):
    """The planned rows (planned.py) run with --reuse-targets: MEMIT's row of 4 edits, then
    its row of 8 in calls of 4, whose first call edits the same records on the unedited model
    and reads those 4 vectors; its second call (after the first call's edits) computes its
    own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = _load("run")
    args = ["--model", "tiny", "--methods", "memit", "--datasets", "zsre", "--threads", "1",
            "--python", sys.executable, "--no-capability", "--reuse-targets",
            "--set", "batch_size=4"]
    (short,) = run.main(args + ["--n", "4", "--out", str(tmp_path / "a.jsonl")])
    (long,) = run.main(args + ["--n", "8", "--out", str(tmp_path / "b.jsonl")])
    assert short["targets_from_cache"] == 0
    assert long["targets_from_cache"] == 4 and long["easyedit_calls"] == 2


@pytest.mark.easyedit
def test_memit_and_alphaedit_compute_the_same_vectors_bit_for_bit(tmp_path, monkeypatch):
    """The premise of ``target_cache.Z_AS``: EasyEdit's AlphaEdit computes, with MEMIT's z
    settings, the very vectors MEMIT computes (each in a cache of its own here), and an
    AlphaEdit row then reads all of MEMIT's."""
    run = _load("run")
    args = ["--model", "tiny", "--datasets", "zsre", "--n", "4", "--threads", "1",
            "--python", sys.executable, "--no-capability", "--reuse-targets"]
    as_memit = ["--set", "clamp_norm_factor=4", "v_lr=0.5", "v_weight_decay=0.001"]
    folders = {}
    for method, sets in (("memit", []), ("alphaedit", as_memit)):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / method))
        (row,) = run.main(args + ["--methods", method, "--out", str(tmp_path / f"{method}.jsonl")]
                          + sets)
        assert row["targets_from_cache"] == 0
        (folders[method],) = (tmp_path / method).glob("locft_easyedit/easyedit_targets/*")
    assert folders["memit"].name == folders["alphaedit"].name  # one key
    files = sorted(p.name for p in folders["memit"].iterdir())
    assert len(files) == 4 and files == sorted(p.name for p in folders["alphaedit"].iterdir())
    for name in files:
        assert np.array_equal(np.load(folders["memit"] / name)["v_star"],
                              np.load(folders["alphaedit"] / name)["v_star"]), name
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "memit"))
    (read,) = run.main(args + ["--methods", "alphaedit", "--out", str(tmp_path / "read.jsonl")]
                       + as_memit)
    assert read["targets_from_cache"] == 4
