"""The locality options of issue 18 on the tiny random model: the null-space projection keeps
the update off the corpus keys' top directions, the key penalty's gradient is 2 lambda dW C,
the key statistics are cached and reused, and neighbour prompts are built from the run's own
requests and preserved."""
import dataclasses

import pytest
import torch

from locft_easyedit import LocFTHyperParams, execute_locft
from locft_easyedit.locft import keys as K
from locft_easyedit.locft.regularizers import (FALLBACK_SUBJECTS, build_regularizer,
                                               neighbour_prompts)

NAME = "model.layers.2.mlp.down_proj.weight"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "locft_easyedit" / "keys"


def _hp(tiny_hp, **kw):
    return dataclasses.replace(tiny_hp, num_epochs=15, key_tokens=2048, **kw)


def test_projection_keeps_the_update_in_the_null_space(tiny_model, tiny_tok, facts, tiny_hp):
    w0 = dict(tiny_model.named_parameters())[NAME].detach().clone()
    plain, _ = execute_locft(tiny_model, tiny_tok, facts[:16], _hp(tiny_hp), progress=False)
    projected, _ = execute_locft(tiny_model, tiny_tok, facts[:16],
                                 _hp(tiny_hp, null_space_rank=48), progress=False)
    stats = K.key_statistics(tiny_model, tiny_tok, NAME, "pydoc_data", 2048)
    top = stats.top(rank=48)
    assert top.shape == (128, 48)
    d_plain, d_proj = plain[NAME] - w0, projected[NAME] - w0
    assert (d_plain @ top).norm() / d_plain.norm() > 0.3          # unconstrained: it moves there
    assert (d_proj @ top).norm() / d_proj.norm() < 1e-5           # projected: nothing there
    assert d_proj.norm() > 0.1 * d_plain.norm()                   # yet it still trains


def test_energy_picks_the_directions_holding_that_share(tiny_model, tiny_tok):
    stats = K.key_statistics(tiny_model, tiny_tok, NAME, "pydoc_data", 2048)
    vals = stats.eigvals.double()
    r = stats.rank_for(energy=0.9)
    assert vals[:r].sum() / vals.sum() >= 0.9 > vals[:r - 1].sum() / vals.sum()
    assert stats.rank_for(rank=7) == 7
    assert torch.all(vals[:-1] >= vals[1:])                       # descending


def test_key_penalty_gradient_is_two_lambda_dw_c(tiny_model, tiny_tok, tiny_hp):
    module = tiny_model.get_submodule(NAME.rpartition(".")[0])
    c, count = K._second_moment(tiny_model, module, False,
                                K.corpus_ids(tiny_model, tiny_tok, "pydoc_data", 2048), False)
    assert count >= 1024
    hp = _hp(tiny_hp, key_penalty_weight=3.0)
    w = dict(tiny_model.named_parameters())[NAME].detach().float()
    masters = {NAME: w.clone().requires_grad_(True)}
    cons = K.build_key_constraints(tiny_model, tiny_tok, hp, masters)
    dw = 0.01 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0))
    cur = (w + dw).requires_grad_(True)
    pen = cons.penalty({NAME: cur})
    pen.backward()
    c = c.float()
    assert float(pen.detach()) == pytest.approx(3.0 * float(torch.trace(dw @ c @ dw.T)), rel=1e-4)
    assert torch.allclose(cur.grad, 2 * 3.0 * dw @ c, rtol=1e-3, atol=1e-7)


def test_key_penalty_shrinks_the_change_on_corpus_keys(tiny_model, tiny_tok, facts, tiny_hp):
    w0 = dict(tiny_model.named_parameters())[NAME].detach().clone()
    stats = K.key_statistics(tiny_model, tiny_tok, NAME, "pydoc_data", 2048)
    c = stats.basis @ torch.diag(stats.eigvals) @ stats.basis.T

    def on_keys(new):
        d = new[NAME] - w0
        return float(torch.trace(d @ c @ d.T))

    plain, _ = execute_locft(tiny_model, tiny_tok, facts[:16], _hp(tiny_hp), progress=False)
    pen, _ = execute_locft(tiny_model, tiny_tok, facts[:16],
                           _hp(tiny_hp, key_penalty_weight=100.0), progress=False)
    assert on_keys(pen) < 0.5 * on_keys(plain)


def test_statistics_are_cached_and_reused(tiny_model, tiny_tok, own_cache, monkeypatch):
    first = K.key_statistics(tiny_model, tiny_tok, NAME, "pydoc_data", 2048)
    files = sorted(own_cache.glob("*.safetensors"))
    assert len(files) == 1 and not list(own_cache.glob("*.tmp*"))

    def fail(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(K, "_second_moment", fail)
    again = K.key_statistics(tiny_model, tiny_tok, NAME, "pydoc_data", 2048)
    assert torch.equal(first.basis, again.basis) and first.tokens == again.tokens
    # the trained module's own weight does not change its keys: still cached
    with torch.no_grad():
        dict(tiny_model.named_parameters())[NAME].add_(1.0)
    K.key_statistics(tiny_model, tiny_tok, NAME, "pydoc_data", 2048)
    # a weight below it does: computed anew
    with torch.no_grad():
        dict(tiny_model.named_parameters())["model.layers.0.mlp.up_proj.weight"].mul_(1.5)
    with pytest.raises(AssertionError, match="recomputed"):
        K.key_statistics(tiny_model, tiny_tok, NAME, "pydoc_data", 2048)


def test_self_and_joined_corpora(tiny_model, tiny_tok, own_cache):
    """``self`` is the model's own text (so its own weights key the cache); ``a+b`` joins
    equal shares."""
    both = K.corpus_ids(tiny_model, tiny_tok, "pydoc_data+self", 600)
    assert both[:300] == K.corpus_ids(tiny_model, tiny_tok, "pydoc_data", 300)
    assert both[300:] == K.corpus_ids(tiny_model, tiny_tok, "self", 300)
    assert len(both) == 600
    first = K.key_statistics(tiny_model, tiny_tok, NAME, "self", 512)
    with torch.no_grad():
        dict(tiny_model.named_parameters())[NAME].mul_(2.0)
    K.key_statistics(tiny_model, tiny_tok, NAME, "self", 512)
    assert len(list(own_cache.glob("*.safetensors"))) == 2  # its own weight changed its text
    assert first.tokens >= 384


def test_transposed_weights_project_on_their_input_side():
    g = torch.Generator().manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(12, 4, generator=g))
    linear = torch.randn(5, 12, generator=g)        # nn.Linear: [out, in]
    conv = torch.randn(12, 5, generator=g)          # Conv1D: [in, out]
    assert (K.project_off(linear, basis, False) @ basis).abs().max() < 1e-6
    assert (basis.T @ K.project_off(conv, basis, True)).abs().max() < 1e-6
    assert torch.allclose(K.project_off(conv, basis, True),
                          K.project_off(conv.T, basis, False).T, atol=1e-6)


def test_neighbour_prompts_swap_subjects_and_skip_edited_prompts():
    reqs = [{"prompt": "Ann works for", "target_new": "X", "subject": "Ann"},
            {"prompt": "Bob works for", "target_new": "Y", "subject": "Bob"},
            {"prompt": "Cid lives in", "target_new": "Z", "subject": "Cid"},
            {"prompt": "Where is it?", "target_new": "W", "subject": "Dan"}]
    out = neighbour_prompts(reqs, samples=2, seed=0)
    # "Bob works for" is itself edited and Dan is not in its prompt (so not a subject):
    # Ann's one neighbour uses Cid
    assert out[0] == ["Cid works for"]
    assert out[1] == ["Cid works for"]
    assert sorted(out[2]) == ["Ann lives in", "Bob lives in"]
    assert out[3] == []                                  # subject not in the prompt
    assert out == neighbour_prompts(reqs, samples=2, seed=0)
    alone = neighbour_prompts(reqs[:1], samples=3, seed=0)[0]
    assert len(alone) == 3 and all(p[:-len(" works for")] in FALLBACK_SUBJECTS for p in alone)


def test_neighbours_are_answered_and_follow_the_step_edits(tiny_model, tiny_tok, facts,
                                                            tiny_hp):
    hp = _hp(tiny_hp, neighbour_weight=1.0, neighbour_samples=2, neighbour_new_tokens=3)
    masters = {NAME: dict(tiny_model.named_parameters())[NAME].detach().float().clone()}
    reg = build_regularizer(tiny_model, tiny_tok, hp, masters, requests=facts[:8])
    assert reg.n_generic == 0 and len(reg.neighbours_of) == 8
    for e in (0, 5):
        assert len(reg.neighbours_of[e]) == 2
        for j in reg.neighbours_of[e]:
            ex = reg.examples[j]
            text = tiny_tok.decode(list(ex.ids[:ex.prompt_len]), skip_special_tokens=True)
            assert facts[e]["subject"] not in text and 1 <= ex.target_len <= 3
    reg.reference = object()  # (filled by the loss in training)
    assert reg.next_batch([5, 0]) == reg.neighbours_of[5] + reg.neighbours_of[0]


def test_neighbour_term_keeps_neighbour_answers(tiny_model, tiny_tok, facts, tiny_hp):
    from locft_easyedit.locft.modeling import weights_applied

    reqs = facts[:16]
    prompts = [p for ps in neighbour_prompts(reqs, 2, 7) for p in ps]

    def drift(new):
        enc = tiny_tok(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            before = tiny_model(**enc).logits.log_softmax(-1)
            with weights_applied(tiny_model, new):
                after = tiny_model(**enc).logits.log_softmax(-1)
        last = enc["attention_mask"].sum(1) - 1
        rows = torch.arange(len(prompts))
        p, q = before[rows, last], after[rows, last]
        return float((p.exp() * (p - q)).sum(-1).mean())

    hp = _hp(tiny_hp, seed=7)
    plain, _ = execute_locft(tiny_model, tiny_tok, reqs, hp, progress=False)
    kept, _ = execute_locft(tiny_model, tiny_tok, reqs,
                            dataclasses.replace(hp, neighbour_weight=50.0), progress=False)
    assert drift(kept) < 0.6 * drift(plain)  # measured 0.012 vs 0.026


@pytest.mark.parametrize("kw, key", [({"null_space_energy": 1.0}, "null_space_energy"),
                                     ({"null_space_rank": -1}, "null_space_rank"),
                                     ({"key_penalty_weight": -2.0}, "key_penalty_weight"),
                                     ({"neighbour_weight": float("nan")}, "neighbour_weight"),
                                     ({"key_tokens": 10}, "key_tokens"),
                                     ({"tuning": "lora", "null_space_rank": 8}, "null_space_rank"),
                                     ({"tuning": "lora", "key_penalty_weight": 1.0},
                                      "key_penalty_weight")])
def test_bad_locality_settings_are_refused_by_name(kw, key):
    with pytest.raises(ValueError, match=key):
        LocFTHyperParams(**kw)


def test_key_options_refuse_tensors_without_keys(tiny_model, tiny_tok, facts, tiny_hp):
    from locft_easyedit.locft import LocFTInputError

    hp = _hp(tiny_hp, rewrite_module_tmp="model.layers.{}.post_attention_layernorm.weight",
             null_space_rank=4)
    with pytest.raises(LocFTInputError, match="linear"):
        execute_locft(tiny_model, tiny_tok, facts[:4], hp, progress=False)
    with pytest.raises(LocFTInputError, match="key_corpus"):
        execute_locft(tiny_model, tiny_tok, facts[:4],
                      _hp(tiny_hp, null_space_rank=4, key_corpus="/no/such/file.txt"),
                      progress=False)


def test_fast_equals_reference_with_every_new_option(tiny_model, tiny_tok, facts, tiny_hp):
    """The neighbour texts (answer positions only) and the key terms go through the fast
    path's cache exactly as through the plain forward."""
    hp = dataclasses.replace(_hp(tiny_hp), num_epochs=4, preserve_weight=1.0,
                             preserve_samples=4, neighbour_weight=2.0, null_space_rank=32,
                             key_penalty_weight=0.5)
    fast, rf = execute_locft(tiny_model, tiny_tok, facts[:16], hp, progress=False)
    ref, rr = execute_locft(tiny_model, tiny_tok, facts[:16],
                            dataclasses.replace(hp, implementation="reference"), progress=False)
    assert rf.implementation == "fast" and rr.implementation == "reference"
    assert rf.epoch_losses == pytest.approx(rr.epoch_losses, rel=1e-5)
    w0 = dict(tiny_model.named_parameters())[NAME].detach()
    d_fast, d_ref = fast[NAME] - w0, ref[NAME] - w0
    assert float((d_fast - d_ref).norm() / d_ref.norm()) <= 1e-4
