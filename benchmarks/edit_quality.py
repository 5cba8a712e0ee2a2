"""Edit quality of one LocFT setting on the embedded (or any local) model.

Applies N edits from a dataset file in one call, then scores every edit on the final model:
reliability / generalization as teacher-forced token accuracy (EasyEdit's score) and as
generation exact match (the paper's), locality as EasyEdit's neighbourhood score.

    python benchmarks/edit_quality.py --hparams hparams/smollm2-135m.yaml \
        --data ../shared/data/zsre_2k.json --n 100 --out benchmarks/results/quality.jsonl

``--data`` defaults to zsre_2k.json in ``$LOCFT_SHARED_DATA`` (else ``../shared/data``).
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # benchmarks/common.py, also when loaded from a file
    sys.path.insert(0, str(HERE))
from common import add_set_argument, data_path, load, with_overrides  # noqa: E402

import torch  # noqa: E402

from locft_easyedit import LocFTHyperParams, apply_locft_to_model, load_dataset  # noqa: E402
from locft_easyedit.evaluate import edit_and_score  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hparams", default="hparams/smollm2-135m.yaml")
    ap.add_argument("--data", default=None,
                    help="dataset file (default: zsre_2k.json in the shared data folder)")
    ap.add_argument("--dataset", default=None, help="zsre | counterfact | wikibigedit (guessed)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--offset", type=int, default=0)
    add_set_argument(ap)
    ap.add_argument("--no-generation", action="store_true", help="skip generation exact match")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="append the result as one JSON line")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    hp, overrides = with_overrides(LocFTHyperParams.from_hparams(args.hparams), args.set)
    data = Path(args.data) if args.data else data_path("zsre_2k.json")
    model, tok, _ = load(hp.model_name, device="cuda" if torch.cuda.is_available() else None,
                         dtype=hp.dtype)
    requests = load_dataset(data, args.dataset, n=args.n, offset=args.offset)
    scored = edit_and_score(model, tok, requests,
                            lambda m: apply_locft_to_model(m, tok, requests, hp),
                            generation=not args.no_generation, pre_scores=True, progress=True)
    seconds, pre, post = scored.seconds, scored.before, scored.after
    result = {"n": len(requests), "data": data.name, "hparams": args.hparams,
              "overrides": overrides, "pre": pre, "post": post,
              "seconds": seconds, "seconds_per_edit": seconds / len(requests),
              "machine": f"{platform.machine()} {torch.get_num_threads()} threads, "
                         f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
              "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
