"""The attributor API: which source made an image — ``real``, or one of the generators a source-attribution
model was trained on (:mod:`forensix.models.attribution`), with the probability of each.

An attributor is a forensix ``.safetensors`` of arch ``attribution`` written by ``forensix train
--task attribute`` (its class names travel in the checkpoint's config), or a manifest entry of kind
``attributor``. LoRA, if the checkpoint holds it, is merged on load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import weights as W
from .detector import LoadedWeights, Runner
from .models.checkpoints import CheckpointError, build_and_load, is_safetensors, read_checkpoint
from .models.lora import merge_lora


def load_attributor_file(path: Path) -> LoadedWeights:
    """An attributor from a forensix ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if not is_safetensors(path):
        raise CheckpointError(f"{path}: not an attributor (a .safetensors of 'forensix train --task attribute')")
    cfg, state, provenance = read_checkpoint(path)
    if cfg.arch != "attribution":
        raise CheckpointError(f"{path}: a {cfg.arch} model, not an attributor (arch attribution)")
    model = build_and_load(cfg, state, source=str(path))
    merge_lora(model)
    return LoadedWeights(model, cfg, cfg.name, W.cached_sha256(path), str(path), provenance)


def load_attributor_weights(spec: str | Path) -> LoadedWeights:
    """``spec`` is a ``.safetensors`` file or a manifest name of kind ``attributor``."""
    if Path(spec).is_file():
        return load_attributor_file(Path(spec))
    name = str(spec)
    W.get_entry_of_kind(name, "attributor")
    loaded = load_attributor_file(W.resolve(name)["checkpoint"])
    loaded.name = name
    return loaded


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
        best = probabilities.argmax(axis=1)
        return [(self.classes[i], float(p[i])) for i, p in zip(best, probabilities)]


def p_fake(probabilities: np.ndarray) -> np.ndarray:
    """P(fake) = 1 - P(real) per row."""
    return 1.0 - probabilities[:, 0]


def load_attributor(spec: str | Path, device: str = "auto", precision: str = "fp32") -> Attributor:
    """A ready attributor from a ``.safetensors`` file or a manifest name.

    A ``.onnx`` file (``forensix export-onnx --attributor``) runs in onnxruntime, at the precision it
    was exported in (``fp32`` means "as exported").
    """
    if Path(spec).suffix.lower() == ".onnx":
        from .onnx_backend import load_onnx_attributor

        return load_onnx_attributor(spec, device=device, precision=None if precision == "fp32" else precision)
    return Attributor(load_attributor_weights(spec), device=device, precision=precision)
