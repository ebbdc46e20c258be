"""Preprocessing against transformers' PIL CLIPImageProcessor and torchvision (independent oracles)."""

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from conftest import random_image
from transformers import CLIPImageProcessorPil

from forensix.imaging import preprocess, shortest_edge_size
from forensix.models.config import CLIP_MEAN, CLIP_STD, PreprocessConfig

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
