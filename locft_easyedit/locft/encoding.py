"""Tokenize edit requests once: prompt ids followed by target ids (+ EOS).

The target gets a leading space when missing and, with ``append_eos``, the tokenizer's EOS
token. Lengths come from the token lists themselves, never from counting pad ids (a
tokenizer whose pad token is its EOS token would otherwise hide the first target token).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch

from .errors import RequestError
from .requests import normalise_target


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


def encode_one(tok, prompt: str, target: str, append_eos: bool = True,
               max_length: int = 10**9) -> Encoded:
    prompt_ids = list(tok(prompt, add_special_tokens=True)["input_ids"])
    target_ids = list(tok(normalise_target(target), add_special_tokens=False)["input_ids"])
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
