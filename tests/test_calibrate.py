"""forensix calibrate: thresholds on toy score distributions, temperature, storing, and scan picking it up."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import labelled_tree, random_image
from typer.testing import CliRunner

from forensix.calibrate import (
    calibrate,
    calibration_record,
    fit_temperature,
    store_calibration,
    threshold_balanced,
    threshold_for_fpr,
    wilson,
)
from forensix.cli import app
from forensix.datasets import load_dataset
from forensix.detector import Detector, load_detector
from forensix.loading import calibration_sidecar, load_weights
from forensix.models.checkpoints import CheckpointError, read_checkpoint
from forensix.models.registry import ConvertOptions

runner = CliRunner()


def normal_sf(x: np.ndarray | float) -> np.ndarray:
    return 0.5 * np.vectorize(math.erfc)(np.asarray(x) / math.sqrt(2))


def logit(p: float) -> float:
    return math.log(p / (1 - p))


pytestmark = pytest.mark.usefixtures("home")  # every test: a FORENSIX_HOME of its own (conftest)


def test_wilson_interval_known_values():
    r = wilson(5, 10)
    assert r.value == 0.5 and r.low == pytest.approx(0.2366, abs=1e-4) and r.high == pytest.approx(0.7634, abs=1e-4)
    zero = wilson(0, 10)
    assert zero.low == 0 and zero.high == pytest.approx(1.959964**2 / (10 + 1.959964**2))
    assert wilson(0, 0).value is None


def test_target_fpr_threshold_holds_on_held_out_gaussian_logits():
    """Real logits ~ N(-2, 1), fake ~ N(2, 1): the true FPR at the chosen threshold is known exactly."""
    rng = np.random.default_rng(0)
    target, n, covered, errors = 0.05, 2000, 0, []
    for _ in range(200):
        labels = np.repeat([0, 1], n)
        logits = np.concatenate([rng.normal(-2, 1, n), rng.normal(2, 1, n)])
        c = calibrate(labels, logits, target_fpr=target)
        assert c.fpr.value <= target  # on the calibration data, never above the target
        true_fpr = float(normal_sf(logit(c.threshold) + 2))
        errors.append(true_fpr - target)
        covered += c.fpr.low <= true_fpr <= c.fpr.high
    assert abs(np.mean(errors)) < 0.002 and np.std(errors) < 0.007
    assert covered / 200 >= 0.9
    # and on one large held-out draw the measured FPR is inside the interval
    held_out = 1 / (1 + np.exp(-rng.normal(-2, 1, 200_000)))
    assert c.fpr.low <= np.mean(held_out >= c.threshold) <= c.fpr.high
    assert c.tpr.low <= float(normal_sf(logit(c.threshold) - 2)) <= c.tpr.high


def test_threshold_for_fpr_edge_cases():
    reals = np.array([0.1, 0.2, 0.2, 0.9])
    assert threshold_for_fpr(reals, 0.0) > 0.9
    t = threshold_for_fpr(reals, 0.25)  # one false positive allowed: flag only the 0.9
    assert 0.2 < t <= 0.9 and np.mean(reals >= t) == 0.25
    assert np.mean(reals >= threshold_for_fpr(reals, 0.5)) == 0.25  # the tie at 0.2 can't be split
    assert threshold_for_fpr(reals, 1.0) == 0.1
    assert threshold_for_fpr(np.array([1.0]), 0.0) == 1.0  # nothing above 1: the best there is


def test_balanced_threshold_is_the_brute_force_best():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], [300, 100])
    scores = 1 / (1 + np.exp(-rng.normal(labels * 1.5, 1)))
    t = threshold_balanced(labels, scores)

    def balanced(th: float) -> float:
        flagged = scores >= th
        return (flagged[labels == 1].mean() + (~flagged[labels == 0]).mean()) / 2

    assert balanced(t) == pytest.approx(max(balanced(th) for th in scores))


def test_temperature_recovers_an_overconfident_scale():
    rng = np.random.default_rng(2)
    true = rng.normal(0, 2, 20_000)
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-true))).astype(int)
    t = fit_temperature(3 * true, labels)
    assert t == pytest.approx(3, rel=0.05)

    def nll(temp: float) -> float:
        x = torch.tensor(3 * true / temp)
        return torch.nn.functional.binary_cross_entropy_with_logits(x, torch.tensor(labels, dtype=torch.float64)).item()

    assert nll(t) <= min(nll(t * 1.01), nll(t / 1.01))
    assert fit_temperature(np.array([-5.0, 5.0]), np.array([0, 1])) == pytest.approx(0.01)  # separable: the bound


@pytest.fixture
def tree(tmp_path) -> Path:
    return labelled_tree(tmp_path / "val", per_class=4)


def test_calibrated_safetensors_is_what_scan_uses_by_default(tree, tiny_weights, tmp_path):
    out = tmp_path / "calibrated.safetensors"
    args = ["calibrate", "--data", tree, "--weights", tiny_weights, "--workers", "0", "--target-fpr", "0.25"]
    result = runner.invoke(app, [*map(str, args), "--temperature", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "FPR (95% CI)" in result.stdout and "25.00% [" in result.stdout and "(1 of 4)" in result.stdout
    cfg, _, provenance = read_checkpoint(out)
    record = provenance["calibration"]
    assert (cfg.threshold, cfg.temperature) == (record["threshold"], record["temperature"])
    assert record["method"] == "target-fpr" and record["target_fpr"] == 0.25 and record["fpr"]["k"] == 1
    assert record["data"]["real"] == 4 and record["data"]["fake"] == 4 and record["data"]["layout"] == "univfd"
    assert provenance["source"] == "random init for tests"  # the original provenance is kept

    scan = runner.invoke(app, ["scan", str(tree), "--weights", str(out), "--workers", "0"])
    assert scan.exit_code == 0, scan.output
    rows = [json.loads(line) for line in scan.stdout.splitlines()]
    assert {r["threshold"] for r in rows} == {cfg.threshold}
    assert sum(r["verdict"] == "fake" for r in rows if "0_real" in r["path"]) == 1
    # the scan's score is sigmoid(raw logit / T)
    raw = load_detector(weights=tiny_weights, device="cpu")
    images = [raw.preprocess(random_image(230, 240 + 8 * i, seed=i)) for i in range(4)]
    expected = torch.sigmoid(raw.raw_logits(torch.stack(images)) / cfg.temperature).tolist()
    assert [r["score"] for r in rows[:4]] == pytest.approx(expected, abs=1e-6)
    explicit = runner.invoke(app, ["scan", str(tree), "--weights", str(out), "--workers", "0", "--threshold", "0.7"])
    assert {json.loads(line)["threshold"] for line in explicit.stdout.splitlines()} == {0.7}
    # the calibrated copy has the same tensors: its predictions come from the cache
    again = runner.invoke(app, ["eval", "--data", str(tree), "--weights", str(out), "--workers", "0"])
    assert again.exit_code == 0 and "scored 0 images" in again.stderr, again.output


def test_calibrate_cli_errors_and_dry_run(tree, tiny_weights, tmp_path):
    base = ["calibrate", "--data", str(tree), "--weights", str(tiny_weights), "--workers", "0"]
    for extra, message in (
        ([], "--target-fpr RATE or --balanced"),
        (["--balanced", "--target-fpr", "0.1"], "--target-fpr RATE or --balanced"),
        (["--balanced"], "give --out"),
        (["--balanced", "--out", str(tiny_weights)], "new file"),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 and message in result.stderr, result.output
    dry = runner.invoke(app, [*base, "--balanced", "--dry-run", "--out", str(tmp_path / "x.safetensors")])
    assert dry.exit_code == 0 and not (tmp_path / "x.safetensors").exists()


def test_official_weights_get_a_sidecar_that_loading_applies(tree, tiny_official_file):
    loaded = load_weights(tiny_official_file, "detector", ConvertOptions(feature_layers=(1, 2, 3)))
    detector = Detector.from_torch(loaded, device="cpu")
    dataset = load_dataset(tree)
    c = calibrate(np.array([0, 0, 1, 1]), np.array([-1.0, 0.5, 0.2, 2.0]), target_fpr=0.5, fit_temp=True)
    path = store_calibration(detector, calibration_record(c, detector, dataset), None)
    assert path == calibration_sidecar(tiny_official_file) and path.name.endswith(".pth.calibration.json")
    again = load_weights(tiny_official_file, "detector", ConvertOptions(feature_layers=(1, 2, 3)))
    assert (again.config.threshold, again.config.temperature) == (c.threshold, c.temperature)
    assert again.provenance["calibration"]["data"]["samples"] == 8
    assert Detector.from_torch(again, device="cpu").threshold == c.threshold
    assert Detector.from_torch(again, device="cpu", threshold=0.9).threshold == 0.9  # explicit wins
    with pytest.raises(ValueError, match="sidecar"):
        store_calibration(detector, calibration_record(c, detector, dataset), tree / "elsewhere.json")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "weights_sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="made for other weights"):
        load_weights(tiny_official_file, "detector", ConvertOptions(feature_layers=(1, 2, 3)))
    path.unlink()
