#!/usr/bin/env bash
# Everything this project has not been able to run without a GPU, in one script for a CUDA
# machine (run from the repository root, after the README's install):
#
#   bash benchmarks/gpu.sh            # all steps; OUT=dir to write the rows elsewhere
#
# 1. the test suite, with tests/test_cuda.py (fast == reference on the GPU in float32 and
#    bfloat16, the cache budget and the planner reading the GPU, loading straight onto it,
#    NCCL data-parallel when two GPUs are visible);
# 2. the LLaMA3-8B-shaped speed benchmark: 3K ZsRE edits, 25 epochs, bfloat16, layer 22
#    down_proj (the paper's anchor: 0.27 s/edit; this project's target 0.027);
# 3. seconds per edit from 1K to 100K edits (2 epochs each, fixed work per edit);
# 4. the planner against the measured GPU peak (benchmarks/plan_check.py on cuda);
# 5. data-parallel with NCCL on the embedded model when two GPUs are visible: 2 ranks give
#    the patch of one process (benchmarks/delta_check.py compares them).
# Rows go to $OUT (default benchmarks/results) as JSON lines, where RESULTS.md reads them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
log() { printf '\n=== %s: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

python - <<'PY'
import torch
assert torch.cuda.is_available(), "benchmarks/gpu.sh needs a CUDA device"
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name} {p.total_memory / 2**30:.0f} GB, torch {torch.__version__}")
PY
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")

log "1. tests (CUDA checks first)"
python -m pytest -q tests/test_cuda.py -rs
python -m pytest -q -x

log "2. LLaMA3-8B-shaped speed, 3K edits, 25 epochs, bf16"
python benchmarks/speed.py --model llama8b-shaped --n 3000 --epochs 25 --only fast \
    --no-score --out "$OUT/gpu_speed.jsonl"

log "3. seconds per edit, 1K -> 100K edits (2 epochs each)"
python benchmarks/speed.py --model llama8b-shaped --n 1000 10000 100000 --epochs 2 \
    --only fast --no-score --out "$OUT/gpu_speed_curve.jsonl"

log "4. planner vs measured peak GPU memory (embedded model, 300 ZsRE edits)"
python benchmarks/plan_check.py --n 300 --device cuda --out "$OUT/gpu_plan_check.jsonl"

if [ "$GPUS" -ge 2 ]; then
    log "5. data-parallel on NCCL: 2 ranks vs 1 process, embedded model, 64 ZsRE edits"
    tmp=$(mktemp -d)
    data=$(python -c 'import sys; sys.path.insert(0, "benchmarks"); import common; print(common.data_path("zsre_2k.json"))')
    locft-edit --quiet run --dataset zsre --data "$data" --n 64 --patch-out "$tmp/one.safetensors"
    torchrun --nproc_per_node 2 -m locft_easyedit --quiet run --dataset zsre --data "$data" \
        --n 64 --patch-out "$tmp/two.safetensors"
    python - "$tmp/one.safetensors" "$tmp/two.safetensors" <<'PY' | tee -a "$OUT/gpu_nccl.txt"
import sys
from locft_easyedit.patch import load_patch
(_, base, one), (_, _, two) = load_patch(sys.argv[1]), load_patch(sys.argv[2])
for name in one:
    d1, d2 = one[name].float() - base[name].float(), two[name].float() - base[name].float()
    rel = float((d1 - d2).norm() / d1.norm())
    print(f"NCCL 2 ranks vs 1 process, {name}: relative difference {rel:.1e}",
          "OK" if rel <= 1e-2 else "DIFFERENT")
PY
else
    log "5. skipped: data-parallel on NCCL needs two GPUs ($GPUS visible)"
fi
log "done: rows in $OUT"
