from pathlib import Path

import pytest
import yaml

from locft_easyedit import HparamsError, LocFTHyperParams

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, data, name="hp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return path


def test_from_hparams_reads_yaml_with_or_without_suffix(tmp_path):
    path = write(tmp_path, {"alg_name": "LocFT", "model_name": "/m", "layers": [3], "lr": "5e-4",
                            "rewrite_module_tmp": ["model.layers.{}.mlp.up_proj.weight",
                                                   "model.layers.{}.mlp.down_proj.weight"]})
    for given in (path, str(path)[:-len(".yaml")]):
        hp = LocFTHyperParams.from_hparams(given)
        assert hp.lr == 5e-4 and isinstance(hp.lr, float)
        assert hp.layers == [3] and len(hp.templates) == 2
        assert hp.loss_threshold == 1e-2 and hp.append_eos and hp.pipeline == "breadth_first"
    assert LocFTHyperParams.from_dict(hp.to_dict()) == hp


@pytest.mark.parametrize("data, words", [
    ({"alg_name": "LocFT", "lyers": [3]}, ["lyers", "hp.yaml"]),
    ({"alg_name": "FT"}, ["alg_name", "'FT'", "hp.yaml"]),
    ({"alg_name": "LocFT", "lr": "fast"}, ["'lr'", "float", "hp.yaml"]),
    ({"alg_name": "LocFT", "layers": 3}, ["'layers'", "hp.yaml"]),
    ({"alg_name": "LocFT", "num_epochs": 2.5}, ["'num_epochs'", "int"]),
    ({"alg_name": "LocFT", "append_eos": "yes please"}, ["'append_eos'", "bool"]),
    ({"alg_name": "LocFT", "lr": -1.0}, ["'lr'", "> 0"]),
    ({"alg_name": "LocFT", "pipeline": "sideways"}, ["'pipeline'", "breadth_first"]),
    ({"alg_name": "LocFT", "mini_batch_size": 0}, ["'mini_batch_size'", ">= 1"]),
    ({"alg_name": "LocFT", "layers": [-1]}, ["'layers'", ">= 0"]),
    ({"alg_name": "LocFT", "device": "gpu7"}, ["'device'"]),
    ({"alg_name": "LocFT", "dtype": "float8"}, ["'dtype'"]),
    ({"alg_name": "LocFT", "rewrite_module_tmp": []}, ["'rewrite_module_tmp'"]),
    # reliability: ranges, checkpoints, conflicting targets
    ({"seed": -1}, ["'seed'", "2**63", "-1"]),
    ({"seed": 2**70}, ["'seed'"]),
    ({"lr": 10**400}, ["'lr'", "too large"]),
    ({"device": "cuda:x"}, ["'device'", "'cuda:x'"]),
    ({"fp16": True, "bf16": True}, ["'bf16'", "fp16"]),
    ({"checkpoint_dir": ""}, ["'checkpoint_dir'"]),
    ({"checkpoint_dir": 3}, ["'checkpoint_dir'", "3"]),
    ({"checkpoint_every_epochs": -1}, ["'checkpoint_every_epochs'", ">= 0"]),
    ({"checkpoint_every_minutes": 0}, ["'checkpoint_every_minutes'", "> 0"]),
    ({"checkpoint_every_minutes": ".inf"}, ["'checkpoint_every_minutes'"]),
    ({"checkpoint_dir": "/tmp/x", "checkpoint_every_epochs": 0},
     ["'checkpoint_every_epochs'", "never be written"]),
    ({"resume": "yes"}, ["'resume'", "bool"]),
    ({"conflicting_targets": "ignore"}, ["'conflicting_targets'", "'warn'"]),
    ({1: 2, "lyers": 3}, ["unknown key(s) ['1', 'lyers']"]),
    # adapters (peft)
    ({"tuning": "qlora"}, ["'tuning'"]), ({"lora_rank": 0}, ["'lora_rank'"]),
    ({"lora_alpha": 0.0}, ["'lora_alpha'"]), ({"lora_dropout": 1.0}, ["'lora_dropout'"]),
    ({"adalora_init_r": 2, "adalora_target_r": 4}, ["'adalora_init_r'"]),
    ({"adalora_tinit": 0.6, "adalora_tfinal": 0.5}, ["'adalora_tfinal'"]),
    ({"adalora_delta_t": 0}, ["'adalora_delta_t'"]), ({"lora_merge": "yes"}, ["'lora_merge'"]),
])
def test_bad_yaml_names_key_and_file(tmp_path, data, words):
    path = write(tmp_path, {"alg_name": "LocFT", "model_name": "tiny", **data})
    with pytest.raises(HparamsError) as err:
        LocFTHyperParams.from_hparams(path)
    for word in [str(path)] + words:
        assert word in str(err.value)


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="mapping"):
        LocFTHyperParams.from_hparams(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ValueError, match="does not exist"):
        LocFTHyperParams.from_hparams(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="not valid YAML"):
        LocFTHyperParams.from_hparams(write(tmp_path, "a: [1,\n"))


@pytest.mark.parametrize("path", sorted((REPO / "hparams").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_hparams_are_valid(path):
    data = yaml.safe_load(path.read_text())
    hp = LocFTHyperParams.from_dict(data, source=str(path))
    assert hp.alg_name == "LocFT" and hp.pipeline == "breadth_first"
    assert "Source:" in path.read_text() or "Measured" in path.read_text()


def test_published_settings():
    """The three published configurations (REFERENCE table) are shipped unchanged."""
    load = lambda name: LocFTHyperParams.from_dict(yaml.safe_load((REPO / "hparams" / name).read_text()))
    llama, qwen, mistral = load("llama3-8b.yaml"), load("qwen2.5-7b.yaml"), load("mistral-7b.yaml")
    assert (llama.layers, llama.templates, llama.lr, llama.mini_batch_size, llama.num_epochs) == \
        ([22], ["model.layers.{}.mlp.down_proj.weight"], 5e-4, 100, 25)
    assert (qwen.layers, qwen.templates, qwen.lr) == ([6], ["model.layers.{}.mlp.down_proj.weight"], 5e-4)
    assert (mistral.layers, mistral.templates, mistral.lr) == ([23], ["model.layers.{}"], 5e-5)
