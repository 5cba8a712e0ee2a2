"""``locft-edit``: edit a model's facts from the command line (argument parsing and printing).

Exit codes: 0 success, 2 bad input (one line on stderr, nothing written), 1 internal failure.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import List, Optional

from .locft.errors import LocFTInputError

logger = logging.getLogger("locft_easyedit.cli")

DEFAULT_HPARAMS = "smollm2-135m"  # a shipped YAML (package data), found by from_hparams

EXAMPLES = {
    "demo": "locft-edit demo                       # 24 counterfactual edits on the embedded model",
    "run": ("locft-edit run --dataset zsre --data ../shared/data/zsre_2k.json --n 100 "
            "--patch-out zsre100.safetensors\n"
            "  locft-edit run --requests my_edits.json --hparams hparams/llama3-8b.yaml "
            "--patch-out fix.safetensors --save-model ./llama3-edited"),
    "apply": "locft-edit apply fix.safetensors --model ./llama3 --save-model ./llama3-edited",
    "revert": "locft-edit revert fix.safetensors --model ./llama3-edited --save-model ./llama3-base",
    "plan": ("locft-edit plan --hparams llama3-8b --model ./llama3/config.json --n 3000\n"
             "  locft-edit plan --requests my_edits.json --model embedded:smollm2-135m --json"),
    "ledger init": "locft-edit ledger init ./facts-ledger --hparams smollm2-135m --replay sample",
    "ledger add": "locft-edit ledger add ./facts-ledger --requests week12.json --name week12",
    "ledger log": "locft-edit ledger log ./facts-ledger",
    "ledger revert": "locft-edit ledger revert ./facts-ledger week12",
    "ledger export": ("locft-edit ledger export ./facts-ledger --save-model ./model-now\n"
                      "  locft-edit ledger export ./facts-ledger --patch-out all.safetensors"),
}
EXAMPLES["ledger"] = "\n  ".join(v for k, v in EXAMPLES.items() if k.startswith("ledger "))


class BadInput(LocFTInputError):
    """Raised for input the user can fix; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _user_errors():
    """What the user can fix (exit 2): every LocFTInputError (requests, hparams, layer,
    template, checkpoint, patch, CLI arguments), a missing model folder or embedded-model
    package. Any other exception, a ValueError included, is an internal failure (exit 1)."""
    from .models import DefaultModelUnavailable

    return (LocFTInputError, DefaultModelUnavailable, FileNotFoundError)


# --- shared steps --------------------------------------------------------------------------------
def _load_hparams(path: Optional[str], model: Optional[str]):
    """The hparams (a path or a shipped name); ``--model`` replaces ``model_name``, which
    stays as written (``load_model`` resolves ``embedded:`` names)."""
    from .locft import LocFTHyperParams

    hp = LocFTHyperParams.from_hparams(path or DEFAULT_HPARAMS)
    if model:
        hp.model_name = model
    return hp


def _load_model(name: str, hp=None, quiet: bool = False):
    import torch

    from .locft import distributed
    from .models import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if distributed.is_active() and not (hp is not None and hp.device == "cpu"):
        # torchrun: each rank on its own device, cuda:LOCAL_RANK, whatever `device` says
        device = str(distributed.local_device())
        if hp is not None and hp.device is not None:
            logger.info("data-parallel rank %d uses %s (device: %s in the hparams names one "
                        "device for every rank)", distributed.rank(), device, hp.device)
    elif hp is not None and hp.device is not None:
        device = f"cuda:{hp.device}" if isinstance(hp.device, int) else hp.device
        if device.startswith("cuda") and not torch.cuda.is_available():
            logger.warning("hparams ask for %s but no GPU is available: using the CPU", device)
            device = "cpu"
    logger.info("loading %s", name)
    return load_model(name, device=device, dtype=hp.dtype if hp is not None else None,
                      device_map="auto" if hp is not None and hp.model_parallel else None)


def _demo_requests() -> List[dict]:
    text = resources.files("locft_easyedit").joinpath("data/demo_edits.json").read_text()
    return json.loads(text)


def _save_model(model, tok, out: str) -> None:
    out_path = Path(out)
    if out_path.exists() and any(out_path.iterdir()):
        raise BadInput(f"--save-model {out}: folder exists and is not empty; choose a new folder")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_path.name + ".", dir=out_path.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out_path.exists():
            out_path.rmdir()
        os.replace(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved the model to %s", out)


def _check_writable(path: Optional[str], flag: str) -> None:
    if path is None:
        return
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise BadInput(f"{flag} {path}: folder {parent} does not exist")


def _shorten(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


def edit_and_report(model, tok, requests: List[dict], hp, quiet: bool = False,
                    patch_out: Optional[str] = None, save_model: Optional[str] = None,
                    table_rows: int = 30, adapter_out: Optional[str] = None) -> dict:
    """Edit, print a before/after table and the summary line; write the patch, the adapter
    (``tuning: lora | adalora``, peft's format) and/or the model."""
    if patch_out and hp.tuning != "full" and not hp.lora_merge:
        raise BadInput(f"tuning: {hp.tuning} without lora_merge leaves the base weights "
                       "unchanged, so there is no patch to write: use --adapter-out DIR "
                       "(or set lora_merge: true)")
    from .evaluate import edit_and_score
    from .locft import apply_locft_to_model
    from .patch import save_patch

    extra = {"save_adapter_to": adapter_out} if adapter_out else {}
    report = edit_and_score(
        model, tok, requests, answers=table_rows, progress=not quiet,
        edit=lambda m: apply_locft_to_model(m, tok, requests, hp, return_orig_weights=True,
                                            progress=not quiet, **extra))
    model, weights_copy, scores = report.model, report.weights_copy, report.after
    prompts = [r["prompt"] for r in requests]
    old, new = report.answers_before, report.answers_after

    rows = list(zip(prompts, [r["target_new"] for r in requests], old, new))[:table_rows]
    print(f"{'prompt':<46} {'target':<16} {'old answer':<28} new answer")
    for p, t, o, n in rows:
        print(f"{_shorten(p, 46):<46} {_shorten(t, 16):<16} {_shorten(o, 28):<28} {_shorten(n, 40)}")
    if len(requests) > table_rows:
        print(f"... {len(requests) - table_rows} more")
    summary = {"reliability": scores["reliability_em"],
               "generalization": scores.get("generalization_em", float("nan")),
               "locality": scores.get("locality", float("nan")), "seconds": report.seconds}
    print(" ".join(f"{k}={v:.2f}" if k != "seconds" else f"{k}={v:.1f}" for k, v in summary.items()))
    if patch_out:
        params = dict(model.named_parameters())
        save_patch(patch_out, weights_copy, {n: params[n] for n in weights_copy},
                   hparams=hp.to_dict(), requests=requests, model_class=type(model).__name__)
        logger.info("wrote the edit patch %s", patch_out)
    if save_model:
        if hasattr(model, "merge_and_unload"):  # an unmerged adapter: save the merged model
            from .locft.adapters import merge_adapter

            model, _ = merge_adapter(model)
        _save_model(model, tok, save_model)
    return {**summary, "token_reliability": scores["reliability"],
            "token_generalization": scores.get("generalization")}


# --- subcommands -----------------------------------------------------------------------------
def cmd_demo(args) -> int:
    _check_writable(args.patch_out, "--patch-out")
    hp = _load_hparams(args.hparams, None)
    model, tok = _load_model(hp.model_name, hp, args.quiet)
    requests = _demo_requests()[: args.n]
    edit_and_report(model, tok, requests, hp, args.quiet, args.patch_out)
    return 0


def cmd_run(args) -> int:
    from .datasets import load_dataset, load_requests
    from .locft import validate_requests

    if bool(args.requests) == bool(args.dataset):
        raise BadInput("give either --requests FILE or --dataset NAME --data PATH")
    if args.dataset and not args.data:
        raise BadInput("--dataset needs --data PATH (the dataset's JSON file)")
    if not (args.patch_out or args.adapter_out or args.save_model):
        raise BadInput("nothing to write: give --patch-out FILE, --adapter-out DIR (adapter "
                       "tuning) and/or --save-model DIR")
    _check_writable(args.patch_out, "--patch-out")
    for flag, value in (("--save-model", args.save_model), ("--adapter-out", args.adapter_out)):
        if value and Path(value).exists() and any(Path(value).iterdir()):
            raise BadInput(f"{flag} {value}: folder exists and is not empty")
    requests = (load_requests(args.requests) if args.requests
                else validate_requests(load_dataset(args.data, args.dataset, n=args.n)))
    hp = _load_hparams(args.hparams, args.model)
    from .locft import distributed

    if distributed.init_from_env() and distributed.rank() != 0:
        # data-parallel under torchrun: every rank trains; only rank 0 prints and writes
        sys.stdout = open(os.devnull, "w")
        args.quiet, args.patch_out, args.save_model, args.adapter_out = True, None, None, None
    if args.adapter_out and hp.tuning == "full":
        raise BadInput("--adapter-out needs adapter tuning (tuning: lora or adalora in the hparams)")
    model, tok = _load_model(hp.model_name, hp, args.quiet)
    edit_and_report(model, tok, requests, hp, args.quiet, args.patch_out, args.save_model,
                    adapter_out=args.adapter_out)
    return 0


def _patch_cmd(args, action) -> int:
    from .patch import load_patch

    adapter = Path(args.patch).is_dir()
    if adapter:  # a peft adapter folder written by `run --adapter-out`
        if args.command == "revert":
            raise BadInput(f"{args.patch} is an adapter: applying it merged it into a copy of "
                           "the base model; keep the base model instead of reverting")
        if not (Path(args.patch) / "adapter_config.json").is_file():
            raise BadInput(f"{args.patch}: no adapter_config.json (not a peft adapter folder)")
    else:
        load_patch(args.patch)  # refuse a bad file before loading a model
    if Path(args.save_model).exists() and any(Path(args.save_model).iterdir()):
        raise BadInput(f"--save-model {args.save_model}: folder exists and is not empty")
    model, tok = _load_model(args.model, None, args.quiet)
    if adapter:
        from .locft.adapters import load_adapter

        model, originals = load_adapter(model, args.patch, merge=True)
        _save_model(model, tok, args.save_model)
        print(f"apply: adapter merged into {len(originals)} tensor(s) -> {args.save_model}")
        return 0
    meta = action(model, args.patch)
    _save_model(model, tok, args.save_model)
    print(f"{args.command}: {len(json.loads(meta['parameters']))} tensor(s), "
          f"{meta['n_requests']} edits -> {args.save_model}")
    return 0


def cmd_apply(args) -> int:
    from .patch import apply_patch

    return _patch_cmd(args, apply_patch)


def cmd_revert(args) -> int:
    from .patch import revert_patch

    return _patch_cmd(args, revert_patch)


def cmd_plan(args) -> int:
    from .datasets import load_dataset, load_requests
    from .plan import as_json, config_of, plan, token_counts

    hp = _load_hparams(args.hparams, args.model)
    config, folder = config_of(hp.model_name)
    if args.requests or args.data:
        from transformers import AutoTokenizer

        requests = (load_requests(args.requests) if args.requests
                    else load_dataset(args.data, args.dataset, n=args.n))
        counts = token_counts(AutoTokenizer.from_pretrained(str(folder)), requests, hp)
        n, tokens, target = len(requests), counts["tokens"], counts["target"]
    elif args.n:
        n, tokens, target = args.n, args.avg_tokens, args.target_tokens
    else:
        raise BadInput("give --requests FILE, --data FILE, or --n N [--avg-tokens T]")
    result = plan(config, hp, n, tokens, target, device=args.device, model_name=hp.model_name)
    print(as_json(result) if args.json else result.table())
    return 0


# --- ledger: edits over time (the logic is locft_easyedit.ledger's) ---------------------------
def _ledger(args, with_model: bool):
    """The ledger in ``args.dir``; with its model loaded (``--model`` or the ledger's) and
    attached (refused by name when it is not the ledger's base model)."""
    from .ledger import Ledger

    ledger = Ledger.open(args.dir)
    if with_model:
        model, tok = _load_model(args.model or ledger.model_name, ledger.hparams, args.quiet)
        ledger.attach(model, tok)
    return ledger


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _round_line(r) -> str:
    kind = r.kind if r.kind == "add" else f"revert {r.reverts}"
    return (f"{r.index:<4} {_shorten(r.name, 24):<24} {_shorten(kind, 20):<20} {r.n_edits:>6} "
            f"{r.n_live:>6}  {r.created.replace('T', ' ')[:16]}  {_fmt(r.reliability_own):>5} "
            f"{_fmt(r.reliability_all):>5} {r.seconds:>8.1f}")


def cmd_ledger_init(args) -> int:
    from .ledger import Ledger, ReplaySettings, check_new_folder

    check_new_folder(args.dir)
    hp = _load_hparams(args.hparams, args.model)
    replay = ReplaySettings(args.replay, args.replay_ratio, args.resample_every, args.repairs)
    model, tok = _load_model(hp.model_name, hp, args.quiet)
    ledger = Ledger.init(args.dir, model, tok, hp, replay=replay)
    print(f"ledger {args.dir}: base {ledger.model_name} ({type(model).__name__}), "
          f"{len(ledger.doc['parameters'])} trained tensor(s), fingerprint "
          f"{ledger.base_fingerprint[:12]}, replay {replay.mode}")
    return 0


def cmd_ledger_add(args) -> int:
    from .datasets import load_requests

    requests = load_requests(args.requests)
    ledger = _ledger(args, with_model=True)
    r = ledger.add(requests, name=args.name, replay=args.replay, progress=not args.quiet)
    print(_round_line(r))
    return 0


def cmd_ledger_log(args) -> int:
    from dataclasses import asdict

    rounds = _ledger(args, with_model=False).rounds
    if args.json:
        print(json.dumps([asdict(r) for r in rounds], indent=1))
        return 0
    print(f"{'#':<4} {'name':<24} {'kind':<20} {'edits':>6} {'live':>6}  {'date':<16}  "
          f"{'own':>5} {'all':>5} {'seconds':>8}")
    for r in rounds:
        print(_round_line(r))
    if not rounds:
        print("(no rounds yet)")
    return 0


def cmd_ledger_revert(args) -> int:
    from .ledger import Ledger

    Ledger.open(args.dir).check_revertible(args.name)  # refuse before loading the model
    ledger = _ledger(args, with_model=True)
    print(_round_line(ledger.revert(args.name, progress=not args.quiet)))
    return 0


def cmd_ledger_export(args) -> int:
    if args.patch_out:
        _check_writable(args.patch_out, "--patch-out")
        meta = _ledger(args, with_model=False).export_patch(args.patch_out)
        print(f"export: {len(json.loads(meta['parameters']))} tensor(s), {meta['n_requests']} "
              f"live edits -> {args.patch_out}")
        return 0
    if Path(args.save_model).exists() and any(Path(args.save_model).iterdir()):
        raise BadInput(f"--save-model {args.save_model}: folder exists and is not empty")
    ledger = _ledger(args, with_model=True)
    _save_model(ledger.model, ledger.tok, args.save_model)
    print(f"export: the model after {len(ledger.rounds)} round(s), "
          f"{len(ledger.live_requests())} live edits -> {args.save_model}")
    return 0


def _add_ledger_parser(add) -> None:
    led = add("ledger", "Edits over time: rounds of edits trained with replay of the earlier "
                        "ones, each revertible, in a folder of patches and JSON records.", None)
    sub = led.add_subparsers(dest="ledger_command", required=True, parser_class=_Parser)

    def cmd(name, help_text, func):
        sp = sub.add_parser(name, help=help_text, description=help_text,
                            epilog="example:\n  " + EXAMPLES[f"ledger {name}"],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or info logging")
        sp.add_argument("dir", help="the ledger folder")
        sp.set_defaults(func=func)
        return sp

    modes = ("all", "sample", "none")
    i = cmd("init", "Start a ledger over a base model (records the fingerprint of its "
                    "trained tensors).", cmd_ledger_init)
    i.add_argument("--model", help="local model folder or 'embedded:smollm2-135m' (default: "
                                   "the hparams' model_name)")
    i.add_argument("--hparams", help=f"hparams YAML or shipped name (default {DEFAULT_HPARAMS})")
    i.add_argument("--replay", choices=modes, default="sample",
                   help="default replay of earlier edits: all of them, a sample per sub-run "
                        "once they outnumber ratio x the new ones (default), or none")
    i.add_argument("--replay-ratio", type=float, default=1.0,
                   help="sample: earlier edits per sub-run = ratio x new edits (default 1)")
    i.add_argument("--resample-every", type=int, default=5,
                   help="sample: epochs per sub-run, each with a fresh sample (default 5)")
    i.add_argument("--repairs", type=int, default=2,
                   help="sample: extra sub-runs for earlier edits that fail afterwards "
                        "(default 2)")
    a = cmd("add", "Train a round of new edits with replay of the live earlier ones, from "
                   "the current state, and record it.", cmd_ledger_add)
    a.add_argument("--requests", required=True, help="JSON list of {prompt, target_new, ...}")
    a.add_argument("--name", help="the round's name (default round-N)")
    a.add_argument("--replay", choices=modes, help="replay mode of this round (default: the "
                                                   "ledger's)")
    lg = cmd("log", "One line per round: name, kind, edits, live edits, date, reliability on "
                    "its own edits and on every live edit right after it, seconds.",
             cmd_ledger_log)
    lg.add_argument("--json", action="store_true", help="the rounds as JSON")
    r = cmd("revert", "Take a round back: retrain from the base over every other live edit; "
                      "recorded as a round of its own.", cmd_ledger_revert)
    r.add_argument("name", help="the round to take back")
    e = cmd("export", "Save the current model (with its tokenizer) or one patch from the base.",
            cmd_ledger_export)
    out = e.add_mutually_exclusive_group(required=True)
    out.add_argument("--save-model", help="new folder for the model (from_pretrained loads it)")
    out.add_argument("--patch-out", help="a patch file from the base (locft-edit apply reads it)")
    for sp in (a, r, e):
        sp.add_argument("--model", help="the base model (default: the one the ledger names)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="locft-edit", formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Edit facts in a language model with LocFT-BF (localized, "
                            "breadth-first fine-tuning).",
                epilog="examples:\n  " + "\n  ".join(
                    v for k, v in EXAMPLES.items() if " " not in k))
    p.add_argument("--quiet", action="store_true", help="no progress bars or info logging")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name, help_text, func):
        sp = sub.add_parser(name, help=help_text, description=help_text,
                            epilog="example:\n  " + EXAMPLES[name],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or info logging")
        sp.set_defaults(func=func)
        return sp

    d = add("demo", "Edit the embedded SmolLM2-135M with the shipped example edits and print "
                    "a before/after table and a summary line.", cmd_demo)
    d.add_argument("--n", type=int, default=None, help="use only the first N example edits")
    d.add_argument("--hparams", default=None, help="hparams YAML, or a shipped name such as "
                                                   f"llama3-8b (default {DEFAULT_HPARAMS})")
    d.add_argument("--patch-out", default=None, help="also write the edit as a patch file")

    r = add("run", "Edit any local model with requests from a file or a dataset.", cmd_run)
    src = r.add_argument_group("edits (one of)")
    src.add_argument("--requests", help="JSON list of {prompt, target_new[, rephrase_prompt, "
                                        "locality]} dicts")
    src.add_argument("--dataset", choices=["zsre", "counterfact", "wikibigedit"])
    r.add_argument("--data", help="the dataset's JSON file (with --dataset)")
    r.add_argument("--n", type=int, default=None, help="first N records of --data")
    r.add_argument("--model", help="local model folder or 'embedded:smollm2-135m' "
                                   "(default: the hparams' model_name)")
    r.add_argument("--hparams", help="hparams YAML, or a shipped name such as llama3-8b "
                                     f"(default {DEFAULT_HPARAMS})")
    r.add_argument("--patch-out", help="where to write the edit patch (.safetensors)")
    r.add_argument("--adapter-out", help="tuning lora/adalora: where to write the adapter "
                                         "(peft's format; `apply` merges it into a model)")
    r.add_argument("--save-model", help="also save the edited model to this new folder")

    pl = add("plan", "Estimate the memory and optimizer steps of an edit from the model's "
                     "config alone (no weights are read) and say whether it fits the device.",
             cmd_plan)
    pl.add_argument("--hparams", help=f"hparams YAML or shipped name (default {DEFAULT_HPARAMS})")
    pl.add_argument("--model", help="model folder or its config.json (default: the hparams' "
                                    "model_name)")
    pl.add_argument("--requests", help="a requests file: token counts from the model's tokenizer")
    pl.add_argument("--dataset", choices=["zsre", "counterfact", "wikibigedit"])
    pl.add_argument("--data", help="a dataset file (with --dataset, or guessed)")
    pl.add_argument("--n", type=int, help="number of edits (without --requests: with "
                                          "--avg-tokens / --target-tokens)")
    pl.add_argument("--avg-tokens", type=float, default=17.0,
                    help="tokens per edit, prompt + target + EOS (default 17: ZsRE on LLaMA3)")
    pl.add_argument("--target-tokens", type=float, default=5.0,
                    help="target tokens per edit, EOS included (default 5)")
    pl.add_argument("--device", help="the device to check against (default cuda:0, else cpu)")
    pl.add_argument("--json", action="store_true", help="one JSON object instead of a table")

    for name, text, func in (("apply", "Apply an edit patch to a model and save the result.",
                              cmd_apply),
                             ("revert", "Undo an edit patch (bit-exact) and save the result.",
                              cmd_revert)):
        a = add(name, text, func)
        a.add_argument("patch", help="the patch file (.safetensors), or for apply an adapter "
                                     "folder written by run --adapter-out")
        a.add_argument("--model", default="embedded:smollm2-135m", help="model folder")
        a.add_argument("--save-model", required=True, help="new folder for the result")
    _add_ledger_parser(add)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if quiet:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    args.quiet = quiet
    try:
        return args.func(args)
    except _user_errors() as exc:
        print(f"locft-edit: error: {str(exc).splitlines()[0] if str(exc) else exc!r}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("locft-edit: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if args.debug:
            raise
        print(f"locft-edit: internal error: {type(exc).__name__}: {exc} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
