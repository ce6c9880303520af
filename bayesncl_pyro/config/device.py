"""Device and precision from the config: ``auto`` picks CUDA when present, and the autocast
dtype of each ``train.precision``.

torch is imported by the functions, not by the module: config validation reads the names below,
and a console command's ``--help`` must not wait for torch.
"""
from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

from bayesncl_pyro.config.errors import ConfigError, shown

if TYPE_CHECKING:
    import torch

DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"
PRECISIONS = {"32": None, "bf16": "bfloat16", "16": "float16"}
"""``train.precision`` -> the name of the autocast dtype in torch (None: float32, no autocast)."""


def resolve_device(name: str) -> "torch.device":
    """``auto|cpu|cuda|cuda:N`` -> a device that exists here, or a ConfigError saying why not."""
    import torch

    if not isinstance(name, str) or re.fullmatch(DEVICE_PATTERN, name) is None:
        raise ConfigError(f"train.device={shown(name)} is not allowed; allowed: auto, cpu, cuda, cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={shown(name)} is not available: this machine has no CUDA device; allowed: auto, cpu")
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device={shown(name)} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return torch.device(name)


def autocast(device: "torch.device", precision: str):
    """Mixed precision for the networks; the ELBO itself is computed in float32."""
    import torch

    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))
