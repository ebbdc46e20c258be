"""The uncertain band end to end: the verdict rule, calibrate --target-fnr, scan --uncertain, exit codes,
resume, eval's coverage and accuracy, the ONNX sidecar."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import labelled_tree
from typer.testing import CliRunner

from forensix.calibrate import band_low_for_fnr, calibrate, calibration_record, store_calibration
from forensix.cli import EXIT_UNCERTAIN, EXIT_UNSCORED, app
from forensix.datasets import load_dataset
from forensix.detector import load_detector
from forensix.eval import detection_metrics
from forensix.models.checkpoints import read_checkpoint
from forensix.verdicts import check_band, in_band, parse_band, verdict

pytestmark = pytest.mark.usefixtures("home")
runner = CliRunner()


def test_the_verdict_rule_and_its_band():
    assert [verdict(s, 0.6) for s in (0.0, 0.59, 0.6, 1.0)] == ["real", "real", "fake", "fake"]
    assert [verdict(s, 0.6, 0.3) for s in (0.0, 0.29, 0.3, 0.59, 0.6)] == [
        "real",
        "real",
        "uncertain",
        "uncertain",
        "fake",
    ]
    assert in_band(np.array([0.1, 0.3, 0.5, 0.6]), 0.6, 0.3).tolist() == [False, True, True, False]
    assert not in_band(np.array([0.1, 0.5]), 0.6, None).any()
    assert verdict(0.5, 0.5, 0.5) == "fake"  # an empty band: [0.5, 0.5)
    assert parse_band("0.2,0.8") == (0.2, 0.8) and parse_band(" 0 , 1 ") == (0.0, 1.0)
    for bad in ("0.8,0.2", "0.2", "a,b", "0.2,nan", "-0.1,0.5", "0.2,1.5", "0.1,0.2,0.3"):
        with pytest.raises(ValueError, match="--uncertain"):
            parse_band(bad)
    for bad in (0.7, -0.1, math.nan, True, "0.2"):
        with pytest.raises(ValueError, match="band"):
            check_band(bad, 0.6)  # type: ignore[arg-type]


def test_band_low_for_fnr_is_the_brute_force_highest_edge():
    rng = np.random.default_rng(0)
    for _ in range(200):
        fake = np.round(rng.uniform(0, 1, int(rng.integers(1, 30))), 2)  # ties
        threshold = float(rng.uniform(0.3, 1.0))
        target = float(rng.choice([0.0, 0.05, 0.1, 0.25, 0.5, 1.0]))
        got = band_low_for_fnr(fake, target, threshold)
        candidates = [t for t in [*fake, threshold] if t <= threshold and np.mean(fake < t) <= target + 1e-12]
        assert got == max(candidates)
    with pytest.raises(ValueError, match="fake images"):
        band_low_for_fnr(np.array([]), 0.1, 0.5)


def test_calibrate_measures_the_band_on_the_calibration_data():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(400, int), np.ones(400, int)]
    logits = np.r_[rng.normal(-1, 1, 400), rng.normal(1, 1, 400)]
    c = calibrate(labels, logits, target_fpr=0.05, target_fnr=0.05)
    scores = 1 / (1 + np.exp(-logits.astype(np.float32)))
    assert c.band_low is not None and c.band_low < c.threshold
    assert c.fnr.k == int((scores[labels == 1] < c.band_low).sum()) and c.fnr.value <= 0.05
    assert c.tnr.k == int((scores[labels == 0] < c.band_low).sum())
    band = (scores >= c.band_low) & (scores < c.threshold)
    assert c.uncertain.k == band.sum() and c.uncertain.n == 800 and 0.2 < c.uncertain.value < 0.8
    decided = ~band
    right = ((scores >= c.threshold) == (labels == 1))[decided]
    assert (c.decided_accuracy.k, c.decided_accuracy.n) == (right.sum(), decided.sum())
    assert c.decided_accuracy.value > 0.9  # what the band buys: the threshold alone is right on ~70%
    separated = calibrate(np.array([0, 0, 1, 1]), np.array([-5.0, -4.0, 4.0, 5.0]), target_fpr=0.0, target_fnr=0.0)
    assert separated.band_low == separated.threshold and separated.uncertain.k == 0  # no band needed
    assert calibrate(labels, logits, target_fpr=0.05).band_low is None


@pytest.fixture
def tree(tmp_path) -> Path:
    return labelled_tree(tmp_path / "val", per_class=6)


def scan_rows(*args: str) -> tuple[list[dict], object]:
    result = runner.invoke(app, ["scan", *args, "--workers", "0"])
    rows = [json.loads(line) for line in result.stdout.splitlines()] if result.exit_code in (0, 1, 3, 4) else []
    return rows, result


def test_scan_uncertain_gives_three_verdicts_carries_the_band_and_gates(tree, tiny_weights):
    plain, _ = scan_rows(str(tree), "--weights", str(tiny_weights))
    scores = sorted(r["score"] for r in plain)
    low, high = scores[3], scores[8]  # 5 images in [low, high)
    rows, result = scan_rows(str(tree), "--weights", str(tiny_weights), "--uncertain", f"{low},{high}")
    assert result.exit_code == 0, result.output
    assert [r["score"] for r in rows] == [r["score"] for r in plain]
    assert [r["verdict"] for r in rows] == [verdict(r["score"], high, low) for r in rows]
    assert sum(r["verdict"] == "uncertain" for r in rows) == 5 and {(r["threshold"], r["band_low"]) for r in rows} == {
        (high, low)
    }
    assert "5 uncertain" in result.stderr
    assert all(r["band_low"] is None and r["verdict"] in ("real", "fake") for r in plain)  # no band: as before

    # --fail-on-fake: fake 1; else uncertain 4 (a gate fails closed) unless --uncertain-passes; else unscored 3.
    gate = [str(tree / "0_real"), "--weights", str(tiny_weights), "--fail-on-fake"]
    real_scores = sorted(r["score"] for r in plain if "0_real" in r["path"])
    above = f"{real_scores[0]},{min(1.0, real_scores[-1] + 1e-3)}"  # every real image in the band
    _, result = scan_rows(*gate, "--uncertain", above)
    assert result.exit_code == EXIT_UNCERTAIN, result.output
    (tree / "0_real" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    _, result = scan_rows(*gate, "--uncertain", above, "--uncertain-passes")
    assert result.exit_code == EXIT_UNSCORED, result.output
    _, result = scan_rows(*gate, "--uncertain", f"0,{real_scores[0]}")
    assert result.exit_code == 1, result.output
    for bad, message in (
        (["--uncertain", "0.6,0.2"], "LOW <= HIGH"),
        (["--uncertain", "0.2,0.6", "--threshold", "0.5"], "leave out --threshold"),
    ):
        _, result = scan_rows(*gate, *bad)
        assert result.exit_code == 2 and message in result.stderr, result.output


def test_resume_refuses_another_band(tree, tiny_weights, tmp_path):
    out = tmp_path / "r.csv"
    base = ["scan", str(tree), "--weights", str(tiny_weights), "--workers", "0", "--out", str(out)]
    assert runner.invoke(app, [*base, "--uncertain", "0.3,0.6"]).exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0].split(",")[:7] == ["path", "member", "sha256", "verdict", "score", "threshold", "band_low"]
    out.write_text("\r\n".join(lines[:5]) + "\r\n")  # as if interrupted after 4 rows
    for option, message in (
        (["--uncertain", "0.2,0.6"], "the uncertain band [0.3, 0.6), not [0.2, 0.6); pass --uncertain 0.3,0.6"),
        (["--threshold", "0.6"], "the uncertain band [0.3, 0.6), not none; pass --uncertain 0.3,0.6"),
    ):
        result = runner.invoke(app, [*base, "--resume", *option])
        assert result.exit_code == 2 and message in result.stderr, result.output
    result = runner.invoke(app, [*base, "--resume", "--uncertain", "0.3,0.6"])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 13


def test_a_calibrated_band_is_stored_loaded_scanned_and_evaluated(tree, tiny_weights, tmp_path):
    out = tmp_path / "band.safetensors"
    args = ["calibrate", "--data", str(tree), "--weights", str(tiny_weights), "--workers", "0"]
    result = runner.invoke(app, [*args, "--target-fpr", "0.0", "--target-fnr", "0.34", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "uncertain band" in result.stdout and "accuracy outside it" in result.stdout
    cfg, _, provenance = read_checkpoint(out)
    record = provenance["calibration"]
    assert cfg.band_low == record["band_low"] < cfg.threshold == record["threshold"]
    assert record["target_fnr"] == 0.34 and record["fnr"]["n"] == 6 and record["fnr"]["k"] <= 2
    detector = load_detector(weights=out)
    assert (detector.threshold, detector.band_low) == (cfg.threshold, cfg.band_low)
    assert load_detector(weights=out, threshold=0.5).band_low is None  # an explicit threshold: no band

    rows, result = scan_rows(str(tree), "--weights", str(out))
    assert result.exit_code == 0 and {r["band_low"] for r in rows} == {cfg.band_low}
    uncertain = [r for r in rows if r["verdict"] == "uncertain"]
    assert len(uncertain) == record["uncertain"]["k"] > 0

    evaluated = runner.invoke(
        app, ["eval", "--data", str(tree), "--weights", str(out), "--workers", "0", "--out", str(tmp_path / "ev")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["band_low"] == cfg.band_low
    mean = metrics["perturbations"][0]["mean"]
    assert mean["uncertain"] == pytest.approx(record["uncertain"]["value"])  # one subset: the same images
    assert mean["decided_acc"] == pytest.approx(record["decided_accuracy"]["value"])
    assert "uncertain band [" in (tmp_path / "ev" / "metrics.md").read_text()

    # A report written without a band, resumed with these weights: --threshold (no band) resumes it.
    plain_out = tmp_path / "plain.csv"
    base = ["scan", str(tree), "--weights", str(out), "--workers", "0", "--out", str(plain_out)]
    assert runner.invoke(app, [*base, "--threshold", str(cfg.threshold)]).exit_code == 0
    refused = runner.invoke(app, [*base, "--resume"])
    assert refused.exit_code == 2 and f"written with no uncertain band, not [{cfg.band_low}" in refused.stderr
    assert f"pass --threshold {cfg.threshold} to resume it" in refused.stderr
    assert runner.invoke(app, [*base, "--resume", "--threshold", str(cfg.threshold)]).exit_code == 0

    # Calibrating again without --target-fnr removes the band.
    again = tmp_path / "again.safetensors"
    assert runner.invoke(app, [*args, "--target-fpr", "0.0", "--out", str(again)]).exit_code == 0
    assert read_checkpoint(again)[0].band_low is None


def test_detection_metrics_count_the_band_and_the_accuracy_outside_it():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.45, 0.7, 0.4, 0.55, 0.9])
    m = detection_metrics(labels, scores, 0.6, band_low=0.4)
    assert m.uncertain == pytest.approx(3 / 6)  # 0.45, 0.4, 0.55
    assert m.decided_acc == pytest.approx(2 / 3)  # 0.1 right, 0.7 wrong, 0.9 right
    assert m.acc == pytest.approx(3 / 6)  # the threshold's own accuracy is unchanged by the band
    plain = detection_metrics(labels, scores, 0.6)
    assert plain.uncertain is None and plain.decided_acc is None


def test_an_onnx_model_takes_its_band_from_a_sidecar(tree, tiny_weights, tmp_path):
    pytest.importorskip("onnxruntime")
    onnx = tmp_path / "tiny.onnx"
    result = runner.invoke(app, ["export-onnx", "--weights", str(tiny_weights), "--out", str(onnx)])
    assert result.exit_code == 0, result.output
    detector = load_detector(weights=onnx)
    c = calibrate(np.array([0, 0, 1, 1]), np.array([-2.0, 1.0, 0.5, 2.0]), target_fpr=0.0, target_fnr=0.0)
    store_calibration(detector, calibration_record(c, detector, load_dataset(tree)), None)
    again = load_detector(weights=onnx)
    assert (again.threshold, again.band_low) == (c.threshold, c.band_low) and c.band_low < c.threshold
    shutil.copy(onnx, tmp_path / "copy.onnx")  # a sidecar belongs to its own file
    assert load_detector(weights=tmp_path / "copy.onnx").band_low is None
    # exported with a band, the file says so in its own metadata too
    banded = tmp_path / "banded.safetensors"
    record = {**calibration_record(c, detector, load_dataset(tree)), "band_low": c.band_low}
    store_calibration(load_detector(weights=tiny_weights), record, banded)
    again_onnx = tmp_path / "banded.onnx"
    assert runner.invoke(app, ["export-onnx", "--weights", str(banded), "--out", str(again_onnx)]).exit_code == 0
    import onnx as onnx_lib

    meta = {p.key: p.value for p in onnx_lib.load(str(again_onnx)).metadata_props}
    assert json.loads(meta["band_low"]) == c.band_low and load_detector(weights=again_onnx).band_low == c.band_low
