"""Memory stays bounded as N grows: the frozen-prefix cache is the only per-edit state that
scales with hidden size, it costs exactly tokens x hidden x element size, and above
``prefix_cache_max_gb`` it is not built (the prefix is recomputed; results unchanged)."""
import dataclasses
import logging

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


def test_cache_size_is_linear_in_tokens_and_capped(tiny_model, tiny_tok, tiny_hp, caplog):
    sizes = []
    for n in (100, 1000):
        facts = synthetic_facts(n, seed=1)
        loss, examples = _loss(tiny_model, tiny_tok, facts, tiny_hp)
        tokens = sum(e.length for e in examples)
        assert loss.cache.shape == (tokens, 64)
        sizes.append(loss.cache.numel() * loss.cache.element_size())
        assert sizes[-1] == tokens * 64 * 4

    capped = dataclasses.replace(tiny_hp, prefix_cache_max_gb=sizes[0] / 2**30 / 2)
    with caplog.at_level(logging.WARNING):
        loss, _ = _loss(tiny_model, tiny_tok, synthetic_facts(100, seed=1), capped)
    assert loss.cache is None  # over budget: not built, and a WARNING says what it costs
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "over the 0.00 GB prefix_cache_max_gb; every forward now runs all 4 layers instead " \
           "of the 2 from layer 2 on (about 2.0x the forward work)" in line


def test_automatic_cache_budget_follows_available_memory(tiny_model, tiny_tok, tiny_hp,
                                                         monkeypatch, caplog):
    """prefix_cache_max_gb: null (the default) allows a quarter of the available host memory
    (half the free memory of a CUDA device)."""
    import os

    from locft_easyedit.locft.losses import cache_budget_gb

    assert tiny_hp.prefix_cache_max_gb is None
    facts = synthetic_facts(100, seed=1)
    loss, _ = _loss(tiny_model, tiny_tok, facts, tiny_hp)
    assert loss.cache is not None
    monkeypatch.setattr(os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": 4, "SC_PAGE_SIZE": 4096}[name])
    assert cache_budget_gb(tiny_hp, torch.device("cpu"))[0] == 4 * 4096 / 4 / 2**30
    with caplog.at_level(logging.WARNING):
        loss, _ = _loss(tiny_model, tiny_tok, facts, tiny_hp)
    assert loss.cache is None and "a quarter of the available host memory" in caplog.text


def test_no_cache_gives_the_same_edit(tiny_model, tiny_tok, facts, tiny_hp):
    hp = dataclasses.replace(tiny_hp, num_epochs=5)
    cached, _ = execute_locft(tiny_model, tiny_tok, facts, hp, progress=False)
    uncached, _ = execute_locft(tiny_model, tiny_tok, facts,
                                dataclasses.replace(hp, prefix_cache_max_gb=0.0), progress=False)
    base = {n: p.detach() for n, p in tiny_model.named_parameters()}
    for name in cached:
        d1, d2 = cached[name] - base[name], uncached[name] - base[name]
        assert float((d1 - d2).norm() / d1.norm()) <= 1e-4
