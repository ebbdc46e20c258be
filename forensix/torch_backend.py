"""The torch backend: a module on a device, at a precision (autocast for bf16/fp16), optionally compiled."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return dev


def validate_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 needs a CUDA device; use fp32 or bf16 on the CPU")


@torch.inference_mode()
def autocast_forward(
    model: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, device: torch.device, precision: str
) -> torch.Tensor:
    """``model(batch)`` on ``device`` in float32, under autocast for bf16/fp16 (LayerNorm, softmax stay fp32)."""
    batch = batch.to(device, non_blocking=True)
    dtype = PRECISIONS[precision]
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        return model(batch).float()


class TorchBackend:
    """A torch module run under inference mode on ``device`` at ``precision``.

    Weights stay fp32 (bf16/fp16 are autocast), so the same module can be asked for fp32 outputs.
    ``channels_last``: module and inputs in channels-last memory format (the patch-embedding
    convolution then writes its tokens in the order the transformer reads them, saving a
    transpose; docs/benchmarks.md). ``compile``: through ``torch.compile`` (each new batch shape
    compiles once, tens of seconds).
    """

    name = "torch"

    def __init__(
        self,
        module: nn.Module,
        device: str = "auto",
        precision: str = "fp32",
        *,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        validate_precision(precision, self.device)
        self.precision = precision
        self.module = module.to(self.device).eval()
        self.memory_format = torch.channels_last if channels_last else torch.preserve_format
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.compiled = compile
        self.forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(self.module) if compile else self.module

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return autocast_forward(self.forward, batch, self.device, self.precision)

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """A detector's pooled embeddings (B, D), what its head scores (never compiled: eval's plots only)."""
        batch = batch.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return autocast_forward(self.module.embed, batch, self.device, self.precision)

    @staticmethod
    def out_of_memory(error: Exception) -> bool:
        return isinstance(error, torch.OutOfMemoryError)

    def packed(self) -> PackedTorch:
        """The module and its settings, to pickle and open again in another process (a Ray actor)."""
        module = self.module if self.device.type == "cpu" else copy.deepcopy(self.module).cpu()
        return PackedTorch(module, self.memory_format == torch.channels_last)


@dataclass
class PackedTorch:
    """A :class:`TorchBackend`'s module (on the CPU) and memory format, picklable."""

    module: nn.Module
    channels_last: bool

    def open(self, device: str, precision: str, compile: bool = False) -> TorchBackend:
        return TorchBackend(self.module, device, precision, channels_last=self.channels_last, compile=compile)
