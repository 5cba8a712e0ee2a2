"""Edits over time: a ledger of editing rounds, each trained with replay of the earlier ones,
any of them revertible, the current state exportable.

A ledger is a folder over one base model::

    DIR/ledger.json                  the index: base fingerprint, model, hparams, replay
                                     settings, one entry per round (the commit point)
    DIR/rounds/0001-NAME.safetensors the round's edit patch (locft_easyedit.patch format): the
                                     trained tensors before (``base::``) and after (``edited::``)
    DIR/rounds/0001-NAME.json        the round's record: requests, hparams, versions, time,
                                     seconds, replay, scores (own, earlier, all, per edit)
    DIR/.lock                        present while a writer works (pid, host, time)

* **State.** The current trained tensors are the last round's ``edited::`` tensors (the base's
  when there are none); every round's ``base::`` tensors are the previous round's ``edited::``
  ones. Only the tensors ``layers`` x ``rewrite_module_tmp`` select ever change.
* **Base check.** ``base_fingerprint`` is :func:`locft_easyedit.patch.fingerprint` of the base
  model's trained tensors (names, shapes, dtype, bytes). A model that matches neither it nor
  the current state is refused (:class:`BaseModelMismatch`) before any work.
* **Writes.** Every file is written to a temporary file in the same folder, fsynced, then
  renamed over its name (``os.replace``) and the folder fsynced. A round writes its patch, then
  its record, then ``ledger.json``; a crash before the last rename leaves the previous
  ``ledger.json`` (files it does not name are ignored and overwritten by the next round).
* **Writers.** ``add``, ``revert`` and ``init`` hold ``DIR/.lock`` (``O_CREAT | O_EXCL``, with
  the pid); a second writer is refused (:class:`LedgerLocked`, naming the file, and saying so
  when the pid is no longer running on this host). A :class:`Ledger` object whose
  ``ledger.json`` was changed by another writer since it was opened is refused too.
* **Live edits.** The requests of every ``add`` round not reverted since; a later round's
  request with the same prompt supersedes an earlier one (it stays in the history).

**Replay** (:func:`replay_train`, shared with EasyEdit's ``lifelong_edit(..., replay=)``): a
round trains its new requests together with earlier live ones, starting from the current state.

* ``all``: one breadth-first run over every earlier live edit plus the new ones.
* ``sample``: while the earlier edits are at most ``ceil(ratio * new)``, the same as ``all``.
  Beyond that the ``num_epochs`` budget is split into sub-runs of ``resample_every`` epochs;
  each sub-run trains the new edits plus a fresh sample of ``ceil(ratio * new)`` earlier ones
  (first those that failed at the last scoring, then a rotating seeded permutation, so every
  earlier edit comes round), starting where the previous sub-run ended, until an epoch's mean
  loss is below ``loss_threshold``. Then every live edit is scored; up to ``repairs`` more
  sub-runs train the new edits with the earlier ones that now fail (token accuracy < 1) first.
  The training per round is bounded by the round's size, not the history's (scoring is a
  forward pass over all live edits). Each sub-run is its own :func:`execute_locft` call (a
  fresh Adam state; per-epoch sampling inside one run would need a sampling hook in
  ``locft/training.py``).
* ``none``: the new edits alone (chunked editing; earlier edits may be overwritten).

**Revert** of a round retrains from the base over all remaining live edits (one breadth-first
run, as ``locft-edit run`` over those edits would): the reverted edits were never trained into
the result, every other live edit is, and the outcome does not depend on the order of history.
It is recorded as a round of its own (kind ``revert``); nothing is deleted.

Scores are teacher-forced token accuracy on the edit prompts (EasyEdit's ``token_em``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import re
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from .evaluate import token_accuracy
from .locft import (LocFTHyperParams, LocFTInputError, execute_locft, select_parameters,
                    validate_requests, weights_applied, write_weights)
from .patch import _versions, fingerprint, load_patch, save_patch

logger = logging.getLogger(__name__)

FORMAT = "locft-ledger/1"
RECORD_FORMAT = "locft-ledger-round/1"
LEDGER_FILE, LOCK_FILE, ROUNDS_DIR = "ledger.json", ".lock", "rounds"
REPLAY_MODES = ("all", "sample", "none")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Tensors = Dict[str, torch.Tensor]


class LedgerError(LocFTInputError):
    """A ledger cannot be used as asked (not a ledger, unknown round, bad name, changed by
    another writer); the message names the folder and what to do."""


class LedgerLocked(LedgerError):
    """Another writer holds the ledger's lock file (named in the message)."""


class BaseModelMismatch(LedgerError):
    """The model's trained tensors match neither the ledger's base nor its current state."""


# --- files: atomic writes, the lock ---------------------------------------------------------
def _fsync(path: Path) -> None:
    """Flush a file's or a folder's entries to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _share(path: Path) -> None:
    """The permissions of a plain new file (temporary files are created 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    """Write ``text`` to ``path`` all or nothing: a temporary file in the same folder, fsync,
    ``os.replace``, fsync of the folder. On any failure the temporary file is removed and
    ``path`` is as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    try:
        _share(Path(tmp))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LedgerError(f"{path.parent}: no {path.name}: not a ledger (create one with "
                          "`locft-edit ledger init`)" if what == "ledger" else
                          f"{path}: the {what} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LedgerError(f"{path}: the {what} is not valid JSON ({exc})") from None


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_message(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
    except (OSError, ValueError):
        info = {}
    pid, host = info.get("pid"), info.get("host")
    who = f"process {pid} on {host}, since {info.get('since')}" if pid else "another writer"
    if isinstance(pid, int) and host == socket.gethostname() and not _pid_running(pid):
        return (f"stale lock {lock}: process {pid} that held it is no longer running; if no "
                f"other writer uses this ledger, delete {lock} and try again")
    return (f"the ledger is locked by {who} (lock file {lock}); wait for it to finish, or "
            f"delete {lock} if that writer is gone")


@contextmanager
def writer_lock(folder: Union[str, Path]) -> Iterator[Path]:
    """Hold ``folder/.lock`` for the block (created with ``O_CREAT | O_EXCL``, holding the pid,
    host and time; removed afterwards). Raises :class:`LedgerLocked` when it exists."""
    lock = Path(folder) / LOCK_FILE
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise LedgerLocked(_lock_message(lock)) from None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%S")}, f)
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _mean(xs: Sequence[float]) -> Optional[float]:
    return sum(xs) / len(xs) if xs else None


# --- replay: the training of one round (shared with easyedit.lifelong_edit) -------------------
@dataclass
class ReplaySettings:
    """How a round replays earlier edits (see the module docstring)."""

    mode: str = "sample"        # "all" | "sample" | "none"
    ratio: float = 1.0          # sample: earlier edits per sub-run = ceil(ratio * new edits)
    resample_every: int = 5     # sample: epochs per sub-run (a fresh sample each)
    repairs: int = 2            # sample: extra sub-runs for earlier edits failing afterwards

    def __post_init__(self) -> None:
        if self.mode not in REPLAY_MODES:
            raise LocFTInputError(f"replay mode {self.mode!r}: choose one of {REPLAY_MODES}")
        if not (self.ratio > 0 and math.isfinite(self.ratio)):
            raise LocFTInputError(f"replay ratio must be > 0, got {self.ratio}")
        if self.resample_every < 1 or self.repairs < 0:
            raise LocFTInputError("replay resample_every must be >= 1 and repairs >= 0")

    @classmethod
    def of(cls, value: Union[None, str, dict, "ReplaySettings"],
           default: Optional["ReplaySettings"] = None) -> "ReplaySettings":
        """From a mode name, a dict of fields, an instance, or None (``default`` or ``all``)."""
        if value is None:
            return default or cls(mode="all")
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return dataclasses.replace(default, mode=value) if default else cls(mode=value)
        return cls(**value)

    def sample_size(self, n_new: int) -> int:
        return max(1, math.ceil(self.ratio * n_new))


@dataclass
class ReplayOutcome:
    """What :func:`replay_train` did. ``tensors``: the trained tensors (the model is left as it
    was); ``scores``: per-edit token accuracy afterwards, ``earlier`` then ``new`` (None when
    not scored)."""

    tensors: Tensors
    seconds: float = 0.0        # training only (every sub-run, repairs included)
    score_seconds: float = 0.0  # scoring of every edit afterwards (and for repairs)
    epochs: int = 0
    steps: int = 0
    subruns: int = 0
    repairs: int = 0            # repair sub-runs that ran
    replayed: int = 0           # distinct earlier edits trained in this round
    scores: Optional[List[float]] = None


class RotatingSample:
    """Draws of ``k`` of ``n`` indices: the given ``first`` ones (in order), then a seeded
    permutation walked in turn and drawn afresh when used up, so every index comes round."""

    def __init__(self, n: int, k: int, seed: int):
        self.n, self.k = n, min(k, n)
        self.rng = random.Random(seed)
        self.queue: List[int] = []

    def draw(self, first: Sequence[int] = ()) -> List[int]:
        chosen = list(dict.fromkeys(first))[:self.k]
        taken = set(chosen)
        while len(chosen) < self.k:
            if not self.queue:
                self.queue = list(range(self.n))
                self.rng.shuffle(self.queue)
            i = self.queue.pop()
            if i not in taken:
                chosen.append(i)
                taken.add(i)
        return chosen


def _run(model, tok, start: Optional[Tensors], requests: List[dict], hp: LocFTHyperParams,
         epochs: int, progress: bool, preserve_from: Optional[Tensors] = None):
    """One :func:`execute_locft` call of at most ``epochs`` epochs starting from ``start``
    (None: the model as it is); ``(tensors, TrainResult)``, the model unchanged.
    ``preserve_from``: the tensors whose behaviour the locality terms keep (the base's)."""
    run_hp = dataclasses.replace(hp, num_epochs=epochs, checkpoint_dir=None)
    with weights_applied(model, start or {}):
        return execute_locft(model, tok, requests, run_hp, progress=progress,
                             preserve_from=preserve_from)


def score_edits(model, tok, requests: Sequence[dict], tensors: Optional[Tensors] = None
                ) -> List[float]:
    """Per-edit teacher-forced token accuracy of ``requests`` with ``tensors`` written into the
    model (None: as it is); the model is left as it was."""
    if not requests:
        return []
    prompts, targets = [r["prompt"] for r in requests], [r["target_new"] for r in requests]
    if tensors is None:
        return token_accuracy(model, tok, prompts, targets)
    with weights_applied(model, tensors):
        return token_accuracy(model, tok, prompts, targets)


def _converged(result, hp: LocFTHyperParams) -> bool:
    return bool(result.epoch_losses) and result.epoch_losses[-1] < hp.loss_threshold


class _SubRuns:
    """Accumulates the sub-runs of one :func:`replay_train` call."""

    def __init__(self, model, tok, new, earlier, hp, start, progress, preserve_from=None):
        self.model, self.tok, self.new, self.earlier = model, tok, new, earlier
        self.hp, self.progress, self.preserve_from = hp, progress, preserve_from
        self.out = ReplayOutcome(tensors=start)
        self.seen: set = set()

    def train(self, picks: Optional[Sequence[int]], epochs: int):
        """Train new + earlier[picks] (all earlier ones when None) from the current tensors."""
        picks = range(len(self.earlier)) if picks is None else picks
        self.seen.update(picks)
        t0 = time.perf_counter()
        tensors, result = _run(self.model, self.tok, self.out.tensors,
                               [self.earlier[i] for i in picks] + list(self.new), self.hp,
                               epochs, self.progress, self.preserve_from)
        o = self.out
        o.seconds += time.perf_counter() - t0
        o.tensors, o.epochs, o.steps = tensors, o.epochs + result.epochs, o.steps + result.steps
        o.subruns += 1
        return result

    def score(self) -> List[float]:
        t0 = time.perf_counter()
        self.out.scores = score_edits(self.model, self.tok, list(self.earlier) + list(self.new),
                                      self.out.tensors)
        self.out.score_seconds += time.perf_counter() - t0
        return self.out.scores


def replay_train(model, tok, new: Sequence[dict], earlier: Sequence[dict], hp: LocFTHyperParams,
                 replay: Union[str, ReplaySettings, None] = "all", start: Optional[Tensors] = None,
                 weak: Sequence[int] = (), score: bool = True,
                 progress: bool = False, preserve_from: Optional[Tensors] = None
                 ) -> ReplayOutcome:
    """Train the ``new`` requests with replay of the ``earlier`` ones (see the module
    docstring), starting from ``start`` (None: the model's own tensors). ``weak``: indices of
    earlier edits to draw first in ``sample`` mode (those that failed at the last scoring).
    ``preserve_from``: the base's trained tensors, whose behaviour the locality terms
    (``preserve_weight``, ``anchor_weight``) keep in every round (None: ``start``'s).
    The model is left as it was; write ``outcome.tensors`` to keep the result. ``score``:
    also score every edit afterwards (``sample`` mode with repairs always does)."""
    settings = ReplaySettings.of(replay)
    if settings.mode == "sample" and hp.pipeline != "breadth_first":
        raise LocFTInputError("replay 'sample' splits breadth-first epochs into sub-runs; with "
                              f"pipeline: {hp.pipeline} use replay 'all' or 'none'")
    if start is None:
        start = {n: p.detach().clone() for n, p in select_parameters(model, hp).items()}
    earlier = [] if settings.mode == "none" else list(earlier)
    runs = _SubRuns(model, tok, list(new), earlier, hp, start, progress, preserve_from)
    k = settings.sample_size(len(new))
    if settings.mode != "sample" or len(earlier) <= k:
        if new or earlier:
            runs.train(None, hp.num_epochs)
    else:
        _sampled(runs, settings, k, weak)
    runs.out.replayed = len(runs.seen)
    if score and runs.out.scores is None:
        runs.score()
    logger.info("replay %s: %d new + %d earlier edits (%d replayed), %d sub-run(s), %d "
                "repair(s), %d epochs, %.1f s", settings.mode, len(new), len(earlier),
                runs.out.replayed, runs.out.subruns, runs.out.repairs, runs.out.epochs,
                runs.out.seconds)
    return runs.out


def _sampled(runs: _SubRuns, settings: ReplaySettings, k: int, weak: Sequence[int]) -> None:
    hp = runs.hp
    sampler = RotatingSample(len(runs.earlier), k, seed=hp.seed + len(runs.earlier))
    first, left = list(weak), hp.num_epochs
    while left > 0:
        result = runs.train(sampler.draw(first), min(settings.resample_every, left))
        first, left = [], left - result.epochs
        if _converged(result, hp):
            break
    for _ in range(settings.repairs):
        scores = runs.score()[:len(runs.earlier)]
        failing = sorted((i for i, s in enumerate(scores) if s < 1.0), key=lambda i: scores[i])
        if not failing:
            return
        runs.train(sampler.draw(failing), settings.resample_every)
        runs.out.repairs += 1
    if settings.repairs:
        runs.score()


def apply_with_replay(model, tok, new: Sequence[dict], earlier: Sequence[dict],
                      hp: LocFTHyperParams, replay: Union[str, ReplaySettings],
                      progress: bool = False, preserve_from: Optional[Tensors] = None
                      ) -> Tuple[object, Tensors]:
    """:func:`replay_train` from the model's current tensors, written into the model;
    ``(model, originals)`` like EasyEdit's ``apply_algo`` (for ``lifelong_edit``)."""
    outcome = replay_train(model, tok, new, earlier, hp, replay, score=False, progress=progress,
                           preserve_from=preserve_from)
    return model, write_weights(model, outcome.tensors)


# --- the ledger ------------------------------------------------------------------------------
def check_new_folder(path: Union[str, Path]) -> None:
    """A new ledger goes into a new or empty folder; LedgerError otherwise."""
    path = Path(path)
    if (path / LEDGER_FILE).exists():
        raise LedgerError(f"{path} is already a ledger ({LEDGER_FILE} exists)")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise LedgerError(f"{path}: exists and is not an empty folder; choose a new folder")


@dataclass
class Round:
    """One entry of ``ledger.json``'s ``rounds`` list (the full record is ``rounds/FILE.json``)."""

    index: int                       # 1-based position in the history
    name: str                        # unique in the ledger
    kind: str                        # "add" or "revert"
    n_edits: int                     # add: its requests; revert: the reverted round's
    created: str                     # local time, ISO 8601
    seconds: float                   # training time of the round
    reliability_own: Optional[float]  # add: its edits right after; revert: the reverted ones after
    reliability_all: Optional[float]  # every live edit right after the round
    n_live: int                      # live edits after the round
    file: str                        # rounds/<file>.safetensors and rounds/<file>.json
    edited_fingerprint: str          # fingerprint of the trained tensors after the round
    reverts: Optional[str] = None    # revert: the round it took back


@dataclass
class LiveEdit:
    """An edit that holds now: its round, its index in that round's requests, the request."""

    round: str
    index: int
    request: dict = field(repr=False)


class Ledger:
    """A ledger folder (see the module docstring). Create with :meth:`init`, open with
    :meth:`open`. With a model attached (``init``, ``open(path, model, tok)``) the model holds
    the ledger's current state, and :meth:`add` / :meth:`revert` change both."""

    def __init__(self, path: Union[str, Path], doc: dict):
        self.path = Path(path)
        self.doc = doc
        self.model = self.tok = None
        self._records: Dict[str, dict] = {}
        self._base: Optional[Tensors] = None

    # --- opening ---------------------------------------------------------------------------
    @classmethod
    def init(cls, path: Union[str, Path], model, tok, hparams: LocFTHyperParams,
             model_name: Optional[str] = None,
             replay: Union[None, str, ReplaySettings] = None) -> "Ledger":
        """A new ledger over ``model`` (its base) in ``path`` (new or empty). ``model_name``
        (default ``hparams.model_name``) is what ``locft-edit ledger`` loads later; ``replay``
        the default for :meth:`add` (``sample``)."""
        if hparams.tuning != "full":
            raise LedgerError(f"a ledger records changed tensors: it needs tuning: full, got "
                              f"{hparams.tuning!r}")
        path = Path(path)
        check_new_folder(path)
        params = select_parameters(model, hparams)
        settings = ReplaySettings.of(replay, ReplaySettings())
        name = model_name or hparams.model_name
        doc = {"format": FORMAT, "created": _now(),
               "model_name": str(Path(name).resolve()) if Path(name).is_dir() else name,
               "model_class": type(model).__name__, "parameters": sorted(params),
               "base_fingerprint": fingerprint(dict(params)), "hparams": hparams.to_dict(),
               "replay": dataclasses.asdict(settings), "versions": _versions(), "rounds": []}
        (path / ROUNDS_DIR).mkdir(parents=True, exist_ok=True)
        with writer_lock(path):
            _write_json(path / LEDGER_FILE, doc)
        ledger = cls(path, doc)
        ledger.attach(model, tok)
        logger.info("ledger %s over %s (%s)", path, doc["model_name"], doc["parameters"])
        return ledger

    @classmethod
    def open(cls, path: Union[str, Path], model=None, tok=None) -> "Ledger":
        """Read the ledger in ``path``; with ``model`` (and ``tok``) also :meth:`attach` it.
        Without a model it serves :attr:`rounds`, :meth:`record`, :meth:`export_patch`."""
        path = Path(path)
        doc = _read_json(path / LEDGER_FILE, "ledger")
        if doc.get("format") != FORMAT:
            raise LedgerError(f"{path / LEDGER_FILE}: not a locft-edit ledger "
                              f"(format {doc.get('format')!r})")
        ledger = cls(path, doc)
        if model is not None:
            ledger.attach(model, tok)
        return ledger

    def attach(self, model, tok) -> None:
        """Check that ``model`` is the ledger's base model (or already holds its current state)
        and write the current state into it. :class:`BaseModelMismatch` otherwise, before any
        change to the model."""
        params = select_parameters(model, self.hparams)
        have = fingerprint(dict(params))
        if sorted(params) != self.doc["parameters"] or have not in (
                self.base_fingerprint, self._head_fingerprint()):
            raise BaseModelMismatch(
                f"ledger {self.path} was made for another base model: the trained tensors "
                f"{', '.join(sorted(params)[:2])} of this {type(model).__name__} have "
                f"fingerprint {have[:12]}, the ledger's base model ({self.model_name}, "
                f"{self.doc['model_class']}) {self.base_fingerprint[:12]}; open it with the "
                "model it was made from, in the same dtype")
        if have == self.base_fingerprint:
            self._base = {n: p.detach().clone() for n, p in params.items()}
        self.model, self.tok = model, tok
        if self.rounds:
            write_weights(model, self.current_tensors())

    # --- reading ---------------------------------------------------------------------------
    @property
    def hparams(self) -> LocFTHyperParams:
        return LocFTHyperParams.from_dict(self.doc["hparams"], source=str(self.path / LEDGER_FILE))

    @property
    def model_name(self) -> str:
        return self.doc["model_name"]

    @property
    def base_fingerprint(self) -> str:
        return self.doc["base_fingerprint"]

    @property
    def replay(self) -> ReplaySettings:
        return ReplaySettings(**self.doc["replay"])

    @property
    def rounds(self) -> List[Round]:
        return [Round(**r) for r in self.doc["rounds"]]

    def _head_fingerprint(self) -> str:
        rounds = self.doc["rounds"]
        return rounds[-1]["edited_fingerprint"] if rounds else self.base_fingerprint

    def find(self, name: str) -> Round:
        for r in self.rounds:
            if r.name == name:
                return r
        names = ", ".join(r.name for r in self.rounds) or "none yet"
        raise LedgerError(f"ledger {self.path} has no round {name!r} (rounds: {names})")

    def record(self, name: str) -> dict:
        """The round's full record (``rounds/<file>.json``)."""
        if name not in self._records:
            r = self.find(name)
            self._records[name] = _read_json(self.path / ROUNDS_DIR / f"{r.file}.json",
                                             f"record of round {name!r}")
        return self._records[name]

    def reverted(self) -> set:
        return {r.reverts for r in self.rounds if r.kind == "revert"}

    def live_edits(self, exclude: Sequence[str] = ()) -> List[LiveEdit]:
        """The edits that hold now, oldest round first: requests of ``add`` rounds not reverted
        (nor in ``exclude``), a later request with the same prompt superseding an earlier one."""
        gone = self.reverted() | set(exclude)
        out, prompts = [], set()
        for r in reversed(self.rounds):
            if r.kind != "add" or r.name in gone:
                continue
            reqs = self.record(r.name)["requests"]
            for i in reversed(range(len(reqs))):
                if reqs[i]["prompt"] not in prompts:
                    prompts.add(reqs[i]["prompt"])
                    out.append(LiveEdit(r.name, i, reqs[i]))
        return out[::-1]

    def live_requests(self) -> List[dict]:
        return [e.request for e in self.live_edits()]

    def _patch(self, r: Round) -> Tuple[dict, Tensors, Tensors]:
        path = self.path / ROUNDS_DIR / f"{r.file}.safetensors"
        meta, base, edited = load_patch(path)
        if meta["edited_fingerprint"] != r.edited_fingerprint:
            raise LedgerError(f"{path} does not hold round {r.name!r}'s tensors (fingerprint "
                              "differs from ledger.json): the ledger folder was altered")
        return meta, base, edited

    def state_after(self, name: str) -> Tensors:
        """The trained tensors right after round ``name``."""
        return self._patch(self.find(name))[2]

    def current_tensors(self) -> Tensors:
        """The trained tensors now (the base's when there are no rounds)."""
        rounds = self.rounds
        return self._patch(rounds[-1])[2] if rounds else self.base_tensors()

    def base_tensors(self) -> Tensors:
        if self._base is None:
            if not self.rounds:
                raise LedgerError(f"ledger {self.path} has no rounds yet: open it with its "
                                  "base model to read the base tensors")
            meta, base, _ = self._patch(self.rounds[0])
            if meta["base_fingerprint"] != self.base_fingerprint:
                raise LedgerError(f"{self.path}: the first round's patch does not start from "
                                  "the ledger's base model: the ledger folder was altered")
            self._base = base
        return self._base

    # --- writing ---------------------------------------------------------------------------
    def _need_model(self, what: str) -> None:
        if self.model is None:
            raise LedgerError(f"ledger {self.path}: {what} needs the model: "
                              "Ledger.open(path, model, tok)")

    def _check_unchanged(self) -> None:
        """Under the lock: ledger.json must be what this object read (no other writer since)."""
        on_disk = _read_json(self.path / LEDGER_FILE, "ledger")
        if on_disk.get("rounds") != self.doc["rounds"]:
            raise LedgerError(f"ledger {self.path} was changed by another writer since it was "
                              f"opened ({len(on_disk['rounds'])} rounds now, "
                              f"{len(self.doc['rounds'])} then); open it again")

    def _new_name(self, name: Optional[str], default: str) -> str:
        name = name or default
        if not NAME_RE.match(name):
            raise LedgerError(f"round name {name!r}: use letters, digits, '.', '_' and '-' "
                              "(at most 64, starting with a letter or digit)")
        if any(r.name == name for r in self.rounds):
            raise LedgerError(f"ledger {self.path} already has a round {name!r}; choose "
                              "another --name")
        return name

    def _commit(self, name: str, kind: str, before: Tensors, after: Tensors, record: dict,
                summary: dict) -> Round:
        """Write the round's patch, its record, then ledger.json (the commit point)."""
        index = len(self.doc["rounds"]) + 1
        stem = f"{index:04d}-{name}"
        patch = self.path / ROUNDS_DIR / f"{stem}.safetensors"
        meta = save_patch(patch, before, after, hparams=self.doc["hparams"],
                          requests=record.get("requests") or [],
                          model_class=self.doc["model_class"])
        _share(patch)
        _fsync(patch)
        record = {"format": RECORD_FORMAT, "index": index, "name": name, "kind": kind,
                  "created": _now(), "hparams": self.doc["hparams"], "versions": _versions(),
                  "patch": f"{ROUNDS_DIR}/{stem}.safetensors",
                  "base_fingerprint": meta["base_fingerprint"],
                  "edited_fingerprint": meta["edited_fingerprint"], **record}
        _write_json(self.path / ROUNDS_DIR / f"{stem}.json", record)
        entry = Round(index=index, name=name, kind=kind, created=record["created"], file=stem,
                      edited_fingerprint=meta["edited_fingerprint"], **summary)
        doc = {**self.doc, "rounds": self.doc["rounds"] + [dataclasses.asdict(entry)]}
        _write_json(self.path / LEDGER_FILE, doc)
        self.doc, self._records[name] = doc, record
        return entry

    def _weak(self, earlier: List[LiveEdit]) -> List[int]:
        """Indices into ``earlier`` of edits below 1 at the last round's scoring, worst first."""
        if not self.rounds:
            return []
        last = {(n, i): s for n, i, s in self.record(self.rounds[-1].name).get("live_scores", [])}
        scored = [(last.get((e.round, e.index), 1.0), j) for j, e in enumerate(earlier)]
        return [j for s, j in sorted(scored) if s < 1.0]

    def add(self, requests: Sequence[dict], name: Optional[str] = None,
            replay: Union[None, str, ReplaySettings] = None, progress: bool = False) -> Round:
        """Train ``requests`` with replay of the live edits (``replay``: a mode or settings;
        default the ledger's), starting from the current state; record the round; leave the
        model holding the new state. Nothing changes on any failure."""
        self._need_model("add")
        requests = validate_requests(list(requests), self.hparams.conflicting_targets)
        settings = ReplaySettings.of(replay, self.replay)
        name = self._new_name(name, f"round-{len(self.rounds) + 1}")
        with writer_lock(self.path):
            self._check_unchanged()
            new_prompts = {r["prompt"] for r in requests}
            earlier = [e for e in self.live_edits() if e.request["prompt"] not in new_prompts]
            before = self.current_tensors()
            own_before = score_edits(self.model, self.tok, requests, before)
            out = replay_train(self.model, self.tok, requests, [e.request for e in earlier],
                               self.hparams, settings, start=before, weak=self._weak(earlier),
                               progress=progress,
                               preserve_from=self.base_tensors() if self.rounds else None)
            live = earlier + [LiveEdit(name, i, r) for i, r in enumerate(requests)]
            scores = out.scores
            record = {"requests": requests, "replay": {
                **dataclasses.asdict(settings), "earlier": len(earlier),
                "replayed": out.replayed, "subruns": out.subruns, "repairs_run": out.repairs},
                "train": {"seconds": out.seconds, "epochs": out.epochs, "steps": out.steps},
                "score_seconds": out.score_seconds,
                "scores": {"own_before": _mean(own_before),
                           "own": _mean(scores[len(earlier):]),
                           "earlier": _mean(scores[:len(earlier)]), "all": _mean(scores),
                           "n_all": len(scores)},
                "live_scores": [[e.round, e.index, s] for e, s in zip(live, scores)]}
            entry = self._commit(name, "add", before, out.tensors, record, {
                "n_edits": len(requests), "seconds": out.seconds,
                "reliability_own": record["scores"]["own"],
                "reliability_all": record["scores"]["all"], "n_live": len(live)})
        write_weights(self.model, out.tensors)
        return entry

    def check_revertible(self, name: str) -> str:
        """The name the revert of round ``name`` will get; LedgerError when it cannot be."""
        if self.find(name).kind != "add":
            raise LedgerError(f"round {name!r} is a revert; add its edits again instead")
        if name in self.reverted():
            raise LedgerError(f"round {name!r} is already reverted")
        return self._new_name(None, f"revert-{name}")

    def revert(self, name: str, progress: bool = False) -> Round:
        """Take round ``name`` back: retrain from the base over every other live edit (one
        breadth-first run), record it as a round ``revert-NAME``; the model holds the result."""
        self._need_model("revert")
        new_name = self.check_revertible(name)
        with writer_lock(self.path):
            self._check_unchanged()
            before, base = self.current_tensors(), self.base_tensors()
            live = self.live_edits(exclude=[name])
            out = replay_train(self.model, self.tok, [e.request for e in live], [], self.hparams,
                               "all", start=base, progress=progress)
            taken_back = self.record(name)["requests"]
            back = score_edits(self.model, self.tok, taken_back, out.tensors)
            added = self.record(name)["scores"]
            record = {"requests": [], "reverts": name, "retrained": len(live),
                      "rounds_retrained": sorted({e.round for e in live}),
                      "train": {"seconds": out.seconds, "epochs": out.epochs,
                                "steps": out.steps},
                      "scores": {"reverted": _mean(back), "reverted_before": added["own_before"],
                                 "reverted_at_add": added["own"], "all": _mean(out.scores),
                                 "n_all": len(live)},
                      "live_scores": [[e.round, e.index, s] for e, s in zip(live, out.scores)]}
            entry = self._commit(new_name, "revert", before, out.tensors, record, {
                "n_edits": len(taken_back), "seconds": out.seconds, "reverts": name,
                "reliability_own": record["scores"]["reverted"],
                "reliability_all": record["scores"]["all"], "n_live": len(live)})
        write_weights(self.model, out.tensors)
        return entry

    def export_patch(self, path: Union[str, Path]) -> dict:
        """One patch from the base to the current state (``locft-edit apply`` reads it);
        returns its metadata. Needs no model."""
        base, current = self.base_tensors(), self.current_tensors()
        if fingerprint(base) == fingerprint(current):
            raise LedgerError(f"ledger {self.path} holds no edit now (no rounds, or every "
                              "round reverted): no patch to write")
        return save_patch(path, base, current, hparams=self.doc["hparams"],
                          requests=self.live_requests(), model_class=self.doc["model_class"])
