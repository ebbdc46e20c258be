"""forensix eval: metrics against hand-computed values and scikit-learn, perturbations, the cache, the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import decoder_crashing_on, random_image
from PIL import Image
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, roc_auc_score
from test_timeouts import LIMIT_TEXT, slow_jpeg
from typer.testing import CliRunner

from forensix.cache import PredictionCache, model_key
from forensix.cli import app
from forensix.datasets import load_dataset
from forensix.detector import load_detector
from forensix.eval import (
    EvalOptions,
    Perturbation,
    detection_metrics,
    evaluate,
    mean_row,
    parse_perturbations,
    predict,
    scores_from_logits,
)

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("home")  # every test: a FORENSIX_HOME of its own (conftest)


@pytest.fixture
def tree(tmp_path) -> Path:
    """A UnivFD tree: two subsets of 3 real + 3 fake small images, a non-image and a broken file."""
    root = tmp_path / "data"
    for s, subset in enumerate(("gan", "diffusion")):
        for label, folder in enumerate(("0_real", "1_fake")):
            (root / subset / folder).mkdir(parents=True)
            for i in range(3):
                random_image(230 + 10 * i, 240, seed=100 * s + 10 * label + i).save(root / subset / folder / f"{i}.png")
    (root / "gan" / "1_fake" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    (root / "gan" / "0_real" / "notes.txt").write_text("text")
    return root


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_equal_hand_computed_values():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.6, 0.4, 0.9])
    m = detection_metrics(labels, scores, 0.5, "toy")
    # reals: 0.1 right, 0.6 wrong; fakes: 0.4 wrong, 0.9 right
    assert (m.real, m.fake, m.real_acc, m.fake_acc, m.acc) == (2, 2, 0.5, 0.5, 0.5)
    # ranking 0.9(F) 0.6(R) 0.4(F) 0.1(R): AP = 1/2 * 1 + 1/2 * 2/3; AUC = 3 of 4 pairs ordered right
    assert m.ap == pytest.approx(0.5 + 1 / 3) and m.auc == pytest.approx(0.75)
    # thresholds 0.9 and 0.4 both get 3 of 4 right; the higher one is reported
    assert m.best_acc == pytest.approx(0.75) and m.best_threshold == pytest.approx(0.9)
    # the threshold is inclusive: a score equal to it is fake
    assert detection_metrics(labels, scores, 0.4).fake_acc == 1.0
    # no real flagged only above 0.6: the fake at 0.9 is caught, the one at 0.4 not
    assert m.tpr_at_1pct_fpr == 0.5
    # one image per bin: the mean of |label - score| = (0.1 + 0.6 + 0.6 + 0.1) / 4
    assert m.ece == pytest.approx(0.35) and m.flipped is None


def test_flipped_verdicts_against_the_clean_pass():
    labels, scores = np.array([0, 1, 1]), np.array([0.6, 0.4, 0.9])
    # image 0 turned fake, image 1 turned real, image 2 unread in the clean pass (left out)
    assert detection_metrics(labels, scores, 0.5, clean_scores=np.array([0.4, 0.6, np.nan])).flipped == 1.0
    assert detection_metrics(labels, scores, 0.5, clean_scores=np.array([0.7, 0.3, 0.95])).flipped == 0.0
    one_of_three = detection_metrics(labels, scores, 0.5, clean_scores=np.array([0.7, 0.6, 0.95])).flipped
    assert one_of_three == pytest.approx(1 / 3)
    assert detection_metrics(labels, scores, 0.5, clean_scores=np.full(3, np.nan)).flipped is None


def test_metrics_equal_scikit_learn_on_random_predictions():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = 1 / (1 + np.exp(-(rng.normal(size=500) + 1.2 * labels)))
    m = detection_metrics(labels, scores, 0.5)
    assert m.ap == pytest.approx(average_precision_score(labels, scores))
    assert m.auc == pytest.approx(roc_auc_score(labels, scores))
    assert m.acc == pytest.approx(np.mean((scores >= 0.5) == labels))
    brute = max(np.mean((scores >= t) == labels) for t in np.append(scores, np.inf))
    assert m.best_acc == pytest.approx(brute)
    assert np.mean((scores >= m.best_threshold) == labels) == pytest.approx(brute)
    real, fake = scores[labels == 0], scores[labels == 1]
    allowed = [t for t in np.append(scores, np.inf) if np.mean(real >= t) <= 0.01]
    assert m.tpr_at_1pct_fpr == pytest.approx(max(np.mean(fake >= t) for t in allowed))
    # ECE from scikit-learn's reliability curve, weighted by the images in each (non-empty) bin
    fraction_fake, mean_score = calibration_curve(labels, scores, n_bins=15, strategy="uniform")
    counts = np.histogram(scores, bins=15, range=(0, 1))[0]
    weights = counts[counts > 0] / len(scores)
    assert m.ece == pytest.approx(float(np.sum(weights * np.abs(fraction_fake - mean_score))))


def test_one_class_subsets_and_the_mean_row():
    only_fake = detection_metrics(np.array([1, 1, 1]), np.array([0.2, 0.7, 0.8]), 0.5, "f")
    assert only_fake.fake_acc == pytest.approx(2 / 3) and only_fake.real_acc is None
    assert only_fake.ap is None and only_fake.auc is None and only_fake.best_acc is None
    both = detection_metrics(np.array([0, 1]), np.array([0.2, 0.7]), 0.5, "b")
    mean = mean_row([only_fake, both])
    assert (mean.subset, mean.real, mean.fake) == ("mean", 1, 4)
    assert mean.acc == pytest.approx((2 / 3 + 1) / 2) and mean.real_acc == 1.0 and mean.ap == 1.0


# --- perturbations ----------------------------------------------------------------------------


def test_parse_perturbations():
    ps = parse_perturbations(["jpeg=95,75", "resize=0.5", "blur=1,2", "jpeg=95"])
    assert [p.name for p in ps] == ["none", "jpeg=95", "jpeg=75", "resize=0.5", "blur=1", "blur=2"]
    for bad in ("jpeg", "jpeg=101", "jpeg=7.5", "resize=0", "blur=x", "noise=1"):
        with pytest.raises(ValueError):
            parse_perturbations([bad])


def test_jpeg_reencodes_at_the_given_quality():
    image = random_image(64, 48, seed=3)
    for quality, luma_dc in ((50, 16), (95, 2)):  # libjpeg: standard table entry 16 scaled by (200 - 2q)%
        out = Perturbation("jpeg", quality)(image)
        assert out.format == "JPEG" and out.quantization[0][0] == luma_dc
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        assert np.array_equal(np.asarray(out), np.asarray(Image.open(buffer).convert("RGB")))
    err50 = np.abs(np.asarray(Perturbation("jpeg", 50)(image), float) - np.asarray(image, float)).mean()
    err95 = np.abs(np.asarray(Perturbation("jpeg", 95)(image), float) - np.asarray(image, float)).mean()
    assert err50 > err95 > 0


def test_resize_and_blur_change_pixels_as_specified():
    image = random_image(101, 50, seed=4)
    half = Perturbation("resize", 0.5)(image)
    assert half.size == (50, 25)
    assert np.array_equal(np.asarray(half), np.asarray(image.resize((50, 25), Image.Resampling.BICUBIC)))
    # A bright vertical line blurred with sigma 2: the profile across it is a Gaussian of std 2.
    line = np.zeros((41, 81, 3), np.uint8)
    line[:, 40] = 255
    blurred = np.asarray(Perturbation("blur", 2)(Image.fromarray(line)), float)[20, :, 0]
    x = np.arange(81) - 40
    assert np.sqrt((blurred * x**2).sum() / blurred.sum()) == pytest.approx(2.0, rel=0.05)
    assert blurred.sum() == pytest.approx(255, rel=0.02)
    flat = Image.new("RGB", (30, 30), (90, 120, 200))
    assert np.array_equal(np.asarray(Perturbation("blur", 1)(flat)), np.asarray(flat))


# --- prediction, cache, eval ------------------------------------------------------------------


def count_calls(detector) -> list[int]:
    calls = []
    original = detector.raw_logits

    def counted(batch):
        calls.append(len(batch))
        return original(batch)

    detector.raw_logits = counted
    return calls


def test_cache_avoids_rescoring_and_the_table_equals_a_recomputation(tree, tiny_weights, tmp_path):
    dataset = load_dataset(tree)
    detector = load_detector(weights=tiny_weights, device="cpu")
    cache = PredictionCache(tmp_path / "cache" / "p.sqlite")
    calls = count_calls(detector)
    perturbations = [Perturbation(), Perturbation("jpeg", 75)]
    first = evaluate(dataset, detector, perturbations, EvalOptions(batch_size=4), cache)
    assert sum(calls) == 2 * 12 and first.tables[0].predictions.scored == 12  # 13 files, one broken
    assert len(cache) == 24
    calls.clear()
    second = evaluate(dataset, detector, perturbations, EvalOptions(batch_size=4, workers=2), cache)
    assert calls == [] and second.tables[1].predictions.scored == 0
    for a, b in zip(first.tables, second.tables):
        assert np.array_equal(a.predictions.logits, b.predictions.logits, equal_nan=True)
        assert [vars(r) for r in a.subsets] == [vars(r) for r in b.subsets]
    # jpeg changes the inputs, so the logits differ from the clean ones
    assert not np.allclose(first.tables[0].predictions.logits[:5], first.tables[1].predictions.logits[:5])

    # Recompute the clean table from what the cache holds.
    key = model_key(detector)
    clean = first.tables[0]
    for row in clean.subsets:
        mine = [(i, s) for i, s in enumerate(dataset.samples) if s.subset == row.subset]
        got = [(s.label, cache.get(clean.predictions.sha256[i], key, "none")) for i, s in mine]
        labels = np.array([lab for lab, logit in got if logit is not None])
        logits = np.array([logit for _, logit in got if logit is not None])
        expected = detection_metrics(labels, scores_from_logits(logits, 1.0), 0.5, row.subset, len(mine) - len(labels))
        assert vars(row) == vars(expected)
    assert [r.unreadable for r in clean.subsets] == [0, 1]  # diffusion, gan
    errors = [e for e in clean.predictions.errors if e]
    assert len(errors) == 1 and "decode" in errors[0]


def test_scores_match_the_detector(tree, tiny_weights):
    dataset = load_dataset(tree / "diffusion")
    detector = load_detector(weights=tiny_weights, device="cpu")
    p = predict(dataset.samples, detector, options=EvalOptions(batch_size=2, workers=2))  # decoded in workers
    images = [Image.open(s.path) for s in dataset.samples]
    # batches of 2 here, one of 6 there: equal up to float rounding
    np.testing.assert_allclose(scores_from_logits(p.logits, 1.0), detector.score(images), atol=1e-6)


@pytest.mark.slow
def test_a_sample_that_crashes_its_decoder_is_an_error_and_eval_goes_on(tree, tiny_weights, monkeypatch):
    import forensix.stages.records as records

    samples = load_dataset(tree).samples
    detector = load_detector(weights=tiny_weights, device="cpu")
    options = EvalOptions(batch_size=2, workers=2)
    plain = predict(samples, detector, options=options)
    bomb = 7
    crashing = decoder_crashing_on(Path(samples[bomb].path).read_bytes(), records.decode_image)
    monkeypatch.setattr(records, "decode_image", crashing)
    crashed = predict(samples, detector, options=options)
    assert crashed.errors[bomb] == "cannot decode image: the process reading it was killed by SIGSEGV"
    assert crashed.sha256 == plain.sha256 and np.isnan(crashed.logits[bomb])
    others = np.arange(len(samples)) != bomb
    np.testing.assert_allclose(crashed.logits[others], plain.logits[others], atol=1e-6)  # NaN where plain has NaN
    assert crashed.errors[:bomb] + crashed.errors[bomb + 1 :] == plain.errors[:bomb] + plain.errors[bomb + 1 :]


@pytest.mark.parametrize("command", [["eval", "--no-plots"], ["calibrate", "--target-fpr", "0.1", "--dry-run"]])
def test_eval_and_calibrate_give_each_image_a_time_budget(tree, tiny_weights, command):
    (tree / "gan" / "0_real" / "slow.jpg").write_bytes(slow_jpeg())  # about 4 s to decode
    args = [*command, "--data", tree, "--weights", tiny_weights, "--workers", "0", "--decode-timeout", "0.2"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert f"slow.jpg: decoding took longer than {LIMIT_TEXT}" in result.stderr
    assert "2 images could not be read or scored" in result.stderr  # with broken.png


def test_eval_cli_writes_every_output(tree, tiny_weights, tmp_path):
    out = tmp_path / "report"
    args = ["eval", "--data", tree, "--weights", tiny_weights, "--workers", "0", "--out", out]
    result = runner.invoke(app, [*map(str, args), "--perturb", "jpeg=50", "--perturb", "resize=0.5"])
    assert result.exit_code == 0, result.output
    assert "none" in result.stdout and "jpeg=50" in result.stdout and "mean" in result.stdout
    assert "univfd layout, 13 images" in result.stderr and "1 images could not be read" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [p["name"] for p in metrics["perturbations"]] == ["none", "jpeg=50", "resize=0.5"]
    assert metrics["dataset"]["subsets"] == {"diffusion": {"real": 3, "fake": 3}, "gan": {"real": 3, "fake": 4}}
    clean = metrics["perturbations"][0]
    for row in [*clean["subsets"], clean["mean"]]:
        assert all(row[k] is None or 0 <= row[k] <= 1 for k in ("real_acc", "fake_acc", "acc", "ap", "auc"))
    # metrics.json agrees with recomputing from predictions.csv
    preds = [r for r in csv.DictReader((out / "predictions.csv").open()) if r["perturbation"] == "none"]
    gan = [r for r in preds if r["subset"] == "gan" and r["score"]]
    labels, scores = np.array([int(r["label"]) for r in gan]), np.array([float(r["score"]) for r in gan])
    expected = detection_metrics(labels, scores, 0.5)
    row = next(r for r in clean["subsets"] if r["subset"] == "gan")
    assert (row["ap"], row["acc"], row["unreadable"]) == (expected.ap, expected.acc, 1)
    assert row["ece"] == pytest.approx(expected.ece) and row["flipped"] is None
    # flipped under jpeg=50: verdicts compared with the clean pass's, image by image
    every = list(csv.DictReader((out / "predictions.csv").open()))
    verdicts = {(r["path"], r["perturbation"]): float(r["score"]) >= 0.5 for r in every if r["score"]}
    gan_paths = {r["path"] for r in gan}
    flips = [verdicts[(path, "jpeg=50")] != verdicts[(path, "none")] for path in gan_paths]
    jpeg_gan = next(r for r in metrics["perturbations"][1]["subsets"] if r["subset"] == "gan")
    assert jpeg_gan["flipped"] == pytest.approx(np.mean(flips))
    assert [e["perturbation"] for e in metrics["errors"]] == ["none", "jpeg=50", "resize=0.5"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 3 * 3 and rows[2]["subset"] == "mean"
    assert "## jpeg=50" in (out / "metrics.md").read_text()
    for name in ("roc_gan.png", "hist_gan.png", "roc_diffusion.png", "hist_diffusion.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the second run is served from the default cache, under $FORENSIX_HOME
    again = runner.invoke(app, [*map(str, args[:-2]), "--perturb", "jpeg=50"])
    assert again.exit_code == 0 and "scored 0 images" in again.stderr


def test_eval_cli_usage_errors(tree, tiny_weights, tmp_path):
    base = ["eval", "--weights", str(tiny_weights), "--workers", "0"]
    for extra, message in (
        (["--data", str(tmp_path / "nope")], "no such file"),
        (["--data", str(tree), "--perturb", "jpeg=500"], "jpeg quality"),
        (["--data", str(tree), "--layout", "genimage"], "GenImage"),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 and message in result.stderr, result.output


@pytest.fixture
def tiny_localizer(tmp_path) -> Path:
    from forensix.models.checkpoints import save_checkpoint
    from forensix.models.config import get_config
    from forensix.models.factory import create_model

    torch.manual_seed(2)
    cfg = get_config("declip-tiny")
    path = tmp_path / "declip-tiny.safetensors"
    save_checkpoint(path, cfg, create_model(cfg).state_dict())
    return path


def test_localization_metrics_on_a_dolos_tree(tmp_path, tiny_weights, tiny_localizer):
    from forensix.localizer import load_localizer
    from forensix.mask_metrics import load_mask, score_mask

    root = tmp_path / "dolos"
    for i in range(3):
        for folder in ("images", "masks"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        random_image(96, 80, seed=i).save(root / "images" / f"{i}.png")
        mask = np.full((80, 96), 255, np.uint8)
        mask[10 + 5 * i : 50, 20:70] = 0  # stored inverted: 0 = manipulated
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    (root / "images" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    Image.new("L", (96, 80), 0).save(root / "masks" / "3.png")
    out = tmp_path / "report"
    args = ["eval", "--data", root, "--weights", tiny_weights, "--localizer", tiny_localizer, "--workers", "0"]
    result = runner.invoke(app, [*map(str, args), "--out", str(out), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "pixel AP" in result.stdout and "…" not in result.stdout
    loc = json.loads((out / "metrics.json").read_text())["perturbations"][0]["localization"]
    assert loc["subsets"][0]["images"] == 3 and loc["subsets"][0]["unreadable"] == 1
    localizer = load_localizer(tiny_localizer, device="cpu")
    probs = localizer.probabilities([Image.open(root / "images" / f"{i}.png") for i in range(3)])
    scores = [score_mask(p, load_mask(root / "masks" / f"{i}.png", inverted=True)) for i, p in enumerate(probs)]
    for key in ("iou", "f1", "f1_best", "ap"):
        assert loc["mean"][key] == pytest.approx(np.mean([getattr(s, key) for s in scores]), abs=1e-6)
    (tmp_path / "list.csv").write_text("dolos/images/0.png,1\n")
    no_masks = runner.invoke(app, [*map(str, [*args[:2], tmp_path / "list.csv", *args[3:]])])
    assert no_masks.exit_code == 2 and "needs images with masks" in no_masks.stderr, no_masks.output


def test_eval_csvs_take_any_name_and_run_no_formula(tiny_weights, tmp_path):
    """As a scan's CSV (issue 14): a subset named like a formula, a file name that is not UTF-8."""
    root = tmp_path / "data"
    subset = "=HYPERLINK(1)"
    for label, folder in enumerate(("0_real", "1_fake")):
        (root / subset / folder).mkdir(parents=True)
        for i in range(2):
            random_image(64, 64, seed=10 * label + i).save(root / subset / folder / f"{i}.png")
    random_image(64, 64, seed=7).save(os.fsdecode(os.fsencode(root / subset / "0_real") + b"/bad\xff.png"), "PNG")
    out = tmp_path / "report"
    args = ["eval", "--data", root, "--weights", tiny_weights, "--workers", "0", "--out", out, "--no-plots"]
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    preds = list(csv.DictReader((out / "predictions.csv").open(encoding="utf-8")))
    assert {r["subset"] for r in preds} == {"'" + subset}
    assert sum(r["path"].endswith("/bad\\xff.png") for r in preds) == 1 and all(r["score"] for r in preds)
    metrics = list(csv.DictReader((out / "metrics.csv").open(encoding="utf-8")))
    assert [r["subset"] for r in metrics] == ["'" + subset, "mean"]


# ------------------------------------------------------------------------------------------------
# --embeddings: t-SNE maps of the embedding the head scores


def test_the_embedding_is_the_authors_pooled_embedding_and_the_head_scores_it(
    tmp_path, tiny_official_file, tiny_reference, images
):
    """DeeCLIP's embedding, against the authors' architecture built independently (transformers + peft):
    the mean over tokens of the normalised projected fused tokens; their fc of it is the logit."""
    from forensix.convert import import_checkpoint

    weights = tmp_path / "tiny.safetensors"
    import_checkpoint(tiny_official_file, weights, feature_layers=(1, 2, 3), lora_alpha=8.0)
    detector = load_detector(weights=weights, device="cpu")
    x = detector.stack(images[:4])
    ref = tiny_reference
    with torch.no_grad():
        hidden = ref.clip_model.base(pixel_values=x, output_hidden_states=True).hidden_states
        tokens = [hidden[i][:, 1:] for i in ref.feature_layers]
        e = ref.clip_model.visual_projection(ref.mmfuser(torch.cat(tokens[:-1], dim=1), tokens[-1]))
        pooled = (e / e.norm(dim=-1, keepdim=True)).mean(dim=1)
        expected_logits = ref.clip_model.fc(pooled).squeeze(-1)
        ours = detector.embeddings(x)
        head = detector.backend.module.head(ours)
    assert ours.shape == pooled.shape and (ours - pooled).abs().max().item() <= 1e-5
    assert (head - detector.raw_logits(x)).abs().max().item() <= 1e-6  # the head scores this very embedding
    assert (head - expected_logits).abs().max().item() <= 1e-4
    assert (pooled[0] - pooled[1]).abs().max().item() > 1e-3  # images differ: the comparison can fail


def test_eval_embeddings_writes_a_map_per_subset_and_one_for_all(tree, tiny_weights, tmp_path):
    out = tmp_path / "report"
    args = ["eval", "--data", tree, "--weights", tiny_weights, "--workers", "0", "--out", out]
    result = runner.invoke(app, [*map(str, args), "--embeddings", "--embeddings-max", "6", "--no-plots"])
    assert result.exit_code == 0, result.output
    stems = {"diffusion": "tsne_diffusion", "gan": "tsne_gan", "all": "tsne"}
    tables = {name: list(csv.DictReader((out / f"{stem}.csv").open())) for name, stem in stems.items()}
    assert all((out / f"{stem}.png").stat().st_size > 1000 for stem in stems.values())
    diffusion, gan, every = tables["diffusion"], tables["gan"], tables["all"]
    assert sorted(int(r["label"]) for r in diffusion) == [0, 0, 0, 1, 1, 1]  # all six: under the cap
    assert len(gan) == 5  # 3 real and 3 of the 4 fakes drawn, one of them unreadable
    assert sorted(r["path"] for r in every) == sorted(r["path"] for r in diffusion + gan)
    assert all(np.isfinite([float(r["x"]), float(r["y"])]).all() for r in every)
    again = tmp_path / "again"
    runner.invoke(app, [*map(str, args[:-1]), str(again), "--embeddings", "--embeddings-max", "6", "--no-plots"])
    assert (again / "tsne.csv").read_text() == (out / "tsne.csv").read_text()  # seeded: the same map
    result = runner.invoke(app, [*map(str, args[:-2]), "--embeddings"])
    assert result.exit_code == 2 and "--embeddings writes its maps to --out" in result.output


def test_embeddings_subsample_is_balanced_and_bounded():
    from forensix.datasets import Sample
    from forensix.eval.embeddings import pick

    samples = [Sample(f"r{i}", 0, "a", "real") for i in range(50)] + [Sample(f"f{i}", 1, "a", "gan") for i in range(7)]
    samples += [Sample(f"s{i}", i % 2, "b", "x") for i in range(4)]
    picked = pick(samples, 20, seed=3)
    labels = [samples[i].label for i in picked["a"]]
    assert len(labels) == 20 and labels.count(1) == 7  # the fakes all in, the rest of the quota real
    assert len(picked["b"]) == 4 and list(picked["a"]) == sorted(picked["a"])
    assert list(pick(samples, 20, seed=3)["a"]) == list(picked["a"])


def test_embedding_maps_skip_what_cannot_be_mapped(tmp_path, tiny_weights):
    """A subset with too few readable images has no map (the CLI says so); nothing readable at all is no
    map, not a crash; a subset named 'all' keeps its own files beside the map of all subsets."""
    from forensix.datasets import Dataset, Sample
    from forensix.eval.embeddings import embedding_maps, write_embedding_maps

    detector = load_detector(weights=tiny_weights, device="cpu")
    paths = []
    for i in range(8):
        path = tmp_path / f"{i}.png"
        random_image(40, 40, seed=i).save(path)
        paths.append(str(path))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    samples = [Sample(p, i % 2, "all", "x") for i, p in enumerate(paths[:6])]
    samples += [Sample(p, i % 2, "few", "x") for i, p in enumerate(paths[6:])]
    dataset = Dataset(str(tmp_path), "list", samples)
    maps = embedding_maps(dataset, detector, max_per_subset=10)
    assert [m.subset for m in maps] == ["all", "all subsets"] and [len(m.indices) for m in maps] == [6, 8]
    written = write_embedding_maps(maps, dataset, tmp_path / "out")
    assert sorted(p.name for p in written) == ["tsne.csv", "tsne.png", "tsne_all.csv", "tsne_all.png"]
    unreadable = Dataset(str(tmp_path), "list", [Sample(str(broken), i % 2, "x", "x") for i in range(6)])
    assert embedding_maps(unreadable, detector) == []
