"""locft-edit plan: memory and steps from the config alone, with exact arithmetic on a tiny
model; measured against real runs by benchmarks/plan_check.py."""
from __future__ import annotations

import dataclasses
import json

from locft_easyedit.cli import main
from locft_easyedit.plan import SAVED_PER_TOKEN, plan


def test_plan_arithmetic_on_the_tiny_config(tiny_model, tiny_hp):
    hp = dataclasses.replace(tiny_hp, num_epochs=25, mini_batch_size=8)
    p = plan(tiny_model.config, hp, n_edits=100, tokens_per_edit=10, target_tokens_per_edit=3,
             device="cpu")
    params = sum(t.numel() for t in tiny_model.parameters())  # tied embeddings counted once
    assert p.weights_bytes == params * 4
    assert (p.layers, p.first_trained_layer) == (4, 2)
    assert p.trained_parameters == 128 * 64 and p.master_adam_bytes == 128 * 64 * 16
    # down_proj (input 128) trains: its input and the rest of layer 2's output (64) per token
    assert (p.cache_level, p.prefix_cache_bytes) == ("module", 100 * 10 * (128 + 64) * 4)
    saved = SAVED_PER_TOKEN[0] * 64 + SAVED_PER_TOKEN[1] * 128 + 4 * 10
    # 8 edits x 10 tokens: layer 3 whole, layer 2 only down_proj's input (the module level)
    assert p.activation_bytes == 8 * 10 * (saved + 128) * 4
    assert p.logits_bytes == 8 * 3 * tiny_model.config.vocab_size * 4 * 2
    assert p.steps == 25 * 13
    assert p.training_bytes == (p.prefix_cache_bytes + p.master_adam_bytes + p.activation_bytes
                                + p.logits_bytes)
    assert p.peak_bytes == p.weights_bytes + p.training_bytes and p.fits is True


def test_plan_counts_the_locality_options(tiny_model, tiny_hp):
    hp = dataclasses.replace(tiny_hp, num_epochs=25, mini_batch_size=8)
    base = plan(tiny_model.config, hp, 100, 10, 3, device="cpu")
    assert (base.key_basis_bytes, base.key_compute_bytes) == (0, 0)
    keyed = plan(tiny_model.config, dataclasses.replace(hp, null_space_energy=0.9), 100, 10, 3,
                 device="cpu")
    # down_proj's 128 inputs: a full 128 x 128 basis and its eigenvalues kept, float32; the
    # second moment computed in float64 with eigh's copies (3x) before training
    assert keyed.key_basis_bytes == 128 * 128 * 4 + 128 * 4
    assert keyed.key_compute_bytes == 3 * 128 * 128 * 8
    assert keyed.training_bytes == base.training_bytes + keyed.key_basis_bytes
    assert keyed.peak_bytes == keyed.weights_bytes + keyed.training_bytes
    # 2 neighbours per edit: prompt (10 - 3 tokens) + 4 answer tokens each, cached
    nb = plan(tiny_model.config, dataclasses.replace(hp, neighbour_weight=1.0,
                                                     neighbour_samples=2,
                                                     neighbour_new_tokens=4),
              100, 10, 3, device="cpu")
    assert nb.prefix_cache_bytes == (100 * 10 + 100 * 2 * (7 + 4)) * (128 + 64) * 4
    # their graph: 8 edits x 2 neighbours x 11 tokens, the largest of the step's graphs
    saved = SAVED_PER_TOKEN[0] * 64 + SAVED_PER_TOKEN[1] * 128 + 4 * 10
    assert nb.activation_bytes == 8 * 2 * 11 * (saved + 128) * 4


def test_plan_picks_the_cache_level_the_run_would():
    """On an 80 GB GPU the module level of LLaMA3-8B's layer 22 down_proj fits at 3K edits of
    17 tokens (18,432 values a token in bfloat16: 1.9 GB) but not at 100K (63 GB, over half of
    the 65 GB left once the weights are in): there the layer's input is cached (13 GB)."""
    from transformers import LlamaConfig

    from locft_easyedit import LocFTHyperParams

    config = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)
    hp = LocFTHyperParams.from_hparams("llama3-8b")
    gpu = dict(device="cuda", device_bytes=80 * 2**30)
    small, large = plan(config, hp, 3000, 17, 5, **gpu), plan(config, hp, 100000, 17, 5, **gpu)
    generic = hp.preserve_samples * 28 if hp.preserve_weight > 0 else 0
    assert small.cache_level == "module"
    assert small.prefix_cache_bytes == int((3000 * 17 + generic) * (14336 + 4096) * 2)
    assert large.cache_level == "layer"
    assert large.prefix_cache_bytes == int((100000 * 17 + generic) * 4096 * 2)
    tight = plan(config, dataclasses.replace(hp, prefix_cache_max_gb=0.0), 3000, 17, 5, **gpu)
    assert (tight.cache_level, tight.prefix_cache_bytes) == ("off", 0)


def test_plan_cli_reads_only_a_config(tiny_model, tiny_hp, tmp_path, capsys):
    tiny_model.config.save_pretrained(tmp_path)  # config.json only: no weights at all
    tiny_hp.to_yaml(tmp_path / "hp.yaml")
    assert main(["--quiet", "plan", "--hparams", str(tmp_path / "hp.yaml"), "--model",
                 str(tmp_path / "config.json"), "--n", "1000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"weights_bytes", "training_bytes", "peak_bytes", "steps", "fits"} <= set(out)
    assert out["n_edits"] == 1000 and out["steps"] == 60 * 125
    assert main(["--quiet", "plan", "--hparams", str(tmp_path / "hp.yaml"), "--model",
                 str(tmp_path), "--n", "10"]) == 0
    assert "optimizer steps (at most)" in capsys.readouterr().out
    assert main(["--quiet", "plan", "--hparams", str(tmp_path / "hp.yaml"), "--model",
                 str(tmp_path / "nowhere")]) == 2
