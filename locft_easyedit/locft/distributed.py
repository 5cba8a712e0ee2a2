"""Data-parallel editing over ``torch.distributed`` (launched by ``torchrun`` or ``accelerate``).

Every process holds the whole model and all edits and walks the same shuffled order (same
seed). Each mini-batch is split across processes (rank r takes positions r, r + world, ...);
every process divides its summed per-example loss by the *global* mini-batch size, so summing
gradients and losses over processes (``all_reduce``) gives exactly the single-process
mini-batch gradient, up to float summation order. Every process then takes the same Adam step
and ends with the same deltas.

Launch (CPU, 2 processes)::

    torchrun --nproc_per_node 2 -m locft_easyedit run --requests edits.json --patch-out p.safetensors

Only rank 0 writes files and prints.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Sequence

import torch
import torch.distributed as dist

from .losses import StepLoss

logger = logging.getLogger(__name__)


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def init_from_env() -> bool:
    """Join the process group that ``torchrun`` describes in the environment (no-op alone)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        logger.info("data-parallel editing: rank %d of %d (%s)", dist.get_rank(),
                    dist.get_world_size(), backend)
    return True


def data_parallel(loss_fn: Callable[[Sequence[int], int], StepLoss],
                  masters: Dict[str, torch.Tensor]) -> Callable[[Sequence[int], int], StepLoss]:
    """Wrap a loss function so that each process computes its share of the mini-batch: the
    losses are summed over processes (every process sees the same value, so all take the same
    step-or-skip decision), and a step's gradients are summed over processes too."""
    world, me = dist.get_world_size(), dist.get_rank()

    def shared(indices: Sequence[int], denom: int) -> StepLoss:
        mine = list(indices)[me::world]
        step = loss_fn(mine, denom) if mine else None
        total = torch.tensor([step.value if step else 0.0], dtype=torch.float64)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)

        def backward(scale: float = 1.0) -> None:
            if step is not None:
                step.backward(scale)
            for m in masters.values():
                if m.grad is None:
                    m.grad = torch.zeros_like(m)
                dist.all_reduce(m.grad, op=dist.ReduceOp.SUM)

        return StepLoss(float(total), backward)

    return shared
