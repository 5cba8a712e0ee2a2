"""The covariance statistics MEMIT / AlphaEdit / ROME rows read (benchmarks/baselines.py
``ensure_stats``), from the local corpora of ``common.stats_corpus``, on the tiny model."""
import sys
import types

import numpy as np
import pytest
import torch

from test_benchmarks import _load


@pytest.fixture(scope="module")
def baselines():
    return _load("baselines")


def _hp(tmp_path, dataset, n):
    return types.SimpleNamespace(stats_dir=str(tmp_path), layers=[1],
                                 rewrite_module_tmp="model.layers.{}.mlp.down_proj",
                                 mom2_dataset=dataset, mom2_dtype="float32", mom2_n_samples=n)


def test_the_stdlib_corpus_extends_the_pydoc_one(baselines):
    common = sys.modules["common"]  # the one baselines reads
    pydoc, pydoc_desc = common.stats_corpus("pydoc_topics")
    both, both_desc = common.stats_corpus("stdlib_docs")
    assert pydoc == common.corpus_parts()[0]
    assert both.startswith(pydoc + "\n\n")
    assert len(both) > 3 * len(pydoc)  # ~1.3M characters of docstrings after ~0.4M
    assert "docstring" in both_desc and f"{len(both)} chars" in both_desc
    assert common.stats_corpus("stdlib_docs")[0] == both  # the same text every time
    with pytest.raises(ValueError, match="'wikipedia' is not a local corpus.*pydoc_topics"):
        common.stats_corpus("wikipedia")


def test_stats_are_the_second_moment_of_the_layer_input(baselines, tiny_model, tiny_tok,
                                                         tmp_path):
    hp = _hp(tmp_path, "stdlib_docs", 512)
    info = baselines.ensure_stats(tiny_model, tiny_tok, hp)
    assert info["tokens"] == 512 and info["window"] == 256 and "docstring" in info["corpus"]
    # the same two windows by hand: the input of layer 1's down_proj at every position
    text = baselines.stats_corpus("stdlib_docs")[0]
    ids = tiny_tok(text, add_special_tokens=False)["input_ids"][:512]
    seen = []
    h = tiny_model.model.layers[1].mlp.down_proj.register_forward_pre_hook(
        lambda m, inp: seen.append(inp[0][0]))
    with torch.no_grad():
        for w in (ids[:256], ids[256:]):
            tiny_model(input_ids=torch.tensor([w]))
    h.remove()
    x = torch.cat(seen)
    for layer in (0, 1):  # every layer up to the deepest asked for
        path = baselines.stats_cache_path(tmp_path, tiny_model,
                                          f"model.layers.{layer}.mlp.down_proj", "stdlib_docs",
                                          "float32", 512)
        saved = np.load(path)
        assert int(saved["mom2.count"]) == 512 and int(saved["sample_size"]) == 512
    np.testing.assert_allclose(saved["mom2.mom2"], (x.T @ x).numpy(), rtol=1e-4, atol=1e-4)
    # a second call reads the cache: nothing runs through the model
    tiny_model.forward = None
    assert baselines.ensure_stats(tiny_model, tiny_tok, hp) == info


def test_an_unknown_corpus_is_refused_before_any_work(baselines, tiny_model, tiny_tok, tmp_path):
    with pytest.raises(ValueError, match="'wikitext' is not a local corpus"):
        baselines.ensure_stats(tiny_model, tiny_tok, _hp(tmp_path, "wikitext", 512))
    assert not any(tmp_path.iterdir())
