"""LoRA / AdaLoRA tuning (peft adapters on the selected modules) on the tiny random Llama."""
import copy
import dataclasses
import json

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from locft_easyedit import (LocFTHyperParams, TrainingDiverged, apply_locft_to_model,
                            restore_weights)
from locft_easyedit.locft import execute_adapter
from locft_easyedit.locft.adapters import (has_adapters, load_adapter, merge_adapter,
                                     remove_adapter, save_adapter)
from locft_easyedit.evaluate import token_accuracy

from conftest import nan_at_forward, state_snapshot

DOWN = "model.layers.2.mlp.down_proj"
# Merged vs unmerged adapter: float32 reassociation only (measured max |diff| ~1e-6 on logits
# of magnitude ~1); the bound below is stated for this tiny model.
MERGE_ATOL = 1e-4


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine oversubscribed threads slow these 10x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def lora_hp(tiny_hp):
    # lr 3e-2, rank 16, 60 epochs of 4 mini-batches: measured BF reliability 1.00 on 32 facts.
    return dataclasses.replace(tiny_hp, tuning="lora", lr=3e-2, lora_rank=16)


def with_tuning(hp, tuning, **changes):
    """``hp`` switched to ``tuning``; AdaLoRA has no lora_rank (init_r / target_r instead), so
    it goes back to its default there (a non-default one is refused)."""
    if tuning == "adalora":
        changes.setdefault("lora_rank", 8)
    return dataclasses.replace(hp, tuning=tuning, **changes)


def reliability(model, tok, facts):
    acc = token_accuracy(model, tok, [f["prompt"] for f in facts], [f["target_new"] for f in facts])
    return sum(acc) / len(acc)


def logits(model, tok, facts):
    enc = tok([f["prompt"] + " " + f["target_new"] for f in facts], return_tensors="pt",
              padding=True)
    with torch.no_grad():
        return model(**enc).logits


def wrapped_modules(model):
    return sorted(n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer))


@pytest.mark.parametrize("template, expected", [
    ("model.layers.{}.mlp.down_proj.weight", [DOWN]),
    ("model.layers.{}.mlp", [f"model.layers.2.mlp.{p}_proj" for p in ("down", "gate", "up")]),
    ("model.layers.{}", sorted([f"model.layers.2.mlp.{p}_proj" for p in ("down", "gate", "up")] +
                               [f"model.layers.2.self_attn.{p}_proj" for p in "qkvo"])),
])
@pytest.mark.parametrize("tuning", ["lora", "adalora"])
def test_adapters_only_on_selected_linear_modules(tiny_model, tiny_tok, facts, lora_hp, template,
                                                  expected, tuning):
    hp = with_tuning(lora_hp, tuning, rewrite_module_tmp=template, num_epochs=1)
    peft_model, _ = execute_adapter(tiny_model, tiny_tok, facts, hp, progress=False)
    inner = peft_model.base_model.model
    assert inner is tiny_model
    assert sorted(n[len("base_model.model."):] for n in wrapped_modules(peft_model)) == expected
    lora = {n.split(".lora_")[0] for n, _ in inner.named_parameters() if "lora_" in n}
    assert sorted(lora) == expected


def test_base_weights_untouched_and_unload_gives_base_back(tiny_model, tiny_tok, facts, lora_hp):
    before = state_snapshot(tiny_model)
    tiny_model.lm_head.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in tiny_model.named_parameters()}
    base_rel = reliability(tiny_model, tiny_tok, facts)
    edited, weights_copy = apply_locft_to_model(tiny_model, tiny_tok, facts, lora_hp,
                                                return_orig_weights=True, progress=False)
    assert weights_copy == {}  # nothing in the base weights changed
    assert reliability(edited, tiny_tok, facts) == 1.0 > base_rel
    base_params = {n.replace(".base_layer.", "."): p for n, p in
                   edited.base_model.model.state_dict().items() if "lora_" not in n}
    assert sorted(base_params) == sorted(before)
    assert all(torch.equal(base_params[n], before[n]) for n in before)
    with edited.disable_adapter():
        assert reliability(edited, tiny_tok, facts) == base_rel
    back = remove_adapter(edited)
    assert back is tiny_model and not has_adapters(back)
    assert all(torch.equal(v, before[k]) for k, v in back.state_dict().items())
    assert {n: p.requires_grad for n, p in back.named_parameters()} == flags
    assert not hasattr(back, "peft_config")


@pytest.mark.parametrize("tuning", ["lora", "adalora"])
def test_merge_gives_unmerged_outputs_and_weights_copy_restores(tiny_model, tiny_tok, facts,
                                                                lora_hp, tuning):
    hp = with_tuning(lora_hp, tuning, num_epochs=20)
    before = state_snapshot(tiny_model)
    peft_model, _ = execute_adapter(tiny_model, tiny_tok, facts, hp, progress=False)
    unmerged = logits(peft_model, tiny_tok, facts)
    merged, weights_copy = merge_adapter(peft_model)
    assert not has_adapters(merged)
    assert (logits(merged, tiny_tok, facts) - unmerged).abs().max() <= MERGE_ATOL
    after = merged.state_dict()
    assert sorted(k for k in before if not torch.equal(before[k], after[k])) == [DOWN + ".weight"]
    assert list(weights_copy) == [DOWN + ".weight"]
    restore_weights(merged, weights_copy)
    assert all(torch.equal(v, before[k]) for k, v in merged.state_dict().items())


def test_lora_merge_true_is_easyedit_shaped(tiny_model, tiny_tok, facts, lora_hp):
    hp = dataclasses.replace(lora_hp, lora_merge=True)
    before = state_snapshot(tiny_model)
    edited, weights_copy = apply_locft_to_model(tiny_model, tiny_tok, facts, hp, copy=True,
                                                keep_original_weight=True, progress=False)
    assert not has_adapters(tiny_model) and not has_adapters(edited)
    assert all(torch.equal(v, before[k]) for k, v in tiny_model.state_dict().items())
    assert reliability(edited, tiny_tok, facts) == 1.0
    assert list(weights_copy) == [DOWN + ".weight"]
    restore_weights(edited, weights_copy)
    assert reliability(edited, tiny_tok, facts) == reliability(tiny_model, tiny_tok, facts)


def test_breadth_first_beats_depth_first_for_lora(tiny_model, tiny_tok, facts, lora_hp):
    """Same adapter, lr and steps per edit: measured BF 1.00, DF 0.22 (later edits overwrite)."""
    bf, _ = apply_locft_to_model(tiny_model, tiny_tok, facts, lora_hp, copy=True, progress=False)
    df, _ = apply_locft_to_model(tiny_model, tiny_tok, facts,
                                 dataclasses.replace(lora_hp, pipeline="depth_first"), copy=True,
                                 progress=False)
    rel_bf, rel_df = reliability(bf, tiny_tok, facts), reliability(df, tiny_tok, facts)
    assert rel_bf == 1.0
    assert rel_df <= 0.4, rel_df
    assert rel_bf - rel_df >= 0.6


def test_adalora_breadth_first_trains_and_runs_its_budget_schedule(tiny_model, tiny_tok, facts,
                                                                   lora_hp):
    # three modules (gate/up/down) at init_r 8 -> a total budget of 3 x 4 ranks at the end
    hp = with_tuning(lora_hp, "adalora", rewrite_module_tmp="model.layers.{}.mlp",
                             adalora_init_r=8, adalora_target_r=4, loss_threshold=0.0,
                             num_epochs=40)
    base_rel = reliability(tiny_model, tiny_tok, facts)
    peft_model, result = execute_adapter(tiny_model, tiny_tok, facts, hp, progress=False)
    config = peft_model.peft_config["default"]
    assert config.total_step == 40 * 4 == result.steps
    assert (config.tinit, config.tfinal) == (16, 32)
    assert config.rank_pattern, "update_and_allocate never allocated"
    ranks = {n: int(sum(mask)) for n, mask in config.rank_pattern.items()}
    assert sum(ranks.values()) == 3 * 4, ranks
    kept = sum(int((p != 0).sum()) for n, p in peft_model.named_parameters() if "lora_E" in n)
    assert kept == 3 * 4  # pruned singular values are masked to zero
    rel = reliability(peft_model, tiny_tok, facts)
    assert rel >= 0.4 and rel - base_rel >= 0.4, (base_rel, rel)  # measured 0.53 vs 0.00


def test_fast_equals_reference_for_lora(tiny_model, tiny_tok, facts, lora_hp):
    hp = dataclasses.replace(lora_hp, num_epochs=5)
    runs = []
    for impl in ("fast", "reference"):
        model = copy.deepcopy(tiny_model)
        torch.manual_seed(0)  # the same adapter init for both (peft draws it from the global RNG)
        peft_model, res = execute_adapter(model, tiny_tok, facts,
                                          dataclasses.replace(hp, implementation=impl),
                                          progress=False)
        runs.append(({n: p.detach() for n, p in peft_model.named_parameters() if "lora_B" in n}, res))
    (fast, rf), (ref, rr) = runs
    assert rf.steps == rr.steps
    for n in fast:
        assert float((fast[n] - ref[n]).norm() / ref[n].norm()) <= 1e-4, n


@pytest.mark.parametrize("tuning", ["lora", "adalora"])
def test_save_and_load_adapter_roundtrip(tiny_model, tiny_tok, facts, lora_hp, tmp_path, tuning):
    hp = with_tuning(lora_hp, tuning, num_epochs=10)
    pristine = copy.deepcopy(tiny_model)
    peft_model, _ = apply_locft_to_model(tiny_model, tiny_tok, facts, hp, progress=False)
    expected = logits(peft_model, tiny_tok, facts)
    folder = save_adapter(peft_model, tmp_path / "edit", hp)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == tuning.upper()
    assert LocFTHyperParams.from_dict(__import__("yaml").safe_load(
        (folder / "locft_hparams.yaml").read_text())) == hp
    loaded, weights_copy = load_adapter(copy.deepcopy(pristine), folder)
    assert weights_copy == {}
    assert torch.allclose(logits(loaded, tiny_tok, facts), expected, atol=1e-6)
    merged, weights_copy = load_adapter(copy.deepcopy(pristine), folder, merge=True)
    assert not has_adapters(merged) and list(weights_copy) == [DOWN + ".weight"]
    assert (logits(merged, tiny_tok, facts) - expected).abs().max() <= MERGE_ATOL
    with pytest.raises(ValueError, match="not a peft adapter folder"):
        load_adapter(pristine, tmp_path)


def test_save_adapter_to_keyword_keeps_adapter_of_merged_edit(tiny_model, tiny_tok, facts, lora_hp,
                                                              tmp_path):
    hp = dataclasses.replace(lora_hp, lora_merge=True, num_epochs=5)
    merged, _ = apply_locft_to_model(tiny_model, tiny_tok, facts, hp, copy=True, progress=False,
                                     save_adapter_to=tmp_path / "a")
    loaded, _ = load_adapter(tiny_model, tmp_path / "a")
    assert (logits(loaded, tiny_tok, facts) - logits(merged, tiny_tok, facts)).abs().max() <= MERGE_ATOL


def test_failure_removes_the_adapter_and_restores_flags(tiny_model, tiny_tok, facts, lora_hp):
    before = state_snapshot(tiny_model)
    with nan_at_forward(tiny_model), pytest.raises(TrainingDiverged):
        apply_locft_to_model(tiny_model, tiny_tok, facts, lora_hp, progress=False)
    assert not has_adapters(tiny_model) and not hasattr(tiny_model, "peft_config")
    assert all(torch.equal(v, before[k]) for k, v in tiny_model.state_dict().items())
    assert all(p.requires_grad for p in tiny_model.parameters())


def test_second_adapter_edit_on_adapted_model_is_refused(tiny_model, tiny_tok, facts, lora_hp):
    hp = dataclasses.replace(lora_hp, num_epochs=1)
    peft_model, _ = apply_locft_to_model(tiny_model, tiny_tok, facts, hp, progress=False)
    with pytest.raises(ValueError, match="already carries peft adapters"):
        apply_locft_to_model(peft_model, tiny_tok, facts, hp, progress=False)


def test_selection_without_linear_modules_is_refused(tiny_model, tiny_tok, facts, lora_hp):
    hp = dataclasses.replace(lora_hp, rewrite_module_tmp="model.layers.{}.input_layernorm.weight")
    with pytest.raises(ValueError, match="selects none"):
        apply_locft_to_model(tiny_model, tiny_tok, facts, hp, progress=False)
    assert not has_adapters(tiny_model)


def test_execute_locft_refuses_adapter_tuning(tiny_model, tiny_tok, facts, lora_hp):
    from locft_easyedit import execute_locft

    with pytest.raises(ValueError, match="key 'tuning'"):
        execute_locft(tiny_model, tiny_tok, facts, lora_hp, progress=False)


@pytest.mark.slow
def test_embedded_model_learns_twenty_zsre_edits_with_lora_bf(embedded, zsre_path):
    """hparams/smollm2-135m-lora.yaml: measured reliability 1.00, generalization 0.92."""
    from pathlib import Path

    from locft_easyedit import load_dataset
    from locft_easyedit.evaluate import evaluate_requests

    model, tok = embedded
    before = state_snapshot(model)
    hp = LocFTHyperParams.from_hparams(Path(__file__).resolve().parents[1] / "hparams" /
                                       "smollm2-135m-lora.yaml")
    assert hp.tuning == "lora" and hp.pipeline == "breadth_first"
    requests = load_dataset(zsre_path, "zsre", n=20)
    edited, weights_copy = apply_locft_to_model(model, tok, requests, hp, progress=False)
    try:
        post = evaluate_requests(edited, tok, requests, generation=False)
        assert weights_copy == {}
        assert post["reliability"] >= 0.9, post
        assert post["generalization"] >= 0.6, post
    finally:
        back = remove_adapter(edited)
    assert all(torch.equal(v, before[k]) for k, v in back.state_dict().items())


# --- one editing path: every field works with every tuning or is refused by name -------------
@pytest.mark.parametrize("config, key", [
    ({"tuning": "full", "lora_rank": 16}, "lora_rank"),
    ({"tuning": "full", "lora_merge": True}, "lora_merge"),
    ({"tuning": "lora", "adalora_target_r": 4}, "adalora_target_r"),
    ({"tuning": "adalora", "lora_rank": 16}, "lora_rank"),
    ({"tuning": "adalora", "checkpoint_dir": "ck"}, "checkpoint_dir"),
    ({"tuning": "lora", "anchor_weight": 0.1}, "anchor_weight"),
])
def test_fields_a_tuning_cannot_use_are_refused_by_name(config, key):
    from locft_easyedit import HparamsError

    with pytest.raises(HparamsError, match=f"key '{key}'.*tuning: {config['tuning']}"):
        LocFTHyperParams.from_dict({"model_name": "tiny", **config})


@pytest.mark.parametrize("tuning", ["lora", "adalora"])
def test_adapters_refuse_conflicting_targets_like_full_tuning(tiny_model, tiny_tok, lora_hp,
                                                              tuning):
    reqs = [{"prompt": "The capital of Aldor is", "target_new": "Paris"},
            {"prompt": "The capital of Aldor is", "target_new": "Lima"}]
    hp = with_tuning(lora_hp, tuning, num_epochs=1, conflicting_targets="error")
    with pytest.raises(ValueError, match="already has target 'Paris'"):
        apply_locft_to_model(tiny_model, tiny_tok, reqs, hp, progress=False)
    assert not has_adapters(tiny_model)
    peft_model, _ = apply_locft_to_model(tiny_model, tiny_tok, reqs,
                                         dataclasses.replace(hp, conflicting_targets="warn"),
                                         progress=False)
    assert has_adapters(peft_model)


def test_lora_resumes_from_its_checkpoint_with_the_same_adapter(tiny_model, tiny_tok, facts,
                                                                lora_hp, tmp_path):
    """checkpoint_dir works with LoRA: interrupted, then run again, it ends with exactly the
    adapter of an uninterrupted run (the checkpoint overrides the fresh adapter's init)."""
    hp = dataclasses.replace(lora_hp, num_epochs=6, checkpoint_dir=str(tmp_path / "ck"),
                             checkpoint_every_minutes=1e-9)

    def lora_state(peft_model):
        return {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}

    torch.manual_seed(0)
    ref, ref_res = execute_adapter(copy.deepcopy(tiny_model), tiny_tok, facts,
                                   dataclasses.replace(hp, checkpoint_dir=None), progress=False)
    model, calls = copy.deepcopy(tiny_model), {"n": 0}

    def stop(module, args, output):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt

    handle = model.model.layers[3].register_forward_hook(stop)
    torch.manual_seed(0)
    try:
        with pytest.raises(KeyboardInterrupt):
            execute_adapter(model, tiny_tok, facts, hp, progress=False)
    finally:
        handle.remove()
    assert not has_adapters(model)
    saved = torch.load(tmp_path / "ck" / "locft-checkpoint.pt", weights_only=True)
    assert 0 < saved["epoch"] * 4 + saved["batch"] < hp.num_epochs * 4
    torch.manual_seed(123)  # another init: the checkpoint's tensors must replace it
    got, res = execute_adapter(model, tiny_tok, facts, hp, progress=False)
    want, have = lora_state(ref), lora_state(got)
    assert want.keys() == have.keys() and all(torch.equal(want[n], have[n]) for n in want)
    assert res == ref_res


def test_adapter_init_comes_from_the_seed_and_leaves_the_global_rng(tiny_model, tiny_tok, facts,
                                                                    lora_hp):
    hp = dataclasses.replace(lora_hp, num_epochs=1)
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        peft_model, _ = execute_adapter(copy.deepcopy(tiny_model), tiny_tok, facts, hp,
                                        progress=False)
        assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is kept
        runs.append({n: p.detach() for n, p in peft_model.named_parameters() if "lora_" in n})
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])
    other, _ = execute_adapter(copy.deepcopy(tiny_model), tiny_tok, facts,
                               dataclasses.replace(hp, seed=7), progress=False)
    assert not all(torch.equal(p.detach(), runs[0][n]) for n, p in other.named_parameters()
                   if "lora_A" in n)
