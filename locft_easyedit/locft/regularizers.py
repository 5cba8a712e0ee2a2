"""Locality-preserving loss terms. They consume what the losses (:mod:`.losses`) computed: each
step the loss asks :meth:`Regularizer.next_batch` which generic texts to run, computes their
logits with its own forward, and adds :meth:`Regularizer.penalty` to the gradient.

* **Preservation loss** (``preserve_weight``): ``KL(original || edited)`` of the next-token
  distributions on generic text. The text is sampled from the *unedited* model itself, once
  before training, after the fixed openings in :data:`.generic_text.GENERIC_OPENINGS`
  (written for this project, not taken from any evaluation set). The original distribution at every position (computed by the loss's
  own forward before the first step, :meth:`Regularizer.fill`) is stored as its top-k
  log-probabilities plus one "rest" bucket (the KL of that coarsened distribution, a lower
  bound of the full KL), so memory stays small whatever the vocabulary.
* **Neighbour preservation** (``neighbour_weight``): the same KL on *neighbour prompts*: each
  edit prompt with its subject replaced by other requests' subjects of the same run
  (:func:`neighbour_prompts`; :data:`FALLBACK_SUBJECTS`, written for this project, when the
  run has fewer than two), answered greedily by the unedited model. The KL covers the
  positions that predict the answer. The neighbours of a mini-batch's edits are preserved in
  the step that trains those edits, so the update is pushed to depend on the subject
  (CounterFact's neighbourhood prompts share the edit's relation and differ in the subject,
  which generic text does not cover). No evaluation data is read: only the run's requests.
* **Key penalty** (``key_penalty_weight``): ``tr(dW C dW^T)`` over the trained linear weights
  (:mod:`.keys`).
* **Anchor** (``anchor_weight``): ``sum((W - W_original)^2)`` over the trained tensors.
* **Per-example stop** (``per_example_stop``): examples whose own loss is already below
  ``loss_threshold`` give no gradient (:func:`.losses.edit_loss`).

"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .encoding import Encoded, pad_batch
from .generic_text import GENERIC_OPENINGS, sample_generic_text
from .keys import KeyConstraints
from .modeling import (input_device, left_padding, pad_id_of, preserved_values,
                       weights_applied)

logger = logging.getLogger(__name__)

@dataclass
class Reference:
    """The unedited model's next-token distributions on the generic texts, top-k + rest."""

    examples: List[Encoded]
    top_idx: List[torch.Tensor]     # per text: [length - 1, k] token ids
    top_logp: List[torch.Tensor]    # per text: [length - 1, k] log-probabilities


LogitsOf = Callable[[List[int]], torch.Tensor]


@torch.no_grad()
def reference_from_logits(examples: List[Encoded], logits_of: LogitsOf, k: int,
                          batch_size: int = 16) -> Reference:
    """The top-k distributions of the texts ``examples`` from ``logits_of(idx)``: the next-token
    logits of the texts ``idx`` at every position that predicts one (``[K, V]``, row order),
    as the unedited model gives them (the losses supply it through their own forward)."""
    idx_out, logp_out = [], []
    for s in range(0, len(examples), batch_size):
        idx = list(range(s, min(s + batch_size, len(examples))))
        logits = logits_of(idx).float()
        start = 0
        for i in idx:
            n = examples[i].target_len
            logp = F.log_softmax(logits[start:start + n], dim=-1)
            start += n
            top = logp.topk(min(k, logp.shape[-1]), dim=-1)
            idx_out.append(top.indices)
            logp_out.append(top.values)
    return Reference(examples, idx_out, logp_out)


def reference_distributions(model, tok, examples: List[Encoded], k: int) -> Reference:
    """:func:`reference_from_logits` with the model's plain forward."""
    pad, device = pad_id_of(tok), input_device(model)

    def logits_of(idx: List[int]) -> torch.Tensor:
        ids, mask, labels = pad_batch([examples[i] for i in idx], pad, device)
        return model(input_ids=ids, attention_mask=mask).logits[:, :-1][labels[:, 1:] != -100]

    return reference_from_logits(examples, logits_of, k)


FALLBACK_SUBJECTS = [
    "Maria Lindqvist", "the town of Eastbrook", "Tomasz Wrona", "the Harbour Bridge Company",
    "Amira Haddad", "the river Lune", "Kenji Morita", "the Northfield Orchestra",
]


def neighbour_prompts(requests: Sequence[dict], samples: int, seed: int) -> List[List[str]]:
    """Per request, up to ``samples`` prompts: its prompt with its ``subject`` replaced by
    another request's subject (or :data:`FALLBACK_SUBJECTS` when the run names fewer than
    two). A prompt that another request edits (as its prompt or rephrasing) is never one:
    it would preserve what that request changes. Requests whose subject is not in the prompt
    get none."""
    def subject_of(r):
        subj = (r.get("subject") or "").strip()
        return subj if subj and subj in r["prompt"] else ""

    pool = list(dict.fromkeys(s for s in map(subject_of, requests) if s))
    if len(pool) < 2:
        pool += [s for s in FALLBACK_SUBJECTS if s not in pool]
    taken = {p for r in requests for p in (r["prompt"], r.get("rephrase_prompt")) if p}
    rng = random.Random(seed)
    out: List[List[str]] = []
    for r in requests:
        subj, found = subject_of(r), []
        if subj:
            for other in rng.sample(pool, min(len(pool), 4 * samples)):
                text = r["prompt"].replace(subj, other)
                if other != subj and text not in taken and text not in found:
                    found.append(text)
                if len(found) == samples:
                    break
        out.append(found)
    return out


@torch.no_grad()
def answered(model, tok, prompts: Sequence[str], new_tokens: int,
             batch_size: int = 16) -> List[Encoded]:
    """Each prompt followed by the model's greedy answer (at most ``new_tokens`` tokens, up to
    and with the first EOS); ``prompt_len`` is the prompt's, so only the answer counts."""
    out: List[Encoded] = []
    device = input_device(model)
    was = model.training
    model.eval()
    try:
        with left_padding(tok):
            for s in range(0, len(prompts), batch_size):
                enc = tok(list(prompts[s:s + batch_size]), return_tensors="pt", padding=True)
                enc = {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}
                gen = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False,
                                     pad_token_id=pad_id_of(tok), eos_token_id=tok.eos_token_id)
                width = enc["input_ids"].shape[1]
                for row in range(gen.shape[0]):
                    ids = gen[row, width - int(enc["attention_mask"][row].sum()):width].tolist()
                    n_prompt = len(ids)
                    for t in gen[row, width:].tolist():
                        ids.append(t)
                        if t == tok.eos_token_id:
                            break
                    out.append(Encoded(tuple(ids), n_prompt))
    finally:
        model.train(was)
    return out


def coarse_kl(ref_idx: torch.Tensor, ref_logp: torch.Tensor,
              logits: torch.Tensor) -> torch.Tensor:
    """The mean over positions of :func:`coarse_kl_positions`."""
    return coarse_kl_positions(ref_idx, ref_logp, logits).mean()


def coarse_kl_positions(ref_idx: torch.Tensor, ref_logp: torch.Tensor,
                        logits: torch.Tensor) -> torch.Tensor:
    """Per position, KL(ref || edited) on the top-k tokens of ``ref`` + one bucket for the
    rest of the vocabulary. ``logits`` ``[K, V]``; ``ref_*`` ``[K, k]``; returns ``[K]``."""
    logp = F.log_softmax(logits.float(), dim=-1).gather(1, ref_idx.to(logits.device))
    ref_logp = ref_logp.to(logits.device)
    p = ref_logp.exp()
    kl = (p * (ref_logp - logp)).sum(-1)
    eps = 1e-6
    rest_ref = (1 - p.sum(-1)).clamp(min=eps)
    rest_new = (1 - logp.exp().sum(-1)).clamp(min=eps)
    return kl + rest_ref * (rest_ref.log() - rest_new.log())


class Regularizer:
    """The loss terms of one run that keep what the model knew. Per step: :meth:`next_batch`
    names the texts whose logits the KL terms need (generic texts, then the neighbours of the
    step's edits; none when both are off), and :meth:`penalty` turns those logits (and the
    current trained tensors) into the terms.

    ``texts``: the generic texts (the first ``len(texts)`` of :attr:`examples`);
    ``neighbours[i]``: edit ``i``'s neighbour texts (appended after them)."""

    def __init__(self, hp, originals: Dict[str, torch.Tensor], texts: Sequence[Encoded] = (),
                 preserve_from: Optional[Dict[str, torch.Tensor]] = None,
                 neighbours: Sequence[Sequence[Encoded]] = (),
                 keys: Optional[KeyConstraints] = None):
        self.hp = hp
        self.originals = originals
        self.preserve_from = preserve_from
        self.keys = keys
        self.examples: List[Encoded] = list(texts)
        self.n_generic = len(self.examples)
        self.neighbours_of: List[List[int]] = []
        for texts_i in neighbours:
            start = len(self.examples)
            self.examples.extend(texts_i)
            self.neighbours_of.append(list(range(start, len(self.examples))))
        self.reference: Optional[Reference] = None
        self.calls = 0
        n = self.n_generic
        self.order = torch.randperm(n, generator=torch.Generator().manual_seed(hp.seed)).tolist()

    def preserved_subs(self) -> Optional[Dict[str, torch.Tensor]]:
        """The tensors to substitute for the unedited distributions (None: the run's start)."""
        if self.preserve_from is None:
            return None
        return {n: self.preserve_from[n].to(w.device) for n, w in self.originals.items()}

    def fill(self, logits_of: LogitsOf) -> None:
        """Record the unedited model's distributions on the generic and neighbour texts, from
        the loss's own forward (``logits_of``, see :func:`reference_from_logits`), before the
        first step. The fast loss computes them with its cache, so they cost the layers above
        it only."""
        if self.examples:
            self.reference = reference_from_logits(self.examples, logits_of,
                                                   self.hp.preserve_topk)

    def next_batch(self, edits: Sequence[int] = ()) -> List[int]:
        """The texts of this step: a consecutive slice of a fixed permutation of the generic
        texts (when the preservation term is on), then the neighbours of ``edits`` (the
        step's edit indices; when the neighbour term is on)."""
        idx: List[int] = []
        if self.hp.preserve_weight > 0 and self.n_generic:
            n, b = self.n_generic, min(self.hp.preserve_batch, self.n_generic)
            start = (self.calls * b) % n
            self.calls += 1
            idx = [self.order[(start + j) % n] for j in range(b)]
        if self.hp.neighbour_weight > 0 and self.neighbours_of:
            idx += [j for e in edits for j in self.neighbours_of[e]]
        if idx and self.reference is None:
            raise RuntimeError("Regularizer.fill was not called before training")
        return idx

    def penalty(self, logits: Optional[torch.Tensor], idx: Sequence[int],
                subs: Dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        """The weighted sum of the terms that are on, or None: the preservation KL and the
        neighbour KL on ``logits`` (``[K, V]``, the next-token logits of the texts ``idx``,
        in order; each term the mean over its positions), the key penalty and the anchor on
        ``subs`` (the trained tensors as the model sees them)."""
        terms = []
        if logits is not None:
            ref_idx = torch.cat([self.reference.top_idx[i] for i in idx])
            ref_logp = torch.cat([self.reference.top_logp[i] for i in idx])
            kl = coarse_kl_positions(ref_idx, ref_logp, logits)
            generic = torch.cat([torch.full((self.examples[i].target_len,), i < self.n_generic)
                                 for i in idx]).to(kl.device)
            for mask, weight in ((generic, self.hp.preserve_weight),
                                 (~generic, self.hp.neighbour_weight)):
                if bool(mask.any()):
                    terms.append(weight * kl[mask].mean())
        if self.keys is not None:
            key_term = self.keys.penalty(subs)
            if key_term is not None:
                terms.append(key_term)
        if self.hp.anchor_weight > 0:
            terms.append(self.hp.anchor_weight * sum(
                ((subs[n].float() - w) ** 2).sum() for n, w in self.originals.items()))
        return sum(terms) if terms else None


def build_regularizer(model, tok, hp, masters: Dict[str, torch.Tensor],
                      preserve_from: Optional[Dict[str, torch.Tensor]] = None,
                      requests: Sequence[dict] = (),
                      keys: Optional[KeyConstraints] = None) -> Optional[Regularizer]:
    """None when every loss term is off. ``preserve_from``: the trained tensors' values to
    preserve when they are not the model's current ones (the generic texts and the
    neighbours' answers are then made with them written into the model, which is put back at
    once). ``requests``: the run's edits, one per training example (for the neighbour term);
    ``keys``: the run's key constraints (their penalty is one of the terms)."""
    key_penalty = keys is not None and bool(keys.weighted)
    if (hp.preserve_weight <= 0 and hp.anchor_weight <= 0 and hp.neighbour_weight <= 0
            and not key_penalty):
        return None
    texts: List[Encoded] = []
    neighbours: List[List[Encoded]] = []
    with weights_applied(model, preserve_from or {}):
        if hp.preserve_weight > 0:
            texts = sample_generic_text(model, tok, GENERIC_OPENINGS, hp.preserve_samples,
                                        hp.preserve_new_tokens, hp.seed)
        if hp.neighbour_weight > 0:
            prompts = neighbour_prompts(requests, hp.neighbour_samples, hp.seed)
            flat = answered(model, tok, [p for ps in prompts for p in ps],
                            hp.neighbour_new_tokens)
            at = 0
            for ps in prompts:
                neighbours.append(flat[at:at + len(ps)])
                at += len(ps)
            if not flat:
                logger.warning("neighbour_weight is on but no request has a subject found in "
                               "its prompt: no neighbour prompts")
    originals = preserved_values(masters, preserve_from, list(masters))
    return Regularizer(hp, originals, texts, preserve_from, neighbours,
                       keys if key_penalty else None)
