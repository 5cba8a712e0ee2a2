#!/usr/bin/env bash
# One core's share of the benchmark work still to do, until HH:MM (a session's end): the
# short planned rows that are ready (planned.py --run --max-hours 2), the baselines' tuning
# grids (tune_baselines.py), then the long planned rows. Run one per core; they never take
# the same row (run.py locks a row
# while a process runs it), a row that reads another's target vectors or side memory waits
# for it, a row that cannot pause starts only where it fits, and pausable rows pause in time
# with their state saved (commit it: see states below): the next session's same
# command goes on.
#
#   bash benchmarks/session.sh CORE HH:MM EASYEDIT_PY [RESULTS_DIR]
#
# CORE: the CPU the rows are pinned to (taskset), one torch thread each. EASYEDIT_PY: the
# EasyEdit venv's python (benchmarks/easyedit_venv.sh). RESULTS_DIR (default: this checkout's
# benchmarks/results): where tuning.jsonl and edit_quality.jsonl are, e.g. the main checkout's
# when the code runs from a separate worktree that no edit touches while rows run. LocFT's
# rows run with the `python` on PATH (the main environment).
set -euo pipefail
if [ $# -lt 3 ] || ! [[ "$1" =~ ^[0-9]+$ ]] || ! [[ "$2" =~ ^[0-9]{1,2}:[0-9]{2}$ ]]; then
    echo "usage: $0 CORE HH:MM EASYEDIT_PY [RESULTS_DIR]" >&2
    exit 2
fi
core=$1 until=$2 easyedit=$3
repo=$(cd "$(dirname "$0")/.." && pwd)
results=$(cd "${4:-$repo/benchmarks/results}" && pwd)
if ! "$easyedit" -c "import easyeditor" 2>/dev/null; then
    echo "$easyedit cannot import easyeditor: make the venv first (benchmarks/easyedit_venv.sh)" >&2
    exit 2
fi
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
# The embedded model's folder, converted by the main environment: the EasyEdit venv's
# transformers reads the GGUF's tokenizer wrongly and refuses to convert (models.py).
python -c "from locft_easyedit.models import default_model_dir; default_model_dir()"
# What a later session goes on from lies in $RESULTS_DIR/states, which git tracks: paused
# rows' states (run.state_root), the target vectors and side memories later rows read
# (target_cache.kept). A later session may get a new machine (2026-12-04: neither /work nor
# ~/.cache was kept), so this work spans sessions only through the repository. Commit it
# when the queues have stopped (`git add -A benchmarks/results/states`); its locks/ is ignored.
export LOCFT_STATE_DIR="${LOCFT_STATE_DIR:-$results/states}"
# Shortest work first, and a row that cannot pause while the session still has the time for
# it: (1) the planned rows that are ready and take at most 2 h (LocFT's, the baselines' N = 100
# rows once tuned), what RESULTS.md shows; (2) the grids, those whose rows are one call that
# cannot pause (MEMIT, AlphaEdit: ~100 min each) before the pausable ones (ROME, WISE: they
# fill what is left and pause in time); (3) the longer planned rows (MEMIT / AlphaEdit at
# N = 1,000 ~8 h, WISE's ~20 h), shortest first, all pausable. The order only decides what is
# done first: every long row pauses, so the total is the same.
taskset -c "$core" python benchmarks/planned.py "$results/edit_quality.jsonl" --run \
    --tuning "$results/tuning.jsonl" --until "$until" --easyedit-python "$easyedit" --threads 1 \
    --max-hours 2
taskset -c "$core" "$easyedit" benchmarks/tune_baselines.py --methods memit alphaedit ultraedit \
    rome ft-m wise --threads 1 --python "$easyedit" --until "$until" --out "$results/tuning.jsonl"
taskset -c "$core" python benchmarks/planned.py "$results/edit_quality.jsonl" --run \
    --tuning "$results/tuning.jsonl" --until "$until" --easyedit-python "$easyedit" --threads 1
