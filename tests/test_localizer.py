"""Localizers: loading (official file, forensix file, manifest name) and masks drawn during a scan."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pin_placed, random_image
from PIL import Image
from reference_declip import RefDeCLIP, RefDeCLIPViTRN50
from safetensors.torch import save_file
from typer.testing import CliRunner

from forensix.cli import app
from forensix.convert import import_checkpoint
from forensix.detector import load_detector
from forensix.fetching import fetch
from forensix.imaging import decode_image, preprocess
from forensix.inputs import InputSpec
from forensix.localizer import load_localizer
from forensix.models.checkpoints import CheckpointError, read_checkpoint
from forensix.overlay import mask_stem, resize_prob
from forensix.pipeline import Scanner, ScanOptions
from forensix.report import COLUMNS
from forensix.weights import WeightsMissing, WeightsRefused

runner = CliRunner()
TINY = dict(width=64, layers=4, heads=1, patch=14, image=224, output_dim=48, feature_layer="layer2")


pytestmark = pytest.mark.usefixtures("home")  # every test: a FORENSIX_HOME of its own (conftest)


@pytest.fixture(scope="module")
def reference() -> RefDeCLIP:
    torch.manual_seed(0)
    ref = RefDeCLIP(**TINY, decoder_type="conv-4", filter_sizes=[64, 16, 8, 8, 8])
    x = torch.stack([preprocess(random_image(300, 240, seed=i), _squash()) for i in range(2)])
    return ref.randomize(x, seed=0)


def _squash():
    from forensix.models.config import PreprocessConfig

    return PreprocessConfig(mode="squash", resize=224, crop=224, interpolation="bilinear")


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, reference) -> Path:
    path = tmp_path_factory.mktemp("declip") / "ViT_layer2_conv-4_toy.pth"
    torch.save(reference.official_checkpoint(), path)
    return path


@pytest.fixture(scope="module")
def detector(tiny_weights):
    return load_detector(weights=tiny_weights, device="cpu")


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# Loading


def test_official_file_loads_and_gives_the_reference_maps(official_file, reference):
    localizer = load_localizer(official_file, device="cpu")
    assert localizer.config.arch == "declip" and localizer.config.feature_layers == (3,)
    images = [random_image(300, 240, seed=5), random_image(231, 400, seed=6)]
    probs = localizer.probabilities(images)
    with torch.no_grad():
        expected = torch.sigmoid(reference(torch.stack([localizer.preprocess(im) for im in images])))
    assert probs.shape == (2, 256, 256) and probs.dtype == np.float32
    assert np.abs(probs - expected.view(2, 256, 256).numpy()).max() <= 1e-5
    assert localizer.name.startswith("declip-custom@") and len(localizer.info.sha256) == 64


def test_imported_safetensors_gives_the_same_maps(tmp_path, official_file):
    out = tmp_path / "loc.safetensors"
    cfg = import_checkpoint(official_file, out)
    assert cfg.arch == "declip"
    _, _, provenance = read_checkpoint(out)
    assert provenance["source_format"] == "declip-official" and provenance["decoder_type"] == "conv-4"
    image = random_image(260, 250, seed=9)
    a = load_localizer(official_file, device="cpu").probabilities([image])
    b = load_localizer(out, device="cpu").probabilities([image])
    assert np.abs(a - b).max() <= 1e-6


def test_manifest_name_loads_from_the_weights_folder(home, official_file):
    with pytest.raises(Exception, match="forensix weights fetch declip-lama"):
        load_localizer("declip-lama", device="cpu")
    home.mkdir(parents=True)
    (home / "ViT_layer20_conv-20_lama.pth").write_bytes(official_file.read_bytes())
    with pytest.raises(WeightsRefused, match="not pinned .* forensix weights fetch declip-lama"):
        load_localizer("declip-lama", device="cpu")  # put there by hand: checked and pinned by fetch first
    fetch("declip-lama")
    localizer = load_localizer("declip-lama", device="cpu")
    assert localizer.name.startswith("declip-lama@")


def test_a_detector_is_not_a_localizer(tiny_weights):
    with pytest.raises(CheckpointError, match="not a localizer"):
        load_localizer(tiny_weights, device="cpu")
    with pytest.raises(ValueError, match="not a localizer"):
        load_localizer("deeclip", device="cpu")


def test_a_detector_checkpoint_file_is_refused_by_name(tmp_path):
    path = tmp_path / "head.pth"
    torch.save({"weight": torch.zeros(1, 768), "bias": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="head.pth: a detector, not a localizer"):
        load_localizer(path, device="cpu")


# ------------------------------------------------------------------------------------------------
# Masks in the scan


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    random_image(300, 240, seed=1).save(root / "wide.png")
    random_image(230, 410, seed=2).save(root / "tall.jpg", quality=95)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with zipfile.ZipFile(root / "set.zip", "w") as z:
        z.writestr("../escape.png", png(random_image(240, 240, seed=3)))
        z.writestr("/etc/abs.png", png(random_image(250, 240, seed=4)))
    return root


def scan_with_masks(paths, detector, localizer, masks: Path, **options):
    opts = ScanOptions(masks_dir=masks, **options)
    scanner = Scanner(InputSpec.from_args([str(p) for p in paths]), detector, opts, localizer=localizer)
    return list(scanner), scanner


@pytest.mark.parametrize("workers", [0, 2])
def test_every_image_judged_fake_gets_exact_mask_files(tmp_path, photos, detector, official_file, workers):
    localizer = load_localizer(official_file, device="cpu")
    detector = load_detector(weights=detector.info.source, device="cpu", threshold=0.0)  # all fake
    masks = tmp_path / "masks"
    rows, scanner = scan_with_masks([photos], detector, localizer, masks, workers=workers, batch_size=2)
    assert len(rows) == 5 and scanner.stats.masks == 4
    for row in rows:
        if row["verdict"] == "error":
            assert row["mask"] == "" and row["mask_fraction"] is None
            continue
        overlay, gray = Path(row["mask"]), Path(row["mask_map"])
        assert overlay.parent == masks and gray.parent == masks  # member names never escape the folder
        assert overlay.name == mask_stem(row["path"], row["member"]) + ".overlay.png"
        if row["member"]:
            data = zipfile.ZipFile(row["path"]).read(row["member"])
        else:
            data = Path(row["path"]).read_bytes()
        image = decode_image(data).image
        expected = resize_prob(localizer.probabilities([image])[0], image.size)
        stored = np.asarray(Image.open(gray))
        assert stored.shape == (image.height, image.width)
        assert np.abs(stored.astype(int) - np.rint(expected * 255).astype(int)).max() <= 1
        assert Image.open(overlay).size == image.size
        assert row["mask_fraction"] == pytest.approx(float((expected > 0.5).mean()), abs=1e-3)
    assert sorted(p.name for p in masks.iterdir()) == sorted(
        Path(r[k]).name for r in rows if r["mask"] for k in ("mask", "mask_map")
    )
    by_member = {r["member"]: Path(r["mask"]).name for r in rows if r["member"]}
    assert by_member["../escape.png"].startswith("escape-") and by_member["/etc/abs.png"].startswith("abs-")
    assert not (tmp_path / "escape.png").exists()


def test_only_images_judged_fake_get_masks_unless_all(tmp_path, photos, detector, official_file):
    localizer = load_localizer(official_file, device="cpu")
    real = load_detector(weights=detector.info.source, device="cpu", threshold=1.0)  # none fake
    rows, scanner = scan_with_masks([photos], real, localizer, tmp_path / "none")
    assert scanner.stats.masks == 0 and all(r["mask"] == "" for r in rows)
    assert not (tmp_path / "none").exists()  # nothing to draw: the library creates no folder
    rows, scanner = scan_with_masks([photos], real, localizer, tmp_path / "all", masks_all=True)
    assert scanner.stats.masks == 4 and sum(bool(r["mask"]) for r in rows) == 4
    assert all(r["verdict"] == "real" for r in rows if r["mask"])


def test_a_cached_scan_with_a_localizer_still_draws_every_mask(tmp_path, photos, detector, official_file):
    from forensix.cache import PredictionCache

    localizer = load_localizer(official_file, device="cpu")
    fake = load_detector(weights=detector.info.source, device="cpu", threshold=0.0)  # all fake
    cache = PredictionCache(tmp_path / "predictions.sqlite")
    spec = InputSpec.from_args([str(photos)])
    for run in ("first", "again"):
        opts = ScanOptions(masks_dir=tmp_path / run, batch_size=2)
        scanner = Scanner(spec, fake, opts, localizer=localizer, cache=cache)
        rows = list(scanner)
        assert scanner.stats.masks == 4 and scanner.stats.cached == 0  # lookups off: the localizer needs pixels
    assert len(cache) == 4 and sum(bool(r["mask"]) for r in rows) == 4


def test_a_mask_that_cannot_be_written_keeps_the_verdict(tmp_path, photos, detector, official_file, monkeypatch):
    import forensix.stages.rows as rows

    def fail(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(rows, "write_mask_files", fail)
    localizer = load_localizer(official_file, device="cpu")
    fake = load_detector(weights=detector.info.source, device="cpu", threshold=0.0)
    rows, _ = scan_with_masks([photos / "wide.png"], fake, localizer, tmp_path / "m")
    assert rows[0]["verdict"] == "fake" and rows[0]["score"] is not None
    assert rows[0]["error"] == "mask files not written: No space left on device" and rows[0]["mask"] == ""


def test_a_localizer_needs_a_masks_folder(detector, official_file):
    localizer = load_localizer(official_file, device="cpu")
    with pytest.raises(ValueError, match="--masks"):
        Scanner(InputSpec.from_args(["x"]), detector, ScanOptions(), localizer=localizer)


def test_cli_writes_masks_and_the_report_names_them(tmp_path, photos, tiny_weights, official_file):
    out, masks = tmp_path / "report.csv", tmp_path / "masks"
    args = ["scan", str(photos), "--weights", str(tiny_weights), "--threshold", "0", "--workers", "0"]
    result = runner.invoke(app, [*args, "--localizer", str(official_file), "--masks", str(masks), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 masks" in result.stderr
    text = out.read_text()
    assert text.startswith(",".join(COLUMNS))
    meta = json.loads((tmp_path / "report.csv.meta.json").read_text())
    assert meta["localizer"]["model"].startswith("declip-custom@") and meta["localizer"]["masks_dir"] == str(masks)
    assert len(list(masks.glob("*.overlay.png"))) == 4 and len(list(masks.glob("*.mask.png"))) == 4


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--masks", "MASKS"], "need a localizer"),
        (["--masks-all"], "need a localizer"),
        (["--localizer", "LOC"], "add --masks DIR"),
        (["--localizer", "LOC", "--masks", "FILE"], "--masks"),
    ],
)
def test_cli_mask_options_that_do_not_fit_exit_2(tmp_path, photos, tiny_weights, official_file, extra, message):
    (tmp_path / "file").write_text("a file, not a folder")
    subst = {"MASKS": str(tmp_path / "m"), "LOC": str(official_file), "FILE": str(tmp_path / "file")}
    args = ["scan", str(photos), "--weights", str(tiny_weights), *[subst.get(a, a) for a in extra]]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------
# ViT+RN50: the decoder-only release and OpenAI's backbone files


@pytest.fixture(scope="module")
def vitrn50() -> RefDeCLIPViTRN50:
    torch.manual_seed(4)
    ref = RefDeCLIPViTRN50(
        **TINY, decoder_type="conv-4", filter_sizes=[64 + 128, 16, 8, 8, 8], rn_layers=[1, 1, 2, 1], rn_width=8
    )
    x = torch.stack([preprocess(random_image(300, 240, seed=i), _squash()) for i in range(2)])
    return ref.randomize(x, seed=4)


def _place_vitrn50(home: Path, ref: RefDeCLIPViTRN50, name: str = "ldm") -> Path:
    home.mkdir(parents=True, exist_ok=True)
    vit, rn50 = ref.backbone_files()
    save_file(vit, str(home / "openai_clip_vit_l_14.safetensors"))
    save_file(rn50, str(home / "openai_clip_rn50.safetensors"))
    path = home / f"ViT_layer20+RN50_layer3_conv-20_{name}.pth"
    torch.save(ref.official_checkpoint(), path)
    pin_placed(home / "openai_clip_vit_l_14.safetensors", home / "openai_clip_rn50.safetensors", path)
    return path


def test_vit_rn50_loads_by_name_and_by_path_with_the_backbones_of_the_weights_folder(home, vitrn50, own_backbones):
    path = _place_vitrn50(home, vitrn50)
    images = [random_image(300, 240, seed=7), random_image(240, 333, seed=8)]
    by_name = load_localizer("declip-vitrn50-ldm", device="cpu")
    by_path = load_localizer(path, device="cpu")
    with torch.no_grad():
        expected = torch.sigmoid(vitrn50(torch.stack([by_name.preprocess(im) for im in images]))).view(2, 256, 256)
    for localizer in (by_name, by_path):
        assert localizer.config.cnn is not None
        assert np.abs(localizer.probabilities(images) - expected.numpy()).max() <= 1e-5
    assert by_name.info.provenance["cnn_backbone_file"] == "openai_clip_rn50.safetensors"


def test_vit_rn50_import_needs_and_uses_the_backbones(home, tmp_path, vitrn50, own_backbones):
    path = tmp_path / "ViT_layer20+RN50_layer3_conv-20_x.pth"
    torch.save(vitrn50.official_checkpoint(), path)
    with pytest.raises(WeightsMissing, match="fetch clip-vit-l-14 and forensix weights fetch clip-rn50"):
        load_localizer(path, device="cpu")
    with pytest.raises(WeightsMissing, match="openai_clip_rn50.safetensors"):
        import_checkpoint(path, tmp_path / "x.safetensors")
    _place_vitrn50(home, vitrn50)
    cfg = import_checkpoint(path, tmp_path / "x.safetensors")
    assert cfg.cnn is not None
    image = random_image(250, 260, seed=9)
    a = load_localizer(path, device="cpu").probabilities([image])
    b = load_localizer(tmp_path / "x.safetensors", device="cpu").probabilities([image])
    assert np.abs(a - b).max() <= 1e-6


def test_forensix_scan_draws_masks_with_a_localizer(tmp_path, photos, detector, official_file):
    import forensix

    fake = forensix.load_detector(weights=detector.info.source, device="cpu", threshold=0.0)  # all fake
    localizer = forensix.load_localizer(official_file, device="cpu")
    masks = tmp_path / "masks"
    rows = list(forensix.scan([str(photos)], fake, localizer=localizer, masks_dir=masks, workers=0, batch_size=2))
    expected, _ = scan_with_masks([photos], fake, localizer, tmp_path / "by-scanner", workers=0, batch_size=2)
    assert len(rows) == 5 and sum(bool(r["mask"]) for r in rows) == 4
    assert all(Path(r["mask"]).parent == masks and Path(r["mask"]).exists() for r in rows if r["mask"])
    assert [r["mask_fraction"] for r in rows] == [r["mask_fraction"] for r in expected]
    with pytest.raises(ValueError, match="--localizer with --masks"):
        forensix.scan([str(photos)], fake, localizer=localizer)
