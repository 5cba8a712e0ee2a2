"""Scores for standalone use (no EasyEdit needed).

* token accuracy: teacher-forced, the share of target tokens (no EOS) the model predicts
  as its argmax given the prompt and the previous target tokens; EasyEdit's ``token_em``.
* generation exact match: the paper's score. Greedy generation (at most 32 new tokens,
  stopping at ".", a newline or EOS), then SQuAD-style normalisation (lower-case, drop
  punctuation and the articles a/an/the, squeeze spaces) of both sides.
* locality: EasyEdit's neighbourhood score, argmax agreement on the locality prompt +
  answer tokens before vs after the edit.
* probability scores (CounterFact, as in the ROME/MEMIT/AlphaEdit papers): the share of
  prompts where the new target is more probable than the true object (efficacy on the edit
  prompts, paraphrase on the rephrasings) and, on the neighbourhood prompts, where the true
  object stays more probable than the new target.

:func:`edit_and_score` is the one snapshot -> edit -> score sequence that the CLI, locate and
the benchmarks share.
"""
from __future__ import annotations

import re
import string
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from .locft.encoding import Encoded, encode_one, pad_batch
from .locft.modeling import input_device, left_padding, pad_id_of

GEN_STOPS = (".", "\n")


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _batches(n: int, size: int, desc: str, progress: bool):
    starts = range(0, n, size)
    return tqdm(starts, desc=desc, unit="batch", disable=not progress or len(starts) < 2,
                leave=False)


def _teacher_forced(model, tok, prompts: Sequence[str], targets: Sequence[str],
                    batch_size: int = 32, progress: bool = False):
    """Yield ``(logits [T, V], target ids [T])`` for each prompt/target pair, in order: the
    logits at the positions that predict the target tokens (no EOS)."""
    examples = [encode_one(tok, p, t, append_eos=False) for p, t in zip(prompts, targets)]
    was = model.training
    model.eval()
    try:
        for s in _batches(len(examples), batch_size, "scoring", progress):
            batch: List[Encoded] = examples[s:s + batch_size]
            ids, mask, _ = pad_batch(batch, pad_id_of(tok), input_device(model))
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            for row, e in enumerate(batch):
                yield (logits[row, e.prompt_len - 1:e.length - 1],
                       torch.tensor(e.ids[e.prompt_len:], device=logits.device))
    finally:
        model.train(was)


def target_predictions(model, tok, prompts: Sequence[str], targets: Sequence[str],
                       **kw) -> List[torch.Tensor]:
    """For each pair, ``(argmax predictions, target ids)`` stacked as a ``[2, T]`` tensor."""
    return [torch.stack([lg.argmax(-1), t]).cpu()
            for lg, t in _teacher_forced(model, tok, prompts, targets, **kw)]


def target_logprobs(model, tok, prompts: Sequence[str], targets: Sequence[str],
                    **kw) -> List[float]:
    """Per pair, the mean log-probability of the target's tokens given the prompt."""
    return [float(lg.log_softmax(-1).gather(-1, t[:, None]).mean())
            for lg, t in _teacher_forced(model, tok, prompts, targets, **kw)]


def token_accuracy(model, tok, prompts, targets, **kw) -> List[float]:
    """Per-pair teacher-forced token accuracy on the target."""
    return [float((p[0] == p[1]).float().mean()) for p in
            target_predictions(model, tok, prompts, targets, **kw)]


@torch.no_grad()
def generate_answers(model, tok, prompts: Sequence[str], max_new_tokens: int = 32,
                     batch_size: int = 32, progress: bool = False) -> List[str]:
    """Greedy continuations, cut at the first '.', newline or EOS."""
    answers: List[str] = []
    was = model.training
    model.eval()
    try:
        with left_padding(tok):
            for s in _batches(len(prompts), batch_size, "generating", progress):
                enc = tok(list(prompts[s:s + batch_size]), return_tensors="pt", padding=True)
                enc = {k: enc[k].to(input_device(model)) for k in ("input_ids", "attention_mask")}
                # stop_strings ends a row at its first stop (the text is cut there anyway),
                # so a batch ends when every row has answered, not after 32 tokens
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=pad_id_of(tok), eos_token_id=tok.eos_token_id,
                                     stop_strings=list(GEN_STOPS), tokenizer=tok)
                for row in gen[:, enc["input_ids"].shape[1]:]:
                    text = tok.decode(row, skip_special_tokens=True)
                    for stop in GEN_STOPS:
                        text = text.split(stop)[0]
                    answers.append(text.strip())
    finally:
        model.train(was)
    return answers


def exact_match(model, tok, prompts, targets, **kw) -> List[float]:
    answers = generate_answers(model, tok, prompts, **kw)
    return [float(normalize_answer(a) == normalize_answer(t)) for a, t in zip(answers, targets)]


def _locality_pairs(requests: Sequence[dict]):
    """``(request index, prompt, answer)`` for every locality prompt of every request."""
    pairs = []
    for i, req in enumerate(requests):
        for item in (req.get("locality") or {}).values():
            ps, gs = item.get("prompt"), item.get("ground_truth")
            ps = ps if isinstance(ps, list) else [ps]
            gs = gs if isinstance(gs, list) else [gs]
            for p, g in zip(ps, gs):
                if isinstance(g, list):
                    g = g[0] if g else ""
                if p and g:
                    pairs.append((i, p, g))
    return pairs


def locality_snapshot(model, tok, requests: Sequence[dict], **kw) -> List[torch.Tensor]:
    """Argmax predictions on every locality prompt + answer (take it before editing)."""
    pairs = _locality_pairs(requests)
    preds = target_predictions(model, tok, [p for _, p, _ in pairs], [g for _, _, g in pairs],
                               **kw)
    return [p[0] for p in preds]


def locality_scores(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> List[float]:
    return [float((a == b).float().mean()) for a, b in zip(before, after)]


def probability_scores(model, tok, requests: Sequence[dict], per_edit: bool = False,
                       **kw) -> Dict[str, Any]:
    """CounterFact's probability comparisons (ROME/MEMIT/AlphaEdit papers), for requests with
    a string ``ground_truth`` (the true object): the share of prompts where the model prefers
    ``target_new`` to the true object (mean token log-probability), on the edit prompts
    (``efficacy_score``) and paraphrases (``paraphrase_score``), and the share of locality
    prompts where it still prefers the true object to the edit's ``target_new``
    (``neighborhood_score``; locality prompts answered by the same true object only).
    ``per_edit`` adds :func:`per_request` lists under ``"per_edit"``."""
    def prefer(triples):  # per request: [wins, comparisons] of (owner, prompt, good, bad)
        if not triples:
            return per_request([], [], len(requests))
        prompts = [p for _, p, _, _ in triples]
        good = target_logprobs(model, tok, prompts, [g for _, _, g, _ in triples], **kw)
        bad = target_logprobs(model, tok, prompts, [b for _, _, _, b in triples], **kw)
        return per_request([float(g > b) for g, b in zip(good, bad)],
                           [i for i, _, _, _ in triples], len(requests))

    ok = [i for i, r in enumerate(requests) if isinstance(r.get("ground_truth"), str)
          and r["ground_truth"].strip() and r["ground_truth"] != r["target_new"]]
    edit = [(i, requests[i]["prompt"], requests[i]["target_new"], requests[i]["ground_truth"])
            for i in ok]
    para = [(i, requests[i]["rephrase_prompt"], requests[i]["target_new"],
             requests[i]["ground_truth"]) for i in ok if requests[i].get("rephrase_prompt")]
    ok = set(ok)
    neigh = [(i, p, g, requests[i]["target_new"]) for i, p, g in _locality_pairs(requests)
             if i in ok and g == requests[i]["ground_truth"]]
    per = {"efficacy_score": prefer(edit), "paraphrase_score": prefer(para),
           "neighborhood_score": prefer(neigh)}
    out: Dict[str, Any] = {k: pooled_mean(v) for k, v in per.items()}
    out["neighborhood_prompts"] = len(neigh)
    if per_edit:
        out["per_edit"] = per
    return out


def per_request(scores: Sequence[float], owners: Sequence[int], n: int) -> List[List[float]]:
    """``[sum, count]`` of ``scores`` per request (``owners[j]`` is the index of the request
    ``scores[j]`` belongs to): the unit a bootstrap over edits resamples."""
    out = [[0.0, 0] for _ in range(n)]
    for s, i in zip(scores, owners):
        out[i][0] += s
        out[i][1] += 1
    return out


def pooled_mean(per: Sequence[Sequence[float]]) -> float:
    """Mean of every score of :func:`per_request`'s lists (NaN when there is none)."""
    count = sum(c for _, c in per)
    return sum(s for s, _ in per) / count if count else float("nan")


def evaluate_requests(model, tok, requests: Sequence[dict],
                      locality_before: Optional[Sequence[torch.Tensor]] = None,
                      generation: bool = True, batch_size: int = 32,
                      progress: bool = False, per_edit: bool = False) -> Dict[str, Any]:
    """Mean scores over ``requests``: ``reliability`` / ``generalization`` (token accuracy),
    ``reliability_em`` / ``generalization_em`` (generation exact match, if ``generation``),
    ``locality`` (when ``locality_before`` is given). ``per_edit`` adds, under
    ``"per_edit"``, each score's :func:`per_request` list (for intervals over edits)."""
    kw = {"batch_size": batch_size, "progress": progress}
    n = len(requests)
    every = list(range(n))
    prompts = [r["prompt"] for r in requests]
    targets = [r["target_new"] for r in requests]
    reph = [i for i, r in enumerate(requests) if r.get("rephrase_prompt")]
    reph_prompts = [requests[i]["rephrase_prompt"] for i in reph]
    reph_targets = [requests[i]["target_new"] for i in reph]

    per = {"reliability": per_request(token_accuracy(model, tok, prompts, targets, **kw),
                                      every, n)}
    if reph:
        per["generalization"] = per_request(
            token_accuracy(model, tok, reph_prompts, reph_targets, **kw), reph, n)
    if generation:
        per["reliability_em"] = per_request(exact_match(model, tok, prompts, targets, **kw),
                                            every, n)
        if reph:
            per["generalization_em"] = per_request(
                exact_match(model, tok, reph_prompts, reph_targets, **kw), reph, n)
    if locality_before is not None:
        owners = [i for i, _, _ in _locality_pairs(requests)]
        per["locality"] = per_request(
            locality_scores(locality_before, locality_snapshot(model, tok, requests, **kw)),
            owners, n)
    out: Dict[str, Any] = {"n": n, **{k: pooled_mean(v) for k, v in per.items()}}
    if per_edit:
        out["per_edit"] = per
    return out


@dataclass
class EditReport:
    """What :func:`edit_and_score` measured. ``before`` / ``after`` hold
    :func:`evaluate_requests`' scores (``before`` only when asked for) and, with
    ``probabilities``, CounterFact's :func:`probability_scores` under ``"probability"``."""

    model: Any
    weights_copy: Dict[str, torch.Tensor]
    seconds: float                      # the edit alone
    before: Dict[str, Any] = field(default_factory=dict)
    after: Dict[str, Any] = field(default_factory=dict)
    answers_before: List[str] = field(default_factory=list)
    answers_after: List[str] = field(default_factory=list)


@dataclass
class Unedited:
    """What :func:`edit_and_score` measures on the model before editing it: the locality
    snapshot (:func:`locality_snapshot`), ``before`` (``pre_scores`` and, under
    ``"probability"``, CounterFact's probability scores) and the greedy ``answers``. A caller
    that edits the same model on the same requests more than once (a benchmark row paused
    and resumed in a new process) can keep it and pass it back instead of measuring again."""

    locality: List[torch.Tensor]
    before: Dict[str, Any] = field(default_factory=dict)
    answers: List[str] = field(default_factory=list)


def measure_unedited(model, tok, requests: Sequence[dict], pre_scores: bool = False,
                     probabilities: bool = False, answers: int = 0, progress: bool = False,
                     batch_size: int = 32) -> Unedited:
    """:class:`Unedited` of ``model`` (take it before editing); arguments as in
    :func:`edit_and_score`."""
    kw = {"progress": progress, "batch_size": batch_size}
    prompts = [r["prompt"] for r in requests[:answers]]
    snapshot = Unedited(locality_snapshot(model, tok, requests, **kw))
    if pre_scores:  # locality of the unedited model against its own snapshot: 1 (or NaN)
        snapshot.before.update(evaluate_requests(model, tok, requests, snapshot.locality,
                                                 generation=False, **kw))
    if probabilities:
        snapshot.before["probability"] = probability_scores(model, tok, requests, **kw)
    snapshot.answers = generate_answers(model, tok, prompts, **kw) if prompts else []
    return snapshot


def edit_and_score(model, tok, requests: Sequence[dict], edit: Callable[[Any], Any],
                   generation: bool = True, pre_scores: bool = False,
                   probabilities: bool = False, answers: int = 0,
                   progress: bool = False, per_edit: bool = False,
                   batch_size: int = 32, unedited: Optional[Unedited] = None) -> EditReport:
    """Snapshot the unedited model, run ``edit(model)`` (timed), score the edited one.

    ``edit`` returns the edited model, or ``(edited_model, weights_copy)`` as EasyEdit's
    methods do (e.g. ``lambda m: apply_locft_to_model(m, tok, requests, hp)``). Before it:
    the locality snapshot, ``pre_scores`` (teacher-forced scores of the unedited model),
    ``probabilities`` (CounterFact's probability scores) and the greedy answers to the first
    ``answers`` prompts (:func:`measure_unedited`; ``unedited``: those measured earlier, on
    this model and these requests with these arguments). After it: :func:`evaluate_requests`
    (with generation exact match when ``generation``), the probability scores and the answers
    again; ``per_edit`` keeps each score's per-request lists in ``after`` (see
    :func:`evaluate_requests`); ``batch_size``: prompts per scoring forward (1 for an editor
    that routes whole batches)."""
    kw = {"progress": progress, "batch_size": batch_size}
    prompts = [r["prompt"] for r in requests[:answers]]
    if unedited is None:
        unedited = measure_unedited(model, tok, requests, pre_scores, probabilities, answers,
                                    **kw)
    elif (len(unedited.answers) != len(prompts)
          or probabilities != ("probability" in unedited.before)
          or len(unedited.locality) != len(_locality_pairs(requests))):
        raise ValueError("unedited: measured for other requests or other arguments "
                         f"({len(unedited.locality)} locality prompts, "
                         f"{len(unedited.answers)} answers, probability scores: "
                         f"{'probability' in unedited.before}); measure it again")
    t0 = time.perf_counter()
    out = edit(model)
    seconds = time.perf_counter() - t0
    model, weights_copy = out if isinstance(out, tuple) else (out, {})
    after = evaluate_requests(model, tok, requests, unedited.locality, generation=generation,
                              per_edit=per_edit, **kw)
    if probabilities:
        after["probability"] = probability_scores(model, tok, requests, per_edit=per_edit, **kw)
    answers_after = generate_answers(model, tok, prompts, **kw) if prompts else []
    return EditReport(model, weights_copy, seconds, dict(unedited.before), after,
                      list(unedited.answers), answers_after)
