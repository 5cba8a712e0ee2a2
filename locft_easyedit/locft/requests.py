"""Edit requests: validate and normalise them (reading dataset files is left to the caller).

A request is a dict in EasyEdit's layout::

    {"prompt": str, "target_new": str,                      # what training sees
     "ground_truth": str, "rephrase_prompt": str,            # evaluation only
     "locality": {name: {"prompt": [...], "ground_truth": [...]}}, "subject": str}

Only ``prompt`` and ``target_new`` are required.
"""
from __future__ import annotations

import logging
from typing import Any, List

from .errors import RequestError

logger = logging.getLogger(__name__)

def normalise_target(target: str) -> str:
    """The paper's target text: a leading space when missing."""
    return target if target[:1].isspace() else " " + target


CONFLICT_POLICIES = ("error", "warn")


def _show(value: Any, limit: int = 60) -> str:
    """``repr`` of an offending value, shortened for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _text(value: Any, where: str, empty_ok: bool = False) -> str:
    """``value`` as UTF-8-encodable text, or :class:`RequestError` naming ``where`` and it."""
    if not isinstance(value, str):
        raise RequestError(f"{where} must be a string, got {type(value).__name__} {_show(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{where} is not valid text (a lone surrogate?): {_show(value)}") \
            from None
    if not empty_ok and not value.strip():
        raise RequestError(f"{where} is empty: {_show(value)}")
    return value


def _texts(value: Any, where: str, nested: bool = False) -> None:
    """A string or a list of strings (``nested``: or of lists of strings)."""
    if isinstance(value, list):
        for j, item in enumerate(value):
            if nested and isinstance(item, list):
                _texts(item, f"{where}[{j}]")
            else:
                _text(item, f"{where}[{j}]", empty_ok=True)
    else:
        _text(value, where, empty_ok=True)


def _check_probe_sets(value: Any, where: str) -> None:
    """EasyEdit's ``locality`` / ``portability`` layout: ``{name: {prompt, ground_truth}}``."""
    shape = f"{{name: {{'prompt': ..., 'ground_truth': ...}}}}"
    if not isinstance(value, dict):
        raise RequestError(f"{where} must be a dict {shape}, got {type(value).__name__} "
                           f"{_show(value)}")
    for name, item in value.items():
        at = f"{where}[{name!r}]"
        if not isinstance(item, dict):
            raise RequestError(f"{at} must be a dict with 'prompt' and 'ground_truth', got "
                               f"{type(item).__name__} {_show(item)}")
        for key in ("prompt", "ground_truth"):
            if key not in item:
                raise RequestError(f"{at} has no {key!r} (keys: {sorted(map(str, item))})")
        _texts(item["prompt"], f"{at}['prompt']")
        _texts(item["ground_truth"], f"{at}['ground_truth']", nested=True)
        ps, gs = item["prompt"], item["ground_truth"]
        if isinstance(ps, list) and isinstance(gs, list) and len(ps) != len(gs):
            raise RequestError(f"{at}: {len(ps)} prompts but {len(gs)} ground_truth answers")


SHOWN_CONFLICTS = 3  # conflicts spelled out in the warning / error; the rest are counted


def validate_requests(requests: Any, conflicting_targets: str = "warn") -> List[dict]:
    """Check every request before any work; return them as a list of (copied) dicts.

    Raises :class:`RequestError` naming the request index, the field and the offending value:
    a missing, empty or non-string ``prompt`` / ``target_new`` (ROME's ``{"str": ...}`` is
    unwrapped), a non-string ``rephrase_prompt`` / ``subject``, a ``ground_truth`` that is not a
    string or list of strings, a malformed ``locality`` / ``portability``. Other keys pass.

    The same prompt twice with the same target (after the leading space is added) is fine:
    both copies train. The same prompt with different targets (the authors' CounterFact 3K
    file has five) is, with ``conflicting_targets='warn'`` (the default, as the authors train
    both), one logged warning that counts them and shows the first few, all trained; with
    ``'error'`` a RequestError naming the first ones, before any work.
    """
    if conflicting_targets not in CONFLICT_POLICIES:
        raise RequestError(f"conflicting_targets must be one of {CONFLICT_POLICIES}, "
                         f"got {conflicting_targets!r}")
    if isinstance(requests, dict):
        requests = [requests]
    if not isinstance(requests, (list, tuple)):
        raise RequestError(f"requests must be a list of dicts, got {type(requests).__name__} "
                           f"{_show(requests)}")
    if len(requests) == 0:
        raise RequestError("no edit requests given: pass at least one {prompt, target_new} dict")
    seen: dict = {}
    out, conflicts, conflicted = [], [], set()
    for i, req in enumerate(requests):
        if not isinstance(req, dict):
            raise RequestError(f"request {i}: must be a dict, got {type(req).__name__} "
                               f"{_show(req)}")
        req = dict(req)
        for key in ("prompt", "target_new"):
            if key not in req:
                near = [k for k in req if isinstance(k, str) and k.lower().replace("-", "_") in
                        (key, "target", "new_target", "src", "alt", "question", "answer")]
                hint = f" (found {near}; rename to {key!r})" if near else ""
                raise RequestError(f"request {i}: missing field {key!r}{hint}")
            value = req[key]
            if isinstance(value, dict) and "str" in value:  # ROME layout {"str": ...}
                value = value["str"]
            req[key] = _text(value, f"request {i}: field {key!r}")
        for key in ("rephrase_prompt", "subject"):
            if req.get(key) is not None:
                _text(req[key], f"request {i}: field {key!r}", empty_ok=True)
        if req.get("ground_truth") is not None:
            _texts(req["ground_truth"], f"request {i}: field 'ground_truth'")
        for key in ("locality", "portability"):
            if req.get(key) is not None:
                _check_probe_sets(req[key], f"request {i}: field {key!r}")
        prompt, target = req["prompt"], normalise_target(req["target_new"])
        if prompt in seen and seen[prompt][1] != target:
            conflicted.add(prompt)
            conflicts.append(f"request {i}: prompt {_show(prompt)} already has target "
                             f"{_show(seen[prompt][1].strip())} (request {seen[prompt][0]}), "
                             f"now {_show(target.strip())}")
        seen.setdefault(prompt, (i, target))
        out.append(req)
    if conflicts:
        more = len(conflicts) - SHOWN_CONFLICTS
        shown = "; ".join(conflicts[:SHOWN_CONFLICTS]) + (f"; and {more} more" if more > 0 else "")
        head = (f"{len(conflicts)} request(s) give a prompt a second, different target "
                f"({len(conflicted)} prompt(s)): ")
        if conflicting_targets == "error":
            raise RequestError(head + shown + "; drop one of each, or set conflicting_targets: "
                               "warn to train both (as the paper's authors do)")
        logger.warning("%s%s; both are trained (conflicting_targets: warn)", head, shown)
    return out
