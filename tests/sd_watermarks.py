"""Stable Diffusion's invisible watermarks, embedded exactly as its reference code calls invisible-watermark.

For the tests and benchmarks (no pytest here): the same library, the same calls, the same colour
orders and conversions as

- CompVis's SD 1.x and Stability AI's SD 2.x ``scripts/txt2img.py`` (``put_watermark``: RGB → BGR
  uint8, ``encode(..., 'dwtDct')``, back to RGB);
- diffusers' ``StableDiffusionXLWatermarker.apply_watermark`` on the pipeline's float tensor in
  [-1, 1], then the pipeline's own ``postprocess`` to a PIL image (``(x / 2 + 0.5).clamp(0, 1)``,
  ``* 255``, rounded to uint8).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from imwatermark import WatermarkEncoder
from PIL import Image

SD1_TEXT, SD2_TEXT = "StableDiffusionV1", "SDV2"
WATERMARK_MESSAGE = 0b101100111110110010010000011110111011000110011110  # diffusers' constant
WATERMARK_BITS = [int(bit) for bit in bin(WATERMARK_MESSAGE)[2:]]


def put_watermark(img: Image.Image, text: str) -> Image.Image:
    """txt2img.py's: ``wm_encoder.set_watermark('bytes', wm.encode('utf-8'))``, then per image."""
    wm_encoder = WatermarkEncoder()
    wm_encoder.set_watermark("bytes", text.encode("utf-8"))
    img = cv2.cvtColor(np.array(img), cv2.COLOR_RGB2BGR)
    img = wm_encoder.encode(img, "dwtDct")
    return Image.fromarray(img[:, :, ::-1])


def sdxl_watermark(img: Image.Image) -> Image.Image:
    """The SDXL pipeline's last steps on an image it decoded: watermark the tensor, then postprocess."""
    images = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255 * 2 - 1).permute(2, 0, 1)[None]
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", WATERMARK_BITS)
    # StableDiffusionXLWatermarker.apply_watermark, as diffusers writes it
    if images.shape[-1] >= 256:
        images = (255 * (images / 2 + 0.5)).cpu().permute(0, 2, 3, 1).float().numpy()
        images = images[:, :, :, ::-1]
        images = [encoder.encode(image, "dwtDct")[:, :, ::-1] for image in images]
        images = np.array(images)
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
        images = torch.clamp(2 * (images / 255 - 0.5), min=-1.0, max=1.0)
    # VaeImageProcessor.postprocess(output_type="pil"): denormalize, to numpy, numpy_to_pil
    array = (images / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()
    return Image.fromarray((array[0] * 255).round().astype("uint8"))


def marked(img: Image.Image, mark: str) -> Image.Image:
    """``img`` marked as ``sd1``, ``sd2`` or ``sdxl`` outputs are."""
    if mark == "sdxl":
        return sdxl_watermark(img)
    return put_watermark(img, SD1_TEXT if mark == "sd1" else SD2_TEXT)
