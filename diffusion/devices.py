"""Where the network runs: a device name from the command line, checked, with "auto" resolved.

    cpu         the CPU (the default; the app is made to be fast there)
    cuda[:N]    an NVIDIA GPU (on a ZeroGPU Space the app finds the GPU by itself: see zerogpu.py)
    mps         an Apple GPU (Apple-silicon Macs, PyTorch's Metal backend)
    auto        cuda if PyTorch sees one, else mps, else cpu
"""
from __future__ import annotations

import torch

DEVICE_CHOICES = "cpu, cuda, cuda:N, mps or auto"


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """The torch device for a command line's --device, or ValueError saying why it cannot be used here."""
    name = (name or "cpu").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use {DEVICE_CHOICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: PyTorch sees no CUDA GPU here (torch {torch.__version__}, "
                             f"CUDA build {torch.version.cuda or 'none'}); use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif device.type == "mps":
        if not mps_available():
            raise ValueError(f"--device {name}: PyTorch sees no Apple GPU (mps) here; use --device cpu or auto")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}: use {DEVICE_CHOICES}")
    return device
