"""Dataset files -> request dicts: ZsRE (EasyEdit's ``zsre_mend_eval`` layout), CounterFact
(EasyEdit's processed layout and the original ROME/MEMIT ``requested_rewrite`` layout) and
WikiBigEdit, producing the same requests as EasyEdit's own loaders; and plain requests files.
Validation of the requests themselves is the method's (:mod:`locft_easyedit.locft.requests`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

from .locft.errors import RequestError
from .locft.requests import validate_requests

DATASETS = ("zsre", "counterfact", "wikibigedit")


def _locality(prompt: Optional[str], answer: Any, name: str = "neighborhood") -> dict:
    if not prompt:
        return {}
    if isinstance(answer, list):
        answer = answer[0] if answer else ""
    return {name: {"prompt": prompt, "ground_truth": answer}}


def from_zsre(record: dict) -> dict:
    """ZsRE (EasyEdit ``zsre_mend_eval``): src/alt/rephrase/loc/loc_ans.

    The locality prompt keeps its ``nq question: `` prefix, as EasyEdit's ``ZsreDataset`` and
    example scripts (and ROME/MEND's ZsRE evaluation) do."""
    loc = record.get("loc") or ""
    answers = record.get("answers") or [""]
    return {"prompt": record["src"], "target_new": record["alt"],
            "ground_truth": answers[0] if isinstance(answers, list) else answers,
            "rephrase_prompt": record.get("rephrase"),
            "subject": record.get("subject"),
            "locality": _locality(loc, record.get("loc_ans"))}


def from_counterfact(record: dict) -> dict:
    """CounterFact: EasyEdit's processed layout, or ROME/MEMIT's ``requested_rewrite``."""
    if "requested_rewrite" in record:  # original ROME/MEMIT layout
        rw = record["requested_rewrite"]
        prompt = rw["prompt"].format(rw["subject"]) if "{}" in rw["prompt"] else rw["prompt"]
        para = record.get("paraphrase_prompts") or [None]
        nb = list(record.get("neighborhood_prompts") or [])
        truth = rw["target_true"]["str"]
        # every neighbourhood prompt, each answered by the true target (EasyEdit's examples)
        locality = ({"neighborhood": {"prompt": nb, "ground_truth": [truth] * len(nb)}}
                    if nb else {})
        return {"prompt": prompt, "target_new": rw["target_new"]["str"],
                "ground_truth": truth, "rephrase_prompt": para[0],
                "subject": rw["subject"], "case_id": record.get("case_id"),
                "locality": locality}
    return {"prompt": record["prompt"], "target_new": record["target_new"],
            "ground_truth": record.get("ground_truth"),
            "rephrase_prompt": record.get("rephrase_prompt"), "subject": record.get("subject"),
            "case_id": record.get("case_id"),
            "locality": _locality(record.get("locality_prompt"),
                                  record.get("locality_ground_truth"))}


def from_wikibigedit(record: dict) -> dict:
    """WikiBigEdit: prompt/target_new/rephrase_prompt/locality_prompt."""
    return {"prompt": record["prompt"], "target_new": record["target_new"],
            "ground_truth": record.get("ground_truth"),
            "rephrase_prompt": record.get("rephrase_prompt"), "subject": record.get("subject"),
            "locality": _locality(record.get("locality_prompt"),
                                  record.get("locality_ground_truth"))}


READERS = {"zsre": from_zsre, "counterfact": from_counterfact, "wikibigedit": from_wikibigedit}


def guess_dataset(record: dict) -> str:
    if "src" in record and "alt" in record:
        return "zsre"
    if "requested_rewrite" in record or "case_id" in record or "ground_truth" in record:
        return "counterfact"
    return "wikibigedit"


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RequestError(f"requests file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"{path}: malformed JSON: {exc}") from None


def load_dataset(path: str | Path, dataset: Optional[str] = None, n: Optional[int] = None,
                 offset: int = 0) -> List[dict]:
    """Requests from a ZsRE / CounterFact / WikiBigEdit file (``dataset=None`` guesses)."""
    records = read_json(path)
    if not isinstance(records, list) or not records:
        raise RequestError(f"{path}: expected a non-empty JSON list of records")
    name = dataset or guess_dataset(records[0])
    if name not in READERS:
        raise RequestError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if name == "zsre":  # records without a new answer are no edits (EasyEdit skips them too)
        records = [r for r in records if not (isinstance(r, dict) and r.get("alt") == "")]
    records = records[offset: None if n is None else offset + n]
    out = []
    for i, rec in enumerate(records):
        try:
            out.append(READERS[name](rec))
        except (KeyError, TypeError, AttributeError) as exc:
            raise RequestError(f"{path}: record {offset + i} is not in the {name} layout "
                               f"(missing {exc})") from None
    return out


def load_requests(path: str | Path) -> List[dict]:
    """A plain requests file: a JSON list of request dicts (validated)."""
    return validate_requests(read_json(path))


