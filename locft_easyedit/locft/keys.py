"""Key statistics of a trained linear weight, for the locality options that constrain what an
update does to the inputs of that weight ("keys", as MEMIT calls them).

For a linear module ``y = W k`` (``nn.Linear``: ``W`` is ``[out, in]``; GPT-2's ``Conv1D``
stores ``W^T``), an update ``dW`` changes the output on key ``k`` by ``dW k``. Over the keys
``k`` that the unedited model produces on generic text, the mean squared change is
``tr(dW C dW^T)`` with ``C = E[k k^T]`` the keys' second moment. Two options use ``C``:

* **null-space projection** (``null_space_energy`` / ``null_space_rank``): after every step
  the update is projected off ``C``'s top eigenvectors (AlphaEdit's projection, applied to
  fine-tuning instead of to a closed-form update), so generic keys barely see it;
* **key penalty** (``key_penalty_weight``): ``lambda * tr(dW C dW^T)`` added to the loss
  (MEMIT's preservation term as a soft regularizer).

``C`` is computed once per (model, module, corpus, tokens) by streaming the corpus through
the model up to the module (a hook stops the forward there), and cached as its eigenvalues and
its top eigenvectors under :func:`cache_root` ``/ "keys"``. The corpus is local text that
ships with Python (:data:`CORPORA`), ``self`` (text the unedited model samples after the
generic openings of :mod:`.generic_text`), a text file, or several joined by ``+`` (equal
shares of the tokens); never evaluation data. Only the top ``MAX_BASIS``
eigenvectors are kept (a low-rank basis), so a LLaMA3-8B ``down_proj`` (``in`` = 14,336) is
stored as 14,336 x 4,096 floats instead of the full 14,336^2.

What applies to which trained tensor: 2-D weights of ``nn.Linear`` and ``Conv1D`` modules
(``down_proj``, ``up_proj``, ``gate_proj``, attention projections, each with the keys of its
own input); other tensors of a whole layer (norm weights, biases) have no keys and are left
unconstrained (a WARNING names them). Keys are those of the model at the run's start: when a
whole layer is trained, the keys of its later modules move as its earlier ones train, which
the statistics do not follow.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from .errors import HparamsError
from .generic_text import GENERIC_OPENINGS, sample_generic_text
from .modeling import input_device, preserved_values

logger = logging.getLogger(__name__)

MAX_BASIS = 4096      # eigenvectors kept per module (all of them for in <= 4096)
WINDOW = 128          # tokens per corpus window fed to the model
SELF = "self"         # the corpus the unedited model writes itself
SELF_SEED = 0         # fixed, so the cached statistics serve every run


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/locft_easyedit`` (``~/.cache/locft_easyedit`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "locft_easyedit"


def _pydoc_text() -> str:
    from pydoc_data.topics import topics  # CPython's own help topics: ~465K characters

    return "\n\n".join(topics[k] for k in sorted(topics))


CORPORA: Dict[str, Callable[[], str]] = {"pydoc_data": _pydoc_text}


def corpus_text(name: str) -> str:
    """The text of corpus ``name``: a key of :data:`CORPORA`, or the path of a local UTF-8
    text file."""
    if name in CORPORA:
        return CORPORA[name]()
    path = Path(name).expanduser()
    if not path.is_file():
        raise HparamsError(f"key 'key_corpus': {name!r} is neither a known corpus "
                           f"({sorted(CORPORA)}) nor a text file")
    return path.read_text(encoding="utf-8")


def corpus_ids(model, tok, corpus: str, n_tokens: int) -> List[int]:
    """About ``n_tokens`` token ids of ``corpus`` (parts joined by ``+`` get equal shares;
    ``self``: the unedited model's own samples after the generic openings, EOS-separated)."""
    parts = [p.strip() for p in corpus.split("+") if p.strip()]
    share = -(-n_tokens // max(len(parts), 1))
    ids: List[int] = []
    for part in parts:
        if part == SELF:
            new = 48
            texts = sample_generic_text(model, tok, GENERIC_OPENINGS, -(-share // new), new,
                                        SELF_SEED)
            got = [t for e in texts for t in e.ids]
        else:
            got = tok(corpus_text(part), add_special_tokens=False)["input_ids"]
        ids += got[:share]
    return ids


def owner(model, param_name: str):
    """``(module, transposed)`` for a trained 2-D weight: the module it belongs to and whether
    it is stored ``[in, out]`` (GPT-2's ``Conv1D``); ``(None, False)`` for other tensors."""
    mod_name, _, leaf = param_name.rpartition(".")
    module = model.get_submodule(mod_name) if mod_name else model
    if leaf != "weight" or getattr(module, "weight", None) is None or module.weight.dim() != 2:
        return None, False
    if isinstance(module, nn.Linear):
        return module, False
    if type(module).__name__ == "Conv1D":  # transformers.pytorch_utils.Conv1D: y = x W + b
        return module, True
    return None, False


@dataclass
class KeyStats:
    """``C = E[k k^T]`` of one module's inputs as ``eigvals`` (all ``d``, descending) and
    ``basis`` (``[d, r]``, the top ``r`` eigenvectors, orthonormal columns)."""

    eigvals: torch.Tensor
    basis: torch.Tensor
    tokens: int

    def rank_for(self, energy: float = 0.0, rank: int = 0) -> int:
        """How many top directions hold ``energy`` of the trace (or ``rank`` itself)."""
        if rank > 0:
            return min(rank, self.basis.shape[1])
        share = torch.cumsum(self.eigvals.clamp(min=0).double(), 0)
        share = share / share[-1].clamp(min=1e-30)
        need = int((share < energy).sum().item()) + 1
        return min(need, self.basis.shape[1])

    def top(self, energy: float = 0.0, rank: int = 0) -> torch.Tensor:
        return self.basis[:, :self.rank_for(energy, rank)]


def _fingerprint(model, skip: Sequence[str]) -> str:
    """A cheap fingerprint of the model's weights: names, shapes and a strided sample of every
    tensor except ``skip`` (the trained module's own, which do not change its keys)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if name in skip:
            continue
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 1024)
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(flat[::step][:1024].float().cpu().numpy().tobytes())
    return h.hexdigest()


def _cache_path(model, module_name: str, corpus: str, n_tokens: int) -> Path:
    # the module's own weights do not change its inputs, unless the model writes the corpus
    own = [] if SELF in corpus.split("+") else [
        f"{module_name}.{n}" for n, _ in model.get_submodule(module_name).named_parameters()]
    spec = {"model": _fingerprint(model, own), "module": module_name, "corpus": corpus,
            "tokens": n_tokens, "window": WINDOW, "basis": MAX_BASIS, "version": 1}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root() / "keys" / f"{key}.safetensors"


class _Stop(Exception):
    pass


@torch.no_grad()
def _second_moment(model, module: nn.Module, transposed: bool, ids: Sequence[int],
                   progress: bool) -> tuple:
    """``(C, tokens)``: the mean of ``k k^T`` over the module's inputs on the token ids
    ``ids``, fed in windows of :data:`WINDOW` tokens."""
    from tqdm.auto import tqdm

    ids = list(ids)
    windows = [ids[i:i + WINDOW] for i in range(0, len(ids), WINDOW)]
    windows = [w for w in windows if len(w) == WINDOW] or windows[:1]
    d = module.weight.shape[0 if transposed else 1]
    dev = module.weight.device
    acc_dtype = torch.float64 if d <= 4096 else torch.float32
    acc = torch.zeros(d, d, dtype=acc_dtype, device=dev)
    count = 0

    def grab(mod, args):
        nonlocal count
        k = args[0].reshape(-1, d).to(acc_dtype)
        acc.addmm_(k.T, k)
        count += k.shape[0]
        raise _Stop

    handle = module.register_forward_pre_hook(grab)
    was = model.training
    model.eval()
    try:
        batch = 8
        for s in tqdm(range(0, len(windows), batch), desc="key statistics", unit="batch",
                      disable=not progress):
            x = torch.tensor(windows[s:s + batch], device=input_device(model))
            try:
                model(input_ids=x)
            except _Stop:
                pass
    finally:
        handle.remove()
        model.train(was)
    return acc / max(count, 1), count


def key_statistics(model, tok, param_name: str, corpus: str, n_tokens: int,
                   progress: bool = False, use_cache: bool = True) -> KeyStats:
    """The :class:`KeyStats` of the trained weight ``param_name``'s module (computed, or read
    from the cache; written there atomically once computed)."""
    module, transposed = owner(model, param_name)
    if module is None:
        raise HparamsError(f"{param_name!r} is not the weight of a linear module: key "
                           "statistics (null_space_*, key_penalty_weight) apply to linear "
                           "weights only")
    module_name = param_name.rpartition(".")[0]
    path = _cache_path(model, module_name, corpus, n_tokens)
    if use_cache and path.is_file():
        from safetensors.torch import load_file

        t = load_file(str(path))
        logger.info("key statistics of %s from the cache (%s)", module_name, path)
        return KeyStats(t["eigvals"], t["basis"], int(t["tokens"].item()))
    logger.info("key statistics of %s: %d tokens of %s", module_name, n_tokens, corpus)
    c, count = _second_moment(model, module, transposed,
                              corpus_ids(model, tok, corpus, n_tokens), progress)
    vals, vecs = torch.linalg.eigh(c)  # ascending
    vals, vecs = vals.flip(0), vecs.flip(1)[:, :MAX_BASIS]
    stats = KeyStats(vals.float().cpu(), vecs.float().cpu().contiguous(), count)
    if use_cache:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"eigvals": stats.eigvals, "basis": stats.basis,
                   "tokens": torch.tensor([count])}, str(tmp))
        os.replace(tmp, path)
    return stats


def key_tensors(model, names: Sequence[str]) -> tuple:
    """``(linear, other)``: which of the trained tensors ``names`` have keys (with their
    orientation) and which do not."""
    linear: Dict[str, bool] = {}
    other: List[str] = []
    for n in names:
        module, transposed = owner(model, n)
        if module is None:
            other.append(n)
        else:
            linear[n] = transposed
    return linear, other


def output_change(delta: torch.Tensor, basis: torch.Tensor, transposed: bool) -> torch.Tensor:
    """``delta`` applied to the basis directions: ``dW U`` (``[out, r]``)."""
    return delta.T @ basis if transposed else delta @ basis


def project_off(delta: torch.Tensor, basis: torch.Tensor, transposed: bool) -> torch.Tensor:
    """``delta`` with its action on the span of ``basis`` removed: ``dW (I - U U^T)``."""
    if transposed:  # stored [in, out]: (dW^T (I - U U^T))^T = (I - U U^T) dW
        return delta - basis @ (basis.T @ delta)
    return delta - (delta @ basis) @ basis.T


class KeyConstraints:
    """The key-based locality options of one run, over the trained linear weights: the
    null-space projection (:meth:`project`, after every optimizer step, on every rank) and the
    key penalty (:meth:`penalty`, a loss term). ``origins``: the weights the projection keeps
    the update relative to (the run's start: earlier edits are never projected away);
    ``preserved``: the ones the penalty measures the change from (``preserve_from`` or the
    start)."""

    def __init__(self, hp, stats: Dict[str, KeyStats], transposed: Dict[str, bool],
                 origins: Dict[str, torch.Tensor], preserved: Dict[str, torch.Tensor]):
        self.hp, self.transposed = hp, transposed
        self.origins, self.preserved = origins, preserved
        self.removed: Dict[str, torch.Tensor] = {}   # basis projected off, per tensor
        self.weighted: Dict[str, torch.Tensor] = {}  # U sqrt(eigvals), for the penalty
        for n, s in stats.items():
            dev = origins[n].device
            if hp.null_space_energy > 0 or hp.null_space_rank > 0:
                self.removed[n] = s.top(hp.null_space_energy, hp.null_space_rank).to(dev)
            if hp.key_penalty_weight > 0:
                r = s.basis.shape[1]
                self.weighted[n] = (s.basis * s.eigvals[:r].clamp(min=0).sqrt()).to(dev)

    @torch.no_grad()
    def project(self, masters: Dict[str, torch.Tensor]) -> None:
        for n, basis in self.removed.items():
            w, o = masters[n], self.origins[n]
            delta = w.float() - o
            w.copy_((o + project_off(delta, basis, self.transposed[n])).to(w.dtype))

    def penalty(self, subs: Dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        """``key_penalty_weight * sum over tensors of tr(dW C dW^T)``: the mean squared change
        of the modules' outputs over the corpus keys (None when off)."""
        if not self.weighted:
            return None
        return self.hp.key_penalty_weight * sum(
            output_change(subs[n].float() - self.preserved[n], u, self.transposed[n]).pow(2).sum()
            for n, u in self.weighted.items())


def build_key_constraints(model, tok, hp, masters: Dict[str, torch.Tensor],
                          preserve_from: Optional[Dict[str, torch.Tensor]] = None,
                          progress: bool = False) -> Optional[KeyConstraints]:
    """None unless ``null_space_*`` or ``key_penalty_weight`` is on."""
    if not (hp.null_space_energy > 0 or hp.null_space_rank > 0 or hp.key_penalty_weight > 0):
        return None
    from .modeling import weights_applied

    linear, other = key_tensors(model, list(masters))
    if not linear:
        raise HparamsError("null_space_* / key_penalty_weight constrain linear weights, and "
                           f"none of the trained tensors is one ({list(masters)[:3]}); turn "
                           "them off or train a linear module (e.g. mlp.down_proj)")
    if other:
        logger.warning("key constraints apply to linear weights only: %s train unconstrained",
                       other)
    with weights_applied(model, preserve_from or {}):
        stats = {n: key_statistics(model, tok, n, hp.key_corpus, hp.key_tokens, progress)
                 for n in linear}
    origins = {n: masters[n].detach().float().clone() for n in linear}
    return KeyConstraints(hp, stats, linear, origins,
                          preserved_values(masters, preserve_from, list(linear)))
