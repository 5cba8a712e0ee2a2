"""Tokenize edit requests once: prompt ids followed by target ids (+ EOS).

The target gets a leading space when missing and, with ``append_eos``, the tokenizer's EOS
token. Lengths come from the token lists themselves, never from counting pad ids (a
tokenizer whose pad token is its EOS token would otherwise hide the first target token).

Joint tokenization
------------------
``prompt + target`` is tokenized as ONE text, as the paper's authors and EasyEdit's scorer
do, and split where the target's text begins. Tokenizing the two separately differs for a
SentencePiece tokenizer that prepends "▁" to every text (Llama-2 / Mistral-v0.1 under
transformers 4.x, "legacy"): the target " Paris" alone is ``['▁', '▁Paris']`` but inside
"... is Paris" it is ``['▁Paris']``, so separate ids would teach the model to emit a lone "▁"
first and EasyEdit's rewrite_acc would miss the first token. Byte-level BPE (GPT-2, Llama-3,
SmolLM2) gives the same ids either way.

Where the split lies:

* fast tokenizers (character offsets): the special tokens the template puts before the text
  (BOS) belong to the prompt, the ones it puts after the text (an EOS some templates add) are
  dropped (the target ends with EOS exactly when ``append_eos``); of the text's tokens, the
  target starts at the first one with a non-empty character span starting at or after
  ``len(prompt)`` (a SentencePiece "▁Paris" spans the target's leading space, so it starts
  exactly there). If a token straddles the boundary (starts inside the prompt's text, ends
  inside the target's), the boundary cannot be represented: that request is tokenized
  separately, as before, and a WARNING says so once per tokenizer.
* tokenizers without offsets (slow ones): a probe pair is tokenized both ways once per
  tokenizer (the verdict is cached). If they agree, requests are tokenized separately (cheap,
  and what they have always been). If not, each request is tokenized jointly when the
  prompt's own ids are a prefix of the joint ids (the rest is the target), else separately
  with a WARNING once per tokenizer.
"""
from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from .errors import RequestError
from .requests import normalise_target

logger = logging.getLogger(__name__)

# the probe for tokenizers without offsets: an ordinary fact, the target after a word
PROBE = ("The capital of France is", " Paris")


@dataclass(frozen=True)
class Encoded:
    """One training example: ``ids[:prompt_len]`` is the prompt, the rest is the target."""

    ids: tuple
    prompt_len: int

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def target_len(self) -> int:
        return len(self.ids) - self.prompt_len


class _PerTokenizer:
    """A value per tokenizer object: weakly keyed where it can be, else by ``id`` (kept)."""

    def __init__(self):
        self._weak = weakref.WeakKeyDictionary()
        self._strong = {}

    def _table(self, tok):
        try:
            weakref.ref(tok)
            hash(tok)
            return self._weak
        except TypeError:
            return self._strong

    def _key(self, tok):
        return tok if self._table(tok) is self._weak else id(tok)

    def get(self, tok, default=None):
        return self._table(tok).get(self._key(tok), default)

    def set(self, tok, value) -> None:
        self._table(tok)[self._key(tok)] = value


_offsets_verdict = _PerTokenizer()  # tok -> bool: gives character offsets
_probe_verdict = _PerTokenizer()    # tok -> bool: joint == separate on PROBE (no offsets)
_warned = _PerTokenizer()           # tok -> set of warning kinds already logged


def _warn_once(tok, kind: str, message: str) -> None:
    seen = _warned.get(tok)
    if seen is None:
        seen = set()
        _warned.set(tok, seen)
    if kind not in seen:
        seen.add(kind)
        logger.warning(message)


def _separate(tok, prompt: str, target: str) -> Tuple[List[int], List[int]]:
    """The prompt with the template's special tokens, the target without: the old way."""
    return (list(tok(prompt, add_special_tokens=True)["input_ids"]),
            list(tok(target, add_special_tokens=False)["input_ids"]))


def _with_offsets(tok, text: str):
    """``tok(text)`` with offsets and the special-tokens mask, or None without offsets."""
    if _offsets_verdict.get(tok) is False:
        return None
    try:
        enc = tok(text, add_special_tokens=True, return_offsets_mapping=True,
                  return_special_tokens_mask=True)
    except (NotImplementedError, ValueError, TypeError):  # a slow (Python) tokenizer
        enc = None
    ok = enc is not None and "offset_mapping" in enc and "special_tokens_mask" in enc
    _offsets_verdict.set(tok, ok)
    return enc if ok else None


def split_at_offsets(ids: Sequence[int], offsets: Sequence[Tuple[int, int]],
                     special: Sequence[int], prompt_chars: int
                     ) -> Optional[Tuple[List[int], List[int]]]:
    """``(prompt ids, target ids)`` of a joint tokenization whose prompt text is the first
    ``prompt_chars`` characters, or None when no token boundary lies there (a token straddles
    it, or a template token sits inside the text). Template tokens (special, offsets (0, 0))
    before the text go with the prompt, those after it are dropped."""
    template = [bool(s) and tuple(o) == (0, 0) for s, o in zip(special, offsets)]
    text = [i for i, t in enumerate(template) if not t]
    if not text:
        return list(ids), []
    first, last = text[0], text[-1]
    if any(template[first:last + 1]):
        return None  # a template token between text tokens: not a single-text template
    cut = next((i for i in text if offsets[i][1] > offsets[i][0]
                and offsets[i][0] >= prompt_chars), last + 1)
    if any(offsets[i][1] > prompt_chars for i in range(first, cut)):
        return None  # a prompt-side token reaches into the target's text
    if any(offsets[i][0] < prompt_chars for i in range(cut, last + 1)):
        return None  # a target-side token starts inside the prompt's text
    return list(ids[:cut]), list(ids[cut:last + 1])


def _joint_matches_separate(tok) -> bool:
    """Whether ``tok`` (no offsets) tokenizes :data:`PROBE` the same jointly and separately
    (text tokens only; cached per tokenizer)."""
    verdict = _probe_verdict.get(tok)
    if verdict is None:
        prompt, target = PROBE
        joint = list(tok(prompt + target, add_special_tokens=False)["input_ids"])
        sep = (list(tok(prompt, add_special_tokens=False)["input_ids"])
               + list(tok(target, add_special_tokens=False)["input_ids"]))
        verdict = joint == sep
        _probe_verdict.set(tok, verdict)
        if not verdict:
            logger.info("tokenizer %s has no character offsets and tokenizes %r differently "
                        "alone than after %r: targets are split off the joint ids by prefix",
                        type(tok).__name__, target, prompt)
    return verdict


def _split_by_prefix(tok, prompt: str, target: str) -> Optional[Tuple[List[int], List[int]]]:
    """Without offsets: the joint text's ids past the prompt's own ids, if those are a prefix."""
    alone = list(tok(prompt, add_special_tokens=False)["input_ids"])
    joint = list(tok(prompt + target, add_special_tokens=False)["input_ids"])
    if joint[:len(alone)] != alone:
        return None
    return list(tok(prompt, add_special_tokens=True)["input_ids"]), joint[len(alone):]


def split_prompt_target(tok, prompt: str, target: str) -> Tuple[List[int], List[int]]:
    """``(prompt ids with the template's leading special tokens, target ids)`` of the joint
    tokenization of ``prompt + target`` (``target`` as given: no space added, no EOS); see
    the module's docstring for the rule and its fallbacks."""
    enc = _with_offsets(tok, prompt + target)
    if enc is not None:
        split = split_at_offsets(enc["input_ids"], enc["offset_mapping"],
                                 enc["special_tokens_mask"], len(prompt))
        if split is not None:
            return split
        _warn_once(tok, "straddle",
                   f"tokenizer {type(tok).__name__}: a token straddles the prompt/target "
                   f"boundary of {prompt!r} + {target!r}; such requests are tokenized "
                   f"separately (prompt, then target), as before joint tokenization "
                   f"(logged once per tokenizer)")
    elif not _joint_matches_separate(tok):
        split = _split_by_prefix(tok, prompt, target)
        if split is not None:
            return split
        _warn_once(tok, "prefix",
                   f"tokenizer {type(tok).__name__} (no character offsets): the prompt's "
                   f"tokens are not a prefix of the joint tokens of {prompt!r} + {target!r}; "
                   f"such requests are tokenized separately (logged once per tokenizer)")
    return _separate(tok, prompt, target)


def encode_one(tok, prompt: str, target: str, append_eos: bool = True,
               max_length: int = 10**9) -> Encoded:
    prompt_ids, target_ids = split_prompt_target(tok, prompt, normalise_target(target))
    if append_eos and tok.eos_token_id is not None:
        target_ids.append(tok.eos_token_id)
    if len(target_ids) == 0:
        raise RequestError(f"target {target!r} encodes to no tokens")
    if len(target_ids) >= max_length:
        raise RequestError(f"target {target!r} has {len(target_ids)} tokens, more than "
                         f"max_length={max_length} allows; raise max_length")
    keep = max_length - len(target_ids)
    if len(prompt_ids) > keep:  # drop the prompt's start, keep the target whole
        prompt_ids = prompt_ids[len(prompt_ids) - keep:]
    return Encoded(tuple(prompt_ids + target_ids), len(prompt_ids))


def encode_requests(tok, requests: Sequence[dict], append_eos: bool = True,
                    max_length: int = 10**9) -> List[Encoded]:
    out = []
    for i, req in enumerate(requests):
        try:
            out.append(encode_one(tok, req["prompt"], req["target_new"], append_eos, max_length))
        except RequestError as exc:
            raise RequestError(f"request {i}: {exc}") from None
    return out


def pad_batch(examples: Sequence[Encoded], pad_id: int, device=None):
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 off target)."""
    width = max(e.length for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, :e.length] = torch.tensor(e.ids)
        mask[row, :e.length] = 1
        labels[row, e.prompt_len:e.length] = torch.tensor(e.ids[e.prompt_len:])
    return ids.to(device), mask.to(device), labels.to(device)


def length_groups(lengths: Sequence[int], overhead_tokens: int = 64) -> List[List[int]]:
    """Split positions into micro-batches of similar length, minimising padded tokens plus a
    fixed per-forward overhead (dynamic programming over the positions sorted by length)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        width = lengths[order[end - 1]]
        for start in range(end):
            cost = best[start] + (end - start) * width + overhead_tokens
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], n
    while end > 0:
        groups.append(order[cut[end]:end])
        end = cut[end]
    return groups[::-1]
