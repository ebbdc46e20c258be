"""The localizer API: load a DeCLIP mask model by manifest name or file, get per-pixel P(manipulated).

A localizer is a forensix model of arch ``declip`` (:mod:`forensix.models.declip`). It comes from a
manifest entry of kind ``localizer`` (``forensix weights fetch declip-pluralistic``), from the
authors' checkpoint file ``{'model', 'feature_layer', 'decoder_type', ...}``, or from a forensix
``.safetensors`` written by ``forensix weights import``. The authors' ViT+RN50 files hold only the
decoder; their backbones are OpenAI's CLIP ViT-L/14 and RN50 files from the weights folder (the
``declip-vitrn50-*`` entries fetch them; forensix.models.declip names them as companions).

It never shares the detector's backbone pass: DeeCLIP's tower carries merged LoRA weights (its
residual stream differs from plain CLIP's from the first block on) and its preprocessing crops
where DeCLIP's squashes, so one pass could serve only one of them exactly (docs/localization.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .loading import open_backend
from .runner import Runner


class Localizer(Runner):
    """Per-pixel P(manipulated) maps (mask_size x mask_size) with the model's own preprocessing."""

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Mask logits (B, S, S) in float32 for a preprocessed batch (B, 3, H, W)."""
        return self.run(batch)

    def probabilities(self, images: list[Image.Image | torch.Tensor] | torch.Tensor) -> np.ndarray:
        """P(manipulated) maps (B, S, S), float32, for PIL images, preprocessed tensors, or a batch."""
        if not len(images):
            return np.zeros((0, self.config.decoder.mask_size, self.config.decoder.mask_size), np.float32)
        return torch.sigmoid(self.logits(self.stack(images))).cpu().numpy()


def load_localizer(spec: str | Path, device: str = "auto", precision: str = "fp32") -> Localizer:
    """A ready localizer from a manifest name (e.g. ``declip-pluralistic``) or a weights file.

    A ``.onnx`` file (``forensix export-onnx --localizer``) runs in onnxruntime, at the precision it
    was exported in (``fp32`` means "as exported").
    """
    return Localizer(*open_backend(spec, "localizer", device=device, precision=precision))
