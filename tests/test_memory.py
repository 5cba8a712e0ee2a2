"""Memory stays bounded as N grows: the fast path's cache is the only per-edit state that
scales with the model's width; it costs exactly tokens x (module input + hidden) x element size
at the module level, tokens x hidden at the layer level, and above ``prefix_cache_max_gb``
it drops to the next level or is not built (the work is recomputed; results unchanged)."""
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
    """down_proj trains (input width 128, hidden 64): the module level keeps its input and the
    rest of the layer's output per token; under a tighter budget the layer's input (64 per
    token); under a tighter one still, nothing, and a WARNING says what that costs."""
    sizes = []
    for n in (100, 1000):
        facts = synthetic_facts(n, seed=1)
        loss, examples = _loss(tiny_model, tiny_tok, facts, tiny_hp)
        tokens = sum(e.length for e in examples)
        assert loss.level == "module"
        assert loss.cache.shape == (tokens, 128) and loss.residual.shape == (tokens, 64)
        sizes.append(loss.cache_bytes)
        assert sizes[-1] == tokens * (128 + 64) * 4

    facts = synthetic_facts(100, seed=1)
    layer_only = dataclasses.replace(tiny_hp, prefix_cache_max_gb=sizes[0] / 2 / 2**30)
    with caplog.at_level(logging.INFO):
        loss, _ = _loss(tiny_model, tiny_tok, facts, layer_only)
    assert loss.level == "layer" and loss.cache_bytes == sizes[0] // 3
    assert "module-input cache would take 0.00 GB, over the 0.00 GB prefix_cache_max_gb: " \
           "caching the layer's input instead" in caplog.text

    caplog.clear()
    capped = dataclasses.replace(tiny_hp, prefix_cache_max_gb=sizes[0] / 6 / 2**30)
    with caplog.at_level(logging.WARNING):
        loss, _ = _loss(tiny_model, tiny_tok, facts, capped)
    assert loss.level == "off" and loss.cache is None and loss.cache_bytes == 0
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


def test_every_cache_level_gives_the_same_edit(tiny_model, tiny_tok, facts, tiny_hp):
    hp = dataclasses.replace(tiny_hp, num_epochs=5)
    full = _loss(tiny_model, tiny_tok, facts, hp)[0].cache_bytes
    runs = {}
    for budget in (None, full / 2 / 2**30, 0.0):
        new, result = execute_locft(tiny_model, tiny_tok, facts,
                                    dataclasses.replace(hp, prefix_cache_max_gb=budget),
                                    progress=False)
        runs[result.cache] = new
    assert list(runs) == ["module", "layer", "off"]
    base = {n: p.detach() for n, p in tiny_model.named_parameters()}
    for name in runs["off"]:
        d_off = runs["off"][name] - base[name]
        for level in ("module", "layer"):
            d = runs[level][name] - base[name]
            assert float((d - d_off).norm() / d_off.norm()) <= 1e-4


def test_models_load_straight_onto_their_device(monkeypatch, tmp_path):
    """``load_model(device=...)`` hands transformers ``device_map={"": device}``, so a model
    meant for a GPU is never held in host memory first; ``model_parallel`` passes "auto"."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from locft_easyedit import models

    calls = []

    class Loaded(torch.nn.Module):
        pass

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda path, **kw: calls.append(kw) or Loaded())
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda path, **kw: None)
    models.load_model(str(tmp_path), device="cuda:1", dtype="bfloat16")
    models.load_model(str(tmp_path), device="cuda:1", device_map="auto")
    models.load_model(str(tmp_path))
    assert calls == [{"dtype": torch.bfloat16, "device_map": {"": "cuda:1"}},
                     {"dtype": "auto", "device_map": "auto"}, {"dtype": "auto"}]


def test_vocabulary_projection_sees_the_target_positions_only(tiny_model, tiny_tok, facts,
                                                              tiny_hp):
    """Packed: the head projects exactly the K target positions of a mini-batch; unpacked
    (logits_to_keep), every row at every position some row predicts a target at."""
    loss, examples = _loss(tiny_model, tiny_tok, facts, tiny_hp)
    idx = list(range(8))
    k = sum(examples[i].length - examples[i].prompt_len for i in idx)
    seen = []
    hook = tiny_model.lm_head.register_forward_hook(lambda m, a, o: seen.append(a[0].shape))
    try:
        with loss:
            packed = loss._target_logits(loss.subs(), idx)[0]
            loss.pack = False
            unpacked = loss._target_logits(loss.subs(), idx)[0]
    finally:
        hook.remove()
    assert seen[0] == (1, k, 64) and seen[1][0] == 8 and seen[1][0] * seen[1][1] > k
    assert packed.shape == unpacked.shape == (k, tiny_model.config.vocab_size)
    assert torch.allclose(packed, unpacked, atol=1e-5)


def test_a_head_that_packing_breaks_is_caught(tiny_model, tiny_tok, facts, tiny_hp,
                                              monkeypatch, caplog):
    """If a family's forward did something with the backbone's output that packing changes,
    the self-check refuses packing and the run projects with logits_to_keep: same edit."""
    from locft_easyedit.locft import losses

    hp = dataclasses.replace(tiny_hp, num_epochs=3)
    good, res = execute_locft(tiny_model, tiny_tok, facts, hp, progress=False)
    assert res.packed_logits is True
    real = losses._packer

    def broken(rows, cols):  # a stand-in for a head that packing would get wrong
        hook = real(rows, cols)
        return lambda module, args, output: hook(module, args, output.__class__(
            last_hidden_state=output.last_hidden_state * 1.5))

    monkeypatch.setattr(losses, "_packer", broken)
    with caplog.at_level(logging.INFO):
        new, res = execute_locft(tiny_model, tiny_tok, facts, hp, progress=False)
    assert (res.implementation, res.packed_logits, res.fallback) == ("fast", False, "")
    assert "packed target logits refused" in caplog.text
    for name in good:
        assert torch.allclose(new[name], good[name], atol=1e-6)
