"""Tiny models for tests and benchmarks: built by the product's own factory, random weights whose scores
differ from image to image (no pytest here: benchmarks import it too)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image


def tiny_deeclip_file(folder: Path, side: int = 224) -> Path:
    """A tiny DeeCLIP of the product's own factory, random weights, ``side``-pixel input, in forensix's format."""
    from dataclasses import replace

    from forensix.imaging import preprocess
    from forensix.models.checkpoints import save_checkpoint
    from forensix.models.config import get_config
    from forensix.models.factory import create_model

    torch.manual_seed(1)
    cfg = get_config("deeclip-tiny")
    if side != cfg.preprocess.crop:
        vision, pre = replace(cfg.vision, image_size=side), replace(cfg.preprocess, resize=side, crop=side)
        cfg = replace(cfg, name=f"deeclip-tiny-{side}", vision=vision, preprocess=pre)
    model = create_model(cfg).eval()
    with torch.no_grad():
        # The default head scores every test image within 2e-3 of the others: larger weights spread
        # them over about 0.1-0.9, and the bias puts a mid-grey image at 0.5.
        model.fc.weight.normal_(0, 8.0)
        model.fc.bias.zero_()
        grey = preprocess(Image.new("RGB", (side, side), (128, 128, 128)), cfg.preprocess)
        model.fc.bias.sub_(model(grey[None]))
    path = folder / f"{cfg.name}.safetensors"
    save_checkpoint(path, cfg, model.state_dict(), provenance={"source": "random init for tests"})
    return path
