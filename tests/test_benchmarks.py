"""Smoke test of the lifelong benchmark runner (benchmarks/run.py) and its report.

Runs N=10 ZsRE edits with LocFT-BF and FT-M on the tiny random Llama (seconds). FT-M goes
through EasyEdit when this interpreter imports it; otherwise the runner's stand-in (LocFT's
depth-first pipeline with FT-M's steps) runs and the row says so.
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from conftest import shared_file

REPO = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def lm_eval_problem():
    """None if lm-evaluation-harness (the rows' capability figures) imports here, else why
    not (e.g. the oldest supported transformers' huggingface_hub is older than the installed
    ``datasets`` needs)."""
    try:
        import datasets  # noqa: F401
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


def needs_lm_eval():
    problem = lm_eval_problem()
    if problem:
        pytest.skip(f"lm-evaluation-harness is not usable with these versions ({problem}); "
                    "benchmark rows measure capability with it")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    needs_lm_eval()
    run = _load("run")
    shared_file("zsre_2k.json")  # skips without the shared data
    out = tmp_path_factory.mktemp("bench") / "rows.jsonl"
    argv = ["--model", "tiny", "--methods", "locft-bf", "ft-m", "--datasets", "zsre",
            "--n", "10", "--threads", "1", "--out", str(out), "--python", sys.executable]
    run.main(argv)
    return out, [json.loads(line) for line in out.read_text().splitlines()], run, argv


def test_rows_have_sane_metrics(rows):
    out, got, _, _ = rows
    assert [(r["method"], r["dataset"], r["n"]) for r in got] == [
        ("locft-bf", "zsre", 10), ("ft-m", "zsre", 10)]
    for r in got:
        # capability through lm-eval: the known facts are those the unedited model gets
        # right (accuracy 1 before, by construction), over documents from CounterFact
        assert r["cap_known_facts_acc_before"] == 1.0
        assert r["cap_known_facts_docs_before"] == r["cap_known_facts_docs_after"] > 100
        assert r["cap_heldout_text_docs_after"] == 23  # 46K held-out characters, 2K each
        for when in ("before", "after"):
            ppl = r[f"cap_heldout_text_word_perplexity_{when}"]
            low, high = r[f"cap_heldout_text_word_perplexity_{when}_ci95"]
            assert math.isfinite(ppl) and ppl > 1.0 and low < ppl < high
        # every edit score has its interval over edits, around the score itself
        for key in ("reliability", "generalization", "reliability_em", "locality"):
            low, high = r[key + "_ci95"]
            assert low <= r[key] <= high, key
        assert r["bootstrap_resamples"] == 1000
        assert r["seconds_per_edit"] > 0 and r["peak_rss_mb"] > 50
        assert r["command"].startswith("python benchmarks/run.py --methods " + r["method"])
        assert [a["target"] for a in r["answers_sample"]] == [a["target"] for a in
                                                              got[0]["answers_sample"]]
        assert len(r["answers_sample"]) == 8 and all(isinstance(a["answer"], str)
                                                     for a in r["answers_sample"])
    bf = got[0]
    assert bf["reliability"] > 0.5  # the tiny model learns the edits a little
    # one baseline for every row
    assert got[0]["cap_heldout_text_bits_per_byte_before"] == \
        got[1]["cap_heldout_text_bits_per_byte_before"]
    assert 0.0 < got[0]["cap_known_facts_acc_after"] < 1.0  # the edits cost some known facts


def test_locft_row_scores_are_those_of_the_same_edit_done_directly(rows):
    """The runner's row (its own process, one thread) holds exactly the scores of the same
    edit made and scored here, with one thread too."""
    import torch

    from locft_easyedit import apply_locft_to_model
    from locft_easyedit.evaluate import edit_and_score

    out, got, run, _ = rows
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tok, _ = run.load("tiny")
        requests = run.requests_for("zsre", 10)
        hp = run.locft_hparams("locft-bf", "tiny", None)
        report = edit_and_score(model, tok, requests, generation=True, edit=lambda m:
                                apply_locft_to_model(m, tok, requests, hp, progress=False))
        known = json.loads((out.parent / "capability_baseline_tiny.json").read_text())
        capability = run.capability(model, tok, known["known_records"])
    finally:
        torch.set_num_threads(threads)
    bf = got[0]
    for key in ("reliability", "generalization", "reliability_em", "generalization_em",
                "locality"):
        assert bf[key] == report.after[key], key
    for key in ("cap_known_facts_acc", "cap_heldout_text_word_perplexity",
                "cap_heldout_text_word_perplexity_ci95"):
        assert bf[key.replace("_ci95", "_after_ci95") if key.endswith("_ci95")
                  else key + "_after"] == capability[key], key


def test_rerun_skips_finished_rows(rows):
    out, got, run, argv = rows
    assert run.main(argv) == []
    assert len(out.read_text().splitlines()) == len(got)


def test_report_table_and_plots(rows, tmp_path):
    out, got, _, _ = rows
    report = _load("report")
    text = report.main([str(out), "--plots", str(tmp_path), "--answers"])
    assert text.count("\n| zsre | 10 |") == 4  # two rows in each of the two tables
    assert text.count("| rel (tok) |") == 1 and text.count("| word ppl after |") == 1
    bf = got[0]  # a figure with its interval over edits
    assert f"| {report._fmt(bf['reliability'])} ({report._fmt(bf['reliability_ci95'][0])}-" \
        in text
    first = got[0]["answers_sample"][0]
    assert f"| {first['target']} |" in text  # the sample answers, next to their targets
    for name in ("reliability_vs_n.png", "retention_vs_n.png", "seconds_per_edit_vs_n.png",
                 "pareto_reliability_locality.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_changed_settings_rerun_the_row(rows, tmp_path):
    """A row counts as finished only for the settings it ran with: changing a value in the
    YAML makes the next sweep run it again; editing a comment does not."""
    out, got, run, _ = rows
    bf = got[0]
    shipped = REPO / "hparams" / "smollm2-135m.yaml"
    assert bf["settings_sha256"] == run.settings_digest("locft-bf", str(shipped))
    assert run.row_key(bf) in run.finished(out)
    commented = tmp_path / "commented.yaml"
    commented.write_text("# a new comment\n" + shipped.read_text())
    assert run.settings_digest("locft-bf", str(commented)) == bf["settings_sha256"]
    changed = tmp_path / "changed.yaml"
    changed.write_text(shipped.read_text() + "\nseed: 7\n")
    key = ("locft-bf", "zsre", 10, "tiny", run.settings_digest("locft-bf", str(changed)), (), 0,
           None, 2)
    assert run.row_key(bf) == key[:4] + (bf["settings_sha256"],) + key[5:]
    assert key != run.row_key(bf) and key not in run.finished(out)
    ftm = got[1]  # EasyEdit methods are keyed by their own YAML, not the LocFT one
    assert ftm["settings_sha256"] == run.settings_digest("ft-m", str(changed))


def test_counterfact_row_has_probability_scores(tmp_path):
    needs_lm_eval()
    run = _load("run")
    shared_file("counterfact_2k.json")  # skips without the shared data
    out = tmp_path / "cf.jsonl"
    (row,) = run.main(["--model", "tiny", "--methods", "locft-bf", "--datasets", "counterfact",
                       "--n", "6", "--threads", "1", "--out", str(out)])
    from locft_easyedit.evaluate import probability_scores

    model, tok, _ = run.load("tiny")  # the unedited tiny model: the "before" scores, exactly
    before = probability_scores(model, tok, run.requests_for("counterfact", 6))
    for key in ("efficacy_score", "paraphrase_score", "neighborhood_score"):
        assert row[f"{key}_before"] == before[key], key
    assert row["neighborhood_prompts"] == 6  # one neighbourhood prompt per shared record
    assert row["efficacy_score_after"] > row["efficacy_score_before"]  # the edits landed
    text = _load("report").main([str(out)])
    assert "| ES before | ES after |" in text


def test_requests_skip_contradicting_prompts():
    """counterfact_2k.json asks 'Frank Lampard, the' for basketball and later quarterback:
    the runner keeps the first, takes the next record instead, and leaves N=100 as it was."""
    run = _load("run")
    shared_file("counterfact_2k.json")  # skips without the shared data
    from locft_easyedit import load_dataset
    from locft_easyedit import validate_requests

    raw = load_dataset(run.DATA_DIR / "counterfact_2k.json", "counterfact", n=1000)
    got = run.requests_for("counterfact", 1000)
    assert len(got) == 1000 and len({r["prompt"] for r in got}) == 1000
    validate_requests(got, conflicting_targets="error")  # no conflict left (the raw 1,000 have one)
    with pytest.raises(ValueError, match="'Frank Lampard, the' already has target 'basketball'"):
        validate_requests(raw, conflicting_targets="error")
    lampard = [r["target_new"] for r in got if r["prompt"] == "Frank Lampard, the"]
    assert lampard == ["basketball"] and raw[:562] == got[:562]
    assert run.requests_for("counterfact", 100) == raw[:100]


def test_label_offset_and_overrides_make_their_own_row(rows):
    """A tuning row: another method name, records from a dev offset, settings overridden;
    it is keyed and re-run apart from the plain row, and its command says how to redo it."""
    out, got, run, _ = rows
    tuned = out.parent / "tuned.jsonl"  # the same folder: the cached capability baseline
    argv = ["--model", "tiny", "--methods", "locft-bf", "--datasets", "zsre", "--n", "4",
            "--threads", "1", "--out", str(tuned), "--offset", "1000", "--label", "bf-e5",
            "--set", "num_epochs=5", "--seeds", "3", "--no-capability"]
    (row,) = run.main(argv)
    assert (row["method"], row["base_method"], row["offset"], row["overrides"], row["seed"]) == \
        ("bf-e5", "locft-bf", 1000, {"num_epochs": 5, "seed": 3}, 3)
    assert row["command"].endswith("--offset 1000 --seeds 3 --label bf-e5 --no-capability "
                                   "--set num_epochs=5")
    # a dev row: edit scores only, no lm-eval pass; keyed apart from a row with capability
    assert not [k for k in row if k.startswith("cap_") or k.startswith("lm_eval")]
    assert run.row_key(row)[-1] == 0 and run.row_key(got[0])[-1] == 2  # capability.PROTOCOL
    plain = ["--model", "tiny", "--methods", "locft-bf", "--datasets", "zsre", "--n", "10",
             "--threads", "1", "--out", str(out)]
    assert run.main(plain + ["--no-capability"]) == []  # the row with capability serves it
    # a row whose capability pass ran an older protocol is made again (not for a dev row)
    older = dict(got[0], capability_protocol=1)
    key = run.row_key(older)[:-1]
    assert not run.already_made(key, {run.row_key(older)}, no_capability=False)
    assert run.already_made(key, {run.row_key(older)}, no_capability=True)
    assert run.already_made(key, {run.row_key(got[0])}, no_capability=False)
    shipped = str(REPO / "hparams" / "smollm2-135m.yaml")
    assert row["settings_sha256"] == run.settings_digest("locft-bf", shipped, {"num_epochs": 5})
    assert row["settings_sha256"] != got[0]["settings_sha256"]
    tiny_tok = _load("common").load("tiny")[1]
    assert row["tokenizer_sha256"] == run.tokenizer_fingerprint(tiny_tok)[:12]
    dev = run.requests_for("zsre", 4, 1000)
    assert [a["prompt"] for a in row["answers_sample"]] == [r["prompt"] for r in dev]
    assert dev[0]["prompt"] != run.requests_for("zsre", 1)[0]["prompt"]
    assert run.main(argv) == []  # finished: skipped
    with pytest.raises(SystemExit):
        run.main(argv + ["--methods", "locft-bf", "ft-m"])  # one label, two methods
