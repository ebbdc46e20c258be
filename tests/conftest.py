import io
import math
import os
import signal
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

sys.path.insert(0, str(Path(__file__).parent))

from ray_hooks import CRASH_MARK  # noqa: E402
from reference_deeclip import RefDeeCLIP  # noqa: E402
from tiny_models import random_image, tiny_deeclip_file  # noqa: E402, F401 (random_image: for the tests)

from forensix.inputs import InputSpec  # noqa: E402

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


def labelled_tree(root: Path, per_class: int) -> Path:
    """A UnivFD-layout dataset at ``root``: ``per_class`` images in 0_real and in 1_fake, each its own."""
    for label, folder in enumerate(("0_real", "1_fake")):
        (root / folder).mkdir(parents=True)
        for i in range(per_class):
            random_image(230, 240 + 8 * i, seed=10 * label + i).save(root / folder / f"{i}.png")
    return root


def assert_spread(scores, tolerance: float) -> None:
    """A comparison within ``tolerance`` means something only if the scores differ by far more."""
    spread = float(np.ptp(np.asarray(scores, dtype=np.float64)))
    assert spread >= 100 * tolerance, f"scores spread over {spread:.3g}: under 100 x the tolerance {tolerance:g}"


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder of 6 images (3 in a subfolder), a text file and a truncated PNG: 7 rows, 1 skip."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i in range(6):
        random_image(224 + 7 * i, 240, seed=i).save(root / ("sub" if i % 2 else ".") / f"img{i}.png")
    (root / "readme.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    return root


@pytest.fixture
def images() -> list[Image.Image]:
    sizes = [(225, 301), (640, 480), (301, 225), (1000, 224), (224, 224), (513, 997)]
    return [random_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny DeeCLIP of the product's own factory, random weights, saved in forensix's format."""
    return tiny_deeclip_file(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def small_input_weights(tmp_path_factory) -> Path:
    """The tiny DeeCLIP on 28×28 inputs (2×2 patches): for tests of the inputs, where the model's cost is noise."""
    return tiny_deeclip_file(tmp_path_factory.mktemp("weights"), side=28)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A forensix home of the test's own ($FORENSIX_HOME: weights, the weights lock, caches)."""
    monkeypatch.setenv("FORENSIX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def own_backbones(monkeypatch):
    """The shipped manifest without the CLIP backbones' published sha256s, so that the tests' tiny CLIPs,
    placed under the backbones' names and pinned (pin_placed), stand in for OpenAI's."""
    import dataclasses

    from forensix import weights as W

    def unpinned(f):
        return dataclasses.replace(f, sha256=None, size=None, hub=None) if f.hub is not None else f

    entries = {
        name: dataclasses.replace(entry, files=tuple(unpinned(f) for f in entry.files))
        for name, entry in W.load_manifest().items()
    }
    monkeypatch.setattr(W, "load_manifest", lambda path=None: entries)


def pin_placed(*paths: Path) -> None:
    """Pin files put in the weights folder by hand to what they hold, as `forensix weights pin` would:
    loads refuse a manifest name's file that has no pin."""
    from forensix.digests import sha256_file
    from forensix.pins import BY_HAND, Pin, editing

    with editing() as lock:
        for path in paths:
            lock.record(path.name, Pin(sha256_file(path), path.stat().st_size, BY_HAND))


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


def png_bytes(image, **info: str) -> bytes:
    text = PngImagePlugin.PngInfo()
    for key, value in info.items():
        text.add_text(key, value)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=text)
    return out.getvalue()


def mixed_inputs(root: Path) -> InputSpec:
    """At ``root``: a folder (a subfolder, JPEGs and PNGs, a truncated PNG, a text file, an empty file, a file that
    crashes its decoder), a zip, a tar.gz and a path list naming a file again and one that is gone."""
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(18):
        image = random_image(40 + 9 * i, 30 + 7 * i, seed=i)
        folder = photos / "sub" if i % 4 == 0 else photos
        image.save(folder / f"{i:02d}.jpg", quality=85) if i % 2 else image.save(folder / f"{i:02d}.png")
    (photos / "cut.png").write_bytes(png_bytes(random_image(64, 64, 99))[:200])
    (photos / "notes.txt").write_text("not an image")
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "bomb.png").write_bytes(png_bytes(random_image(50, 50, 7), Comment=CRASH_MARK.decode()))
    with zipfile.ZipFile(root / "set.zip", "w") as z:
        for i in range(4):
            z.writestr(f"z/{i}.png", png_bytes(random_image(33 + i, 47, seed=100 + i)))
        z.writestr("z/readme.txt", "hello")
    with tarfile.open(root / "set.tar.gz", "w:gz") as t:
        for i in range(4):
            data = png_bytes(random_image(51, 29 + i, seed=200 + i))
            member = tarfile.TarInfo(f"t/{i}.png")
            member.size = len(data)
            t.addfile(member, io.BytesIO(data))
    listed = root / "list.txt"
    listed.write_text(f"{photos / '01.jpg'}\n{photos / 'gone.png'}\n{photos / '03.jpg'}\n")
    return InputSpec.from_args([str(photos), str(root / "set.zip"), str(root / "set.tar.gz")], [str(listed)])


NUMBERS = ("score", "source_score", "mask_fraction")  # compared to 1e-6 by assert_same_rows


def assert_same_rows(got: list[dict], want: list[dict], masks: tuple[Path, Path] | None = None) -> None:
    """Row for row: every field equal, numbers to 1e-6, mask files by their name in their own folder."""
    assert [(r["path"], r["member"]) for r in got] == [(r["path"], r["member"]) for r in want]
    for a, b in zip(got, want):
        for key in NUMBERS:
            x, y = a.pop(key), b.pop(key)
            assert (x is None) == (y is None) and (x is None or math.isclose(x, y, abs_tol=1e-6)), (key, a, b)
        if masks is not None:
            for key in ("mask", "mask_map"):
                if a.get(key) and b.get(key):
                    a[key], b[key] = (str(Path(r[key]).relative_to(d)) for r, d in ((a, masks[0]), (b, masks[1])))
        assert a == b
