"""The device JPEG path (run here on the CPU with libjpeg) against the Pillow path."""

import io

import pytest
import torch
from conftest import assert_spread, random_image, refused_jpeg
from PIL import Image

from forensix.detector import load_detector
from forensix.gpu_decode import check_parity, first_jpegs, is_complete_jpeg, is_jpeg, preprocess_jpegs
from forensix.imaging import decode_image, preprocess
from forensix.inputs import InputSpec, Limits
from forensix.models.config import PreprocessConfig


def jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: both paths must turn it upright
    return [
        jpeg(random_image(300, 240, seed=1)),
        jpeg(random_image(224, 513, seed=2), exif=exif.tobytes()),
        jpeg(random_image(640, 480, seed=3).convert("L")),
    ]


@pytest.mark.parametrize("mode", ["resize_crop", "center_crop", "squash"])
def test_tensor_preprocessing_is_within_a_level_of_pillow(jpegs, mode):
    cfg = PreprocessConfig(mode=mode)
    pillow = torch.stack([preprocess(decode_image(d).image, cfg) for d in jpegs])
    tensor = preprocess_jpegs(jpegs, cfg, "cpu")
    assert tensor.shape == pillow.shape == (3, 3, 224, 224)
    levels = (pillow - tensor).abs() * torch.tensor(cfg.std).view(1, 3, 1, 1) * 255
    assert levels.max().item() <= 1.01 and levels.mean().item() < 0.01


def test_parity_check_scores(tiny_weights, jpegs):
    detector = load_detector(weights=tiny_weights, device="cpu")
    assert_spread(detector.score([decode_image(d).image for d in jpegs]), 1e-3)
    parity = check_parity(detector, jpegs)
    assert parity.ok and parity.images == 3 and parity.max_score_diff <= 1e-3
    assert parity.tolerance == 1e-3 and parity.max_level_diff <= 1.01


def test_parity_compares_only_the_jpegs_both_paths_decode(tiny_weights, jpegs):
    detector = load_detector(weights=tiny_weights, device="cpu")
    broken = refused_jpeg()
    assert is_complete_jpeg(broken)
    parity = check_parity(detector, [broken, *jpegs])  # it raised DecodeError: --gpu-decode scans stopped
    assert parity.ok and parity.images == 3
    nothing = check_parity(detector, [broken])
    assert not nothing.ok and nothing.images == 0


def test_only_jpeg_bytes_are_jpegs(jpegs):
    buf = io.BytesIO()
    random_image(230, 230).save(buf, "PNG")
    assert is_jpeg(jpegs[0]) and not is_jpeg(buf.getvalue())
    assert is_complete_jpeg(jpegs[0]) and is_complete_jpeg(jpegs[0] + b"\0\0")  # padding after the end marker
    assert is_jpeg(jpegs[0][:-100]) and not is_complete_jpeg(jpegs[0][:-100])


def test_first_jpegs_are_complete_readable_and_within_the_limits(tmp_path, jpegs):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "b.jpg").write_bytes(jpegs[0][:-100])  # truncated
    (tmp_path / "c.jpg").write_bytes(jpeg(random_image(3000, 2000, seed=4)))  # over max_pixels below
    for i, data in enumerate(jpegs):
        (tmp_path / f"d{i}.jpg").write_bytes(data)
    (tmp_path / "e.jpg").symlink_to(tmp_path / "missing.jpg")  # unreadable
    spec = InputSpec.from_args([str(tmp_path)])
    assert first_jpegs(spec, Limits(), max_pixels=1_000_000) == jpegs
    assert first_jpegs(spec, Limits(), count=2, max_pixels=1_000_000) == jpegs[:2]
    assert first_jpegs(spec, Limits(), look_at=4, max_pixels=1_000_000) == jpegs[:1]  # a, b, c, d0
    assert len(first_jpegs(spec, Limits())) == 4  # c counts with the default limit
