"""Perturbations for robustness sweeps: JPEG re-encoding, bicubic rescaling, Gaussian blur of the decoded image."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torchvision.transforms.functional as TF
from PIL import Image

from ..cache import CLEAN
from ..stages.records import Record

PERTURBATIONS = ("jpeg", "resize", "blur")


# --- perturbations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Perturbation:
    """One degradation of the decoded RGB image; ``none`` leaves it as it is."""

    kind: str = "none"  # none | jpeg (value = quality) | resize (value = factor) | blur (value = sigma, px)
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("none", *PERTURBATIONS):
            raise ValueError(f"unknown perturbation {self.kind!r}; known: {', '.join(PERTURBATIONS)}")
        if self.kind == "jpeg" and not (1 <= self.value <= 100 and float(self.value).is_integer()):
            raise ValueError(f"jpeg quality must be an integer in 1..100, got {self.value:g}")
        if self.kind in ("resize", "blur") and not self.value > 0:
            raise ValueError(f"{self.kind} takes a positive number, got {self.value:g}")

    @property
    def name(self) -> str:
        return CLEAN if self.kind == "none" else f"{self.kind}={self.value:g}"

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.kind == "jpeg":
            return jpeg_reencode(image, int(self.value))
        if self.kind == "resize":
            w, h = image.size
            size = (max(1, round(w * self.value)), max(1, round(h * self.value)))
            return image.resize(size, Image.Resampling.BICUBIC)
        if self.kind == "blur":
            # A kernel of ±4 sigma, as scipy.ndimage.gaussian_filter (CNNDetection's blur) truncates.
            radius = max(1, math.ceil(4 * self.value))
            return TF.gaussian_blur(image, [2 * radius + 1] * 2, [self.value] * 2)
        return image

    def transform(self, image: Image.Image, _record: Record) -> Image.Image:
        """As a record builder's transform (:class:`forensix.stages.records.RecordBuilder`)."""
        return self(image)


def jpeg_reencode(image: Image.Image, quality: int) -> Image.Image:
    """The image JPEG-encoded in memory at ``quality`` (Pillow's libjpeg, default 4:2:0), decoded again."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    decoded.load()
    return decoded


def parse_perturbations(specs: Sequence[str]) -> list[Perturbation]:
    """``["jpeg=95,75", "blur=1"]`` → the clean pass first, then one perturbation per value, in order."""
    found = [Perturbation()]
    for spec in specs:
        kind, sep, values = spec.partition("=")
        kind = kind.strip().lower()
        if not sep or not values.strip():
            raise ValueError(f"--perturb {spec!r}: expected KIND=V1[,V2...], e.g. jpeg=95,75 or resize=0.5")
        for text in values.split(","):
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"--perturb {spec!r}: {text!r} is not a number") from None
            p = Perturbation(kind, value)
            if p not in found:
                found.append(p)
    return found
