"""The planner against measurement: ``training_bytes`` of ``locft-edit plan`` vs the measured
growth of resident memory while ``apply_locft_to_model`` edits (the model already loaded).

RSS is sampled every 5 ms from /proc/self/statm during the edit; the growth is the largest
sample minus the RSS just before it. The loaded model is first used once (teacher-forced
scoring of the edits, as any run does before editing): the first forward of a fresh process
grows RSS by about 0.6 GB on its own (allocator pools, kernel workspaces), which is not the
edit's. Memory does not depend on the number of epochs, so the run takes ``--epochs``
(default 2) of the YAML's settings.

    python benchmarks/plan_check.py --n 300 --threads 1 --out benchmarks/results/plan_check.jsonl

With ``--device cuda`` the model sits on the GPU and the measurement is the growth of
``torch.cuda.max_memory_allocated`` during the edit (benchmarks/gpu.sh runs it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from common import data_path  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hparams", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu (resident memory) or cuda")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from locft_easyedit import LocFTHyperParams, apply_locft_to_model, load_dataset, load_model
    from locft_easyedit.plan import config_of, plan, token_counts

    hp = LocFTHyperParams.from_hparams(args.hparams)
    hp = dataclasses.replace(hp, num_epochs=args.epochs)
    requests = load_dataset(data_path("zsre_2k.json"), "zsre", n=args.n)
    gpu = args.device.startswith("cuda")
    model, tok = load_model(hp.model_name, dtype=hp.dtype, device=args.device)
    config, _ = config_of(hp.model_name)
    counts = token_counts(tok, requests, hp)
    estimate = plan(config, hp, len(requests), counts["tokens"], counts["target"],
                    device=args.device)
    from locft_easyedit.evaluate import token_accuracy

    token_accuracy(model, tok, [r["prompt"] for r in requests], [r["target_new"] for r in requests])
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if gpu else rss_bytes()
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set() and not gpu:
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    apply_locft_to_model(model, tok, requests, hp, progress=False)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    growth = (torch.cuda.max_memory_allocated() if gpu else max(peak[0], rss_bytes())) - before
    row = {"model": hp.model_name, "hparams": args.hparams, "n": len(requests),
           "epochs": args.epochs, "tokens_per_edit": counts["tokens"],
           "planned_training_bytes": estimate.training_bytes,
           ("measured_gpu_growth_bytes" if gpu else "measured_rss_growth_bytes"): growth,
           "ratio_planned_over_measured": estimate.training_bytes / growth,
           "planned": dataclasses.asdict(estimate), "seconds": seconds,
           "threads": args.threads, "load_avg_1min": os.getloadavg()[0],
           "machine": f"{platform.machine()} {os.cpu_count()} cores, " + (
               torch.cuda.get_device_name() if gpu else "cpu"),
           "date": time.strftime("%Y-%m-%d"),
           "command": "python benchmarks/plan_check.py " + " ".join(argv or sys.argv[1:])}
    print(json.dumps({k: v for k, v in row.items() if k != "planned"}))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


if __name__ == "__main__":
    main()
