"""The embedded model's folder: a wrongly converted tokenizer is refused, not used.

transformers 5.5.4 (EasyEdit's pin) reads the GGUF's tokenizer as a CodeLlamaTokenizer that
puts <|im_start|> first and <unk> between words; on a new machine where EasyEdit's venv
converted first, MEMIT's rows scored 0.18 with it (2026-12-04)."""
import types

import pytest
import transformers

from locft_easyedit import models
from locft_easyedit.locft.errors import LocFTInputError

WRONG = [1, 0, 504, 0, 3575, 0, 282, 0, 4649, 0, 314, 0, 7042]  # what 5.5.4's folder gives


class FakeTokenizer:
    def __init__(self, ids):
        self.ids = ids

    def __call__(self, text):
        assert text == models.PROBE_TEXT
        return types.SimpleNamespace(input_ids=self.ids)


def test_tokenizer_problem_names_what_the_probe_gave():
    assert models.tokenizer_problem(FakeTokenizer(list(models.PROBE_IDS))) is None
    assert models.tokenizer_problem(FakeTokenizer(WRONG)) == (
        "FakeTokenizer tokenizes 'The capital of France is Paris' as "
        "[1, 0, 504, 0, 3575, 0, 282, 0, 4649, 0] ..., not SmolLM2's "
        "[504, 3575, 282, 4649, 314, 7042]")


def test_a_folder_with_a_wrong_tokenizer_is_refused_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "locft_easyedit" / models.CONVERTED_NAME
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text("{}")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda path, **kw: FakeTokenizer(WRONG))
    with pytest.raises(LocFTInputError) as err:
        models.default_model_dir(fetch=False)
    assert f"the embedded model's folder {folder} holds a wrongly converted tokenizer" \
        in str(err.value)
    assert "Delete the folder" in str(err.value) and models.LOAD_ONCE in str(err.value)
    # the same folder with a right tokenizer (a new tokenizer file) is used
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda path, **kw: FakeTokenizer(list(models.PROBE_IDS)))
    (folder / "tokenizer_config.json").write_text('{"again": 1}')
    import os
    os.utime(folder / "tokenizer_config.json", ns=(1, 1))
    assert models.default_model_dir(fetch=False) == folder


def test_a_transformers_that_reads_the_tokenizer_wrongly_converts_nothing(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda path, **kw: FakeTokenizer([1] + list(models.PROBE_IDS)))

    def no_weights(*a, **kw):
        raise AssertionError("the weights are not read when the tokenizer is wrong")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    out = tmp_path / models.CONVERTED_NAME
    with pytest.raises(LocFTInputError, match=f"transformers {transformers.__version__} reads "
                       "the tokenizer of x.gguf wrongly"):
        models._convert(tmp_path / "x.gguf", out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_embedded_tokenizer_gives_smollm2s_ids(embedded):
    assert models.tokenizer_problem(embedded[1]) is None
