"""``apply_locft_to_model``: LocFT editing with EasyEdit's method signature.

The model's own weights are not touched while training: the selected tensors are trained as
fp32 master copies (see :mod:`locft_easyedit.forward`) and written into the model only once
training has finished. Any exception (an interrupt, out of memory, a NaN loss, bad input)
therefore leaves the model bit-identical to before. The model's ``requires_grad`` flags and
train/eval mode, and the tokenizer, are as they were afterwards.
"""
from __future__ import annotations

import copy as copy_module
import logging
import time
from contextlib import contextmanager
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .encoding import encode_requests
from .forward import FastLoss, ReferenceLoss, find_layer_stack, pad_id_of
from .locft_hparams import LocFTHyperParams
from .preserve import build_regularizer
from .requests import validate_requests
from .training import PIPELINES, TrainResult

logger = logging.getLogger(__name__)


def num_layers(model) -> Optional[int]:
    cfg = getattr(model, "config", None)
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int):
            return value
    _, stack = find_layer_stack(model, [])
    return len(stack) if stack is not None else None


def select_parameters(model, hp: LocFTHyperParams) -> Dict[str, torch.nn.Parameter]:
    """The parameters that ``layers`` x ``rewrite_module_tmp`` name, in a stable order.

    A template may name a parameter or a module (all parameters under it). Raises ValueError
    for a layer index outside the model and for a template that matches no parameter."""
    n_layers = num_layers(model)
    if n_layers is not None:
        bad = [i for i in hp.layers if i >= n_layers]
        if bad:
            raise ValueError(f"key 'layers': {bad} out of range: the model has {n_layers} "
                             f"layers (0..{n_layers - 1})")
    params = dict(model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules())
    chosen: Dict[str, torch.nn.Parameter] = {}
    for tmp in hp.templates:
        for layer in hp.layers:
            try:
                name = tmp.format(layer)
            except (IndexError, KeyError, ValueError):
                raise ValueError(f"key 'rewrite_module_tmp': {tmp!r} is not a template with one "
                                 "'{}' for the layer index") from None
            if name in params:
                chosen[name] = params[name]
            elif name in modules and any(True for _ in modules[name].parameters()):
                for sub, p in modules[name].named_parameters(remove_duplicate=False):
                    chosen[f"{name}.{sub}"] = p
            else:
                near = sorted(n for n in params if f".{layer}." in n)[:8]
                raise ValueError(
                    f"key 'rewrite_module_tmp': {tmp!r} with layer {layer} gives {name!r}, which "
                    f"matches no parameter or module of {type(model).__name__}; parameters of "
                    f"that layer include {near}")
    return chosen


@contextmanager
def _frozen(model):
    """Freeze every parameter (grads flow only to the master copies); restore flags and mode."""
    flags = {id(p): p.requires_grad for p in model.parameters()}
    was_training = model.training
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()  # no dropout: the frozen-prefix cache and determinism rely on it
    try:
        yield
    finally:
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])
        model.train(was_training)


def execute_locft(model, tok, requests: Sequence[dict], hparams: LocFTHyperParams,
                  progress: bool = True, **kwargs: Any) -> Tuple[Dict[str, torch.Tensor],
                                                                 TrainResult]:
    """Train and return ``({name: new_weight}, TrainResult)``; the model is not changed."""
    requests = validate_requests(requests)
    params = select_parameters(model, hparams)
    examples = encode_requests(tok, requests, hparams.append_eos, hparams.max_length)
    masters = {n: p.detach().to(torch.float32).clone().requires_grad_(True)
               for n, p in params.items()}
    dtypes = {n: p.dtype for n, p in params.items()}

    def subs() -> Dict[str, torch.Tensor]:
        return {n: m.to(dtypes[n]) for n, m in masters.items()}

    torch.manual_seed(hparams.seed)
    t0 = time.perf_counter()
    with _frozen(model):
        reg = build_regularizer(model, tok, hparams, masters)  # None unless asked for
        if hparams.implementation == "reference":
            loss_fn, ctx = ReferenceLoss(model, tok, requests, hparams, subs, reg), None
        else:
            loss_fn = FastLoss(model, examples, list(masters), hparams, subs, pad_id_of(tok),
                               regularizer=reg)
            ctx = loss_fn
        run = PIPELINES[hparams.pipeline]
        if ctx is None:
            result = run(loss_fn, len(examples), masters, hparams, progress)
        else:
            with ctx:
                result = run(loss_fn, len(examples), masters, hparams, progress)
    logger.info("LocFT %s: %d edits, %d epochs, %d steps, %.1f s", hparams.pipeline,
                len(examples), result.epochs, result.steps, time.perf_counter() - t0)
    return {n: m.detach().to(dtypes[n]) for n, m in masters.items()}, result


def apply_locft_to_model(model, tok, requests: List[Dict], hparams: LocFTHyperParams,
                         copy: bool = False, return_orig_weights: bool = False,
                         keep_original_weight: bool = False, **kwargs: Any):
    """Edit ``model`` so that each request's prompt continues with its ``target_new``.

    Returns ``(edited_model, weights_copy)`` like every EasyEdit method. ``copy=True`` edits a
    deep copy and leaves ``model`` untouched. ``weights_copy`` maps each trained parameter's
    name to its original tensor when ``return_orig_weights`` or ``keep_original_weight`` is
    set (restore with :func:`restore_weights`), and is empty otherwise. Extra keyword
    arguments: ``progress`` (bool, tqdm bars); others EasyEdit passes are ignored.
    """
    if copy:
        model = copy_module.deepcopy(model)
    new_weights, _ = execute_locft(model, tok, requests, hparams,
                                   progress=kwargs.get("progress", True))
    params = dict(model.named_parameters(remove_duplicate=False))
    originals = {n: params[n].detach().clone() for n in new_weights}
    weights_copy = originals if (return_orig_weights or keep_original_weight) else {}
    try:
        with torch.no_grad():
            for n, w in new_weights.items():
                params[n].copy_(w)
    except BaseException:
        restore_weights(model, originals)
        raise
    return model, weights_copy


def restore_weights(model, weights_copy: Dict[str, torch.Tensor]) -> None:
    """Put the tensors of ``weights_copy`` back into ``model`` (undo an edit)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for n, w in weights_copy.items():
            params[n].copy_(w.to(params[n].device))
