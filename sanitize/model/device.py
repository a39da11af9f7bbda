"""Device selection and the precision settings that go with it."""

from __future__ import annotations

import contextlib

import torch

from sanitize.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a config device name into a torch device.

    ``"auto"`` picks CUDA when a GPU is visible, else the CPU. Asking for CUDA on a machine
    without one is a configuration error, not a silent fallback.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} requested but no CUDA GPU is available; use 'auto' or 'cpu'"
        )
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op on the CPU.

    CPU autocast to bf16 is slower than fp32 on most CPUs and changes results, so the CPU
    path stays in fp32.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last pays on CUDA tensor cores; on the CPU contiguous is as fast and simpler."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
