"""EasyEdit's methods as the benchmark runs them (``benchmarks/run.py`` imports this).

FT-M, ROME, MEMIT and AlphaEdit one request (or ``batch_size`` requests) per call, with their
state saved between calls (``resume.ChunkState``); UltraEdit's lifelong turns through one
executor; WISE sequentially. Their settings:
``benchmarks/easyedit_hparams/<method>_smollm2-135m.yaml`` with the row's ``--set``
overrides, through each class's own ``from_hparams``. ROME, MEMIT and
AlphaEdit's covariance statistics are computed offline from a local corpus (``mom2_dataset``:
the first 90% of ``pydoc_data.topics``, or that and the standard library's docstrings;
``common.stats_corpus``) and written into EasyEdit's own statistics cache (nothing is
downloaded).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # benchmarks/common.py, also when loaded from a file
    sys.path.insert(0, str(HERE))

from common import DATA_FILES, REPO, TINY, data_path, stats_corpus  # noqa: E402
from resume import ChunkState, Paused  # noqa: E402
import target_cache  # noqa: E402
import wise_cache  # noqa: E402

EASYEDIT_METHODS = {"ft-m": "FT", "rome": "ROME", "memit": "MEMIT", "alphaedit": "AlphaEdit",
                    "ultraedit": "ULTRAEDIT", "wise": "WISE"}
NEEDS_EASYEDIT = ("rome", "memit", "alphaedit", "ultraedit", "wise")  # FT-M has a stand-in
LEFT_PADDED = ("ft-m", "ultraedit", "wise")  # as EasyEdit's BaseEditor pads for them
WISE_LOC_RECORDS = (1500, 2000)  # ZsRE records whose NQ questions no row edits or scores
SAVE_EVERY = {"rome": 10, "ft-m": 10, "wise": 10}  # calls between saved states (others: every call)

logger = logging.getLogger("benchmarks.baselines")


# --- covariance statistics (common.stats_corpus) ---------------------------------------
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
    """Write Σxxᵀ of the input of every ``rewrite_module_tmp`` layer, from the first
    ``mom2_n_samples`` tokens of the local corpus ``mom2_dataset`` (``common.stats_corpus``),
    into EasyEdit's cache (``mom2.mom2``, ``mom2.count``,
    ``sample_size``), unless it is already there. Returns the corpus description."""
    import numpy as np
    import torch

    def cache_paths(layers) -> dict:
        return {n: stats_cache_path(Path(hp.stats_dir), model, n, hp.mom2_dataset,
                                    hp.mom2_dtype, hp.mom2_n_samples)
                for n in (hp.rewrite_module_tmp.format(l) for l in layers)}

    stats_text, corpus = stats_corpus(hp.mom2_dataset)  # an unknown name: refused here
    info_path = Path(hp.stats_dir) / f"corpus_{hp.mom2_dataset}_{hp.mom2_n_samples}.json"
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
    info = {"corpus": corpus, "tokens": sum(len(c) for c in chunks), "window": 256}
    info_path.write_text(json.dumps(info))
    return info


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
    cfg = yaml.safe_load(path.read_text())
    cfg["model_name"] = str(model_dir)
    if "tokenizer_name" in cfg:  # UltraEdit
        cfg["tokenizer_name"] = str(model_dir)
    if model_arg == TINY:  # 4 layers
        cfg.update({"FT": {"layers": [2], "lr": 1e-2}, "ROME": {"layers": [1]},
                    "ULTRAEDIT": {"inner_params": ["model.layers.1.mlp.gate_proj",
                                                   "model.layers.2.mlp.up_proj"]},
                    "WISE": {"inner_params": ["model.layers[2].mlp.down_proj.weight"],
                             "n_iter": 10, "edit_lr": 50.0}  # the tiny weights move little
                    }.get(cfg["alg_name"], {"layers": [1, 2]}))
        if "v_loss_layer" in cfg:
            cfg["v_loss_layer"] = 3
    cfg.update(overrides or {})  # the row's --set wins, on the tiny model too
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


def easyedit_edits(method: str, model, tok, requests, model_arg: str, model_dir: str,
                   overrides=None, state_folder=None, max_minutes=None, reuse_targets=False,
                   reuse_memory=False, hold_last=False):
    """Apply all ``requests`` in order with EasyEdit's ``method``; returns ``(settings file,
    extra row fields)``. With ``state_folder`` the state is saved between calls and a run
    that finds one goes on from it; past ``max_minutes`` of editing it raises ``Paused``, and
    with ``hold_last`` also when only the last piece (the steps between two saves) is left.
    ``reuse_targets`` (MEMIT, AlphaEdit): target vectors another run computed for the same
    model, requests and settings are read instead of recomputed (``target_cache``).
    ``reuse_memory`` (WISE): likewise its trained side memory (``wise_cache``)."""
    from easyeditor.util.alg_dict import ALG_DICT
    from tqdm.auto import tqdm

    extra = {}
    stats_dir = stats_root() / ("tiny" if model_arg == TINY else "embedded")
    stats_dir.mkdir(parents=True, exist_ok=True)
    hp, hp_path = easyedit_hparams(method, model_arg, model_dir, stats_dir, overrides)
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
        extra.update(wise_edits(fn, model, tok, requests, hp, state_folder, max_minutes,
                                reuse_memory, hold_last))
        return hp_path, extra
    size = 1 if method in ("ft-m", "rome") else hp.batch_size
    chunks = [requests[i:i + size] for i in range(0, len(requests), size)]
    module = sys.modules[fn.__module__]  # its globals carry state between calls
    state = ChunkState(state_folder) if state_folder else None
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
        chunk = copy.deepcopy(chunks[k])
        if reuse_targets:
            kwargs["cache_template"], hits = target_cache.prepare(
                target_cache.root(), method, module, model, tok, hp, chunk)
            extra["targets_from_cache"] = extra.get("targets_from_cache", 0) + hits
        fn(model, tok, chunk, hp, copy=False, return_orig_weights=False,
           keep_original_weight=True, **kwargs)
        _save_or_pause(state, k + 1, len(chunks), every, t0, max_minutes, f"{method} calls",
                       lambda s: state.save(model, hp, method, module, k + 1, spent + s,
                                            runs + 1, len(chunks)), hold_last)
    extra["easyedit_calls"] = len(chunks)
    extra.update(_resumed(state, spent, runs))
    return hp_path, extra


def _resumed(state, spent: float, runs: int) -> dict:
    """The row fields of a run that went on from ``runs`` earlier ones (none for a first run):
    their editing seconds, the run count and the peak memory of the runs' saves
    (``peak_rss_mb_saved``; None where an earlier run saved before that was recorded)."""
    return ({"seconds_in_earlier_runs": spent, "runs": runs + 1,
             "peak_rss_mb_saved": state.progress()["peak_rss_mb"]} if runs else {})


def _save_or_pause(state, done: int, total: int, every: int, t0: float, max_minutes,
                   what: str, save, hold_last: bool = False) -> None:
    """After ``done`` of ``total`` steps of a row: with a ``state``, every ``every`` steps and
    after the last, ``save(editing seconds of this run)``; then, with steps left, raise
    ``Paused`` (the state just saved is where the next run goes on) past ``max_minutes`` of
    this run's editing, or with ``hold_last`` once only the last ``every`` steps are left (a
    run with time for them but not for the row's scoring after them: planned.fit)."""
    if state is None or (done % every and done < total):
        return
    elapsed = time.perf_counter() - t0
    save(elapsed)
    if done < total and ((max_minutes and elapsed > 60 * max_minutes)
                         or (hold_last and total - done <= every)):
        raise Paused(f"{what}: {done} of {total} done, state in {state.folder}")


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


def wise_edits(fn, model, tok, requests, hp, state_folder=None, max_minutes=None,
               reuse_memory=False, hold_last=False) -> dict:
    """WISE one request per call, sequentially: the side memory of the first call is kept
    and trained on by every later one (``sequential_edit``, not a field of its hparams; without
    it each call replaces the memory). The adapter is installed in ``model`` itself, so the
    model scores with it. Module globals of a previous run are reset first. With
    ``state_folder`` WISE's checkpoint is saved every ``SAVE_EVERY["wise"]`` edits and a run
    that finds one goes on from it (an edit takes about 80 s on one core here). With
    ``reuse_memory`` the trained side memory is kept in ``wise_cache``'s folder for these
    settings, and a row whose folder holds one loads it instead of editing."""
    import numpy as np
    from tqdm.auto import tqdm

    wise = sys.modules[fn.__module__.rsplit(".", 1)[0] + ".WISE"]
    utils = sys.modules[fn.__module__.rsplit(".", 1)[0] + ".utils"]
    wise.edit_history, wise.merge_group_edit_history = [], []
    utils.CONTEXT_TEMPLATES_CACHE = None
    sys.modules[fn.__module__].WISEload = True  # WISE loads load_path on its next call
    hp.sequential_edit = True
    locs = wise_loc_prompts()
    requests = [dict(copy.deepcopy(r), loc_prompt=locs[i % len(locs)])
                for i, r in enumerate(requests)]
    fields = {"wise_loc_prompts": f"ZsRE records {WISE_LOC_RECORDS[0]}-"
                                  f"{WISE_LOC_RECORDS[1] - 1} NQ question + answer"}
    cache = (ChunkState(wise_cache.folder(wise_cache.root(), hp, model, tok, requests))
             if reuse_memory else None)
    if cache is not None and wise_cache.complete(cache, len(requests)):
        _load_wise(wise, model, hp, cache.load_wise(utils)[3])
        logger.info("wise: side memory of %d edits read from %s", len(requests), cache.folder)
        return {"easyedit_calls": 0, "memory_from_cache": True, **fields}
    np.random.seed(wise_cache.NUMPY_SEED)  # WISE draws its weight mask with numpy
    state = ChunkState(state_folder) if state_folder else None
    done, spent, runs, ckpt = state.load_wise(utils) if state else (0, 0.0, 0, None)
    hp.load_path = str(ckpt) if ckpt else None
    if done:
        logger.info("wise: resuming after %d of %d edits (%.0f s of editing in %d earlier "
                    "run(s))", done, len(requests), spent, runs)
    if done == len(requests):  # killed after its last save (while scoring): no call loads it
        editor = _load_wise(wise, model, hp, ckpt)
    every = SAVE_EVERY["wise"]
    t0 = time.perf_counter()
    for i in tqdm(range(done, len(requests)), initial=done, total=len(requests),
                  desc="wise edits", unit="edit"):
        with _own_pickle(ckpt is not None and i == done):
            editor, _ = fn(model, tok, [copy.deepcopy(requests[i])], hp, copy=False)
        _save_or_pause(state, i + 1, len(requests), every, t0, max_minutes, "wise edits",
                       lambda s: state.save_wise(editor, utils, i + 1, spent + s, runs + 1,
                                                 len(requests)), hold_last)
    if cache is not None:
        cache.save_wise(editor, utils, len(requests), spent + time.perf_counter() - t0,
                        runs + 1, len(requests))
    return {"easyedit_calls": len(requests), **fields, **_resumed(state, spent, runs)}


def _load_wise(wise, model, hp, ckpt):
    """WISE's checkpoint ``ckpt`` into a fresh adapter in ``model`` built with ``hp`` (its
    ``act_ratio`` routes), without an edit call (WISE loads ``load_path`` only inside one)."""
    from easyeditor.util.device import normalize_device

    editor = wise.WISE(model=model, config=hp, device=normalize_device(hp.device))
    with _own_pickle(True):
        editor.load(str(ckpt))
    return editor


@contextlib.contextmanager
def _own_pickle(allowed: bool):
    """``WISE.load`` reads its checkpoint with ``torch.load`` and no ``weights_only``; since
    torch 2.6 that refuses the hparams and activation records pickled in it. The file is the
    one this row, or a row of ``wise_cache``, wrote (``resume.ChunkState.save_wise``): for
    that one call, full unpickling."""
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(key)
    if allowed:
        os.environ[key] = "1"
    try:
        yield
    finally:
        if allowed:
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before


def easyedit_available(python: str) -> str | None:
    """None if ``python`` imports easyeditor, else the reason."""
    r = subprocess.run([python, "-c", "import easyeditor"], capture_output=True, text=True)
    if r.returncode == 0:
        return None
    lines = (r.stderr or r.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {r.returncode}"
