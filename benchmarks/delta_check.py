"""Bit-identity check of edits across a code change: save what the shipped YAMLs do, compare.

``save`` edits the tiny random Llama with every shipped YAML whose template fits it (layer 2,
at most 8 epochs) plus variants that switch on the other code paths (anchor + per-example
stop, the reference implementation, depth-first, AdaLoRA, a merged LoRA), and with ``--embedded``
20 ZsRE edits of the embedded model with ``hparams/smollm2-135m.yaml``; it stores each edited
model's state (``torch.save``). ``compare`` says IDENTICAL or DIFFERENT per file. Run ``save``
in a checkout before the change and in one after it (one thread, same machine), then
``compare``:

    git worktree add /tmp/before <old commit>
    (cd /tmp/before && python /path/to/benchmarks/delta_check.py save /tmp/dc/before --embedded)
    python benchmarks/delta_check.py save /tmp/dc/after --embedded
    python benchmarks/delta_check.py compare /tmp/dc/before /tmp/dc/after

It imports the package from the working directory (``PYTHONPATH=.``) and uses only its public
API (``LocFTHyperParams.from_dict``, ``apply_locft_to_model``), so it runs on older checkouts.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path


def variants(repo: Path) -> dict:
    import yaml

    out = {}
    for path in sorted((repo / "hparams").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if not str(cfg.get("rewrite_module_tmp")).startswith("model.layers"):
            continue  # GPT-2 / GPT-J names: not a Llama
        # the tiny model is float32: the YAMLs' dtype (bfloat16) would be refused by name
        cfg.update(model_name="tiny", layers=[2], device="cpu", dtype=None,
                   num_epochs=min(cfg.get("num_epochs", 25), 8))
        out[path.stem] = cfg
    base, lora = out["smollm2-135m"], out["smollm2-135m-lora"]
    out["x-anchor-pes"] = {**base, "anchor_weight": 0.5, "per_example_stop": True}
    out["x-reference"] = {**base, "implementation": "reference"}
    out["x-df"] = {**base, "pipeline": "depth_first", "num_epochs": 5}
    out["x-adalora"] = {**lora, "tuning": "adalora"}
    out["x-lora-merge"] = {**lora, "lora_merge": True}
    return out


def save(out: Path, embedded: bool) -> None:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, os.getcwd())
    from locft_easyedit import LocFTHyperParams, apply_locft_to_model, load_dataset
    from locft_easyedit.synthetic import tiny_setup

    repo = Path(os.getcwd())
    out.mkdir(parents=True, exist_ok=True)
    model, tok, facts = tiny_setup(24)
    for name, cfg in variants(repo).items():
        torch.manual_seed(0)  # peft draws the adapter's init from the global RNG
        edited, _ = apply_locft_to_model(copy.deepcopy(model), tok, facts,
                                         LocFTHyperParams.from_dict(cfg), progress=False)
        torch.save({k: v.detach().clone() for k, v in edited.state_dict().items()},
                   out / f"tiny-{name}.pt")
        print(name, "saved", flush=True)
    if embedded:
        import yaml

        from locft_easyedit import load_model
        from locft_easyedit.models import default_model_dir

        m, t = load_model(str(default_model_dir()))
        cfg = yaml.safe_load((repo / "hparams" / "smollm2-135m.yaml").read_text())
        cfg["model_name"] = "unused"
        data = Path(os.environ.get("LOCFT_SHARED_DATA") or repo.parent / "shared" / "data")
        reqs = load_dataset(data / "zsre_2k.json", "zsre", n=20)
        layer = cfg["layers"][0]
        edited, _ = apply_locft_to_model(m, t, reqs, LocFTHyperParams.from_dict(cfg),
                                         progress=False)
        weight = edited.model.layers[layer].mlp.down_proj.weight.detach().clone()
        torch.save({"w": weight}, out / "embedded20.pt")
        print("embedded saved", flush=True)


def compare(a: Path, b: Path) -> int:
    import torch

    differ = 0
    for f in sorted(a.glob("*.pt")):
        x, y = torch.load(f, weights_only=True), torch.load(b / f.name, weights_only=True)
        same = x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        print(f"{f.name}: {'IDENTICAL' if same else 'DIFFERENT'}")
        differ += not same
    print(f"{differ} of {len(list(a.glob('*.pt')))} differ")
    return 1 if differ else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save", help="edit with every variant, store the results in OUT")
    s.add_argument("out", type=Path)
    s.add_argument("--embedded", action="store_true", help="also 20 ZsRE edits, embedded model")
    c = sub.add_parser("compare", help="IDENTICAL / DIFFERENT per stored result")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "save":
        save(args.out, args.embedded)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    raise SystemExit(main())
