"""The standalone scores (locft_easyedit.evaluate) against direct computations on the tiny model."""
import pytest
import torch

from locft_easyedit import apply_locft_to_model
from locft_easyedit.locft.encoding import encode_one
from locft_easyedit.evaluate import (probability_scores, target_logprobs, target_predictions,
                                     token_accuracy)
from locft_easyedit.synthetic import OBJECTS


def _direct(model, tok, prompt, target):
    """Logits at the target positions, one unpadded sequence at a time."""
    e = encode_one(tok, prompt, target, append_eos=False)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([e.ids])).logits[0].float()
    return logits[e.prompt_len - 1:e.length - 1], torch.tensor(e.ids[e.prompt_len:])


def test_teacher_forced_scores_match_unbatched_forward(tiny_model, tiny_tok, facts):
    prompts = [f["prompt"] for f in facts[:10]]
    targets = [f["target_new"] for f in facts[:10]]
    preds = target_predictions(tiny_model, tiny_tok, prompts, targets, batch_size=4)
    logps = target_logprobs(tiny_model, tiny_tok, prompts, targets, batch_size=4)
    accs = token_accuracy(tiny_model, tiny_tok, prompts, targets, batch_size=4)
    for p, t, pred, lp, acc in zip(prompts, targets, preds, logps, accs):
        logits, ids = _direct(tiny_model, tiny_tok, p, t)
        assert torch.equal(pred[1], ids) and torch.equal(pred[0], logits.argmax(-1))
        want = float(logits.log_softmax(-1).gather(-1, ids[:, None]).mean())
        assert abs(lp - want) < 1e-4  # padding in a batch of 4 changes nothing
        assert acc == float((logits.argmax(-1) == ids).float().mean())


def _counterfact_like(facts):
    """Requests with a true object and neighbourhood prompts (the next fact's prompt, answered
    by this fact's true object, plus one answered by something else, which must be ignored)."""
    reqs = []
    for i, f in enumerate(facts):
        truth = next(o for o in OBJECTS if o != f["target_new"])
        other = facts[(i + 1) % len(facts)]["prompt"]
        reqs.append({**f, "ground_truth": truth,
                     "locality": {"neighborhood": {"prompt": [other, other + " again"],
                                                   "ground_truth": [truth, "zz"]}}})
    return reqs


def test_probability_scores_are_complementary_and_move_with_the_edit(tiny_model, tiny_tok,
                                                                      facts, tiny_hp):
    reqs = _counterfact_like(facts[:16])
    swapped = [{**r, "target_new": r["ground_truth"], "ground_truth": r["target_new"]}
               for r in reqs]
    before = probability_scores(tiny_model, tiny_tok, reqs)
    before_swapped = probability_scores(tiny_model, tiny_tok, swapped)
    assert before["neighborhood_prompts"] == 16  # the "zz" answers are not neighbourhood pairs
    # "new beats true" on the requests is "true beats new" on the swapped ones (no ties here)
    assert abs(before["efficacy_score"] + before_swapped["efficacy_score"] - 1) < 1e-9
    assert abs(before["paraphrase_score"] + before_swapped["paraphrase_score"] - 1) < 1e-9
    edited, _ = apply_locft_to_model(tiny_model, tiny_tok, reqs, tiny_hp, copy=True,
                                     progress=False)
    after = probability_scores(edited, tiny_tok, reqs)
    assert after["efficacy_score"] == 1.0 > before["efficacy_score"]
    assert after["paraphrase_score"] >= before["paraphrase_score"]
    # a neighbourhood prompt that IS the edit prompt: "true beats new" there is the complement
    # of efficacy, so after the edit it must be 0 (and before it, 1 - efficacy before)
    own = [{**r, "locality": {"neighborhood": {"prompt": [r["prompt"]],
                                               "ground_truth": [r["ground_truth"]]}}}
           for r in reqs]
    assert probability_scores(edited, tiny_tok, own)["neighborhood_score"] == 0.0
    assert probability_scores(tiny_model, tiny_tok, own)["neighborhood_score"] == \
        pytest.approx(1 - before["efficacy_score"])


def test_scores_of_the_unedited_model_measured_earlier_give_the_same_report(tiny_model,
                                                                           tiny_tok, facts,
                                                                           tiny_hp):
    """``edit_and_score(unedited=measure_unedited(...))`` (a paused row's kept snapshot) is
    the report of measuring it in the call, and measures nothing before the edit; a snapshot
    of other requests or arguments is refused."""
    import copy

    from locft_easyedit.evaluate import edit_and_score, measure_unedited

    reqs = _counterfact_like(facts[:8])
    kw = {"probabilities": True, "answers": 3, "batch_size": 4}
    fresh = copy.deepcopy(tiny_model)
    snapshot = measure_unedited(fresh, tiny_tok, reqs, **kw)
    forwards = []
    hook = fresh.register_forward_hook(lambda *a: forwards.append(1))

    def edit(m):
        assert not forwards  # nothing measured before the edit: all of it came from snapshot
        return apply_locft_to_model(m, tiny_tok, reqs, tiny_hp, progress=False)

    kept = edit_and_score(fresh, tiny_tok, reqs, edit, per_edit=True, unedited=snapshot, **kw)
    hook.remove()
    whole = edit_and_score(tiny_model, tiny_tok, reqs, lambda m: apply_locft_to_model(
        m, tiny_tok, reqs, tiny_hp, progress=False), per_edit=True, **kw)
    assert kept.answers_before == whole.answers_before and len(whole.answers_before) == 3
    assert kept.before == whole.before and "probability" in whole.before
    for key in ("reliability", "generalization", "locality", "per_edit", "probability"):
        assert kept.after[key] == whole.after[key], key
    assert whole.after["locality"] < 1.0  # the snapshot is compared with: a score that moved
    with pytest.raises(ValueError, match="other requests or other arguments"):
        edit_and_score(fresh, tiny_tok, reqs[:5], edit, unedited=snapshot, **kw)
    with pytest.raises(ValueError, match="probability scores: True"):
        edit_and_score(fresh, tiny_tok, reqs, edit, unedited=snapshot, answers=3)
