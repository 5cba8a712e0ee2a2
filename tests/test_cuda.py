"""What only a CUDA device can check (skipped without one; ``benchmarks/gpu.sh`` runs them on a
GPU machine): the fast path against the reference on the GPU in float32 and bfloat16, the cache
budget and the planner reading the GPU's free memory, the embedded model loading straight onto
the GPU, and data-parallel editing on NCCL with two GPUs."""
import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from locft_easyedit import LocFTHyperParams, execute_locft
from locft_easyedit.synthetic import tiny_setup

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_distributed import HP, two_processes_match_one  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}


@pytest.fixture(autouse=True)
def no_tf32():
    """float32 on the GPU as on the CPU (TF32 matmuls would differ by ~1e-3)."""
    was = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = was


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_equals_reference_on_the_gpu(dtype):
    model, tok, facts = tiny_setup(32)
    model.to("cuda", getattr(torch, dtype))
    base = {n: p.detach().float() for n, p in model.named_parameters()}
    runs = {}
    for impl in ("fast", "reference"):
        hp = LocFTHyperParams(**{**HP, "device": 0}, dtype=dtype, implementation=impl)
        runs[impl] = execute_locft(model, tok, facts, hp, progress=False)
    (fast, res), (ref, _) = runs["fast"], runs["reference"]
    assert (res.implementation, res.cache, res.fallback) == ("fast", "module", "")
    for name, w in fast.items():
        assert w.dtype == getattr(torch, dtype) and w.is_cuda
        d_fast, d_ref = w.float() - base[name], ref[name].float() - base[name]
        assert float((d_fast - d_ref).norm() / d_ref.norm()) <= TOLERANCE[dtype]


def test_cache_budget_and_planner_read_the_gpu():
    from locft_easyedit.locft.losses import cache_budget_gb
    from locft_easyedit.plan import plan

    hp = LocFTHyperParams(**HP)
    budget, source = cache_budget_gb(hp, torch.device("cuda:0"))
    free = torch.cuda.mem_get_info(0)[0] / 2**30
    assert budget == pytest.approx(free / 2, rel=0.05) and "free memory of cuda:0" in source
    model, _, _ = tiny_setup(4)
    p = plan(model.config, dataclasses.replace(hp, model_name="tiny"), 100, 10, 3,
             device="cuda:0")
    assert p.device_bytes == pytest.approx(free * 2**30, rel=0.05) and p.fits is True


def test_embedded_model_loads_straight_onto_the_gpu():
    from locft_easyedit import load_default_model

    torch.cuda.synchronize()
    model, _ = load_default_model(device="cuda:0")
    assert all(p.device == torch.device("cuda", 0) for p in model.parameters())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_nccl_two_gpus_match_one_process(tmp_path):
    two_processes_match_one(tmp_path, backend="nccl")
