"""Bootstrap intervals over edits (locft_easyedit.intervals) and the per-edit lists they use."""
import math

import pytest

from locft_easyedit.evaluate import (evaluate_requests, locality_snapshot, per_request,
                                     pooled_mean, probability_scores)
from locft_easyedit.intervals import bootstrap_ci

from test_evaluate import _counterfact_like


def test_constant_scores_have_a_zero_width_interval():
    ci = bootstrap_ci({"reliability": [[1.0, 1]] * 50, "locality": [[0.0, 3]] * 50})
    assert ci == {"reliability": [1.0, 1.0], "locality": [0.0, 0.0]}


def test_interval_of_a_half_matches_the_normal_approximation():
    # 1,000 edits, half right: the 95% interval is 0.5 +- 1.96 * sqrt(0.25 / 1000) = +-0.031
    per = [[float(i % 2), 1] for i in range(1000)]
    low, high = bootstrap_ci({"r": per})["r"]
    assert low == pytest.approx(0.469, abs=0.006) and high == pytest.approx(0.531, abs=0.006)
    assert bootstrap_ci({"r": per}) == bootstrap_ci({"r": per})  # the seed is fixed
    assert bootstrap_ci({"r": per}, seed=1) != bootstrap_ci({"r": per})


def test_an_edit_counts_with_all_its_prompts():
    # one edit with 99 right prompts, 99 edits with one wrong prompt each: the pooled mean is
    # 0.5; a resample without the big edit scores 0, one with it twice 2/3 -> wide interval
    per = [[99.0, 99]] + [[0.0, 1]] * 99
    assert pooled_mean(per) == 0.5
    low, high = bootstrap_ci({"s": per})["s"]
    assert low == 0.0 and high > 0.6


def test_scores_missing_for_some_edits_and_bad_input():
    per = {"generalization": [[1.0, 1], [0.0, 0]] * 20, "none": [[0.0, 0]] * 40}
    ci = bootstrap_ci(per)
    assert ci["generalization"] == [1.0, 1.0]  # edits without a paraphrase do not count
    assert all(math.isnan(v) for v in ci["none"])
    with pytest.raises(ValueError, match="one \\[sum, count\\] per edit"):
        bootstrap_ci({"a": [[1, 1]], "b": [[1, 1], [0, 1]]})
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci({"a": [[1, 1]]}, level=95)


def test_per_request_sums_by_owner():
    assert per_request([1.0, 0.5, 0.0, 1.0], [0, 2, 2, 2], 4) == \
        [[1.0, 1], [0.0, 0], [1.5, 3], [0.0, 0]]
    assert math.isnan(pooled_mean([[0.0, 0]]))


def test_per_edit_lists_pool_to_the_row_means(tiny_model, tiny_tok, facts):
    reqs = _counterfact_like(facts[:12])
    reqs[3] = {k: v for k, v in reqs[3].items() if k != "rephrase_prompt"}
    loc = locality_snapshot(tiny_model, tiny_tok, reqs)
    scores = evaluate_requests(tiny_model, tiny_tok, reqs, loc, generation=False, per_edit=True)
    per = scores.pop("per_edit")
    assert set(per) == {"reliability", "generalization", "locality"}
    for k, v in per.items():
        assert len(v) == 12 and pooled_mean(v) == pytest.approx(scores[k])
    assert per["generalization"][3] == [0.0, 0]  # no paraphrase: nothing to count
    assert [c for _, c in per["locality"]] == [2] * 12  # two locality prompts per request
    assert scores["locality"] == 1.0  # the unedited model against its own snapshot
    probs = probability_scores(tiny_model, tiny_tok, reqs, per_edit=True)
    pper = probs.pop("per_edit")
    for k in ("efficacy_score", "paraphrase_score", "neighborhood_score"):
        assert pooled_mean(pper[k]) == pytest.approx(probs[k])
    assert "per_edit" not in evaluate_requests(tiny_model, tiny_tok, reqs, generation=False)
