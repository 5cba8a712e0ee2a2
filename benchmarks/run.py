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
* seconds per edit (editing only) and the peak resident memory of the run (ru_maxrss).

Each row runs in its own subprocess (clean peak memory, clean EasyEdit globals) and is
appended to the JSON-lines file as soon as it finishes; rows already there with the same
settings (SHA-256 of the parsed YAML the row runs with) are skipped, so a sweep can be resumed.

    python benchmarks/run.py --methods locft-bf ft-m --datasets zsre --n 100 --threads 1
    python benchmarks/run.py --model tiny --methods locft-bf ft-m --n 10   # seconds, tests

ROME, MEMIT and AlphaEdit need EasyEdit (run with its venv's python); their covariance
statistics are computed offline from the first 90% of ``pydoc_data.topics`` and written into
EasyEdit's own statistics cache, so nothing is downloaded.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # benchmarks/common.py, also when loaded from a file
    sys.path.insert(0, str(HERE))
from resume import ChunkState, Paused  # noqa: E402
from common import (CORPUS_SPLIT, REPO, TINY, corpus_parts, data_dir, data_path,  # noqa: E402
                    add_set_argument, load, parse_sets, tiny_hparams)

DATA_DIR = data_dir()  # the shared data folder (common.data_dir; the tests read it here)
DATA_FILES = {"zsre": "zsre_2k.json", "counterfact": "counterfact_2k.json",
              "wikibigedit": "wikibigedit_2k.json"}
METHODS = ("locft-bf", "locft-df", "ft-m", "rome", "memit", "alphaedit", "ultraedit", "wise")
EASYEDIT_METHODS = {"ft-m": "FT", "rome": "ROME", "memit": "MEMIT", "alphaedit": "AlphaEdit",
                    "ultraedit": "ULTRAEDIT", "wise": "WISE"}
NEEDS_EASYEDIT = ("rome", "memit", "alphaedit", "ultraedit", "wise")  # FT-M has a stand-in
LEFT_PADDED = ("ft-m", "ultraedit", "wise")  # as EasyEdit's BaseEditor pads for them
# WISE routes a whole batch to its side memory or not, from the batch's mean activation:
# scored one prompt at a time, each prompt is routed on its own
SCORE_BATCH = {"wise": 1}
WISE_LOC_RECORDS = (1500, 2000)  # ZsRE records whose NQ questions no row edits or scores
EMBEDDED = "embedded:smollm2-135m"
SAVE_EVERY = {"rome": 10, "ft-m": 10}  # calls between saved states (others: every call)
PAUSED = 3  # exit status of a row that ran out of --max-minutes (its state is saved)
SAMPLE_ANSWERS = 8  # each row keeps the greedy answers to its first 8 edit prompts

logger = logging.getLogger("benchmarks.run")


# --- corpus (common.corpus_parts: statistics part, held-out part) ---------------------------
def _token_chunks(tok, text: str, window: int, limit: int):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    ids = ids[: limit * window]
    return [ids[i:i + window] for i in range(0, len(ids) - window + 1, window)]


def stats_cache_path(stats_dir: Path, model, layer_name: str, ds_name: str,
                     precision: str, sample_size: int) -> Path:
    """Where EasyEdit's ``layer_stats`` looks for its cached second moment."""
    model_name = model.config._name_or_path.rsplit("/")[-1]
    return (Path(stats_dir) / model_name / f"{ds_name}_stats" /
            f"{layer_name}_{precision}_mom2_{sample_size}.npz")


def ensure_stats(model, tok, hp) -> dict:
    """Write Σxxᵀ of the input of every ``rewrite_module_tmp`` layer, from the statistics part
    of pydoc_data.topics, into EasyEdit's cache (``mom2.mom2``, ``mom2.count``,
    ``sample_size``), unless it is already there. Returns the corpus description."""
    import numpy as np
    import torch

    def cache_paths(layers) -> dict:
        return {n: stats_cache_path(Path(hp.stats_dir), model, n, hp.mom2_dataset,
                                    hp.mom2_dtype, hp.mom2_n_samples)
                for n in (hp.rewrite_module_tmp.format(l) for l in layers)}

    info_path = Path(hp.stats_dir) / f"corpus_{hp.mom2_n_samples}.json"
    if all(p.is_file() for p in cache_paths(hp.layers).values()) and info_path.is_file():
        return json.loads(info_path.read_text())
    # every layer up to the deepest one asked for, in one pass that stops there
    paths = cache_paths(range(max(hp.layers) + 1))
    names = list(paths)
    dtype = getattr(torch, hp.mom2_dtype)
    acc = {n: [None, 0] for n in names}
    mods = dict(model.named_modules())
    state = {}

    class _Stop(Exception):
        pass

    def hook(name):
        def f(mod, inp):
            x = inp[0][state["mask"]].to(dtype)
            if acc[name][0] is None:
                acc[name][0] = torch.zeros(x.shape[1], x.shape[1], dtype=dtype)
            acc[name][0] += x.T @ x
            acc[name][1] += x.shape[0]
            if name == names[-1]:
                raise _Stop
        return f

    stats_text = corpus_parts()[0]
    # mom2_n_samples tokens of the statistics part (all of it, if it has fewer)
    chunks = _token_chunks(tok, stats_text, 256, hp.mom2_n_samples // 256)
    handles = [mods[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        from tqdm.auto import tqdm
        with torch.no_grad():
            for c in tqdm(chunks, desc="covariance stats", unit="chunk"):
                ids = torch.tensor([c])
                state["mask"] = torch.ones_like(ids, dtype=torch.bool)
                try:
                    model(input_ids=ids)
                except _Stop:  # nothing above the deepest statistics layer is needed
                    pass
    finally:
        for h in handles:
            h.remove()
    for n, (mom2, count) in acc.items():
        paths[n].parent.mkdir(parents=True, exist_ok=True)
        np.savez(paths[n], **{"mom2.constructor":
                              np.array("easyeditor.util.runningstats.SecondMoment()"),
                              "mom2.count": np.array(count), "mom2.mom2": mom2.numpy(),
                              "sample_size": np.array(hp.mom2_n_samples)})
    info = {"corpus": "pydoc_data.topics (CPython %s), sorted keys, first %d%% of %d chars"
                      % (platform.python_version(), CORPUS_SPLIT * 100,
                         len(stats_text) / CORPUS_SPLIT),
            "tokens": sum(len(c) for c in chunks), "window": 256}
    info_path.write_text(json.dumps(info))
    return info


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


def easyedit_yaml(method: str) -> Path:
    """The EasyEdit settings file of ``method`` (ft-m, rome, memit, alphaedit)."""
    return HERE / "easyedit_hparams" / f"{method}_smollm2-135m.yaml"


def easyedit_hparams(method: str, model_arg: str, model_dir: str, stats_dir: Path,
                     overrides=None):
    import yaml
    from easyeditor import (AlphaEditHyperParams, FTHyperParams, MEMITHyperParams,
                            ROMEHyperParams, UltraEditHyperParams, WISEHyperParams)

    cls = {"ft-m": FTHyperParams, "rome": ROMEHyperParams, "memit": MEMITHyperParams,
           "alphaedit": AlphaEditHyperParams, "ultraedit": UltraEditHyperParams,
           "wise": WISEHyperParams}[method]
    path = easyedit_yaml(method)
    cfg = {**yaml.safe_load(path.read_text()), **(overrides or {})}
    cfg["model_name"] = str(model_dir)
    if "tokenizer_name" in cfg:  # UltraEdit
        cfg["tokenizer_name"] = str(model_dir)
    if model_arg == TINY:  # 4 layers
        cfg.update({"FT": {"layers": [2], "lr": 1e-2}, "ROME": {"layers": [1]},
                    "ULTRAEDIT": {"inner_params": ["model.layers.1.mlp.gate_proj",
                                                   "model.layers.2.mlp.up_proj"]},
                    "WISE": {"inner_params": ["model.layers[2].mlp.down_proj.weight"],
                             "n_iter": 10}}.get(cfg["alg_name"], {"layers": [1, 2]}))
        if "v_loss_layer" in cfg:
            cfg["v_loss_layer"] = 3
    if cfg.get("stats_dir") == "auto":
        cfg["stats_dir"] = str(stats_dir)
    if cfg.get("P_loc") == "auto":  # AlphaEdit computes its projection once and reuses the
        # file: one file per (layers, threshold, statistics), never a stale one
        tag = hashlib.sha256(json.dumps([cfg["layers"], cfg["nullspace_threshold"],
                                         cfg["mom2_n_samples"], cfg["mom2_dtype"]],
                                        default=str).encode()).hexdigest()[:12]
        cfg["P_loc"] = str(stats_dir / f"null_space_project_{tag}.pt")
    # through the class's own from_hparams (it converts '5e-3'-style strings, WISE splits
    # act_margin, ...), from the settings as this row has them
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        merged = Path(tmp) / path.name
        merged.write_text(yaml.safe_dump(cfg))
        hp = cls.from_hparams(str(merged))
    return hp, str(path.relative_to(REPO))


def stats_root() -> Path:
    from locft_easyedit.models import cache_dir

    return cache_dir() / "easyedit_stats"


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
    """Apply all edits in order; returns ``(hparams description, extra fields)``."""
    from tqdm.auto import tqdm

    extra = {}
    if method in ("locft-bf", "locft-df"):
        from locft_easyedit import apply_locft_to_model

        hp = locft_hparams(method, model_arg, args.hparams, args.overrides)
        apply_locft_to_model(model, tok, requests, hp)
        if model_arg == TINY:
            return "tiny (tests)", extra
        path = Path(args.hparams).resolve()
        return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path), extra
    try:
        import easyeditor  # noqa: F401
        from easyeditor.util.alg_dict import ALG_DICT
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
    stats_dir = stats_root() / ("tiny" if model_arg == TINY else "embedded")
    stats_dir.mkdir(parents=True, exist_ok=True)
    hp, hp_path = easyedit_hparams(method, model_arg, model_dir, stats_dir, args.overrides)
    if getattr(hp, "mom2_adjustment", False):
        extra["stats"] = ensure_stats(model, tok, hp)
    os.chdir(stats_dir)  # EasyEdit writes ./logs and AlphaEdit's null_space_project.pt here
    fn = ALG_DICT[EASYEDIT_METHODS[method]]
    # EasyEdit's BaseEditor pads left for FT, UltraEdit and WISE, right for ROME/MEMIT/AlphaEdit
    tok.padding_side = "left" if method in LEFT_PADDED else "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if method == "ultraedit":
        extra.update(ultraedit_edits(fn, model, tok, requests, hp))
        return hp_path, extra
    if method == "wise":
        extra.update(wise_edits(fn, model, tok, requests, hp))
        return hp_path, extra
    size = 1 if method in ("ft-m", "rome") else hp.batch_size
    chunks = [requests[i:i + size] for i in range(0, len(requests), size)]
    module = sys.modules[fn.__module__]  # its globals carry state between calls
    state = ChunkState(args.state) if args.state else None
    done, spent, runs = state.load(model, hp, method, module) if state else (0, 0.0, 0)
    if done:
        logger.info("%s: resuming after %d of %d calls (%.0f s of editing in %d earlier "
                    "run(s))", method, done, len(chunks), spent, runs)
    every = SAVE_EVERY.get(method, 1)
    t0 = time.perf_counter()
    for k in tqdm(range(done, len(chunks)), initial=done, total=len(chunks),
                  desc=f"{method} edits", unit="call"):
        # AlphaEdit: a fresh cache_c on the first call of the row (not of a resumed run)
        kwargs = {"reset_cache": k == 0} if method == "alphaedit" else {}
        fn(model, tok, copy.deepcopy(chunks[k]), hp, copy=False, return_orig_weights=False,
           keep_original_weight=True, **kwargs)
        if state and ((k + 1) % every == 0 or k + 1 == len(chunks)):
            elapsed = time.perf_counter() - t0
            state.save(model, hp, method, module, k + 1, spent + elapsed, runs + 1)
            if args.max_minutes and elapsed > 60 * args.max_minutes and k + 1 < len(chunks):
                raise Paused(f"{method}: {k + 1} of {len(chunks)} calls done, state in "
                             f"{state.folder}")
    extra["easyedit_calls"] = len(chunks)
    if runs:
        extra.update(seconds_in_earlier_runs=spent, runs=runs + 1)
    return hp_path, extra


def ultraedit_edits(fn, model, tok, requests, hp) -> dict:
    """UltraEdit's lifelong turns: calls of ``hp.batch_size`` requests, all through ONE
    UltraEdit object, so that its lifelong normalizer carries over from turn to turn (EasyEdit
    builds a new one on every call unless its executor's ``is_init`` says it exists; only the
    weights would carry over). A call takes exactly ``batch_size`` requests, in groups of
    ``batch_size_once``, and silently drops any beyond: turns are cut to fit."""
    from tqdm.auto import tqdm

    once = hp.batch_size_once
    if len(requests) % once:
        raise SystemExit(f"ultraedit: N={len(requests)} is not a multiple of batch_size_once "
                         f"{once}; UltraEdit would drop the last {len(requests) % once} edits")
    size = max(once, hp.batch_size - hp.batch_size % once)
    turns = [requests[i:i + size] for i in range(0, len(requests), size)]
    executor = fn.__self__
    executor.is_init = False  # a fresh UltraEdit (and normalizer) for this row
    try:
        for turn in tqdm(turns, desc="ultraedit turns", unit="call"):
            hp.batch_size = len(turn)
            fn(model, tok, copy.deepcopy(turn), hp, copy=False, return_orig_weights=False,
               keep_original_weight=True)
            executor.is_init = True  # the next turn goes on with the same object
    finally:
        executor.is_init = False
        for p in model.parameters():  # UltraEdit leaves its gradients on the edited weights
            p.grad = None
    return {"easyedit_calls": len(turns), "turn_size": size}


def wise_loc_prompts() -> list:
    """The irrelevant texts WISE's activation loss pushes away from its side memory, one per
    edit: NQ question + answer of ZsRE records ``WISE_LOC_RECORDS``, which no row edits or
    scores (EasyEdit's examples take the edited record's own ``loc``: the very prompt its
    locality is then scored on)."""
    from locft_easyedit.datasets import read_json

    recs = read_json(data_path(DATA_FILES["zsre"]))[slice(*WISE_LOC_RECORDS)]
    return [f"{r['loc']} {r['loc_ans']}" for r in recs if r.get("loc") and r.get("loc_ans")]


def wise_edits(fn, model, tok, requests, hp) -> dict:
    """WISE one request per call, sequentially: the side memory of the first call is kept
    and trained on by every later one (``sequential_edit``, not a field of its hparams; without
    it each call replaces the memory). The adapter is installed in ``model`` itself, so the
    model scores with it. Module globals of a previous run are reset first."""
    import numpy as np
    from tqdm.auto import tqdm

    wise = sys.modules[fn.__module__.rsplit(".", 1)[0] + ".WISE"]
    utils = sys.modules[fn.__module__.rsplit(".", 1)[0] + ".utils"]
    wise.edit_history, wise.merge_group_edit_history = [], []
    utils.CONTEXT_TEMPLATES_CACHE = None
    sys.modules[fn.__module__].WISEload = True
    hp.sequential_edit = True
    np.random.seed(0)  # WISE draws its weight mask with numpy
    locs = wise_loc_prompts()
    for i, r in enumerate(tqdm(requests, desc="wise edits", unit="edit")):
        fn(model, tok, [dict(copy.deepcopy(r), loc_prompt=locs[i % len(locs)])], hp, copy=False)
    return {"easyedit_calls": len(requests),
            "wise_loc_prompts": f"ZsRE records {WISE_LOC_RECORDS[0]}-{WISE_LOC_RECORDS[1] - 1} "
                                "NQ question + answer"}


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
    out = Path(args.out).resolve()
    tasks = args.lm_eval_tasks or None
    before_cap = baseline(model, tok, args.model, out, tasks)
    done = {}

    def edit(m):
        done["hp_desc"], done["extra"] = apply_edits(method, m, tok, requests, args.model,
                                                     model_dir, args)
        return m.eval()

    # snapshot -> edit (timed) -> score every edit; CounterFact's probability scores
    # (efficacy / paraphrase / neighbourhood) before and after; greedy answers to the first
    # SAMPLE_ANSWERS prompts (the row keeps those after editing: what generation says, to read)
    scored = edit_and_score(model, tok, requests, edit, generation=True,
                            probabilities=dataset == "counterfact", answers=SAMPLE_ANSWERS,
                            progress=True, per_edit=True,
                            batch_size=SCORE_BATCH.get(method, 32))
    # the peak of the process up to here: loading, the baseline's capability pass when this
    # row computed it (then said in capability_baseline_here), editing and scoring
    peak_editing = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model, seconds, hp_desc, extra = scored.model, scored.seconds, done["hp_desc"], done["extra"]
    seconds += extra.pop("seconds_in_earlier_runs", 0.0)  # a resumed row: its whole editing
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
    after_cap = capability(model, tok, before_cap["known_records"], tasks)
    return {"method": args.label or method, "dataset": dataset, "n": n, "model": args.model,
            **({"base_method": method} if args.label else {}),
            **({"offset": args.offset} if args.offset else {}),
            **({"seed": args.seed} if args.seed is not None else {}),
            **({"overrides": args.overrides} if args.overrides else {}),
            "hparams": hp_desc, **{k: v for k, v in post.items() if k != "n"},
            **intervals, "bootstrap_resamples": RESAMPLES,
            **when_fields(before_cap, "before"), **when_fields(after_cap, "after"),
            "capability_protocol": after_cap["capability_protocol"],
            **({"lm_eval_tasks": tasks} if tasks else {}),
            "lm_eval_version": after_cap["lm_eval_version"],
            "seconds": seconds, "seconds_per_edit": seconds / n,
            "peak_rss_mb": peak_editing,
            "peak_rss_mb_with_capability": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024,
            **({"capability_baseline_here": True} if before_cap.get("computed_here") else {}),
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
    return (r["method"], r["dataset"], r["n"], r["model"], r.get("settings_sha256"),
            tuple(r.get("lm_eval_tasks") or ()), r.get("offset", 0), r.get("seed"))


def finished(out: Path) -> set:
    """Keys of the rows already in ``out`` (rows made with other settings do not count)."""
    done = set()
    if out.is_file():
        for line in out.read_text().splitlines():
            if line.strip():
                done.add(row_key(json.loads(line)))
    return done


def state_folder(out: Path, method: str, dataset: str, n: int, model: str, digest: str) -> Path:
    """Where a chunked row keeps its resumable state (beside ``out``, git-ignored)."""
    tag = f"{method}_{dataset}_{n}_{model.replace(':', '_').replace('/', '_')}_{digest}"
    return out.parent / "tmp" / "resume" / tag


def easyedit_available(python: str) -> str | None:
    """None if ``python`` imports easyeditor, else the reason."""
    r = subprocess.run([python, "-c", "import easyeditor"], capture_output=True, text=True)
    if r.returncode == 0:
        return None
    lines = (r.stderr or r.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {r.returncode}"


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
                    help="stop a chunked EasyEdit row (ROME, MEMIT, AlphaEdit, FT-M) after "
                         "the first call that ends past this many minutes of editing; its "
                         "state is saved and the same command goes on from there")
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
        if (args.label or method, dataset, n, args.model, digest, tuple(args.lm_eval_tasks),
                args.offset, seed) in done:
            logger.info("skip %s %s N=%d: already in %s", method, dataset, n, out)
            continue
        if missing and method in NEEDS_EASYEDIT:
            logger.warning("skip %s: EasyEdit is not importable with %s (%s)", method,
                           args.python, missing)
            continue
        cmd = [args.python, str(Path(__file__).resolve()), "--one", method, dataset, str(n),
               "--model", args.model, "--hparams", str(Path(args.hparams).resolve()),
               "--out", str(out)] + (["--threads", str(args.threads)] if args.threads else [])
        cmd += ["--lm-eval-tasks", *args.lm_eval_tasks] if args.lm_eval_tasks else []
        cmd += ["--max-minutes", str(args.max_minutes)] if args.max_minutes else []
        cmd += ["--offset", str(args.offset)] + (["--label", args.label] if args.label else [])
        cmd += ["--seed", str(seed)] if seed is not None else []
        cmd += ["--set", *args.set] if args.set else []
        state = ChunkState(state_folder(out, args.label or method, dataset, n, args.model,
                                        f"{digest}_{args.offset}_{seed}"))
        cmd += ["--state", str(state.folder)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        row = next((json.loads(line[4:]) for line in proc.stdout.splitlines()
                    if line.startswith("ROW ")), None)
        if proc.returncode == PAUSED:
            logger.warning("%s %s N=%d paused (--max-minutes); state kept in %s: run the "
                           "same command again to go on", method, dataset, n, state.folder)
            continue
        if proc.returncode != 0 or row is None:
            logger.error("%s %s N=%d failed (exit %d); not recorded", method, dataset, n,
                         proc.returncode)
            continue
        row["settings_sha256"] = digest
        row["command"] = " ".join(
            ["python", "benchmarks/run.py", "--methods", method, "--datasets", dataset,
             "--n", str(n), "--model", args.model]
            + (["--threads", str(args.threads)] if args.threads else [])
            + (["--offset", str(args.offset)] if args.offset else [])
            + (["--seeds", str(seed)] if seed is not None else [])
            + (["--label", args.label] if args.label else [])
            + (["--set", *(shlex.quote(x) for x in args.set)] if args.set else []))
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        state.clear()
        rows.append(row)
        logger.info("%s %s N=%d: rel %.3f (EM %.3f) gen %.3f (EM %.3f) loc %.3f, %.2f s/edit",
                    method, dataset, n, row["reliability"], row["reliability_em"],
                    row.get("generalization", float("nan")),
                    row.get("generalization_em", float("nan")),
                    row.get("locality", float("nan")), row["seconds_per_edit"])
    return rows


if __name__ == "__main__":
    main()
