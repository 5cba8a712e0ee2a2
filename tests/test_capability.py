"""Capability through lm-evaluation-harness on local data (benchmarks/capability.py)."""
import math

import pytest

from test_benchmarks import _load


@pytest.fixture(scope="module")
def cap():
    return _load("capability")


def test_heldout_documents_are_the_whole_heldout_text(cap):
    docs = cap.heldout_documents()
    heldout = cap.corpus_parts()[1]
    # whole paragraphs, in order, nothing lost: 46K characters in 23 documents
    assert "\n\n".join(d["text"] for d in docs) == heldout
    assert len(docs) == 23


def test_fact_candidates_alternate_the_true_object(cap):
    if not (cap.data_path.__globals__["data_dir"]() / cap.COUNTERFACT).is_file():
        pytest.skip("counterfact_2k.json is missing")
    cands = cap.fact_candidates((1500, 1510))
    assert [c["id"] for c in cands] == list(range(1500, 1510))
    assert [c["gold"] for c in cands] == [0, 1] * 5
    for c in cands:
        assert len(c["choices"]) == 2 and c["choices"][0] != c["choices"][1]


def test_summarize_gives_lm_eval_metrics_and_intervals_over_documents(cap):
    # word perplexity of two documents: (log-likelihood, words) -> exp(-sum ll / sum words)
    samples = [{"word_perplexity": (-10.0, 5), "acc": 1.0},
               {"word_perplexity": (-30.0, 5), "acc": 0.0}] * 50
    metrics = {"alias": "x", "word_perplexity,none": math.exp(4.0), "acc,none": 0.5,
               "acc_stderr,none": 0.05, "sample_len": 100, "name": "x"}
    out = cap.summarize("t", metrics, samples)
    assert set(out) == {"t_docs", "t_word_perplexity", "t_word_perplexity_ci95", "t_acc",
                        "t_acc_ci95"}
    assert out["t_docs"] == 100 and out["t_acc"] == 0.5
    low, high = out["t_word_perplexity_ci95"]
    # per document 2 or 6 nats a word: 4 +- 1.96 * 2 / sqrt(100) = +-0.39 (percentiles of
    # 1,000 resamples land on the grid of attainable means: allow 0.5)
    assert math.exp(3.5) < low < math.exp(4.0) < high < math.exp(4.5)
    low, high = out["t_acc_ci95"]  # 0.5 +- 1.96 * sqrt(0.25 / 100) = +-0.098
    assert low == pytest.approx(0.40, abs=0.02) and high == pytest.approx(0.60, abs=0.02)


def test_task_data_files_are_named_by_their_content(cap, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    docs = [{"text": "a"}, {"text": "b"}]
    first = cap.data_file("t", docs)
    assert first.parent == tmp_path / "locft_easyedit" / "lm_eval"
    assert first == cap.data_file("t", [dict(d) for d in docs])  # same content, same file
    assert first != cap.data_file("t", docs[:1])
    assert first.read_text() == '{"text": "a"}\n{"text": "b"}\n'
    (cfg,) = cap.task_configs({cap.HELDOUT: docs})
    assert cfg["task"] == cap.HELDOUT and cfg["output_type"] == "loglikelihood_rolling"
    assert cfg["dataset_kwargs"] == {"data_files": {"test": str(cap.data_file(cap.HELDOUT,
                                                                               docs))}}
