"""Edits over time (issue 15): R rounds of P ZsRE edits, four ways, and a revert.

Modes (each a ledger, :mod:`locft_easyedit.ledger`, in its own folder):

* ``ledger-all``: every round trains its edits with replay of all earlier ones;
* ``ledger-sample``: replay of a fresh sample per sub-run (the ledger's default settings:
  ``ceil(1.0 x P)`` earlier edits, a new sample every 5 epochs, up to 2 repair sub-runs);
* ``chunks``: no replay (chunk after chunk, as ``lifelong_edit(chunk_size=P)``);
* ``bf``: one breadth-first run over all R x P edits (one round).

After every round: reliability (teacher-forced token accuracy, EasyEdit's ``token_em``) over
all edits so far, over round 1's and over the round's own; generalization (the same on the
rephrasings) over all so far; locality (argmax agreement with the base model on the locality
prompts of all edits so far); seconds of training (``seconds``), of the ledger's own scoring
(``ledger_score_seconds``) and epochs / steps / replayed edits. After the last round of the first
ledger mode, round ``--revert`` is reverted: reliability of its edits (and their pre-edit
score), of all others, generalization, locality, seconds.

Everything is saved as it is made: each mode's ledger under ``--work`` (every round committed
atomically) and each row appended to ``--out`` (JSON lines, ``key`` = the settings' hash). The
same command again resumes: rounds its ledger holds are not retrained, rows ``--out`` holds are
not rescored.

    python benchmarks/ledger.py --rounds 10 --per-round 100 --threads 1   # the full run (hours)
    python benchmarks/ledger.py --rounds 3 --per-round 20 --threads 1     # a quick check
    python benchmarks/ledger.py --report                 # markdown rows for RESULTS.md
    python benchmarks/ledger.py --plot benchmarks/plots/ledger_round1.png
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # benchmarks/common.py, also when loaded from a file
    sys.path.insert(0, str(HERE))
from common import (REPO, TINY, add_set_argument, data_path, load, tiny_hparams,  # noqa: E402
                    with_overrides)

MODES = {"ledger-all": "all", "ledger-sample": "sample", "chunks": "none", "bf": "none"}
DEFAULT_OUT = REPO / "benchmarks" / "results" / "ledger.jsonl"
DEFAULT_WORK = REPO / "benchmarks" / "results" / "tmp" / "ledger"  # git-ignored
logger = logging.getLogger("benchmarks.ledger")


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def settings_key(args, hp) -> str:
    """What makes rows comparable: model, hparams, data, rounds x per-round."""
    spec = {"model": args.model, "hparams": hp.to_dict(), "data": args.data_name,
            "rounds": args.rounds, "per_round": args.per_round}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


class Scorer:
    """Scores of the model's current state over the first ``k`` rounds' edits."""

    def __init__(self, model, tok, rounds):
        from locft_easyedit.evaluate import locality_snapshot

        self.model, self.tok, self.rounds = model, tok, rounds
        self.loc_before = [locality_snapshot(model, tok, reqs) for reqs in rounds]  # the base

    def __call__(self, k: int, skip: int = 0) -> dict:
        """Over rounds ``1..k`` (leaving out round ``skip``, 1-based, when given)."""
        from locft_easyedit.evaluate import locality_scores, locality_snapshot, token_accuracy

        m, tok = self.model, self.tok
        keep = [i for i in range(k) if i + 1 != skip]
        per_round = [token_accuracy(m, tok, [r["prompt"] for r in self.rounds[i]],
                                    [r["target_new"] for r in self.rounds[i]]) for i in keep]
        reqs = [r for i in keep for r in self.rounds[i] if r.get("rephrase_prompt")]
        gen = token_accuracy(m, tok, [r["rephrase_prompt"] for r in reqs],
                             [r["target_new"] for r in reqs])
        loc = [s for i in keep for s in locality_scores(
            self.loc_before[i], locality_snapshot(m, tok, self.rounds[i]))]
        return {"edits_scored": sum(map(len, per_round)),
                "reliability_all": _mean([s for r in per_round for s in r]),
                "reliability_round1": _mean(per_round[0]) if keep[:1] == [0] else None,
                "reliability_own": _mean(per_round[-1]),
                "generalization_all": _mean(gen), "locality_all": _mean(loc)}

    def of(self, requests) -> float:
        from locft_easyedit.evaluate import token_accuracy

        return _mean(token_accuracy(self.model, self.tok, [r["prompt"] for r in requests],
                                    [r["target_new"] for r in requests]))


def _context(args) -> dict:
    import torch

    return {"key": args.key, "model": args.model, "hparams": args.hparams,
            "overrides": args.overrides, "rounds": args.rounds, "per_round": args.per_round,
            "threads": torch.get_num_threads(), "command": args.command,
            "machine": f"{platform.machine()} {os.cpu_count()} cores, "
                       f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
            "load_avg_1min": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M")}


def _append(out: Path, row: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
    print(json.dumps({k: row[k] for k in ("mode", "round", "reliability_all",
                                          "reliability_round1", "seconds") if k in row}))


def read_rows(out: Path, key=None) -> list:
    if not out.is_file():
        return []
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return [r for r in rows if key is None or r.get("key") == key]


def open_ledger(folder: Path, mode: str, model, tok, hp, base):
    """The mode's ledger (created on first use), attached to the model put back to ``base``."""
    from locft_easyedit import Ledger, restore_weights

    restore_weights(model, base)
    if (folder / "ledger.json").is_file():
        return Ledger.open(folder, model, tok)
    return Ledger.init(folder, model, tok, hp, replay=MODES[mode])


def run_mode(mode: str, args, ctx: dict, model, tok, hp, base, scorer, done: set) -> None:
    from locft_easyedit.locft import weights_applied

    ledger = open_ledger(args.work / f"{mode}-{args.key}", mode, model, tok, hp, base)
    plan = ([(args.rounds, [r for rr in scorer.rounds for r in rr])] if mode == "bf" else
            [(i + 1, reqs) for i, reqs in enumerate(scorer.rounds)])
    for k, reqs in plan:
        name = f"round-{k}"
        if name not in {r.name for r in ledger.rounds}:
            logger.info("%s: %s (%d edits)", mode, name, len(reqs))
            ledger.add(reqs, name=name, progress=not args.quiet)
        if (mode, k) in done:
            continue
        rec, entry = ledger.record(name), ledger.find(name)
        t0 = time.perf_counter()
        with weights_applied(model, ledger.state_after(name)):
            scores = scorer(k)
        _append(args.out, {**ctx, "mode": mode, "round": k, "edits_so_far": entry.n_live,
                           **scores, "own_before": rec["scores"]["own_before"],
                           "seconds": entry.seconds, "ledger_score_seconds": rec["score_seconds"],
                           "eval_seconds": time.perf_counter() - t0,
                           "epochs": rec["train"]["epochs"], "steps": rec["train"]["steps"],
                           **{f"replay_{k2}": v for k2, v in rec["replay"].items()}})
    if args.revert and mode == args.revert_mode:
        revert(ledger, args, ctx, scorer, done)


def revert(ledger, args, ctx: dict, scorer, done: set) -> None:
    from locft_easyedit.locft import weights_applied

    target = f"round-{args.revert}"
    name = f"revert-{target}"
    if name not in {r.name for r in ledger.rounds}:
        logger.info("%s: reverting %s", args.revert_mode, target)
        ledger.revert(target, progress=not args.quiet)
    if (args.revert_mode, "revert") in done:
        return
    rec, entry = ledger.record(name), ledger.find(name)
    with weights_applied(ledger.model, ledger.state_after(name)):
        scores = scorer(args.rounds, skip=args.revert)
        reverted = scorer.of(scorer.rounds[args.revert - 1])
    _append(args.out, {**ctx, "mode": args.revert_mode, "round": "revert", "reverted": target,
                       **scores, "reliability_reverted": reverted,
                       "reliability_reverted_before": rec["scores"]["reverted_before"],
                       "reliability_reverted_at_add": rec["scores"]["reverted_at_add"],
                       "edits_so_far": entry.n_live, "seconds": entry.seconds,
                       "epochs": rec["train"]["epochs"], "steps": rec["train"]["steps"]})


# --- report ----------------------------------------------------------------------------------
def _f(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def report(rows: list) -> str:
    """Markdown: one row per mode and round, then the revert."""
    lines = ["| mode | round | edits so far | reliability, all so far | round 1 | own round | "
             "generalization | locality | s / round (training) | s / round (ledger's scoring) "
             "| earlier edits replayed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = {m: i for i, m in enumerate(MODES)}
    rounds = sorted((r for r in rows if r["round"] != "revert"),
                    key=lambda r: (order.get(r["mode"], 9), r["round"]))
    for r in rounds:
        lines.append(f"| {r['mode']} | {r['round']} | {r['edits_so_far']:,} | "
                     f"{_f(r['reliability_all'])} | {_f(r['reliability_round1'])} | "
                     f"{_f(r['reliability_own'])} | {_f(r['generalization_all'])} | "
                     f"{_f(r['locality_all'])} | {r['seconds']:.0f} | "
                     f"{r.get('ledger_score_seconds', 0):.0f} | {r.get('replay_replayed', 0):,} |")
    for r in (r for r in rows if r["round"] == "revert"):
        lines += ["", "| revert | reverted edits: before their round / after it / after the "
                      "revert | every other edit | generalization | locality | seconds |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| {r['reverted']} ({r['mode']}) | {_f(r['reliability_reverted_before'])} / "
                  f"{_f(r['reliability_reverted_at_add'])} / {_f(r['reliability_reverted'])} | "
                  f"{_f(r['reliability_all'])} | {_f(r['generalization_all'])} | "
                  f"{_f(r['locality_all'])} | {r['seconds']:.0f} |"]
    if rows:
        lines += ["", f"`{rows[0]['command']}` ({rows[0]['machine']}, {rows[0]['threads']} "
                      f"thread(s), {rows[0]['date']})"]
    return "\n".join(lines)


def plot(rows: list, path: Path) -> None:
    """Reliability of round 1's edits (solid) and of all edits so far (dashed) by round."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, mode in enumerate(MODES):
        pts = sorted((r["round"], r["reliability_round1"], r["reliability_all"]) for r in rows
                     if r["mode"] == mode and r["round"] != "revert")
        if not pts:
            continue
        xs = [p[0] for p in pts]
        style = {"marker": "o" if len(pts) > 1 else "*", "color": f"C{i}"}
        ax.plot(xs, [p[1] for p in pts], label=f"{mode}: round 1's edits", **style)
        ax.plot(xs, [p[2] for p in pts], linestyle="--", alpha=0.6, label=f"{mode}: all so far",
                **style)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("reliability (token accuracy)")
    ax.set_title("Edits over time: does round 1 still hold?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


# --- main ------------------------------------------------------------------------------------
def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2-135m",
                    help="embedded:smollm2-135m, a local folder, or tiny (the tests' model)")
    ap.add_argument("--hparams", default="hparams/smollm2-135m.yaml")
    add_set_argument(ap)
    ap.add_argument("--data", default=None, help="ZsRE file (default: the shared zsre_2k.json)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=100)
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    ap.add_argument("--revert", type=int, default=1,
                    help="round to revert after the last round of the first ledger mode (0: none)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="rows (JSON lines)")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="the ledgers' folders")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--report", action="store_true", help="print markdown rows; run nothing")
    ap.add_argument("--plot", type=Path, default=None, help="write the plot; run nothing")
    args = ap.parse_args(argv)
    args.command = " ".join(["python", "benchmarks/ledger.py"] + list(argv or sys.argv[1:]))
    return args


def setup(args):
    """``(model, tok, hp, rounds of requests)``; sets ``args.key``, ``args.overrides``."""
    import torch

    from locft_easyedit import LocFTHyperParams, load_dataset

    if args.model == TINY:
        hp, args.overrides = with_overrides(tiny_hparams(device="cpu"), args.set)
    else:
        hp, args.overrides = with_overrides(LocFTHyperParams.from_hparams(args.hparams),
                                            args.set)
        hp.model_name = args.model
    data = Path(args.data) if args.data else data_path("zsre_2k.json")
    args.data_name = data.name
    requests = load_dataset(data, "zsre", n=args.rounds * args.per_round)
    if len(requests) < args.rounds * args.per_round:
        raise SystemExit(f"{data} has {len(requests)} edits, fewer than "
                         f"{args.rounds} x {args.per_round}")
    model, tok, _ = load(args.model, device="cuda" if torch.cuda.is_available() else None,
                         dtype=hp.dtype)
    args.key = settings_key(args, hp)
    rounds = [requests[i * args.per_round:(i + 1) * args.per_round] for i in range(args.rounds)]
    return model, tok, hp, rounds


def main(argv=None) -> list:
    from locft_easyedit import select_parameters

    args = parse(argv)
    if args.report or args.plot:
        rows = read_rows(args.out)
        if rows:  # the latest settings only
            rows = [r for r in rows if r["key"] == rows[-1]["key"]]
        if args.report:
            print(report(rows))
        if args.plot:
            plot(rows, args.plot)
        return rows
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model, tok, hp, rounds = setup(args)
    ledger_modes = [m for m in args.modes if m.startswith("ledger")]
    args.revert_mode = ledger_modes[0] if ledger_modes else None
    ctx = _context(args)
    scorer = Scorer(model, tok, rounds)
    base = {n: p.detach().clone() for n, p in select_parameters(model, hp).items()}
    for mode in args.modes:
        done = {(r["mode"], r["round"]) for r in read_rows(args.out, args.key)}
        run_mode(mode, args, ctx, model, tok, hp, base, scorer, done)
    return read_rows(args.out, args.key)


if __name__ == "__main__":
    main()
