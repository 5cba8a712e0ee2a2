"""Locality-preserving loss terms. They consume what the losses (:mod:`.losses`) computed: each
step the loss asks :meth:`Regularizer.next_batch` which generic texts to run, computes their
logits with its own forward, and adds :meth:`Regularizer.penalty` to the gradient.

* **Preservation loss** (``preserve_weight``): ``KL(original || edited)`` of the next-token
  distributions on generic text. The text is sampled from the *unedited* model itself, once
  before training, after the fixed openings in :data:`GENERIC_OPENINGS` (written for this
  project: everyday questions and sentence starts, not taken from ZsRE, CounterFact, NQ or any
  other evaluation set). The original distribution at every position (computed by the loss's
  own forward before the first step, :meth:`Regularizer.fill`) is stored as its top-k
  log-probabilities plus one "rest" bucket (the KL of that coarsened distribution, a lower
  bound of the full KL), so memory stays small whatever the vocabulary.
* **Anchor** (``anchor_weight``): ``sum((W - W_original)^2)`` over the trained tensors.
* **Per-example stop** (``per_example_stop``): examples whose own loss is already below
  ``loss_threshold`` give no gradient (:func:`.losses.edit_loss`).

:data:`HELDOUT_OPENINGS` are other generic openings, never trained on; ``locate`` uses text
sampled after them as its capability proxy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .encoding import Encoded, pad_batch
from .modeling import input_device, left_padding, pad_id_of, weights_applied

GENERIC_OPENINGS = [
    "What is the best way to learn a new language?",
    "How do plants make their own food?",
    "Why is the sky blue?",
    "Who was the first person to walk on the moon?",
    "Where do most of the world's bananas grow?",
    "When did people start using paper money?",
    "Which animals can live both in water and on land?",
    "How many bones are in the human body?",
    "What does a computer's memory do?",
    "Explain how a bicycle stays upright.",
    "Write a short note to a friend about the weekend.",
    "Give three tips for staying healthy in winter.",
    "The history of the city begins",
    "In the morning, the market was",
    "My favourite recipe for soup is",
    "The main reason people travel is",
    "Scientists have long wondered whether",
    "The football match ended with",
    "A good teacher always",
    "The river flows through",
    "Once upon a time, in a small village,",
    "The company announced on Monday that",
    "To solve this equation, first",
    "The most important invention of the last century was",
    "Who wrote the play about the prince of Denmark?",
    "What is the capital of the country you would most like to visit?",
    "How long does it take light from the sun to reach the earth?",
    "Which instrument has black and white keys?",
    "What language do people speak in Brazil?",
    "Who painted the ceiling of the famous chapel in Rome?",
    "In which year did the Second World War end?",
    "What is the largest ocean on earth?",
]

HELDOUT_OPENINGS = [
    "What should I pack for a trip to the mountains?",
    "How does a refrigerator keep food cold?",
    "Who invented the telephone?",
    "The old library on the hill",
    "Describe your ideal holiday.",
    "Which planet is closest to the sun?",
    "The weather report for tomorrow says",
    "What is the tallest mountain in Africa?",
    "How do birds know where to migrate?",
    "The new museum opened its doors",
    "Which country has the largest population?",
    "Name a famous composer of classical music.",
]


@torch.no_grad()
def sample_generic_text(model, tok, openings: Sequence[str], n: int, new_tokens: int,
                        seed: int, batch_size: int = 16) -> List[Encoded]:
    """``n`` texts sampled (temperature 1, top-k 50) from ``model`` after the openings (cycled),
    each ending at its first EOS. Deterministic for a seed on one device; the global RNG is
    left as it was. ``prompt_len`` is 1: every next token after the first counts."""
    texts = [openings[i % len(openings)] for i in range(n)]
    out: List[Encoded] = []
    device = input_device(model)
    was = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), left_padding(tok):
            torch.manual_seed(seed)
            for s in range(0, n, batch_size):
                enc = tok(texts[s:s + batch_size], return_tensors="pt", padding=True)
                enc = {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}
                gen = model.generate(**enc, max_new_tokens=new_tokens, do_sample=True,
                                     top_k=50, temperature=1.0, top_p=1.0,
                                     pad_token_id=pad_id_of(tok), eos_token_id=tok.eos_token_id)
                width = enc["input_ids"].shape[1]
                for row in range(gen.shape[0]):
                    ids = gen[row, width - int(enc["attention_mask"][row].sum()):width].tolist()
                    for t in gen[row, width:].tolist():
                        ids.append(t)
                        if t == tok.eos_token_id:
                            break
                    out.append(Encoded(tuple(ids), 1))
    finally:
        model.train(was)
    return out


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
            n = examples[i].length - 1
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


def coarse_kl(ref_idx: torch.Tensor, ref_logp: torch.Tensor,
              logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(ref || edited) on the top-k tokens of ``ref`` + one bucket
    for the rest of the vocabulary. ``logits`` ``[K, V]``; ``ref_*`` ``[K, k]``."""
    logp = F.log_softmax(logits.float(), dim=-1).gather(1, ref_idx.to(logits.device))
    ref_logp = ref_logp.to(logits.device)
    p = ref_logp.exp()
    kl = (p * (ref_logp - logp)).sum(-1)
    eps = 1e-6
    rest_ref = (1 - p.sum(-1)).clamp(min=eps)
    rest_new = (1 - logp.exp().sum(-1)).clamp(min=eps)
    kl = kl + rest_ref * (rest_ref.log() - rest_new.log())
    return kl.mean()


class Regularizer:
    """The preservation and anchor terms of one run. Per step: :meth:`next_batch` names the
    generic texts whose logits the preservation term needs (none when it is off), and
    :meth:`penalty` turns those logits (and the current trained tensors) into the term."""

    def __init__(self, hp, originals: Dict[str, torch.Tensor], texts: Sequence[Encoded] = (),
                 preserve_from: Optional[Dict[str, torch.Tensor]] = None):
        self.hp = hp
        self.originals = originals
        self.preserve_from = preserve_from
        self.examples: List[Encoded] = list(texts)
        self.reference: Optional[Reference] = None
        self.calls = 0
        n = len(self.examples)
        self.order = torch.randperm(n, generator=torch.Generator().manual_seed(hp.seed)).tolist()

    def preserved_subs(self) -> Optional[Dict[str, torch.Tensor]]:
        """The tensors to substitute for the unedited distributions (None: the run's start)."""
        if self.preserve_from is None:
            return None
        return {n: self.preserve_from[n].to(w.device) for n, w in self.originals.items()}

    def fill(self, logits_of: LogitsOf) -> None:
        """Record the unedited model's distributions on the generic texts, from the loss's own
        forward (``logits_of``, see :func:`reference_from_logits`), before the first step.
        The fast loss computes them with its cache, so they cost the layers above it only."""
        if self.examples:
            self.reference = reference_from_logits(self.examples, logits_of,
                                                   self.hp.preserve_topk)

    def next_batch(self) -> List[int]:
        """The generic texts of this step: consecutive slices of a fixed permutation (none
        when the preservation term is off)."""
        if self.hp.preserve_weight <= 0 or not self.examples:
            return []
        if self.reference is None:
            raise RuntimeError("Regularizer.fill was not called before training")
        n, b = len(self.order), min(self.hp.preserve_batch, len(self.order))
        start = (self.calls * b) % n
        self.calls += 1
        return [self.order[(start + j) % n] for j in range(b)]

    def penalty(self, logits: Optional[torch.Tensor], idx: Sequence[int],
                subs: Dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        """The weighted sum of the terms that are on, or None: the preservation KL on
        ``logits`` (``[K, V]``, the next-token logits of the generic texts ``idx``, in order)
        and the anchor on ``subs`` (the trained tensors as the model sees them)."""
        terms = []
        if logits is not None:
            ref_idx = torch.cat([self.reference.top_idx[i] for i in idx])
            ref_logp = torch.cat([self.reference.top_logp[i] for i in idx])
            terms.append(self.hp.preserve_weight * coarse_kl(ref_idx, ref_logp, logits))
        if self.hp.anchor_weight > 0:
            terms.append(self.hp.anchor_weight * sum(
                ((subs[n].float() - w) ** 2).sum() for n, w in self.originals.items()))
        return sum(terms) if terms else None


def build_regularizer(model, tok, hp, masters: Dict[str, torch.Tensor],
                      preserve_from: Optional[Dict[str, torch.Tensor]] = None
                      ) -> Optional[Regularizer]:
    """None when every locality term is off. ``preserve_from``: the trained tensors' values
    to preserve when they are not the model's current ones (the generic texts are then sampled
    with them written into the model, which is put back at once)."""
    if hp.preserve_weight <= 0 and hp.anchor_weight <= 0:
        return None
    texts = []
    if hp.preserve_weight > 0:
        with weights_applied(model, preserve_from or {}):
            texts = sample_generic_text(model, tok, GENERIC_OPENINGS, hp.preserve_samples,
                                        hp.preserve_new_tokens, hp.seed)
    source = preserve_from if preserve_from is not None else masters
    originals = {n: source[n].detach().to(masters[n].device, torch.float32).clone()
                 for n in masters}
    return Regularizer(hp, originals, texts, preserve_from)
