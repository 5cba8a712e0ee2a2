"""Data-parallel editing on CPU with 2 gloo processes = one process with the same mini-batch."""
import dataclasses
import os
import sys

import pytest
import torch
import torch.multiprocessing as mp

from locft_easyedit import LocFTHyperParams, execute_locft
from locft_easyedit.synthetic import tiny_setup

HP = dict(model_name="tiny", layers=[2], lr=1e-2, num_epochs=4, mini_batch_size=8, device="cpu")


def _worker(rank, world, init_file, out_file, impl, backend="gloo"):
    """One rank: ``backend`` gloo on the CPU, or nccl with this rank on ``cuda:rank``
    (tests/test_cuda.py)."""
    import torch.distributed as dist

    from locft_easyedit.locft import distributed

    torch.set_num_threads(1)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    real, devices = dist.all_reduce, []

    def recording(tensor, *args, **kwargs):  # every collective: on the group's device?
        devices.append(tensor.device == distributed.group_device())
        return real(tensor, *args, **kwargs)

    dist.all_reduce = recording
    try:
        model, tok, facts = tiny_setup(32)
        if backend == "nccl":
            model.to(f"cuda:{rank}")
        hp = LocFTHyperParams(**HP, implementation=impl)
        new, _ = execute_locft(model, tok, facts, hp, progress=False)
        new = {n: t.cpu() for n, t in new.items()}
        torch.save({"deltas": new, "collectives": devices},
                   out_file if rank == 0 else out_file + ".rank1")
    finally:
        dist.all_reduce = real
        dist.barrier()  # both ranks done before gloo tears down (a rank aborted otherwise)
        dist.destroy_process_group()


def two_processes_match_one(tmp_path, impl="fast", backend="gloo"):
    """Two ranks on ``backend`` give the edit of one process with the same mini-batch."""
    out = str(tmp_path / "deltas.pt")
    mp.start_processes(_worker, args=(2, str(tmp_path / "rdzv"), out, impl, backend), nprocs=2,
                       join=True, start_method="spawn")
    runs = torch.load(out), torch.load(out + ".rank1")
    for run in runs:  # the loss and every gradient of every step went through the group's device
        assert len(run["collectives"]) > 10 and all(run["collectives"])
    two, two_rank1 = runs[0]["deltas"], runs[1]["deltas"]
    model, tok, facts = tiny_setup(32)
    one, _ = execute_locft(model, tok, facts, LocFTHyperParams(**HP, implementation=impl),
                           progress=False)
    base = {n: p.detach() for n, p in model.named_parameters()}
    for name in one:
        assert torch.equal(two[name], two_rank1[name])  # every process ends identical
        d1, d2 = one[name] - base[name], two[name] - base[name]
        # float summation order differs (two partial sums + all_reduce): measured ~1e-6
        assert float((d1 - d2).norm() / d1.norm()) <= 1e-4


@pytest.mark.skipif(sys.platform != "linux", reason="file:// rendezvous tested on Linux only")
def test_two_processes_match_one(tmp_path):
    two_processes_match_one(tmp_path)


def _ckpt_worker(rank, world, init_file, out_file, dirs):
    """One data-parallel run with checkpoints in ``dirs[rank]``; saves the deltas or the error."""
    import torch.distributed as dist

    from locft_easyedit.locft.checkpoint import CheckpointError

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, tok, facts = tiny_setup(32)
        hp = LocFTHyperParams(**HP, checkpoint_dir=dirs[rank])
        try:
            new, res = execute_locft(model, tok, facts, hp, progress=False)
            torch.save({"deltas": new, "steps": res.steps}, f"{out_file}.{rank}")
        except CheckpointError as exc:
            torch.save({"error": str(exc)}, f"{out_file}.{rank}")
    finally:
        dist.barrier()  # both ranks done before gloo tears down (a rank aborted otherwise)
        dist.destroy_process_group()


def _run_ckpt(tmp_path, tag, dirs):
    out = str(tmp_path / f"{tag}.pt")
    mp.start_processes(_ckpt_worker, args=(2, str(tmp_path / f"rdzv-{tag}"), out, dirs),
                       nprocs=2, join=True, start_method="spawn")
    return [torch.load(f"{out}.{r}") for r in range(2)]


@pytest.mark.skipif(sys.platform != "linux", reason="file:// rendezvous tested on Linux only")
def test_data_parallel_checkpoint_one_writer_and_resume(tmp_path):
    shared = str(tmp_path / "shared-ckpt")
    first = _run_ckpt(tmp_path, "first", [shared, shared])
    names = sorted(os.listdir(shared))
    assert names == ["locft-checkpoint.pt"]  # one file, no temporary left behind
    again = _run_ckpt(tmp_path, "again", [shared, shared])  # resumes from the final state
    for r in range(2):
        for name, w in first[r]["deltas"].items():
            assert torch.equal(again[r]["deltas"][name], w)
        assert again[r]["steps"] == first[r]["steps"]


@pytest.mark.skipif(sys.platform != "linux", reason="file:// rendezvous tested on Linux only")
def test_data_parallel_ranks_that_see_different_checkpoints_are_refused(tmp_path):
    # a checkpoint_dir that is not shared: each rank has its own folder
    dirs = [str(tmp_path / "rank0"), str(tmp_path / "rank1")]
    _run_ckpt(tmp_path, "first", dirs)
    assert os.listdir(dirs[0]) == ["locft-checkpoint.pt"] and os.listdir(dirs[1]) == []
    refused = _run_ckpt(tmp_path, "resume", dirs)
    for r in range(2):
        assert "ranks disagree" in refused[r]["error"]
        assert "shared filesystem" in refused[r]["error"]


@pytest.mark.parametrize("backend, device", [
    ("nccl", "cuda:3"), ("gloo", "cpu"), ("cpu:gloo,cuda:nccl", "cpu")])
def test_collectives_use_the_groups_device(monkeypatch, backend, device):
    """NCCL takes CUDA tensors only: under an NCCL group every collective goes through the
    current CUDA device (each torchrun rank's own, from LOCAL_RANK)."""
    import torch.distributed as dist

    from locft_easyedit.locft import distributed

    monkeypatch.setattr(dist, "get_backend", lambda *a: backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert distributed.group_device() == torch.device(device)


def test_each_torchrun_rank_gets_its_own_gpu(monkeypatch):
    from locft_easyedit.locft import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.local_device() == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.local_device() == torch.device("cpu")
