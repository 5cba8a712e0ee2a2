"""Reliability: nothing half-edited, every bad input refused by name, long runs resumable.

Tiny random Llama (conftest fixtures); the kill -9 test runs tests/checkpoint_worker.py in
real subprocesses.
"""
import copy
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import locft_easyedit.locft.locft_main as locft_main
from locft_easyedit import (CheckpointError, LocFTHyperParams, RequestError, TrainingDiverged,
                            apply_locft_to_model, execute_locft, restore_weights,
                            validate_requests)
from locft_easyedit.locft.checkpoint import FILENAME
from locft_easyedit.locft.losses import StepLoss
from locft_easyedit.locft.training import breadth_first

from conftest import state_snapshot

REPO = Path(__file__).resolve().parents[1]
DOWN = "model.layers.2.mlp.down_proj.weight"
PROPERTY = settings(max_examples=int(os.environ.get("LOCFT_HYPOTHESIS_EXAMPLES", 50)),
                    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                          HealthCheck.too_slow])


def unchanged(before, model) -> bool:
    after = model.state_dict()
    return all(torch.equal(before[k], after[k]) for k in before)


def short(hp, **kw):
    return dataclasses.replace(hp, **{"num_epochs": 3, **kw})


class OnForward:
    """A forward hook that calls ``action(output)`` on chosen calls (1-based)."""

    def __init__(self, module, action, when):
        self.calls, self.action, self.when = 0, action, when
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.calls += 1
        return self.action(output) if self.when(self.calls) else None

    def remove(self):
        self.handle.remove()


def raiser(exc):
    def action(output):
        raise exc
    return action


# --- 1. failure atomicity ---------------------------------------------------------------------
@pytest.mark.parametrize("layer, call", [(3, 5), (0, 1)], ids=["training", "prefix-cache"])
def test_out_of_memory_says_what_to_change(tiny_model, tiny_tok, facts, tiny_hp, layer, call):
    before = state_snapshot(tiny_model)
    hook = OnForward(tiny_model.model.layers[layer],
                     raiser(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")),
                     lambda n: n == call)
    try:
        with pytest.raises(torch.OutOfMemoryError) as err:
            apply_locft_to_model(tiny_model, tiny_tok, facts, short(tiny_hp), progress=False)
    finally:
        hook.remove()
    msg = str(err.value)
    for word in ("Tried to allocate 2 GiB", "nothing was changed", "mini_batch_size (now 8)",
                 "max_length (now 128)", "bfloat16", "prefix_cache_max_gb"):
        assert word in msg
    assert unchanged(before, tiny_model)
    assert all(p.requires_grad for p in tiny_model.parameters())


def test_host_memory_error_keeps_its_type(tiny_model, tiny_tok, facts, tiny_hp):
    before = state_snapshot(tiny_model)
    hook = OnForward(tiny_model.model.layers[3], raiser(MemoryError()), lambda n: n == 2)
    try:
        with pytest.raises(MemoryError, match="smaller mini_batch_size"):
            apply_locft_to_model(tiny_model, tiny_tok, facts, short(tiny_hp), progress=False)
    finally:
        hook.remove()
    assert unchanged(before, tiny_model)


def test_inf_loss_stops_and_leaves_model_unchanged(tiny_model, tiny_tok, facts, tiny_hp):
    """Logits of -inf on every token but id 0: the cross-entropy is +inf, not NaN."""
    def to_inf(logits):
        bias = torch.full_like(logits, float("-inf"))
        bias[..., 0] = 0.0
        return logits * 0 + bias   # keeps the graph, so backward runs as usual

    before = state_snapshot(tiny_model)
    hook = OnForward(tiny_model.lm_head, to_inf, lambda n: n >= 3)
    try:
        with pytest.raises(TrainingDiverged, match=r"loss became inf at epoch 1, mini-batch \d"):
            apply_locft_to_model(tiny_model, tiny_tok, facts, short(tiny_hp), progress=False)
    finally:
        hook.remove()
    assert unchanged(before, tiny_model)


def test_non_finite_loss_is_caught_at_the_step_that_made_it(tiny_hp):
    """The loop checks each mini-batch's loss before its optimizer step."""
    w = torch.zeros(3, requires_grad=True)
    losses = iter([1.0, 1.0, float("inf")])
    seen = []

    def loss_fn(idx, denom):
        seen.append(w.detach().clone())
        return StepLoss(next(losses), lambda scale=1.0: setattr(w, "grad", torch.ones(3)))

    with pytest.raises(TrainingDiverged, match="loss became inf at epoch 1, mini-batch 3"):
        breadth_first(loss_fn, 24, {"w": w}, tiny_hp, progress=False)
    assert len(seen) == 3 and not torch.equal(seen[1], seen[2])  # two steps, then no third
    assert torch.equal(w.detach(), seen[2])


def test_interrupt_during_write_back_restores(tiny_model, tiny_tok, facts, tiny_hp, monkeypatch):
    """Ctrl-C after some tensors of a whole-layer edit were written: all are put back."""
    hp = short(tiny_hp, rewrite_module_tmp="model.layers.{}", num_epochs=1)
    before = state_snapshot(tiny_model)
    real_execute, real_copy = locft_main.edit, torch.Tensor.copy_
    writes = {"n": 0}

    def copy_(self, src, *a, **kw):
        writes["n"] += 1
        if writes["n"] == 4:
            raise KeyboardInterrupt
        return real_copy(self, src, *a, **kw)

    def execute_then_arm(*a, **kw):
        out = real_execute(*a, **kw)
        monkeypatch.setattr(torch.Tensor, "copy_", copy_)
        return out

    monkeypatch.setattr(locft_main, "edit", execute_then_arm)
    with pytest.raises(KeyboardInterrupt):
        apply_locft_to_model(tiny_model, tiny_tok, facts, hp, progress=False)
    monkeypatch.undo()
    assert writes["n"] > 9  # 3 written, the 4th interrupted, then 9 restored
    assert unchanged(before, tiny_model)


# --- 2. validation before any work -------------------------------------------------------------
GOOD = {"prompt": "The capital of Aldor is", "target_new": "Paris"}


@pytest.mark.parametrize("requests, message", [
    ([], "no edit requests"),
    ("The capital of Aldor is", "requests must be a list of dicts, got str"),
    (None, "requests must be a list of dicts, got NoneType"),
    ([GOOD, 7], "request 1: must be a dict, got int 7"),
    ([{"target_new": "Paris"}], "request 0: missing field 'prompt'"),
    ([{"prompt": "p", "target": "x"}], "request 0: missing field 'target_new' (found ['target']"),
    ([{"prompt": "p", "target_new": "   "}], "request 0: field 'target_new' is empty: '   '"),
    ([{"prompt": ["p"], "target_new": "x"}], "request 0: field 'prompt' must be a string, got list ['p']"),
    ([{"prompt": "p", "target_new": {"str": 5}}], "field 'target_new' must be a string, got int 5"),
    ([{"prompt": "p\ud800", "target_new": "x"}], "request 0: field 'prompt' is not valid text"),
    ([{**GOOD, "rephrase_prompt": 3}], "request 0: field 'rephrase_prompt' must be a string, got int 3"),
    ([{**GOOD, "rephrase_prompt": ["a"]}], "field 'rephrase_prompt' must be a string, got list"),
    ([{**GOOD, "subject": {"x": 1}}], "field 'subject' must be a string, got dict"),
    ([{**GOOD, "ground_truth": [1]}], "request 0: field 'ground_truth'[0] must be a string, got int 1"),
    ([{**GOOD, "locality": "nq"}], "request 0: field 'locality' must be a dict {name:"),
    ([{**GOOD, "locality": {"nq": "q"}}], "field 'locality'['nq'] must be a dict with 'prompt'"),
    ([{**GOOD, "locality": {"nq": {"prompt": "q"}}}], "field 'locality'['nq'] has no 'ground_truth'"),
    ([{**GOOD, "locality": {"nq": {"prompt": ["a", "b"], "ground_truth": ["c"]}}}],
     "field 'locality'['nq']: 2 prompts but 1 ground_truth answers"),
    ([{**GOOD, "portability": {"one": {"prompt": 3, "ground_truth": "x"}}}],
     "field 'portability'['one']['prompt'] must be a string, got int 3"),
    ([{"prompt": "p", "target_new": "x " * 200}], "request 0: target"),   # longer than max_length
])
def test_bad_requests_are_named(tiny_model, tiny_tok, tiny_hp, requests, message):
    before = state_snapshot(tiny_model)
    with pytest.raises(RequestError) as err:
        apply_locft_to_model(tiny_model, tiny_tok, requests, tiny_hp, progress=False)
    assert message in str(err.value)
    assert unchanged(before, tiny_model)


def test_duplicates_same_target_train_conflicts_switchable(tiny_model, tiny_tok, tiny_hp, caplog):
    same = [GOOD, dict(GOOD), {**GOOD, "target_new": " Paris"}]   # the leading space is implied
    assert len(validate_requests(same, conflicting_targets="error")) == 3
    conflict = [GOOD, {**GOOD, "target_new": "Lima"}]
    hp = short(tiny_hp, num_epochs=1)  # the default: warn and train both, as the authors do
    assert hp.conflicting_targets == "warn"
    with caplog.at_level(logging.WARNING):
        apply_locft_to_model(tiny_model, tiny_tok, conflict, hp, progress=False)
    assert caplog.text.count("already has target") == 1
    assert ("1 request(s) give a prompt a second, different target (1 prompt(s)): request 1: prompt "
            "'The capital of Aldor is' already has target 'Paris' (request 0), now 'Lima'; "
            "both are trained") in caplog.text
    before = state_snapshot(tiny_model)
    with pytest.raises(RequestError, match="request 1: prompt 'The capital of Aldor is' already "
                                           "has target 'Paris' \\(request 0\\), now 'Lima'"):
        apply_locft_to_model(tiny_model, tiny_tok, conflict,
                             short(hp, conflicting_targets="error"), progress=False)
    assert unchanged(before, tiny_model)
    with pytest.raises(ValueError, match="conflicting_targets"):
        validate_requests(conflict, conflicting_targets="ignore")


def test_many_conflicts_are_counted_and_the_first_shown(caplog):
    reqs = [{"prompt": f"p{i}", "target_new": t} for i in range(5) for t in ("a", "b")]
    with caplog.at_level(logging.WARNING):
        assert len(validate_requests(reqs)) == 10
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("5 request(s) give a prompt a second, different target (5 prompt(s)): "
                           "request 1: "
                           "prompt 'p0' already has target 'a' (request 0), now 'b'; request 3")
    assert "; and 2 more; both are trained" in line
    with pytest.raises(RequestError, match="^5 request\\(s\\) .*; and 2 more; drop one of each"):
        validate_requests(reqs, conflicting_targets="error")


def test_rome_layout_target_is_unwrapped(tiny_model, tiny_tok, tiny_hp):
    reqs = validate_requests([{"prompt": "p", "target_new": {"str": "Paris"}}])
    assert reqs[0]["target_new"] == "Paris"


def test_non_utf8_yaml(tmp_path):
    path = tmp_path / "hp.yaml"
    path.write_bytes(b"\xff\xfe lr: 1")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        LocFTHyperParams.from_hparams(path)


# --- property-based: malformed requests and YAML files ----------------------------------------
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(),
                    st.text(max_size=12), st.binary(max_size=4))
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
TEXT = st.one_of(st.sampled_from(["The capital of Aldor is", "Paris", " Rome", "", "  ", "\n"]),
                 st.text(max_size=25))
FIELD = st.one_of(TEXT, TEXT, JUNK, st.fixed_dictionaries({"str": st.one_of(TEXT, JUNK)}))
PROBE = st.fixed_dictionaries({}, optional={"prompt": st.one_of(TEXT, st.lists(TEXT, max_size=2), JUNK),
                                            "ground_truth": st.one_of(TEXT, st.lists(TEXT, max_size=2), JUNK)})
PROBES = st.one_of(JUNK, st.dictionaries(st.text(max_size=5), st.one_of(PROBE, JUNK), max_size=2))
REQUEST = st.fixed_dictionaries(
    {}, optional={"prompt": FIELD, "target_new": FIELD, "rephrase_prompt": FIELD,
                  "ground_truth": FIELD, "subject": FIELD, "locality": PROBES,
                  "portability": PROBES, "case_id": JUNK})
ALMOST = st.fixed_dictionaries(   # well-formed but for at most one field
    {"prompt": st.sampled_from(["The capital of Aldor is", "Brenna was born in", "Fosk works for"]),
     "target_new": st.sampled_from(["Paris", " Lima", "Oslo"])},
    optional={"rephrase_prompt": FIELD, "locality": PROBES})
REQUESTS = st.one_of(JUNK, REQUEST, st.lists(st.one_of(REQUEST, REQUEST, JUNK), max_size=4),
                     st.lists(ALMOST, min_size=1, max_size=3))


@PROPERTY
@given(requests=REQUESTS)
def test_property_malformed_requests(_tiny_base, tiny_tok, requests):
    """Only RequestError / ValueError naming a request come out, and a rejected input leaves
    the model as it was (an accepted one is trained for one epoch and undone)."""
    model = copy.deepcopy(_tiny_base)
    before = state_snapshot(model)
    hp = LocFTHyperParams(model_name="tiny", layers=[2], num_epochs=1, mini_batch_size=4,
                          device="cpu")
    try:
        _, orig = apply_locft_to_model(model, tiny_tok, requests, hp, return_orig_weights=True,
                                       progress=False)
    except ValueError as exc:
        event(f"refused: {type(exc).__name__}")
        assert "request" in str(exc), str(exc)
        assert unchanged(before, model)
        return
    event("accepted and trained")
    restore_weights(model, orig)


CANDIDATES = {
    "alg_name": ["LocFT", "FT", "", None], "model_name": ["tiny", "", "embedded:nope", 3],
    "layers": [[2], [0, 3], [4], [-1], [], [2, 2], "2", 2, [True]],
    "rewrite_module_tmp": ["model.layers.{}.mlp.down_proj.weight", "model.layers.{}.mlp",
                           "model.layers.{}.mlp.nope", "model.{}.{}", "{0}{1}", "", [], None],
    "lr": [1e-2, "5e-4", 0, -1, "nan", ".inf", "fast", True, 10**400],
    "weight_decay": [0.0, -0.1, "nan"], "num_epochs": [1, 0, -2, 2.5, "1"],
    "mini_batch_size": [4, 0, 1, 10**9], "batch_size": [1, 0, -1],
    "loss_threshold": [0.01, -1, "nan", 0], "append_eos": [True, False, "yes", 1],
    "pipeline": ["breadth_first", "depth_first", "sideways", 1],
    "seed": [0, 42, -1, 2**64, "1", 1.5], "max_length": [128, 2, 1, 5, 0, "x"],
    "model_parallel": [False, "no"], "dtype": [None, "float32", "float8", 16],
    "implementation": ["fast", "reference", "slow"], "prefix_cache_max_gb": [0, 4, -1, ".nan"],
    "device": [None, "cpu", "cuda:0", "cuda:x", "gpu", -1, 0, True],
    "fp16": [False, True], "bf16": [False, True],
    "checkpoint_dir": [None, "", "CKPT", "CKPT/sub", 3],
    "checkpoint_every_epochs": [1, 0, -1, 1.5], "checkpoint_every_minutes": [None, 0, 1e-6, -1],
    "resume": [True, False, "yes"], "conflicting_targets": ["error", "warn", "ignore"],
}
FIELDS = [f.name for f in dataclasses.fields(LocFTHyperParams)]
assert set(CANDIDATES) <= set(FIELDS)
YAML_DOC = st.fixed_dictionaries(   # fields added later get junk values only
    {}, optional={k: st.one_of(st.sampled_from(CANDIDATES[k]), st.sampled_from(CANDIDATES[k]),
                               JUNK) if k in CANDIDATES else JUNK for k in FIELDS})
FEW_KEYS = st.lists(st.sampled_from(sorted(CANDIDATES)).flatmap(
    lambda k: st.tuples(st.just(k), st.sampled_from(CANDIDATES[k]))), max_size=3).map(dict)
RAW = st.one_of(st.text(max_size=60), st.binary(max_size=30),
                st.builds(lambda d, e: yaml.safe_dump({**d, **e}), YAML_DOC,
                          st.dictionaries(st.text(max_size=6), JUNK, max_size=2)))


@PROPERTY
@given(doc=st.one_of(YAML_DOC, FEW_KEYS, FEW_KEYS, RAW))
def test_property_malformed_hparams_files(_tiny_base, tiny_tok, facts, doc):
    """Only ValueError (naming the file or key) or TrainingDiverged comes out of reading and
    using a YAML file, and a rejected one leaves the model as it was."""
    model = copy.deepcopy(_tiny_base)
    before = state_snapshot(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hp.yaml"
        if isinstance(doc, dict):   # a tiny-model run, but for the generated keys
            doc = {"model_name": "tiny", "layers": [2], **doc}
            if isinstance(doc.get("checkpoint_dir"), str) and doc["checkpoint_dir"].strip():
                doc["checkpoint_dir"] = os.path.join(tmp, "ckpt")   # only ever inside tmp
            doc = yaml.safe_dump(doc)
        if isinstance(doc, bytes):
            path.write_bytes(doc)
        else:
            path.write_text(doc)
        try:   # a file that leaves model_name out must not convert the embedded model here
            with mock.patch("locft_easyedit.models.default_model_dir", lambda: "/no/model"):
                hp = LocFTHyperParams.from_hparams(path)
        except ValueError as exc:
            event("file refused")
            assert str(path) in str(exc) or "embedded model" in str(exc), str(exc)
            return
        if hp.checkpoint_dir is not None:
            hp.checkpoint_dir = os.path.join(tmp, "ckpt")
        hp = dataclasses.replace(hp, num_epochs=1, mini_batch_size=min(hp.mini_batch_size, 8))
        try:
            _, orig = apply_locft_to_model(model, tiny_tok, facts[:8], hp,
                                           return_orig_weights=True, progress=False)
        except (ValueError, TrainingDiverged) as exc:
            event(f"refused for this model: {type(exc).__name__}")
            assert str(exc)
            assert unchanged(before, model)
            return
        event("accepted and trained")
        restore_weights(model, orig)


# --- 3. checkpoints and resume -----------------------------------------------------------------
def ckpt_hp(hp, tmp_path, **kw):
    return short(hp, **{"checkpoint_dir": str(tmp_path / "ck"), "checkpoint_every_minutes": 1e-9,
                        **kw})


def interrupted_then_resumed(model, tok, facts, hp, stop_at):
    hook = OnForward(model.model.layers[3], raiser(KeyboardInterrupt), lambda n: n == stop_at)
    try:
        with pytest.raises(KeyboardInterrupt):
            execute_locft(model, tok, facts, hp, progress=False)
    finally:
        hook.remove()
    saved = torch.load(Path(hp.checkpoint_dir) / FILENAME, weights_only=True)
    return execute_locft(model, tok, facts, hp, progress=False), saved


@pytest.mark.parametrize("pipeline", ["breadth_first", "depth_first"])
def test_resume_after_interrupt_gives_same_deltas(tiny_model, tiny_tok, facts, tiny_hp, tmp_path,
                                                  pipeline):
    hp = ckpt_hp(tiny_hp, tmp_path, pipeline=pipeline)
    data = facts if pipeline == "breadth_first" else facts[:6]
    ref, ref_res = execute_locft(tiny_model, tiny_tok, data,
                                 dataclasses.replace(hp, checkpoint_dir=None), progress=False)
    (got, res), saved = interrupted_then_resumed(tiny_model, tiny_tok, data, hp, stop_at=10)
    end = hp.num_epochs if pipeline == "breadth_first" else len(data)  # DF: requests done
    assert 0 < saved["epoch"] + saved["batch"] and saved["epoch"] < end
    assert all(torch.equal(ref[n], got[n]) for n in ref)
    assert res == ref_res


def test_finished_checkpoint_returns_at_once(tiny_model, tiny_tok, facts, tiny_hp, tmp_path):
    hp = ckpt_hp(tiny_hp, tmp_path)
    first, res1 = execute_locft(tiny_model, tiny_tok, facts, hp, progress=False)
    hook = OnForward(tiny_model.model.layers[3], lambda out: None, lambda n: True)
    try:
        again, res2 = execute_locft(tiny_model, tiny_tok, facts, hp, progress=False)
    finally:
        hook.remove()
    assert hook.calls == 0 and res1 == res2
    assert all(torch.equal(first[n], again[n]) for n in first)


def test_checkpoint_of_another_run_is_refused(tiny_model, tiny_tok, facts, tiny_hp, tmp_path):
    hp = ckpt_hp(tiny_hp, tmp_path, num_epochs=1)
    execute_locft(tiny_model, tiny_tok, facts, hp, progress=False)
    before = state_snapshot(tiny_model)
    cases = [(facts, dataclasses.replace(hp, lr=0.5), "its hparams differ"),
             (facts[:-1], hp, "its requests differ"),
             (facts, dataclasses.replace(hp, num_epochs=2), "its hparams differ")]
    for reqs, other, words in cases:
        with pytest.raises(CheckpointError, match=words) as err:
            apply_locft_to_model(tiny_model, tiny_tok, reqs, other, progress=False)
        assert "resume: false" in str(err.value) and str(tmp_path / "ck") in str(err.value)
        assert unchanged(before, tiny_model)
    edited, _ = apply_locft_to_model(tiny_model, tiny_tok, facts, short(tiny_hp, num_epochs=1),
                                     copy=True, progress=False)
    with pytest.raises(CheckpointError, match="its base tensors differ"):
        execute_locft(edited, tiny_tok, facts, hp, progress=False)
    # resume: false starts over and overwrites it
    execute_locft(tiny_model, tiny_tok, facts, dataclasses.replace(hp, lr=0.5, resume=False),
                  progress=False)
    execute_locft(tiny_model, tiny_tok, facts, dataclasses.replace(hp, lr=0.5), progress=False)


def test_unusable_checkpoint_and_folder(tiny_model, tiny_tok, facts, tiny_hp, tmp_path):
    hp = ckpt_hp(tiny_hp, tmp_path)
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / FILENAME).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable.*resume: false"):
        execute_locft(tiny_model, tiny_tok, facts, hp, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="key 'checkpoint_dir': cannot create"):
        execute_locft(tiny_model, tiny_tok, facts,
                      dataclasses.replace(hp, checkpoint_dir=str(tmp_path / "file" / "ck")),
                      progress=False)


def test_checkpoint_write_is_atomic(tiny_model, tiny_tok, facts, tiny_hp, tmp_path, monkeypatch):
    """A save that dies half-way leaves the previous checkpoint whole and no temp file."""
    hp = ckpt_hp(tiny_hp, tmp_path, checkpoint_every_minutes=None, checkpoint_every_epochs=1)
    execute_locft(tiny_model, tiny_tok, facts, dataclasses.replace(hp, num_epochs=1),
                  progress=False)
    path = tmp_path / "ck" / FILENAME
    good = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, fh, *a, **kw):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        execute_locft(tiny_model, tiny_tok, facts, dataclasses.replace(hp, resume=False),
                      progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == good
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [FILENAME]


def run_worker(out, ckpt="-", *flags, **popen):
    cmd = [sys.executable, str(REPO / "tests" / "checkpoint_worker.py"), str(out), str(ckpt),
           *flags]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, cwd=REPO, env=env, **popen)


def test_kill_9_then_resume_gives_same_deltas(tmp_path):
    """A real process killed with SIGKILL after its first checkpoint; a new process resumes it
    and ends with exactly the deltas of an uninterrupted run (same seed, CPU, one thread)."""
    ckpt = tmp_path / "ck"
    victim = run_worker(tmp_path / "never.pt", ckpt, "--slow")
    deadline = time.monotonic() + 120
    while not (ckpt / FILENAME).exists():
        assert victim.poll() is None, "the worker ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(60) == -signal.SIGKILL
    saved = torch.load(ckpt / FILENAME, weights_only=True)
    assert saved["epoch"] < 6, "killed too late: the run had finished"
    assert not (tmp_path / "never.pt").exists()

    assert run_worker(tmp_path / "ref.pt").wait(300) == 0
    assert run_worker(tmp_path / "resumed.pt", ckpt).wait(300) == 0
    ref = torch.load(tmp_path / "ref.pt", weights_only=True)
    got = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert list(got["weights"]) == [DOWN]
    assert torch.equal(ref["weights"][DOWN], got["weights"][DOWN])
    assert got["result"] == ref["result"]
