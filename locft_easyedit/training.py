"""The training loops: breadth-first (LocFT-BF) and depth-first (the paper's ablation).

``loss_fn(indices, denom)`` runs forward and backward for the examples at ``indices`` and
returns their summed per-example loss divided by ``denom`` (so a mini-batch's gradient is the
mean over its examples). The loops below only decide which examples go together and when the
optimizer steps. ``after_step(steps)``, when given, runs after every optimizer step (gradients
still in place) with the number of steps taken so far: AdaLoRA's budget schedule hooks in there.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

LossFn = Callable[[Sequence[int], int], float]
AfterStep = Optional[Callable[[int], None]]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the model is left as it was."""


@dataclass
class TrainResult:
    epochs: int = 0                    # epochs run (depth-first: requests edited)
    steps: int = 0                     # optimizer steps taken
    skipped: int = 0                   # mini-batches below the threshold (no step)
    epoch_losses: List[float] = field(default_factory=list)
    stopped_early: bool = False


def _check(loss: float, where: str, hp) -> None:
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"loss became {loss} at {where}; nothing was changed. Lower lr (now {hp.lr}) "
            f"or use a larger mini_batch_size (now {hp.mini_batch_size}); in float16/bfloat16 "
            f"try dtype: float32")


def _adam(masters: Dict[str, torch.Tensor], hp) -> torch.optim.Optimizer:
    return torch.optim.Adam(list(masters.values()), lr=hp.lr, weight_decay=hp.weight_decay)


def breadth_first(loss_fn: LossFn, n: int, masters: Dict[str, torch.Tensor], hp,
                  progress: bool = True, after_step: AfterStep = None) -> TrainResult:
    """Epochs over all edits, each a fresh shuffle walked in mini-batches."""
    gen = torch.Generator().manual_seed(hp.seed)
    opt = _adam(masters, hp)
    res = TrainResult()
    bar = tqdm(range(hp.num_epochs), desc="LocFT-BF epochs", unit="epoch", disable=not progress)
    for epoch in bar:
        order = torch.randperm(n, generator=gen).tolist()
        losses = []
        for start in range(0, n, hp.mini_batch_size):
            idx = order[start:start + hp.mini_batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(idx, len(idx))
            _check(loss, f"epoch {epoch + 1}, mini-batch {start // hp.mini_batch_size + 1}", hp)
            losses.append(loss)
            if loss < hp.loss_threshold:
                res.skipped += 1
                continue
            opt.step()
            res.steps += 1
            if after_step is not None:
                after_step(res.steps)
        res.epochs = epoch + 1
        epoch_loss = sum(losses) / len(losses)
        res.epoch_losses.append(epoch_loss)
        bar.set_postfix(loss=f"{epoch_loss:.4f}")
        logger.debug("epoch %d: mean loss %.5f", epoch + 1, epoch_loss)
        if epoch_loss < hp.loss_threshold:
            res.stopped_early = epoch + 1 < hp.num_epochs
            break
    opt.zero_grad(set_to_none=True)
    return res


def depth_first(loss_fn: LossFn, n: int, masters: Dict[str, torch.Tensor], hp,
                progress: bool = True, after_step: AfterStep = None) -> TrainResult:
    """Each edit alone trained to convergence (at most ``num_epochs`` steps), then the next:
    the practice the paper corrects, kept for its ablation."""
    res = TrainResult()
    for i in tqdm(range(n), desc="LocFT-DF requests", unit="edit", disable=not progress):
        opt = _adam(masters, hp)  # a fresh optimizer per edit, as per-edit editors do
        loss = float("nan")
        for step in range(hp.num_epochs):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn([i], 1)
            _check(loss, f"request {i}, step {step + 1}", hp)
            if loss < hp.loss_threshold:
                break
            opt.step()
            res.steps += 1
            if after_step is not None:
                after_step(res.steps)
        res.epoch_losses.append(loss)
        res.epochs = i + 1
    return res


PIPELINES = {"breadth_first": breadth_first, "depth_first": depth_first}
