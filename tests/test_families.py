"""The fast loss gives the reference loss's edit on every model family (tests/families.py).

Per family, three full-tuning runs of the same edit (16 synthetic facts, layer 2, 8 epochs,
mini-batches of 8; 16 optimizer steps):

* ``reference``: ``implementation: reference`` (a plain forward of the whole model);
* ``fast``: ``implementation: fast`` as shipped (its self-check may refuse it and fall back
  to the reference loss: ``TrainResult.implementation`` / ``fallback`` say so);
* ``fast-forced``: the fast loss at the layer level with its self-check bypassed, so what is
  compared is the frozen-prefix cache, the layer stand-ins and the target-only logits
  themselves, whatever the self-check would have said;
* ``fast-forced-module``: the same at the module level (the trained module's input and the
  rest of its layer cached), where it applies.

``python tests/test_families.py`` prints the measured differences per family.
"""
from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path
from typing import Dict
from unittest import mock

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import FAMILIES  # noqa: E402

from locft_easyedit import LocFTHyperParams, execute_locft  # noqa: E402
from locft_easyedit.locft import training  # noqa: E402
from locft_easyedit.synthetic import build_tokenizer, synthetic_facts  # noqa: E402

TOLERANCE = 1e-4  # float32: fast and reference differ only by summation order
LAYER = 2
# families whose trained tensor is one linear module of layer LAYER: the module level is built
MODULE_LEVEL = {"llama", "qwen2-tied", "qwen3", "gemma2", "granite", "phi3", "gptj"}
# ... and whose layer adds that module's output to the residual stream as it is, so the module
# level is exact; Gemma2 normalizes it first (post-feedforward norm), Granite scales it
# (residual_multiplier): there the self-check must send the run to the layer level
ADDITIVE = MODULE_LEVEL - {"gemma2", "granite"}


@functools.lru_cache(maxsize=1)
def tokenizer():
    return build_tokenizer()


def hparams(templates, implementation: str) -> LocFTHyperParams:
    return LocFTHyperParams(model_name="tiny", layers=[LAYER], rewrite_module_tmp=templates,
                            lr=1e-2, num_epochs=8, mini_batch_size=8, device="cpu",
                            implementation=implementation)


@functools.lru_cache(maxsize=None)
def runs(family: str):
    """``(model, templates, base state_dict, {run: (new tensors, TrainResult)})`` of one
    family, plus ``"fast-forced-setup"``: what that run's fast loss set up (cached: the tests
    of a family share its three runs)."""
    tok, facts = tokenizer(), synthetic_facts(16)
    model, templates = FAMILIES[family](len(tok))
    base = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=False).items()}
    out = {"reference": execute_locft(model, tok, facts, hparams(templates, "reference"),
                                      progress=False),
           "fast": execute_locft(model, tok, facts, hparams(templates, "fast"), progress=False)}
    for run, levels in (("fast-forced", ("layer",)), ("fast-forced-module", ("module",))):
        out[run], out[run + "-setup"] = forced(model, tok, facts, templates, levels)
    return model, templates, base, out


def forced(model, tok, facts, templates, levels):
    """The fast loss at ``levels`` with its self-check bypassed: ``(result, what it set up)``."""
    built = []

    class Recorded(training.FastLoss):  # notes what the fast loss set up
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append({"cache": self.level,
                          "cached_layers": self.first if self.level != "off" else 0,
                          "target_only_logits": self.keep, "packed": self.pack})

    with mock.patch.object(training, "fast_path_mismatch", lambda *a, **k: None), \
            mock.patch.object(training, "FastLoss", Recorded), \
            mock.patch.object(training, "CACHE_LEVELS", levels):
        result = execute_locft(model, tok, facts, hparams(templates, "fast"), progress=False)
    return result, built


def base_params(model) -> Dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters(remove_duplicate=False)}


def relative_differences(family: str, run: str) -> Dict[str, float]:
    """``||delta_run - delta_ref|| / ||delta_ref||`` per trained tensor (delta = new - base)."""
    model, _, base, out = runs(family)
    params = base_params(model)
    ref, got = out["reference"][0], out[run][0]
    assert set(got) == set(ref)
    diffs = {}
    for name in ref:
        d_ref, d_got = ref[name] - params[name], got[name] - params[name]
        diffs[name] = float((d_got - d_ref).norm() / d_ref.norm())
    return diffs


def expected_names(model, templates):
    """The parameters ``templates`` name at layer ``LAYER`` (a module: all under it)."""
    names = set()
    for tmp in templates:
        target = tmp.format(LAYER)
        for n, _ in model.named_parameters(remove_duplicate=False):
            if n == target or n.startswith(target + "."):
                names.add(n)
    return names


FAMILY_IDS = list(FAMILIES)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_fast_edit_matches_reference(family):
    """``implementation: fast`` as shipped gives the reference edit (fast path or fallback)."""
    _, _, _, out = runs(family)
    assert out["fast"][1].steps == out["reference"][1].steps > 0
    diffs = relative_differences(family, "fast")
    assert max(diffs.values()) <= TOLERANCE, diffs


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_fast_path_itself_matches_reference(family):
    """The fast loss at the layer level with its self-check bypassed: prefix cache +
    stand-ins + packed target logits."""
    model, _, _, out = runs(family)
    res = out["fast-forced"][1]
    assert res.implementation == "fast"
    # really the fast path: layers 0..LAYER-1 come from the cache, logits only at targets
    # (where the model's forward takes logits_to_keep: GPT-J's does from transformers 5.0)
    keep = "logits_to_keep" in inspect.signature(type(model).forward).parameters
    assert out["fast-forced-setup"] == [{"cache": "layer", "cached_layers": LAYER,
                                         "target_only_logits": keep, "packed": True}]
    assert res.steps == out["reference"][1].steps
    diffs = relative_differences(family, "fast-forced")
    assert max(diffs.values()) <= TOLERANCE, diffs


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_module_level_itself(family):
    """The module level with its self-check bypassed: exact where the layer adds the module's
    output to the residual stream, wrong where it does more (what the self-check is for)."""
    _, _, _, out = runs(family)
    (setup,) = out["fast-forced-module-setup"]
    assert setup["cache"] == ("module" if family in MODULE_LEVEL else "layer")
    diffs = relative_differences(family, "fast-forced-module")
    if family in MODULE_LEVEL - ADDITIVE:
        assert max(diffs.values()) > 1e-2, diffs
    else:
        assert max(diffs.values()) <= TOLERANCE, diffs


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_fast_path_is_used_not_refused(family):
    """Where the fast path is right, its self-check lets it run (no needless fallback), at
    the module level where that is exact, else at the layer level."""
    _, _, _, out = runs(family)
    res = out["fast"][1]
    assert (res.implementation, res.fallback) == ("fast", "")
    assert res.cache == ("module" if family in ADDITIVE else "layer")
    assert res.packed_logits is True


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_reference_edit_is_real(family):
    """The reference edit lowers the training loss and changes the selected tensors only."""
    model, templates, base, out = runs(family)
    new, res = out["reference"]
    assert res.implementation == "reference"
    assert len(res.epoch_losses) >= 2 and res.epoch_losses[-1] < res.epoch_losses[0]
    want = expected_names(model, templates)
    assert want and set(new) == want
    # the model itself is untouched by execute_locft
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base.items())
    # every selected tensor moved; writing the edit in changes nothing else
    params = base_params(model)
    assert all(not torch.equal(new[n], params[n]) for n in want)
    edited = {**params, **new}
    changed = {n for n, p in edited.items() if not torch.equal(p, params[n])}
    assert changed == want


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_stand_in_carries_the_layer_attributes(family):
    """The frozen-layer stand-in answers what a model's forward may read off each layer
    (transformers 4.5x: ``decoder_layer.attention_type`` picks Qwen2's / Gemma2's mask; 5.x
    reads ``config.layer_types`` instead, so the runs above would not notice a stand-in
    without them): every plain attribute of every layer is on its stand-in."""
    from locft_easyedit.locft.losses import _Skip
    from locft_easyedit.locft.modeling import find_layer_stack

    model, templates, _, _ = runs(family)
    _, stack = find_layer_stack(model, sorted(expected_names(model, templates)))
    for layer in stack:
        skip = _Skip(layer, as_tuple=False, emit=False)
        plain = {k: v for k, v in vars(layer).items() if not k.startswith("_")
                 and k != "training" and isinstance(v, (str, int, float, bool, type(None)))}
        assert {k: getattr(skip, k, "missing") for k in plain} == plain


def report() -> None:
    rows = []
    for family in FAMILY_IDS:
        _, _, _, out = runs(family)
        fast, forced = relative_differences(family, "fast"), relative_differences(family,
                                                                                 "fast-forced")
        module = relative_differences(family, "fast-forced-module")
        res = out["fast"][1]
        rows.append(f"{family:30s} shipped={res.implementation}/{res.cache:6s} "
                    f"rel(shipped)={max(fast.values()):.1e} rel(forced)={max(forced.values()):.1e}"
                    f" rel(module)={max(module.values()):.1e}"
                    f" steps={out['reference'][1].steps}/{res.steps}/{out['fast-forced'][1].steps}"
                    f" loss {out['reference'][1].epoch_losses[0]:.2f}->"
                    f"{out['reference'][1].epoch_losses[-1]:.2f}"
                    + (f"\n    fallback: {res.fallback}" if res.fallback else ""))
    print("\n".join(rows))


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))
    report()
