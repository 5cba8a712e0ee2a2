"""Memory stays bounded as N grows: the frozen-prefix cache is the only per-edit state that
scales with hidden size, it costs exactly tokens x hidden x element size, and above
``prefix_cache_max_gb`` it is not built (the prefix is recomputed; results unchanged)."""
import dataclasses

import torch

from locft_easyedit import execute_locft
from locft_easyedit.locft.encoding import encode_requests
from locft_easyedit.locft.losses import FastLoss
from locft_easyedit.locft.modeling import pad_id_of
from locft_easyedit.locft import select_parameters
from locft_easyedit.synthetic import synthetic_facts


def _loss(model, tok, facts, hp):
    examples = encode_requests(tok, facts, hp.append_eos, hp.max_length)
    names = list(select_parameters(model, hp))
    return FastLoss(model, examples, names, hp, lambda: {}, pad_id_of(tok)), examples


def test_cache_size_is_linear_in_tokens_and_capped(tiny_model, tiny_tok, tiny_hp):
    sizes = []
    for n in (100, 1000):
        facts = synthetic_facts(n, seed=1)
        loss, examples = _loss(tiny_model, tiny_tok, facts, tiny_hp)
        tokens = sum(e.length for e in examples)
        assert loss.cache.shape == (tokens, 64)
        sizes.append(loss.cache.numel() * loss.cache.element_size())
        assert sizes[-1] == tokens * 64 * 4

    capped = dataclasses.replace(tiny_hp, prefix_cache_max_gb=sizes[0] / 2**30 / 2)
    loss, _ = _loss(tiny_model, tiny_tok, synthetic_facts(100, seed=1), capped)
    assert loss.cache is None  # over budget: not built


def test_no_cache_gives_the_same_edit(tiny_model, tiny_tok, facts, tiny_hp):
    hp = dataclasses.replace(tiny_hp, num_epochs=5)
    cached, _ = execute_locft(tiny_model, tiny_tok, facts, hp, progress=False)
    uncached, _ = execute_locft(tiny_model, tiny_tok, facts,
                                dataclasses.replace(hp, prefix_cache_max_gb=0.0), progress=False)
    base = {n: p.detach() for n, p in tiny_model.named_parameters()}
    for name in cached:
        d1, d2 = cached[name] - base[name], uncached[name] - base[name]
        assert float((d1 - d2).norm() / d1.norm()) <= 1e-4
