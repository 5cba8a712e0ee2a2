"""``apply_locft_to_model``: LocFT editing with EasyEdit's method signature.

One path for every tuning (:func:`edit`): validate the requests -> select the tensors
(``layers`` x ``rewrite_module_tmp``) -> encode -> open the checkpoint -> train (with the
tensors and hooks the tuning supplies, :mod:`.tuning`). The model's own weights are not
touched while training: full tuning trains fp32 master copies and writes them into the model
only once training has finished (:func:`.modeling.write_weights`), and adapters are removed
again if training fails. Any exception (an interrupt, out of memory, a NaN loss, bad input)
therefore leaves the model bit-identical to before. The model's ``requires_grad`` flags and
train/eval mode, and the tokenizer, are as they were afterwards.
"""
from __future__ import annotations

import copy as copy_module
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .adapters import adapter_tuning, has_adapters, merge_adapter, save_adapter
from .checkpoint import open_checkpoint
from .encoding import encode_requests
from .errors import HparamsError, LocFTInputError
from .locft_hparams import LocFTHyperParams
from .modeling import num_layers, offloaded, write_weights
from .requests import validate_requests
from .training import TrainResult, train_tensors
from .tuning import full_tuning

TUNINGS = {"full": full_tuning, "lora": adapter_tuning, "adalora": adapter_tuning}


def select_parameters(model, hp: LocFTHyperParams) -> Dict[str, torch.nn.Parameter]:
    """The parameters that ``layers`` x ``rewrite_module_tmp`` name, in a stable order.

    A template may name a parameter or a module (all parameters under it). Raises
    HparamsError for a layer index outside the model and for a template that matches no
    parameter."""
    n_layers = num_layers(model)
    if n_layers is not None:
        bad = [i for i in hp.layers if i >= n_layers]
        if bad:
            raise HparamsError(f"key 'layers': {bad} out of range: the model has {n_layers} "
                               f"layers (0..{n_layers - 1})")
    params = dict(model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules())
    chosen: Dict[str, torch.nn.Parameter] = {}
    for tmp in hp.templates:
        for layer in hp.layers:
            try:
                name = tmp.format(layer)
            except (IndexError, KeyError, ValueError, TypeError, AttributeError):
                raise HparamsError(f"key 'rewrite_module_tmp': {tmp!r} is not a template with "
                                   "one '{}' for the layer index") from None
            if name in params:
                chosen[name] = params[name]
            elif name in modules and any(True for _ in modules[name].parameters()):
                for sub, p in modules[name].named_parameters(remove_duplicate=False):
                    chosen[f"{name}.{sub}"] = p
            else:
                near = sorted(n for n in params if f".{layer}." in n)[:8]
                raise HparamsError(
                    f"key 'rewrite_module_tmp': {tmp!r} with layer {layer} gives {name!r}, which "
                    f"matches no parameter or module of {type(model).__name__}; parameters of "
                    f"that layer include {near}")
    return chosen


def check_placement(model, params: Dict[str, torch.nn.Parameter], hp: LocFTHyperParams) -> None:
    """Tensors to edit must live on a device: accelerate's offloading (``device_map`` entries
    "cpu" / "disk", ``cpu_offload``) writes stored weights back before each forward, so
    training would change nothing. Refused before any work, naming the fix."""
    away = offloaded(model, list(params))
    if away:
        layers = sorted({n.split(".")[2] for n in away if n.split(".")[1:2] == ["layers"]})
        where = f"layer(s) {', '.join(layers)}" if layers else "their modules"
        raise LocFTInputError(
            f"the tensors to edit are offloaded by accelerate ({', '.join(away[:3])}"
            f"{' ...' if len(away) > 3 else ''}): LocFT trains them on a device, and offload "
            f"hooks would write the stored weights back before every forward. Keep {where} "
            "on a GPU: give that GPU more max_memory, or a device_map entry such as "
            "{'model.layers.N': 0} (the other layers may stay offloaded)")


def check_dtype(params: Dict[str, torch.nn.Parameter], hp: LocFTHyperParams) -> None:
    """The one dtype rule: ``dtype`` is the dtype the model computes in while it is edited.
    Where LocFT loads the model it loads it so; a model handed in must already be in it
    (``dtype: null`` takes the model as it is). The trained tensors always get fp32 master
    copies; float16 trains with dynamic loss scaling."""
    if hp.dtype is None:
        return
    want = getattr(torch, hp.dtype)
    have = sorted({str(p.dtype)[6:] for p in params.values() if p.dtype != want})
    if have:
        raise HparamsError(
            f"key 'dtype': the hparams ask for {hp.dtype} but the tensors to edit are "
            f"{', '.join(have)}; load the model in {hp.dtype} (locft-edit and load_model do; "
            f"model.to(torch.{hp.dtype}) otherwise) or set dtype: null to edit it in its own "
            "dtype")


def check_preserve_from(preserve_from: Dict[str, torch.Tensor], params, hparams) -> None:
    """``preserve_from`` names exactly the tensors the hparams select, in their shapes."""
    if hparams.tuning != "full":
        raise LocFTInputError("preserve_from needs tuning: full (adapters train new tensors)")
    if set(preserve_from) != set(params):
        raise LocFTInputError(
            f"preserve_from names {sorted(preserve_from)[:3]}, the hparams select "
            f"{sorted(params)[:3]}: give the selected tensors' values")
    bad = [n for n, p in params.items() if tuple(preserve_from[n].shape) != tuple(p.shape)]
    if bad:
        raise LocFTInputError(f"preserve_from[{bad[0]!r}] has shape "
                              f"{tuple(preserve_from[bad[0]].shape)}, the parameter "
                              f"{tuple(params[bad[0]].shape)}")


def edit(model, tok, requests: Sequence[dict], hparams: LocFTHyperParams,
         progress: bool = True, preserve_from: Optional[Dict[str, torch.Tensor]] = None
         ) -> Tuple[Any, TrainResult]:
    """Train the edit with ``hparams.tuning`` and return ``(output, TrainResult)``: for full
    tuning ``{name: new tensor}`` (the model unchanged), for adapters the ``PeftModel``
    wrapping ``model`` in place. Every input check runs before any training.

    ``preserve_from`` (full tuning): the values of the trained tensors whose behaviour the
    locality terms (``preserve_weight``, ``anchor_weight``) keep, when they are not the
    model's current ones: an edit on top of earlier edits (a ledger round) preserves the base
    model's distributions, so locality does not drift round after round."""
    requests = validate_requests(requests, hparams.conflicting_targets)
    if has_adapters(model):
        raise LocFTInputError("the model already carries peft adapters: merge them "
                              "(lora_merge: true, or merge_and_unload()) or unload them before "
                              "another edit")
    params = select_parameters(model, hparams)
    if preserve_from is not None:
        check_preserve_from(preserve_from, params, hparams)
    check_placement(model, params, hparams)
    check_dtype(params, hparams)
    examples = encode_requests(tok, requests, hparams.append_eos, hparams.max_length)
    ckpt = open_checkpoint(hparams, examples, params)  # another run's checkpoint: refused now
    with TUNINGS[hparams.tuning](model, params, hparams, len(examples)) as tuning:
        result = train_tensors(model, tok, requests, examples, tuning, hparams, progress, ckpt,
                               preserve_from)
    return tuning.output(), result


def execute_locft(model, tok, requests: Sequence[dict], hparams: LocFTHyperParams,
                  progress: bool = True, preserve_from: Optional[Dict[str, torch.Tensor]] = None,
                  **kwargs: Any) -> Tuple[Dict[str, torch.Tensor], TrainResult]:
    """Train and return ``({name: new_weight}, TrainResult)``; the model is not changed.
    Full tuning only (``tuning: full``); adapters: :func:`execute_adapter`. ``preserve_from``:
    see :func:`edit`."""
    if hparams.tuning != "full":
        raise HparamsError(f"key 'tuning': execute_locft trains the tensors themselves "
                           f"(tuning: full), got {hparams.tuning!r}; use execute_adapter")
    return edit(model, tok, requests, hparams, progress, preserve_from)


def execute_adapter(model, tok, requests: Sequence[dict], hparams: LocFTHyperParams,
                    progress: bool = True) -> Tuple[Any, TrainResult]:
    """Wrap ``model`` (in place) with a fresh adapter, train it, return ``(peft_model,
    TrainResult)`` (``tuning: lora | adalora``). On any exception the adapter is removed."""
    if hparams.tuning == "full":
        raise HparamsError("key 'tuning': execute_adapter trains peft adapters (tuning: lora "
                           "or adalora), got 'full'; use execute_locft")
    return edit(model, tok, requests, hparams, progress)


def apply_locft_to_model(model, tok, requests: List[Dict], hparams: LocFTHyperParams,
                         copy: bool = False, return_orig_weights: bool = False,
                         keep_original_weight: bool = False, **kwargs: Any):
    """Edit ``model`` so that each request's prompt continues with its ``target_new``.

    Returns ``(edited_model, weights_copy)`` like every EasyEdit method. ``copy=True`` edits a
    deep copy and leaves ``model`` untouched. ``weights_copy`` maps each changed parameter's
    name to its original tensor when ``return_orig_weights`` or ``keep_original_weight`` is
    set (restore with :func:`.modeling.restore_weights`), and is empty otherwise. Extra keyword
    arguments: ``progress`` (bool, tqdm bars); ``save_adapter_to`` (a folder; adapters: save
    the adapter before merging); others EasyEdit passes are ignored.

    With ``tuning: lora`` / ``adalora`` the result is a peft model (base weights untouched,
    ``weights_copy`` empty; ``.unload()`` gives the base back) or, with ``lora_merge: true``,
    the merged model with the originals in ``weights_copy``.
    """
    keep = return_orig_weights or keep_original_weight
    if copy:
        model = copy_module.deepcopy(model)
    output, _ = edit(model, tok, requests, hparams, progress=kwargs.get("progress", True))
    if hparams.tuning == "full":
        originals = write_weights(model, output)
        return model, (originals if keep else {})
    if kwargs.get("save_adapter_to"):
        save_adapter(output, kwargs["save_adapter_to"], hparams)
    if not hparams.lora_merge:
        return output, {}
    merged, originals = merge_adapter(output)
    return merged, (originals if keep else {})
