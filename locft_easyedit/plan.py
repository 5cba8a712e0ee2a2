"""``locft-edit plan``: will an edit fit, and how many steps is it? Estimated from the model's
config alone (the model is built on the meta device: no weights are read).

What an edit needs on top of the loaded model (``training_bytes``):

* the fast path's cache, as :class:`~.locft.losses.FastLoss` chooses it: at the module level
  (one linear module of the first trained layer trains, e.g. ``mlp.down_proj``) every token's
  input to that module plus the rest of the layer's output; else (or when that does not fit
  its budget) every token's hidden state entering the first trained layer;
* the trained tensors' fp32 master copies, their gradients and Adam's two moments (16 bytes a
  trained parameter);
* the activations autograd keeps for one mini-batch through the layers from the first trained
  one up (a per-token, per-layer count of saved values; see :data:`SAVED_PER_TOKEN`) plus the
  attention scores, in the model's dtype (at the module level, the first layer keeps only the
  trained module's input);
* the target-only logits of one mini-batch and their gradient, in float32;
* the locality options: the key basis each constrained linear weight keeps (``d_in`` x
  ``min(d_in, MAX_BASIS)`` float32, :mod:`~.locft.keys`), and, before training and only when
  the statistics are not cached yet, their computation (``key_compute_bytes``: the second
  moment ``d_in^2``, float64 up to 4,096 inputs, float32 above, and ``torch.linalg.eigh``'s
  eigenvectors and workspace, about three times that); the neighbour prompts
  (``neighbour_weight``) cached like the edits, ``neighbour_samples`` per edit, and their
  graph in the step that trains their edit.

A step builds its graphs one after the other: the edits' (freed by their backward), then the
preservation term's generic texts', then the neighbours'. The activations and logits reported
are those of the largest.

``peak_bytes`` = weights + the larger of training_bytes and key_compute_bytes (the key
statistics are computed, then freed, before training starts). The figures are estimates (the allocator, the
framework and fragmentation add to them); ``benchmarks/plan_check.py`` compares them with the
measured peak memory of real runs.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

# Values autograd keeps per token in one decoder layer, in units of (hidden, intermediate):
# norm inputs and outputs, q/k/v/o inputs and outputs, the attention output, the MLP's gate,
# up, activation and down_proj inputs (a Llama-style block; others are of the same order).
SAVED_PER_TOKEN = (10, 4)
GENERIC_OPENING = 12  # tokens of a generic opening of the preservation term (measured ~10-14)


@dataclass
class Plan:
    model: str
    dtype: str
    n_edits: int
    tokens_per_edit: float
    target_tokens_per_edit: float
    layers: int
    first_trained_layer: int
    trained_parameters: int
    steps: int
    weights_bytes: int
    cache_level: str
    prefix_cache_bytes: int
    master_adam_bytes: int
    activation_bytes: int
    logits_bytes: int
    key_basis_bytes: int
    key_compute_bytes: int
    training_bytes: int
    peak_bytes: int
    device: str
    device_bytes: Optional[int]
    fits: Optional[bool]

    def table(self) -> str:
        gb = lambda b: f"{b / 2**30:.2f} GB"
        rows = [("model", self.model), ("dtype", self.dtype),
                ("edits", f"{self.n_edits} x {self.tokens_per_edit:.1f} tokens "
                          f"({self.target_tokens_per_edit:.1f} target)"),
                ("trained", f"{self.trained_parameters:,} parameters from layer "
                            f"{self.first_trained_layer} of {self.layers}"),
                ("optimizer steps (at most)", f"{self.steps:,}"),
                ("weights", gb(self.weights_bytes)),
                (f"cache ({self.cache_level} level)", gb(self.prefix_cache_bytes)),
                ("fp32 masters + grads + Adam", gb(self.master_adam_bytes)),
                ("activations (one mini-batch)", gb(self.activation_bytes)),
                ("target-only logits", gb(self.logits_bytes)),
                ("key bases (locality options)", gb(self.key_basis_bytes)),
                ("key statistics, computed once", gb(self.key_compute_bytes)),
                ("training (on top of the weights)", gb(self.training_bytes)),
                ("peak", gb(self.peak_bytes)),
                ("device", self.device + (f", {gb(self.device_bytes)} available"
                                          if self.device_bytes is not None else "")),
                ("fits", {True: "yes", False: "NO", None: "unknown"}[self.fits])]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def meta_model(config):
    """The model of ``config`` with every tensor on the meta device (no memory, no weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # transformers 5.0.0 leaves meta-device embeddings untied
    return model


def visible_device_bytes(device: str) -> Optional[int]:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.mem_get_info(torch.device(device))[0]
    if device == "cpu":
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def plan(config, hp, n_edits: int, tokens_per_edit: float, target_tokens_per_edit: float,
         device: Optional[str] = None, model_name: str = "",
         device_bytes: Optional[int] = None) -> Plan:
    """The memory and steps of editing ``n_edits`` edits of ``tokens_per_edit`` tokens
    (``target_tokens_per_edit`` of them target + EOS) with ``hp`` on the model of ``config``."""
    from .locft import select_parameters
    from .locft.losses import trained_module
    from .locft.modeling import find_layer_stack

    model = meta_model(config)
    dtype = getattr(torch, hp.dtype) if hp.dtype else (
        getattr(config, "torch_dtype", None) or getattr(config, "dtype", None) or torch.float32)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    elem = torch.empty((), dtype=dtype).element_size()
    params = select_parameters(model, hp)
    stack_name, stack = find_layer_stack(model, list(params))
    layers = len(stack) if stack is not None else int(getattr(config, "num_hidden_layers", 0))
    first = min(int(n[len(stack_name) + 1:].split(".")[0]) for n in params) \
        if stack is not None else 0
    hidden = int(config.hidden_size)
    inter = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    heads = int(getattr(config, "num_attention_heads", 1))
    vocab = int(config.vocab_size)
    weights = sum(p.numel() for p in model.parameters()) * elem
    trained = sum(p.numel() for p in params.values())
    # the preservation term's generic texts (an opening of about GENERIC_OPENING tokens plus
    # preserve_new_tokens sampled ones) are cached like the edits; preserve_batch of them
    # run through every step with all their positions projected
    generic = GENERIC_OPENING + hp.preserve_new_tokens if hp.preserve_weight > 0 else 0
    # neighbour prompts: an edit's prompt with another subject (about as long) answered by
    # up to neighbour_new_tokens tokens of the unedited model
    neighbours = hp.neighbour_samples if hp.neighbour_weight > 0 else 0
    neighbour_len = tokens_per_edit - target_tokens_per_edit + hp.neighbour_new_tokens
    tokens = (n_edits * tokens_per_edit + hp.preserve_samples * generic
              + n_edits * neighbours * neighbour_len)
    device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    available = device_bytes if device_bytes is not None else visible_device_bytes(device)
    module = (trained_module(list(params), stack_name, first, stack[first])
              if stack is not None else None)
    level, cache = cache_plan(hp, tokens, hidden, elem, first, weights, device, available,
                              module, stack)
    mbs = min(hp.mini_batch_size, n_edits)
    saved = SAVED_PER_TOKEN[0] * hidden + SAVED_PER_TOKEN[1] * inter
    scores = heads * tokens_per_edit  # attention probabilities per token and layer
    # per token: every layer from the first trained one up; at the module level the first
    # layer keeps only the trained module's input
    per_token = ((layers - first - 1) * (saved + scores) + (
        stack[first].get_submodule(module).in_features if level == "module"
        else saved + scores)) * elem if layers > first else 0
    # a step's graphs: the edits' (freed by their backward), then the preservation term's
    # generic texts' (every position predicts): the peak is the larger of the two
    phases = [(mbs * tokens_per_edit, mbs * target_tokens_per_edit)]
    if generic:
        phases.append((hp.preserve_batch * generic, hp.preserve_batch * (generic - 1)))
    if neighbours:
        phases.append((mbs * neighbours * neighbour_len,
                       mbs * neighbours * hp.neighbour_new_tokens))
    # logits in float32, kept with their log-softmax for the backward: 2 copies
    activations, logits = max(((int(t * per_token), int(k * vocab * 4 * 2))
                               for t, k in phases), key=sum)
    master_adam = trained * 16
    key_basis, key_compute = key_plan(hp, model, params)
    training = cache + master_adam + activations + logits + key_basis
    steps = hp.num_epochs * math.ceil(n_edits / hp.mini_batch_size) \
        if hp.pipeline == "breadth_first" else hp.num_epochs * n_edits
    return Plan(model_name or type(model).__name__, str(dtype)[6:], n_edits, tokens_per_edit,
                target_tokens_per_edit, layers, first, trained, steps, weights, level, cache,
                master_adam, activations, logits, key_basis, key_compute, training,
                weights + max(training, key_compute), device, available,
                None if available is None else weights + max(training, key_compute) <= available)


def key_plan(hp, model, params) -> tuple:
    """``(kept, computed)`` bytes of the key statistics of the locality options: the bases
    kept through training, and the transient peak of computing the largest one."""
    from .locft.keys import MAX_BASIS, key_tensors

    if not (hp.null_space_energy > 0 or hp.null_space_rank or hp.key_penalty_weight > 0):
        return 0, 0
    linear, _ = key_tensors(model, list(params))
    ins = [params[n].shape[0 if transposed else 1] for n, transposed in linear.items()]
    kept = sum(d * min(d, MAX_BASIS) * 4 + d * 4 for d in ins)
    compute = max((3 * d * d * (8 if d <= 4096 else 4) for d in ins), default=0)
    return kept, compute


def cache_plan(hp, tokens: float, hidden: int, elem: int, first: int, weights: int,
               device: str, available: Optional[int], module: Optional[str], stack) -> tuple:
    """``(level, bytes)`` of the fast path's cache, chosen as FastLoss chooses it: the module
    level when it applies and fits the budget, else the layer level, else none. The budget
    is ``prefix_cache_max_gb``, else (as :func:`~.locft.losses.cache_budget_gb`) half of what
    a GPU has free once the weights are loaded, a quarter on the CPU; unknown: no limit."""
    if hp.prefix_cache_max_gb is not None:
        budget = hp.prefix_cache_max_gb * 2**30
    elif available is None:
        budget = float("inf")
    else:
        budget = (0.5 if device.startswith("cuda") else 0.25) * max(available - weights, 0)
    if module is not None:
        size = int(tokens * (stack[first].get_submodule(module).in_features + hidden) * elem)
        if size <= budget:
            return "module", size
    size = int(tokens * hidden * elem)
    if first > 0 and size <= budget:
        return "layer", size
    return "off", 0


def token_counts(tok, requests: Sequence[dict], hp) -> Dict[str, float]:
    """Mean tokens per edit and per target, as LocFT encodes them."""
    from .locft.encoding import encode_requests

    examples = encode_requests(tok, requests, hp.append_eos, hp.max_length)
    return {"tokens": sum(e.length for e in examples) / len(examples),
            "target": sum(e.target_len for e in examples) / len(examples)}


def as_json(p: Plan) -> str:
    return json.dumps(asdict(p))


def config_of(model: str):
    """The config of a model folder, a config.json path or an ``embedded:`` name."""
    from transformers import AutoConfig

    from .models import resolve_model_name

    path = Path(resolve_model_name(model))
    if path.is_file():
        path = path.parent
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{model}: no config.json there (give a model folder or its "
                                "config.json; nothing is downloaded)")
    return AutoConfig.from_pretrained(str(path)), path
