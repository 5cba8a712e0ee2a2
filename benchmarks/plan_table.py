"""The planner's memory table for the paper's models (the shipped YAMLs' ``model_parallel``
follows its "fits 80 GB" column), from their published dimensions (no
download: the configs are built here), with the shipped YAMLs, at 3K and 100K ZsRE-like edits
(17 tokens each, 5 of them target + EOS, as REFERENCE.md measures for LLaMA3-8B), on one
80 GB GPU (the cache's level and budget as the run would choose them there).

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
    "qwen2.5-14b": ("Qwen2Config", dict(hidden_size=5120, intermediate_size=13824,
                                        num_hidden_layers=48, num_attention_heads=40,
                                        num_key_value_heads=8, vocab_size=152064)),
    "qwen2.5-32b": ("Qwen2Config", dict(hidden_size=5120, intermediate_size=27648,
                                        num_hidden_layers=64, num_attention_heads=40,
                                        num_key_value_heads=8, vocab_size=152064)),
    "qwen2.5-72b": ("Qwen2Config", dict(hidden_size=8192, intermediate_size=29568,
                                        num_hidden_layers=80, num_attention_heads=64,
                                        num_key_value_heads=8, vocab_size=152064)),
}


def main() -> str:
    import transformers

    from locft_easyedit import LocFTHyperParams
    from locft_easyedit.plan import plan

    gb = lambda b: f"{b / 2**30:.1f}"
    lines = ["| model (YAML) | edits | dtype | weights GB | cache GB (level) | masters+Adam GB | "
             "activations GB | logits GB | peak GB | steps | fits 80 GB |",
             "|" + " --- |" * 11]
    for name, (cls, dims) in MODELS.items():
        config = getattr(transformers, cls)(**dims)
        hp = LocFTHyperParams.from_hparams(name)
        for n in (3000, 100000):
            p = plan(config, hp, n, 17, 5, device="cuda", device_bytes=80 * 2**30)
            lines.append(f"| {name} | {n:,} | {p.dtype} | {gb(p.weights_bytes)} | "
                         f"{gb(p.prefix_cache_bytes)} ({p.cache_level}) | "
                         f"{gb(p.master_adam_bytes)} | "
                         f"{gb(p.activation_bytes)} | {gb(p.logits_bytes)} | {gb(p.peak_bytes)} | "
                         f"{p.steps:,} | {'yes' if p.fits else 'no'} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
