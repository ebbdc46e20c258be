"""The localizer API: load a DeCLIP mask model by manifest name or file, get per-pixel P(manipulated).

A localizer is a forensix model of arch ``declip`` (:mod:`forensix.models.declip`). It comes from a
manifest entry of kind ``localizer`` (``forensix weights fetch declip-pluralistic``), from the
authors' checkpoint file ``{'model', 'feature_layer', 'decoder_type', ...}``, or from a forensix
``.safetensors`` written by ``forensix weights import``. The authors' ViT+RN50 files hold only the
decoder; their backbones are OpenAI's CLIP ViT-L/14 and RN50 files from the weights folder (the
``declip-vitrn50-*`` entries fetch them).

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
from .detector import LoadedWeights, Runner
from .models.checkpoints import (
    CheckpointError,
    build_and_load,
    convert_declip,
    detect_format,
    is_safetensors,
    read_checkpoint,
    read_state_dict,
)

BACKBONE_ROLES = ("backbone", "cnn_backbone")  # ViT+RN50: OpenAI CLIP ViT-L/14, then RN50


def default_backbones() -> dict[str, Path]:
    """Where the ViT+RN50 localizers' backbone files live: the files the manifest names for them."""
    for entry in W.load_manifest().values():
        roles = {f.role for f in entry.files}
        if entry.kind == "localizer" and set(BACKBONE_ROLES) <= roles:
            return {role: W.local_path(entry.file(role)) for role in BACKBONE_ROLES}
    raise KeyError("the weights manifest names no ViT+RN50 backbone files")


def decoder_only(obj: dict) -> bool:
    """Whether an official DeCLIP checkpoint is a ViT+RN50 one: the decoder without a CLIP inside."""
    model = obj.get("model")
    return isinstance(model, dict) and not any("visual." in key for key in model)


def read_backbones(path: Path, files: dict[str, Path] | None = None) -> dict[str, dict]:
    """The OpenAI CLIP state dicts a ViT+RN50 checkpoint at ``path`` needs, from ``files`` or the weights folder."""
    files = files or default_backbones()
    missing = [str(p) for p in files.values() if not Path(p).is_file()]
    if missing:
        raise W.WeightsMissing(
            f"{path} is a ViT+RN50 localizer (the decoder alone); its OpenAI CLIP backbones are missing "
            f"({', '.join(missing)}): get them with: forensix weights fetch declip-vitrn50-lama"
        )
    return {role: read_state_dict(Path(p)) for role, p in files.items()}


def load_localizer_file(path: Path, backbones: dict[str, Path] | None = None) -> LoadedWeights:
    """A localizer from one file: the authors' DeCLIP checkpoint, or a forensix .safetensors.

    ``backbones`` (roles ``backbone``, ``cnn_backbone``): OpenAI CLIP files for a ViT+RN50 checkpoint,
    by default the ones in the weights folder.
    """
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
        provenance = {"source_file": path.name, "source_sha256": digest, "source_format": kind}
        tensors = {}
        if decoder_only(obj):
            tensors = read_backbones(path, backbones)
            provenance.update({f"{role}_file": Path(p).name for role, p in (backbones or default_backbones()).items()})
        cfg, state = convert_declip(obj, **tensors, source=str(path))
    if cfg.arch != "declip":
        raise CheckpointError(f"{path}: a {cfg.arch} model, not a localizer (arch declip)")
    model = build_and_load(cfg, state, source=str(path))
    return LoadedWeights(model, cfg, cfg.name, digest, str(path), provenance)


def load_localizer_weights(spec: str | Path) -> LoadedWeights:
    """``spec`` is a file (checkpoint or .safetensors) or a manifest name of kind ``localizer``."""
    if Path(spec).is_file():
        return load_localizer_file(Path(spec))
    name = str(spec)
    W.get_entry_of_kind(name, "localizer")
    paths = W.resolve(name)
    backbones = {role: paths[role] for role in BACKBONE_ROLES if role in paths}
    loaded = load_localizer_file(paths["checkpoint"], backbones or None)
    loaded.name = name
    return loaded


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
    if Path(spec).suffix.lower() == ".onnx":
        from .onnx_backend import load_onnx_localizer

        return load_onnx_localizer(spec, device=device, precision=None if precision == "fp32" else precision)
    return Localizer(load_localizer_weights(spec), device=device, precision=precision)
