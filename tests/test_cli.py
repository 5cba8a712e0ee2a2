"""locft-edit end to end: tiny model folders for patch round trips, the embedded model for demo."""
import json
import subprocess
import sys

import pytest
import torch
import yaml

from locft_easyedit.cli import main
from locft_easyedit.models import load_model


@pytest.fixture
def tiny_dir(tmp_path, tiny_model, tiny_tok):
    path = tmp_path / "tiny-llama"
    tiny_model.save_pretrained(path)
    tiny_tok.save_pretrained(path)
    return path


@pytest.fixture
def tiny_files(tmp_path, facts, tiny_hp):
    hp = tiny_hp.to_dict() | {"num_epochs": 20}
    (tmp_path / "hp.yaml").write_text(yaml.safe_dump(hp))
    (tmp_path / "edits.json").write_text(json.dumps(facts[:8]))
    return tmp_path / "hp.yaml", tmp_path / "edits.json"


def tensors(path):
    model, _ = load_model(str(path))
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_patch_round_trip(tmp_path, tiny_dir, tiny_files, capsys):
    hp, edits = tiny_files
    patch, edited = tmp_path / "edit.safetensors", tmp_path / "edited"
    assert main(["--quiet", "run", "--requests", str(edits), "--hparams", str(hp), "--model",
                 str(tiny_dir), "--patch-out", str(patch), "--save-model", str(edited)]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("reliability=") and "seconds=" in summary
    base, in_process = tensors(tiny_dir), tensors(edited)
    changed = [k for k in base if not torch.equal(base[k], in_process[k])]
    assert changed == ["model.layers.2.mlp.down_proj.weight"]

    applied = tmp_path / "applied"
    assert main(["--quiet", "apply", str(patch), "--model", str(tiny_dir), "--save-model", str(applied)]) == 0
    after_apply = tensors(applied)
    assert all(torch.equal(after_apply[k], in_process[k]) for k in base)  # same as the in-process edit

    reverted = tmp_path / "reverted"
    assert main(["--quiet", "revert", str(patch), "--model", str(applied), "--save-model", str(reverted)]) == 0
    after_revert = tensors(reverted)
    assert all(torch.equal(after_revert[k], base[k]) for k in base)  # bit for bit

    # applying twice, or to another model, is refused with exit code 2
    again = tmp_path / "again"
    assert main(["--quiet", "apply", str(patch), "--model", str(applied), "--save-model", str(again)]) == 2
    assert "already applied" in capsys.readouterr().err
    assert not again.exists()


def test_patch_for_another_model_is_refused(tmp_path, tiny_dir, tiny_files, tiny_tok, capsys):
    from locft_easyedit.synthetic import build_tiny_model

    hp, edits = tiny_files
    patch = tmp_path / "edit.safetensors"
    assert main(["--quiet", "run", "--requests", str(edits), "--hparams", str(hp), "--model",
                 str(tiny_dir), "--patch-out", str(patch)]) == 0
    other = tmp_path / "other"
    build_tiny_model(len(tiny_tok), seed=1).save_pretrained(other)
    tiny_tok.save_pretrained(other)
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["--quiet", "apply", str(patch), "--model", str(other), "--save-model", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different base model" in err
    assert not out.exists()


@pytest.mark.parametrize("make, words", [
    (lambda d: ["run", "--requests", str(d / "missing.json")], "does not exist"),
    (lambda d: ["run", "--requests", str(d / "bad.json")], "malformed JSON"),
    (lambda d: ["run", "--requests", str(d / "fields.json")], "missing field 'prompt'"),
    (lambda d: ["run", "--requests", str(d / "edits.json"), "--hparams", str(d / "badhp.yaml")], "lyers"),
    (lambda d: ["run", "--requests", str(d / "edits.json"), "--hparams", str(d / "hp.yaml"),
                "--model", str(d / "no-such-model")], "not a folder on disk"),
    (lambda d: ["apply", str(d / "bad.json"), "--save-model", str(d / "x")], "not a safetensors file"),
    (lambda d: ["run", "--dataset", "zsre"], "--dataset needs --data"),
    (lambda d: ["run"], "either --requests"),
    (lambda d: ["frobnicate"], "invalid choice"),
])
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, tiny_files, make, words, capsys):
    (tmp_path / "bad.json").write_text("[{\"prompt\": ")
    (tmp_path / "fields.json").write_text(json.dumps([{"question": "q", "target_new": "a"}]))
    (tmp_path / "badhp.yaml").write_text("alg_name: LocFT\nlyers: [1]\n")
    argv = make(tmp_path)
    if argv[0] == "run" and "--patch-out" not in argv:
        argv += ["--patch-out", str(tmp_path / "p.safetensors")]
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) if argv[0] == "frobnicate" else _nothing() as exc:
        code = main(["--quiet"] + argv)
    code = exc.value.code if argv[0] == "frobnicate" else code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_internal_value_error_is_exit_1_not_bad_input(tmp_path, tiny_dir, tiny_files, monkeypatch,
                                                     capsys):
    """Only LocFTInputError is the user's input (exit 2); a ValueError from inside the code is
    an internal failure (exit 1), and --debug shows its traceback."""
    import locft_easyedit.cli as cli

    def broken(*args, **kwargs):
        raise ValueError("shape mismatch deep inside")

    monkeypatch.setattr(cli, "edit_and_report", broken)
    argv = ["run", "--requests", str(tmp_path / "edits.json"), "--hparams",
            str(tmp_path / "hp.yaml"), "--model", str(tiny_dir),
            "--patch-out", str(tmp_path / "p.safetensors")]
    assert main(["--quiet"] + argv) == 1
    err = capsys.readouterr().err
    assert "internal error: ValueError: shape mismatch deep inside" in err and "--debug" in err
    with pytest.raises(ValueError, match="shape mismatch"):
        main(["--quiet", "--debug"] + argv)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_help_has_examples():
    out = subprocess.run([sys.executable, "-m", "locft_easyedit", "run", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "example" in out.stdout and "--patch-out" in out.stdout


@pytest.mark.slow
def test_demo_on_embedded_model(embedded, capsys):
    assert main(["--quiet", "demo", "--n", "6"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:2] == ["prompt", "target"] and len(lines) == 8
    fields = dict(kv.split("=") for kv in lines[-1].split())
    assert set(fields) == {"reliability", "generalization", "locality", "seconds"}
    assert float(fields["reliability"]) >= 0.8


def test_adapter_out_and_apply(tmp_path, tiny_dir, tiny_files, tiny_hp, capsys):
    """tuning: lora writes a peft adapter; `apply` merges it into a model and saves that."""
    _, edits = tiny_files
    hp = tmp_path / "lora.yaml"
    hp.write_text(yaml.safe_dump(tiny_hp.to_dict() | {"tuning": "lora", "num_epochs": 20}))
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    assert main(["--quiet", "run", "--requests", str(edits), "--hparams", str(hp), "--model",
                 str(tiny_dir), "--adapter-out", str(adapter)]) == 0
    assert (adapter / "adapter_config.json").is_file()
    # no base tensor changes without a merge, so a patch is refused with a pointer
    assert main(["--quiet", "run", "--requests", str(edits), "--hparams", str(hp), "--model",
                 str(tiny_dir), "--patch-out", str(tmp_path / "p.safetensors")]) == 2
    assert "--adapter-out" in capsys.readouterr().err
    assert main(["--quiet", "apply", str(adapter), "--model", str(tiny_dir),
                 "--save-model", str(merged)]) == 0
    base, after = tensors(tiny_dir), tensors(merged)
    assert sorted(k for k in base if not torch.equal(base[k], after[k])) == \
        ["model.layers.2.mlp.down_proj.weight"]
