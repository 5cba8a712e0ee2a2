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
