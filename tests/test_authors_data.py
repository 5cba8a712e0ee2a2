"""The authors' 3K data files (ICT-STAR/LocFT, data/{zsre,counterfact,wikibigedit}/*_3k.json)
load and validate with the paper's own LLaMA3-8B settings, as the paper ran them.

The files are not in this repository: point LOCFT_AUTHORS_DATA at a folder holding
zsre_3k.json, counterfact_3k.json and wikibigedit_3k.json (e.g. copied out of the authors'
repository); without it these tests are skipped, saying so. Tuning, tests and benchmarks use
the 2,000-record files of ../shared/data.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from locft_easyedit import LocFTHyperParams, load_dataset, validate_requests
from locft_easyedit.locft.encoding import encode_requests

FOLDER = os.environ.get("LOCFT_AUTHORS_DATA")


def authors_file(name: str) -> Path:
    if not FOLDER:
        pytest.skip("LOCFT_AUTHORS_DATA is not set (a folder with the authors' 3K files)")
    path = Path(FOLDER) / name
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.mark.parametrize("name, dataset, conflicts", [
    ("zsre_3k.json", "zsre", 0), ("counterfact_3k.json", "counterfact", 7),
    ("wikibigedit_3k.json", "wikibigedit", 0)])
def test_authors_file_validates_with_the_papers_yaml(name, dataset, conflicts, tiny_tok, caplog):
    hp = LocFTHyperParams.from_hparams("llama3-8b")  # the published configuration, as shipped
    requests = load_dataset(authors_file(name))      # the layout is recognised by itself
    assert requests == load_dataset(authors_file(name), dataset)
    with caplog.at_level(logging.WARNING):
        valid = validate_requests(requests, hp.conflicting_targets)
    assert len(valid) == 3000
    assert all(r.get("rephrase_prompt") and r.get("locality") for r in valid)
    warned = [r.getMessage() for r in caplog.records if "second, different target" in r.getMessage()]
    if conflicts:  # 'Frank Lampard, the' -> basketball and -> quarterback, ...: both train
        assert len(warned) == 1 and warned[0].startswith(f"{conflicts} request(s) give a prompt "
                                                         "a second, different target (5 prompt(s))")
    else:
        assert warned == []
    assert len(encode_requests(tiny_tok, valid, hp.append_eos, hp.max_length)) == 3000
