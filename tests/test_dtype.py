"""One dtype rule, the same through Python, the CLI's loader and EasyEdit: ``dtype`` is what
the model computes in while it is edited; float16 trains with dynamic loss scaling."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from locft_easyedit import HparamsError, LocFTHyperParams, execute_locft, load_model
from locft_easyedit.easyedit import apply_dtype
from locft_easyedit.locft.training import LossScale, TrainResult


def test_a_model_in_another_dtype_is_refused_by_name(tiny_model, tiny_tok, facts, tiny_hp):
    hp = dataclasses.replace(tiny_hp, dtype="bfloat16")
    with pytest.raises(HparamsError, match="key 'dtype': the hparams ask for bfloat16 but the "
                                           "tensors to edit are float32; load the model in"):
        execute_locft(tiny_model, tiny_tok, facts, hp, progress=False)


def test_dtype_null_edits_the_model_in_its_own_dtype(tiny_model, tiny_tok, facts, tiny_hp):
    model = tiny_model.to(torch.bfloat16)
    new, res = execute_locft(model, tiny_tok, facts, dataclasses.replace(tiny_hp, num_epochs=3),
                             progress=False)
    assert all(t.dtype == torch.bfloat16 for t in new.values())
    assert res.loss_scale == 1.0 and res.overflows == 0  # bfloat16 needs no loss scaling


def test_float16_trains_with_loss_scaling_like_float32(tiny_model, tiny_tok, facts, tiny_hp):
    """Measured: the same 40 steps and epoch losses as float32 to 3 decimals (6.24 -> 5.45)."""
    hp = dataclasses.replace(tiny_hp, num_epochs=10)
    _, ref = execute_locft(tiny_model, tiny_tok, facts, hp, progress=False)
    model = tiny_model.to(torch.float16)
    new, res = execute_locft(model, tiny_tok, facts, dataclasses.replace(hp, dtype="float16"),
                             progress=False)
    assert res.steps == ref.steps == 40 and res.overflows == 0
    assert res.loss_scale == LossScale.INIT  # scaled all along, never overflowed
    assert res.epoch_losses == pytest.approx(ref.epoch_losses, rel=1e-2)
    assert all(t.dtype == torch.float16 for t in new.values())


def test_loss_scale_skips_an_overflowing_step_and_halves():
    res = TrainResult()
    scaler = LossScale(True, res)
    w = torch.zeros(2, requires_grad=True)
    w.grad = torch.tensor([2.0 ** 17, 2.0 ** 16])
    assert scaler.unscale({"w": w}) and torch.equal(w.grad, torch.tensor([2.0, 1.0]))
    w.grad = torch.tensor([float("inf"), 1.0])
    assert not scaler.unscale({"w": w})
    assert (res.loss_scale, res.overflows, res.good_steps) == (2.0 ** 15, 1, 0)
    assert LossScale(False, TrainResult()).scale == 1.0


def test_fp16_flag_and_another_dtype_are_refused():
    with pytest.raises(HparamsError, match="key 'dtype'.*fp16: true"):
        LocFTHyperParams(model_name="m", fp16=True, dtype="bfloat16")


def test_load_model_dtype_null_is_the_checkpoints_own(tiny_model, tiny_tok, tmp_path):
    tiny_model.to(torch.bfloat16).save_pretrained(tmp_path / "m")
    tiny_tok.save_pretrained(tmp_path / "m")
    model, _ = load_model(str(tmp_path / "m"))
    assert next(model.parameters()).dtype == torch.bfloat16
    model, _ = load_model(str(tmp_path / "m"), dtype="float32")
    assert next(model.parameters()).dtype == torch.float32


def test_easyedit_editor_gets_the_yaml_dtype(tiny_model):
    editor = SimpleNamespace(model=tiny_model)  # BaseEditor loaded it in float32
    apply_dtype(editor, LocFTHyperParams(model_name="m", dtype="bfloat16"))
    assert {p.dtype for p in tiny_model.parameters()} == {torch.bfloat16}
    apply_dtype(editor, LocFTHyperParams(model_name="m"))  # null: left as loaded
    assert {p.dtype for p in tiny_model.parameters()} == {torch.bfloat16}


def test_bfloat16_on_cpu_fast_equals_reference(tiny_model, tiny_tok, facts, tiny_hp):
    """A bfloat16 model edits on the CPU, comes back bfloat16, and the fast path agrees with
    the reference within bfloat16 rounding (measured 1.5e-3 relative on the deltas)."""
    model = tiny_model.to(torch.bfloat16)
    hp = dataclasses.replace(tiny_hp, dtype="bfloat16", num_epochs=10)
    name = "model.layers.2.mlp.down_proj.weight"
    base = dict(model.named_parameters())[name].detach().float().clone()
    fast, rf = execute_locft(model, tiny_tok, facts, hp, progress=False)
    ref, rr = execute_locft(model, tiny_tok, facts,
                            dataclasses.replace(hp, implementation="reference"), progress=False)
    assert rf.implementation == "fast" and rf.steps == rr.steps == 40
    assert fast[name].dtype == torch.bfloat16
    d_fast, d_ref = fast[name].float() - base, ref[name].float() - base
    assert float((d_fast - d_ref).norm() / d_ref.norm()) <= 1e-2
    assert rf.epoch_losses == pytest.approx(rr.epoch_losses, rel=1e-3)
