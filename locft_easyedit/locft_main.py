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

from . import distributed
from .distributed import data_parallel
from .encoding import encode_requests
from .forward import FastLoss, ReferenceLoss, find_layer_stack, pad_id_of
from .locft_hparams import LocFTHyperParams
from .preserve import build_regularizer
from .requests import validate_requests
from .checkpoint import open_checkpoint
from .training import PIPELINES, TrainResult, explain_oom

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
            except (IndexError, KeyError, ValueError, TypeError, AttributeError):
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


def train_tensors(model, tok, requests: Sequence[dict], examples, masters: Dict[str, torch.Tensor],
                  subs, hparams: LocFTHyperParams, progress: bool = True,
                  after_step=None, extra_loss=None, train_mode: Sequence[torch.nn.Module] = (),
                  ckpt=None) -> TrainResult:
    """Run the ``hparams.pipeline`` loop on ``masters`` (leaf tensors, named like the model's
    parameters; they may be the model's own parameters, as adapters are) with the
    ``hparams.implementation`` loss. Every other parameter is frozen meanwhile.

    ``after_step(steps)`` runs after each optimizer step; ``extra_loss()`` (a scalar tensor)
    is added to each mini-batch's gradient but not to the loss the thresholds see;
    ``train_mode`` modules (e.g. adapter dropout) train while the rest is in eval mode."""
    torch.manual_seed(hparams.seed)
    t0 = time.perf_counter()
    with _frozen(model), explain_oom(hparams, len(examples)):
        for m in masters.values():
            m.requires_grad_(True)
        for module in train_mode:
            module.train()
        # locality terms (None unless asked for); under data parallelism rank 0 alone adds
        # them, since gradients are summed over ranks
        reg = build_regularizer(model, tok, hparams, masters) if distributed.rank() == 0 else None
        if hparams.implementation == "reference":
            loss_fn = ReferenceLoss(model, tok, requests, hparams, subs, reg)
        else:
            loss_fn = FastLoss(model, examples, list(masters), hparams, subs, pad_id_of(tok),
                               regularizer=reg)
        step_fn = loss_fn
        if extra_loss is not None:
            def step_fn(indices, denom):  # the data loss plus the extra term (once, on rank 0)
                value = loss_fn(indices, denom)
                if distributed.rank() == 0:
                    extra_loss().backward()
                return value

        if distributed.is_active():
            step_fn = data_parallel(step_fn, masters)
        with loss_fn:
            result = PIPELINES[hparams.pipeline](step_fn, len(examples), masters, hparams,
                                                 progress and distributed.rank() == 0, ckpt,
                                                 after_step)
    logger.info("LocFT %s (%s): %d edits, %d epochs, %d steps, %.1f s", hparams.pipeline,
                hparams.tuning, len(examples), result.epochs, result.steps,
                time.perf_counter() - t0)
    return result


def execute_locft(model, tok, requests: Sequence[dict], hparams: LocFTHyperParams,
                  progress: bool = True, **kwargs: Any) -> Tuple[Dict[str, torch.Tensor],
                                                                 TrainResult]:
    """Train and return ``({name: new_weight}, TrainResult)``; the model is not changed.
    Full tuning only (``tuning: full``); adapters: :func:`locft_easyedit.adapters.execute_adapter`."""
    if hparams.tuning != "full":
        raise ValueError(f"key 'tuning': execute_locft trains the tensors themselves (tuning: "
                         f"full), got {hparams.tuning!r}; use adapters.execute_adapter")
    requests = validate_requests(requests, hparams.conflicting_targets)
    params = select_parameters(model, hparams)
    examples = encode_requests(tok, requests, hparams.append_eos, hparams.max_length)
    ckpt = open_checkpoint(hparams, examples, params)  # another run's checkpoint: refused now
    masters = {n: p.detach().to(torch.float32).clone().requires_grad_(True)
               for n, p in params.items()}
    dtypes = {n: p.dtype for n, p in params.items()}

    def subs() -> Dict[str, torch.Tensor]:
        return {n: m.to(dtypes[n]) for n, m in masters.items()}

    result = train_tensors(model, tok, requests, examples, masters, subs, hparams, progress,
                           ckpt=ckpt)
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

    With ``tuning: lora`` / ``adalora`` see :func:`locft_easyedit.adapters.apply_adapter_to_model`:
    the result is a peft model (base weights untouched, ``weights_copy`` empty; ``.unload()``
    gives the base back) or, with ``lora_merge: true``, the merged model with the originals in
    ``weights_copy``.
    """
    if hparams.tuning != "full":  # peft adapters (LoRA / AdaLoRA) on the selected modules
        from .adapters import apply_adapter_to_model

        return apply_adapter_to_model(model, tok, requests, hparams, copy=copy,
                                      return_orig_weights=return_orig_weights,
                                      keep_original_weight=keep_original_weight, **kwargs)
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
