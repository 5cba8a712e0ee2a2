"""The locality options (issue 10) on the tiny random model."""
import dataclasses

import pytest
import torch

from locft_easyedit import LocFTHyperParams, execute_locft
from locft_easyedit.locft.regularizers import (GENERIC_OPENINGS, coarse_kl, reference_distributions,
                                     sample_generic_text)


def test_anchor_shrinks_the_change(tiny_model, tiny_tok, facts, tiny_hp):
    hp = dataclasses.replace(tiny_hp, num_epochs=10)
    plain, _ = execute_locft(tiny_model, tiny_tok, facts, hp, progress=False)
    anchored, _ = execute_locft(tiny_model, tiny_tok, facts,
                                dataclasses.replace(hp, anchor_weight=50.0), progress=False)
    name = "model.layers.2.mlp.down_proj.weight"
    w0 = dict(tiny_model.named_parameters())[name].detach()
    assert (anchored[name] - w0).norm() < (plain[name] - w0).norm()


def test_generic_text_is_deterministic_and_kl_is_zero_on_itself(tiny_model, tiny_tok):
    rng = torch.get_rng_state()
    a = sample_generic_text(tiny_model, tiny_tok, GENERIC_OPENINGS, 5, 6, seed=3)
    b = sample_generic_text(tiny_model, tiny_tok, GENERIC_OPENINGS, 5, 6, seed=3)
    assert a == b and torch.equal(rng, torch.get_rng_state())
    ref = reference_distributions(tiny_model, tiny_tok, a, k=8)
    ids = torch.tensor([a[0].ids])
    logits = tiny_model(input_ids=ids).logits[0, :-1]
    assert float(coarse_kl(ref.top_idx[0], ref.top_logp[0], logits)) == pytest.approx(0, abs=1e-5)
    assert float(coarse_kl(ref.top_idx[0], ref.top_logp[0], logits * 3)) > 1e-3


@pytest.mark.parametrize("key, value", [("preserve_weight", -1.0), ("preserve_batch", 0),
                                        ("anchor_weight", float("nan")), ("preserve_topk", 0)])
def test_locality_fields_are_validated(key, value):
    with pytest.raises(ValueError, match=key):
        LocFTHyperParams(**{key: value})


def test_preserve_from_keeps_the_given_tensors_not_the_start(tiny_model, tiny_tok, facts,
                                                            tiny_hp):
    """An edit on top of earlier edits keeps the base's behaviour when given ``preserve_from``
    (a ledger round): naming the current tensors changes nothing, bit for bit; naming the
    base makes the anchor pull toward the base instead of the start."""
    from locft_easyedit.locft import LocFTInputError
    from locft_easyedit.locft.modeling import weights_applied

    name = "model.layers.2.mlp.down_proj.weight"
    base = {name: dict(tiny_model.named_parameters())[name].detach().clone()}
    hp = dataclasses.replace(tiny_hp, num_epochs=3, preserve_weight=1.0, preserve_samples=4)
    first, _ = execute_locft(tiny_model, tiny_tok, facts[:8], hp, progress=False)
    with weights_applied(tiny_model, first):
        plain, _ = execute_locft(tiny_model, tiny_tok, facts[8:16], hp, progress=False)
        same, _ = execute_locft(tiny_model, tiny_tok, facts[8:16], hp, progress=False,
                                preserve_from=first)
        assert torch.equal(plain[name], same[name])
        anchored = dataclasses.replace(hp, preserve_weight=0.0, anchor_weight=1e4)
        to_start, _ = execute_locft(tiny_model, tiny_tok, facts[8:16], anchored, progress=False)
        to_base, _ = execute_locft(tiny_model, tiny_tok, facts[8:16], anchored, progress=False,
                                   preserve_from=base)
        with pytest.raises(LocFTInputError, match="preserve_from names"):
            execute_locft(tiny_model, tiny_tok, facts[8:16], hp, progress=False,
                          preserve_from={"model.layers.1.mlp.down_proj.weight": base[name]})
    dist = lambda w: float((w - base[name]).norm())
    assert dist(to_base[name]) < dist(to_start[name])
