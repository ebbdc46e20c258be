"""`forensix weights import`: official checkpoint (DeeCLIP detector, DeCLIP localizer) in, forensix safetensors out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from . import __version__
from .models.checkpoints import (
    CheckpointError,
    check_state_dict,
    convert_declip,
    convert_deeclip,
    detect_format,
    read_state_dict,
    save_checkpoint,
)
from .models.config import ModelConfig
from .models.factory import create_model
from .weights import cached_sha256


def import_checkpoint(
    src: Path,
    dest: Path,
    *,
    feature_layers: tuple[int, ...] | None = None,
    merge_lora: bool = True,
    lora_alpha: float = 32.0,
    threshold: float | None = None,
) -> ModelConfig:
    """Convert an official DeeCLIP or DeCLIP checkpoint; every key and shape is checked before writing.

    ``feature_layers``, ``merge_lora`` and ``lora_alpha`` concern DeeCLIP only; a DeCLIP file names
    its feature layer and decoder itself.
    """
    src, dest = Path(src), Path(dest)
    if dest.suffix != ".safetensors":
        raise CheckpointError(f"{dest}: the output must be a .safetensors file")
    state = read_state_dict(src)
    kind = detect_format(state)
    if kind == "deeclip-official":
        cfg, converted = convert_deeclip(
            state, feature_layers=feature_layers, merge_lora=merge_lora, lora_alpha=lora_alpha, source=str(src)
        )
        recipe = {"lora": "merged" if merge_lora else "kept"}
        trained_on = "as released by the authors (4-class ProGAN, per the paper)"
    elif kind == "declip-official":
        from .localizer import decoder_only, read_backbones

        backbones = read_backbones(src) if decoder_only(state) else {}
        cfg, converted = convert_declip(state, **backbones, source=str(src))
        merge_lora = True  # no LoRA in DeCLIP
        recipe = {"feature_layer": state["feature_layer"], "decoder_type": state["decoder_type"]}
        trained_on = "as released by the authors (see the file name: the Dolos generator it was trained on)"
    else:
        raise CheckpointError(f"{src}: 'weights import' converts DeeCLIP and DeCLIP checkpoints; this one is {kind}")
    if threshold is not None:
        cfg = replace(cfg, threshold=threshold)
    with torch.device("meta"):
        check_state_dict(create_model(cfg, with_lora=not merge_lora), converted, str(src))
    provenance = {
        "source_file": src.name,
        "source_sha256": cached_sha256(src),
        "source_format": kind,
        **recipe,
        "trained_on": trained_on,
        "forensix_version": __version__,
    }
    save_checkpoint(dest, cfg, converted, provenance)
    return cfg
