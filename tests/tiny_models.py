"""Tiny models for tests and benchmarks: built by the product's own factory, random weights whose scores
differ from image to image (no pytest here: benchmarks import it too)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from forensix.imaging import preprocess
from forensix.models.checkpoints import save_checkpoint
from forensix.models.config import ResNetConfig, get_config
from forensix.models.factory import create_model


def random_image(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A test image whose content is its seed's: a smooth gradient of the seed's colours, plus noise."""
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: resampling filters see realistic structure, not only noise. Each
    # seed has its own colours and directions, so that images differ in content, as photos do.
    y, x = np.mgrid[0:h, 0:w]
    angle = rng.uniform(0, 2 * np.pi, 3)
    low, high = np.sort(rng.uniform(0, 255, (2, 3)), axis=0)
    t = np.cos(angle) * x[..., None] / max(w - 1, 1) + np.sin(angle) * y[..., None] / max(h - 1, 1)
    t = (t - t.min((0, 1))) / np.maximum(np.ptp(t, (0, 1)), 1e-9)
    img = np.clip(low + (high - low) * t + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(img, "RGB").convert(mode)


def tiny_deeclip_file(folder: Path, side: int = 224) -> Path:
    """A tiny DeeCLIP of the product's own factory, random weights, ``side``-pixel input, in forensix's format."""
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


def tiny_localizer_file(path: Path, cnn: ResNetConfig | None = None) -> Path:
    """A tiny DeCLIP localizer (random weights, optionally with its RN50-style CNN branch) saved at ``path``."""
    torch.manual_seed(2)
    cfg = replace(get_config("declip-tiny"), cnn=cnn)
    model = create_model(cfg).eval()
    # Mask logits centred on images like the tests': each mask then covers its own part (and fraction)
    # of its image, so a tolerance on mask_fraction means something (random weights give all or none).
    probe = [random_image(300 - 20 * i, 240 + 30 * i, seed=i) for i in range(4)]
    with torch.no_grad():
        model.decoder.fc[-1].bias -= model(torch.stack([preprocess(im, cfg.preprocess) for im in probe])).median()
    save_checkpoint(path, cfg, model.state_dict(), provenance={"source": "random init for tests"})
    return path


def tiny_attributor_file(folder: Path) -> Path:
    """A tiny source attributor over the classes real, gen_a and gen_b, random weights, in ``folder``."""
    torch.manual_seed(3)
    cfg = get_config("attribution-tiny")
    cfg = replace(cfg, attribution=replace(cfg.attribution, classes=("real", "gen_a", "gen_b")))
    path = folder / "attribution-tiny.safetensors"
    save_checkpoint(path, cfg, create_model(cfg).state_dict(), provenance={"source": "random init for tests"})
    return path
