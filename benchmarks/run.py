"""Lifelong editing benchmark: method x dataset x N (x model), the paper's protocol.

All N edits are applied in order (LocFT-BF in one breadth-first call; LocFT-DF, FT-M and ROME
one request after another = depth-first; MEMIT and AlphaEdit in chunks of their
``batch_size``), then EVERY edit is scored on the FINAL model:

* reliability / generalization: EasyEdit's teacher-forced token accuracy (``reliability``,
  ``generalization``) and the paper's greedy-generation exact match (``reliability_em``,
  ``generalization_em``), on the prompts and their paraphrases;
* locality: EasyEdit's neighbourhood score (argmax agreement before vs after);
* CounterFact only, the probability scores of the ROME/MEMIT/AlphaEdit papers, before and
  after: efficacy and paraphrase score (share of prompts where the new target is more probable
  than the true object) and neighbourhood score (share of neighbourhood prompts where the true
  object stays more probable than the new target), mean token log-probabilities;
* capability retention through lm-evaluation-harness (``benchmarks/capability.py``), before
  and after: perplexity of held-out text (the last 10% of CPython's ``pydoc_data.topics``)
  and accuracy on known facts no run edits (CounterFact records 1500..1999 the unedited
  model gets right); ``--lm-eval-tasks`` names hub tasks instead (MMLU, GSM8K, ... where a
  hub is reachable);
* a 95% bootstrap interval over edits for every edit score (``*_ci95``, 1,000 resamples of
  the edits, :mod:`locft_easyedit.intervals`), over documents for the capability figures;
* seconds per edit (editing only) and the peak resident memory of the run (ru_maxrss); of
  a row made over several runs, the highest of them all up to their saves
  (``peak_rss_mb_all_runs``; rows made before that show their last run's, marked in
  RESULTS.md).

Each row runs in its own subprocess (clean peak memory, clean EasyEdit globals) and is
appended to the JSON-lines file as soon as it finishes; rows already there with the same
settings (SHA-256 of the parsed YAML the row runs with) are skipped, so a sweep can be resumed.
A row stopped part-way (``--max-minutes``, or a kill) keeps its state in ``states/`` beside the
results (``benchmarks/resume.py``; git tracks it: commit it, and the same command goes on from
it in a later session, also on another machine).

    python benchmarks/run.py --methods locft-bf ft-m --datasets zsre --n 100 --threads 1
    python benchmarks/run.py --model tiny --methods locft-bf ft-m --n 10   # seconds, tests

ROME, MEMIT, AlphaEdit, UltraEdit and WISE need EasyEdit (run with its venv's python); how
each runs, and its covariance statistics (computed offline, nothing downloaded), are in
``benchmarks/baselines.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # benchmarks/common.py, also when loaded from a file
    sys.path.insert(0, str(HERE))
import baselines  # noqa: E402  (EasyEdit's methods: FT-M, ROME, MEMIT, AlphaEdit, ...)
from baselines import NEEDS_EASYEDIT, easyedit_available, easyedit_yaml  # noqa: E402
from resume import ChunkState, Paused, locft_resumable, peak_mb  # noqa: E402
from target_cache import STATE_ENV, tokenizer_fingerprint  # noqa: E402
from common import (DATA_FILES, REPO, TINY, add_set_argument, data_dir, data_path,  # noqa: E402
                    load, parse_sets, tiny_hparams)

DATA_DIR = data_dir()  # the shared data folder (common.data_dir; the tests read it here)
METHODS = ("locft-bf", "locft-df", "ft-m", "rome", "memit", "alphaedit", "ultraedit", "wise")
# WISE routes a whole batch to its side memory or not, from the batch's mean activation:
# scored one prompt at a time, each prompt is routed on its own
SCORE_BATCH = {"wise": 1}
EMBEDDED = "embedded:smollm2-135m"
PAUSED = 3  # exit status of a row that ran out of --max-minutes (its state is saved)
SAMPLE_ANSWERS = 8  # each row keeps the greedy answers to its first 8 edit prompts

logger = logging.getLogger("benchmarks.run")


# --- data, hparams (models: common.load) -------------------------------------------------------
def requests_for(dataset: str, n: int, offset: int = 0):
    """The first ``n`` requests of the dataset, from record ``offset`` on (a dev split for
    tuning: records no evaluation row edits), that do not contradict an earlier one.

    CounterFact holds the same prompt with two different new targets (records 462 and 563 of
    counterfact_2k.json: 'Frank Lampard, the' -> basketball / quarterback); no method can
    satisfy both, and LocFT refuses such a request set. Every method gets the same list: a
    request whose prompt already has another target is skipped and the next record taken."""
    from locft_easyedit import load_dataset
    from locft_easyedit.locft.requests import normalise_target

    every = load_dataset(data_path(DATA_FILES[dataset]), dataset)[offset:]
    seen, out, skipped = {}, [], []
    for r in every:
        target = normalise_target(r["target_new"])  # compared as validate_requests does
        if seen.setdefault(r["prompt"], target) != target:
            skipped.append(r["prompt"])
            continue
        out.append(r)
        if len(out) == n:
            break
    if len(out) < n:
        raise SystemExit(f"{dataset}: only {len(out)} consistent requests, {n} asked for")
    if skipped:
        logger.info("%s N=%d: skipped %d request(s) contradicting an earlier one: %s",
                    dataset, n, len(skipped), skipped)
    return out


def locft_hparams(method: str, model_arg: str, hparams_path: str, overrides=None):
    """The LocFT settings of a row: the YAML (the tiny test settings for ``tiny``), depth-first
    for ``locft-df``, then ``overrides`` (``--set``)."""
    from locft_easyedit import LocFTHyperParams

    if model_arg == TINY:
        hp = tiny_hparams(num_epochs=60, mini_batch_size=8, device="cpu")
    else:
        hp = LocFTHyperParams.from_hparams(hparams_path)
    extra = {"pipeline": "depth_first"} if method == "locft-df" else {}
    if extra or overrides:
        hp = LocFTHyperParams.from_dict({**hp.to_dict(), **extra, **(overrides or {})},
                                        source="--set")
    return hp


# --- one row ---------------------------------------------------------------------------------
def baseline(model, tok, model_arg: str, out: Path, tasks=None) -> dict:
    """Capability of the unedited model (``benchmarks/capability.py``) and the known facts it
    selects, cached per model (and task list) beside ``out``; recomputed when the capability
    protocol changed."""
    import capability as cap

    tag = model_arg.replace(":", "_") + ("" if tasks is None else "_" + "+".join(tasks))
    path = out.parent / f"capability_baseline_{tag}.json"
    if path.is_file():
        res = json.loads(path.read_text())
        if res.get("capability_protocol") == cap.PROTOCOL:
            return res
    known = None if tasks else cap.known_facts(model, tok)
    res = {**capability(model, tok, known, tasks), "known_records": known}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res))
    return {**res, "computed_here": True}


def capability(model, tok, known, tasks=None, batch_size: int = 1) -> dict:
    """``cap_*`` fields of ``model`` (lm-eval on the local tasks, or on ``tasks``)."""
    import capability as cap

    return cap.capability(model, tok, known, tasks=tasks, batch_size=batch_size)


def when_fields(fields: dict, when: str) -> dict:
    """``cap_x`` -> ``cap_x_<when>``, ``cap_x_ci95`` -> ``cap_x_<when>_ci95``."""
    out = {}
    for k, v in fields.items():
        if k.startswith("cap_"):
            base, ci = (k[:-5], "_ci95") if k.endswith("_ci95") else (k, "")
            out[f"{base}_{when}{ci}"] = v
    return out


def apply_edits(method, model, tok, requests, model_arg, model_dir, args):
    """Apply all edits in order; returns ``(hparams description, extra fields)``: LocFT here,
    EasyEdit's methods in ``baselines.py``."""
    extra = {}
    if method in ("locft-bf", "locft-df"):
        from locft_easyedit import apply_locft_to_model

        hp = locft_hparams(method, model_arg, args.hparams, args.overrides)
        if args.state:  # LocFT's checkpoints: a killed row goes on from its last one
            hp, extra = locft_resumable(hp, args.state, method)
        apply_locft_to_model(model, tok, requests, hp)
        if model_arg == TINY:
            return "tiny (tests)", extra
        path = Path(args.hparams).resolve()
        return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path), extra
    try:
        import easyeditor  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        if method != "ft-m":
            raise
        # Without EasyEdit: FT-M's algorithm (depth-first, each edit alone for num_steps
        # steps of Adam on the target tokens) through LocFT's depth-first pipeline.
        from locft_easyedit import LocFTHyperParams, apply_locft_to_model

        base = locft_hparams("locft-df", model_arg, args.hparams).to_dict()
        base.update(pipeline="depth_first", num_epochs=25, mini_batch_size=1, append_eos=False)
        apply_locft_to_model(model, tok, requests, LocFTHyperParams.from_dict(base))
        extra["implementation"] = ("stand-in: LocFT depth_first with FT-M's steps, no EOS "
                                   f"(EasyEdit not importable: {type(exc).__name__})")
        return "ft-m stand-in", extra
    return baselines.easyedit_edits(method, model, tok, requests, model_arg, model_dir,
                                    args.overrides, args.state, args.max_minutes,
                                    args.reuse_targets, args.reuse_memory, args.hold_last)


def unedited_scores(args, model, tok, requests, tok_sha: str, **kw):
    """``evaluate.Unedited`` of the (still unedited) ``model`` for ``edit_and_score(**kw)``:
    read from the row's state folder (``--state``) when a run of this row measured it for the
    same requests, tokenizer and arguments (a paused row goes on in a new process: a WISE
    CounterFact row scored one prompt at a time spends ~14 min on it), else measured and, with
    a state folder, kept there before the first edit."""
    from locft_easyedit.evaluate import measure_unedited

    state = ChunkState(args.state) if args.state else None
    key = {"model": args.model, "tokenizer": tok_sha,
           "arguments": {k: v for k, v in kw.items() if k != "progress"},
           "requests": hashlib.sha256(json.dumps(requests, sort_keys=True).encode()
                                      ).hexdigest()}
    kept = state.load_unedited(key) if state else None
    if kept is not None:
        logger.info("the unedited model's scores read from %s", state.folder)
        return kept
    measured = measure_unedited(model, tok, requests, **kw)
    if state:
        state.save_unedited(measured, key)
    return measured


def run_one(args) -> dict:
    import torch

    from locft_easyedit.evaluate import edit_and_score
    from locft_easyedit.intervals import RESAMPLES, bootstrap_ci

    method, dataset, n = args.one
    n = int(n)
    load_at_start = os.getloadavg()[0]  # other jobs on the machine slow every timing
    torch.manual_seed(args.seed or 0)
    if args.seed is not None and method.startswith("locft"):  # the method's own seed too
        args.overrides = {**args.overrides, "seed": args.seed}
    requests = requests_for(dataset, n, args.offset)  # data problems surface before the model
    model, tok, model_dir = load(args.model)
    # which tokenizer the row ran with, as loaded (a wrongly converted one broke two rows once)
    tok_sha = tokenizer_fingerprint(tok)[:12]
    out = Path(args.out).resolve()
    tasks = args.lm_eval_tasks or None
    # dev rows (--no-capability) choose by edit scores alone: no lm-eval pass
    before_cap = None if args.no_capability else baseline(model, tok, args.model, out, tasks)
    done = {}

    def edit(m):
        # the method's random draws (EasyEdit's sampled context templates: ROME, MEMIT,
        # AlphaEdit, WISE) start from the seed whatever ran before in this process: lm-eval's
        # baseline pass runs only in the row that first computes it for its results file, and
        # that row's templates, and so its edits, differed (ROME's pause/resume test:
        # locality 0.937 resumed vs 0.914 whole before this seed)
        torch.manual_seed(args.seed or 0)
        done["hp_desc"], done["extra"] = apply_edits(method, m, tok, requests, args.model,
                                                     model_dir, args)
        return m.eval()

    # snapshot -> edit (timed) -> score every edit; CounterFact's probability scores
    # (efficacy / paraphrase / neighbourhood) before and after; greedy answers to the first
    # SAMPLE_ANSWERS prompts (the row keeps those after editing: what generation says, to read)
    kw = {"probabilities": dataset == "counterfact", "answers": SAMPLE_ANSWERS,
          "progress": True, "batch_size": SCORE_BATCH.get(method, 32)}
    scored = edit_and_score(model, tok, requests, edit, generation=True, per_edit=True,
                            unedited=unedited_scores(args, model, tok, requests, tok_sha, **kw),
                            **kw)
    # the peak of the process up to here: loading, the baseline's capability pass when this
    # row computed it (then said in capability_baseline_here), editing and scoring
    peak_editing = peak_mb()
    model, seconds, hp_desc, extra = scored.model, scored.seconds, done["hp_desc"], done["extra"]
    seconds += extra.pop("seconds_in_earlier_runs", 0.0)  # a resumed row: its whole editing
    saved_peak = extra.pop("peak_rss_mb_saved", None)  # and the peak of its earlier runs
    post = {k: v for k, v in scored.after.items() if k not in ("probability", "per_edit")}
    probs = {when: {k: v for k, v in d["probability"].items() if k != "per_edit"}
             for when, d in (("before", scored.before), ("after", scored.after))
             if "probability" in d}
    per_edit = dict(scored.after["per_edit"])
    if "probability" in scored.after:
        per_edit.update({f"{k}_after": v for k, v in
                         scored.after["probability"]["per_edit"].items()})
    intervals = {f"{k}_ci95": v for k, v in bootstrap_ci(per_edit).items()}
    sample = requests[:SAMPLE_ANSWERS]
    cap = {}
    if before_cap is not None:
        after_cap = capability(model, tok, before_cap["known_records"], tasks)
        cap = {**when_fields(before_cap, "before"), **when_fields(after_cap, "after"),
               "capability_protocol": after_cap["capability_protocol"],
               **({"lm_eval_tasks": tasks} if tasks else {}),
               "lm_eval_version": after_cap["lm_eval_version"],
               **({"capability_baseline_here": True} if before_cap.get("computed_here")
                  else {}),
               "peak_rss_mb_with_capability": peak_mb()}
    return {"method": args.label or method, "dataset": dataset, "n": n, "model": args.model,
            "tokenizer_sha256": tok_sha,
            **({"base_method": method} if args.label else {}),
            **({"offset": args.offset} if args.offset else {}),
            **({"seed": args.seed} if args.seed is not None else {}),
            **({"overrides": args.overrides} if args.overrides else {}),
            "hparams": hp_desc, **{k: v for k, v in post.items() if k != "n"},
            **intervals, "bootstrap_resamples": RESAMPLES,
            **cap, "seconds": seconds, "seconds_per_edit": seconds / n,
            "peak_rss_mb": max(peak_editing, saved_peak or 0.0),
            **({"peak_rss_mb_all_runs": True} if saved_peak is not None else {}),
            "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, "
                       f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
            "load_avg_1min_at_start": load_at_start,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            **{f"{k}_{when}": v for when, d in probs.items() for k, v in d.items()
               if k != "neighborhood_prompts"},
            **({"neighborhood_prompts": probs["after"]["neighborhood_prompts"]} if probs else {}),
            "answers_sample": [{"prompt": r["prompt"], "target": r["target_new"], "answer": a}
                               for r, a in zip(sample, scored.answers_after)], **extra}


# --- the sweep -------------------------------------------------------------------------------
def settings_digest(method: str, locft_yaml: str, overrides=None) -> str:
    """First 12 hex digits of the SHA-256 of the settings a row runs with (the LocFT YAML for
    locft-bf/-df, the EasyEdit YAML otherwise, with the ``--set`` overrides), parsed, so that
    changing a value re-runs its rows and editing a comment does not."""
    import yaml

    path = Path(locft_yaml) if method.startswith("locft") else easyedit_yaml(method)
    settings = {**yaml.safe_load(path.read_text()), **(overrides or {})}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def row_key(r: dict) -> tuple:
    """What makes two rows the same row (the last item: the capability protocol its lm-eval
    pass ran, ``capability.PROTOCOL``; 0 for a row without the pass)."""
    return (r["method"], r["dataset"], r["n"], r["model"], r.get("settings_sha256"),
            tuple(r.get("lm_eval_tasks") or ()), r.get("offset", 0), r.get("seed"),
            r.get("capability_protocol", 0))


def already_made(key: tuple, done: set, no_capability: bool) -> bool:
    """Whether ``done`` (:func:`finished`) holds the row ``key`` (:func:`row_key` less its
    last item): with the current capability protocol (a row of an older one is made again:
    its capability pass ran otherwise), or, for a run without the pass (a tuning row), with
    any or none (a row with the capability pass also serves a sweep that asks for none)."""
    import capability as cap

    return key + (cap.PROTOCOL,) in done or (
        no_capability and any(k[:-1] == key for k in done))


def finished(out: Path) -> set:
    """Keys of the rows already in ``out`` (rows made with other settings do not count)."""
    done = set()
    if out.is_file():
        for line in out.read_text().splitlines():
            if line.strip():
                done.add(row_key(json.loads(line)))
    return done


STATE_DIR = STATE_ENV  # env: where paused rows keep their states and locks


def state_root(out: Path) -> Path:
    """Where chunked rows keep their resumable states: ``$LOCFT_STATE_DIR`` when set, else
    ``states`` beside ``out``, which git tracks (its ``locks/`` is ignored): a new session may
    get a new machine, where only what was committed is there (found 2026-12-04: once
    ``~/.cache`` was kept and the work tree's ignored files were not, the next time neither,
    and paused rows started over). Commit it when the rows have stopped."""
    return Path(os.environ[STATE_DIR]) if os.environ.get(STATE_DIR) else out.parent / "states"


def _tag(method: str, dataset: str, n: int, model: str, digest: str) -> str:
    return f"{method}_{dataset}_{n}_{model.replace(':', '_').replace('/', '_')}_{digest}"


def state_folder(out: Path, method: str, dataset: str, n: int, model: str, digest: str) -> Path:
    """The folder of one chunked row's resumable state: ``resume/<tag>`` under
    :func:`state_root` (``method``: the row's label)."""
    return state_root(out) / "resume" / _tag(method, dataset, n, model, digest)


def paused(out: Path) -> dict:
    """``{(label, dataset, n): progress}`` of the rows with a saved state under
    :func:`state_root` (``resume.ChunkState.progress``: calls or edits done, of how many,
    editing seconds so far); the row is read back from its folder's name."""
    pattern = re.compile(r"^(?P<label>.+)_(?P<dataset>{})_(?P<n>\d+)_".format(
        "|".join(map(re.escape, DATA_FILES))))
    found = {}
    root = state_root(out) / "resume"
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        match, progress = pattern.match(folder.name), ChunkState(folder).progress()
        if match and progress:
            found[(match["label"], match["dataset"], int(match["n"]))] = progress
    return found


def progress_text(progress: dict) -> str:
    """``"40 of 100 calls, 63 min so far"`` for a :func:`paused` row's progress (WISE counts
    edits; ROME and FT-M make one call an edit); a row stopped after its last call, before its
    scoring ended, says so."""
    of = f" of {progress['total']}" if progress.get("total") else ""
    unit = "edits" if progress.get("method") == "wise" else "calls"
    left = "; its scoring is left" if progress.get("total") == progress["done"] else ""
    return f"{progress['done']}{of} {unit}, {progress['seconds'] / 60:.0f} min so far{left}"


def lock_path(folder: Path) -> Path:
    """The lock file of the row whose state is kept in ``folder``: ``locks/<name>.lock``
    beside ``resume/`` (which holds the states only) under :func:`state_root`."""
    return folder.parent.parent / "locks" / (folder.name + ".lock")


@contextlib.contextmanager
def claim(folder: Path):
    """Yield whether this process holds the row's lock (:func:`lock_path`, ``flock``):
    a second process given the same row (the other core's queue, a command run twice) skips
    it instead of editing it twice from the same saved state. The lock goes with the
    process, so a killed run leaves none behind."""
    import fcntl

    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def run_row(args, method: str, dataset: str, n: int, seed, digest: str, out: Path,
            state: ChunkState):
    """Run one row in its own process (``--one``) and append it to ``out``; None when it
    paused (its state kept) or failed."""
    cmd = [args.python, str(Path(__file__).resolve()), "--one", method, dataset, str(n),
           "--model", args.model, "--hparams", str(Path(args.hparams).resolve()),
           "--out", str(out)] + (["--threads", str(args.threads)] if args.threads else [])
    cmd += ["--lm-eval-tasks", *args.lm_eval_tasks] if args.lm_eval_tasks else []
    cmd += ["--max-minutes", str(args.max_minutes)] if args.max_minutes else []
    cmd += ["--hold-last"] if args.hold_last else []
    cmd += ["--offset", str(args.offset)] + (["--label", args.label] if args.label else [])
    cmd += ["--seed", str(seed)] if seed is not None else []
    cmd += ["--no-capability"] if args.no_capability else []
    cmd += ["--reuse-targets"] if args.reuse_targets else []
    cmd += ["--reuse-memory"] if args.reuse_memory else []
    cmd += ["--set", *args.set] if args.set else []
    cmd += ["--state", str(state.folder)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    row = next((json.loads(line[4:]) for line in proc.stdout.splitlines()
                if line.startswith("ROW ")), None)
    if proc.returncode == PAUSED:
        logger.warning("%s %s N=%d paused (%s); state kept in %s: run the same command "
                       "again to go on", method, dataset, n,
                       "--max-minutes or --hold-last" if args.hold_last else "--max-minutes",
                       state.folder)
        return None
    if proc.returncode != 0 or row is None:
        logger.error("%s %s N=%d failed (exit %d); not recorded", method, dataset, n,
                     proc.returncode)
        return None
    row["settings_sha256"] = digest
    row["command"] = " ".join(
        ["python", "benchmarks/run.py", "--methods", method, "--datasets", dataset,
         "--n", str(n), "--model", args.model]
        + (["--threads", str(args.threads)] if args.threads else [])
        + (["--offset", str(args.offset)] if args.offset else [])
        + (["--seeds", str(seed)] if seed is not None else [])
        + (["--label", args.label] if args.label else [])
        + (["--no-capability"] if args.no_capability else [])
        + (["--reuse-targets"] if args.reuse_targets else [])
        + (["--reuse-memory"] if args.reuse_memory else [])
        + (["--set", *(shlex.quote(x) for x in args.set)] if args.set else []))
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
    state.clear()
    logger.info("%s %s N=%d: rel %.3f (EM %.3f) gen %.3f (EM %.3f) loc %.3f, %.2f s/edit",
                method, dataset, n, row["reliability"], row["reliability_em"],
                row.get("generalization", float("nan")),
                row.get("generalization_em", float("nan")),
                row.get("locality", float("nan")), row["seconds_per_edit"])
    return row


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--datasets", nargs="+", default=["zsre"], choices=sorted(DATA_FILES))
    ap.add_argument("--n", nargs="+", type=int, default=[100])
    ap.add_argument("--model", default=EMBEDDED, help="embedded:smollm2-135m, a local folder, "
                                                      "or 'tiny' (random, for tests)")
    ap.add_argument("--hparams", default=str(REPO / "hparams" / "smollm2-135m.yaml"),
                    help="LocFT YAML for locft-bf / locft-df")
    ap.add_argument("--out", default=str(HERE / "results" / "edit_quality.jsonl"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lm-eval-tasks", nargs="+", default=[], metavar="TASK",
                    help="lm-eval task names for capability instead of the local tasks "
                         "(e.g. mmlu gsm8k nq_open; their data come from a hub)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for the runs (e.g. the EasyEdit venv's python)")
    ap.add_argument("--offset", type=int, default=0,
                    help="take the requests from this record on (a dev split for tuning: "
                         "evaluation rows edit from record 0)")
    add_set_argument(ap)
    ap.add_argument("--label", help="the method's name in the row (e.g. a tuning setting or "
                                    "LocFT with other options); one method per label")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="pause a chunked EasyEdit row (ROME, MEMIT, AlphaEdit, FT-M, WISE) "
                         "at its first saved state past this many minutes of editing (MEMIT "
                         "and AlphaEdit save after every call; ROME, FT-M, WISE every 10); the "
                         "same command goes on from there. LocFT rows do not pause: they "
                         "checkpoint every 5 minutes of training, and a killed one goes on "
                         "from its last checkpoint when the same command runs again")
    ap.add_argument("--hold-last", action="store_true",
                    help="a chunked EasyEdit row also pauses once only its last piece (the "
                         "edits between two saved states) is left: for a run with time to edit "
                         "further but not to score the row after its last piece (planned.py "
                         "sets it near a session's end)")
    ap.add_argument("--no-capability", action="store_true",
                    help="skip lm-eval's capability pass (dev rows for tuning, which choose "
                         "by reliability, generalization and locality only)")
    ap.add_argument("--reuse-targets", action="store_true",
                    help="MEMIT / AlphaEdit: read the target vectors an earlier run computed "
                         "for the same model, requests and every setting they depend on "
                         "(benchmarks/target_cache.py) instead of recomputing them; the row "
                         "says how many (targets_from_cache). For tuning grids, whose rows "
                         "that move only mom2_* / nullspace_threshold / L2 share them")
    ap.add_argument("--reuse-memory", action="store_true",
                    help="WISE: keep the trained side memory (benchmarks/wise_cache.py) and "
                         "load one an earlier run trained for the same model, requests and "
                         "every setting but act_ratio (read only when routing at inference) "
                         "instead of editing; the row says memory_from_cache. For tuning "
                         "grids, whose act_ratio rows share one training")
    ap.add_argument("--seeds", nargs="+", type=int, default=[],
                    help="one row per seed (LocFT's own seed and torch's); without it one row "
                         "with the YAML's seed")
    ap.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)  # one row's
    ap.add_argument("--state", help=argparse.SUPPRESS)  # a row's state folder (set by main)
    ap.add_argument("--one", nargs=3, metavar=("METHOD", "DATASET", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.overrides = parse_sets(args.set)
    if args.label and len(args.methods) > 1 and not args.one:
        ap.error("--label names one method: give one --methods")
    reusing = baselines.target_cache.METHODS
    if args.reuse_targets and set([args.one[0]] if args.one else args.methods) - set(reusing):
        ap.error(f"--reuse-targets applies to {' and '.join(reusing)} only (the methods whose "
                 "EasyEdit code takes a cache of target vectors)")
    if args.reuse_memory and set([args.one[0]] if args.one else args.methods) - {"wise"}:
        ap.error("--reuse-memory applies to wise only (the method with a side memory)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        try:
            row = run_one(args)
        except Paused as exc:
            logger.warning("paused: %s; run the same command again to go on", exc)
            raise SystemExit(PAUSED)
        print("ROW " + json.dumps(row), flush=True)
        return [row]

    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = finished(out)
    missing = easyedit_available(args.python)
    grid = [(m, d, n, seed) for n in args.n for d in args.datasets for m in args.methods
            for seed in (args.seeds or [None])]
    rows = []
    from tqdm.auto import tqdm

    for method, dataset, n, seed in tqdm(grid, desc="benchmark rows", unit="row"):
        digest = settings_digest(method, args.hparams, args.overrides)
        key = (args.label or method, dataset, n, args.model, digest, tuple(args.lm_eval_tasks),
               args.offset, seed)
        if already_made(key, done, args.no_capability):
            logger.info("skip %s %s N=%d: already in %s", method, dataset, n, out)
            continue
        if missing and method in NEEDS_EASYEDIT:
            logger.warning("skip %s: EasyEdit is not importable with %s (%s)", method,
                           args.python, missing)
            continue
        state = ChunkState(state_folder(out, args.label or method, dataset, n, args.model,
                                        f"{digest}_{args.offset}_{seed}"))
        with claim(state.folder) as mine:
            if not mine:
                logger.warning("skip %s %s N=%d: another process is running it (%s)", method,
                               dataset, n, lock_path(state.folder))
                continue
            # the row may have been finished meanwhile by that process
            if already_made(key, finished(out), args.no_capability):
                logger.info("skip %s %s N=%d: finished meanwhile by another process",
                            method, dataset, n)
                continue
            row = run_row(args, method, dataset, n, seed, digest, out, state)
        if row is not None:
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
