"""What a tuning supplies to the one editing path (:func:`.locft_main.edit`).

Every tuning shares validate -> select -> encode -> checkpoint -> train; it only decides which
leaf tensors train and how the model sees them:

* ``full`` (:func:`full_tuning`, here): fp32 master copies of the selected parameters,
  substituted into the model with ``functional_call``; the model's own weights are untouched
  until the caller writes :attr:`Tuning.output` back.
* ``lora`` / ``adalora`` (:func:`.adapters.adapter_tuning`): peft adapters on the selected
  ``nn.Linear`` modules; the adapters' own parameters train in place.

A tuning is a context manager: it yields a :class:`Tuning`, and undoes everything it set up
when the block raises (so a failed run leaves the model as it was).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import torch
from torch import nn


@dataclass
class Tuning:
    """The tensors and hooks of one run.

    ``masters``: the leaf tensors the optimizer trains, named like the model's parameters.
    ``subs()``: the tensors substituted into the model for each forward (``{}`` when the
    trained tensors already live in the model). ``after_step(steps)``: runs after every
    optimizer step. ``extra_loss()``: a scalar added to each mini-batch's gradient but not to
    the loss the thresholds see. ``train_mode``: modules kept in train mode (adapter dropout).
    ``output()``: the run's result once training has finished."""

    masters: Dict[str, torch.Tensor]
    subs: Callable[[], Dict[str, torch.Tensor]]
    output: Callable[[], Any]
    after_step: Optional[Callable[[int], None]] = None
    extra_loss: Optional[Callable[[], torch.Tensor]] = None
    train_mode: Sequence[nn.Module] = field(default_factory=tuple)


@contextmanager
def full_tuning(model, params: Dict[str, torch.nn.Parameter], hparams,
                n_edits: int) -> Iterator[Tuning]:
    """Train fp32 master copies of ``params``; ``output()`` gives ``{name: new tensor}`` in
    each parameter's own dtype. The model is never written here."""
    masters = {n: p.detach().to(torch.float32).clone().requires_grad_(True)
               for n, p in params.items()}
    dtypes = {n: p.dtype for n, p in params.items()}

    def subs() -> Dict[str, torch.Tensor]:
        return {n: m.to(dtypes[n]) for n, m in masters.items()}

    def output() -> Dict[str, torch.Tensor]:
        return {n: m.detach().to(dtypes[n]) for n, m in masters.items()}

    yield Tuning(masters, subs, output)
