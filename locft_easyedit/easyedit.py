"""Everything EasyEdit-specific: registration, lifelong editing, EasyEdit's dataset loaders.

EasyEdit (https://github.com/zjunlp/EasyEdit, installed from its source) is imported lazily,
inside the functions; this module imports without it. The rest of the package never imports
EasyEdit (the method's ``locft_hparams.py`` only subclasses its ``HyperParams`` base when it
is there).

* :func:`register` adds ``LocFT`` to ``easyeditor.util.alg_dict.ALG_DICT`` and to the methods
  ``BatchEditor.is_batchable_method`` accepts, so ``BaseEditor.from_hparams(LocFTHyperParams...)``
  and ``editor.batch_edit(...)`` work with no change to EasyEdit's files. It also makes
  ``editor.edit()`` with LocFT and ``batch_size != 1`` fail with a message that points to
  ``batch_edit``, and resolves an ``embedded:`` ``model_name`` where EasyEdit loads the model
  (``BaseEditor.__init__``). ``import locft_easyedit`` calls it.
* :func:`lifelong_edit` applies all requests, then scores every request on the FINAL model
  with EasyEdit's ``compute_edit_quality`` (EasyEdit's ``batch_edit`` scores each chunk right
  after its own edit: EasyEdit issue #590); with ``replay=`` (LocFT) each chunk trains with
  replay of the earlier ones, the edit ledger's mechanism (:mod:`locft_easyedit.ledger`).
* :func:`load_dataset_easyedit` builds requests with EasyEdit's own dataset classes.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import time
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence

import numpy as np

from .datasets import guess_dataset, read_json
from .datasets import load_dataset as load_dataset_plain
from .locft import ALG_NAME, RequestError, apply_locft_to_model
from .models import EMBEDDED_PREFIX, resolve_model_name

logger = logging.getLogger(__name__)

_WRAPPED = "_locft_wrapped"  # marks our wrappers, so register() never wraps twice


# --- registration ----------------------------------------------------------------------------
def easyedit_available() -> bool:
    """True when the ``easyeditor`` package can be found (it is not imported here)."""
    return importlib.util.find_spec("easyeditor") is not None


def register() -> bool:
    """Register LocFT with EasyEdit; return True when registered, False without EasyEdit.

    Idempotent. Without EasyEdit it is a silent no-op (logged at DEBUG). When EasyEdit is
    installed but fails to import (a broken install), it logs a warning and returns False, so
    that ``import locft_easyedit`` never fails because of EasyEdit.
    """
    if not easyedit_available():
        logger.debug("EasyEdit (easyeditor) is not installed: LocFT not registered")
        return False
    try:
        from easyeditor.editors import editor as editor_module
        from easyeditor.editors.batch_editor import BatchEditor
        from easyeditor.util import alg_dict
    except ImportError as exc:
        logger.debug("EasyEdit is not importable (%s): LocFT not registered", exc)
        return False
    except Exception as exc:  # noqa: BLE001 - a broken EasyEdit must not break our import
        logger.warning("EasyEdit is installed but failed to import (%s: %s); LocFT is not "
                       "registered with it", type(exc).__name__, exc)
        return False

    # editor.py does `from ..util.alg_dict import *`: it holds this same dict object, so
    # adding a key is seen by BaseEditor (rebinding the name would not be).
    alg_dict.ALG_DICT[ALG_NAME] = apply_locft_to_model

    original = BatchEditor.is_batchable_method
    if not getattr(original, _WRAPPED, False):
        def is_batchable_method(alg_name: str, _original=original) -> bool:
            return alg_name == ALG_NAME or _original(alg_name)

        setattr(is_batchable_method, _WRAPPED, True)
        BatchEditor.is_batchable_method = staticmethod(is_batchable_method)

    base = editor_module.BaseEditor
    original_edit_requests = base.edit_requests
    if not getattr(original_edit_requests, _WRAPPED, False):
        def edit_requests(self, *args, _original=original_edit_requests, **kwargs):
            check_single_edit(self.hparams)
            return _original(self, *args, **kwargs)

        setattr(edit_requests, _WRAPPED, True)
        edit_requests.__doc__ = original_edit_requests.__doc__
        base.edit_requests = edit_requests

    original_init = base.__init__
    if not getattr(original_init, _WRAPPED, False):
        def __init__(self, hparams, *args, _original=original_init, **kwargs):
            _original(self, resolve_embedded(hparams), *args, **kwargs)
            apply_dtype(self, hparams)

        setattr(__init__, _WRAPPED, True)
        __init__.__doc__ = original_init.__doc__
        base.__init__ = __init__
    logger.debug("LocFT registered with EasyEdit")
    return True


def resolve_embedded(hparams: Any) -> Any:
    """LocFT hparams whose ``model_name`` is ``embedded:...``: a copy naming the converted
    model's folder (EasyEdit loads ``model_name`` itself); anything else unchanged."""
    name = getattr(hparams, "model_name", None)
    if (getattr(hparams, "alg_name", None) != ALG_NAME or not isinstance(name, str)
            or not name.startswith(EMBEDDED_PREFIX)):
        return hparams
    return dataclasses.replace(hparams, model_name=resolve_model_name(name))


def apply_dtype(editor, hparams: Any) -> None:
    """LocFT's one dtype rule inside EasyEdit: BaseEditor loads float32 (float16 with
    ``fp16: true``); a LocFT ``dtype`` is then applied to the loaded model, so the same YAML
    edits in the same dtype through EasyEdit, the CLI and Python."""
    import torch

    want = getattr(hparams, "dtype", None)
    model = getattr(editor, "model", None)
    if getattr(hparams, "alg_name", None) != ALG_NAME or not want or model is None:
        return
    if any(p.dtype != getattr(torch, want) for p in model.parameters()):
        logger.info("LocFT dtype: %s: converting EasyEdit's loaded model", want)
        model.to(getattr(torch, want))


def check_single_edit(hparams: Any) -> None:
    """``editor.edit()`` trains one request at a time: for LocFT that needs ``batch_size: 1``.

    EasyEdit asserts ``batch_size == 1`` there with a bare message; this says what to do."""
    if getattr(hparams, "alg_name", None) != ALG_NAME or getattr(hparams, "batch_size", 1) == 1:
        return
    raise ValueError(
        f"LocFT: editor.edit() edits one request at a time (the depth-first pipeline) and "
        f"EasyEdit requires batch_size == 1 for it, but batch_size is {hparams.batch_size}. "
        "For LocFT-BF use editor.batch_edit(...) (batch_size >= the number of requests = one "
        "breadth-first run over all edits) or locft_easyedit.easyedit.lifelong_edit(editor, "
        "requests); set batch_size: 1 only to run the depth-first baseline through edit().")


def batched(items: List[Any], size: int) -> Iterable[List[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- requests <-> EasyEdit's batch_edit arguments ---------------------------------------------
def as_easyedit_request(req: dict) -> dict:
    """A request with every key EasyEdit's evaluation reads (``ground_truth``, ``locality``,
    ``portability``); ``locality`` and ``portability`` entries with an empty prompt are
    dropped."""
    out = dict(req)
    out.setdefault("ground_truth", None)
    for key in ("locality", "portability"):
        out[key] = {name: item for name, item in (out.get(key) or {}).items()
                    if item and item.get("prompt")}
    if out.get("rephrase_prompt") is None:
        out.pop("rephrase_prompt", None)
    return out


def batch_edit_kwargs(requests: Sequence[dict]) -> Dict[str, Any]:
    """Keyword arguments for ``editor.batch_edit`` / ``editor.edit`` from request dicts:
    ``prompts``, ``target_new``, ``ground_truth``, and ``rephrase_prompts`` /
    ``locality_inputs`` when every request has them."""
    reqs = [as_easyedit_request(r) for r in requests]
    kwargs: Dict[str, Any] = {
        "prompts": [r["prompt"] for r in reqs],
        "target_new": [r["target_new"] for r in reqs],
        "ground_truth": [r["ground_truth"] for r in reqs],
    }
    if all(r.get("rephrase_prompt") for r in reqs):
        kwargs["rephrase_prompts"] = [r["rephrase_prompt"] for r in reqs]
    names = set().union(*(r["locality"].keys() for r in reqs))
    locality = {name: {"prompt": [r["locality"][name]["prompt"] for r in reqs],
                       "ground_truth": [r["locality"][name]["ground_truth"] for r in reqs]}
                for name in sorted(names) if all(name in r["locality"] for r in reqs)}
    if locality:
        kwargs["locality_inputs"] = locality
    return kwargs


# --- evaluation after all edits (EasyEdit issue #590) -----------------------------------------
class LifelongResult(NamedTuple):
    metrics: List[dict]  # EasyEdit's format: case_id, requested_rewrite, pre, post, time
    summary: Dict[str, float]  # means, see summarize()
    edited_model: Any
    weights_copy: Dict[str, Any]  # original tensors of every edited parameter


def _score(editor, request: dict, eval_metric: str, test_generation: bool) -> dict:
    from easyeditor.evaluate import compute_edit_quality

    return compute_edit_quality(editor.model, editor.model_name, editor.hparams, editor.tok,
                                request, editor.hparams.device, eval_metric=eval_metric,
                                test_generation=test_generation)


def lifelong_edit(editor, requests: Sequence[dict], chunk_size: Optional[int] = None,
                  eval_metric: str = "token_em", test_generation: bool = False,
                  pre_edit: Optional[List[dict]] = None, replay=None) -> LifelongResult:
    """Apply all ``requests`` to ``editor.model``, then score each on the final model.

    The requests are applied in chunks of ``chunk_size`` (default ``editor.hparams.batch_size``;
    for LocFT each chunk is one breadth-first run, chunks in order, edits accumulating in
    ``editor.model``). ``replay`` (LocFT only; ``None`` = no replay): each chunk trains
    together with the earlier chunks' requests, as a ledger round does
    (:func:`locft_easyedit.ledger.replay_train`): ``"all"`` of them, ``"sample"`` (a fresh
    sample of as many as the chunk has per sub-run, with repairs; the same as ``"all"`` while
    they are fewer), or a :class:`~locft_easyedit.ledger.ReplaySettings`. Pre-edit scores
    are taken on the unedited model first (or passed as ``pre_edit``, a list of
    ``{"pre": ...}`` like EasyEdit's ``pre_edit`` argument); post-edit
    scores are taken only after the last chunk, with EasyEdit's ``compute_edit_quality``, and
    locality is finalised with EasyEdit's own routine. Works for any method in EasyEdit's
    ``ALG_DICT`` that edits weights in place or returns the edited model.

    The edit is kept: undo it with ``restore_weights(editor.model, result.weights_copy)``.
    """
    from easyeditor.editors.editor import finalize_locality_metrics

    reqs = [as_easyedit_request(r) for r in requests]
    if not reqs:
        raise RequestError("no edit requests given")
    if pre_edit is not None and len(pre_edit) != len(reqs):
        raise ValueError(f"pre_edit has {len(pre_edit)} entries for {len(reqs)} requests")
    size = chunk_size or getattr(editor.hparams, "batch_size", None) or len(reqs)
    if size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {size}")
    apply = _chunk_editor(editor, replay)  # a bad replay= is refused before any work

    t0 = time.perf_counter()
    pre = ([p["pre"] for p in pre_edit] if pre_edit is not None else
           [_score(editor, r, eval_metric, test_generation) for r in reqs])
    logger.info("pre-edit scores of %d requests: %.1f s", len(reqs), time.perf_counter() - t0)

    weights_copy: Dict[str, Any] = {}
    t0 = time.perf_counter()
    for chunk in batched(reqs, size):
        edited, copy_ = apply(chunk)
        editor.model = edited
        if isinstance(copy_, dict):  # some EasyEdit methods return a callable instead
            for name, tensor in copy_.items():
                weights_copy.setdefault(name, tensor)  # the first copy is the original
    edit_seconds = time.perf_counter() - t0
    logger.info("applied %d requests in chunks of %d: %.1f s", len(reqs), size, edit_seconds)

    metrics = []
    for i, (req, pre_i) in enumerate(zip(reqs, pre)):
        entry = {"case_id": i, "requested_rewrite": req, "time": edit_seconds / len(reqs),
                 "pre": pre_i, "post": _score(editor, req, eval_metric, test_generation)}
        finalize_locality_metrics(entry, req, editor.hparams, editor.model_name)
        metrics.append(entry)
    return LifelongResult(metrics, summarize(metrics), editor.model, weights_copy)


def _chunk_editor(editor, replay):
    """``apply(chunk) -> (edited model, weights_copy)``: EasyEdit's ``apply_algo`` without
    replay; with it, LocFT trained with replay of the chunks before (the ledger's mechanism)."""
    if replay is None:
        return lambda chunk: editor.apply_algo(editor.model, editor.tok, chunk, editor.hparams,
                                               copy=False, return_orig_weights=True)
    from .ledger import ReplaySettings, apply_with_replay

    if getattr(editor.hparams, "alg_name", None) != ALG_NAME:
        raise ValueError(f"replay= needs the LocFT method; this editor runs "
                         f"{getattr(editor.hparams, 'alg_name', None)!r}")
    settings = ReplaySettings.of(replay)
    earlier: List[dict] = []
    base: Dict[str, Any] = {}  # the trained tensors before the first chunk: locality keeps them

    def apply(chunk):
        out = apply_with_replay(editor.model, editor.tok, chunk, earlier, editor.hparams,
                                settings, preserve_from=base or None)
        if not base:
            base.update(out[1])
        earlier.extend(chunk)
        return out

    return apply


def summarize(metrics: Sequence[dict]) -> Dict[str, float]:
    """Means over cases of EasyEdit-format metrics, flat: ``pre_rewrite_acc``,
    ``post_rewrite_acc``, ``pre_rephrase_acc``, ``post_rephrase_acc``, ``post_locality``
    (mean of every ``*_acc`` locality key per case, then over cases, as EasyEdit's
    ``summary_metrics``), ``post_portability`` when present, and ``n``."""
    out: Dict[str, float] = {"n": len(metrics)}
    for stage in ("pre", "post"):
        for key in ("rewrite_acc", "rephrase_acc"):
            values = [np.mean(m[stage][key]) for m in metrics if key in m.get(stage, {})]
            if values:
                out[f"{stage}_{key}"] = float(np.mean(values))
    for section in ("locality", "portability"):
        per_case = []
        for m in metrics:
            accs = [np.mean(v) for k, v in m.get("post", {}).get(section, {}).items()
                    if k.endswith("acc")]
            if accs:
                per_case.append(np.mean(accs))
        if per_case:
            out[f"post_{section}"] = float(np.mean(per_case))
    return out


# --- EasyEdit's dataset loaders --------------------------------------------------------------
def _from_zsre_dataset(rec: dict) -> dict:
    return {"prompt": rec["prompt"], "target_new": rec["target_new"],
            "ground_truth": rec["ground_truth"], "rephrase_prompt": rec["rephrase_prompt"],
            "locality": {"neighborhood": {"prompt": rec["locality_prompt"],
                                          "ground_truth": rec["locality_ground_truth"]}}}


def _from_counterfact_dataset(rec: dict) -> dict:
    if "requested_rewrite" in rec:  # ROME layout, mapped as EasyEdit's run_AlphaEdit_editing.py
        rw = rec["requested_rewrite"]
        neighbours = list(rec.get("neighborhood_prompts") or [])
        return {"prompt": rw["prompt"].format(rw["subject"]), "target_new": rw["target_new"]["str"],
                "ground_truth": rw["target_true"]["str"], "subject": rw["subject"],
                "rephrase_prompt": (rec.get("paraphrase_prompts") or [None])[0],
                "locality": {"neighborhood": {
                    "prompt": neighbours,
                    "ground_truth": [rw["target_true"]["str"]] * len(neighbours)}}}
    return {"prompt": rec["prompt"], "target_new": rec["target_new"],
            "ground_truth": rec.get("ground_truth"), "subject": rec.get("subject"),
            "rephrase_prompt": rec.get("rephrase_prompt"),
            "locality": {"neighborhood": {"prompt": rec.get("locality_prompt"),
                                          "ground_truth": rec.get("locality_ground_truth")}}}


def load_dataset_easyedit(path, dataset: Optional[str] = None,
                          n: Optional[int] = None) -> List[dict]:
    """Requests read with EasyEdit's own dataset classes (``ZsreDataset``,
    ``CounterFactDataset``), in the layout EasyEdit's example scripts pass to ``edit``.

    WikiBigEdit files in the shared layout (``prompt``/``target_new``/...) have no EasyEdit
    loader (its ``WikiBigEditDataset`` reads ``update``/``ans``), so they, and every dataset
    when EasyEdit is not installed, go through :func:`locft_easyedit.datasets.load_dataset`,
    which produces the same requests."""
    name = dataset or guess_dataset((read_json(path) or [{}])[0])
    if not easyedit_available() or name not in ("zsre", "counterfact"):
        return load_dataset_plain(path, name, n=n)
    from easyeditor.dataset import CounterFactDataset, ZsreDataset

    if name == "zsre":
        return [_from_zsre_dataset(r) for r in ZsreDataset(str(path), size=n)]
    return [_from_counterfact_dataset(r) for r in CounterFactDataset(str(path), size=n)]
