"""Losses of a mini-batch of edits, computed with gradients flowing only to the trained tensors.

Both implementations compute the same number: cross-entropy on the target tokens only, mean
over each example's target tokens, then mean over the mini-batch. A call returns a
:class:`StepLoss`: the mini-batch's loss (what the thresholds see) and its ``backward``, which
the training loop calls only for a mini-batch it steps on (one below ``loss_threshold`` pays no
backward pass). The trained tensors are fp32
master copies substituted into the model with ``torch.func.functional_call``, so the model's own
weights are never touched while training (a failed run leaves it as it was).

* :class:`ReferenceLoss` is the straightforward loop: tokenize the mini-batch every step,
  run the whole model, project every position onto the vocabulary.
* :class:`FastLoss` removes the waste without changing the result: tokens are encoded once;
  micro-batches of similar length cut padding (their losses are summed before one backward,
  so the mini-batch is the same); the hidden states entering the first trained layer are
  computed once (the frozen-prefix cache) and each forward starts there; and the model's own
  forward projects only target positions onto the vocabulary (``logits_to_keep``).

Locality terms (:mod:`.regularizers`) need the edited model's logits on their own generic
texts: each loss computes them with the same forward it uses for the edits (so the fast path
caches the texts' frozen prefix too) and hands them to :meth:`Regularizer.penalty`. The
regularizer never calls back into the loss.
"""
from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .encoding import Encoded, encode_requests, length_groups, pad_batch
from .modeling import find_layer_stack, input_device, pad_id_of
from .regularizers import Regularizer

logger = logging.getLogger(__name__)

Subs = Callable[[], Dict[str, torch.Tensor]]


@dataclass
class StepLoss:
    """One mini-batch: ``value`` is its loss as the thresholds see it (a float, the locality
    terms not included); ``backward(scale=1.0)`` adds ``scale`` times its gradient (edit loss +
    locality terms) to the trained tensors, to be called once, only when the optimizer steps
    on it (``scale``: float16 loss scaling)."""

    value: float
    backward: Callable[..., None]


def scaled(term: torch.Tensor, scale: float) -> torch.Tensor:
    return term if scale == 1.0 else term * scale


def per_example_ce(logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor,
                   n_rows: int) -> torch.Tensor:
    """Mean cross-entropy per example from flat target logits ``[K, V]`` and their rows."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    sums = torch.zeros(n_rows, dtype=ce.dtype, device=ce.device).index_add(0, rows, ce)
    counts = torch.zeros(n_rows, dtype=ce.dtype, device=ce.device).index_add(
        0, rows, torch.ones_like(ce))
    return sums / counts


def edit_loss(per_ex: torch.Tensor, denom: int, hp) -> Tuple[torch.Tensor, float]:
    """``(what to backpropagate, what to report)`` for a micro-batch's per-example losses.
    With ``per_example_stop`` an example already below ``loss_threshold`` gives no gradient."""
    report = float(per_ex.detach().sum()) / denom
    if getattr(hp, "per_example_stop", False):
        per_ex = per_ex * (per_ex.detach() >= hp.loss_threshold)
    return per_ex.sum() / denom, report


def regularize(regularizer: Optional[Regularizer], subs: Dict[str, torch.Tensor],
               logits_of: Callable[[List[int]], torch.Tensor], edits: Sequence[int],
               scale: float = 1.0) -> None:
    """Backpropagate the locality terms of one step: the regularizer names the texts it wants
    this step (given the step's ``edits``), ``logits_of`` (the loss's own forward) computes
    their next-token logits, and the regularizer turns them into its penalty."""
    if regularizer is None:
        return
    idx = regularizer.next_batch(edits)
    term = regularizer.penalty(logits_of(idx) if idx else None, idx, subs)
    if term is not None:
        scaled(term, scale).backward()


class ReferenceLoss:
    """The straightforward loop (kept to check the fast one against)."""

    def __init__(self, model, tok, requests: Sequence[dict], hp, subs: Subs,
                 regularizer: Optional[Regularizer] = None):
        self.model, self.tok, self.requests, self.hp, self.subs = model, tok, requests, hp, subs
        self.pad = pad_id_of(tok)
        self.regularizer = regularizer

    def __enter__(self):  # nothing to set up: the straightforward loop uses the model as is
        return self

    def __exit__(self, *exc):
        return False

    def __call__(self, indices: Sequence[int], denom: int) -> StepLoss:
        batch = encode_requests(self.tok, [self.requests[i] for i in indices],
                                self.hp.append_eos, self.hp.max_length)
        ids, mask, labels = pad_batch(batch, self.pad, input_device(self.model))
        subs = self.subs()
        out = functional_call(self.model, subs, args=(),
                              kwargs={"input_ids": ids, "attention_mask": mask})
        logits, labels = out.logits[:, :-1], labels[:, 1:]
        ce = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")
        per_ex = ce.sum(1) / (labels != -100).sum(1)
        loss, report = edit_loss(per_ex, denom, self.hp)

        def backward(scale: float = 1.0) -> None:
            scaled(loss, scale).backward()
            regularize(self.regularizer, subs, lambda idx: self._generic_logits(subs, idx),
                       indices, scale)

        return StepLoss(report, backward)

    @torch.no_grad()
    def generic_logits(self, idx: Sequence[int], subs: Optional[Dict[str, torch.Tensor]] = None
                       ) -> torch.Tensor:
        """The regularizer's generic texts ``idx``: next-token logits with the trained tensors
        as they are now, or as ``subs`` gives them (what
        :meth:`.regularizers.Regularizer.fill` records before training)."""
        return self._generic_logits(self.subs() if subs is None else subs, idx)

    def _generic_logits(self, subs, idx: Sequence[int]) -> torch.Tensor:
        """Logits at every next-token position of the regularizer's generic texts ``idx``."""
        batch = [self.regularizer.examples[i] for i in idx]
        ids, mask, labels = pad_batch(batch, self.pad, input_device(self.model))
        out = functional_call(self.model, subs, args=(),
                              kwargs={"input_ids": ids, "attention_mask": mask})
        return out.logits[:, :-1][labels[:, 1:] != -100]


def _copy_plain_attributes(layer: nn.Module, into: nn.Module) -> None:
    """Give a stand-in the plain attributes of the layer it replaces (``attention_type``,
    ``layer_idx``, ``is_sliding``, ...), which some models' forward reads from each layer."""
    for key, value in vars(layer).items():
        if (not key.startswith("_") and key != "training"
                and isinstance(value, (str, int, float, bool, type(None)))):
            setattr(into, key, value)


class _Skip(nn.Module):
    """Stands in for a frozen decoder layer: passes its input on, or (the last one below the
    first trained layer, at the layer level) emits the cached hidden states of the current
    micro-batch."""

    def __init__(self, layer: nn.Module, as_tuple: bool, emit: bool):
        super().__init__()
        _copy_plain_attributes(layer, self)
        self.as_tuple, self.emit = as_tuple, emit
        self.current: Optional[torch.Tensor] = None

    def forward(self, hidden_states, *args, **kwargs):
        out = self.current if self.emit else hidden_states
        return (out,) if self.as_tuple else out


class _ModuleStandIn(nn.Module):
    """Stands in for the first trained layer when only one module ``path`` inside it trains
    (e.g. ``mlp.down_proj``): its output is the cached rest of the layer (``residual``: the
    layer's output minus the module's, computed once with the original weights) plus the
    module applied to its cached input. The module itself is held at the same relative path,
    so ``functional_call`` substitutes the trained tensors into it by their usual names.
    Exact when the layer adds the module's output to its residual stream, as pre-norm decoder
    layers do; :func:`fast_path_mismatch` catches a layer that does anything else with it (a
    post-norm, a gate) through the gradient, and the run falls back to the layer-input cache."""

    def __init__(self, layer: nn.Module, path: str, as_tuple: bool):
        super().__init__()
        _copy_plain_attributes(layer, self)
        holder = self
        parts = path.split(".")
        for part in parts[:-1]:
            holder.add_module(part, nn.Module())
            holder = getattr(holder, part)
        holder.add_module(parts[-1], layer.get_submodule(path))
        self.path, self.as_tuple = path, as_tuple
        self.inputs: Optional[torch.Tensor] = None
        self.residual: Optional[torch.Tensor] = None

    def forward(self, hidden_states, *args, **kwargs):
        out = self.residual + self.get_submodule(self.path)(self.inputs)
        return (out,) if self.as_tuple else out


class _Stop(Exception):
    pass


def _packer(rows: torch.Tensor, cols: torch.Tensor):
    """A forward hook for the model's backbone: its last hidden state ``[B, T, hidden]``
    becomes the positions ``(rows, cols)`` as one sequence ``[1, K, hidden]``."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0][rows, cols].unsqueeze(0),) + output[1:]
        output.last_hidden_state = output.last_hidden_state[rows, cols].unsqueeze(0)
        return output

    return hook


class _Unsuitable(Exception):
    pass


def cache_budget_gb(hp, device: torch.device) -> Tuple[float, str]:
    """``(GB the frozen-prefix cache may take, where that figure comes from)``: the hparams'
    ``prefix_cache_max_gb`` when set, else half of the free memory of the device the cache
    lives on (CUDA: ``torch.cuda.mem_get_info``), a quarter of the available host memory on
    the CPU."""
    if hp.prefix_cache_max_gb is not None:
        return hp.prefix_cache_max_gb, "prefix_cache_max_gb"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return 0.5 * free / 2**30, f"budget (half the free memory of {device})"
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: the old fixed budget
        return 4.0, "budget (4 GB: host memory unknown)"
    return 0.25 * available / 2**30, "budget (a quarter of the available host memory)"


CACHE_LEVELS = ("module", "layer")  # what FastLoss may cache, most work saved first


def trained_module(trained: Sequence[str], stack_name: str, first: int,
                   layer: nn.Module) -> Optional[str]:
    """The path inside layer ``first`` of the one module all its trained tensors belong to,
    when that module is a linear map with a known input width (``mlp.down_proj``); else None."""
    prefix = f"{stack_name}.{first}."
    paths = {n[len(prefix):].rsplit(".", 1)[0] for n in trained if n.startswith(prefix)}
    if len(paths) != 1:
        return None
    (path,) = paths
    try:
        module = layer.get_submodule(path)
    except AttributeError:
        return None
    return path if isinstance(getattr(module, "in_features", None), int) else None


class FastLoss:
    """Same loss as :class:`ReferenceLoss`, without the wasted work.

    What is computed once per run (``cache_level``; :attr:`level` says what was built):

    * ``"module"``: when only one linear module inside the first trained layer trains (e.g.
      ``mlp.down_proj``), that module's input and the rest of the layer's output, so the
      layers below, the layer's attention and the rest of its MLP leave the per-step work
      (:class:`_ModuleStandIn`);
    * ``"layer"``: the hidden states entering the first trained layer (the frozen prefix);
    * ``"off"``: nothing (every forward runs the whole model).

    A level is dropped for the next one when it does not apply or does not fit the budget
    (:func:`cache_budget_gb`); :func:`fast_path_mismatch` then checks what was built."""

    def __init__(self, model, examples: List[Encoded], trained: Sequence[str], hp, subs: Subs,
                 pad_id: int, overhead_tokens: int = 64,
                 regularizer: Optional[Regularizer] = None, cache_level: str = "module"):
        # the regularizer's generic texts are sequences of this loss too: they follow the edits
        # (indices n_edits..) and share the cache and the target-only logits
        self.regularizer = regularizer
        self.n_edits = len(examples)
        if regularizer is not None:
            examples = list(examples) + regularizer.examples
        self.model, self.examples, self.hp, self.subs = model, examples, hp, subs
        self.pad = pad_id
        self.overhead = overhead_tokens
        self.device = input_device(model)
        # the model's own forward computes the logits (whatever its head does: scaling,
        # soft-capping, tied weights); logits_to_keep limits them to the target positions
        self.keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        if not self.keep:
            logger.info("%s.forward takes no logits_to_keep: projecting every position",
                        type(model).__name__)
        # the head on the target positions only (see _target_logits); train_tensors turns it
        # off when the self-check finds that a family's forward does not allow it
        self.pack = getattr(model, "base_model", None) is not None
        self.level = "off"
        self.stack, self.first = None, 0
        self.cache: Optional[torch.Tensor] = None      # [tokens, width]: layer or module input
        self.residual: Optional[torch.Tensor] = None   # [tokens, hidden]: module level only
        self.stand_ins: List[nn.Module] = []
        self.offsets = [0]
        for e in self.examples:
            self.offsets.append(self.offsets[-1] + e.length)
        self._maybe_build_cache(trained, cache_level)

    @property
    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.cache, self.residual)
                   if t is not None)

    # --- the cache ------------------------------------------------------------------------
    def _maybe_build_cache(self, trained: Sequence[str], cache_level: str) -> None:
        stack_name, stack = find_layer_stack(self.model, trained)
        if stack is None:
            return
        first = min(int(n[len(stack_name) + 1:].split(".")[0]) for n in trained)
        param = next(stack[first].parameters())
        hidden, elem = self.model.config.hidden_size, param.element_size()
        tokens = self.offsets[-1]
        budget, source = cache_budget_gb(self.hp, param.device)
        path = (trained_module(trained, stack_name, first, stack[first])
                if cache_level == "module" else None)
        if path is not None:
            width = stack[first].get_submodule(path).in_features
            gb = tokens * (width + hidden) * elem / 2**30
            if gb <= budget:
                self.stack, self.first = stack, first
                if self._capture_module(path, width, param):
                    logger.info("module-input cache: the input of %s.%d.%s and the rest of its "
                                "layer computed once (%.1f MB)", stack_name, first, path,
                                gb * 1024)
                    return
            else:
                logger.info("module-input cache would take %.2f GB, over the %.2f GB %s: "
                            "caching the layer's input instead", gb, budget, source)
        if first == 0:
            return
        gb = tokens * hidden * elem / 2**30
        if gb > budget:
            logger.warning(
                "frozen-prefix cache off: it would take %.2f GB, over the %.2f GB %s; every "
                "forward now runs all %d layers instead of the %d from layer %d on (about "
                "%.1fx the forward work). Raise prefix_cache_max_gb if memory allows", gb,
                budget, source, len(stack), len(stack) - first, first,
                len(stack) / (len(stack) - first))
            return
        self.stack, self.first = stack, first
        self._capture_layer(param)
        logger.info("frozen-prefix cache: layers 0..%d computed once (%.1f MB)", first - 1,
                    gb * 1024)

    def _forward_all(self, on_batch: Callable[[List[int]], None]) -> None:
        """Run the model (no grad) over every example in length-sorted batches of 64; the
        hooks the caller installed stop it (:class:`_Stop`) where the cache is taken, and
        ``on_batch(idx)`` stores that batch."""
        order = sorted(range(len(self.examples)), key=lambda i: self.examples[i].length)
        with torch.no_grad():
            for start in range(0, len(order), 64):
                idx = order[start:start + 64]
                ids, mask, _ = pad_batch([self.examples[i] for i in idx], self.pad, self.device)
                try:
                    self.model(input_ids=ids, attention_mask=mask)
                except _Stop:
                    pass
                on_batch(idx)

    def _store(self, flat: torch.Tensor, idx: List[int], batch: torch.Tensor) -> None:
        for row, i in enumerate(idx):
            n = self.examples[i].length
            flat[self.offsets[i]:self.offsets[i] + n] = batch[row, :n]

    def _capture_layer(self, param: torch.Tensor) -> None:
        stack, first = self.stack, self.first
        self.cache = torch.empty((self.offsets[-1], self.model.config.hidden_size),
                                 dtype=param.dtype, device=param.device)
        captured: dict = {}

        def grab(module, args, kwargs):
            captured["h"] = args[0] if args else kwargs["hidden_states"]
            raise _Stop

        def kind(module, args, output):
            captured["tuple"] = isinstance(output, tuple)

        hooks = [stack[first].register_forward_pre_hook(grab, with_kwargs=True),
                 stack[first - 1].register_forward_hook(kind)]
        try:
            self._forward_all(lambda idx: self._store(self.cache, idx, captured["h"]))
        finally:
            for h in hooks:
                h.remove()
        self.level = "layer"
        as_tuple = captured.get("tuple", False)
        self.stand_ins = [_Skip(stack[i], as_tuple, emit=(i == first - 1))
                          for i in range(first)]

    def _capture_module(self, path: str, width: int, param: torch.Tensor) -> bool:
        """Cache the input of ``path`` in the first trained layer and the layer's output minus
        the module's; False (nothing kept) when the module is not called exactly once per
        forward on the whole sequence (a mixture of experts routes tokens)."""
        layer = self.stack[self.first]
        module = layer.get_submodule(path)
        tokens, hidden = self.offsets[-1], self.model.config.hidden_size
        self.cache = torch.empty((tokens, width), dtype=param.dtype, device=param.device)
        self.residual = torch.empty((tokens, hidden), dtype=param.dtype, device=param.device)
        captured: dict = {"calls": 0}

        def module_in(mod, args):
            captured["calls"] += 1
            captured["x"] = args[0]

        def module_out(mod, args, output):
            captured["y"] = output

        def layer_out(mod, args, output):
            captured["tuple"] = isinstance(output, tuple)
            captured["out"] = output[0] if isinstance(output, tuple) else output
            raise _Stop

        def on_batch(idx):
            x, y, out = captured["x"], captured["y"], captured["out"]
            if captured["calls"] != 1 or x.shape[:2] != out.shape[:2] or y.shape != out.shape:
                raise _Unsuitable
            captured["calls"] = 0
            self._store(self.cache, idx, x)
            # in float32, then rounded once: the rest of the layer's output
            self._store(self.residual, idx, (out.float() - y.float()).to(out.dtype))

        hooks = [module.register_forward_pre_hook(module_in),
                 module.register_forward_hook(module_out), layer.register_forward_hook(layer_out)]
        try:
            self._forward_all(on_batch)
        except _Unsuitable:
            self.cache = self.residual = None
            return False
        finally:
            for h in hooks:
                h.remove()
        self.level = "module"
        as_tuple = captured.get("tuple", False)
        self.stand_ins = [_Skip(self.stack[i], as_tuple, emit=False) for i in range(self.first)]
        self.stand_ins.append(_ModuleStandIn(layer, path, as_tuple))
        return True

    def __enter__(self):
        """Swap the layers the cache covers for their stand-ins."""
        self._saved = [self.stack[i] for i in range(len(self.stand_ins))]
        for i, stand_in in enumerate(self.stand_ins):
            self.stack[i] = stand_in
        return self

    def __exit__(self, *exc):
        for i, layer in enumerate(self._saved):
            self.stack[i] = layer
        return False

    def _rows(self, flat: torch.Tensor, batch_idx: Sequence[int], width: int) -> torch.Tensor:
        out = torch.zeros((len(batch_idx), width, flat.shape[1]), dtype=flat.dtype,
                          device=flat.device)
        for row, i in enumerate(batch_idx):
            n = self.examples[i].length
            out[row, :n] = flat[self.offsets[i]:self.offsets[i] + n]
        return out

    def _feed(self, idx: Optional[Sequence[int]], width: int = 0) -> None:
        """Hand the cached tensors of examples ``idx`` to the stand-ins (None: let go)."""
        if self.level == "layer":
            self.stand_ins[-1].current = None if idx is None else self._rows(self.cache, idx,
                                                                              width)
        elif self.level == "module":
            stand_in = self.stand_ins[-1]
            stand_in.inputs = None if idx is None else self._rows(self.cache, idx, width)
            stand_in.residual = None if idx is None else self._rows(self.residual, idx, width)

    # --- the loss ------------------------------------------------------------------------------
    def _target_logits(self, subs, idx: Sequence[int]):
        """``(logits [K, V], labels [K], rows [K])`` at the target positions of examples
        ``idx``, in row order (one padded forward of the model itself).

        Packed (:attr:`pack`): a hook on the model's backbone hands its head the K target
        positions' final hidden states as one sequence ``[1, K, hidden]``, so the vocabulary
        projection runs on those K positions only, through the model's own head (scaling,
        soft-capping and all). Unpacked: ``logits_to_keep`` with the positions some row
        predicts a target at (every row at each: about 2.5x K on ZsRE mini-batches)."""
        batch = [self.examples[i] for i in idx]
        ids, mask, labels = pad_batch(batch, self.pad, self.device)
        rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)
        kwargs = {"input_ids": ids, "attention_mask": mask}
        hooks = []
        if self.pack:
            hooks.append(self.model.base_model.register_forward_hook(_packer(rows, cols)))
            if self.keep:
                kwargs["logits_to_keep"] = 0  # all of the packed positions
        elif self.keep:
            positions, cols_kept = torch.unique(cols, return_inverse=True)
            kwargs["logits_to_keep"] = positions
        self._feed(idx, ids.shape[1])
        try:
            out = functional_call(self.model, subs, args=(), kwargs=kwargs)
        finally:
            self._feed(None)
            for h in hooks:
                h.remove()
        if self.pack:
            logits = out.logits[0]
        else:
            logits = out.logits[rows, cols_kept if self.keep else cols]
        dev = logits.device
        return logits, labels[rows, cols + 1].to(dev), rows.to(dev)

    @torch.no_grad()
    def generic_logits(self, idx: Sequence[int], subs: Optional[Dict[str, torch.Tensor]] = None
                       ) -> torch.Tensor:
        """As :meth:`ReferenceLoss.generic_logits`, through the cache (inside ``with``)."""
        return self._target_logits(self.subs() if subs is None else subs,
                                   [self.n_edits + i for i in idx])[0]

    def __call__(self, indices: Sequence[int], denom: int) -> StepLoss:
        """Forward every length group (their graphs kept), so that ``backward`` runs only for
        a mini-batch the loop steps on."""
        lengths = [self.examples[i].length for i in indices]
        losses, total = [], 0.0
        for group in length_groups(lengths, self.overhead):
            idx = [indices[g] for g in group]
            logits, labels, rows = self._target_logits(self.subs(), idx)
            per_ex = per_example_ce(logits, labels, rows, len(idx))
            loss, report = edit_loss(per_ex, denom, self.hp)
            losses.append(loss)
            total += report

        def backward(scale: float = 1.0) -> None:
            scaled(sum(losses), scale).backward()
            if self.regularizer is not None:
                subs = self.subs()
                regularize(self.regularizer, subs, lambda idx: self._target_logits(
                    subs, [self.n_edits + i for i in idx])[0], indices, scale)

        return StepLoss(total, backward)


# --- the fast path checked against the model itself --------------------------------------------
# Largest relative differences the fast path may show on the probe batch, by compute dtype:
# float32 differs from the plain forward only by summation order (measured <= 1e-6 on logits).
PARITY_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
PARITY_TOLERANCE_LOW_PRECISION = 3e-2  # bfloat16 / float16 rounding of a different batch shape
PROBE_EXAMPLES = 8


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def fast_path_mismatch(fast: FastLoss, model, masters: Dict[str, torch.Tensor]) -> Optional[str]:
    """None when the fast path reproduces the model on a probe batch (the first examples),
    else why not. Compared with ``model(...)`` itself through ``functional_call``: the target
    logits, the loss and its gradient on every trained tensor. This is what makes the fast
    path safe on a family it was never tried on (a head that scales or caps its logits, a
    layer the stand-in cannot replace, ...): a mismatch is caught before any training."""
    idx = list(range(min(PROBE_EXAMPLES, fast.n_edits)))
    names = list(masters)
    ids, mask, labels = pad_batch([fast.examples[i] for i in idx], fast.pad, fast.device)
    rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)

    def loss_and_grads(logits, tgt, r):
        loss = per_example_ce(logits, tgt, r, len(idx)).mean()
        grads = torch.autograd.grad(loss, [masters[n] for n in names], allow_unused=True)
        return loss.detach(), [torch.zeros_like(masters[n]) if g is None else g
                               for n, g in zip(names, grads)]

    subs = fast.subs()
    out = functional_call(model, subs, args=(), kwargs={"input_ids": ids, "attention_mask": mask})
    ref_logits = out.logits[rows, cols]
    ref_loss, ref_grads = loss_and_grads(ref_logits, labels[rows, cols + 1].to(ref_logits.device),
                                         rows.to(ref_logits.device))
    with fast:
        logits, tgt, r = fast._target_logits(fast.subs(), idx)
        loss, grads = loss_and_grads(logits, tgt, r)
    dtype = ref_logits.dtype
    tol = PARITY_TOLERANCE.get(dtype, PARITY_TOLERANCE_LOW_PRECISION)
    checks = [("target logits", _relative(logits.float(), ref_logits.float().to(logits.device))),
              ("loss", _relative(loss.float(), ref_loss.float().to(loss.device)))]
    checks += [(f"gradient of {n}", _relative(g.float(), rg.float().to(g.device)))
               for n, g, rg in zip(names, grads, ref_grads) if rg.abs().sum() > 0]
    bad = [(what, diff) for what, diff in checks if not diff <= tol]
    if not bad:
        return None
    what, diff = max(bad, key=lambda x: x[1])
    return (f"on {type(model).__name__} the fast path's {what} differs from the model's own "
            f"forward by {diff:.1e} (relative; allowed {tol:.0e} in {str(dtype)[6:]})")
