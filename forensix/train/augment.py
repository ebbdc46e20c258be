"""Training augmentations for robustness, applied to real and fake images alike.

Most training sets hold real photos as JPEG and generated images as PNG, so a detector can learn
the file format instead of the generator. Every augmentation here is drawn independently of the
label: JPEG re-compression at a random quality, Gaussian blur, down/up-scaling, random crop and
horizontal flip. Randomness comes from ``random.Random(seed, epoch, index)``, so an image gets the
same augmentation whichever DataLoader worker prepares it, and a resumed run repeats exactly.
Geometric steps (crop, flip, rescale) also apply to a mask when there is one (localization).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from PIL import Image

from ..eval import Perturbation


@dataclass(frozen=True)
class Augment:
    """Probabilities and ranges; all zero = no augmentation (the DeeCLIP authors' recipe).

    Defaults follow CNNDetection's blur+JPEG recipe (each with probability 0.5; JPEG quality 30–100,
    blur sigma 0–3) plus rescaling by 0.5–1.5, a crop keeping 80–100% of each side, and flips.
    """

    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    rescale_p: float = 0.2
    rescale: tuple[float, float] = (0.5, 1.5)
    crop_p: float = 0.5
    crop_min: float = 0.8
    flip_p: float = 0.5

    def __post_init__(self) -> None:
        for name in ("jpeg_p", "blur_p", "rescale_p", "crop_p", "flip_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augmentation probability {name} must lie in [0, 1], got {getattr(self, name)}")
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"jpeg_quality must be 1 <= low <= high <= 100, got {self.jpeg_quality}")
        if not 0 < self.crop_min <= 1:
            raise ValueError(f"crop_min must lie in (0, 1], got {self.crop_min}")
        if not 0 < self.rescale[0] <= self.rescale[1]:
            raise ValueError(f"rescale must be 0 < low <= high, got {self.rescale}")

    @classmethod
    def none(cls) -> Augment:
        return cls(jpeg_p=0.0, blur_p=0.0, rescale_p=0.0, crop_p=0.0, flip_p=0.0)

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(
        self, image: Image.Image, mask: Image.Image | None, rng: random.Random
    ) -> tuple[Image.Image, Image.Image | None]:
        """The augmented image (and mask, resampled with nearest so it stays binary)."""
        if rng.random() < self.crop_p:
            w, h = image.size
            cw, ch = max(1, round(w * rng.uniform(self.crop_min, 1))), max(1, round(h * rng.uniform(self.crop_min, 1)))
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            box = (left, top, left + cw, top + ch)
            image, mask = image.crop(box), mask.crop(box) if mask is not None else None
        if rng.random() < self.flip_p:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mask is not None else None
        if rng.random() < self.rescale_p:
            factor = rng.uniform(*self.rescale)
            image = Perturbation("resize", factor)(image)
            mask = mask.resize(image.size, Image.Resampling.NEAREST) if mask is not None else None
        if rng.random() < self.blur_p:
            sigma = rng.uniform(*self.blur_sigma)
            if sigma > 0:
                image = Perturbation("blur", sigma)(image)
        if rng.random() < self.jpeg_p:
            image = Perturbation("jpeg", rng.randint(*self.jpeg_quality))(image).convert("RGB")
        return image, mask
