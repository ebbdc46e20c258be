"""The attributor API: which source made an image — ``real``, or one of the generators a source-attribution
model was trained on (:mod:`forensix.models.attribution`), with the probability of each.

An attributor is a forensix ``.safetensors`` of arch ``attribution`` written by ``forensix train
--task attribute`` (its class names travel in the checkpoint's config), or a manifest entry of kind
``attributor``. LoRA, if the checkpoint holds it, is merged on load.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .loading import open_backend
from .runner import Runner


class Attributor(Runner):
    """Class probabilities (B, classes) with the model's own preprocessing; ``classes[0]`` is ``real``."""

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.attribution.classes

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) in float32 for a preprocessed batch (B, 3, H, W)."""
        return self.run(batch)

    def probabilities(self, images: list[Image.Image | torch.Tensor] | torch.Tensor) -> np.ndarray:
        """P(class) (B, classes), float32, rows summing to 1, for PIL images, preprocessed tensors, or a batch."""
        if not len(images):
            return np.zeros((0, len(self.classes)), np.float32)
        return torch.softmax(self.logits(self.stack(images)), dim=-1).cpu().numpy()

    def top(self, probabilities: np.ndarray) -> list[tuple[str, float]]:
        """The most likely class of each row and its probability."""
        return top_classes(self.classes, probabilities)


def top_classes(classes: Sequence[str], probabilities: np.ndarray) -> list[tuple[str, float]]:
    """The most likely of ``classes`` for each row of ``probabilities``, and its probability."""
    best = probabilities.argmax(axis=1)
    return [(classes[i], float(p[i])) for i, p in zip(best, probabilities)]


def p_fake(probabilities: np.ndarray) -> np.ndarray:
    """P(fake) = 1 - P(real) per row."""
    return 1.0 - probabilities[:, 0]


def load_attributor(spec: str | Path, device: str = "auto", precision: str = "fp32") -> Attributor:
    """A ready attributor from a ``.safetensors`` file or a manifest name.

    A ``.onnx`` file (``forensix export-onnx --attributor``) runs in onnxruntime, at the precision it
    was exported in (``fp32`` means "as exported").
    """
    return Attributor(*open_backend(spec, "attributor", device=device, precision=precision))
