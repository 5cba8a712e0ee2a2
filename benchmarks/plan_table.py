"""The planner's memory table for the paper's models, from their published dimensions (no
download: the configs are built here), with the shipped YAMLs, at 3K and 100K ZsRE-like edits
(17 tokens each, 5 of them target + EOS, as REFERENCE.md measures for LLaMA3-8B).

    python benchmarks/plan_table.py
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import common  # noqa: E402,F401  (puts this checkout on sys.path)

# published dimensions (the models' config.json files)
MODELS = {
    "llama3-8b": ("LlamaConfig", dict(hidden_size=4096, intermediate_size=14336,
                                      num_hidden_layers=32, num_attention_heads=32,
                                      num_key_value_heads=8, vocab_size=128256)),
    "qwen2.5-7b": ("Qwen2Config", dict(hidden_size=3584, intermediate_size=18944,
                                       num_hidden_layers=28, num_attention_heads=28,
                                       num_key_value_heads=4, vocab_size=152064)),
    "mistral-7b": ("MistralConfig", dict(hidden_size=4096, intermediate_size=14336,
                                         num_hidden_layers=32, num_attention_heads=32,
                                         num_key_value_heads=8, vocab_size=32000)),
}


def main() -> str:
    import transformers

    from locft_easyedit import LocFTHyperParams
    from locft_easyedit.plan import plan

    gb = lambda b: f"{b / 2**30:.1f}"
    lines = ["| model (YAML) | edits | dtype | weights GB | prefix cache GB | masters+Adam GB | "
             "activations GB | logits GB | peak GB | steps | fits 80 GB |",
             "|" + " --- |" * 11]
    for name, (cls, dims) in MODELS.items():
        config = getattr(transformers, cls)(**dims)
        hp = LocFTHyperParams.from_hparams(name)
        for n in (3000, 100000):
            p = plan(config, hp, n, 17, 5, device="none")
            lines.append(f"| {name} | {n:,} | {p.dtype} | {gb(p.weights_bytes)} | "
                         f"{gb(p.prefix_cache_bytes)} | {gb(p.master_adam_bytes)} | "
                         f"{gb(p.activation_bytes)} | {gb(p.logits_bytes)} | {gb(p.peak_bytes)} | "
                         f"{p.steps:,} | {'yes' if p.peak_bytes <= 80 * 2**30 else 'no'} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
