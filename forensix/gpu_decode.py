"""JPEG decoding and preprocessing as tensors on the device (nvjpeg on CUDA), checked against Pillow.

The scan decodes with Pillow in DataLoader workers (:mod:`forensix.imaging`): exactly the
reference's pixels. When a GPU outruns the CPU's decoders (full-size photos), JPEGs can instead
be decoded in batches by torchvision's nvjpeg path and resized on the GPU. That changes the pixels
slightly (another IDCT, torch's antialiased bicubic instead of Pillow's), so the path is used only
after :func:`check_parity` has compared its scores with the CPU path's on the images at hand
(tolerance 1e-3). The same code runs on the CPU with libjpeg, which is how it is tested here; its
GPU speed has not been measured yet (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchvision.transforms.functional as TF
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode

from .detector import Detector
from .imaging import DEFAULT_MAX_PIXELS, DecodeError, decode_image, open_image, preprocess, shortest_edge_size
from .inputs import READ_ERRORS, InputSpec, Limits, iter_entries
from .models.config import PreprocessConfig

PARITY_TOLERANCE = 1e-3  # |Δ score| against the Pillow path, from the issue
_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


def is_jpeg(data: bytes) -> bool:
    return data.startswith(b"\xff\xd8\xff")


def is_complete_jpeg(data: bytes) -> bool:
    """A JPEG that ends with its end-of-image marker: a truncated one is left to Pillow, which refuses it."""
    return is_jpeg(data) and data.rstrip(b"\0").endswith(b"\xff\xd9")


def first_jpegs(
    spec: InputSpec,
    limits: Limits,
    count: int | None = None,
    look_at: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[bytes]:
    """The bytes of the first ``count`` complete JPEGs (all by default) among the first ``look_at`` inputs.

    Inputs that can't be read, or whose header is refused (over ``max_pixels``), are passed over.
    """
    found: list[bytes] = []
    for n, item in enumerate(iter_entries(spec.paths(), limits)):
        if (count is not None and len(found) >= count) or (look_at is not None and n >= look_at):
            break
        if item.skipped or item.error:
            continue
        try:
            data = item.read()
            if is_complete_jpeg(data):
                open_image(data, max_pixels)
                found.append(data)
        except (*READ_ERRORS, DecodeError):
            continue
    return found


def decode_jpegs(data: Sequence[bytes], device: torch.device | str) -> list[torch.Tensor]:
    """uint8 RGB (3, H, W) tensors on ``device``, EXIF orientation applied, in one batched call."""
    encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data]
    return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)


def preprocess_tensor(image: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """uint8 (3, H, W) → the model's input (3, crop, crop): the geometry of imaging.preprocess_pil."""
    if cfg.interpolation not in _INTERPOLATION:
        raise ValueError(f"no tensor resize for {cfg.interpolation!r} interpolation")
    mode, crop = _INTERPOLATION[cfg.interpolation], cfg.crop
    height, width = image.shape[-2:]
    x = image.float()
    if cfg.mode == "resize_crop":
        w, h = shortest_edge_size(width, height, cfg.resize)
        x = _resize(x, h, w, mode)
        if w < crop or h < crop:
            raise ValueError(f"image {w}x{h} is smaller than the {crop}px crop")
        top, left = (h - crop) // 2, (w - crop) // 2  # floor offsets, as imaging.crop_floor
        x = x[:, top : top + crop, left : left + crop]
    elif cfg.mode == "center_crop":
        x = TF.center_crop(x, [crop, crop])
    else:
        x = _resize(x, crop, crop, mode)
    x = x.div_(255.0)
    mean = torch.tensor(cfg.mean, device=x.device).view(3, 1, 1)
    std = torch.tensor(cfg.std, device=x.device).view(3, 1, 1)
    return x.sub_(mean).div_(std)


def _resize(x: torch.Tensor, h: int, w: int, mode: InterpolationMode) -> torch.Tensor:
    """Pillow's resize: antialiased, a horizontal pass rounded to 8-bit levels, then a vertical one.

    Rounding between the passes as Pillow does keeps the result within one level of its pixels.
    """
    if x.shape[-1] != w:
        x = TF.resize(x, [x.shape[-2], w], interpolation=mode, antialias=True).round_().clamp_(0, 255)
    if x.shape[-2] != h:
        x = TF.resize(x, [h, w], interpolation=mode, antialias=True).round_().clamp_(0, 255)
    return x


def preprocess_jpegs(data: Sequence[bytes], cfg: PreprocessConfig, device: torch.device | str) -> torch.Tensor:
    """A batch (B, 3, crop, crop) on ``device`` from JPEG bytes, decoded and preprocessed there."""
    return torch.stack([preprocess_tensor(image, cfg) for image in decode_jpegs(data, device)])


@dataclass
class Parity:
    """How far the tensor path is from the Pillow path on some images."""

    images: int
    max_score_diff: float
    max_level_diff: float  # largest model-input difference, in 8-bit levels
    tolerance: float = PARITY_TOLERANCE

    @property
    def ok(self) -> bool:
        return self.max_score_diff <= self.tolerance


def check_parity(detector: Detector, data: Sequence[bytes], tolerance: float = PARITY_TOLERANCE) -> Parity:
    """Score JPEG bytes through both paths (device decode vs Pillow in this process) and compare.

    Only the JPEGs both paths decode are compared (a corrupt one is an error row either way); if
    there are none, the parity is not established (``images`` 0, differences infinite).
    """
    if not data:
        raise ValueError("the parity check needs at least one JPEG")
    cfg = detector.config.preprocess
    pairs = []
    for d in data:
        try:
            pairs.append((preprocess(decode_image(d).image, cfg), preprocess_jpegs([d], cfg, detector.device).cpu()[0]))
        except (DecodeError, ValueError, OSError, RuntimeError):
            continue
    if not pairs:
        return Parity(0, math.inf, math.inf, tolerance)
    pillow, tensor = (torch.stack(side) for side in zip(*pairs))
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    levels = ((pillow - tensor) * std * 255).abs().max().item()
    scores = [torch.sigmoid(detector.logits(batch)).cpu() for batch in (pillow, tensor)]
    return Parity(len(pairs), (scores[0] - scores[1]).abs().max().item(), levels, tolerance)
