"""Invisible generator watermarks: the DWT-DCT marks of Stable Diffusion's reference scripts and pipelines.

Stable Diffusion's reference code marks every output with the ``invisible-watermark`` library
(``imwatermark``), method ``dwtDct``:

- CompVis's SD 1.x ``scripts/txt2img.py``: the bytes ``StableDiffusionV1``;
- Stability AI's SD 2.x ``scripts/txt2img.py``: the bytes ``SDV2``;
- diffusers' SDXL pipelines (``StableDiffusionXLWatermarker``): 48 fixed bits.

The mark survives any stripping of metadata: it is in the pixels. The library embeds one bit per
4×4 block of the Haar DWT's low band of the image's U channel (YUV), cycling through the bits. It
reads a block's bit from its largest coefficient but the first, modulo 36, and takes each bit's
average over its blocks. :func:`read_watermark` reads the blocks once, as the library does (its
``WatermarkDecoder.decode``, bit for bit: tests/test_watermarks.py), and then groups them for each
mark's length: one pass for all three marks, with numpy in place of the library's loop over
blocks (about 10 times faster for the three).

Not read: JPEGs (a lossy re-save removes the mark, so none can be expected there, and reading
would cost a full decode of every photo), and images under 256×256 or over 2048×2048 pixels.

A mark is found when at least ``MIN_AGREEING[bits]`` of its bits agree. For a clean image each bit
is about a coin toss, so the chance of that is under 1e-6 per mark (a binomial tail). docs/provenance.md
gives the rate measured on clean images, and what this cannot see.

Needs ``forensix[watermark]`` (``invisible-watermark``, which brings OpenCV and PyWavelets),
imported only when a scan reads watermarks.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

SCALE = 36  # the library's dwtDct scale of the U channel (scales=[0, 36, 36]: Y unused, only U read)
BLOCK = 4
MIN_PIXELS = 256 * 256  # the library refuses smaller images
MAX_PIXELS = 2048 * 2048  # larger than Stable Diffusion makes: an upscale, which the mark does not survive
LOSSY = frozenset({"JPEG", "MPO"})  # a re-save in these loses the mark (docs/provenance.md): not read


@dataclass(frozen=True)
class Mark:
    name: str  # as the notes say it
    key: str  # in the row's ``watermark`` field
    bits: tuple[int, ...]


def _bytes_bits(text: bytes) -> tuple[int, ...]:
    return tuple(int(b) for b in np.unpackbits(np.frombuffer(text, dtype=np.uint8)))


SDXL_MESSAGE = 0b101100111110110010010000011110111011000110011110  # diffusers' WATERMARK_MESSAGE
MARKS = (
    Mark("Stable Diffusion 1.x", "sd1", _bytes_bits(b"StableDiffusionV1")),
    Mark("Stable Diffusion 2.x", "sd2", _bytes_bits(b"SDV2")),
    Mark("Stable Diffusion XL", "sdxl", tuple(int(b) for b in bin(SDXL_MESSAGE)[2:])),
)


def min_agreeing(bits: int, bound: float = 1e-6) -> int:
    """The fewest agreeing bits whose chance for a clean image (each bit a fair coin) is at most ``bound``."""
    tail = 0
    for k in range(bits, -1, -1):
        tail += math.comb(bits, k)
        if tail / 2**bits > bound:
            return k + 1
    return 0


MIN_AGREEING = {len(m.bits): min_agreeing(len(m.bits)) for m in MARKS}  # 32: 30, 48: 41, 136: 96


class WatermarkUnavailable(ImportError):
    """forensix[watermark] is not installed."""


def available() -> bool:
    """Whether forensix[watermark] is installed (imwatermark itself is not imported: it loads torch)."""
    try:
        _libraries()
    except WatermarkUnavailable:
        return False
    return importlib.util.find_spec("imwatermark") is not None


def not_read(fmt: str, width: int | None, height: int | None) -> str:
    """Why an image of this format and stored size is not read for a mark ('' when it is)."""
    if fmt in LOSSY:
        return f"{fmt}: a lossy re-save removes the mark"
    pixels = (width or 0) * (height or 0)
    if pixels < MIN_PIXELS:
        return "smaller than 256×256 pixels"
    if pixels > MAX_PIXELS:
        return "larger than 2048×2048 pixels (an upscale: the mark does not survive one)"
    return ""


def _libraries() -> tuple[Any, Any]:
    try:
        import cv2
        import pywt
    except ImportError as e:
        raise WatermarkUnavailable(
            f"reading invisible watermarks needs pip install 'forensix[watermark]' ({e})"
        ) from None
    return cv2, pywt


def block_bits(image: Image.Image) -> np.ndarray | None:
    """Each block's bit, in the library's order; None for an image under 256×256 pixels (not readable)."""
    cv2, pywt = _libraries()
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    rows, cols = rgb.shape[:2]
    if rows * cols < MIN_PIXELS:
        return None
    u = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)[: rows // 4 * 4, : cols // 4 * 4, 1]  # as the library's BGR2YUV of BGR
    low, _ = pywt.dwt2(u, "haar")
    r, c = low.shape[0] // BLOCK, low.shape[1] // BLOCK
    blocks = low[: r * BLOCK, : c * BLOCK].reshape(r, BLOCK, c, BLOCK).transpose(0, 2, 1, 3).reshape(r * c, -1)
    magnitude = np.abs(blocks[:, 1:])
    largest = magnitude[np.arange(len(blocks)), magnitude.argmax(axis=1)]  # the first largest, as np.argmax
    return (largest % SCALE) > 0.5 * SCALE


def decode(bits_of_blocks: np.ndarray, length: int) -> np.ndarray:
    """The ``length`` bits a decoder of that length reads: each bit's mean over its blocks, above 127/255."""
    sums = np.bincount(np.arange(len(bits_of_blocks)) % length, weights=bits_of_blocks, minlength=length)
    counts = np.bincount(np.arange(len(bits_of_blocks)) % length, minlength=length)
    with np.errstate(invalid="ignore"):
        return (sums / counts) * 255 > 127


def read_watermark(image: Image.Image) -> dict[str, Any]:
    """The row's ``watermark`` field: each mark's agreeing bits, and the mark found (None: none).

    ``{"checked": False, "why": ...}`` for an image too small to hold a mark (:func:`not_read` says
    which others are not read).
    """
    blocks = block_bits(image)
    if blocks is None:
        return not_checked("smaller than 256×256 pixels")
    agree = {m.key: int(np.sum(decode(blocks, len(m.bits)) == np.array(m.bits, dtype=bool))) for m in MARKS}
    found = [m for m in MARKS if agree[m.key] >= MIN_AGREEING[len(m.bits)]]
    best = max(found, key=lambda m: agree[m.key] / len(m.bits), default=None)
    return {
        "checked": True,
        "found": best.name if best else None,
        "marks": {m.key: {"agree": agree[m.key], "bits": len(m.bits)} for m in MARKS},
    }


def not_checked(why: str) -> dict[str, Any]:
    return {"checked": False, "why": why}


def watermark_note(field: dict[str, Any]) -> str:
    """The note of a found mark ('' otherwise)."""
    if not field.get("found"):
        return ""
    mark = next(m for m in MARKS if m.name == field["found"])
    agree = field["marks"][mark.key]["agree"]
    return f"invisible watermark: {mark.name} ({agree} of {len(mark.bits)} bits)"
