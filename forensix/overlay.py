"""Mask outputs of a scan: the localizer's probability map and an overlay, as PNG files.

For each image `write_mask_files` writes, flat in one folder,

- `{stem}-{hash}.mask.png`: P(manipulated) per pixel at the image's size, 8-bit grayscale
  (value = round(p · 255));
- `{stem}-{hash}.overlay.png`: the image with a red heat layer (opacity p · 0.55) and a yellow
  outline of the region where p > 0.5.

The localizer saw the whole image squashed to its input size, so its map covers the whole image:
it is stretched back with bilinear interpolation, no crop offsets. Large images are processed in
bands of rows, so that besides the image, the full-size float32 map and the output, only
band-sized temporaries are allocated.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .files import replacing
from .mask_metrics import dilate_square, resize_to

__all__ = ["MaskFiles", "mask_stem", "outline_width", "overlay_image", "resize_prob", "write_mask_files"]

HEAT_RGB = (255, 0, 0)
HEAT_MAX_ALPHA = 0.55
OUTLINE_RGB = (255, 255, 0)
THRESHOLD = 0.5
STEM_MAX_CHARS = 80
HASH_CHARS = 12
PNG_COMPRESS_LEVEL = 1  # masks compress well anyway; level 6 costs seconds on 100-megapixel overlays
_BAND_PIXELS = 1 << 22  # pixels per band of rows (~4 M: float32 temporaries of ~16-50 MB)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class MaskFiles:
    map_path: Path
    overlay_path: Path
    fraction: float  # share of the image's pixels with p > 0.5 (at image size)


def mask_stem(path: str, member: str = "") -> str:
    """The file-name stem for one image's mask files: `{stem}-{hash}`, safe as a single name.

    `stem` is the image's file stem (of the archive member when there is one), reduced to
    [A-Za-z0-9._-] (accents dropped, other runs of characters become "_", no leading "." or "-"),
    at most 80 characters, "image" when nothing is left. `hash` is the first 12 hex digits of
    SHA-256 of `path + "\\0" + member` (UTF-8, surrogates passed through), so two inputs never share
    a name, and the name never holds a path separator.
    """
    path, member = os.fspath(path), os.fspath(member)
    name = (member or path).replace("\\", "/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    stem = "".join(c for c in unicodedata.normalize("NFKD", stem) if not unicodedata.combining(c))
    stem = _UNSAFE.sub("_", stem).lstrip("._-")[:STEM_MAX_CHARS].rstrip("._-") or "image"
    digest = hashlib.sha256(f"{path}\0{member}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"{stem}-{digest[:HASH_CHARS]}"


def resize_prob(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The probability map stretched to an image of `size` = (width, height): float32 (height, width).

    Bilinear, half-pixel centres, as `metrics.resize_to` (the evaluation uses the same resize).
    """
    w, h = size
    return resize_to(prob, (h, w))


def overlay_image(image: Image.Image, prob_at_size: np.ndarray) -> Image.Image:
    """`image` (converted to RGB) with the heat layer and the outline of p > 0.5; a new RGB image.

    Heat: each pixel is blended towards red with opacity p · 0.55, so pixels with p == 0 keep their
    exact values. Outline: the pixels of the region p > 0.5 that lie within `outline_width` pixels
    (Chebyshev distance) of a pixel outside it, painted opaque yellow; the image border does not
    count as outside, so the region is not outlined along the image's edges.
    """
    w, h = image.size
    prob = np.asarray(prob_at_size)
    if prob.shape != (h, w):
        raise ValueError(f"map shape {prob.shape} does not match the image ({h}, {w}); use resize_prob")
    width = outline_width((w, h))
    heat = np.asarray(HEAT_RGB, dtype=np.float32)
    out = Image.new("RGB", (w, h))
    for top, bottom in _bands(w, h):
        tile = image.crop((0, top, w, bottom))
        if tile.mode != "RGB":
            tile = tile.convert("RGB")
        rgb = np.asarray(tile, dtype=np.float32)
        alpha = np.clip(prob[top:bottom], 0.0, 1.0, dtype=np.float32)
        if np.isnan(alpha).any():
            raise ValueError("the probability map contains NaN")
        alpha *= HEAT_MAX_ALPHA
        rgb += alpha[..., None] * (heat - rgb)
        blended = np.rint(rgb, out=rgb).astype(np.uint8)
        blended[_outline(prob, top, bottom, width)] = OUTLINE_RGB
        out.paste(Image.fromarray(blended), (0, top))
    return out


def outline_width(size: tuple[int, int]) -> int:
    """Outline thickness for an image of `size` (w, h): 1 px below ~750 px short side, up to 3."""
    return max(1, min(3, round(min(size) / 500)))


def write_mask_files(image: Image.Image, prob: np.ndarray, out_dir: Path, path: str, member: str = "") -> MaskFiles:
    """Write the grayscale map and the overlay of one image into `out_dir` (created if needed).

    `image`: the decoded image (EXIF orientation applied); `prob`: the localizer's map in [0, 1]
    (any 2-D shape; values are clipped to [0, 1]; NaN raises ValueError). File names come from
    `mask_stem(path, member)`. Each file is written to a temporary name in `out_dir` and renamed
    into place, so an interrupted scan never leaves a partial PNG under the final name.
    """
    small = np.asarray(prob, dtype=np.float32)
    if small.ndim != 2 or small.size == 0:
        raise ValueError(f"expected a 2-D probability map, got shape {small.shape}")
    if np.isnan(small).any():
        raise ValueError("the probability map contains NaN")
    small = np.clip(small, 0.0, 1.0)
    w, h = image.size
    if w * h == 0:
        raise ValueError("empty image")
    prob_at_size = resize_prob(small, (w, h))

    gray = Image.new("L", (w, h))
    flagged = 0
    for top, bottom in _bands(w, h):
        band = prob_at_size[top:bottom]
        flagged += int(np.count_nonzero(band > THRESHOLD))
        scaled = np.clip(band, 0.0, 1.0) * np.float32(255.0)
        gray.paste(Image.fromarray(np.rint(scaled, out=scaled).astype(np.uint8)), (0, top))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = mask_stem(path, member)
    map_path = out_dir / f"{stem}.mask.png"
    overlay_path = out_dir / f"{stem}.overlay.png"
    _save_png_atomic(gray, map_path)
    del gray
    _save_png_atomic(overlay_image(image, prob_at_size), overlay_path)
    return MaskFiles(map_path=map_path, overlay_path=overlay_path, fraction=flagged / (w * h))


# --- internals -------------------------------------------------------------------------------


def _bands(w: int, h: int):
    rows = max(1, _BAND_PIXELS // max(w, 1))
    for top in range(0, h, rows):
        yield top, min(h, top + rows)


def _outline(prob: np.ndarray, top: int, bottom: int, width: int) -> np.ndarray:
    """Outline pixels of rows [top, bottom): in the region, within `width` px of a pixel outside it."""
    lo, hi = max(0, top - width), min(prob.shape[0], bottom + width)  # halo rows for exact band edges
    inside = prob[lo:hi] > THRESHOLD
    outside = ~inside
    size = 2 * width + 1
    outside = dilate_square(outside, size)  # beyond the array counts as inside
    return (inside & outside)[top - lo : bottom - lo]


def _save_png_atomic(img: Image.Image, dest: Path) -> None:
    with replacing(dest) as tmp, open(tmp, "xb") as f:  # open() lets the umask decide permissions
        img.save(f, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
