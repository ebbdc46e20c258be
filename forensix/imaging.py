"""Safe decoding, and per-model preprocessing (decoded image in, normalised tensor out).

Each preprocessing mode reproduces the pixels the reference system fed its model (see
PreprocessConfig). No JPEG draft mode and no approximate resizes: the model must see the
reference's pixels.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError

from .limits import DEFAULT_MAX_PIXELS
from .models.config import PreprocessConfig
from .text import one_line

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "AVIF", "HEIF")
# What the sniff knows must cover every file the Pillow plugins of IMAGE_FORMATS claim: an accepted
# format the sniff misses is skipped as a non-image inside folders and archives, with no row
# (tests/test_imaging.py holds the two together). Looser is fine: Pillow then refuses, an error row.
# TIFF: both byte orders, the two odd mixed ones Pillow also accepts, and BigTIFF (version 43).
TIFF_PREFIXES = (b"II*\x00", b"MM\x00*", b"MM*\x00", b"II\x00*", b"II+\x00", b"MM\x00+")
# ISO-BMFF major brands (bytes 8:12 after 'ftyp') of HEIF and AVIF stills and sequences (the first image is read).
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")
AVIF_BRANDS = (b"avif", b"avis")

try:  # HEIC/HEIF needs the optional pillow-heif plugin (pip install 'forensix[heif]')
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_AVAILABLE = True
except ImportError:
    HEIF_AVAILABLE = False


class DecodeError(ValueError):
    """An input that can't be decoded into an image; the message says why."""


@dataclass
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    format: str
    width: int  # as stored, before orientation
    height: int
    source: Image.Image  # the loaded file as Pillow read it: info, text chunks, quantization tables
    warnings: tuple[str, ...] = ()  # what the decoder said about the file (see file_warnings)


def sniff_image(head: bytes) -> bool:
    """Whether the first bytes look like an image format forensix decodes (by magic, not name)."""
    return (
        head.startswith(b"\xff\xd8\xff")
        or head.startswith(b"\x89PNG\r\n\x1a\n")
        or head.startswith((b"GIF87a", b"GIF89a"))
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or head.startswith(b"BM")
        or head.startswith(TIFF_PREFIXES)
        or (head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS + AVIF_BRANDS)
    )


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode bytes fully (first frame), apply EXIF orientation, convert to RGB.

    Truncated or corrupt data raises DecodeError: a half-decoded image is never returned. What the
    decoder warns of is in ``warnings``, never printed (:func:`file_warnings`).
    """
    found: list[str] = []
    try:
        with _decode_errors(data, max_pixels), file_warnings(found):
            image = open_image(data, max_pixels, found)
            image.load()
            rgb = to_rgb(ImageOps.exif_transpose(image))
    except DecodeError as e:
        # A PNG text chunk that inflates past Pillow's limit must cost the notes, never the score
        # (one zTXt chunk would otherwise turn any image into an error row): decode the pixels without it.
        if TEXT_TOO_LARGE not in str(e) or not data.startswith(PNG_SIGNATURE):
            raise
        return decode_image(without_text_chunks(data), max_pixels)
    return DecodedImage(rgb, image.format, image.size[0], image.size[1], image, tuple(dict.fromkeys(found)))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
TEXT_TOO_LARGE = "Decompressed data too large"  # Pillow's message for a text chunk over MAX_TEXT_CHUNK/MEMORY


def without_text_chunks(png: bytes) -> bytes:
    """The PNG with its text chunks (tEXt, zTXt, iTXt) left out; pixels and every other chunk as they were."""
    out, pos = [png[:8]], 8
    while pos + 8 <= len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        end = pos + 12 + length
        if png[pos + 4 : pos + 8] not in PNG_TEXT_CHUNKS:
            out.append(png[pos:end])
        pos = end
    out.append(png[pos:])  # whatever trails the last whole chunk, for the decoder to judge
    return b"".join(out)


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, warned: list[str] | None = None) -> Image.Image:
    """The image's header only (nothing decoded yet), its format and size checked; DecodeError if refused.

    What the decoder warns of while reading the header goes to ``warned`` (:func:`file_warnings`).
    """
    # Pillow's own bomb check (a warning above MAX_IMAGE_PIXELS, an error above twice that) must not
    # refuse what the caller allowed: it follows max_pixels up (never down; it is global), and the
    # size is checked against max_pixels just below, before anything is decoded.
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    with _decode_errors(data, max_pixels), file_warnings(warned):
        image = Image.open(io.BytesIO(data))
        if (image.format or "unknown") not in IMAGE_FORMATS:
            raise DecodeError(f"unsupported image format {image.format or 'unknown'}")
        width, height = image.size
        if width * height > max_pixels:
            raise DecodeError(f"{width}x{height} exceeds the max-pixels limit ({max_pixels}; --max-pixels raises it)")
    return image


@contextmanager
def _decode_errors(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[None]:
    """Whatever a decoder raises for one file, as one DecodeError with a reason: that file's error row.

    Pillow's plugins raise OSError, SyntaxError and ValueError, but also RuntimeError (a corrupt AVIF
    frame), NotImplementedError (an unimplemented DDS pixel format) and others: none may end a scan.
    """
    try:
        yield
    except DecodeError:
        raise
    except UnidentifiedImageError:
        if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS and not HEIF_AVAILABLE:
            raise DecodeError("HEIC/HEIF needs the pillow-heif plugin: pip install 'forensix[heif]'") from None
        raise DecodeError("not an image in a format forensix reads") from None
    except Image.DecompressionBombError as e:
        raise DecodeError(f"{e} (the max-pixels limit is {max_pixels}; --max-pixels raises it)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DecodeError(f"cannot decode image: {e}") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is this file's, not the scan's
        raise DecodeError(f"cannot decode image: {type(e).__name__}: {e}") from None


@contextmanager
def file_warnings(found: list[str] | None) -> Iterator[None]:
    """Decoding inside prints nothing: the warnings and log messages about the file go to ``found``.

    What is kept: Python warnings of the UserWarning kind that a decoder raises about the file it
    reads ("Corrupt EXIF data", "Image appears to be a malformed MPO file", "Invalid APNG", a TIFF
    tag past the end of the file), and what Pillow's plugins log at WARNING or above. What is
    dropped: deprecations (of an API, not the file), DecompressionBombWarning (the size is checked
    against max_pixels) and Pillow's advice on its own API from PIL/Image.py (how to convert a
    palette image with transparency). With ``found`` None, all is dropped. Not thread-safe, as
    ``warnings.catch_warnings`` is not: meant for a process's decoding thread.
    """
    pil = logging.getLogger("PIL")
    handler = _Collect()
    propagate = pil.propagate
    pil.addHandler(handler)
    pil.propagate = False  # nor to the root logger's handlers, nor to logging's last resort (stderr)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        pil.removeHandler(handler)
        pil.propagate = propagate
        if found is not None:
            found.extend(one_line(str(w.message)) for w in caught if _about_the_file(w))
            found.extend(handler.messages)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(one_line(record.getMessage()))
        except Exception:  # noqa: BLE001 - a log record that cannot be formatted is no reason to fail
            pass


def _about_the_file(w: warnings.WarningMessage) -> bool:
    return issubclass(w.category, UserWarning) and Path(w.filename).name != "Image.py"


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for every mode; transparency is composited on white rather than dropped to black."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than clipping at 255.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray((array * 255.0 / peak).round().clip(0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def shortest_edge_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) with the shorter side = size, the longer one scaled and truncated (as transformers)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_floor(image: Image.Image, size: int) -> Image.Image:
    """Center crop with floor offsets, as transformers' CLIPImageProcessor."""
    w, h = image.size
    if w < size or h < size:
        raise ValueError(f"image {w}x{h} is smaller than the {size}px crop")
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


# Resizing the shorter edge to 224 makes a 16000x1 GIF of 63 bytes 3.6 million pixels wide (2.4 GB);
# past this many pixels only the window that the crop keeps is resized.
RESIZE_WHOLE_PIXELS = 1 << 22


def _resize_crop_window(image: Image.Image, size: tuple[int, int], crop: int, resample: int) -> Image.Image:
    """What resizing to ``size`` then :func:`crop_floor` gives, computed for the crop's window alone.

    Pillow resizes in two passes, horizontal first unless the height shrinks far more than the
    width (Resample.c); a resize with a box would pick its order from the box, and the rounding
    between the passes would differ. So the two passes are made here, one axis each, in the order
    of the whole resize, the first over the strip of rows (or columns) the second reads: the same
    source positions and filter weights, up to the box's float32 rounding.
    """
    (w, h), (rw, rh) = image.size, size
    if rw < crop or rh < crop:
        raise ValueError(f"image {rw}x{rh} is smaller than the {crop}px crop")
    left, top = (rw - crop) // 2, (rh - crop) // 2
    sx, sy = w / rw, h / rh
    x0, x1, y0, y1 = left * sx, (left + crop) * sx, top * sy, (top + crop) * sy
    if resample == Image.Resampling.NEAREST:  # one pass: each output pixel is one source pixel
        return image.resize((crop, crop), resample=resample, box=(x0, y0, x1, y1))
    if not (h - rh > 0 and h - rh > 2 * (w - rw)):  # horizontal first
        first, last = _read_by_pass(y0, y1, sy, h, resample)
        strip = image.crop((0, first, w, last)).resize((crop, last - first), resample, box=(x0, 0, x1, last - first))
        return strip.resize((crop, crop), resample, box=(0, y0 - first, crop, y1 - first))
    first, last = _read_by_pass(x0, x1, sx, w, resample)
    strip = image.crop((first, 0, last, h)).resize((last - first, crop), resample, box=(0, y0, last - first, y1))
    return strip.resize((crop, crop), resample, box=(x0 - first, 0, x1 - first, crop))


_FILTER_SUPPORT = {
    Image.Resampling.BILINEAR: 1.0,
    Image.Resampling.BICUBIC: 2.0,
    Image.Resampling.LANCZOS: 3.0,
}


def _read_by_pass(start: float, end: float, scale: float, extent: int, resample: int) -> tuple[int, int]:
    """The source lines a pass from ``start`` to ``end`` reads: the filter's support, and a line to spare."""
    support = _FILTER_SUPPORT[resample] * max(scale, 1.0)
    return max(0, math.floor(start - support) - 1), min(extent, math.ceil(end + support) + 1)


def preprocess_pil(image: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    """The geometric part: the RGB image of exactly the model's input size."""
    image = to_rgb(image)
    resample = _RESAMPLE[cfg.interpolation]
    if cfg.mode == "resize_crop":
        size = shortest_edge_size(*image.size, cfg.resize)
        if size[0] * size[1] > RESIZE_WHOLE_PIXELS:
            return _resize_crop_window(image, size, cfg.crop, resample)
        return crop_floor(image.resize(size, resample=resample), cfg.crop)
    if cfg.mode == "center_crop":
        # torchvision's CenterCrop: rounded offsets, zero padding for images smaller than the crop.
        return TF.center_crop(image, [cfg.crop, cfg.crop])
    return image.resize((cfg.crop, cfg.crop), resample=resample)


def to_tensor(image: Image.Image, cfg: PreprocessConfig) -> torch.Tensor:
    """uint8 RGB → float32 (3, H, W), scaled to [0, 1] and normalised with the config's mean/std."""
    array = np.asarray(image, dtype=np.uint8)
    t = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    return t.sub_(mean).div_(std)


def preprocess(image: Image.Image, cfg: PreprocessConfig) -> torch.Tensor:
    """Decoded image → the model's normalised input tensor (3, crop, crop)."""
    return to_tensor(preprocess_pil(image, cfg), cfg)
