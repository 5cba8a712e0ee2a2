"""End to end on the embedded SmolLM2-135M with the shipped hparams/smollm2-135m.yaml."""
from pathlib import Path

import pytest

from locft_easyedit import LocFTHyperParams, apply_locft_to_model, load_dataset
from conftest import shared_file
from locft_easyedit.evaluate import evaluate_requests, generate_answers, locality_snapshot

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_twenty_zsre_edits_land_and_unrelated_answers_survive(embedded, zsre_path):
    model, tok = embedded
    hp = LocFTHyperParams.from_hparams(REPO / "hparams" / "smollm2-135m.yaml")
    requests = load_dataset(zsre_path, "zsre", n=20)
    # Unrelated prompts: CounterFact neighbourhood prompts ("IKEA is located in the country of").
    unrelated = [r["locality"]["neighborhood"]["prompt"]
                 for r in load_dataset(shared_file("counterfact_2k.json"), "counterfact", n=20)]
    before_loc = locality_snapshot(model, tok, requests)
    before_answers = generate_answers(model, tok, unrelated)
    pre = evaluate_requests(model, tok, requests, before_loc, generation=False)

    edited, weights_copy = apply_locft_to_model(model, tok, requests, hp, copy=True,
                                                return_orig_weights=True, progress=False)
    post = evaluate_requests(edited, tok, requests, before_loc)
    after_answers = generate_answers(edited, tok, unrelated)
    first = lambda text: (text.split() or [""])[0].strip(",.;:").lower()
    same_start = sum(first(a) == first(b) for a, b in zip(before_answers, after_answers)) / 20

    assert pre["reliability"] < 0.3
    # measured with the shipped YAML (layer 26, preserve_weight 4, null_space_energy 0.9),
    # one thread, 2026-12-02:
    assert post["reliability"] >= 0.95          # measured 1.00
    assert post["reliability_em"] >= 0.8        # measured 1.00
    assert post["generalization"] >= 0.7        # measured 0.84 (generation EM 0.65)
    # Greedy answers (cut at ".", newline or EOS) to the unrelated prompts: 0.85 keep their
    # first word, 0.30 stay identical as a whole (edited models stop earlier: training
    # appends EOS).
    assert same_start >= 0.6, (same_start, list(zip(before_answers, after_answers)))
    # EasyEdit's neighbourhood score on these 20 edits' ZsRE loc prompts: measured 0.85
    assert post["locality"] >= 0.65, post
    assert list(weights_copy) == [f"model.layers.{hp.layers[0]}.mlp.down_proj.weight"]
