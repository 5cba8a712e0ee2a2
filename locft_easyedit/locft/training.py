"""Training: :func:`train_tensors` (one run on the tensors a tuning supplies) and the loops it
drives, breadth-first (LocFT-BF) and depth-first (the paper's ablation).

``loss_fn(indices, denom)`` runs the forward pass for the examples at ``indices`` and returns a
:class:`~.losses.StepLoss`: their summed per-example loss divided by ``denom`` (so a
mini-batch's gradient is the mean over its examples) and the ``backward`` that the loops call
only for a mini-batch they step on. The loops decide which examples go together and when the
optimizer steps. With a :class:`~.checkpoint.Checkpointer` they start where its checkpoint left
off and save one when due (after a mini-batch, or at an epoch's end). ``after_step(steps)``,
when given, runs after every optimizer step (gradients still in place) with the number of
steps taken so far: AdaLoRA's budget schedule hooks in there. An epoch's loss is the mean over
its examples (mini-batches weighted by their size, as the authors' code does), so the
early stop does not depend on how N divides into mini-batches.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import Checkpointer, Position
from .errors import TrainingDiverged
from .losses import (CACHE_LEVELS, FastLoss, ReferenceLoss, StepLoss, fast_path_mismatch,
                     scaled)
from .modeling import frozen, pad_id_of
from .keys import build_key_constraints
from .regularizers import build_regularizer
from .tuning import Tuning

logger = logging.getLogger(__name__)

LossFn = Callable[[Sequence[int], int], StepLoss]
AfterStep = Optional[Callable[[int], None]]


@dataclass
class TrainResult:
    epochs: int = 0                    # epochs run (depth-first: requests edited)
    steps: int = 0                     # optimizer steps taken
    skipped: int = 0                   # mini-batches below the threshold (no step)
    epoch_losses: List[float] = field(default_factory=list)
    stopped_early: bool = False
    implementation: str = ""           # the loss used: "fast" or "reference"
    fallback: str = ""                 # why the fast path was not used, when it was asked for
    cache: str = ""                    # fast path: what it cached ("module", "layer" or "off")
    packed_logits: bool = False        # fast path: head on the target positions only
    loss_scale: float = 1.0            # float16 models: the dynamic loss scale now
    good_steps: int = 0                # float16: steps since the scale last changed
    overflows: int = 0                 # float16: steps skipped for non-finite gradients


class LossScale:
    """Dynamic loss scaling for float16 models, as ``torch.amp.GradScaler`` does it: the loss
    is multiplied by the scale before backward and the gradients divided after; a step whose
    gradients are not finite is skipped and the scale halved; every ``GROWTH_INTERVAL`` good
    steps it doubles. Its state lives in the :class:`TrainResult` (so checkpoints keep it).
    Disabled (scale 1, nothing checked) for float32 and bfloat16, whose range needs none."""

    INIT, GROWTH_INTERVAL = 2.0 ** 16, 2000

    def __init__(self, enabled: bool, res: TrainResult):
        self.enabled, self.res = enabled, res
        if enabled and res.loss_scale == 1.0 and res.steps == 0:
            res.loss_scale = self.INIT

    @property
    def scale(self) -> float:
        return self.res.loss_scale if self.enabled else 1.0

    def unscale(self, masters: Dict[str, torch.Tensor]) -> bool:
        """Divide the gradients by the scale; False (and the scale halved) on overflow."""
        if not self.enabled:
            return True
        grads = [m.grad for m in masters.values() if m.grad is not None]
        for g in grads:
            g.div_(self.res.loss_scale)
        if all(bool(torch.isfinite(g).all()) for g in grads):
            self.res.good_steps += 1
            if self.res.good_steps >= self.GROWTH_INTERVAL:
                self.res.loss_scale *= 2.0
                self.res.good_steps = 0
            return True
        self.res.overflows += 1
        self.res.loss_scale /= 2.0
        self.res.good_steps = 0
        logger.debug("float16 gradients overflowed: step skipped, loss scale now %g",
                     self.res.loss_scale)
        return False


def _take_step(step: StepLoss, opt, masters, res: TrainResult, scaler: LossScale,
               after_step: AfterStep) -> None:
    """Backward (scaled for float16), then the optimizer step unless gradients overflowed."""
    step.backward(scaler.scale)
    if not scaler.unscale(masters):
        return
    opt.step()
    res.steps += 1
    if after_step is not None:
        after_step(res.steps)


def _check(loss: float, where: str, hp) -> None:
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"loss became {loss} at {where}; nothing was changed. Lower lr (now {hp.lr}) "
            f"or use a larger mini_batch_size (now {hp.mini_batch_size}); in float16/bfloat16 "
            f"try dtype: float32")


def _or_auto(value) -> str:
    return "null: automatic" if value is None else str(value)


@contextmanager
def explain_oom(hp, n_edits: int):
    """Re-raise out-of-memory with what to change; the type (torch.OutOfMemoryError or
    MemoryError) stays, so callers that catch it still do."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError) as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        dtype = hp.dtype or "the model's own"
        raise type(exc)(
            f"out of memory while training {n_edits} edits ({first}); nothing was changed. To "
            f"fit: a smaller mini_batch_size (now {hp.mini_batch_size}), a lower max_length "
            f"(now {hp.max_length}), dtype: bfloat16 (now {dtype}), or a "
            f"lower prefix_cache_max_gb (now {_or_auto(hp.prefix_cache_max_gb)}) so the frozen-prefix "
            f"cache is not kept on the device") from exc


def _adam(masters: Dict[str, torch.Tensor], hp) -> torch.optim.Optimizer:
    return torch.optim.Adam(list(masters.values()), lr=hp.lr, weight_decay=hp.weight_decay)


def epoch_mean(losses: Sequence[float], n: int, mbs: int) -> float:
    """The mean loss over the examples of an epoch from its mini-batch losses (each the mean
    over its examples; mini-batch b holds ``min(mbs, n - b * mbs)`` of the ``n`` examples)."""
    sizes = [min(mbs, n - b * mbs) for b in range(len(losses))]
    return sum(loss * size for loss, size in zip(losses, sizes)) / sum(sizes)


def breadth_first(loss_fn: LossFn, n: int, masters: Dict[str, torch.Tensor], hp,
                  progress: bool = True, ckpt: Optional[Checkpointer] = None,
                  after_step: AfterStep = None, loss_scaling: bool = False) -> TrainResult:
    """Epochs over all edits, each a fresh shuffle walked in mini-batches."""
    gen = torch.Generator().manual_seed(hp.seed)
    opt = _adam(masters, hp)
    res = TrainResult()
    at = ckpt.restore(masters, opt, gen, res) if ckpt else Position()
    scaler = LossScale(loss_scaling, res)
    mbs = hp.mini_batch_size
    bar = tqdm(range(at.epoch, hp.num_epochs), desc="LocFT-BF epochs", unit="epoch",
               disable=not progress)
    for epoch in bar:
        epoch_gen = gen.get_state()  # a resumed run draws this epoch's order again from it
        order = torch.randperm(n, generator=gen).tolist()
        resumed = epoch == at.epoch
        losses = at.losses if resumed else []
        for b in range(at.batch if resumed else 0, -(-n // mbs)):
            idx = order[b * mbs:(b + 1) * mbs]
            opt.zero_grad(set_to_none=True)
            step = loss_fn(idx, len(idx))
            loss = step.value
            _check(loss, f"epoch {epoch + 1}, mini-batch {b + 1}", hp)
            losses.append(loss)
            if loss < hp.loss_threshold:
                res.skipped += 1  # no backward pass for it
            else:
                _take_step(step, opt, masters, res, scaler, after_step)
            if ckpt:
                ckpt.maybe_save(Position(epoch, b + 1, losses, epoch_gen), masters, opt, res)
        res.epochs = epoch + 1
        epoch_loss = epoch_mean(losses, n, mbs)
        res.epoch_losses.append(epoch_loss)
        bar.set_postfix(loss=f"{epoch_loss:.4f}")
        logger.debug("epoch %d: mean loss %.5f", epoch + 1, epoch_loss)
        if epoch_loss < hp.loss_threshold:
            res.stopped_early = epoch + 1 < hp.num_epochs
            break
        if ckpt:
            ckpt.maybe_save(Position(epoch + 1, 0, [], gen.get_state()), masters, opt, res,
                            epoch_end=True)
    opt.zero_grad(set_to_none=True)
    if ckpt:  # the finished state: running the same edit again returns at once
        ckpt.save(Position(hp.num_epochs, 0, [], gen.get_state()), masters, opt, res)
    return res


def depth_first(loss_fn: LossFn, n: int, masters: Dict[str, torch.Tensor], hp,
                progress: bool = True, ckpt: Optional[Checkpointer] = None,
                after_step: AfterStep = None, loss_scaling: bool = False) -> TrainResult:
    """Each edit alone trained to convergence (at most ``num_epochs`` steps), then the next:
    the practice the paper corrects, kept for its ablation. Checkpoints fall between
    requests (``checkpoint_every_epochs`` counts requests)."""
    res = TrainResult()
    at = ckpt.restore(masters, None, None, res) if ckpt else Position()
    scaler = LossScale(loss_scaling, res)
    for i in tqdm(range(at.epoch, n), desc="LocFT-DF requests", unit="edit",
                  disable=not progress):
        opt = _adam(masters, hp)  # a fresh optimizer per edit, as per-edit editors do
        loss = float("nan")
        for step in range(hp.num_epochs):
            opt.zero_grad(set_to_none=True)
            this = loss_fn([i], 1)
            loss = this.value
            _check(loss, f"request {i}, step {step + 1}", hp)
            if loss < hp.loss_threshold:
                break
            _take_step(this, opt, masters, res, scaler, after_step)
        res.epoch_losses.append(loss)
        res.epochs = i + 1
        if ckpt:
            ckpt.maybe_save(Position(i + 1), masters, None, res, epoch_end=True)
    if ckpt:
        ckpt.save(Position(n), masters, None, res)
    return res


PIPELINES = {"breadth_first": breadth_first, "depth_first": depth_first}


def _fast_loss(model, tok, examples, masters, tuning: Tuning, hparams, reg,
               ckpt: Optional[Checkpointer]):
    """``(FastLoss, "")`` at the first cache level (and with packed target logits, when
    they work) that reproduces the model (:func:`~.losses.fast_path_mismatch`), or
    ``(None, why)`` when none does (the caller trains with the reference loss)."""
    total = hparams.num_epochs if hparams.pipeline == "breadth_first" else len(examples)
    finished = bool(ckpt and ckpt.finished(total))  # a finished run trains nothing

    def mismatch(loss_fn) -> str:
        why = "" if finished else fast_path_mismatch(loss_fn, model, masters) or ""
        if why and loss_fn.pack:
            loss_fn.pack = False
            unpacked = fast_path_mismatch(loss_fn, model, masters) or ""
            if not unpacked:
                logger.info("packed target logits refused: %s; projecting with "
                            "logits_to_keep instead", why)
            return unpacked
        return why

    why = ""
    for level in CACHE_LEVELS:
        loss_fn = FastLoss(model, examples, list(masters), hparams, tuning.subs,
                           pad_id_of(tok), regularizer=reg, cache_level=level)
        why = mismatch(loss_fn)
        if not why:
            return loss_fn, ""
        if loss_fn.level != "module":
            break
        logger.info("module-input cache refused: %s; caching the layer's input instead", why)
    logger.warning("fast path refused: %s; training with implementation: reference (same "
                   "result, slower)", why)
    return None, why


def train_tensors(model, tok, requests: Sequence[dict], examples, tuning: Tuning, hparams,
                  progress: bool = True, ckpt: Optional[Checkpointer] = None,
                  preserve_from: Optional[Dict[str, torch.Tensor]] = None) -> TrainResult:
    """Run the ``hparams.pipeline`` loop on ``tuning.masters`` with the
    ``hparams.implementation`` loss (plus the locality terms the hparams ask for); every other
    parameter is frozen meanwhile and the model is in eval mode, except ``tuning.train_mode``.

    The global RNG is seeded with ``hparams.seed`` for the run (dropout of adapters) and
    restored afterwards; the shuffling order has its own generator. ``preserve_from``: the
    trained tensors' values the locality terms preserve (default: where training starts)."""
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), frozen(model), explain_oom(hparams, len(examples)):
        torch.manual_seed(hparams.seed)
        masters = tuning.masters
        for m in masters.values():
            m.requires_grad_(True)
        for module in tuning.train_mode:
            module.train()
        # key constraints (None unless asked for): every rank projects its own copy
        keys = build_key_constraints(model, tok, hparams, masters, preserve_from,
                                     progress and distributed.rank() == 0)
        # locality terms (None unless asked for); under data parallelism rank 0 alone adds
        # them, since gradients are summed over ranks
        reg = (build_regularizer(model, tok, hparams, masters, preserve_from, requests, keys)
               if distributed.rank() == 0 else None)
        after_step = tuning.after_step
        if keys is not None and keys.removed:
            def after_step(steps, _then=tuning.after_step):  # the update back in the null space
                if _then is not None:
                    _then(steps)
                keys.project(masters)
        loss_fn, fallback = None, ""
        if hparams.implementation == "fast":
            loss_fn, fallback = _fast_loss(model, tok, examples, masters, tuning, hparams,
                                           reg, ckpt)
        if loss_fn is None:
            loss_fn = ReferenceLoss(model, tok, requests, hparams, tuning.subs, reg)
        step_fn = loss_fn
        if tuning.extra_loss is not None:
            def step_fn(indices, denom):  # the data loss plus the extra term (once, on rank 0)
                step = loss_fn(indices, denom)

                def backward(scale: float = 1.0) -> None:
                    step.backward(scale)
                    if distributed.rank() == 0:
                        scaled(tuning.extra_loss(), scale).backward()

                return StepLoss(step.value, backward)

        if distributed.is_active():
            step_fn = distributed.data_parallel(step_fn, masters)
        with loss_fn:
            if reg is not None:  # the unedited distributions, through the loss's own forward
                reg.fill(lambda idx: loss_fn.generic_logits(idx, reg.preserved_subs()))
            # float16 weights (the trained ones or any the gradient flows through) need
            # loss scaling; float32 and bfloat16 do not
            half = any(p.dtype == torch.float16 for p in model.parameters())
            result = PIPELINES[hparams.pipeline](step_fn, len(examples), masters, hparams,
                                                 progress and distributed.rank() == 0, ckpt,
                                                 after_step, loss_scaling=half)
        result.implementation = "reference" if isinstance(loss_fn, ReferenceLoss) else "fast"
        result.fallback = fallback
        if isinstance(loss_fn, FastLoss):
            result.cache, result.packed_logits = loss_fn.level, loss_fn.pack
    logger.info("LocFT %s (%s): %d edits, %d epochs, %d steps, %.1f s", hparams.pipeline,
                hparams.tuning, len(examples), result.epochs, result.steps,
                time.perf_counter() - t0)
    return result
