"""The EasyEdit adapter (locft_easyedit/easyedit.py).

Tests marked ``easyedit`` run against the real EasyEdit (run every such test of the suite with
the EasyEdit virtual environment: ``$EASYEDIT_PY -m pytest -m easyedit``); the others run
everywhere, CI included.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import torch

from locft_easyedit import LocFTHyperParams, apply_locft_to_model, restore_weights
from locft_easyedit import easyedit as ee
from locft_easyedit.datasets import from_counterfact, load_dataset

REPO = Path(__file__).resolve().parents[1]
HPARAMS = REPO / "hparams" / "smollm2-135m.yaml"
# the tensor the shipped YAML trains
TRAINED = "model.layers.{}.mlp.down_proj.weight".format(
    LocFTHyperParams.from_hparams(HPARAMS).layers[0])

# --- without EasyEdit ------------------------------------------------------------------------
def test_register_is_a_silent_noop_without_easyedit(monkeypatch, caplog):
    monkeypatch.setattr(ee, "easyedit_available", lambda: False)
    with caplog.at_level(logging.INFO):
        assert ee.register() is False
    assert not caplog.records


def test_register_swallows_import_error(monkeypatch, caplog):
    monkeypatch.setattr(ee, "easyedit_available", lambda: True)
    monkeypatch.setitem(sys.modules, "easyeditor.editors.batch_editor", None)  # -> ImportError
    with caplog.at_level(logging.INFO):
        assert ee.register() is False
    assert not caplog.records


def test_edit_with_a_large_batch_size_points_to_batch_edit():
    hp = LocFTHyperParams(model_name="x", device="cpu", batch_size=100)
    with pytest.raises(ValueError, match="batch_edit"):
        ee.check_single_edit(hp)
    ee.check_single_edit(LocFTHyperParams(model_name="x", device="cpu", batch_size=1))


def test_loaders_without_easyedit_keep_easyedit_conventions(zsre_path, monkeypatch):
    monkeypatch.setattr(ee, "easyedit_available", lambda: False)
    reqs = ee.load_dataset_easyedit(zsre_path, n=3)
    assert reqs == load_dataset(zsre_path, "zsre", n=3)
    assert reqs[0]["locality"]["neighborhood"]["prompt"].startswith("nq question: ")
    cf = ee.load_dataset_easyedit(zsre_path.parent / "counterfact_2k.json", n=2)
    assert cf[0]["locality"]["neighborhood"]["ground_truth"] and cf[0]["rephrase_prompt"]


def test_rome_layout_uses_every_neighbourhood_prompt():
    record = {"case_id": 7, "requested_rewrite": {
        "prompt": "{} is a citizen of", "subject": "Alice Example",
        "target_new": {"str": "Peru"}, "target_true": {"str": "Chile"}},
        "paraphrase_prompts": ["Alice Example holds a passport of"],
        "neighborhood_prompts": ["Bob is a citizen of", "Carol is a citizen of"]}
    req = from_counterfact(record)
    assert req["prompt"] == "Alice Example is a citizen of" and req["target_new"] == "Peru"
    assert req["locality"] == {"neighborhood": {"prompt": record["neighborhood_prompts"],
                                                "ground_truth": ["Chile", "Chile"]}}
    assert ee._from_counterfact_dataset(record)["locality"] == req["locality"]


def test_batch_edit_kwargs_and_summary(zsre_path):
    reqs = load_dataset(zsre_path, "zsre", n=3)
    kw = ee.batch_edit_kwargs(reqs)
    assert kw["prompts"] == [r["prompt"] for r in reqs]
    assert len(kw["rephrase_prompts"]) == 3
    assert len(kw["locality_inputs"]["neighborhood"]["ground_truth"]) == 3
    metrics = [{"pre": {"rewrite_acc": [0.0]}, "post": {"rewrite_acc": [1.0],
                                                       "rephrase_acc": [0.5],
                                                       "locality": {"n_acc": [1.0, 0.0],
                                                                    "n_output": [[1]]}}},
               {"pre": {"rewrite_acc": [0.5]}, "post": {"rewrite_acc": [0.5],
                                                       "rephrase_acc": [1.0],
                                                       "locality": {"n_acc": [1.0]}}}]
    assert ee.summarize(metrics) == {"n": 2, "pre_rewrite_acc": 0.25, "post_rewrite_acc": 0.75,
                                     "post_rephrase_acc": 0.75, "post_locality": 0.75}


# --- against the real EasyEdit ---------------------------------------------------------------
@pytest.mark.easyedit
def test_registration_is_idempotent():
    from easyeditor.editors.batch_editor import BatchEditor
    from easyeditor.util.alg_dict import ALG_DICT

    assert ee.register() is True
    first = BatchEditor.is_batchable_method
    assert ee.register() is True
    assert BatchEditor.is_batchable_method is first  # not wrapped twice
    assert ALG_DICT["LocFT"] is apply_locft_to_model
    assert BatchEditor.is_batchable_method("LocFT") and BatchEditor.is_batchable_method("FT")
    assert not BatchEditor.is_batchable_method("ROME")


@pytest.mark.easyedit
@pytest.mark.parametrize("name", ["zsre_2k.json", "counterfact_2k.json"])
def test_easyedit_loaders_give_the_same_requests(name, zsre_path):
    path = zsre_path.parent / name
    ours = load_dataset(path, n=20)
    theirs = ee.load_dataset_easyedit(path, n=20)
    keys = ("prompt", "target_new", "ground_truth", "rephrase_prompt", "locality")
    assert [{k: r.get(k) for k in keys} for r in theirs] == \
           [{k: r.get(k) for k in keys} for r in ours]


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    """EasyEdit's BaseEditor on the embedded model, built (and used) in a temporary folder:
    EasyEdit writes ./logs into the working directory."""
    from easyeditor import BaseEditor

    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("easyedit_cwd"))
    try:
        hp = LocFTHyperParams.from_hparams(HPARAMS)
        assert hp.model_name == "embedded:smollm2-135m"  # parsing only parses
        editor = BaseEditor.from_hparams(hp)  # the registration resolves it where EasyEdit loads
        assert "llama" in editor.model_name.lower() and Path(editor.model_name).is_dir()
        yield editor
    finally:
        os.chdir(cwd)


@pytest.fixture
def requests4(zsre_path):
    return load_dataset(zsre_path, "zsre", n=4)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.easyedit
def test_batch_edit_is_one_breadth_first_run(editor, requests4, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _snapshot(editor.model)
    metrics, edited, weights_copy = editor.batch_edit(**ee.batch_edit_kwargs(requests4),
                                                      sequential_edit=False, verbose=False)
    s = ee.summarize(metrics)
    assert s["n"] == 4
    assert s["pre_rewrite_acc"] < 0.5            # measured 0.08
    assert s["post_rewrite_acc"] >= 0.9          # measured 1.00
    assert s["post_rephrase_acc"] >= 0.5         # measured 0.67 (layer 26, preserve_weight 4)
    assert s["post_locality"] >= 0.5             # measured 0.75
    assert list(weights_copy) == [TRAINED]
    after = _snapshot(editor.model)              # sequential_edit=False: EasyEdit restored it
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.easyedit
def test_lifelong_edit_scores_on_the_final_model(editor, requests4, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _snapshot(editor.model)
    res = ee.lifelong_edit(editor, requests4, chunk_size=2)
    try:
        assert len(res.metrics) == 4 and res.edited_model is editor.model
        assert {"pre", "post", "case_id", "requested_rewrite"} <= set(res.metrics[0])
        assert "neighborhood_acc" in res.metrics[0]["post"]["locality"]
        assert res.summary["pre_rewrite_acc"] < 0.5
        assert res.summary["post_rewrite_acc"] >= 0.9     # measured 1.00
        name = TRAINED
        assert torch.equal(res.weights_copy[name], before[name])  # the unedited original
        assert not torch.equal(dict(editor.model.named_parameters())[name], before[name])
        # post scores are those of the final model: rescoring now gives the same numbers
        again = ee._score(editor, res.metrics[0]["requested_rewrite"], "token_em", False)
        assert again["rewrite_acc"] == res.metrics[0]["post"]["rewrite_acc"]
    finally:
        restore_weights(editor.model, res.weights_copy)
    assert torch.equal(dict(editor.model.named_parameters())[name], before[name])


@pytest.mark.easyedit
def test_sequential_edit_needs_batch_size_one(editor, requests4, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kw = ee.batch_edit_kwargs(requests4[:2])
    with pytest.raises(ValueError, match="batch_edit"):
        editor.edit(**kw, sequential_edit=True, verbose=False)
    # batch_size 1: edit() runs the depth-first pipeline, one request at a time
    before = _snapshot(editor.model)
    monkeypatch.setattr(editor.hparams, "batch_size", 1)
    name = TRAINED
    try:
        metrics, edited, _ = editor.edit(**kw, sequential_edit=True, verbose=False)
        assert len(metrics) == 2
        # EasyEdit scores each request right after its own edit
        assert ee.summarize(metrics)["post_rewrite_acc"] >= 0.9   # measured 1.00
        assert not torch.equal(dict(edited.named_parameters())[name], before[name])
    finally:  # sequential edits accumulate in editor.model: put the original back
        restore_weights(editor.model, {name: before[name]})


@pytest.mark.easyedit
def test_lifelong_edit_with_replay_trains_each_chunk_with_the_earlier_ones(
        editor, requests4, tmp_path, monkeypatch):
    """replay="all": the second chunk is one breadth-first run over both chunks, from the
    state the first left (the ledger's mechanism, locft_easyedit.ledger.replay_train)."""
    from locft_easyedit import ledger

    monkeypatch.chdir(tmp_path)
    runs, real = [], ledger.execute_locft

    def spy(model, tok, requests, hp, **kw):
        runs.append([r["prompt"] for r in requests])
        return real(model, tok, requests, hp, **kw)

    monkeypatch.setattr(ledger, "execute_locft", spy)
    before = _snapshot(editor.model)
    res = ee.lifelong_edit(editor, requests4, chunk_size=2, replay="all")
    try:
        prompts = [r["prompt"] for r in requests4]
        assert runs == [prompts[:2], prompts]
        assert res.summary["post_rewrite_acc"] >= 0.9
        assert torch.equal(res.weights_copy[TRAINED], before[TRAINED])
    finally:
        restore_weights(editor.model, res.weights_copy)
    with pytest.raises(ValueError, match="replay mode"):
        ee.lifelong_edit(editor, requests4, chunk_size=2, replay="some")
