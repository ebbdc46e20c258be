import re
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from forensix import overlay
from forensix.overlay import MaskFiles, mask_stem, outline_width, overlay_image, resize_prob, write_mask_files

TRICKY = [
    ("scan/a.zip", "../x.png"),
    ("scan/b.zip", "../x.png"),  # same member in another archive
    ("scan/a.zip", "/etc/passwd"),
    ("scan/a.zip", "a/../../b.png"),
    ("scan/a.zip", "..\\..\\windows\\evil.jpg"),
    ("scan/a.zip", "dir/"),
    ("a/x.png", ""),
    ("b/x.png", ""),  # same file stem, other folder
    ("a/x.jpg", ""),
    ("..", ""),
    ("/", ""),
    ("", ""),
    (".hidden.png", ""),
    ("-rf.png", ""),
    ("café.png", ""),
    ("日本語の写真.jpg", ""),
    ("photo\u202egnp.exe", ""),  # right-to-left override
    ("bad\udcff.png", ""),  # undecodable byte, as os.fsdecode gives it
    ("x" * 300 + ".png", ""),
    ("x" * 300 + ".jpg", ""),
    ("a/b.png", "c"),
    ("a", "b.png/c"),
]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}-[0-9a-f]{12}$")


def gray_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(30, 220, (h, w, 3), dtype=np.uint8), "RGB")


def left_half_map() -> np.ndarray:
    prob = np.zeros((256, 256), np.float32)
    prob[:, :128] = 1.0
    return prob


def square_map(size: int, lo: int, hi: int) -> np.ndarray:
    prob = np.zeros((size, size), np.float32)
    prob[lo:hi, lo:hi] = 0.9
    return prob


# --- file names --------------------------------------------------------------------------------


def test_mask_stems_are_distinct_and_safe():
    stems = [mask_stem(path, member) for path, member in TRICKY]
    assert len(set(stems)) == len(stems)
    for stem in stems:
        assert NAME.match(stem), stem


@pytest.mark.parametrize(
    ("path", "member", "stem"),
    [
        ("scan/a.zip", "../x.png", "x"),
        ("scan/a.zip", "/etc/passwd", "passwd"),
        ("scan/a.zip", "a/../../b.png", "b"),
        ("scan/a.zip", "..\\..\\windows\\evil.jpg", "evil"),
        ("a/x.png", "", "x"),
        ("/data/archive.tar.gz", "", "archive.tar"),
        (".hidden.png", "", "hidden"),
        ("-rf.png", "", "rf"),
        ("café crème.png", "", "cafe_creme"),
        ("日本語.jpg", "", "image"),
        ("x" * 300 + ".png", "", "x" * 80),
    ],
)
def test_mask_stem_keeps_the_file_stem(path, member, stem):
    assert mask_stem(path, member).rsplit("-", 1)[0] == stem


def test_mask_files_stay_in_out_dir(tmp_path):
    out = tmp_path / "masks"
    image = gray_image(8, 6)
    prob = np.full((4, 4), 0.25, np.float32)
    written = set()
    for path, member in TRICKY:
        files = write_mask_files(image, prob, out, path, member)
        for p in (files.map_path, files.overlay_path):
            assert p.resolve().parent == out.resolve()
            assert p.is_file()
            written.add(p.name)
        assert files.map_path.name == mask_stem(path, member) + ".mask.png"
        assert files.overlay_path.name == mask_stem(path, member) + ".overlay.png"
    assert len(written) == 2 * len(TRICKY)
    assert {p.name for p in out.iterdir()} == written  # flat, nothing else (no temp files)


# --- the grayscale map ------------------------------------------------------------------------------


def test_map_values_and_fraction(tmp_path):
    image = gray_image(512, 384)
    files = write_mask_files(image, left_half_map(), tmp_path, "img.png")
    assert isinstance(files, MaskFiles)
    with Image.open(files.map_path) as im:
        assert im.mode == "L" and im.size == (512, 384)
        gray = np.asarray(im)
    # Map column c covers image columns 2c, 2c+1; bilinear: column 255 is 0.75, 256 is 0.25.
    assert (gray[:, :255] == 255).all()
    assert (gray[:, 255] == 191).all() and (gray[:, 256] == 64).all()
    assert (gray[:, 257:] == 0).all()
    assert files.fraction == 0.5  # columns 0..255 have p > 0.5


def test_map_rounding_and_clipping(tmp_path):
    prob = np.array([[0.0, 0.5, 1 / 255, 0.7], [1.2, -0.3, 0.999, 0.002]], np.float32)
    files = write_mask_files(gray_image(4, 2), prob, tmp_path, "same-size.png")
    with Image.open(files.map_path) as im:
        assert np.asarray(im).tolist() == [[0, 128, 1, 178], [255, 0, 255, 1]]
    assert files.fraction == pytest.approx(3 / 8)


def test_resize_prob_orientation():
    prob = np.zeros((256, 256), np.float32)
    prob[:128] = 1.0  # top half
    at_size = resize_prob(prob, (300, 100))
    assert at_size.shape == (100, 300) and at_size.dtype == np.float32
    assert (at_size[:49] == 1).all() and (at_size[51:] == 0).all()


# --- the overlay ----------------------------------------------------------------------------------


def test_overlay_tints_high_and_keeps_zero(tmp_path):
    image = gray_image(512, 384, seed=3)
    files = write_mask_files(image, left_half_map(), tmp_path, "img.png")
    with Image.open(files.overlay_path) as im:
        assert im.mode == "RGB" and im.size == image.size
        out = np.asarray(im).astype(int)
    src = np.asarray(image).astype(int)
    assert np.array_equal(out[:, 257:], src[:, 257:])  # p == 0: untouched
    assert (out[:, 255] == [255, 255, 0]).all()  # the outline: the region's last column
    light = src[:, 256] + 0.25 * 0.55 * (np.array([255, 0, 0]) - src[:, 256])  # p == 0.25: heat, no outline
    assert np.abs(out[:, 256] - light).max() <= 1
    heated = out[:, :255]  # p == 1, outline excluded (column 255)
    expected = src[:, :255] + 0.55 * (np.array([255, 0, 0]) - src[:, :255])
    assert np.abs(heated - expected).max() <= 1
    assert (heated[..., 0] > src[:, :255, 0]).all()
    assert (heated[..., 1:] < src[:, :255, 1:]).all()


def test_outline_on_region_boundary():
    image = gray_image(256, 256)
    out = np.asarray(overlay_image(image, square_map(256, 64, 192)))
    yellow = (out == [255, 255, 0]).all(-1)
    ring = np.zeros((256, 256), bool)
    ring[64:192, 64:192] = True
    ring[65:191, 65:191] = False
    assert outline_width(image.size) == 1
    assert np.array_equal(yellow, ring)


def test_outline_width_grows_and_skips_image_edges():
    assert [outline_width((w, w)) for w in (64, 700, 1000, 1600, 8000)] == [1, 1, 2, 3, 3]
    prob = np.zeros((1600, 1600), np.float32)
    prob[:, :800] = 1.0  # region touches the top, bottom and left edges
    out = np.asarray(overlay_image(Image.new("RGB", (1600, 1600), (0, 0, 255)), prob))
    yellow = (out == [255, 255, 0]).all(-1)
    assert yellow[:, 797:800].all() and yellow.sum() == 3 * 1600  # only the inner side of the cut


def test_overlay_in_bands_equals_whole(monkeypatch):
    image = gray_image(200, 150, seed=5).convert("RGBA")  # not RGB: converted band by band
    rng = np.random.default_rng(0)
    prob = resize_prob(rng.random((16, 16), dtype=np.float32), image.size)
    whole = np.asarray(overlay_image(image, prob))
    monkeypatch.setattr(overlay, "_BAND_PIXELS", 200 * 7)  # bands of 7 rows, outline halo across them
    banded = np.asarray(overlay_image(image, prob))
    assert np.array_equal(whole, banded)


def test_overlay_rejects_bad_maps(tmp_path):
    image = gray_image(10, 10)
    with pytest.raises(ValueError):
        overlay_image(image, np.zeros((10, 11), np.float32))
    prob = np.zeros((4, 4), np.float32)
    prob[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_mask_files(image, prob, tmp_path, "x.png")
    with pytest.raises(ValueError):
        write_mask_files(image, np.zeros(16, np.float32), tmp_path, "x.png")


# --- writing ---------------------------------------------------------------------------------------


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    image = gray_image(32, 32)
    first = write_mask_files(image, np.zeros((8, 8), np.float32), tmp_path, "x.png")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        write_mask_files(image, np.ones((8, 8), np.float32), tmp_path, "x.png")
    with pytest.raises(KeyboardInterrupt):
        write_mask_files(image, np.ones((8, 8), np.float32), tmp_path, "new.png")
    # Old files intact, no partial new file, no temporary left behind.
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert first.map_path.exists()


def test_rewrite_replaces(tmp_path):
    image = gray_image(16, 16)
    write_mask_files(image, np.zeros((8, 8), np.float32), tmp_path, "x.png")
    files = write_mask_files(image, np.ones((8, 8), np.float32), tmp_path, "x.png")
    with Image.open(files.map_path) as im:
        assert (np.asarray(im) == 255).all()
    assert len(list(tmp_path.iterdir())) == 2


def test_large_image_memory(tmp_path, monkeypatch):
    """Numpy allocations stay near one full-size float32 map: the rest is done in bands of rows."""
    w, h = 1500, 1000
    monkeypatch.setattr(overlay, "_BAND_PIXELS", 1 << 16)
    image = Image.new("RGB", (w, h), (90, 120, 150))
    prob = square_map(256, 40, 200)
    tracemalloc.start()
    try:
        write_mask_files(image, prob, tmp_path, "big.png")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * w * h  # bytes: < 2.5 float32 copies (a float64 copy alone would be 8)
