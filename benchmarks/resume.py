"""Resumable chunked edits: a long benchmark row (MEMIT or AlphaEdit on 1,000 edits take about
8 CPU-hours here) saves its state after every chunk and goes on from there in the next run.

The state of a row, in its own folder: the weights the method rewrites (the modules
``rewrite_module_tmp`` names for ``layers``: a few MB), the module-level globals of the
method's EasyEdit module that carry over between calls (AlphaEdit's running key covariance
``cache_c``; the context templates ROME / MEMIT / AlphaEdit sample once, on their first call,
``CONTEXT_TEMPLATES_CACHE``: a resumed row goes on with the same ones), how many chunks are
done, the editing seconds spent so far and those per chunk since the previous save, the peak
resident memory of its runs up to the save (a row made over several runs reports the peak of
them all, not of its last run's), and the
unedited model's scores that every run takes before editing (:meth:`ChunkState.save_unedited`:
a resumed WISE CounterFact row spent 14 of its first 17 minutes measuring them again). WISE keeps
its edits in a side memory beside the weights: its state is WISE's own checkpoint
(``WISE.save``, loaded back through its ``load_path``), its context templates and numpy's
random state (it draws its weight masks with numpy). The tensors of a save are written under
names that carry its chunk count, then ``state.json`` (atomically: a temporary file, then a
rename) points at them, then the older files go: a run killed while saving leaves the previous
state whole.

LocFT rows (:func:`locft_resumable`) use LocFT's own checkpoints (``checkpoint_dir``: the
row's folder), written every ``LOCFT_CHECKPOINT`` minutes of training; they do not pause, but a
row killed at any point goes on from its last checkpoint when the same command runs again.
"""
from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

STATE = "state.json"
WEIGHTS, CACHE_C = "weights-{}.pt", "cache_c-{}.pt"  # .format(chunks done)
WISE_CKPT = "wise-{}.pt"  # WISE's own checkpoint (WISE.save): side memories, masks, history
UNEDITED = "unedited.pt"  # the unedited model's scores (evaluate.Unedited) and what they fit
TEMPLATES = "CONTEXT_TEMPLATES_CACHE"
LOCFT_CHECKPOINT = {"checkpoint_every_epochs": 0, "checkpoint_every_minutes": 5.0}


class Paused(Exception):
    """The row's time budget ran out; its state is saved. Run the same command to go on."""


def rewritten(model, hp) -> dict:
    """``{parameter name: tensor}`` of the weights an EasyEdit method rewrites."""
    params = dict(model.named_parameters())
    names = [hp.rewrite_module_tmp.format(layer) for layer in hp.layers]
    # ROME / MEMIT / AlphaEdit name the module, FT the weight itself
    names = [n if n.endswith(".weight") else n + ".weight" for n in names]
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"the model has no parameter {missing[0]} (rewrite_module_tmp "
                       f"{hp.rewrite_module_tmp!r}, layers {hp.layers})")
    return {n: params[n] for n in names}


def peak_mb() -> float:
    """This process's peak resident memory so far (``ru_maxrss``), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _atomic(path: Path, write) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class ChunkState:
    """The saved progress of one row in ``folder`` (made on the first save)."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def load(self, model, hp, method: str, module) -> tuple:
        """Restore a saved state into ``model`` and the globals of ``module`` (the method's
        EasyEdit module); returns ``(chunks done, editing seconds spent, runs so far)``,
        ``(0, 0.0, 0)`` if there is none."""
        import torch

        path = self.folder / STATE
        if not path.is_file():
            return 0, 0.0, 0
        state = json.loads(path.read_text())
        if state.get("method") != method:
            raise ValueError(f"{self.folder} holds a {state.get('method')} state, not {method}")
        done = state["chunks_done"]
        saved = torch.load(self.folder / WEIGHTS.format(done), map_location="cpu")
        with torch.no_grad():
            for name, param in rewritten(model, hp).items():
                param.copy_(saved[name].to(param.device, param.dtype))
        if state.get("cache_c"):
            module.cache_c = torch.load(self.folder / CACHE_C.format(done), map_location="cpu")
            module.cache_c_new = True  # do not re-initialise it on the next call
        if state.get("context_templates") is not None:
            setattr(module, TEMPLATES, state["context_templates"])
        return done, state["seconds"], state.get("runs", 1)

    def save(self, model, hp, method: str, module, chunks_done: int, seconds: float,
             runs: int, chunks_total: int | None = None) -> None:
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        weights = {n: p.detach().cpu().clone() for n, p in rewritten(model, hp).items()}
        torch.save(weights, self.folder / WEIGHTS.format(chunks_done))
        has_cache = getattr(module, "cache_c_new", False)
        if has_cache:
            torch.save(module.cache_c, self.folder / CACHE_C.format(chunks_done))
        self._commit({"method": method, "chunks_done": chunks_done,
                      "chunks_total": chunks_total, "seconds": seconds,
                      "runs": runs, "cache_c": bool(has_cache),
                      "context_templates": getattr(module, TEMPLATES, None)})

    def save_wise(self, editor, utils, edits_done: int, seconds: float, runs: int,
                  edits_total: int | None = None) -> None:
        """WISE after ``edits_done`` edits: ``editor`` (the WISE object of the last call)
        writes its checkpoint; ``utils`` is WISE's module holding the context templates."""
        import numpy as np

        self.folder.mkdir(parents=True, exist_ok=True)
        editor.save(str(self.folder / WISE_CKPT.format(edits_done)))
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        self._commit({"method": "wise", "chunks_done": edits_done,
                      "chunks_total": edits_total, "seconds": seconds,
                      "runs": runs, "context_templates": getattr(utils, TEMPLATES, None),
                      "numpy_random": [kind, keys.tolist(), pos, has_gauss, gauss]})

    def load_wise(self, utils) -> tuple:
        """``(edits done, seconds spent, runs so far, checkpoint path or None)``; restores
        the context templates into ``utils`` and numpy's random state. WISE itself loads the
        checkpoint when its hparams' ``load_path`` names it (on the next call's first edit)."""
        import numpy as np

        path = self.folder / STATE
        if not path.is_file():
            return 0, 0.0, 0, None
        state = json.loads(path.read_text())
        if state.get("method") != "wise":
            raise ValueError(f"{self.folder} holds a {state.get('method')} state, not wise")
        kind, keys, pos, has_gauss, gauss = state["numpy_random"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
        setattr(utils, TEMPLATES, state["context_templates"])
        done = state["chunks_done"]
        return done, state["seconds"], state.get("runs", 1), self.folder / WISE_CKPT.format(done)

    def save_unedited(self, unedited, key: dict) -> None:
        """Keep ``unedited`` (``evaluate.Unedited``, measured before the row's first edit)
        with ``key``: what it was measured for (the requests, the scoring arguments...)."""
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        _atomic(self.folder / UNEDITED, lambda p: torch.save(
            {"key": key, "locality": unedited.locality, "before": unedited.before,
             "answers": unedited.answers}, p))

    def load_unedited(self, key: dict):
        """The ``evaluate.Unedited`` kept by :meth:`save_unedited` with this ``key``; None
        without one, or with one measured for another key."""
        import torch

        from locft_easyedit.evaluate import Unedited

        path = self.folder / UNEDITED
        if not path.is_file():
            return None
        kept = torch.load(path, map_location="cpu", weights_only=True)
        if kept["key"] != key:
            return None
        return Unedited(kept["locality"], kept["before"], kept["answers"])

    def _commit(self, state: dict) -> None:
        """``state.json`` now points at the files of this save; the older files go. It also
        records ``last_step_seconds``: the editing seconds per call (WISE: per edit) since
        the previous save, in this run or an earlier one, so that a planner can time the next
        call by the latest ones (a long row's calls can take far longer than its expected pace),
        and ``peak_rss_mb``: the highest peak memory of this run and the earlier ones so far."""
        before = self.progress()
        same = before is not None and before["method"] == state["method"]
        state["peak_rss_mb"] = max(peak_mb(), (same and before["peak_rss_mb"]) or 0.0)
        if same and state["chunks_done"] > before["done"] and state["seconds"] >= before["seconds"]:
            state["last_step_seconds"] = ((state["seconds"] - before["seconds"])
                                          / (state["chunks_done"] - before["done"]))
        _atomic(self.folder / STATE, lambda p: p.write_text(json.dumps(state)))
        self._drop_files(keep=state["chunks_done"])

    def _drop_files(self, keep=None) -> None:
        if not self.folder.is_dir():
            return
        mine = ({WEIGHTS.format(keep), CACHE_C.format(keep), WISE_CKPT.format(keep), UNEDITED}
                if keep is not None else set())
        for path in self.folder.iterdir():
            if path.name.endswith(".pt") and path.name not in mine:
                path.unlink()

    def progress(self) -> dict | None:
        """``{"method", "done", "total", "seconds", "last_step_seconds", "peak_rss_mb"}`` of
        the saved state: calls (WISE: edits) done, of how many (None for a state saved before
        that was recorded), editing seconds so far, seconds per call of the latest ones (None
        for the first save, or one saved before that was recorded), the runs' peak memory in MB
        (None for a state saved before that was recorded); None without one."""
        path = self.folder / STATE
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        return {"method": state["method"], "done": state["chunks_done"],
                "total": state.get("chunks_total"), "seconds": state["seconds"],
                "last_step_seconds": state.get("last_step_seconds"),
                "peak_rss_mb": state.get("peak_rss_mb")}

    def clear(self) -> None:
        """Remove the state (the row is finished)."""
        self._drop_files()
        (self.folder / STATE).unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()


def part_left(progress) -> float:
    """The share of a paused row's calls still to make, from its
    :meth:`ChunkState.progress`: 1 with none, or with one whose total was not recorded."""
    return 1 - progress["done"] / progress["total"] if progress and progress["total"] else 1.0


def seconds_left(progress):
    """Editing seconds a paused row still needs at its own pace so far (its seconds per call
    times the calls left), for a row nothing else estimates (no finished row of its method);
    None without a call done or a recorded total."""
    if not progress or not progress["done"] or not progress["total"]:
        return None
    return progress["seconds"] / progress["done"] * (progress["total"] - progress["done"])


def locft_resumable(hp, folder, method: str) -> tuple:
    """A LocFT row's settings with its checkpoints in ``folder`` (``LOCFT_CHECKPOINT``; LocFT
    refuses a checkpoint of other settings or edits), and the row fields of a resumed run:
    ``(hparams, {"seconds_in_earlier_runs": s, "runs": k} or {})``. The earlier runs' editing
    counts up to their last checkpoint (its file's time minus when that run started editing):
    the training after it is done again by this run, which starts its clock now."""
    from locft_easyedit import LocFTHyperParams
    from locft_easyedit.locft.checkpoint import FILENAME

    folder = Path(folder)
    path, ckpt = folder / STATE, folder / FILENAME
    earlier, runs = 0.0, 0
    if path.is_file():
        prev = json.loads(path.read_text())
        if prev.get("method") != method:
            raise ValueError(f"{folder} holds a {prev.get('method')} state, not {method}")
        earlier, runs = prev["seconds"], prev["runs"]
        if ckpt.is_file() and ckpt.stat().st_mtime > prev["started"]:
            earlier += ckpt.stat().st_mtime - prev["started"]
    folder.mkdir(parents=True, exist_ok=True)
    state = {"method": method, "started": time.time(), "seconds": earlier, "runs": runs + 1}
    _atomic(path, lambda p: p.write_text(json.dumps(state)))
    hp = LocFTHyperParams.from_dict({**hp.to_dict(), **LOCFT_CHECKPOINT,
                                     "checkpoint_dir": str(folder), "resume": True},
                                    source="benchmarks/resume.py")
    return hp, ({"seconds_in_earlier_runs": earlier, "runs": runs + 1} if runs else {})
