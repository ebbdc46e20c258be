"""The localizer API: load a DeCLIP mask model by manifest name or file, get per-pixel P(manipulated).

A localizer is a forensix model of arch ``declip`` (:mod:`forensix.models.declip`). It comes from a
manifest entry of kind ``localizer`` (``forensix weights fetch declip-pluralistic``), from the
authors' checkpoint file ``{'model', 'feature_layer', 'decoder_type', ...}``, or from a forensix
``.safetensors`` written by ``forensix weights import``.

It never shares the detector's backbone pass: DeeCLIP's tower carries merged LoRA weights (its
residual stream differs from plain CLIP's from the first block on) and its preprocessing crops
where DeCLIP's squashes, so one pass could serve only one of them exactly (docs/localization.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import weights as W
from .detector import LoadedWeights, autocast_forward, resolve_device, validate_precision
from .imaging import preprocess
from .models.checkpoints import (
    CheckpointError,
    build_and_load,
    convert_declip,
    detect_format,
    is_safetensors,
    read_checkpoint,
    read_state_dict,
)


def load_localizer_file(path: Path) -> LoadedWeights:
    """A localizer from one file: the authors' DeCLIP checkpoint, or a forensix .safetensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    digest = W.cached_sha256(path)
    if is_safetensors(path):
        cfg, state, provenance = read_checkpoint(path)
    else:
        obj = read_state_dict(path)
        kind = detect_format(obj)
        if kind != "declip-official":
            raise CheckpointError(f"{path}: not a DeCLIP localizer checkpoint (detected: {kind})")
        cfg, state = convert_declip(obj, source=str(path))
        provenance = {"source_file": path.name, "source_sha256": digest, "source_format": kind}
    if cfg.arch != "declip":
        raise CheckpointError(f"{path}: a {cfg.arch} model, not a localizer (arch declip)")
    model = build_and_load(cfg, state, source=str(path))
    return LoadedWeights(model, cfg, cfg.name, digest, str(path), provenance)


def load_localizer_weights(spec: str | Path) -> LoadedWeights:
    """``spec`` is a file (checkpoint or .safetensors) or a manifest name of kind ``localizer``."""
    if Path(spec).is_file():
        return load_localizer_file(Path(spec))
    name = str(spec)
    entry = W.get_entry(name)
    if entry.kind != "localizer":
        raise ValueError(f"{name} is a {entry.kind}, not a localizer")
    loaded = load_localizer_file(W.resolve(name)["checkpoint"])
    loaded.name = name
    return loaded


class Localizer:
    """Per-pixel P(manipulated) maps (mask_size x mask_size) with the model's own preprocessing."""

    def __init__(self, loaded: LoadedWeights, device: str = "auto", precision: str = "fp32") -> None:
        self.device = resolve_device(device)
        validate_precision(precision, self.device)
        self.loaded, self.config, self.precision = loaded, loaded.config, precision
        self.model = loaded.model.to(self.device).eval()

    @property
    def name(self) -> str:
        return f"{self.loaded.name}@{self.loaded.sha256[:12]}" if self.loaded.sha256 else self.loaded.name

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return preprocess(image, self.config.preprocess)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Mask logits (B, S, S) in float32 for a preprocessed batch (B, 3, H, W)."""
        return autocast_forward(self.model, batch, self.device, self.precision)

    def probabilities(self, images: list[Image.Image | torch.Tensor] | torch.Tensor) -> np.ndarray:
        """P(manipulated) maps (B, S, S), float32, for PIL images, preprocessed tensors, or a batch."""
        if isinstance(images, torch.Tensor):
            batch = images
        else:
            if not len(images):
                return np.zeros((0, self.config.decoder.mask_size, self.config.decoder.mask_size), np.float32)
            batch = torch.stack([im if isinstance(im, torch.Tensor) else self.preprocess(im) for im in images])
        return torch.sigmoid(self.logits(batch)).cpu().numpy()


def load_localizer(spec: str | Path, device: str = "auto", precision: str = "fp32") -> Localizer:
    """A ready localizer from a manifest name (e.g. ``declip-pluralistic``) or a weights file."""
    return Localizer(load_localizer_weights(spec), device=device, precision=precision)
