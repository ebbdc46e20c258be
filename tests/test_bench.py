"""forensix bench (library and CLI) and benchmarks/compare_reference.py, on the tiny model, CPU."""

import itertools
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import assert_spread, random_image
from PIL import Image
from typer.testing import CliRunner

from forensix.bench import BenchOptions, run_bench, synthetic_jpegs
from forensix.cli import app
from forensix.detector import load_detector
from forensix.download import sha256_file

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("model_img_per_s", "decode_img_per_s", "end_to_end_img_per_s")


@pytest.fixture
def clock(monkeypatch):
    """bench's clock ticks one second per reading: each timed run takes 1 s, so a rate is the images it did."""
    import forensix.bench as bench

    ticks = itertools.count()
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))


def rss_mb(field: str) -> float:
    """This process's VmRSS or VmHWM (peak) in MiB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def test_synthetic_jpegs_are_deterministic_and_in_range(tmp_path):
    a, b = synthetic_jpegs(tmp_path / "a", 3), synthetic_jpegs(tmp_path / "b", 3)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    for path in a:
        with Image.open(path) as image:
            assert image.format == "JPEG" and all(224 <= side <= 512 for side in image.size)


def test_bench_on_a_folder_with_device_decoding(tiny_weights, tmp_path, clock):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, size in enumerate([(300, 240), (224, 400), (512, 512)]):
        random_image(*size, seed=i).save(folder / f"{i}.jpg", quality=90)
    random_image(250, 250).save(folder / "lossless.png")  # decoded by the scan, skipped by the JPEG path
    (folder / "notes.txt").write_text("not an image")
    detector = load_detector(weights=tiny_weights, device="cpu")
    assert_spread(detector.score([Image.open(folder / f"{i}.jpg").convert("RGB") for i in range(3)]), 1e-3)
    options = BenchOptions(batch_size=2, workers=1, images=folder, runs=1, warmup=0, gpu_decode=True)
    rss_before = rss_mb("VmRSS")
    result = run_bench(detector, options)
    data = result.to_dict()
    # One timed run each, one clock second long: decode and the scan did the 4 images (not the text
    # file), the model two batches of 2; the device path the 3 JPEGs; the scan with it the 4 images.
    assert [data[key] for key in FIGURES] == [4.0, 4.0, 4.0]
    assert (data["gpu_decode_img_per_s"], data["end_to_end_gpu_decode_img_per_s"]) == (3.0, 4.0)
    assert rss_before <= data["peak_rss_mb"] <= rss_mb("VmHWM") and data["peak_worker_rss_mb"] > 0
    assert data["gpu_decode_max_score_diff"] <= 1e-3
    assert data["image_count"] == 4 and data["images"] == str(folder) and data["peak_gpu_mb"] is None
    assert (data["batch_size"], data["workers"], data["compile"], data["device"]) == (2, 1, False, "cpu")
    assert data["max_batch"] is None  # every batch fitted


def test_bench_cli_json(tiny_weights, clock):
    args = ["bench", "--weights", str(tiny_weights), "--device", "cpu", "--batch-size", "3", "--workers", "0"]
    result = CliRunner().invoke(app, [*args, "--count", "5", "--runs", "2", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # Each run one clock second: 5 images decoded and scanned, the model 2 full batches of 3.
    assert [data[key] for key in FIGURES] == [6.0, 5.0, 5.0]
    assert data["images"] == "synthetic" and data["image_count"] == 5 and data["peak_worker_rss_mb"] is None
    assert (data["batch_size"], data["workers"], data["runs"], data["warmup"]) == (3, 0, 2, 0)
    assert data["precision"] == "fp32" and data["model"].startswith("deeclip-tiny@")
    assert data["versions"]["torch"]
    # What produced the figures, from the same builder as a scan's .meta.json and eval's metrics.json.
    assert data["weights"]["sha256"] == sha256_file(tiny_weights) and data["config"] == "deeclip-tiny"
    assert data["preprocess"]["mode"] == "resize_crop"


def test_bench_cli_refuses_a_folder_without_images(tiny_weights, tmp_path):
    args = ["bench", "--weights", str(tiny_weights), "--device", "cpu", "--workers", "0", "--images", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--runs", "1", "--warmup", "0"])
    assert result.exit_code == 2 and "no image" in result.stderr


@pytest.mark.slow
def test_gpu_targets_script_runs_its_stages_and_tabulates_them(tmp_path):
    """benchmarks/gpu_targets.py, tiny and on the CPU: what a GPU session will run at full size."""
    script = ROOT / "benchmarks" / "gpu_targets.py"
    args = ["--size", "tiny", "--device", "cpu", "--precision", "fp32", "--images", "6", "--batch-size", "4"]
    args += ["--runs", "1", "--warmup", "0", "--workers", "1", "--layout-batches", "1", "--work", str(tmp_path)]
    for stages in ("setup,torch", "gpu-decode,layout,onnx"):  # two calls, one record file
        done = subprocess.run(
            [sys.executable, str(script), *args, "--stages", stages], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in (tmp_path / "figures.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["setup", "torch", "gpu-decode", "layout", "onnx"]
    figures = {r["stage"]: r["figures"] for r in records}
    assert figures["torch"]["end_to_end_img_per_s"] > 0 and figures["torch"]["peak_worker_rss_mb"] > 0
    assert figures["gpu-decode"]["gpu_decode_max_score_diff"] <= 1e-3
    assert set(figures["layout"]) == {"model_img_per_s_channels_last", "model_img_per_s_contiguous"}
    assert all(figures["onnx"][f"{b}_b{n}_model_img_per_s"] > 0 for b in ("torch", "onnx") for n in (1, 32, 256))
    # The table: every recorded figure with its value, no setting; targets beside the torch stage's only.
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in done.stdout.splitlines() if line.startswith("| 20")]
    shown = {(stage, key): float(value.replace(",", "")) for _, _, stage, key, value, _ in cells}
    recorded = {
        (r["stage"], key): value
        for r in records
        for key, value in r["figures"].items()
        if value is not None and key.endswith(("_per_s", "_mb", "_diff"))
    }
    assert shown.keys() == recorded.keys() and len(cells) == len(recorded)
    for key, value in recorded.items():
        assert shown[key] == pytest.approx(value, rel=1e-2, abs=0.05)
    targeted = {(stage, key) for _, _, stage, key, _, target in cells if target}
    assert targeted == {("torch", "model_img_per_s"), ("torch", "end_to_end_img_per_s")}


@pytest.mark.slow
def test_compare_reference_tiny_agrees():
    script = ROOT / "benchmarks" / "compare_reference.py"
    args = ["--size", "tiny", "--images", "2", "--batch-size", "2", "--runs", "1"]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    agreements = [line for line in done.stdout.splitlines() if line.startswith("agreement")]
    assert len(agreements) == 2 and all(line.endswith(": OK") for line in agreements)
    assert "GFLOP/s" in done.stdout and "int8:" in done.stdout
    assert "same verdicts True" in done.stdout


def test_bench_runs_the_onnx_backend(tiny_weights, tmp_path, clock):
    pytest.importorskip("onnxruntime")
    from forensix.loading import load_weights
    from forensix.onnx_export import export_onnx

    export_onnx(load_weights(tiny_weights, "detector"), tmp_path / "tiny.onnx", check=False)
    detector = load_detector(tmp_path / "tiny.onnx", device="cpu")
    data = run_bench(detector, BenchOptions(batch_size=2, workers=0, count=2, runs=1, warmup=0)).to_dict()
    assert data["backend"] == "onnx" and data["compile"] is False
    assert [data[key] for key in FIGURES] == [2.0, 2.0, 2.0]  # one batch of 2 in each one-second run


def test_bench_cli_compiles_only_torch(tiny_weights):
    args = ["bench", "--weights", str(tiny_weights), "--backend", "onnx", "--compile"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--compile is for the torch backend" in result.stderr
