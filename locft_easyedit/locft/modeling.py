"""Bottom-level helpers about a transformers model: where its inputs go, its pad id, its
decoder-layer stack, freezing it while training, and the one way new tensors are written into
it (and taken out again). Imports nothing else of the method."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn


def input_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


def pad_id_of(tok) -> int:
    for cand in (tok.pad_token_id, tok.eos_token_id, 0):
        if cand is not None:
            return int(cand)
    return 0


@contextmanager
def left_padding(tok) -> Iterator[None]:
    """Pad on the left (for batched generation) with a pad token; restored afterwards."""
    side, pad = tok.padding_side, tok.pad_token
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    try:
        yield
    finally:
        tok.padding_side, tok.pad_token = side, pad


def find_layer_stack(model, names: Sequence[str]) -> Tuple[Optional[str], Optional[nn.ModuleList]]:
    """``(prefix, ModuleList)`` of the decoder layer stack (the longest ``ModuleList``);
    ``(prefix, None)`` when some of ``names`` lie outside it, ``(None, None)`` without one."""
    best = None
    for mname, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if best is None or len(module) > len(best[1]):
                best = (mname, module)
    if best is None:
        return None, None
    prefix = best[0] + "."
    if not all(n.startswith(prefix) for n in names):
        return best[0], None
    return best


def _offloads(hook) -> bool:
    """Whether an accelerate hook (or a SequentialHook holding one) offloads its weights."""
    return bool(getattr(hook, "offload", False)) or any(
        _offloads(h) for h in getattr(hook, "hooks", None) or ())


def offloaded(model, names: Sequence[str]) -> List[str]:
    """Those of the parameters ``names`` that accelerate offloads (``device_map`` with "cpu" or
    "disk" entries, ``cpu_offload``, ``disk_offload``): kept on the meta device, or owned by a
    module whose hook writes the stored weights back before each forward, which would undo
    the substitution LocFT trains through."""
    params = dict(model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules())
    out = []
    for name in names:
        parts = name.split(".")
        owners = (modules.get(".".join(parts[:i])) for i in range(len(parts) - 1, -1, -1))
        if params[name].device.type == "meta" or any(
                _offloads(getattr(m, "_hf_hook", None)) for m in owners if m is not None):
            out.append(name)
    return out


def num_layers(model) -> Optional[int]:
    cfg = getattr(model, "config", None)
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int):
            return value
    _, stack = find_layer_stack(model, [])
    return len(stack) if stack is not None else None


@contextmanager
def frozen(model) -> Iterator[None]:
    """Freeze every parameter and switch to eval mode (no dropout: the frozen-prefix cache and
    determinism rely on it); the flags and the mode are restored afterwards."""
    # by name: accelerate's offload hooks swap parameter objects in and out around forwards
    flags = {n: p.requires_grad for n, p in model.named_parameters(remove_duplicate=False)}
    was_training = model.training
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    try:
        yield
    finally:
        for n, p in model.named_parameters(remove_duplicate=False):
            p.requires_grad_(flags.get(n, p.requires_grad))
        model.train(was_training)


# --- writing tensors into a model ----------------------------------------------------------
def restore_weights(model, weights_copy: Dict[str, torch.Tensor]) -> None:
    """Put the tensors of ``weights_copy`` back into ``model`` (undo an edit)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for n, w in weights_copy.items():
            params[n].copy_(w.to(params[n].device))


def write_weights(model, new: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Copy ``new`` (``{parameter name: tensor}``) into ``model``'s parameters, all or nothing:
    if any copy fails (or is interrupted) the tensors already written are put back. Returns
    the original values of the written parameters (for :func:`restore_weights`)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    missing = [n for n in new if n not in params]
    if missing:
        raise KeyError(f"{type(model).__name__} has no parameter(s) {missing[:3]}")
    originals = {n: params[n].detach().clone() for n in new}
    try:
        with torch.no_grad():
            for n, w in new.items():
                params[n].copy_(w)
    except BaseException:
        restore_weights(model, originals)
        raise
    return originals


def preserved_values(masters: Dict[str, torch.Tensor],
                     preserve_from: Optional[Dict[str, torch.Tensor]],
                     names: Sequence[str]) -> Dict[str, torch.Tensor]:
    """float32 copies, on each master's device, of the values the loss terms preserve for the
    trained tensors ``names``: ``preserve_from``'s when given (the tensors' values before the
    whole edit history, e.g. a ledger's base), else the masters' starting values."""
    source = preserve_from if preserve_from is not None else masters
    return {n: source[n].detach().to(masters[n].device, torch.float32).clone() for n in names}


@contextmanager
def weights_applied(model, new: Dict[str, torch.Tensor]) -> Iterator[Dict[str, torch.Tensor]]:
    """``with weights_applied(model, new) as originals:`` the model holds ``new`` inside the
    block and its own tensors again afterwards, however the block ends."""
    originals = write_weights(model, new)
    try:
        yield originals
    finally:
        restore_weights(model, originals)
