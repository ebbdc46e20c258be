"""A model ready to run: a backend that computes its outputs, what the model is, and its preprocessing.

The detector, the localizer and the attributor are runners (each adds what its outputs mean); the
backend is composed, not inherited: a torch module (:class:`~forensix.torch_backend.TorchBackend`)
or an onnxruntime session (:class:`~forensix.onnx_backend.OnnxBackend`), each knowing its device,
its precision and which of its errors mean "out of memory". :mod:`forensix.loading` chooses one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image
from torch import nn

from .imaging import preprocess
from .models.config import ModelConfig
from .torch_backend import TorchBackend


@dataclass
class ModelInfo:
    """What a model is and where it came from, whatever runs it."""

    config: ModelConfig
    name: str
    sha256: (
        str  # of the weights file (two-file models: of the model's own head/checkpoint); ONNX: of the weights exported
    )
    source: str  # the file it was loaded from
    provenance: dict[str, Any]


@dataclass
class LoadedWeights(ModelInfo):
    """A torch model with what it is (for running, exporting, calibrating or training it)."""

    model: nn.Module = field(kw_only=True)


class Backend(Protocol):
    """What computes a runner's outputs."""

    name: str  # "torch" | "onnx"
    device: torch.device
    precision: str

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's float32 output for a preprocessed batch (B, 3, H, W)."""
        ...

    def out_of_memory(self, error: Exception) -> bool:
        """Whether ``error`` says the device ran out of memory (so a smaller batch may fit)."""
        ...


class Runner:
    """A backend and the model it runs, with the model's own preprocessing."""

    # Detectors run in channels-last on the torch backend (see Detector); the others as built.
    channels_last = False

    def __init__(self, backend: Backend, info: ModelInfo, config: ModelConfig | None = None) -> None:
        self.backend, self.info = backend, info
        self.config = config or info.config
        self.max_batch: int | None = None  # set once a batch ran out of GPU memory: the piece size that fits

    @classmethod
    def from_torch(
        cls, loaded: LoadedWeights, device: str = "auto", precision: str = "fp32", compile: bool = False, **kwargs: Any
    ) -> Runner:
        """A runner of a torch model in memory (``kwargs``: the runner's own, e.g. a detector's threshold)."""
        backend = TorchBackend(loaded.model, device, precision, channels_last=cls.channels_last, compile=compile)
        return cls(backend, loaded, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def precision(self) -> str:
        return self.backend.precision

    @property
    def name(self) -> str:
        """The model's name @ the first 12 hex digits of its weights' sha256 (the report's ``model``)."""
        return f"{self.info.name}@{self.info.sha256[:12]}" if self.info.sha256 else self.info.name

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return preprocess(image, self.config.preprocess)

    def stack(self, images: Sequence[Image.Image | torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """A preprocessed batch from PIL images (preprocessed here) and/or preprocessed tensors; a batch passes."""
        if isinstance(images, torch.Tensor):
            return images
        return torch.stack([im if isinstance(im, torch.Tensor) else self.preprocess(im) for im in images])

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's output in float32 for a preprocessed batch (B, 3, H, W)."""
        return self.run_in_pieces(self.backend, batch)

    def run_in_pieces(self, forward: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        """``forward`` on ``batch``; in pieces along the batch if the whole does not fit the GPU.

        Out of memory, the piece size halves and stays halved for later batches (``max_batch``);
        only a single image that does not fit raises. The outputs are the same up to float rounding
        (one image's output does not depend on its batch), so a scan never stops for a batch size too big.
        """
        while True:
            size = min(len(batch), self.max_batch or len(batch))
            try:
                if size == len(batch):
                    return forward(batch)
                return torch.cat([forward(batch[i : i + size]) for i in range(0, len(batch), size)])
            except Exception as e:
                if size <= 1 or not self.backend.out_of_memory(e):
                    raise
            # Past the except block, so the failed attempt's tensors are already freed.
            self.max_batch = size // 2
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
