import io
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from reference_deeclip import RefDeeCLIP  # noqa: E402

UNIVFD_HEAD = Path(__file__).parent / "data" / "univfd_fc_weights.pth"

TINY = dict(width=64, layers=4, heads=1, patch=14, image=224, proj=48, feature_layers=[1, 2, 3], rank=4, alpha=8.0)


@pytest.fixture(scope="session")
def tiny_reference() -> RefDeeCLIP:
    """The authors' architecture at tiny size (transformers + peft), random weights, eval mode."""
    torch.manual_seed(0)
    return RefDeeCLIP(**TINY).eval()


@pytest.fixture(scope="session")
def tiny_official_file(tmp_path_factory, tiny_reference) -> Path:
    """The tiny reference saved exactly as the released DeeCLIP file is laid out."""
    path = tmp_path_factory.mktemp("official") / "deeclip_tiny.pth"
    torch.save(tiny_reference.official_state_dict(), path)
    return path


def random_image(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    # Smooth gradients plus noise: resampling filters see realistic structure, not only noise.
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 / max(w - 1, 1)), (y * 255 / max(h - 1, 1)), ((x + y) * 127 / max(w + h, 1))], -1)
    img = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(img, "RGB").convert(mode)


@pytest.fixture
def images() -> list[Image.Image]:
    sizes = [(225, 301), (640, 480), (301, 225), (1000, 224), (224, 224), (513, 997)]
    return [random_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny DeeCLIP of the product's own factory, random weights, saved in forensix's format."""
    from forensix.models.checkpoints import save_checkpoint
    from forensix.models.config import get_config
    from forensix.models.factory import create_model

    torch.manual_seed(1)
    cfg = get_config("deeclip-tiny")
    model = create_model(cfg)
    path = tmp_path_factory.mktemp("weights") / "deeclip-tiny.safetensors"
    save_checkpoint(path, cfg, model.state_dict(), provenance={"source": "random init for tests"})
    return path


def decoder_crashing_on(bomb: bytes, decode):
    """``decode``, except that the process dies of SIGSEGV on ``bomb``'s bytes: a decoder's crash on a hostile file."""

    def crashing(data, *args):
        if data == bomb:
            os.kill(os.getpid(), signal.SIGSEGV)
        return decode(data, *args)

    return crashing


def refused_jpeg(seed: int = 0) -> bytes:
    """A complete JPEG (start and end markers, a readable header) whose scan data holds bytes no
    decoder accepts (0xFF before a non-marker byte): Pillow and libjpeg/nvjpeg both refuse it."""
    buf = io.BytesIO()
    noise = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    for k in range(len(data) // 2, len(data) // 2 + 40):
        data[k] = 0xFF if k % 7 == 0 else data[k] ^ 0x55
    return bytes(data)
