"""Preprocessing against transformers' PIL CLIPImageProcessor and torchvision (independent oracles); decoding
hostile files."""

import io
import logging
import random
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from conftest import random_image
from PIL import Image
from transformers import CLIPImageProcessorPil

from forensix.imaging import (
    _RESAMPLE,
    HEIF_AVAILABLE,
    IMAGE_FORMATS,
    DecodeError,
    crop_floor,
    decode_image,
    file_warnings,
    open_image,
    preprocess,
    preprocess_pil,
    shortest_edge_size,
    sniff_image,
    without_text_chunks,
)
from forensix.inputs import InputItem
from forensix.models.config import CLIP_MEAN, CLIP_STD, PreprocessConfig
from forensix.stages.records import RecordBuilder

SIZES = [(225, 301), (640, 480), (301, 225), (1000, 224), (224, 224), (513, 997), (250, 250), (799, 333), (224, 5000)]


@pytest.fixture(scope="module")
def oracle() -> CLIPImageProcessorPil:
    # Built from explicit settings: no download. resample 3 = PIL bicubic.
    return CLIPImageProcessorPil(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        resample=3,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "CMYK", "P"])
def test_resize_crop_matches_clip_image_processor(oracle, size, mode):
    image = random_image(*size, seed=sum(size), mode=mode)
    ours = preprocess(image, PreprocessConfig())
    ref = oracle(images=image, return_tensors="pt")["pixel_values"][0]
    assert ours.shape == ref.shape == (3, 224, 224)
    # Tolerance: one grey level, expressed in normalised units.
    assert (ours - ref).abs().max().item() <= (1 / 255) / min(CLIP_STD)


def test_shortest_edge_truncates_like_transformers():
    assert shortest_edge_size(301, 225, 224) == (299, 224)  # 224 * 301 / 225 = 299.6 -> 299
    assert shortest_edge_size(225, 301, 224) == (224, 299)
    assert shortest_edge_size(500, 500, 224) == (224, 224)


@pytest.mark.parametrize("size", [(225, 301), (300, 300), (101, 150), (224, 224), (229, 231)])
def test_center_crop_matches_torchvision(size):
    """UnivFD's test transform: CenterCrop(224) (rounded offsets, zero padding), ToTensor, Normalize."""
    image = random_image(*size, seed=3)
    cfg = PreprocessConfig(mode="center_crop")
    ref = T.Compose([T.CenterCrop(224), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])(image)
    assert torch.allclose(preprocess(image, cfg), ref, atol=1e-6)


def test_squash_matches_torchvision_resize():
    image = random_image(640, 300, seed=4)
    cfg = PreprocessConfig(mode="squash", interpolation="bilinear")
    ref = T.Compose(
        [
            T.Resize((224, 224), interpolation=T.InterpolationMode.BILINEAR),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )(image)
    assert (preprocess(image, cfg) - ref).abs().max().item() <= (1 / 255) / min(CLIP_STD)


def test_output_is_normalised_float32():
    image = random_image(300, 300)
    t = preprocess(image, PreprocessConfig())
    assert t.dtype == torch.float32
    raw = np.asarray(image.resize((224, 224), 3), dtype=np.float32) / 255  # same size: crop is a no-op
    expected = (raw[..., 0] - CLIP_MEAN[0]) / CLIP_STD[0]
    assert np.allclose(t[0].numpy(), expected, atol=1e-5)


def test_transparency_is_composited_on_white_like_the_oracle(oracle):
    rgba = random_image(300, 260, seed=5).convert("RGBA")
    alpha = np.zeros((260, 300), dtype=np.uint8)
    alpha[:, 150:] = 255
    alpha[:100, :] = 128
    rgba.putalpha(__import__("PIL").Image.fromarray(alpha))
    ours = preprocess(rgba, PreprocessConfig())
    ref = oracle(images=rgba, return_tensors="pt")["pixel_values"][0]
    assert (ours - ref).abs().max().item() <= (1 / 255) / min(CLIP_STD)
    # Fully transparent pixels became white, not black.
    assert ours[:, 150, 10].tolist() == pytest.approx([(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)], abs=1e-4)


# ------------------------------------------------------------------------------------------------
# Whatever a decoder raises is that file's error (issue 14: defects 1, 3, 4, 6)


def corrupt_avif() -> bytes:
    """An AVIF with 8 bytes changed (seed 4): Pillow's AVIF decoder raises RuntimeError on it."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    image.save(buf, "AVIF")
    data, rng = bytearray(buf.getvalue()), random.Random(4)
    for _ in range(8):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def unimplemented_dds() -> bytes:
    """A DDS header with a FourCC Pillow does not implement: its plugin raises NotImplementedError."""
    header = bytearray(124)
    struct.pack_into("<IIIIIII", header, 0, 124, 0x1007, 4, 4, 0, 0, 0)
    struct.pack_into("<II4s", header, 72, 32, 0x4, b"ZZZZ")
    return b"DDS " + bytes(header) + bytes(64)


def png_with_text_bomb(png: bytes) -> bytes:
    """``png`` with one ~1 KB zTXt chunk that inflates to 1.1 MB, over Pillow's text-chunk limit."""
    body = b"zTXt" + b"Comment\0\0" + zlib.compress(b"A" * 1_100_000, 9)
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return png[:33] + chunk + png[33:]  # after IHDR


@pytest.mark.parametrize(
    "data, reason",
    [(corrupt_avif, "RuntimeError: "), (unimplemented_dds, "NotImplementedError: Unimplemented")],
    ids=["avif", "dds"],
)
def test_any_decoder_exception_is_a_decode_error(data, reason):
    with pytest.raises(DecodeError, match=f"cannot decode image: {reason}"):
        decode_image(data())


def test_a_text_chunk_over_pillows_limit_costs_the_text_not_the_pixels():
    image = random_image(40, 30, seed=3)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    bomb = png_with_text_bomb(buf.getvalue())
    assert len(bomb) - len(buf.getvalue()) < 1200
    with pytest.raises(ValueError, match="Decompressed data too large"):
        Image.open(io.BytesIO(bomb)).load()  # what Pillow does with it
    decoded = decode_image(bomb)
    assert np.array_equal(np.asarray(decoded.image), np.asarray(image.convert("RGB")))
    assert without_text_chunks(bomb) == buf.getvalue()


def test_max_pixels_is_the_limit_both_ways():
    buf = io.BytesIO()
    Image.new("1", (10000, 9000)).save(buf, "PNG")  # 90 MP: over Pillow's warning threshold of 89.5 MP
    big = buf.getvalue()
    assert open_image(big, max_pixels=500_000_000).size == (10000, 9000)
    assert open_image(big).size == (10000, 9000)  # the default limit is 178,956,970 px, as docs/scan.md says
    with pytest.raises(DecodeError, match=r"10000x9000 exceeds the max-pixels limit \(50000000; --max-pixels raises"):
        open_image(big, max_pixels=50_000_000)


def saved(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def pillow_accepts(head: bytes) -> bool:
    """Whether a Pillow plugin of a format forensix reads claims a file starting with ``head``."""
    Image.init()
    return any(accept is not None and accept(head) for fmt, (_, accept) in Image.OPEN.items() if fmt in IMAGE_FORMATS)


def image_heads() -> dict[str, bytes]:
    """The first 16 bytes of files in every format forensix reads that Pillow here can write, by name."""
    image = random_image(32, 24, seed=2)
    files = {
        "jpeg": saved(image, "JPEG"),
        "mpo": saved(image, "MPO", save_all=True, append_images=[image]),
        "png": saved(image, "PNG"),
        "gif": saved(image, "GIF"),
        "bmp": saved(image, "BMP"),
        "tiff": saved(image, "TIFF"),
        "bigtiff": saved(image, "TIFF", big_tiff=True),
        "webp": saved(image, "WEBP"),
        "webp-lossless": saved(image, "WEBP", lossless=True),
        "webp-alpha": saved(image.convert("RGBA"), "WEBP", exact=True, method=0),
        "avif": saved(image, "AVIF"),
    }
    if HEIF_AVAILABLE:
        files["heif"] = saved(image, "HEIF")
    return {name: data[:16] for name, data in files.items()}


def ftyp(brand: bytes) -> bytes:
    return b"\x00\x00\x00\x1cftyp" + brand + b"\x00\x00\x00\x00"


# Major brands of ISO-BMFF files: HEIF and AVIF stills and sequences, and video, which is no image.
BRANDS = [b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1", b"avif", b"avis"]
BRANDS += [b"avio", b"miaf", b"MA1B", b"MA1A", b"isom", b"mp41", b"mp42", b"qt  ", b"crx ", b"3gp4"]
NOT_IMAGES = [b"hello, world\n", bytes(16), b"%PDF-1.7\n", b"PK\x03\x04", b"BZh91AY&SY"]
NOT_IMAGES += [b"RIFF\x00\x00\x00\x00WAVEfmt "]


def test_every_format_forensix_reads_is_sniffed_as_an_image():
    heads = image_heads()
    for name, head in heads.items():
        assert pillow_accepts(head), name  # the corpus is what Pillow reads...
        assert sniff_image(head), name  # ...and each is found inside folders and archives


def test_whatever_pillow_would_read_as_a_format_forensix_accepts_is_sniffed():
    """No silent drop: a head a Pillow plugin of an accepted format claims must not be skipped as a non-image."""
    from PIL import TiffImagePlugin

    heads = [p + bytes(16 - len(p)) for p in TiffImagePlugin.PREFIXES]  # classic TIFF, BigTIFF, both byte orders
    heads += [ftyp(b) for b in BRANDS] + list(image_heads().values()) + NOT_IMAGES
    missed = [h for h in heads if pillow_accepts(h) and not sniff_image(h)]
    assert missed == []
    assert not any(sniff_image(h) for h in NOT_IMAGES)
    assert not any(sniff_image(ftyp(b)) for b in (b"isom", b"mp41", b"mp42", b"qt  ", b"crx ", b"3gp4"))


def test_bigtiff_is_read_in_both_byte_orders():
    little = saved(random_image(40, 30, seed=5), "TIFF", big_tiff=True)
    assert little.startswith(b"II+\x00")
    assert sniff_image(little[:16]) and sniff_image(b"MM\x00+\x00\x08\x00\x00" + bytes(8))
    decoded = decode_image(little)
    assert (decoded.format, decoded.width, decoded.height) == ("TIFF", 40, 30)


# ------------------------------------------------------------------------------------------------
# What a decoder warns of about a file is in its notes, never on stderr (issue 14, defect 13)


def _jpeg(app: bytes = b"", exif: bytes = b"") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 120, 150)).save(buf, "JPEG", exif=exif)
    return buf.getvalue()[:2] + app + buf.getvalue()[2:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 120, 150)).save(buf, "PNG")
    return buf.getvalue()


# Files as in Pillow's Tests/images (hopper_bad_exif.jpg, sugarshack_bad_mpo_header.jpg, the APNGs of
# syntax_num_frames_zero*.png), each with what Pillow 13 warns of while forensix decodes it.
WARNING_FILES = {
    # IFD0 says one entry, the EXIF ends 2 bytes into it
    "bad_exif.jpg": (_jpeg(exif=b"Exif\0\0II*\0\x08\0\0\0\x01\0\x0f\x01"), "Corrupt EXIF data"),
    # Make claims 1000 bytes of a 38-byte EXIF
    "tag_past_end.jpg": (
        _jpeg(exif=b"Exif\0\0II*\0\x08\0\0\0\x01\0" + struct.pack("<HHII", 0x010F, 2, 1000, 26) + bytes(4)),
        "Tag data larger than file",
    ),
    "bad_mpo.jpg": (_jpeg(app=b"\xff\xe2\x00\x12MPF\0XX*\0" + bytes(8)), "malformed MPO file"),
    "apng_zero_frames.png": (_png()[:33] + _png_chunk(b"acTL", bytes(8)) + _png()[33:], "Invalid APNG"),
}


@pytest.mark.parametrize("name", list(WARNING_FILES))
def test_a_decoders_warning_about_the_file_is_kept_not_printed(name, capfd):
    data, warning = WARNING_FILES[name]
    decoded = decode_image(data)
    assert len(decoded.warnings) == 1 and warning in decoded.warnings[0]
    record = RecordBuilder(PreprocessConfig(), metadata=True)(0, InputItem(name, reader=lambda: data))
    assert not record.error and f"decoder warning: {decoded.warnings[0]}" in record.notes
    assert record.metadata["decoder_warnings"] == list(decoded.warnings)
    quiet = RecordBuilder(PreprocessConfig(), metadata=False)(0, InputItem(name, reader=lambda: data))
    assert not quiet.error and quiet.notes == ""  # --no-metadata: no notes, these neither
    assert capfd.readouterr().err == ""


def test_file_warnings_keeps_what_is_about_the_file_and_prints_nothing(capfd):
    found: list[str] = []
    with file_warnings(found):
        warnings.warn("Corrupt   EXIF data. \x1b[1mSkipping\x1b[0m tag 3 ", UserWarning, stacklevel=1)  # about the file
        warnings.warn("a deprecated API", DeprecationWarning, stacklevel=1)  # about Pillow
        warnings.warn("a big image", Image.DecompressionBombWarning, stacklevel=1)  # max-pixels decides
        warnings.warn_explicit("Palette images with Transparency ...", UserWarning, "/x/PIL/Image.py", 1)  # advice
        logging.getLogger("PIL.TiffImagePlugin").error("More samples per pixel than can be decoded: %s", 65535)
        logging.getLogger("PIL.TiffImagePlugin").debug("tag 1 (chatter)")
    assert found == ["Corrupt EXIF data. Skipping tag 3", "More samples per pixel than can be decoded: 65535"]
    with file_warnings(None):
        warnings.warn("dropped", UserWarning, stacklevel=1)
        logging.getLogger("PIL").warning("dropped too")
    assert capfd.readouterr().err == "" and logging.getLogger("PIL").propagate


@pytest.mark.parametrize("size", [(333, 1), (1, 333), (4000, 20), (30, 4000)])  # the fuzzer's was 16131x1
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "lanczos", "nearest"])
def test_an_extreme_aspect_ratio_is_resized_for_the_crop_alone_with_the_same_pixels(size, interpolation, monkeypatch):
    """Found by the image fuzzer: a 63-byte GIF of 16131x1 became a 3.6-million-pixel-wide resize (2.4 GB)."""
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    cfg = PreprocessConfig(mode="resize_crop", resize=224, crop=224, interpolation=interpolation)
    whole = np.asarray(crop_floor(image.resize(shortest_edge_size(*size, 224), _RESAMPLE[interpolation]), 224))
    asked: list[int] = []
    resize = Image.Image.resize
    monkeypatch.setattr(
        Image.Image, "resize", lambda im, s, *a, **k: asked.append(s[0] * s[1]) or resize(im, s, *a, **k)
    )
    window = np.asarray(preprocess_pil(image, cfg))
    assert max(asked) <= 4 * 224 * 224  # the crop's window and a strip around it, never the whole resize
    difference = np.abs(whole.astype(int) - window)
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3  # the box's float32 rounding, at most
