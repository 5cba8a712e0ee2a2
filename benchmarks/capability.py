"""Capability retention through lm-evaluation-harness, on local data (nothing from a hub).

The paper measures what editing costs with lm-eval (MMLU, GSM8K, NQ-open). Those tasks fetch
their data from a hub; here two local tasks, shipped as lm-eval task YAMLs in
``benchmarks/lm_eval_tasks/``, run through lm-eval's Python API on the in-memory model
(``HFLM(pretrained=model, tokenizer=tok)``):

* ``locft_heldout_text``: word / byte perplexity and bits per byte of held-out text (the last
  10% of CPython's ``pydoc_data.topics``, :func:`common.corpus_parts`), lm-eval's
  ``loglikelihood_rolling``;
* ``locft_known_facts``: accuracy on CounterFact facts no run edits that the unedited model
  already knows (:func:`known_facts` selects them per model with lm-eval itself), true
  object vs the record's false object.

With hub access the paper's tasks run the same way: ``capability(model, tok,
tasks=["mmlu", "gsm8k", "nq_open"])``. Every figure comes with a 95% bootstrap interval over
the task's documents (``*_ci95``), from lm-eval's per-document samples.

    python benchmarks/capability.py --model embedded:smollm2-135m     # the unedited model
    python benchmarks/capability.py --write DIR                        # the task data files
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from common import corpus_parts, data_path, load  # noqa: E402

TASK_DIR = HERE / "lm_eval_tasks"
HELDOUT, KNOWN = "locft_heldout_text", "locft_known_facts"
DOC_CHARS = 2000  # held-out documents: paragraphs joined up to about this many characters
KNOWN_RECORDS = (1500, 2000)  # CounterFact records no run edits (runs take <= 1,000 from 0)
COUNTERFACT = "counterfact_2k.json"
# one document a forward: the held-out documents are ~1,000 tokens, and lm-eval keeps a whole
# batch's logits (16 of them: ~3 GB with a 49K vocabulary), which would be the row's peak memory
BATCH = 1
# bump when the tasks, their data or how they run change: cached baselines are recomputed
# (1: 16 documents a forward, the rows of 2026-12-02; 2: one)
PROTOCOL = 2

logger = logging.getLogger("benchmarks.capability")


def heldout_documents(max_chars: int = DOC_CHARS) -> list:
    """The held-out text as documents of whole paragraphs, each about ``max_chars`` long."""
    docs, cur = [], ""
    for para in corpus_parts()[1].split("\n\n"):
        if cur and len(cur) + len(para) > max_chars:
            docs.append(cur)
            cur = ""
        cur = f"{cur}\n\n{para}" if cur else para
    if cur.strip():
        docs.append(cur)
    return [{"text": d} for d in docs if d.strip()]


def fact_candidates(records=KNOWN_RECORDS) -> list:
    """CounterFact records ``records`` as two-choice questions (true object vs the record's
    false object), ``id`` = the record index; the true object's place alternates."""
    from locft_easyedit import load_dataset

    every = load_dataset(data_path(COUNTERFACT), "counterfact")
    out = []
    for i in range(*records):
        r = every[i]
        true, false = r.get("ground_truth"), r["target_new"]
        if not isinstance(true, str) or not true.strip() or true == false:
            continue
        gold = i % 2
        out.append({"id": i, "prompt": r["prompt"], "gold": gold,
                    "choices": [true, false] if gold == 0 else [false, true]})
    return out


def jsonl(docs: list) -> str:
    """``docs`` as JSON lines (keys sorted: the same documents, the same text)."""
    return "".join(json.dumps(d, sort_keys=True) + "\n" for d in docs)


def data_file(task: str, docs: list) -> Path:
    """``docs`` as a JSON-lines file under the user's cache, named by its content (the same
    documents are the same file, so ``datasets`` reuses what it prepared from it)."""
    from locft_easyedit.models import cache_dir

    text = jsonl(docs)
    path = cache_dir() / "lm_eval" / f"{task}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def task_configs(data: dict) -> list:
    """The shipped task YAMLs as lm-eval task dicts, each reading ``data[task]`` (a list of
    documents) from its :func:`data_file`."""
    import yaml

    configs = []
    for task, docs in data.items():
        cfg = yaml.safe_load((TASK_DIR / f"{task}.yaml").read_text())
        cfg["dataset_kwargs"] = {"data_files": {cfg["test_split"]: str(data_file(task, docs))}}
        configs.append(cfg)
    return configs


def _evaluate(model, tok, tasks: list, batch_size: int) -> dict:
    """lm-eval's ``simple_evaluate`` on the in-memory model; ``{task: (metrics, samples)}``."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local JSON files only
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    for name in ("lm_eval", "lm-eval"):  # its per-task INFO lines drown the benchmark's own
        logging.getLogger(name).setLevel(logging.WARNING)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
    res = lm_eval.simple_evaluate(model=lm, tasks=tasks, log_samples=True, bootstrap_iters=0,
                                  verbosity="WARNING")
    return {name: (res["results"][name], res["samples"][name]) for name in res["results"]}


def _ci(per: list) -> list:
    from locft_easyedit.intervals import bootstrap_ci

    return bootstrap_ci({"x": per})["x"]


def summarize(name: str, metrics: dict, samples: list) -> dict:
    """Row fields of one task: its metrics (lm-eval's names, ``,none`` filters dropped), the
    number of documents and a bootstrap interval over documents for each metric."""
    out = {f"{name}_docs": len(samples)}
    for key, value in metrics.items():
        metric, _, filt = key.partition(",")
        if (metric in ("alias", "name", "sample_len") or metric.endswith("_stderr")
                or filt not in ("none", "")):
            continue
        out[f"{name}_{metric}"] = value
        first = samples[0].get(metric) if samples else None
        if isinstance(first, (int, float)):  # a per-document score: mean over documents
            out[f"{name}_{metric}_ci95"] = _ci([[float(s[metric]), 1] for s in samples])
        elif isinstance(first, (list, tuple)) and metric in ("word_perplexity",
                                                             "byte_perplexity"):
            # (log-likelihood, words or bytes): exp of the pooled negative mean, per document
            low, high = _ci([[-float(s[metric][0]), float(s[metric][1])] for s in samples])
            out[f"{name}_{metric}_ci95"] = [math.exp(low), math.exp(high)]
        elif isinstance(first, (list, tuple)) and metric == "bits_per_byte":
            low, high = _ci([[-float(s[metric][0]), float(s[metric][1])] for s in samples])
            out[f"{name}_{metric}_ci95"] = [low / math.log(2), high / math.log(2)]
    return out


def known_facts(model, tok, batch_size: int = BATCH) -> list:
    """The record indices of :func:`fact_candidates` the model answers right (lm-eval's
    accuracy): call it on the UNEDITED model, once per model."""
    cands = fact_candidates()
    (_, samples), = _evaluate(model, tok, task_configs({KNOWN: cands}), batch_size).values()
    right = {s["doc"]["id"] for s in samples if s["acc"] == 1.0}
    return [c["id"] for c in cands if c["id"] in right]


def capability(model, tok, known: list | None = None, tasks: list | None = None,
               batch_size: int = BATCH) -> dict:
    """Row fields (``cap_<task>_<metric>``, ``..._ci95``, ``..._docs``) of the local tasks on
    ``model``: held-out perplexity, and known-fact accuracy on the records ``known`` (from
    :func:`known_facts` on the unedited model; skipped when None). ``tasks``: lm-eval task
    names instead (the paper's, where a hub is reachable)."""
    import lm_eval

    if tasks is None:
        data = {HELDOUT: heldout_documents()}
        if known is not None:
            keep = set(known)
            data[KNOWN] = [c for c in fact_candidates() if c["id"] in keep]
        tasks = task_configs(data)
    out = {"capability_protocol": PROTOCOL, "lm_eval_version": lm_eval.__version__}
    for name, (metrics, samples) in _evaluate(model, tok, tasks, batch_size).items():
        short = name[len("locft_"):] if name.startswith("locft_") else name
        out.update({f"cap_{k}": v for k, v in summarize(short, metrics, samples).items()})
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2-135m",
                    help="embedded:smollm2-135m, a local folder, or 'tiny'")
    ap.add_argument("--write", metavar="DIR", help="only write the task data files to DIR "
                    "(held-out text and every candidate fact) and stop")
    ap.add_argument("--batch-size", type=int, default=BATCH)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.write:
        folder = Path(args.write)
        folder.mkdir(parents=True, exist_ok=True)
        for name, docs in (("heldout_text.jsonl", heldout_documents()),
                           ("known_facts.jsonl", fact_candidates())):
            (folder / name).write_text(jsonl(docs))
            logger.info("wrote %s (%d documents)", folder / name, len(docs))
        return {}
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model, tok, _ = load(args.model)
    known = known_facts(model, tok, args.batch_size)
    res = capability(model, tok, known, batch_size=args.batch_size)
    res["known_records"] = len(known)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
