"""The detector API: load a detector by manifest name or file, score images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .loading import open_backend
from .runner import Backend, ModelInfo, Runner
from .verdicts import verdict


class Detector(Runner):
    """Scores images: P(fake) = sigmoid(logit / temperature), with the model's own preprocessing.

    The threshold, uncertain band and temperature come from the weights (a config, or a calibration
    sidecar for official files; see ``forensix calibrate``). An explicit ``threshold`` wins and judges
    real or fake alone (no band); an explicit ``band`` (low, high) is the uncertain band [low, high)
    with ``high`` the threshold. On the torch backend the model runs in channels-last (see
    :class:`~forensix.torch_backend.TorchBackend`).
    """

    channels_last = True

    def __init__(
        self, backend: Backend, info: ModelInfo, threshold: float | None = None, band: tuple[float, float] | None = None
    ) -> None:
        config = info.config
        if threshold is not None and band is not None:
            raise ValueError("give a threshold or an uncertain band (whose upper edge is the threshold), not both")
        if threshold is not None:
            config = replace(config, threshold=threshold, band_low=None)
        elif band is not None:
            config = replace(config, threshold=band[1], band_low=band[0])
        super().__init__(backend, info, config)

    @property
    def threshold(self) -> float:
        """Scores at or above it are ``fake``."""
        return self.config.threshold

    @property
    def band_low(self) -> float | None:
        """Scores in [band_low, threshold) are ``uncertain``; None: no band, every score is real or fake."""
        return self.config.band_low

    def verdict(self, score: float) -> str:
        """``fake``, ``uncertain`` or ``real`` for a finite score (:func:`forensix.verdicts.verdict`)."""
        return verdict(score, self.threshold, self.band_low)

    @property
    def temperature(self) -> float:
        return self.config.temperature

    def raw_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's own logits (B,) in float32 for a preprocessed batch (B, 3, H, W)."""
        return self.run(batch)

    def embeddings(self, batch: torch.Tensor) -> torch.Tensor:
        """The pooled embeddings (B, D) in float32 that the model's head turns into its logits.

        DeeCLIP: the mean of its normalised projected tokens; UnivFD: CLIP's image embedding. The
        torch backend only: an ONNX file holds the logit alone.
        """
        if not self.has_embeddings:
            raise ValueError(f"{self.name}: embeddings need the torch backend (an ONNX file outputs only the logit)")
        return self.run_in_pieces(self.backend.embed, batch)  # type: ignore[attr-defined]

    @property
    def has_embeddings(self) -> bool:
        """Whether :meth:`embeddings` works: a torch backend, over a model that has ``embed``."""
        return hasattr(self.backend, "embed") and hasattr(getattr(self.backend, "module", None), "embed")

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Calibrated logits (B,): the model's divided by the temperature, so P(fake) = sigmoid(logits)."""
        return scale_logits(self.raw_logits(batch), self.temperature)

    def score(self, images: Sequence[Image.Image | torch.Tensor]) -> np.ndarray:
        """P(fake) for PIL images (preprocessed here) or already-preprocessed tensors."""
        if not len(images):
            return np.zeros(0, dtype=np.float32)
        return torch.sigmoid(self.logits(self.stack(images))).cpu().numpy()


def scale_logits(raw: torch.Tensor, temperature: float) -> torch.Tensor:
    """What every score is computed from: float32 logits divided by the temperature (none when 1)."""
    return raw if temperature == 1.0 else raw / temperature


def load_detector(
    model: str | Path = "deeclip",
    weights: str | Path | None = None,
    device: str = "auto",
    precision: str = "fp32",
    threshold: float | None = None,
    compile: bool = False,
    backend: str | None = None,
    band: tuple[float, float] | None = None,
) -> Detector:
    """A ready detector from a manifest name or a weights file (``model``, or ``weights`` when given).

    ``threshold`` or ``band`` (the uncertain band (low, high)) override the weights' own.

    ``backend`` is ``torch`` or ``onnx`` (onnxruntime; the default for a ``.onnx`` file, whose
    precision was fixed at export: ``fp32`` then means "as exported").
    """
    found, info = open_backend(
        weights if weights is not None else model,
        "detector",
        device=device,
        precision=precision,
        backend=backend,
        channels_last=Detector.channels_last,
        compile=compile,
    )
    return Detector(found, info, threshold, band)
