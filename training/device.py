"""Where training runs: ``train.device`` and ``train.precision`` turned into a device, an autocast dtype,
a gradient scaler and a process-group backend (NCCL on CUDA, gloo on the CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from rnnmt.errors import RnnmtError


@dataclass(frozen=True)
class Placement:
    device: torch.device
    autocast: torch.dtype | None  # None: fp32
    scaled: bool  # fp16: losses scaled (torch.amp.GradScaler)

    @property
    def backend(self) -> str:
        """The torch.distributed backend for this device."""
        return "nccl" if self.device.type == "cuda" else "gloo"


def select_device(name: str, cuda_devices: int | None = None) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` → a device. ``auto`` is CUDA when a GPU is present;
    ``cuda`` under torchrun is the GPU of the process's ``LOCAL_RANK``. ``cuda_devices`` (default: what
    torch sees) lets tests pretend. A CUDA device that is not there is an :class:`RnnmtError`."""
    count = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    if name == "cpu" or (name == "auto" and count == 0):
        return torch.device("cpu")
    if count == 0:
        raise RnnmtError(f"train.device is {name} but no CUDA device is available; use auto or cpu")
    index = int(name.partition(":")[2] or os.environ.get("LOCAL_RANK", "0"))
    if index >= count:
        raise RnnmtError(f"train.device {name}: cuda:{index} does not exist ({count} CUDA device(s))")
    return torch.device("cuda", index)


def placement(device: torch.device, precision: str, bf16_supported: bool | None = None) -> Placement:
    """The autocast of ``precision`` on ``device``: bf16 where asked for and supported (CUDA without
    bf16 falls back to fp16 with a scaler), fp16 on CUDA only. ``bf16_supported`` lets tests pretend."""
    if precision == "fp32":
        return Placement(device, None, False)
    if device.type == "cpu":
        if precision == "fp16":
            raise RnnmtError("train.precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        return Placement(device, torch.bfloat16, False)
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    if precision == "bf16" and bf16_supported:
        return Placement(device, torch.bfloat16, False)
    return Placement(device, torch.float16, True)
