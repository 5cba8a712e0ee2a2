"""Resumable checkpoints of a long LocFT run: what is saved, when, and how it comes back.

A checkpoint is one file, ``<checkpoint_dir>/locft-checkpoint.pt`` (``torch.save``), written
atomically (a temporary file in the same folder, fsync, ``os.replace``), so a ``kill -9`` at
any moment leaves either the previous checkpoint or the new one, never half a file. It holds:

* the fp32 master copies of the trained tensors and the Adam state;
* the shuffling generator's state at the start of the current epoch (the epoch's permutation
  is drawn again from it on resume) and the global torch RNG state;
* the position: the epoch and the next mini-batch within it (depth-first: requests done),
  the mini-batch losses of the unfinished epoch and the :class:`TrainResult` so far;
* a fingerprint of the run: the encoded requests, the hparams (less the checkpoint settings,
  ``device`` and ``model_name``) and the trained tensors' base values. A checkpoint whose
  fingerprint differs is refused before any training, saying which part differs.

Resuming restores all of it, so a resumed run takes exactly the steps an uninterrupted one
would: on the same device the final deltas are identical. When training ends the final
state is saved too, so running the same edit again returns at once with the same result.

Data-parallel runs (:mod:`.distributed`): every process holds the same state,
so only rank 0 writes; every rank reads. ``checkpoint_dir`` must therefore be a folder all
ranks see (a shared filesystem); before training the ranks compare what they loaded and a
run whose ranks would start from different positions is refused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from . import distributed
from .errors import CheckpointError

logger = logging.getLogger(__name__)

FILENAME = "locft-checkpoint.pt"
FORMAT = 1
# hparams that do not change the trajectory: a run may resume with other values of these
NOT_FINGERPRINTED = ("checkpoint_dir", "checkpoint_every_epochs", "checkpoint_every_minutes",
                     "resume", "device", "model_name")


@dataclass
class Position:
    """Where a run stands: ``epoch`` (depth-first: requests done) and the next ``batch``."""

    epoch: int = 0
    batch: int = 0
    losses: List[float] = field(default_factory=list)   # mini-batch losses of this epoch
    gen_state: Optional[torch.Tensor] = None             # shuffling generator at epoch start


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def fingerprint(hp, examples: Sequence, params: Dict[str, torch.Tensor]) -> Dict[str, str]:
    """Hashes of what makes a run: its requests (as encoded), hparams and base tensors."""
    reqs = json.dumps([[list(e.ids), e.prompt_len] for e in examples]).encode()
    settings = {k: v for k, v in hp.to_dict().items() if k not in NOT_FINGERPRINTED}
    tensors = []
    for name, p in params.items():
        flat = p.detach().reshape(-1).contiguous().cpu()
        tensors += [f"{name} {tuple(p.shape)} {p.dtype}".encode(),
                    flat.view(torch.uint8).numpy().tobytes()]
    return {"requests": _digest(reqs),
            "hparams": _digest(json.dumps(settings, sort_keys=True, default=str).encode()),
            "base tensors": _digest(*tensors)}


class Checkpointer:
    """Saves a run's state when due and restores it on resume (see the module docstring)."""

    def __init__(self, hp, examples: Sequence, params: Dict[str, torch.Tensor]):
        self.dir = Path(hp.checkpoint_dir).expanduser()
        self.path = self.dir / FILENAME
        self.every_epochs = hp.checkpoint_every_epochs
        self.every_s = None if hp.checkpoint_every_minutes is None \
            else 60.0 * hp.checkpoint_every_minutes
        self.fingerprint = fingerprint(hp, examples, params)
        self.writer = distributed.rank() == 0  # data parallel: identical states, one writer
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"key 'checkpoint_dir': cannot create {str(self.dir)!r}: "
                                  f"{exc}") from None
        if not os.access(self.dir, os.W_OK):
            raise CheckpointError(f"key 'checkpoint_dir': {str(self.dir)!r} is not writable")
        for stale in self.dir.glob(f".{FILENAME}.*.tmp") if self.writer else ():
            stale.unlink(missing_ok=True)  # left by a killed save
        self.state = self._load() if hp.resume and self.path.exists() else None
        if self.path.exists() and not hp.resume:
            logger.warning("resume is false: checkpoint %s will be overwritten", self.path)
        self._last = time.monotonic()

    # --- reading ---------------------------------------------------------------------------
    def _load(self) -> dict:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
            raise CheckpointError(f"checkpoint {self.path} is unreadable ({type(exc).__name__}"
                                  "); delete it or set resume: false to start over") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {self.path} is not a LocFT checkpoint of format "
                                  f"{FORMAT}; delete it or set resume: false to start over")
        theirs = state.get("fingerprint", {})
        differ = [k for k in self.fingerprint if theirs.get(k) != self.fingerprint[k]]
        if differ:
            raise CheckpointError(
                f"checkpoint {self.path} belongs to a different run: its {' and '.join(differ)} "
                f"differ from this run's. Delete it, choose another checkpoint_dir, or set "
                f"resume: false to start over and overwrite it")
        return state

    def restore(self, masters: Dict[str, torch.Tensor], opt: Optional[torch.optim.Optimizer],
                gen: Optional[torch.Generator], res) -> Position:
        """Put the loaded state into the run's objects; the position to continue from."""
        if self.state is None:
            return Position()
        s = self.state
        with torch.no_grad():
            for name, m in masters.items():
                m.copy_(s["masters"][name])
        if opt is not None and s.get("optimizer") is not None:
            opt.load_state_dict(s["optimizer"])
        pos = Position(s["epoch"], s["batch"], list(s["losses"]), s.get("generator"))
        if gen is not None and pos.gen_state is not None:
            gen.set_state(pos.gen_state)
        torch.set_rng_state(s["torch_rng"])
        for key, value in s["result"].items():
            setattr(res, key, value)
        logger.info("resuming from checkpoint %s: %d epochs (depth-first: requests) done, "
                    "%d mini-batches into the next", self.path, pos.epoch, pos.batch)
        return pos

    def finished(self, total: int) -> bool:
        """Whether the loaded checkpoint is a finished run (``total``: epochs, depth-first:
        requests), which the loops return at once."""
        return self.state is not None and self.state["epoch"] >= total

    # --- writing ---------------------------------------------------------------------------
    def due(self, epoch_end: bool, epochs_done: int) -> bool:
        by_epoch = epoch_end and self.every_epochs > 0 and epochs_done % self.every_epochs == 0
        by_time = self.every_s is not None and time.monotonic() - self._last >= self.every_s
        return by_epoch or by_time

    def save(self, pos: Position, masters: Dict[str, torch.Tensor],
             opt: Optional[torch.optim.Optimizer], res) -> None:
        if not self.writer:
            return
        state = {"format": FORMAT, "fingerprint": self.fingerprint,
                 "masters": {n: m.detach().cpu() for n, m in masters.items()},
                 "optimizer": None if opt is None else opt.state_dict(),
                 "generator": pos.gen_state, "torch_rng": torch.get_rng_state(),
                 "epoch": pos.epoch, "batch": pos.batch, "losses": list(pos.losses),
                 "result": dataclasses.asdict(res)}
        tmp = self.dir / f".{FILENAME}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                torch.save(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self._last = time.monotonic()
        logger.debug("checkpoint saved: epoch %d, mini-batch %d", pos.epoch + 1, pos.batch + 1)

    def maybe_save(self, pos: Position, masters, opt, res, epoch_end: bool = False) -> None:
        if self.due(epoch_end, pos.epoch):
            self.save(pos, masters, opt, res)


def open_checkpoint(hp, examples: Sequence, params: Dict[str, torch.Tensor]
                    ) -> Optional[Checkpointer]:
    """The run's :class:`Checkpointer` (its checkpoint loaded and checked), or None when
    ``checkpoint_dir`` is null. Call before any training: every refusal happens here."""
    if getattr(hp, "checkpoint_dir", None) is None:
        return None
    ckpt = Checkpointer(hp, examples, params)
    if distributed.is_active():
        _ranks_agree(ckpt)
    return ckpt


def _ranks_agree(ckpt: Checkpointer) -> None:
    """Data parallel: every rank must resume from the same place (or all start afresh)."""
    import torch.distributed as dist

    s = ckpt.state
    mine = torch.tensor([-1, -1] if s is None else [s["epoch"], s["batch"]], dtype=torch.int64,
                        device=distributed.group_device())
    low, high = mine.clone(), mine.clone()
    distributed.all_reduce(low, op=dist.ReduceOp.MIN)
    distributed.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        found = "no checkpoint" if s is None else f"epoch {s['epoch']}, mini-batch {s['batch']}"
        raise CheckpointError(
            f"data-parallel ranks disagree on checkpoint {ckpt.path}: rank "
            f"{distributed.rank()} found {found}, another rank found something else. "
            "checkpoint_dir must be one folder that every rank sees (a shared filesystem); "
            "or delete the checkpoint, or set resume: false, to start over")
