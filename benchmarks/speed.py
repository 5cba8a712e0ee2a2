"""Speed of LocFT: the optimized implementation against the reference, side by side.

Each implementation runs in its own fresh subprocess (so peak memory is its own), one after
the other, on the same edits with the same seed and settings. Reports seconds per edit,
trained tokens per second, peak memory, reliability (teacher-forced), the speed-up ratio and
how far apart the two edits are (the reference row's `delta_rel_diff_fast_vs_reference`: the
largest relative difference of the trained tensors' deltas).

    # embedded model, 100 ZsRE edits, the shipped YAML (issue 7's CPU target); each row has
    # "phases": seconds by phase (generic-text sampling, cache, forward, backward, ...)
    python benchmarks/speed.py --model embedded --n 100 --threads 1
    # where the time goes by operator (a separate run: the profiler slows it)
    python benchmarks/speed.py --model embedded --n 100 --threads 1 --only fast --epochs 4 \
        --profile-ops 12
    # the same without the preservation term (the authors' method on this model)
    python benchmarks/speed.py --model embedded --n 100 --threads 1 --set preserve_weight=0
    # tiny random model, synthetic facts: seconds per edit as N grows (fixed epochs)
    python benchmarks/speed.py --model tiny --n 1000 10000 --epochs 3 --only fast
    # LLaMA3-8B-shaped random model (GPU): 3K ZsRE-length edits, 25 epochs, layer 22 down_proj
    python benchmarks/speed.py --model llama8b-shaped --n 3000 --epochs 25 --only fast
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # benchmarks/common.py, also when loaded from a file
    sys.path.insert(0, str(HERE))
from common import (DATA_ENV, REPO, TINY, add_set_argument, data_path, load,  # noqa: E402
                    tiny_hparams, with_overrides)

DATA = "zsre_2k.json"  # in the shared data folder (common.data_path)


def _setup(args, n):
    """``(model, tok, requests, hparams)`` for one configuration."""
    import torch

    from locft_easyedit import LocFTHyperParams
    from locft_easyedit.synthetic import synthetic_facts

    overrides = {"implementation": args.impl}
    if args.epochs:
        overrides.update(num_epochs=args.epochs, loss_threshold=0.0)  # fixed work per edit
    if args.model == "embedded":
        hp = LocFTHyperParams.from_hparams(args.hparams)
        model, tok, _ = load(hp.model_name, device="cuda" if torch.cuda.is_available() else None)
        requests = _zsre(n, args.data)
    elif args.model == TINY:
        model, tok, _ = load(TINY)
        requests = synthetic_facts(n)
        hp = tiny_hparams(mini_batch_size=32)
    else:  # a LLaMA3-8B-shaped random model (bf16 on GPU), ZsRE prompts and targets
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        from locft_easyedit.models import default_model_dir

        tok = AutoTokenizer.from_pretrained(default_model_dir())
        cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                          num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                          max_position_embeddings=8192, rope_theta=500000.0)
        if args.scale_down:  # the same shape of work, a quarter the width and depth, for CPU
            cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = 1024, 3584, 8
            cfg.num_attention_heads, cfg.num_key_value_heads = 8, 2
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if dev == "cuda" else torch.float32
        torch.manual_seed(0)  # the same random model in every process (deltas compared)
        with torch.device(dev):
            model = LlamaForCausalLM(cfg).to(dtype)
        model.eval()
        requests = _zsre(n, args.data)
        layer = 22 if not args.scale_down else 5
        hp = LocFTHyperParams(model_name="llama8b-shaped", layers=[layer], lr=5e-4,
                              mini_batch_size=100, num_epochs=25)
    hp = LocFTHyperParams.from_dict({**hp.to_dict(), **overrides})
    return model, tok, requests, with_overrides(hp, args.set)[0]


def _zsre(n, data):
    from locft_easyedit import load_dataset

    base = load_dataset(data or data_path(DATA), "zsre")
    out = []
    while len(out) < n:  # beyond 2,000 edits, repeat prompts with a numbered prefix
        k = len(out) // len(base)
        out.extend({**r, "prompt": (f"({k}) " if k else "") + r["prompt"]}
                   for r in base[: n - len(out)])
    return out


class Phases:
    """Seconds spent in each phase of a run, by wrapping the functions that do them (in this
    child process only): sampling the generic texts, building the cache, the unedited
    distributions, the fast path's self-check, the forward of every mini-batch, its
    backward, and the rest (optimizer steps, shuffling, bookkeeping)."""

    def __init__(self):
        self.seconds: dict = {}
        self._patches = []

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def _timed(self, owner, attr: str, name: str, wrap_result=None) -> None:
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            self._add(name, time.perf_counter() - t0)
            return wrap_result(out) if wrap_result else out

        setattr(owner, attr, timed)
        self._patches.append((owner, attr, original))

    def _timed_backward(self, step):
        backward = step.backward

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            backward(*args, **kwargs)
            self._add("backward", time.perf_counter() - t0)

        step.backward = timed
        return step

    def __enter__(self):
        from locft_easyedit.locft import losses, regularizers, training

        self._timed(regularizers, "sample_generic_text", "sample generic text")
        self._timed(losses.FastLoss, "_maybe_build_cache", "cache")
        self._timed(regularizers.Regularizer, "fill", "unedited distributions")
        self._timed(training, "fast_path_mismatch", "self-check")
        for cls in (losses.FastLoss, losses.ReferenceLoss):
            self._timed(cls, "__call__", "forward", self._timed_backward)
        return self

    def __exit__(self, *exc):
        for owner, attr, original in reversed(self._patches):
            setattr(owner, attr, original)
        return False

    def report(self, total: float) -> dict:
        out = {k: round(v, 2) for k, v in self.seconds.items()}
        out["other"] = round(total - sum(self.seconds.values()), 2)
        return out


class OpProfile:
    """CPU time by operator and input shape (``torch.profiler``), summarised as the share of
    all operator time spent in matrix products and in those that touch the vocabulary (the
    output projection and its gradient), plus the ``top`` entries."""

    def __init__(self, prof):
        self.prof = prof

    def summary(self, vocab: int, top: int) -> dict:
        rows = self.prof.key_averages(group_by_input_shape=True)
        total = sum(r.self_cpu_time_total for r in rows) or 1
        mm = [r for r in rows if r.key in ("aten::mm", "aten::addmm", "aten::bmm")]
        vocab_mm = [r for r in mm if any(vocab in shape for shape in r.input_shapes if shape)]
        ordered = sorted(rows, key=lambda r: -r.self_cpu_time_total)[:top]
        return {"matmul_share": sum(r.self_cpu_time_total for r in mm) / total,
                "vocab_projection_share": sum(r.self_cpu_time_total for r in vocab_mm) / total,
                "top": [[r.key, str(r.input_shapes), round(r.self_cpu_time_total / 1e6, 2)]
                        for r in ordered]}


@contextmanager
def op_profile(enabled):
    """An :class:`OpProfile` of the block when ``enabled`` (it slows the run: use it in a run
    of its own, not for the timing)."""
    if not enabled:
        yield None
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        yield OpProfile(prof)


def measure(args) -> dict:
    """One run in this process: edit, time, score."""
    import torch

    from locft_easyedit import execute_locft
    from locft_easyedit.evaluate import token_accuracy
    from locft_easyedit.locft.encoding import encode_requests
    from locft_easyedit.locft.modeling import weights_applied

    torch.set_num_threads(args.threads or torch.get_num_threads())
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    n = args.n[0]
    model, tok, requests, hp = _setup(args, n)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokens = sum(e.target_len for e in encode_requests(tok, requests, hp.append_eos, hp.max_length))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with Phases() as phases, op_profile(args.profile_ops) as ops:
        t0 = time.perf_counter()
        new, result = execute_locft(model, tok, requests, hp, progress=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    out = {"impl": hp.implementation, "model": args.model, "n": n, "epochs": result.epochs,
           "steps": result.steps, "seconds": seconds, "seconds_per_edit": seconds / n,
           "target_tokens_per_second": tokens * result.epochs / seconds,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_after_load_mb": rss_loaded, "cache": result.cache,
           "implementation": result.implementation, "phases": phases.report(seconds),
           "overrides": args.set}
    if args.profile_ops:
        out["ops"] = ops.summary(model.config.vocab_size, args.profile_ops)
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if not args.no_score and args.model != "llama8b-shaped":
        with weights_applied(model, new):
            acc = token_accuracy(model, tok, [r["prompt"] for r in requests],
                                 [r["target_new"] for r in requests], batch_size=64)
        out["reliability"] = sum(acc) / len(acc)
    if args.deltas:  # for the parent's fast-vs-reference comparison
        base = dict(model.named_parameters())
        torch.save({k: (v.float() - base[k].detach().float()).cpu() for k, v in new.items()},
                   args.deltas)
    return out


def relative_difference(fast_file: str, reference_file: str) -> float:
    """The largest ``||delta_fast - delta_ref|| / ||delta_ref||`` over the trained tensors."""
    import torch

    fast, ref = torch.load(fast_file), torch.load(reference_file)
    return max(float((fast[k] - ref[k]).norm() / ref[k].norm()) for k in ref)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["embedded", "tiny", "llama8b-shaped"], default="embedded")
    ap.add_argument("--n", type=int, nargs="+", default=[100], help="numbers of edits")
    ap.add_argument("--hparams", default=str(REPO / "hparams" / "smollm2-135m.yaml"))
    ap.add_argument("--data", default=None,
                    help=f"ZsRE file (default: {DATA} in ${DATA_ENV}, else ../shared/data)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="fixed epochs (turns off early stopping so every run does equal work)")
    ap.add_argument("--only", choices=["fast", "reference"], default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--scale-down", action="store_true",
                    help="llama8b-shaped: a quarter the width and depth (for CPU)")
    ap.add_argument("--no-score", action="store_true")
    add_set_argument(ap)
    ap.add_argument("--profile-ops", type=int, default=0, metavar="TOP",
                    help="also profile operators (slower: not for timing) and record the "
                         "matmul and vocabulary-projection shares and the TOP entries")
    ap.add_argument("--out", default=None, help="append results as JSON lines")
    ap.add_argument("--impl", default=None, help=argparse.SUPPRESS)  # internal: child process
    ap.add_argument("--deltas", default=None, help=argparse.SUPPRESS)  # internal: child process
    args = ap.parse_args(argv)

    if args.impl:  # child: one measurement, printed as JSON
        print("RESULT " + json.dumps(measure(args)))
        return
    rows = []
    tmp = tempfile.mkdtemp(prefix="locft-speed-")
    for n in args.n:
        deltas = {}
        for impl in ([args.only] if args.only else ["fast", "reference"]):
            deltas[impl] = os.path.join(tmp, f"{n}-{impl}.pt")
            cmd = [sys.executable, __file__, "--impl", impl, "--n", str(n), "--model", args.model,
                   "--hparams", args.hparams]
            cmd += ["--data", args.data] if args.data else []
            cmd += ["--epochs", str(args.epochs)] if args.epochs else []
            cmd += ["--threads", str(args.threads)] if args.threads else []
            cmd += ["--scale-down"] if args.scale_down else []
            cmd += ["--no-score"] if args.no_score else []
            cmd += ["--set", *args.set] if args.set else []
            cmd += ["--deltas", deltas[impl]]
            cmd += ["--profile-ops", str(args.profile_ops)] if args.profile_ops else []
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
            line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"{impl} run failed (exit {proc.returncode})")
            row = json.loads(line[0][len("RESULT "):])
            if impl == "reference" and "fast" in deltas:  # same edit? (the fast row came first)
                row["delta_rel_diff_fast_vs_reference"] = relative_difference(
                    deltas["fast"], deltas["reference"])
            row.update(machine=f"{platform.machine()}, {os.cpu_count()} cores",
                       date=time.strftime("%Y-%m-%d"), command="python benchmarks/speed.py "
                       + " ".join(argv if argv is not None else sys.argv[1:]))
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    by = {(r["n"], r["impl"]): r for r in rows}
    print("\n| model | N | impl | s/edit | target tok/s | peak RSS MB | reliability | speed-up | "
          "deltas vs reference |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        ref = by.get((r["n"], "reference"))
        ratio = ref["seconds"] / r["seconds"] if ref and r["impl"] == "fast" else None
        print(f"| {r['model']} | {r['n']} | {r['impl']} | {r['seconds_per_edit']:.4f} | "
              f"{r['target_tokens_per_second']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r.get('reliability', float('nan')):.3f} | "
              f"{'%.2fx' % ratio if ratio else ''} | "
              f"{'%.1e' % ref['delta_rel_diff_fast_vs_reference'] if ratio else ''} |")


if __name__ == "__main__":
    main()
