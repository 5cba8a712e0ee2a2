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


def local_device() -> torch.device:
    """This process's compute device under ``torchrun``: ``cuda:LOCAL_RANK`` when CUDA is there
    (each rank its own GPU), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_from_env() -> bool:
    """Join the process group that ``torchrun`` describes in the environment (no-op alone):
    NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``, set before the group forms), gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_device())
        dist.init_process_group(backend=backend)
        logger.info("data-parallel editing: rank %d of %d (%s, %s)", dist.get_rank(),
                    dist.get_world_size(), backend, local_device())
    return True


def group_device() -> torch.device:
    """The device collectives of the current group take tensors on: the current CUDA device
    for an NCCL-only group, the CPU for gloo (or a ``cpu:gloo,cuda:nccl`` group)."""
    backend = str(dist.get_backend())
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(tensor: torch.Tensor, op=None) -> torch.Tensor:
    """``dist.all_reduce`` (sum by default) of ``tensor`` in place, on the group's device:
    a tensor elsewhere (a CPU scalar under NCCL, a gradient on another device) is reduced
    through a copy there and written back."""
    op = dist.ReduceOp.SUM if op is None else op
    device = group_device()
    if tensor.device == device:
        dist.all_reduce(tensor, op=op)
        return tensor
    moved = tensor.to(device)
    dist.all_reduce(moved, op=op)
    tensor.copy_(moved)
    return tensor


def data_parallel(loss_fn: Callable[[Sequence[int], int], StepLoss],
                  masters: Dict[str, torch.Tensor]) -> Callable[[Sequence[int], int], StepLoss]:
    """Wrap a loss function so that each process computes its share of the mini-batch: the
    losses are summed over processes (every process sees the same value, so all take the same
    step-or-skip decision), and a step's gradients are summed over processes too."""
    world, me = dist.get_world_size(), dist.get_rank()

    def shared(indices: Sequence[int], denom: int) -> StepLoss:
        mine = list(indices)[me::world]
        step = loss_fn(mine, denom) if mine else None
        total = all_reduce(torch.tensor([step.value if step else 0.0], dtype=torch.float64,
                                        device=group_device()))

        def backward(scale: float = 1.0) -> None:
            if step is not None:
                step.backward(scale)
            for m in masters.values():
                if m.grad is None:
                    m.grad = torch.zeros_like(m)
                all_reduce(m.grad)

        return StepLoss(float(total), backward)

    return shared
