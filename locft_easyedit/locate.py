"""``locft-locate``: choose where to edit by a cheap sweep over layers x modules.

For each (layer, module) a short LocFT run edits a small sample of the user's own edits
(frozen-prefix cache, few epochs); the edited weights are put in, scored and taken out again.
Scores (each 0..1, higher is better):

* ``reliability`` / ``generalization``: teacher-forced token accuracy on the prompts and on
  the rephrased prompts (when the requests have them);
* ``locality``: EasyEdit's neighbourhood score on the requests' locality prompts (when they
  have them);
* ``capability``: argmax agreement, before vs after, at every position of generic text that
  the unedited model sampled after :data:`~locft_easyedit.locft.generic_text.HELDOUT_OPENINGS`
  (never trained on, not even by the preservation loss); ``nll_change`` is the change of
  the mean negative log-likelihood of that text (reported, not ranked).

``score`` is the mean of the scores a setting has; settings that reach ``min_reliability``
rank first (a location that does not learn the edits is no use however local it is).

    locft-locate --hparams hparams/smollm2-135m.yaml --data ../shared/data/zsre_2k.json \\
        --n 20 --stride 4 --out-dir locate_out
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
import yaml

from .evaluate import locality_scores, locality_snapshot, token_accuracy
from .locft import LocFTHyperParams, execute_locft, weights_applied
from .locft.encoding import pad_batch
from .locft.modeling import input_device, num_layers, pad_id_of
from .locft.generic_text import HELDOUT_OPENINGS, sample_generic_text

logger = logging.getLogger(__name__)

# Llama / Mistral / Qwen naming; pass other templates for other architectures.
MODULES: Dict[str, str] = {
    "down_proj": "model.layers.{}.mlp.down_proj.weight",
    "up_proj": "model.layers.{}.mlp.up_proj.weight",
    "mlp": "model.layers.{}.mlp",
    "o_proj": "model.layers.{}.self_attn.o_proj.weight",
    "layer": "model.layers.{}",
}
METRICS = ("reliability", "generalization", "locality", "capability")


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


@torch.no_grad()
def _generic_state(model, tok, texts) -> tuple:
    """Argmax and mean NLL of the model at every next-token position of ``texts``."""
    ids, mask, labels = pad_batch(texts, pad_id_of(tok), input_device(model))
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    keep = labels[:, 1:] != -100
    nll = F.cross_entropy(logits[keep], labels[:, 1:][keep])
    return logits.argmax(-1)[keep].cpu(), float(nll)


def default_layers(n_layers: int, stride: Optional[int]) -> List[int]:
    """Every ``stride``-th layer, ending at the last; stride defaults to about 8 layers."""
    stride = stride or max(1, round(n_layers / 8))
    return sorted({l for l in range(n_layers - 1, -1, -stride)})


def locate(model, tok, requests: Sequence[dict], hp: LocFTHyperParams,
           layers: Optional[Sequence[int]] = None, modules: Optional[Dict[str, str]] = None,
           stride: Optional[int] = None, epochs: int = 20, mini_batch_size: Optional[int] = None,
           min_reliability: float = 0.9, generic_samples: int = 12, generic_tokens: int = 24,
           progress: bool = True) -> dict:
    """Sweep ``layers`` x ``modules`` on ``requests`` (use a small sample, e.g. 20 edits).

    Returns ``{"rows": [...] sorted best first, "best": LocFTHyperParams, "seconds": float}``;
    each row has ``layer``, ``module``, the scores, ``score``, ``seconds`` and ``steps``.
    ``best`` is ``hp`` with the winning layer and module (its own epochs and mini-batch: the
    sweep's shortened ones are only for ranking). The model is left as it was."""
    t_start = time.perf_counter()
    modules = dict(modules or MODULES)
    layers = list(layers) if layers is not None else default_layers(num_layers(model), stride)
    # a few optimizer steps per epoch even for few edits (steps, not epochs, decide)
    mbs = mini_batch_size or max(1, min(hp.mini_batch_size, len(requests) // 4))
    prompts = [r["prompt"] for r in requests]
    targets = [r["target_new"] for r in requests]
    reph = [(r["rephrase_prompt"], r["target_new"]) for r in requests if r.get("rephrase_prompt")]
    loc_before = locality_snapshot(model, tok, requests)
    generic = sample_generic_text(model, tok, HELDOUT_OPENINGS, generic_samples, generic_tokens,
                                  seed=hp.seed + 1)
    gen_before, nll_before = _generic_state(model, tok, generic)
    rows = []
    total = len(layers) * len(modules)
    for li, layer in enumerate(layers):
        for mi, (mname, template) in enumerate(modules.items()):
            run_hp = dataclasses.replace(hp, layers=[layer], rewrite_module_tmp=template,
                                         num_epochs=epochs, mini_batch_size=mbs)
            t0 = time.perf_counter()
            new, result = execute_locft(model, tok, requests, run_hp, progress=False)
            with weights_applied(model, new):  # scored with the edit, then taken out again
                row = {"layer": layer, "module": mname,
                       "reliability": _mean(token_accuracy(model, tok, prompts, targets))}
                if reph:
                    row["generalization"] = _mean(token_accuracy(model, tok, *zip(*reph)))
                if loc_before:
                    row["locality"] = _mean(locality_scores(
                        loc_before, locality_snapshot(model, tok, requests)))
                gen_after, nll_after = _generic_state(model, tok, generic)
                row["capability"] = float((gen_after == gen_before).float().mean())
                row["nll_change"] = nll_after - nll_before
            row["score"] = _mean([row[m] for m in METRICS if m in row])
            row["steps"], row["seconds"] = result.steps, time.perf_counter() - t0
            rows.append(row)
            if progress:
                done = li * len(modules) + mi + 1
                print(f"[{done}/{total}] layer {layer:>3} {mname:<10} " + _fmt_scores(row),
                      flush=True)
    rows.sort(key=lambda r: (r["reliability"] >= min_reliability, r["score"]), reverse=True)
    top = rows[0]
    best = dataclasses.replace(hp, layers=[top["layer"]], rewrite_module_tmp=modules[top["module"]])
    return {"rows": rows, "best": best, "seconds": time.perf_counter() - t_start,
            "layers": layers, "modules": list(modules), "min_reliability": min_reliability,
            "epochs": epochs, "mini_batch_size": mbs, "n": len(requests)}


def _fmt_scores(row: dict) -> str:
    return " ".join(f"{k[:4]} {row[k]:.2f}" for k in METRICS + ("score",) if k in row)


def ranked_table(result: dict) -> str:
    cols = ["rank", "layer", "module"] + [m for m in METRICS if m in result["rows"][0]] + \
        ["score", "nll_change", "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for rank, row in enumerate(result["rows"], 1):
        cells = [str(rank), str(row["layer"]), row["module"]]
        cells += [f"{row[c]:.3f}" if c != "seconds" else f"{row[c]:.1f}" for c in cols[3:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def heatmap(result: dict, path: str | Path, title: str = "") -> None:
    """One panel per score: modules (rows) x layers (columns), like the paper's figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, modules = result["layers"], result["modules"]
    metrics = [m for m in METRICS if m in result["rows"][0]] + ["score"]
    cell = {(r["module"], r["layer"]): r for r in result["rows"]}
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6.0, 2.0 + 0.6 * len(layers)),
                                                      1.0 + 0.3 * len(modules) * len(metrics)
                                                      + 0.5 * len(metrics)), squeeze=False)
    best = result["rows"][0]
    for ax, metric in zip(axes[:, 0], metrics):
        grid = [[cell[(m, l)][metric] if (m, l) in cell else float("nan") for l in layers]
                for m in modules]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i, m in enumerate(modules):
            for j, l in enumerate(layers):
                v = grid[i][j]
                mark = "*" if (m, l) == (best["module"], best["layer"]) else ""
                ax.text(j, i, f"{v:.2f}{mark}", ha="center", va="center", fontsize=7,
                        color="white" if v < 0.6 else "black")
        ax.set_yticks(range(len(modules)), modules, fontsize=8)
        ax.set_xticks(range(len(layers)), [str(l) for l in layers], fontsize=8)
        ax.set_title(metric, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.03)
    axes[-1, 0].set_xlabel("layer")
    fig.suptitle(title or f"locft-locate: {result['n']} edits, {result['epochs']} epochs "
                 f"(* = chosen)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_yaml(result: dict, path: str | Path, command: str = "",
               model_name: Optional[str] = None) -> None:
    """The chosen setting as an hparams YAML (LocFTHyperParams.from_hparams reads it back)."""
    best = result["best"].to_dict()
    if model_name:
        best["model_name"] = model_name
    top = result["rows"][0]
    scores = ", ".join(f"{m} {top[m]:.2f}" for m in METRICS if m in top)
    head = (f"# Chosen by locft-locate: layer {top['layer']}, {top['module']} ranked first of "
            f"{len(result['rows'])} settings\n# on {result['n']} edits, {result['epochs']} "
            f"epochs, mini-batch {result['mini_batch_size']}: {scores}.\n")
    if command:
        head += f"# Command: {command}\n"
    Path(path).write_text(head + yaml.safe_dump(best, sort_keys=False))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="locft-locate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hparams", required=True, help="base hparams YAML (model, lr, ...)")
    ap.add_argument("--data", required=True, help="edits: ZsRE / CounterFact / WikiBigEdit file")
    ap.add_argument("--dataset", default=None, help="zsre | counterfact | wikibigedit (guessed)")
    ap.add_argument("--n", type=int, default=20, help="edits in the sample (default 20)")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--layers", default=None, help="comma-separated layer indices")
    ap.add_argument("--stride", type=int, default=None, help="every N-th layer (default ~8 layers)")
    ap.add_argument("--modules", default=",".join(MODULES),
                    help=f"comma-separated names from {list(MODULES)} or name=template")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--mini-batch-size", type=int, default=None)
    ap.add_argument("--min-reliability", type=float, default=0.9)
    ap.add_argument("--out-dir", default="locate_out")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .datasets import load_dataset
    from .models import load_model

    hp = LocFTHyperParams.from_hparams(args.hparams)
    modules = {}
    for item in args.modules.split(","):
        name, _, template = item.partition("=")
        if not template and name not in MODULES:
            ap.error(f"unknown module {name!r}; known {list(MODULES)} or give name=template")
        modules[name] = template or MODULES[name]
    model, tok = load_model(hp.model_name, device="cuda" if torch.cuda.is_available() else None,
                            dtype=hp.dtype)
    requests = load_dataset(args.data, args.dataset, n=args.n, offset=args.offset)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    result = locate(model, tok, requests, hp, layers=layers, modules=modules,
                    stride=args.stride, epochs=args.epochs, mini_batch_size=args.mini_batch_size,
                    min_reliability=args.min_reliability)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = "locft-locate " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    print(ranked_table(result))
    heatmap(result, out / "locate.png")
    write_yaml(result, out / "locate.yaml", command)
    with open(out / "locate.jsonl", "w") as f:
        for row in result["rows"]:
            f.write(json.dumps(row) + "\n")
    print(f"\n{len(result['rows'])} settings in {result['seconds']:.0f} s; chosen: layer "
          f"{result['rows'][0]['layer']} {result['rows'][0]['module']} -> {out / 'locate.yaml'}, "
          f"heat map {out / 'locate.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
