import copy
import io
import json
import math
import os
import tarfile
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_rows, assert_spread, decoder_crashing_on, mixed_inputs, random_image, refused_jpeg
from PIL import Image
from test_timeouts import LIMIT_TEXT, slow_jpeg

from forensix.cache import PredictionCache
from forensix.detector import load_detector
from forensix.imaging import decode_image
from forensix.inputs import InputSpec, Limits
from forensix.pipeline import ResumeIndex, ScanModels, Scanner, ScanOptions
from forensix.stages.batches import Block, ordered_blocks
from forensix.stages.records import Record


@pytest.fixture(scope="module")
def detector(tiny_weights):
    return load_detector(weights=tiny_weights, device="cpu")


def png_bytes(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def exif_jpeg(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS 5D"
    return png_bytes(random_image(300, 240, seed=7), "JPEG", quality=92, exif=exif.tobytes())


@pytest.fixture
def tree(tmp_path) -> Path:
    """Nested folders with images of many modes and formats, non-images and broken files."""
    root = tmp_path / "photos"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    rgb = random_image(257, 300, seed=1)
    (root / "a" / "rgb.png").write_bytes(png_bytes(rgb))
    (root / "a" / "cmyk.jpg").write_bytes(png_bytes(random_image(240, 260, seed=2).convert("CMYK"), "JPEG"))
    palette = random_image(230, 230, seed=3).convert("P")
    (root / "a" / "palette.png").write_bytes(png_bytes(palette, transparency=0))
    (root / "a" / "la.png").write_bytes(png_bytes(random_image(224, 240, seed=4).convert("LA")))
    i16 = Image.fromarray((np.arange(240 * 250).reshape(240, 250) % 65536).astype(np.uint16))
    (root / "b" / "i16.png").write_bytes(png_bytes(i16))
    (root / "b" / "bilevel.bmp").write_bytes(png_bytes(random_image(250, 250, seed=5).convert("1"), "BMP"))
    (root / "b" / "anim.gif").write_bytes(
        png_bytes(random_image(240, 240, seed=6).convert("P"), "GIF", save_all=True, append_images=[palette])
    )
    (root / "b" / "deep" / "photo.webp").write_bytes(png_bytes(rgb, "WEBP", quality=90))
    (root / "b" / "deep" / "scan.tiff").write_bytes(png_bytes(rgb, "TIFF"))
    (root / "b" / "deep" / "exif.jpg").write_bytes(exif_jpeg())
    (root / "b" / "noext").write_bytes(png_bytes(rgb))  # an image without an extension: found by content
    (root / "b" / "notes.txt").write_text("not an image")
    (root / "b" / "fake.jpg").write_text("not an image either, despite the name")
    full = png_bytes(random_image(300, 300, seed=8), "JPEG")
    (root / "b" / "truncated.jpg").write_bytes(full[: len(full) // 2])
    return root


IMAGES_IN_TREE = 12  # rows: 11 decodable images + the truncated JPEG


def scan_rows(paths, detector, **options) -> tuple[list[dict], Scanner]:
    scanner = Scanner(InputSpec.from_args([str(p) for p in paths]), detector, ScanOptions(**options))
    return list(scanner), scanner


def test_every_image_yields_one_row_in_sorted_order(tree, detector):
    rows, scanner = scan_rows([tree], detector, batch_size=4)
    rel = [os.path.relpath(r["path"], tree) for r in rows]
    assert rel == sorted(rel) and len(rows) == IMAGES_IN_TREE
    assert "b/notes.txt" not in rel and "b/fake.jpg" not in rel  # non-images in a folder: counted, no row
    assert scanner.stats.skipped_non_images == 2
    assert (scanner.stats.images, scanner.stats.errors) == (IMAGES_IN_TREE, 1)
    by_name = {os.path.basename(r["path"]): r for r in rows}
    assert by_name["truncated.jpg"]["verdict"] == "error"
    assert "cannot decode" in by_name["truncated.jpg"]["error"] and by_name["truncated.jpg"]["score"] is None
    formats = {name: r["format"] for name, r in by_name.items()}
    assert formats["cmyk.jpg"] == "JPEG" and formats["anim.gif"] == "GIF" and formats["photo.webp"] == "WEBP"
    assert formats["scan.tiff"] == "TIFF" and formats["bilevel.bmp"] == "BMP" and formats["noext"] == "PNG"
    for r in rows:
        assert r["model"] == detector.name and r["threshold"] == detector.threshold
        if r["verdict"] != "error":
            assert 0.0 <= r["score"] <= 1.0 and r["verdict"] == ("fake" if r["score"] >= 0.5 else "real")
            assert len(r["sha256"]) == 64 and r["width"] > 0 and r["error"] == ""


def test_scores_equal_the_model_called_directly(tree, detector):
    rows, _ = scan_rows([tree], detector, batch_size=3)
    scored = [r for r in rows if r["score"] is not None]
    images = [decode_image(Path(r["path"]).read_bytes()).image for r in scored]
    direct = detector.score(images)
    assert_spread(direct, 1e-6)
    assert np.abs(np.array([r["score"] for r in scored]) - direct).max() <= 1e-6


def test_workers_give_the_same_rows_as_the_main_process(tree, detector):
    serial, _ = scan_rows([tree], detector, batch_size=2, workers=0)
    parallel, _ = scan_rows([tree], detector, batch_size=2, workers=2)
    assert [r["path"] for r in parallel] == [r["path"] for r in serial]
    assert_spread([r["score"] for r in serial if r["score"] is not None], 1e-6)
    assert [r["score"] for r in parallel] == pytest.approx([r["score"] for r in serial], abs=1e-6, nan_ok=False)
    assert [r["notes"] for r in parallel] == [r["notes"] for r in serial]


def test_model_batches_are_full_whatever_lies_between_images(tree, detector, monkeypatch):
    sizes = []
    logits = detector.raw_logits

    def spy(batch):
        sizes.append(len(batch))
        return logits(batch)

    monkeypatch.setattr(detector, "raw_logits", spy)
    scan_rows([tree], detector, batch_size=4, workers=2)
    assert sizes == [4, 4, 3]  # 11 decodable images, non-images and errors regrouped around


def test_error_rows_keep_their_place_behind_a_part_batch(tmp_path, detector):
    image = png_bytes(random_image(224, 224))
    names = ["a.png"] + [f"b{i:02d}.png" for i in range(30)] + ["c.png"]
    for name in names:
        (tmp_path / name).write_bytes(image if name in ("a.png", "c.png") else b"\x89PNG\r\n\x1a\n broken")
    rows, scanner = scan_rows([tmp_path], detector, batch_size=4)
    assert [os.path.basename(r["path"]) for r in rows] == names
    assert [r["verdict"] == "error" for r in rows] == [False] + [True] * 30 + [False]


def test_exif_orientation_is_applied_and_notes_are_read(tmp_path, detector):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(exif_jpeg(orientation=6))
    (row,), _ = scan_rows([path], detector)
    assert (row["width"], row["height"]) == (300, 240)  # as stored
    upright = Image.open(path).transpose(Image.Transpose.ROTATE_270)  # orientation 6 = rotate 90° clockwise
    assert row["score"] == pytest.approx(float(detector.score([upright.convert("RGB")])[0]), abs=1e-6)
    assert "Canon" in row["notes"] and row["metadata"]["exif"]["make"] == "Canon"
    no_notes = list(Scanner(InputSpec.from_args([str(path)]), detector, ScanOptions(metadata=False)))
    assert no_notes[0]["notes"] == "" and "metadata" not in no_notes[0]


def test_archives_are_scanned_in_memory_with_member_labels(tmp_path, detector):
    image = png_bytes(random_image(230, 230, seed=3))
    zpath = tmp_path / "set.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("x/one.png", image)
        z.writestr("../evil.png", image)
        z.writestr("readme.txt", "hello")
    tpath = tmp_path / "set.tar.gz"
    with tarfile.open(tpath, "w:gz") as t:
        info = tarfile.TarInfo("/etc/evil.png")
        info.size = len(image)
        t.addfile(info, io.BytesIO(image))
    before = sorted(p for p in Path(tmp_path.parent).rglob("*"))
    rows, scanner = scan_rows([zpath, tpath], detector, workers=2)
    assert sorted(p for p in Path(tmp_path.parent).rglob("*")) == before  # nothing extracted anywhere
    assert [(Path(r["path"]).name, r["member"]) for r in rows] == [
        ("set.zip", "x/one.png"),
        ("set.zip", "../evil.png"),
        ("set.tar.gz", "/etc/evil.png"),
    ]
    assert len({r["score"] for r in rows}) == 1  # the same bytes score the same wherever they live
    assert scanner.stats.skipped_non_images == 1


def test_a_tar_of_a_folder_gives_a_row_for_each_of_its_names(tmp_path, detector):
    """A hard link member was dropped silently: the folder gave 3 rows, its tar 2 and a summary saying nothing."""
    root = tmp_path / "photos"
    root.mkdir()
    (root / "a.png").write_bytes(png_bytes(random_image(230, 240, seed=1)))
    os.link(root / "a.png", root / "b.png")
    (root / "c.png").write_bytes(png_bytes(random_image(240, 230, seed=2)))
    (root / "d.png").symlink_to("a.png")
    os.mkfifo(root / "e.pipe")
    archive = tmp_path / "photos.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(root, arcname="photos")  # b.png a hard link, d.png a symbolic link, e.pipe a fifo
    folder_rows, folder = scan_rows([root], detector, workers=2, batch_size=2)
    tar_rows, tar = scan_rows([archive], detector, workers=2, batch_size=2)
    a, b, c, d = folder_rows  # the folder's links are followed: b.png and d.png are a.png's bytes
    assert [Path(r["path"]).name for r in folder_rows] == ["a.png", "b.png", "c.png", "d.png"]
    same = partial(pytest.approx, abs=1e-5)  # batches of other sizes: float rounding
    assert [b["score"], d["score"]] == [same(a["score"])] * 2 and c["score"] != same(a["score"])
    assert [(r["member"], r["score"], r["error"]) for r in tar_rows] == [
        ("photos/a.png", same(a["score"]), ""),
        ("photos/b.png", same(a["score"]), ""),
        ("photos/c.png", same(c["score"]), ""),
        ("photos/d.png", None, "symbolic link in archive: not followed"),
    ]
    assert [r["sha256"] for r in tar_rows[:3]] == [r["sha256"] for r in folder_rows[:3]]
    assert folder.stats.skipped_non_images == tar.stats.skipped_non_images == 1  # the fifo, unopened


def test_limits_are_error_rows_naming_the_limit(tmp_path, detector):
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(random_image(400, 300)))
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.png", b"\x89PNG\r\n\x1a\n" + bytes(5_000_000))
    rows, _ = scan_rows([big, bomb], detector, max_pixels=100_000)
    assert "max-pixels" in rows[0]["error"] and rows[0]["verdict"] == "error"
    assert "max-ratio" in rows[1]["error"] and rows[1]["member"] == "zeros.png"
    rows, _ = scan_rows([big], detector, limits=Limits(max_bytes=1000))
    assert "max-bytes" in rows[0]["error"]


def test_named_missing_and_non_image_files_are_error_rows(tmp_path, detector):
    text = tmp_path / "x.jpg"
    text.write_text("hello")
    rows, _ = scan_rows([tmp_path / "absent.png", text], detector)
    assert [r["verdict"] for r in rows] == ["error", "error"]
    assert rows[0]["error"] == "no such file or directory"
    assert rows[1]["error"] == "not an image in a format forensix reads" and len(rows[1]["sha256"]) == 64


def test_resume_index_skips_what_is_done(tree, detector):
    rows, _ = scan_rows([tree], detector)
    done = ResumeIndex.from_rows([(r["path"], r["member"], r["sha256"]) for r in rows[:5]])
    spec = InputSpec.from_args([str(tree)])
    scanner = Scanner(spec, detector, ScanOptions(batch_size=4, workers=2), done)
    rest = list(scanner)
    assert [r["path"] for r in rest] == [r["path"] for r in rows[5:]]
    assert scanner.stats.resumed == 5
    changed = Path(rows[0]["path"])
    changed.write_bytes(png_bytes(random_image(260, 260, seed=99)))  # same path, new content: scanned again
    again = list(Scanner(spec, detector, ScanOptions(), done))
    assert str(changed) in [r["path"] for r in again]


@pytest.mark.parametrize(("workers", "batch_size"), [(0, 1), (2, 1), (2, 3)])
def test_a_resumed_report_holding_k_rows_of_an_input_skips_its_first_k_occurrences(
    tmp_path, detector, workers, batch_size
):
    """The same name twice with other bytes, then again with the first ones (a tar appended to): A, B, A.

    Whatever prefix of the rows a report holds, resuming gives exactly the rest, whichever worker
    prepares which occurrence.
    """
    one, two = png_bytes(random_image(230, 240, seed=1)), png_bytes(random_image(240, 230, seed=2))
    archive = tmp_path / "appended.tar"
    with tarfile.open(archive, "w") as t:
        for data in (one, two, one):
            info = tarfile.TarInfo("x.png")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    plain = tmp_path / "b.png"
    plain.write_bytes(two)
    paths = [archive, plain, plain]
    rows, _ = scan_rows(paths, detector)
    assert [(Path(r["path"]).name, r["member"]) for r in rows] == [("appended.tar", "x.png")] * 3 + [("b.png", "")] * 2
    spec = InputSpec.from_args([str(p) for p in paths])
    for k in range(len(rows) + 1):
        done = ResumeIndex.from_rows([(r["path"], r["member"], r["sha256"]) for r in rows[:k]])
        scanner = Scanner(spec, detector, ScanOptions(batch_size=batch_size, workers=workers), done)
        rest = list(scanner)
        assert [(r["path"], r["sha256"]) for r in rest] == [(r["path"], r["sha256"]) for r in rows[k:]], k
        assert [r["score"] for r in rest] == [pytest.approx(r["score"], abs=1e-5) for r in rows[k:]], k
        assert scanner.stats.resumed == k


def test_non_finite_scores_become_error_rows(tmp_path, detector, monkeypatch):
    (tmp_path / "a.png").write_bytes(png_bytes(random_image(224, 224)))
    monkeypatch.setattr(detector, "raw_logits", lambda batch: torch.full((len(batch),), math.nan))
    (row,), _ = scan_rows([tmp_path], detector)
    assert row["verdict"] == "error" and row["score"] is None and "non-finite" in row["error"]


def test_ordered_blocks_restores_order_and_never_drops_a_block():
    def block(start: int, n: int) -> Block:
        return Block([Record(i, skip="non-image") for i in range(start, start + n)], {})

    shuffled = [block(4, 4), block(0, 4), block(12, 2), block(8, 4)]
    assert [b.records[0].index for b in ordered_blocks(shuffled)] == [0, 4, 8, 12]
    with pytest.raises(RuntimeError, match="lost its place"):
        list(ordered_blocks([block(0, 4), block(8, 4)]))


def test_heic_and_avif_are_found_by_content_and_scored(tmp_path, detector):
    pytest.importorskip("pillow_heif")  # the [heif] extra; AVIF is built into Pillow
    root = tmp_path / "phone"
    root.mkdir()
    image = random_image(300, 240, seed=11)
    (root / "a_photo").write_bytes(png_bytes(image, "HEIF", quality=90))
    (root / "b_photo").write_bytes(png_bytes(image, "AVIF", quality=90))
    rows, _ = scan_rows([root], detector)
    assert [(r["format"], r["width"], r["height"], r["error"]) for r in rows] == [
        ("HEIF", 300, 240, ""),
        ("AVIF", 300, 240, ""),
    ]
    for row, name in zip(rows, ("a_photo", "b_photo")):
        decoded = decode_image((root / name).read_bytes()).image
        assert row["score"] == pytest.approx(float(detector.score([decoded])[0]), abs=1e-6)


def test_a_bigtiff_in_a_folder_is_scored_as_when_named(tmp_path, detector):
    """BigTIFF's magic ('II+\\0') was unknown to the sniff: skipped in a folder, scored when named."""
    root = tmp_path / "scans"
    root.mkdir()
    (root / "big.tif").write_bytes(png_bytes(random_image(260, 240, seed=12), "TIFF", big_tiff=True))
    (root / "classic.tif").write_bytes(png_bytes(random_image(260, 240, seed=13), "TIFF"))
    in_folder, scanner = scan_rows([root], detector)
    named, _ = scan_rows([root / "big.tif", root / "classic.tif"], detector)
    assert scanner.stats.skipped_non_images == 0
    assert [(r["format"], r["width"], r["error"]) for r in in_folder] == [("TIFF", 260, ""), ("TIFF", 260, "")]
    assert [(r["path"], r["score"]) for r in in_folder] == [(r["path"], r["score"]) for r in named]


@pytest.fixture
def jpegs(tmp_path) -> Path:
    """JPEGs of several kinds (EXIF-rotated, greyscale, CMYK, progressive), a PNG, a truncated JPEG."""
    root = tmp_path / "jpegs"
    root.mkdir()
    (root / "a_plain.jpg").write_bytes(png_bytes(random_image(400, 300, seed=1), "JPEG", quality=90))
    (root / "b_rotated.jpg").write_bytes(exif_jpeg(6))
    (root / "c_grey.jpg").write_bytes(png_bytes(random_image(260, 300, seed=2).convert("L"), "JPEG"))
    (root / "d_cmyk.jpg").write_bytes(png_bytes(random_image(300, 240, seed=3).convert("CMYK"), "JPEG"))
    (root / "e_progressive.jpg").write_bytes(png_bytes(random_image(333, 250, seed=4), "JPEG", progressive=True))
    (root / "f.png").write_bytes(png_bytes(random_image(250, 250, seed=5)))
    full = png_bytes(random_image(300, 300, seed=6), "JPEG")
    (root / "g_truncated.jpg").write_bytes(full[: len(full) // 2])
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_gpu_decode_gives_the_same_rows_within_the_parity_tolerance(jpegs, detector, workers, monkeypatch):
    """The device path (here torchvision's libjpeg on the CPU, nvjpeg on CUDA) against the Pillow path."""
    import forensix.stages.device_decode as device_decode

    on_device: list[int] = []
    real = device_decode.preprocess_jpegs

    def counted(data, cfg, device):
        on_device.append(len(data))
        return real(data, cfg, device)

    monkeypatch.setattr(device_decode, "preprocess_jpegs", counted)
    plain, _ = scan_rows([jpegs], detector, workers=workers, batch_size=3)
    fast, scanner = scan_rows([jpegs], detector, workers=workers, batch_size=3, gpu_decode=True)
    assert scanner.gpu_parity is True
    assert len(scanner.notices) == 1 and "model on cpu" in scanner.notices[0]  # only the note that CPU gains nothing
    assert sum(on_device) >= 5  # the five complete JPEGs went through the device path (whole or one by one)
    keys = ("path", "verdict", "width", "height", "format", "notes", "error", "sha256")
    assert [{k: r[k] for k in keys} for r in fast] == [{k: r[k] for k in keys} for r in plain]
    assert fast[-1]["verdict"] == "error" and "cannot decode" in fast[-1]["error"]  # truncated: Pillow refuses it
    assert_spread([r["score"] for r in plain if r["score"] is not None], 1e-3)
    for a, b in zip(plain, fast):
        if a["score"] is not None:
            assert abs(a["score"] - b["score"]) <= 1e-3


def never_on_the_device(*args):
    raise AssertionError("the scan decoded on the device")


@pytest.mark.parametrize("workers", [0, 2])
def test_gpu_decode_leaves_decoding_to_the_workers_when_parity_fails(jpegs, detector, monkeypatch, workers):
    import forensix.gpu_decode as gpu_decode

    checked: list[int] = []

    def strict(d, data):
        checked.append(len(data))
        return gpu_decode.check_parity(d, data, 0.0)

    monkeypatch.setattr("forensix.pipeline.check_parity", strict)
    monkeypatch.setattr("forensix.stages.device_decode.preprocess_jpegs", never_on_the_device)
    plain, _ = scan_rows([jpegs], detector, workers=workers)
    fallback, scanner = scan_rows([jpegs], detector, gpu_decode=True, workers=workers)
    assert checked == [5]  # the five complete JPEGs, before the workers started
    assert scanner.gpu_parity is False and "decoded with Pillow" in scanner.notices[-1]
    assert [r["score"] for r in fallback] == [r["score"] for r in plain]  # Pillow's pixels exactly


def test_gpu_decode_scans_past_a_corrupt_jpeg_among_the_first(tmp_path, detector):
    good = png_bytes(random_image(240, 240, seed=1), "JPEG")
    (tmp_path / "0.jpg").write_bytes(refused_jpeg())
    (tmp_path / "1.jpg").write_bytes(good)
    rows, scanner = scan_rows([tmp_path], detector, gpu_decode=True)
    assert [r["verdict"] == "error" for r in rows] == [True, False] and scanner.gpu_parity is True


def test_gpu_decode_without_jpegs_decodes_with_pillow_and_says_so(tmp_path, detector, monkeypatch):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(random_image(240, 240, seed=i)))
    monkeypatch.setattr("forensix.stages.device_decode.preprocess_jpegs", never_on_the_device)
    plain, _ = scan_rows([tmp_path], detector)
    rows, scanner = scan_rows([tmp_path], detector, gpu_decode=True)
    assert scanner.gpu_parity is None and "no JPEG among the first 1000 inputs" in scanner.notices[-1]
    assert [r["score"] for r in rows] == [r["score"] for r in plain]


def test_cli_gpu_decode_scans_and_records_the_choice(jpegs, tiny_weights, tmp_path):
    from typer.testing import CliRunner

    from forensix.cli import app

    out = tmp_path / "r.jsonl"
    args = ["scan", str(jpegs), "--weights", str(tiny_weights), "--gpu-decode", "--workers", "0", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 7
    assert "note: --gpu-decode with the model on cpu" in result.output
    assert json.loads((tmp_path / "r.jsonl.meta.json").read_text())["gpu_decode"] is True


class OutOfMemoryAbove(torch.nn.Module):
    """The model, failing as CUDA does when a batch holds more than ``limit`` images."""

    def __init__(self, model: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.model, self.limit, self.calls = model, limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate (simulated)")
        return self.model(x)


def test_a_batch_too_big_for_the_gpu_runs_in_pieces_with_the_same_scores(tiny_weights):
    detector = load_detector(weights=tiny_weights, device="cpu")
    images = [random_image(240, 230, seed=i) for i in range(8)]
    expected = detector.score(images)
    assert_spread(expected, 1e-6)
    detector.backend.forward = OutOfMemoryAbove(detector.backend.module, limit=3)
    np.testing.assert_allclose(detector.score(images), expected, atol=1e-6)
    assert detector.backend.forward.calls == [8, 4, 2, 2, 2, 2] and detector.max_batch == 2  # halved until it fits
    detector.score(images[:5])
    assert detector.backend.forward.calls[6:] == [2, 2, 1]  # later batches start at the size that fits
    detector.backend.forward.limit = 0
    with pytest.raises(torch.OutOfMemoryError):  # not even one image fits: that error stands
        detector.score(images[:1])


def test_a_scan_survives_running_out_of_gpu_memory_and_says_so(tree, detector, tiny_weights):
    plain, _ = scan_rows([tree], detector, batch_size=8)
    squeezed = load_detector(weights=tiny_weights, device="cpu")
    squeezed.backend.forward = OutOfMemoryAbove(squeezed.backend.module, limit=5)
    rows, scanner = scan_rows([tree], squeezed, batch_size=8)
    assert [(r["path"], r["verdict"]) for r in rows] == [(r["path"], r["verdict"]) for r in plain]
    assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in plain], abs=1e-6)
    assert squeezed.max_batch == 4
    assert scanner.notices == [
        f"{squeezed.name} ran out of GPU memory at batch 8: it ran in pieces of 4 images "
        "(same scores; pass --batch-size 4 next time)"
    ]


def test_a_cached_scan_decodes_and_scores_only_what_is_new(tree, tiny_weights, tmp_path, monkeypatch):
    import forensix.stages.records as records

    cache = PredictionCache(tmp_path / "predictions.sqlite")
    spec = InputSpec.from_args([str(tree)])
    detector = load_detector(weights=tiny_weights, device="cpu")
    plain = list(Scanner(spec, detector, ScanOptions(batch_size=4)))
    first = list(Scanner(spec, detector, ScanOptions(batch_size=4), cache=cache))
    # one logit per distinct scored image: not the truncated JPEG; a/rgb.png and b/noext are the same bytes
    # (b/noext's score is a/rgb.png's, from another batch: equal to the CPU's rounding for another batch)
    assert len(cache) == IMAGES_IN_TREE - 2
    assert_same_rows(copy.deepcopy(first), copy.deepcopy(plain))

    decoded: list[int] = []
    real_decode = records.decode_image
    monkeypatch.setattr(records, "decode_image", lambda data, *a: decoded.append(len(data)) or real_decode(data, *a))
    detector.backend.forward = OutOfMemoryAbove(detector.backend.module, limit=0)  # any forward pass would fail
    again = Scanner(spec, detector, ScanOptions(batch_size=4), cache=cache)
    rows = list(again)
    assert rows == first  # scores, notes, sizes: the same row, bit for bit
    assert again.stats.cached == IMAGES_IN_TREE - 1 and detector.backend.forward.calls == []
    assert len(decoded) == 1  # only the truncated JPEG, which has no cached logit, was decoded (and failed)

    # Another precision is another model key: nothing found, everything scored and stored anew, except
    # b/noext, which holds the bytes of a/rgb.png, stored two batches earlier in the same scan.
    bf16 = load_detector(weights=tiny_weights, device="cpu", precision="bf16")
    fresh = Scanner(spec, bf16, ScanOptions(batch_size=4), cache=cache)
    list(fresh)
    assert fresh.stats.cached == 1 and len(cache) == 2 * (IMAGES_IN_TREE - 2)
    assert fresh.provenance()["cache"]["model_key"].endswith(":bf16")


def test_the_library_scan_takes_a_cache(tree, detector, tmp_path):
    import forensix

    cache = PredictionCache(tmp_path / "predictions.sqlite")
    first = list(forensix.scan([str(tree)], detector, cache=cache, batch_size=4))
    assert len(cache) == IMAGES_IN_TREE - 2 and list(forensix.scan([str(tree)], detector, cache=cache)) == first


def test_a_cached_scan_with_workers_finds_what_the_previous_one_stored(tree, detector, tmp_path):
    cache = PredictionCache(tmp_path / "predictions.sqlite")
    spec = InputSpec.from_args([str(tree)])
    first = list(Scanner(spec, detector, ScanOptions(batch_size=3, workers=2), cache=cache))
    again = Scanner(spec, detector, ScanOptions(batch_size=3, workers=2), cache=cache)
    rows = list(again)
    assert again.stats.cached == IMAGES_IN_TREE - 1
    # a cached score is the sigmoid of the stored logit: the same to float32's precision, not to the bit
    assert [{**r, "score": None} for r in rows] == [{**r, "score": None} for r in first]
    assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in first], abs=1e-6)


@pytest.mark.parametrize("workers", [0, 2])
def test_device_decoding_and_the_cache_together(jpegs, detector, tmp_path, workers):
    """A block may hold cached images (no pixels), device-decoded JPEGs and Pillow-decoded others."""
    cache = PredictionCache(tmp_path / "predictions.sqlite")
    spec = InputSpec.from_args([str(jpegs)])
    plain = list(Scanner(spec, detector, ScanOptions(batch_size=3, workers=workers)))
    both = ScanOptions(batch_size=3, workers=workers, gpu_decode=True)
    part = InputSpec.from_args([str(jpegs / "b_rotated.jpg"), str(jpegs / "f.png")])
    list(Scanner(part, detector, ScanOptions(batch_size=3), cache=cache))  # two of the seven cached
    mixed = Scanner(spec, detector, both, cache=cache)
    rows = list(mixed)
    assert mixed.stats.cached == 2 and mixed.gpu_parity is True
    assert [(r["path"], r["verdict"], r["width"], r["notes"]) for r in rows] == [
        (r["path"], r["verdict"], r["width"], r["notes"]) for r in plain
    ]
    assert_spread([r["score"] for r in plain if r["score"] is not None], 1e-3)
    for a, b in zip(plain, rows):
        assert (a["score"] is None) == (b["score"] is None)
        if a["score"] is not None:
            assert abs(a["score"] - b["score"]) <= 1e-3


@pytest.mark.slow
def test_an_image_that_crashes_its_decoder_is_an_error_row_and_the_scan_goes_on(tmp_path, detector, monkeypatch):
    import forensix.stages.records as records

    root = tmp_path / "photos"
    root.mkdir()
    for i in range(12):
        random_image(40, 30, seed=i).save(root / f"{i:02d}.png")
    bomb = (root / "07.png").read_bytes()  # block 2 of 4 at batch size 3: worker 0's second block
    plain, _ = scan_rows([root], detector, batch_size=3, workers=2)
    # The same images in a tar.gz too: members the walk handed out by their spooled bytes go out again.
    archive = tmp_path / "photos.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(root.iterdir()):
            tar.add(path, path.name)

    monkeypatch.setattr(records, "decode_image", decoder_crashing_on(bomb, records.decode_image))
    both, scanner = scan_rows([root, archive], detector, batch_size=3, workers=2)
    rows, members = both[:12], both[12:]
    assert [r["path"] for r in rows] == [r["path"] for r in plain]  # every row, once, in order
    (crashed,) = [r for r in rows if r["verdict"] == "error"]
    assert crashed["path"].endswith("07.png") and crashed["sha256"] == plain[7]["sha256"]
    assert crashed["error"] == "cannot decode image: the process reading it was killed by SIGSEGV"
    others = [(r["path"], r["score"]) for r in rows if r is not crashed]
    assert others == [(r["path"], pytest.approx(r["score"], abs=1e-6)) for r in plain if r["path"] != crashed["path"]]
    assert scanner.stats.worker_deaths >= 2 and "no row is lost" in scanner.notices[-1]
    assert [r["member"] for r in members] == [os.path.basename(r["path"]) for r in plain]
    assert [r["error"] for r in members] == [crashed["error"] if i == 7 else "" for i in range(12)]
    assert [r["sha256"] for r in members] == [r["sha256"] for r in plain]
    assert [r["score"] for r in members if r["member"] != "07.png"] == [pytest.approx(s, abs=1e-6) for _, s in others]


@pytest.mark.slow
def test_a_crash_with_mask_inputs_costs_only_its_image(tmp_path, detector, monkeypatch):
    """Blocks that carry their files' bytes (kept for the mask files) and a worker that then crashes:
    a block handed over in pieces through the result pipe was cut by the crash, leaving the scan
    waiting forever for the rest. Blocks now travel in shared memory; the pipe carries a short note."""
    import threading

    from tiny_models import tiny_localizer_file

    import forensix.stages.records as records
    from forensix.localizer import load_localizer

    folder = InputSpec.from_args([mixed_inputs(tmp_path).sources[0][1]])
    bomb = (Path(folder.sources[0][1]) / "bomb.png").read_bytes()
    monkeypatch.setattr(records, "decode_image", decoder_crashing_on(bomb, records.decode_image))
    localizer = load_localizer(tiny_localizer_file(tmp_path / "loc.safetensors"), device="cpu")
    options = ScanOptions(batch_size=4, workers=1, masks_dir=tmp_path / "masks", masks_all=True)
    rows: list[dict] = []
    scan = threading.Thread(target=lambda: rows.extend(Scanner(folder, detector, options, localizer=localizer)))
    scan.daemon = True
    scan.start()
    scan.join(timeout=120)
    assert not scan.is_alive(), "the scan is stuck on a block cut by the crash"
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert errors.keys() == {"bomb.png", "cut.png"} and len(rows) == 20
    assert errors["bomb.png"] == "cannot decode image: the process reading it was killed by SIGSEGV"


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_over_its_time_budget_is_an_error_row_and_the_scan_goes_on(tmp_path, detector, workers):
    """Issue 14: a progressive JPEG of thousands of scans took minutes to decode, holding the scan."""
    for name in ("a", "c", "d"):
        random_image(60, 50, seed=ord(name)).save(tmp_path / f"{name}.png")
    (tmp_path / "b.jpg").write_bytes(slow_jpeg())  # about 4 s to decode
    rows, scanner = scan_rows([tmp_path], detector, batch_size=2, workers=workers, decode_timeout=0.2)
    assert [os.path.basename(r["path"]) for r in rows] == ["a.png", "b.jpg", "c.png", "d.png"]
    slow = rows[1]
    assert slow["verdict"] == "error" and slow["error"] == f"decoding took longer than {LIMIT_TEXT}"
    assert slow["score"] is None and len(slow["sha256"]) == 64
    assert all(r["verdict"] in ("real", "fake") and r["score"] is not None for r in rows if r is not slow)
    assert scanner.stats.worker_deaths == 0 and scanner.provenance()["limits"]["decode_timeout"] == 0.2


def test_scan_models_run_a_ray_block_in_model_batches(detector, monkeypatch):
    images = torch.stack([detector.preprocess(random_image(40, 30, seed=i)) for i in range(10)])
    sizes = []
    raw_logits = detector.raw_logits
    monkeypatch.setattr(detector, "raw_logits", lambda x: sizes.append(len(x)) or raw_logits(x))
    got = [o.logit for o in ScanModels(detector, batch_size=4).run(images)]
    assert sizes == [4, 4, 2]  # never more than a batch on the device at once
    want = torch.cat([raw_logits(images[i : i + 4]) for i in range(0, 10, 4)]).tolist()
    assert got == want and max(got) - min(got) > 1e-3
