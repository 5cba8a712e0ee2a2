"""Tiny randomly initialised causal LMs of the model families LocFT ships hparams for (or
is likely to meet), each with the rewrite template(s) its shipped-YAML analogue uses.

``FAMILIES[name](vocab_size)`` -> ``(model, templates)``: float32, eval mode, seeded, hidden
64, 4 layers, 4 heads, intermediate 128, BOS/EOS/PAD = 0/1/2 (as
:func:`locft_easyedit.synthetic.build_tiny_model` and the tiny tokenizer). Built from the
transformers config classes directly: nothing is downloaded. The features that make a family
different for the fast path (head scaling / soft-capping, tied embeddings, sliding windows,
per-layer attention types, fused projections, Conv1D) are switched on with values large
enough to matter on a random model.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch

HIDDEN, LAYERS, HEADS, INTERMEDIATE, MAX_POS = 64, 4, 4, 128, 256
SPECIAL = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
SEED = 0
# shorter than every synthetic prompt (>= 5 tokens with BOS), so the window really masks
SLIDING_WINDOW = 4

Builder = Callable[[int], Tuple[torch.nn.Module, List[str]]]


def _build(model_cls, config, templates: List[str]):
    torch.manual_seed(SEED)
    model = model_cls(config).float()
    model.eval()
    return model, templates


def _decoder(config_cls, vocab_size: int, **kw):
    """Llama-style keyword arguments shared by the ``model.layers`` families."""
    args = dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=2,
                max_position_embeddings=MAX_POS, **SPECIAL)
    args.update(kw)
    return config_cls(**args)


def llama(vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = _decoder(LlamaConfig, vocab_size, tie_word_embeddings=False)
    return _build(LlamaForCausalLM, cfg, ["model.layers.{}.mlp.down_proj.weight"])


def qwen2(vocab_size: int):
    """Tied input/output embeddings (as Qwen2.5 <= 3B), q/k/v biases."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = _decoder(Qwen2Config, vocab_size, tie_word_embeddings=True)
    return _build(Qwen2ForCausalLM, cfg, ["model.layers.{}.mlp.down_proj.weight"])


def qwen3(vocab_size: int):
    """q/k RMS norms, explicit head_dim."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = _decoder(Qwen3Config, vocab_size, head_dim=HIDDEN // HEADS, tie_word_embeddings=False)
    return _build(Qwen3ForCausalLM, cfg, ["model.layers.{}.mlp.down_proj.weight"])


def mistral(vocab_size: int):
    """The whole decoder layer trained (mistral-7b.yaml's ``model.layers.{}``) and a sliding
    window shorter than the prompts."""
    from transformers import MistralConfig, MistralForCausalLM

    cfg = _decoder(MistralConfig, vocab_size, sliding_window=SLIDING_WINDOW,
                   head_dim=HIDDEN // HEADS, tie_word_embeddings=False)
    return _build(MistralForCausalLM, cfg, ["model.layers.{}"])


def gemma2(vocab_size: int):
    """Final-logit and attention soft-capping (small caps, so they bind), sliding / global
    layers alternating (``layer_types``: 0 sliding, 1 full, 2 sliding, 3 full), embedding
    scaled by sqrt(hidden), tied embeddings."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = _decoder(Gemma2Config, vocab_size, head_dim=HIDDEN // HEADS,
                   final_logit_softcapping=2.0, attn_logit_softcapping=5.0,
                   sliding_window=SLIDING_WINDOW, query_pre_attn_scalar=HIDDEN // HEADS,
                   tie_word_embeddings=True)
    return _build(Gemma2ForCausalLM, cfg, ["model.layers.{}.mlp.down_proj.weight"])


def granite(vocab_size: int):
    """Logits divided by ``logits_scaling``; residual, embedding and attention multipliers."""
    from transformers import GraniteConfig, GraniteForCausalLM

    cfg = _decoder(GraniteConfig, vocab_size, logits_scaling=4.0, residual_multiplier=0.5,
                   embedding_multiplier=3.0, attention_multiplier=0.2,
                   tie_word_embeddings=False)
    return _build(GraniteForCausalLM, cfg, ["model.layers.{}.mlp.down_proj.weight"])


def phi3(vocab_size: int):
    """Fused ``qkv_proj`` and ``gate_up_proj``; the template edits ``down_proj``."""
    from transformers import Phi3Config, Phi3ForCausalLM

    cfg = _decoder(Phi3Config, vocab_size, original_max_position_embeddings=MAX_POS,
                   tie_word_embeddings=False)
    return _build(Phi3ForCausalLM, cfg, ["model.layers.{}.mlp.down_proj.weight"])


def gpt2(vocab_size: int):
    """Conv1D layers (weights stored [in, out]), learned positions, tied embeddings."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab_size, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                     n_inner=INTERMEDIATE, n_positions=MAX_POS, **SPECIAL)
    return _build(GPT2LMHeadModel, cfg, ["transformer.h.{}.mlp.c_proj.weight"])


def gptj(vocab_size: int):
    """Parallel attention + MLP, partial rotary, untied head with a bias."""
    from transformers import GPTJConfig, GPTJForCausalLM

    cfg = GPTJConfig(vocab_size=vocab_size, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                     n_inner=INTERMEDIATE, n_positions=MAX_POS, rotary_dim=8,
                     tie_word_embeddings=False, **SPECIAL)
    return _build(GPTJForCausalLM, cfg, ["transformer.h.{}.mlp.fc_out.weight"])


FAMILIES: Dict[str, Builder] = {
    "llama": llama,
    "qwen2-tied": qwen2,
    "qwen3": qwen3,
    "mistral-sliding-whole-layer": mistral,
    "gemma2": gemma2,
    "granite": granite,
    "phi3": phi3,
    "gpt2": gpt2,
    "gptj": gptj,
}
