"""The edit ledger (locft_easyedit/ledger.py) and `locft-edit ledger` on the tiny random model:
rounds with replay, log, revert by retraining from the base, export, atomic writes, the base
check and the writer lock."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from conftest import shared_file
from locft_easyedit import Ledger, execute_locft
from locft_easyedit import ledger as ledger_module
from locft_easyedit.cli import main
from locft_easyedit.ledger import (BaseModelMismatch, LedgerError, LedgerLocked,
                                   ReplaySettings, RotatingSample, score_edits)
from locft_easyedit.models import load_model
from locft_easyedit.patch import apply_patch, fingerprint
from locft_easyedit.synthetic import build_tiny_model

TRAINED = "model.layers.2.mlp.down_proj.weight"


@pytest.fixture
def hp(tiny_hp):
    return tiny_hp.__class__.from_dict(tiny_hp.to_dict() | {"num_epochs": 30,
                                                            "mini_batch_size": 4})


def param(model):
    return dict(model.named_parameters())[TRAINED].detach().clone()


def no_partial_files(folder: Path):
    return not [p for p in folder.rglob("*") if p.name.endswith(".partial")]


def test_add_log_revert_export_round_trip(tmp_path, tiny_model, _tiny_base, tiny_tok, facts, hp):
    import copy

    path = tmp_path / "led"
    led = Ledger.init(path, tiny_model, tiny_tok, hp, replay="all")
    assert led.base_fingerprint == fingerprint({TRAINED: param(_tiny_base)})
    assert led.doc["parameters"] == [TRAINED] and led.rounds == []

    first = led.add(facts[:8], name="first")
    state1 = param(tiny_model)
    second = led.add(facts[8:16])
    assert [r.name for r in led.rounds] == ["first", "round-2"]
    assert (first.n_live, second.n_live, second.index) == (8, 16, 2)
    rec = led.record("round-2")
    assert rec["replay"]["mode"] == "all" and rec["replay"]["earlier"] == 8
    assert rec["replay"]["replayed"] == 8 and rec["scores"]["n_all"] == 16
    assert led.record("first")["scores"]["own_before"] == 0.0 and first.reliability_own == 1.0
    assert second.reliability_own == 1.0 and second.reliability_all == 1.0
    assert len(rec["live_scores"]) == 16 and rec["requests"][0]["prompt"] == facts[8]["prompt"]
    assert torch.equal(param(tiny_model), led.current_tensors()[TRAINED])

    # full replay = one breadth-first run over every live edit, from the state before
    fresh = copy.deepcopy(_tiny_base)
    with torch.no_grad():
        dict(fresh.named_parameters())[TRAINED].copy_(state1)
    expect, _ = execute_locft(fresh, tiny_tok, facts[:16], hp, progress=False)
    assert torch.equal(param(tiny_model), expect[TRAINED])

    # reopened on the base model: the model gets the current state
    other = copy.deepcopy(_tiny_base)
    again = Ledger.open(path, other, tiny_tok)
    assert torch.equal(param(other), param(tiny_model)) and len(again.rounds) == 2

    # one patch from the base, applicable with locft-edit apply
    patch = tmp_path / "all.safetensors"
    meta = led.export_patch(patch)
    assert meta["n_requests"] == "16"
    target = copy.deepcopy(_tiny_base)
    apply_patch(target, patch)
    assert torch.equal(param(target), param(tiny_model))

    # revert = retrain from the base over the other live edits; recorded, nothing deleted
    before_files = sorted(p.name for p in (path / "rounds").iterdir())
    rev = led.revert("first")
    assert (rev.kind, rev.reverts, rev.name, rev.index, rev.n_live) == \
        ("revert", "first", "revert-first", 3, 8)
    assert set(before_files) < {p.name for p in (path / "rounds").iterdir()}
    alone, _ = execute_locft(copy.deepcopy(_tiny_base), tiny_tok, facts[8:16], hp,
                             progress=False)
    assert torch.equal(param(tiny_model), alone[TRAINED])  # deterministic: bit for bit
    assert [r["prompt"] for r in led.live_requests()] == [f["prompt"] for f in facts[8:16]]
    scores = led.record("revert-first")["scores"]
    assert scores["reverted_before"] == 0.0 and scores["reverted"] <= 0.15
    assert scores["all"] == 1.0 and rev.reliability_own == scores["reverted"]
    assert score_edits(tiny_model, tiny_tok, facts[8:16]) == [1.0] * 8

    for name, words in (("first", "already reverted"), ("revert-first", "is a revert"),
                        ("nope", "no round 'nope'")):
        with pytest.raises(LedgerError, match=words):
            led.revert(name)
    with pytest.raises(LedgerError, match="already has a round"):
        led.add(facts[16:18], name="round-2")


def test_sampled_replay_trains_a_bounded_sample_per_sub_run(tmp_path, tiny_model, tiny_tok,
                                                           facts, hp, monkeypatch):
    sizes = []
    real = ledger_module.execute_locft

    def spy(model, tok, requests, run_hp, **kw):
        sizes.append((len(requests), run_hp.num_epochs))
        return real(model, tok, requests, run_hp, **kw)

    monkeypatch.setattr(ledger_module, "execute_locft", spy)
    replay = ReplaySettings("sample", ratio=0.5, resample_every=4, repairs=1)
    led = Ledger.init(tmp_path / "led", tiny_model, tiny_tok, hp, replay=replay)
    led.add(facts[:4])                 # no history: one run of 30 epochs
    led.add(facts[4:8])                # 4 earlier > k = ceil(0.5 * 4) = 2: sampled
    third = led.add(facts[8:12])
    assert sizes[0] == (4, 30)
    assert all(n == 4 + 2 and epochs <= 4 for n, epochs in sizes[1:])  # new + ceil(0.5 * 4)
    rec = led.record(third.name)["replay"]
    assert rec["mode"] == "sample" and rec["earlier"] == 8 and rec["subruns"] >= 2
    assert 2 <= rec["replayed"] <= 8
    assert third.reliability_own == 1.0
    # "all" for one round overrides the ledger's default
    sizes.clear()
    led.add(facts[12:14], replay="all")
    assert sizes == [(14, 30)]


def test_rotating_sample_puts_first_ones_first_and_covers_everything():
    s = RotatingSample(10, 3, seed=0)
    seen = set()
    for _ in range(4):  # ceil(10 / 3) draws see every index
        d = s.draw()
        assert len(d) == 3 == len(set(d))
        seen.update(d)
    assert seen == set(range(10))
    assert s.draw(first=[7, 7, 2])[:2] == [7, 2]
    assert RotatingSample(5, 3, seed=1).draw(first=[4, 3, 2, 1]) == [4, 3, 2]


def test_a_later_edit_of_the_same_prompt_supersedes_the_earlier_one(tmp_path, tiny_model,
                                                                   tiny_tok, facts, hp):
    led = Ledger.init(tmp_path / "led", tiny_model, tiny_tok, hp, replay="all")
    led.add(facts[:4])
    other = next(f["target_new"] for f in facts if f["target_new"] != facts[0]["target_new"])
    fix = {"prompt": facts[0]["prompt"], "target_new": other}
    second = led.add([fix])
    assert second.n_live == 4 and led.record(second.name)["replay"]["earlier"] == 3
    assert [r["target_new"] for r in led.live_requests()] == \
        [f["target_new"] for f in facts[1:4]] + [other]
    assert len(led.record("round-1")["requests"]) == 4  # the history keeps it


def test_base_mismatch_is_refused_by_name(tmp_path, tiny_model, tiny_tok, facts, hp):
    path = tmp_path / "led"
    Ledger.init(path, tiny_model, tiny_tok, hp).add(facts[:4])
    other = build_tiny_model(len(tiny_tok), seed=1)
    before = param(other)
    with pytest.raises(BaseModelMismatch, match="another base model") as exc:
        Ledger.open(path, other, tiny_tok)
    assert str(path) in str(exc.value)
    assert torch.equal(param(other), before)  # refused before any change


def test_concurrent_writers_are_refused(tmp_path, tiny_model, tiny_tok, facts, hp):
    path = tmp_path / "led"
    led = Ledger.init(path, tiny_model, tiny_tok, hp)
    lock = path / ".lock"
    assert not lock.exists()
    lock.write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                "since": "now"}))
    with pytest.raises(LedgerLocked, match=r"locked by process .*\.lock"):
        led.add(facts[:4])
    done = subprocess.Popen(["true"])
    done.wait()
    lock.write_text(json.dumps({"pid": done.pid, "host": os.uname().nodename, "since": "x"}))
    with pytest.raises(LedgerLocked, match=f"stale lock {lock}"):
        led.add(facts[:4])
    lock.unlink()
    assert led.rounds == [] and len(Ledger.open(path).rounds) == 0

    # a second writer that opened the ledger before the first one added a round
    late = Ledger.open(path, tiny_model, tiny_tok)
    led.add(facts[:4])
    with pytest.raises(LedgerError, match="changed by another writer"):
        late.add(facts[4:8])
    assert not lock.exists() and len(Ledger.open(path).rounds) == 1


@pytest.mark.parametrize("crash", ["replace", "fsync"])
def test_a_crash_mid_write_keeps_the_previous_ledger(tmp_path, tiny_model, tiny_tok, facts, hp,
                                                    monkeypatch, crash):
    path = tmp_path / "led"
    led = Ledger.init(path, tiny_model, tiny_tok, hp)
    led.add(facts[:4])
    state, text = param(tiny_model), (path / "ledger.json").read_text()
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst):
        if Path(dst).name == "ledger.json":
            raise OSError("simulated crash")
        return real_replace(src, dst)

    def fsync(fd):  # the crash inside the temporary file of ledger.json
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith("ledger.json."):
            raise OSError("simulated crash")
        return real_fsync(fd)

    if crash == "replace":
        monkeypatch.setattr(os, "replace", replace)
    else:
        monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="simulated crash"):
        led.add(facts[4:8])
    monkeypatch.undo()
    assert (path / "ledger.json").read_text() == text
    assert len(Ledger.open(path).rounds) == 1 and no_partial_files(path)
    assert torch.equal(param(tiny_model), state) and not (path / ".lock").exists()
    led.add(facts[4:8])  # the orphaned round files are overwritten
    assert [r.name for r in Ledger.open(path).rounds] == ["round-1", "round-2"]


# --- locft-edit ledger ---------------------------------------------------------------------
@pytest.fixture
def cli_files(tmp_path, tiny_model, tiny_tok, facts, hp):
    model_dir = tmp_path / "tiny-llama"
    tiny_model.save_pretrained(model_dir)
    tiny_tok.save_pretrained(model_dir)
    (tmp_path / "hp.yaml").write_text(yaml.safe_dump(hp.to_dict()))
    (tmp_path / "a.json").write_text(json.dumps(facts[:8]))
    (tmp_path / "b.json").write_text(json.dumps(facts[8:16]))
    return model_dir, tmp_path / "hp.yaml"


def cli(*argv):
    return main(["--quiet", "ledger", *map(str, argv)])


def test_cli_init_add_log_revert_export(tmp_path, cli_files, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, hp = cli_files
    d = tmp_path / "led"
    assert cli("init", d, "--model", model_dir, "--hparams", hp, "--replay", "all") == 0
    assert "fingerprint" in capsys.readouterr().out
    assert cli("add", d, "--requests", tmp_path / "a.json", "--name", "a") == 0
    assert cli("add", d, "--requests", tmp_path / "b.json") == 0
    assert cli("revert", d, "a") == 0
    capsys.readouterr()
    assert cli("log", d) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["#", "name", "kind", "edits"] and len(lines) == 4
    assert [ln.split()[1] for ln in lines[1:]] == ["a", "round-2", "revert-a"]
    assert lines[3].split()[2:4] == ["revert", "a"]
    assert cli("log", d, "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["n_live"]) for r in rows] == [("add", 8), ("add", 16), ("revert", 8)]

    out, patch = tmp_path / "now", tmp_path / "now.safetensors"
    assert cli("export", d, "--save-model", out) == 0
    assert cli("export", d, "--patch-out", patch) == 0
    current = Ledger.open(d).current_tensors()[TRAINED]
    saved = AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    assert torch.equal(param(saved), current)
    assert main(["--quiet", "apply", str(patch), "--model", str(model_dir), "--save-model",
                 str(tmp_path / "applied")]) == 0
    applied, _ = load_model(str(tmp_path / "applied"))
    assert torch.equal(param(applied), current)


def test_cli_bad_input_is_exit_2_with_one_line(tmp_path, cli_files, tiny_tok, capsys):
    model_dir, hp = cli_files
    d = tmp_path / "led"
    other = tmp_path / "other"
    build_tiny_model(len(tiny_tok), seed=1).save_pretrained(other)
    tiny_tok.save_pretrained(other)
    assert cli("init", d, "--model", model_dir, "--hparams", hp) == 0
    capsys.readouterr()
    cases = [
        (("init", d, "--model", model_dir, "--hparams", hp), "already a ledger"),
        (("add", tmp_path, "--requests", tmp_path / "a.json"), "not a ledger"),
        (("add", d, "--requests", tmp_path / "missing.json"), "does not exist"),
        (("add", d, "--requests", tmp_path / "a.json", "--name", "bad name"), "round name"),
        (("add", d, "--requests", tmp_path / "a.json", "--model", other), "another base model"),
        (("revert", d, "nope"), "no round 'nope'"),
        (("export", d, "--patch-out", tmp_path / "p.safetensors"), "no rounds yet"),
    ]
    for argv, words in cases:
        assert cli(*argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, (argv, err)
    (d / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    assert cli("add", d, "--requests", tmp_path / "a.json") == 2
    assert f"lock file {d / '.lock'}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # export needs --save-model or --patch-out
        cli("export", d)
    assert exc.value.code == 2
    assert json.loads((d / "ledger.json").read_text())["rounds"] == []


def test_benchmark_runs_resumes_and_reports(tmp_path, capsys):
    """benchmarks/ledger.py on the tiny model: rows per mode and round plus the revert; a
    rerun adds nothing (resumed from the ledgers and the rows); report and plot."""
    import importlib.util



    spec = importlib.util.spec_from_file_location(
        "bench_ledger", Path(__file__).resolve().parents[1] / "benchmarks" / "ledger.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--model", "tiny", "--data", str(shared_file("zsre_2k.json")), "--rounds", "2",
            "--per-round", "3", "--modes", "ledger-sample", "chunks", "bf", "--quiet",
            "--out", str(tmp_path / "rows.jsonl"), "--work", str(tmp_path / "work"),
            "--set", "num_epochs=5"]
    rows = bench.main(argv)
    assert [(r["mode"], r["round"]) for r in rows] == [
        ("ledger-sample", 1), ("ledger-sample", 2), ("ledger-sample", "revert"),
        ("chunks", 1), ("chunks", 2), ("bf", 2)]
    assert rows[1]["edits_so_far"] == 6 and rows[1]["replay_earlier"] == 3
    assert rows[2]["reverted"] == "round-1" and rows[2]["edits_scored"] == 3
    assert bench.main(argv) == rows  # resumed: nothing retrained or rescored
    capsys.readouterr()
    bench.main(["--out", str(tmp_path / "rows.jsonl"), "--report", "--plot",
                str(tmp_path / "round1.png")])
    out = capsys.readouterr().out
    assert "| ledger-sample | 2 | 6 |" in out and "| round-1 (ledger-sample) |" in out
    assert (tmp_path / "round1.png").stat().st_size > 1000


def test_every_round_preserves_the_base(tmp_path, tiny_model, tiny_tok, facts, hp,
                                        monkeypatch):
    """The locality terms of round 2 keep the base model's behaviour, not round 1's (else
    locality drifts round after round): its training gets the base tensors as preserve_from."""
    base = {TRAINED: param(tiny_model)}
    given = []
    real = ledger_module.execute_locft

    def spy(*args, **kwargs):
        given.append(kwargs.get("preserve_from"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ledger_module, "execute_locft", spy)
    led = Ledger.init(tmp_path / "led", tiny_model, tiny_tok, hp, replay="all")
    led.add(facts[:4])
    led.add(facts[4:8])
    assert given[0] is None and set(given[1]) == {TRAINED}
    assert torch.equal(given[1][TRAINED], base[TRAINED])
