"""Edit patches: the tensors an edit changed, in one safetensors file, applicable and revertible.

A patch holds, for every changed parameter ``name``, the edited tensor (``edited::name``) and
the base tensor (``base::name``), so that applying and reverting are both exact copies (bit for
bit, no float arithmetic). Its metadata records the hparams, a SHA-256 fingerprint of the base
model's touched tensors (and of the edited ones), a digest of the requests and the library
versions. Applying to a model whose tensors match neither fingerprint is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch

from ._version import __version__
from .locft.errors import LocFTInputError
from .locft.modeling import write_weights

FORMAT = "locft-edit-patch/1"
EDITED, BASE = "edited::", "base::"


class PatchError(LocFTInputError):
    """A patch cannot be read, or does not fit the model it is applied to."""


def fingerprint(tensors: Dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes, dtypes and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def requests_digest(requests: Iterable[dict]) -> str:
    pairs = [[r["prompt"], r["target_new"]] for r in requests]
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()


def _versions() -> dict:
    import transformers

    return {"locft_easyedit": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__}


def save_patch(path, base: Dict[str, torch.Tensor], edited: Dict[str, torch.Tensor],
               hparams: Optional[dict] = None, requests: Optional[list] = None,
               model_class: str = "") -> dict:
    """Write a patch atomically; return its metadata."""
    from safetensors.torch import save_file

    if set(base) != set(edited):
        raise PatchError("base and edited tensors must name the same parameters")
    meta = {"format": FORMAT, "base_fingerprint": fingerprint(base),
            "edited_fingerprint": fingerprint(edited), "model_class": model_class,
            "parameters": json.dumps(sorted(base)), "hparams": json.dumps(hparams or {}),
            "n_requests": str(len(requests or [])),
            "requests_digest": requests_digest(requests or []),
            "versions": json.dumps(_versions()), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tensors = {}
    for name in base:
        tensors[BASE + name] = base[name].detach().cpu().contiguous()
        tensors[EDITED + name] = edited[name].detach().cpu().contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return meta


def load_patch(path):
    """``(metadata, base tensors, edited tensors)``; PatchError when it is not a patch."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise PatchError(f"patch file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad file
        raise PatchError(f"{path} is not a safetensors file: {exc}") from None
    if meta.get("format") != FORMAT:
        raise PatchError(f"{path} is not a locft-edit patch (format {meta.get('format')!r})")
    base = {k[len(BASE):]: v for k, v in tensors.items() if k.startswith(BASE)}
    edited = {k[len(EDITED):]: v for k, v in tensors.items() if k.startswith(EDITED)}
    return meta, base, edited


def _current(model, names) -> Dict[str, torch.Tensor]:
    params = dict(model.named_parameters(remove_duplicate=False))
    missing = [n for n in names if n not in params]
    if missing:
        raise PatchError(f"the model has no parameter(s) {missing[:3]}: this patch is for another "
                         "architecture")
    return {n: params[n] for n in names}


def _swap(model, path, direction: str) -> dict:
    meta, base, edited = load_patch(path)
    src, dst = (base, edited) if direction == "apply" else (edited, base)
    want = meta["base_fingerprint" if direction == "apply" else "edited_fingerprint"]
    current = _current(model, list(src))
    for n, t in src.items():
        if current[n].shape != t.shape:
            raise PatchError(f"parameter {n} has shape {tuple(current[n].shape)} in the model "
                             f"but {tuple(t.shape)} in the patch: another model")
    have = fingerprint(current)
    if have != want:
        other = meta["edited_fingerprint" if direction == "apply" else "base_fingerprint"]
        if have == other:
            state = "already applied" if direction == "apply" else "not applied"
            raise PatchError(f"this patch is {state} to this model; nothing to do")
        raise PatchError(
            f"the model's tensors do not match the patch's {'base' if direction == 'apply' else 'edited'} "
            f"fingerprint: the patch was made for a different base model "
            f"({meta.get('model_class') or 'unknown class'}); use the model it was made from")
    write_weights(model, dst)  # all or nothing
    return meta


def apply_patch(model, path) -> dict:
    """Write the patch's edited tensors into ``model`` (refused for another base model)."""
    return _swap(model, path, "apply")


def revert_patch(model, path) -> dict:
    """Put the base tensors back (the model must hold this patch's edit)."""
    return _swap(model, path, "revert")
