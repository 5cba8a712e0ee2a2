"""LocFT through EasyEdit on the embedded model: batch_edit vs lifelong_edit.

Needs EasyEdit (run with its virtual environment). Runs, on the same N ZsRE edits:

1. ``editor.batch_edit`` with ``batch_size >= N``: one breadth-first run, then EasyEdit's own
   scoring (the model is restored afterwards: ``sequential_edit=False``);
2. ``lifelong_edit`` in chunks of ``--chunk`` (chunks in order, edits accumulating), every
   request scored on the final model (pre-edit scores reused from 1);
3. with ``--easyedit-chunked``: ``batch_edit`` with ``batch_size = --chunk`` and
   ``sequential_edit=True``, which EasyEdit scores chunk by chunk (EasyEdit issue #590).

Prints one JSON line of mean pre/post rewrite_acc, rephrase_acc and locality per run.
EasyEdit writes ./logs into the working directory: run it from a scratch folder::

    cd "$(mktemp -d)" && /work/venvs/easyedit/bin/python \\
        /work/wt/issue4/benchmarks/easyedit_check.py --n 50 --chunk 10
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
from common import REPO, data_path  # noqa: E402

import torch  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hparams", default=str(REPO / "hparams" / "smollm2-135m.yaml"))
    ap.add_argument("--data", default=None,
                    help="ZsRE file (default: zsre_2k.json in the shared data folder)")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--chunk", type=int, default=10, help="lifelong_edit chunk size")
    ap.add_argument("--easyedit-chunked", action="store_true",
                    help="also run batch_edit with batch_size=--chunk (scored per chunk)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    args.data = args.data or str(data_path("zsre_2k.json"))
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    from easyeditor import BaseEditor

    from locft_easyedit import LocFTHyperParams, restore_weights
    from locft_easyedit.easyedit import (batch_edit_kwargs, lifelong_edit,
                                         load_dataset_easyedit, summarize)
    import easyeditor

    hp = LocFTHyperParams.from_hparams(args.hparams)
    editor = BaseEditor.from_hparams(hp)
    for name in ("easyeditor", "locft_easyedit"):  # EasyEdit logs every metrics dict at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    requests = load_dataset_easyedit(args.data, "zsre", n=args.n)
    result = {"n": len(requests), "data": Path(args.data).name, "hparams": args.hparams,
              "easyedit": str(Path(easyeditor.__file__).parent.parent),
              "machine": f"{platform.machine()} {torch.get_num_threads()} threads, cpu",
              "date": time.strftime("%Y-%m-%d")}

    t0 = time.perf_counter()
    hp.batch_size = max(hp.batch_size, len(requests))
    metrics, _, _ = editor.batch_edit(**batch_edit_kwargs(requests), sequential_edit=False,
                                      verbose=False)
    result["batch_edit"] = {**summarize(metrics), "seconds": time.perf_counter() - t0}
    print(json.dumps(result["batch_edit"]), flush=True)

    t0 = time.perf_counter()
    pre = [{"pre": m["pre"]} for m in metrics]
    res = lifelong_edit(editor, requests, chunk_size=args.chunk, pre_edit=pre)
    restore_weights(editor.model, res.weights_copy)
    result[f"lifelong_edit_chunk{args.chunk}"] = {**res.summary,
                                                  "seconds": time.perf_counter() - t0}
    print(json.dumps(result[f"lifelong_edit_chunk{args.chunk}"]), flush=True)

    if args.easyedit_chunked:
        t0 = time.perf_counter()
        hp.batch_size = args.chunk
        metrics, _, _ = editor.batch_edit(**batch_edit_kwargs(requests), sequential_edit=True,
                                          verbose=False)
        result[f"batch_edit_chunk{args.chunk}_scored_per_chunk"] = {
            **summarize(metrics), "seconds": time.perf_counter() - t0}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
