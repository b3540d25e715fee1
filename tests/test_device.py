"""Where training runs: device selection, precision per device, and checkpoints written on a GPU loaded
on a machine without one (CPU-only here: GPUs are pretended where the logic does not need one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from rnnmt.errors import RnnmtError
from rnnmt.training.checkpoint import load_model
from rnnmt.training.config import config_from_dict
from rnnmt.training.device import placement, select_device


def test_auto_is_cuda_where_there_is_one_and_the_local_ranks_gpu_under_torchrun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert select_device("auto", cuda_devices=0) == torch.device("cpu")
    assert select_device("auto", cuda_devices=2) == torch.device("cuda", 0)
    assert select_device("cpu", cuda_devices=2) == torch.device("cpu")
    assert select_device("cuda:1", cuda_devices=2) == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert select_device("cuda", cuda_devices=2) == torch.device("cuda", 1)
    assert select_device("auto", cuda_devices=2) == torch.device("cuda", 1)
    with pytest.raises(RnnmtError, match="no CUDA device is available; use auto or cpu"):
        select_device("cuda", cuda_devices=0)
    with pytest.raises(RnnmtError, match=r"cuda:2 does not exist \(2 CUDA device"):
        select_device("cuda:2", cuda_devices=2)


def test_precision_is_bf16_where_supported_else_fp16_with_a_scaler() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert (placement(cpu, "bf16").autocast, placement(cpu, "bf16").scaled) == (torch.bfloat16, False)
    assert placement(cpu, "fp32").autocast is None and placement(cpu, "fp32").backend == "gloo"
    assert placement(gpu, "bf16", bf16_supported=True).autocast == torch.bfloat16
    older = placement(gpu, "bf16", bf16_supported=False)
    assert (older.autocast, older.scaled, older.backend) == (torch.float16, True, "nccl")
    assert placement(gpu, "fp16", bf16_supported=True).scaled
    with pytest.raises(RnnmtError, match="fp16 needs a CUDA device"):
        placement(cpu, "fp16")


def test_device_options_are_checked(toy_data: Path, tmp_path: Path) -> None:
    for device in ("gpu", "cuda:x", "cuda:"):
        values = tiny_config(toy_data, tmp_path, device=device)
        with pytest.raises(RnnmtError, match=r"train\.device must be auto, cpu, cuda or cuda:N"):
            config_from_dict(values)
    assert config_from_dict(tiny_config(toy_data, tmp_path, device="cuda:3")).train.device == "cuda:3"


# Re-save a checkpoint with every storage tagged as CUDA's, as torch.save does for tensors on a GPU.
AS_IF_FROM_A_GPU = """
import sys, torch
torch.serialization.register_package(0, lambda storage: "cuda:0", lambda storage, location: None)
torch.save(torch.load(sys.argv[1], map_location="cpu", weights_only=True), sys.argv[2])
"""


def test_a_checkpoint_written_on_a_gpu_loads_on_a_cpu_only_machine(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "from-gpu.pt"
    code = [sys.executable, "-c", AS_IF_FROM_A_GPU, str(tiny_checkpoint), str(moved)]
    subprocess.run(code, check=True)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(moved, weights_only=True)  # as saved: it wants a GPU
    loaded = load_model(moved)
    assert all(t.device.type == "cpu" for t in loaded.model.state_dict().values())
    reference = load_model(tiny_checkpoint).model.state_dict()
    assert all(torch.equal(t, reference[name]) for name, t in loaded.model.state_dict().items())
    assert loaded.meta == load_model(tiny_checkpoint).meta
