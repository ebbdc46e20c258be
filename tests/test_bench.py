"""forensix bench (library and CLI) and benchmarks/compare_reference.py, on the tiny model, CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import random_image
from PIL import Image
from typer.testing import CliRunner

from forensix.bench import BenchOptions, run_bench, synthetic_jpegs
from forensix.cli import app
from forensix.detector import load_detector

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("model_img_per_s", "decode_img_per_s", "end_to_end_img_per_s")


def test_synthetic_jpegs_are_deterministic_and_in_range(tmp_path):
    a, b = synthetic_jpegs(tmp_path / "a", 3), synthetic_jpegs(tmp_path / "b", 3)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    for path in a:
        with Image.open(path) as image:
            assert image.format == "JPEG" and all(224 <= side <= 512 for side in image.size)


def test_bench_on_a_folder_with_device_decoding(tiny_weights, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, size in enumerate([(300, 240), (224, 400), (512, 512)]):
        random_image(*size, seed=i).save(folder / f"{i}.jpg", quality=90)
    random_image(250, 250).save(folder / "lossless.png")  # decoded by the scan, skipped by the JPEG path
    (folder / "notes.txt").write_text("not an image")
    detector = load_detector(weights=tiny_weights, device="cpu")
    options = BenchOptions(batch_size=2, workers=1, images=folder, runs=1, warmup=0, gpu_decode=True)
    result = run_bench(detector, options)
    data = result.to_dict()
    device_figures = ("gpu_decode_img_per_s", "end_to_end_gpu_decode_img_per_s")
    assert all(data[key] > 0 for key in (*FIGURES, "peak_rss_mb", "peak_worker_rss_mb", *device_figures))
    assert data["gpu_decode_max_score_diff"] <= 1e-3
    assert data["image_count"] == 4 and data["images"] == str(folder) and data["peak_gpu_mb"] is None
    assert (data["batch_size"], data["workers"], data["compile"], data["device"]) == (2, 1, False, "cpu")
    assert data["max_batch"] is None  # every batch fitted


def test_bench_cli_json(tiny_weights):
    args = ["bench", "--weights", str(tiny_weights), "--device", "cpu", "--batch-size", "3", "--workers", "0"]
    result = CliRunner().invoke(app, [*args, "--count", "5", "--runs", "2", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert all(isinstance(data[key], float) and data[key] > 0 for key in FIGURES)
    assert data["images"] == "synthetic" and data["image_count"] == 5 and data["peak_worker_rss_mb"] is None
    assert (data["batch_size"], data["workers"], data["runs"], data["warmup"]) == (3, 0, 2, 0)
    assert data["precision"] == "fp32" and data["model"].startswith("deeclip-tiny@")
    assert data["versions"]["torch"]


def test_bench_cli_refuses_a_folder_without_images(tiny_weights, tmp_path):
    args = ["bench", "--weights", str(tiny_weights), "--device", "cpu", "--workers", "0", "--images", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--runs", "1", "--warmup", "0"])
    assert result.exit_code == 2 and "no image" in result.stderr


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
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 20")]
    assert any("| torch | model_img_per_s |" in row and "≥ 2,500 on an H100 |" in row for row in rows)
    assert not any("| batch_size |" in row for row in rows)  # settings stay out of the table


def test_compare_reference_tiny_agrees():
    script = ROOT / "benchmarks" / "compare_reference.py"
    args = ["--size", "tiny", "--images", "2", "--batch-size", "2", "--runs", "1"]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    agreements = [line for line in done.stdout.splitlines() if line.startswith("agreement")]
    assert len(agreements) == 2 and all(line.endswith(": OK") for line in agreements)
    assert "GFLOP/s" in done.stdout and "int8:" in done.stdout
    assert "same verdicts True" in done.stdout


def test_bench_runs_the_onnx_backend(tiny_weights, tmp_path):
    pytest.importorskip("onnxruntime")
    from forensix.loading import load_weights
    from forensix.onnx_export import export_onnx

    export_onnx(load_weights(tiny_weights, "detector"), tmp_path / "tiny.onnx", check=False)
    detector = load_detector(tmp_path / "tiny.onnx", device="cpu")
    data = run_bench(detector, BenchOptions(batch_size=2, workers=0, count=2, runs=1, warmup=0)).to_dict()
    assert data["backend"] == "onnx" and data["compile"] is False and data["model_img_per_s"] > 0


def test_bench_cli_compiles_only_torch(tiny_weights):
    args = ["bench", "--weights", str(tiny_weights), "--backend", "onnx", "--compile"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--compile is for the torch backend" in result.stderr
