"""Joint tokenization of prompt + target (locft_easyedit.locft.encoding): exact ids and
boundaries on the byte-level BPE test tokenizer and on a Llama-2-style SentencePiece one."""
import json
import logging

import pytest
import torch

from locft_easyedit.evaluate import target_predictions, token_accuracy
from locft_easyedit.locft import encoding
from locft_easyedit.locft.encoding import encode_one, encode_requests, split_at_offsets
from locft_easyedit.locft.errors import RequestError
from locft_easyedit.synthetic import build_sentencepiece_tokenizer, build_tiny_model

LOGGER = "locft_easyedit.locft.encoding"


@pytest.fixture(scope="module")
def sp_tok():
    return build_sentencepiece_tokenizer()


def separate(tok, prompt, target, eos=True):
    """The encoding before joint tokenization: prompt and target tokenized apart."""
    p = tok(prompt, add_special_tokens=True)["input_ids"]
    t = tok(" " + target, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] * eos)
    return tuple(p + t), len(p)


def joint(tok, prompt, target):
    return tok(prompt + " " + target, add_special_tokens=True)["input_ids"]


def pieces(tok, ids):
    return tok.convert_ids_to_tokens(list(ids))


class NoOffsets:
    """A tokenizer without character offsets, as transformers' Python ("slow") ones."""

    is_fast = False

    def __init__(self, tok):
        self.tok, self.eos_token_id, self.calls = tok, tok.eos_token_id, 0

    def __call__(self, text, return_offsets_mapping=False, **kw):
        if return_offsets_mapping:
            raise NotImplementedError("return_offset_mapping is not available when using "
                                      "Python tokenizers")
        self.calls += 1
        return self.tok(text, **kw)


def test_byte_level_joint_equals_separate(tiny_tok, facts):
    for f in facts:
        for eos in (True, False):
            e = encode_one(tiny_tok, f["prompt"], f["target_new"], append_eos=eos)
            assert (e.ids, e.prompt_len) == separate(tiny_tok, f["prompt"], f["target_new"], eos)
    # the prompt's trailing space stays with the prompt, as before
    e = encode_one(tiny_tok, "The capital of Aldor is ", "Paris")
    assert (e.ids, e.prompt_len) == separate(tiny_tok, "The capital of Aldor is ", "Paris")


def test_sentencepiece_tokenizer_shows_the_lone_piece(sp_tok):
    alone = pieces(sp_tok, sp_tok(" Paris", add_special_tokens=False)["input_ids"])
    assert alone == ["▁", "▁Paris"]  # separate: a lone "▁" before the target
    together = pieces(sp_tok, joint(sp_tok, "The capital of Aldor is", "Paris"))
    assert together == ["<s>", "▁The", "▁capital", "▁of", "▁Aldor", "▁is", "▁Paris"]
    assert sp_tok.decode(sp_tok("The capital of Aldor is Paris")["input_ids"],
                         skip_special_tokens=True) == "The capital of Aldor is Paris"


def test_sentencepiece_encoding_is_the_joint_one(sp_tok, facts):
    lone = sp_tok.convert_tokens_to_ids("▁")
    for f in facts:
        prompt, target = f["prompt"], f["target_new"]
        full = joint(sp_tok, prompt, target)
        e = encode_one(sp_tok, prompt, target)
        assert e.ids == tuple(full) + (sp_tok.eos_token_id,)
        assert e.ids[:e.prompt_len] == tuple(sp_tok(prompt)["input_ids"])
        assert e.ids[e.prompt_len] != lone
        assert sp_tok.decode(e.ids[e.prompt_len:]) == target + "</s>"
        assert sp_tok.decode(e.ids[e.prompt_len:], skip_special_tokens=True) == target
        old = separate(sp_tok, prompt, target)
        assert old[0][old[1]] == lone and e.ids != old[0]  # the bug this fixes
    e = encode_one(sp_tok, "The capital of Aldor is", "Paris")
    assert pieces(sp_tok, e.ids[e.prompt_len:]) == ["▁Paris", "</s>"] and e.prompt_len == 6


def test_prompt_ending_in_a_space(sp_tok):
    e = encode_one(sp_tok, "The capital of Aldor is ", "Paris", append_eos=False)
    # the prompt's own trailing space is a prompt token; the target is "▁Paris" alone
    assert pieces(sp_tok, e.ids[e.prompt_len - 1:]) == ["▁", "▁Paris"]


def test_append_eos_adds_exactly_one_eos(sp_tok, tiny_tok):
    for tok in (sp_tok, tiny_tok):
        with_eos = encode_one(tok, "The capital of Aldor is", "Paris", append_eos=True)
        without = encode_one(tok, "The capital of Aldor is", "Paris", append_eos=False)
        assert with_eos.ids == without.ids + (tok.eos_token_id,)
        assert with_eos.prompt_len == without.prompt_len
        assert with_eos.ids.count(tok.eos_token_id) == 1
        assert tok.eos_token_id not in without.ids


def test_template_eos_is_not_doubled():
    """A template that adds EOS after the text: the target ends with one EOS with append_eos
    and with none without it (the old separate encoding put one after the prompt too)."""
    from tokenizers.processors import TemplateProcessing

    tok = build_sentencepiece_tokenizer()
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)])
    assert pieces(tok, tok("X is Paris")["input_ids"])[-1] == "</s>"
    e = encode_one(tok, "The capital of Aldor is", "Paris")
    assert pieces(tok, e.ids) == ["<s>", "▁The", "▁capital", "▁of", "▁Aldor", "▁is", "▁Paris",
                                  "</s>"] and e.prompt_len == 6
    e = encode_one(tok, "The capital of Aldor is", "Paris", append_eos=False)
    assert pieces(tok, e.ids[e.prompt_len:]) == ["▁Paris"]


def test_truncation_keeps_the_target_whole(sp_tok, tiny_tok):
    for tok in (sp_tok, tiny_tok):
        prompt, target = "The capital of Aldor is", "Paris"
        full = encode_one(tok, prompt, target)
        cut = encode_one(tok, prompt, target, max_length=4)
        assert cut.length == 4 and cut.target_len == full.target_len == 2
        assert cut.ids == full.ids[-4:]  # the prompt's start (BOS included) is dropped
        assert cut.ids[cut.prompt_len:] == full.ids[full.prompt_len:]
        with pytest.raises(RequestError, match="max_length"):
            encode_one(tok, prompt, target, max_length=2)
        with pytest.raises(RequestError, match="request 1: .*max_length"):
            encode_requests(tok, [{"prompt": prompt, "target_new": target},
                                  {"prompt": prompt, "target_new": "Paris Lima Oslo"}],
                            max_length=3)


def _with_double_space_piece(tok):
    """``tok`` plus Llama-2's "▁▁" piece, merged first: in "X is " + " Paris" it spans the
    prompt's trailing space and the target's leading one."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    data = json.loads(tok.backend_tokenizer.to_str())
    data["model"]["vocab"]["▁▁"] = max(data["model"]["vocab"].values()) + 1
    data["model"]["merges"].insert(0, ["▁", "▁"])
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)),
                                   bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def test_straddling_token_falls_back_and_warns_once(sp_tok, caplog):
    tok = _with_double_space_piece(sp_tok)
    prompt = "The capital of Aldor is "
    enc = tok(prompt + " Paris", return_offsets_mapping=True)
    straddler = pieces(tok, enc["input_ids"]).index("▁▁")
    assert enc["offset_mapping"][straddler] == (len(prompt) - 1, len(prompt) + 1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        e = encode_one(tok, prompt, "Paris")
        assert (e.ids, e.prompt_len) == separate(tok, prompt, "Paris")
        e2 = encode_one(tok, "The capital of Brenna is ", "Lima")
        assert (e2.ids, e2.prompt_len) == separate(tok, "The capital of Brenna is ", "Lima")
        # requests without a straddle on the same tokenizer are still joint
        e3 = encode_one(tok, "The capital of Aldor is", "Paris")
        assert e3.ids == tuple(joint(tok, "The capital of Aldor is", "Paris")) + (1,)
    warnings = [r for r in caplog.records if r.name == LOGGER and "straddles" in r.message]
    assert len(warnings) == 1 and "tokenized separately" in warnings[0].message


def test_split_at_offsets_rules():
    # BOS (template), two prompt tokens, two target tokens, a template EOS
    ids, special = [9, 10, 11, 12, 13, 8], [1, 0, 0, 0, 0, 1]
    offsets = [(0, 0), (0, 3), (3, 6), (6, 12), (8, 12), (0, 0)]
    assert split_at_offsets(ids, offsets, special, 6) == ([9, 10, 11], [12, 13])
    # trimmed offsets (" Paris" reported without its space) still start after the prompt
    assert split_at_offsets(ids, [(0, 0), (0, 3), (3, 6), (7, 12), (8, 12), (0, 0)],
                            special, 6) == ([9, 10, 11], [12, 13])
    # a zero-width token at the boundary stays with the prompt
    assert split_at_offsets(ids, [(0, 0), (0, 3), (6, 6), (6, 12), (8, 12), (0, 0)],
                            special, 6) == ([9, 10, 11], [12, 13])
    # straddling: a token from inside the prompt into the target
    assert split_at_offsets(ids, [(0, 0), (0, 3), (3, 8), (8, 12), (9, 12), (0, 0)],
                            special, 6) is None
    # a target-side token that starts inside the prompt
    assert split_at_offsets(ids, [(0, 0), (0, 3), (3, 6), (6, 12), (5, 12), (0, 0)],
                            special, 6) is None
    # a template token (special, offsets (0, 0)) inside the text
    assert split_at_offsets(ids, [(0, 0), (0, 3), (0, 0), (6, 12), (8, 12), (0, 0)],
                            [1, 0, 1, 0, 0, 1], 6) is None
    # a special token written in the text (non-empty span) is text
    assert split_at_offsets(ids, offsets, [1, 1, 0, 0, 0, 1], 6) == ([9, 10, 11], [12, 13])


def test_without_offsets_probe_decides(sp_tok, tiny_tok, facts):
    # byte-level: the probe agrees, requests are tokenized separately (as always)
    slow = NoOffsets(tiny_tok)
    for f in facts[:8]:
        e = encode_one(slow, f["prompt"], f["target_new"])
        assert (e.ids, e.prompt_len) == separate(tiny_tok, f["prompt"], f["target_new"])
    assert encoding._probe_verdict.get(slow) is True
    assert encoding._offsets_verdict.get(slow) is False
    # SentencePiece: the probe disagrees, the prompt's ids are a prefix of the joint ones
    slow = NoOffsets(sp_tok)
    for f in facts[:8]:
        e = encode_one(slow, f["prompt"], f["target_new"])
        fast = encode_one(sp_tok, f["prompt"], f["target_new"])
        assert (e.ids, e.prompt_len) == (fast.ids, fast.prompt_len)
    assert encoding._probe_verdict.get(slow) is False
    calls = slow.calls
    encode_one(slow, "The capital of Aldor is", "Paris")
    assert slow.calls - calls == 3  # prompt alone, joint, prompt with BOS: no new probe


def test_without_offsets_no_prefix_falls_back(sp_tok, caplog):
    slow = NoOffsets(_with_double_space_piece(sp_tok))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(2):
            e = encode_one(slow, "The capital of Aldor is ", "Paris")
            assert (e.ids, e.prompt_len) == separate(slow.tok, "The capital of Aldor is ",
                                                     "Paris")
    assert len([r for r in caplog.records if "not a prefix" in r.message]) == 1


def test_token_accuracy_scores_the_joint_target_tokens(sp_tok, facts):
    model = build_tiny_model(len(sp_tok))
    prompts = [f["prompt"] for f in facts[:8]]
    targets = [f["target_new"] for f in facts[:8]]
    preds = target_predictions(model, sp_tok, prompts, targets, batch_size=3)
    accs = token_accuracy(model, sp_tok, prompts, targets, batch_size=3)
    for p, t, pred, acc in zip(prompts, targets, preds, accs):
        prompt_len = len(sp_tok(p)["input_ids"])
        full = joint(sp_tok, p, t)
        assert pred[1].tolist() == full[prompt_len:]  # no lone "▁", no EOS
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([full])).logits[0]
        want = logits[prompt_len - 1:len(full) - 1].argmax(-1)
        assert torch.equal(pred[0], want)
        assert acc == float((want == torch.tensor(full[prompt_len:])).float().mean())
