"""A tiny randomly initialised Llama model, an offline tokenizer and synthetic facts.

For unit tests and throughput benchmarks: everything is built in memory in a second, nothing
is downloaded. The tokenizer is a byte-level BPE trained on the synthetic facts themselves,
so leading spaces behave as in real LLaMA-family tokenizers.
"""
from __future__ import annotations

import random
from typing import List, Tuple

SUBJECTS = ["Aldor", "Brenna", "Cavex", "Dunmore", "Elvira", "Fosk", "Garnet", "Holm",
            "Ivrel", "Jaska", "Kelmor", "Lunet", "Marrow", "Nessa", "Orlin", "Pyra",
            "Quill", "Rosk", "Sable", "Tamsin", "Ulric", "Vessa", "Wren", "Xilo",
            "Yarrow", "Zephyr", "Arden", "Bastion", "Corvid", "Delmar", "Eskar", "Fenwick"]
RELATIONS = ["The capital of {} is", "{} was born in", "The language of {} is",
             "{} works for", "The currency of {} is", "{} plays the"]
OBJECTS = ["Paris", "Lima", "Oslo", "Kyoto", "Quito", "Cairo", "Dakar", "Hanoi", "Rome",
           "Seoul", "Tunis", "Accra", "Baku", "Doha", "Minsk", "Riga", "piano", "violin",
           "Nokia", "Siemens", "euro", "peso", "French", "Tamil", "Basque", "Welsh"]


def synthetic_facts(n: int = 32, seed: int = 0) -> List[dict]:
    """``n`` distinct requests ``{prompt, target_new, rephrase_prompt, subject}`` over made-up subjects
    (prompts unique; subjects get a numeric suffix beyond the name list)."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        subj = rng.choice(SUBJECTS)
        if len(seen) >= len(SUBJECTS) * len(RELATIONS) // 2:
            subj = f"{subj}{rng.randrange(10**6)}"
        rel = rng.choice(RELATIONS)
        prompt = rel.format(subj)
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append({"prompt": prompt, "target_new": rng.choice(OBJECTS),
                    "rephrase_prompt": "Q: " + prompt, "subject": subj})
    return out


def build_tokenizer(extra_text: List[str] = ()):
    """A byte-level BPE tokenizer (vocab ~600) with BOS/EOS/PAD, as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [r.format(s) + " " + o for r in RELATIONS for s in SUBJECTS for o in OBJECTS[:3]]
    corpus += [" " + o for o in OBJECTS] + list(extra_text)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer)
    from tokenizers.processors import TemplateProcessing

    bpe.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", padding_side="right")


def build_tiny_model(vocab_size: int, layers: int = 4, hidden: int = 64,
                     intermediate: int = 128, seed: int = 0, **overrides):
    """A randomly initialised ``LlamaForCausalLM`` (float32, eval mode)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden,
                         intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         bos_token_id=0, eos_token_id=1, pad_token_id=2, **overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    return model


def tiny_setup(n_facts: int = 32, seed: int = 0, **model_kw) -> Tuple[object, object, List[dict]]:
    """``(model, tokenizer, facts)`` ready for a unit test."""
    tok = build_tokenizer()
    return build_tiny_model(len(tok), seed=seed, **model_kw), tok, synthetic_facts(n_facts, seed)


def build_sentencepiece_tokenizer(extra_text: List[str] = (), vocab_size: int = 400):
    """A Llama-2-style SentencePiece BPE tokenizer (``<s>`` 0, ``</s>`` 1, ``<pad>`` 2,
    ``<unk>`` 3) trained offline on the synthetic facts, as a PreTrainedTokenizerFast.

    It has the layout of Llama-2's / Mistral-v0.1's ``tokenizer.json`` under transformers 4.x
    ("legacy"): the normalizer prepends "▁" to EVERY text and turns spaces into "▁", there is
    no pre-tokenizer, BOS is added. So a text that starts with a space gets a lone "▁" first:
    " Paris" alone is ``['▁', '▁Paris']`` while "... is Paris" ends in ``'▁Paris'``, which is
    what joint tokenization of prompt + target is for. (A ``Metaspace`` pre-tokenizer with
    ``prepend_scheme="always"`` would not show it: it prepends only to a text that does not
    already start with "▁".) Pieces never join across a word start: the vocabulary is learnt
    with a whitespace split, as SentencePiece does. No byte fallback: other characters are
    ``<unk>``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    corpus = [r.format(s) + " " + o for r in RELATIONS for s in SUBJECTS for o in OBJECTS[:3]]
    corpus += [" " + o for o in OBJECTS] + list(extra_text)
    sp = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    sp.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                          normalizers.Replace(" ", "▁")])
    # learn pieces within words only, then tokenize the whole text as Llama-2's file does
    sp.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never",
                                                split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size,
                                  special_tokens=["<s>", "</s>", "<pad>", "<unk>"])
    sp.train_from_iterator(corpus, trainer)
    sp.pre_tokenizer = None
    sp.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    sp.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=sp, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="right")
