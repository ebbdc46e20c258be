"""Source attribution: the CLIP model, its training on toy generators, checkpoints, and the scan's source columns."""

from __future__ import annotations

import csv
import io
import json
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_image
from open_clip.model import CLIP
from PIL import Image
from test_train import smooth_image
from typer.testing import CliRunner

from forensix.attributor import load_attributor, p_fake
from forensix.cli import app
from forensix.datasets import Sample
from forensix.detector import load_detector
from forensix.imaging import decode_image
from forensix.inputs import InputSpec
from forensix.models.attribution import convert_openai_clip, open_clip_cfgs
from forensix.models.checkpoints import build_and_load, load_weights, read_checkpoint, save_checkpoint
from forensix.models.config import ModelConfig, PreprocessConfig, get_config
from forensix.models.factory import create_model
from forensix.pipeline import Scanner, ScanOptions
from forensix.report import COLUMNS
from forensix.train import TrainOptions, fit, prepare
from forensix.train.attribute import attribution_classes
from forensix.train.augment import Augment

runner = CliRunner()
CASTS = {"gen_a": (90, 0, 0), "gen_b": (0, 0, 90)}  # the two toy "generators": a red and a blue cast


pytestmark = pytest.mark.usefixtures("home")  # every test: a FORENSIX_HOME of its own (conftest)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """UnivFD layout, one subset per generator: {gen_a,gen_b}/{0_real,1_fake}; reals of both are class "real"."""
    root = tmp_path_factory.mktemp("attr")
    rng = np.random.default_rng(0)
    for gen, cast in CASTS.items():
        for label, name in ((0, "0_real"), (1, "1_fake")):
            (root / gen / name).mkdir(parents=True)
            for i in range(16):
                img = smooth_image(rng, False, (64, 64))
                img = np.clip(img * 0.6 + np.array(cast), 0, 255) if label else img
                Image.fromarray(img.astype(np.uint8)).save(root / gen / name / f"{i:02d}.png")
    return root


def options(**kw) -> TrainOptions:
    defaults = {"epochs": 5, "batch_size": 8, "lr": 5e-4, "weight_decay": 0.0, "augment": Augment.none()}
    return TrainOptions(**{**defaults, **kw})


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory):
    """Full fine-tuning of the tiny CLIP on the toy set: the run, its progress, the step reports, the folder."""
    out = tmp_path_factory.mktemp("run")
    run = prepare("attribute", toy, config="attribution-tiny", init="random", val_fraction=0.25, finetune="full")
    events: list[dict] = []
    done = fit(run.task, options(), out, run.provenance, report=events.append)
    return run, done, events, out


@pytest.fixture(scope="module")
def attributor(trained):
    return load_attributor(trained[3] / "best.safetensors", device="cpu")


# ------------------------------------------------------------------------------------------------
# Learning


def test_attribution_learns_three_toy_classes(trained):
    run, done, events, out = trained
    assert run.task.cfg.attribution.classes == ("real", "gen_a", "gen_b")
    assert len(run.task.val_samples) == 16  # a quarter of each class: 8 real, 4 + 4 generated
    ce = [e["ce"] for e in events if "ce" in e]
    assert np.mean(ce[-3:]) < 0.5 * np.mean(ce[:3])
    final = done.history[-1]
    assert final["attribution_acc"] >= 0.9 and final["acc"] >= 0.9 and final["ap"] >= 0.95
    cfg, _, provenance = read_checkpoint(out / "best.safetensors")
    assert cfg.arch == "attribution" and cfg.attribution.classes == ("real", "gen_a", "gen_b")
    assert provenance["finetune"] == "full" and provenance["recipe"]["task"] == "attribute"
    assert provenance["trained_on"]["train_classes"] == {"gen_a": 12, "gen_b": 12, "real": 24}


def test_the_best_checkpoint_attributes_as_validation_measured(trained, attributor):
    run, _, _, out = trained
    val = run.task.val_samples
    probs = attributor.probabilities([Image.open(s.path).convert("RGB") for s in val])
    truth = [s.source if s.label else "real" for s in val]
    accuracy = np.mean([source == t for (source, _), t in zip(attributor.top(probs), truth)])
    assert accuracy == pytest.approx(read_checkpoint(out / "best.safetensors")[2]["validation"]["attribution_acc"])


def test_lora_trains_only_adapters_on_both_towers_and_learns(tmp_path, toy):
    run = prepare("attribute", toy, config="attribution-tiny", init="random", val_fraction=0.25)
    trainable = [n for n, p in run.task.model.named_parameters() if p.requires_grad]
    assert all(".lora_" in n for n in trainable)
    assert any(n.startswith("backbone.visual.") for n in trainable)
    assert any(n.startswith("backbone.transformer.") for n in trainable)
    done = fit(run.task, options(lr=1e-2), tmp_path / "lora", run.provenance)
    assert done.history[-1]["attribution_acc"] >= 0.9
    merged = load_attributor(tmp_path / "lora" / "last.safetensors", device="cpu")  # LoRA merged on load
    assert not any(".lora_" in k for k in merged.backend.module.state_dict())
    x = torch.stack([merged.preprocess(Image.open(s.path).convert("RGB")) for s in run.task.val_samples])
    with torch.no_grad():
        unmerged = torch.softmax(run.task.model.eval()(x), dim=-1).numpy()
    assert np.abs(merged.probabilities(x) - unmerged).max() < 1e-5


# ------------------------------------------------------------------------------------------------
# The model


def test_probabilities_sum_to_one_and_p_fake_is_one_minus_p_real(attributor):
    probs = attributor.probabilities([random_image(90, 70, seed=i) for i in range(4)])
    assert probs.shape == (4, 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert np.allclose(p_fake(probs), probs[:, 1:].sum(axis=1), atol=1e-6)  # every class but "real"
    batch = torch.stack([attributor.preprocess(random_image(90, 70, seed=i)) for i in range(4)])
    with torch.no_grad():
        logits = attributor.logits(batch).double()
    real = logits[:, 0].exp() / logits.exp().sum(dim=1)  # softmax written out, in float64
    assert np.abs(p_fake(probs) - (1 - real.numpy())).max() < 1e-6
    assert np.ptp(p_fake(probs)) > 1e-3  # the images differ in P(fake): a constant would not pass


def test_text_embeddings_are_cached_and_equal_recomputed_ones(attributor, monkeypatch):
    model = attributor.backend.module
    calls = []
    encode_text = model.backbone.encode_text
    monkeypatch.setattr(model.backbone, "encode_text", lambda t: calls.append(1) or encode_text(t))
    model.text_cache = None  # as freshly loaded
    images = [random_image(80, 80, seed=i) for i in range(3)]
    first = attributor.probabilities(images)
    assert np.array_equal(attributor.probabilities(images), first) and len(calls) == 1  # not run per image
    with torch.no_grad():
        assert torch.equal(model.text_cache, model.encode_captions())
    cached = model.text_cache
    model.eval()
    attributor.probabilities(images)
    assert model.text_cache is cached and len(calls) == 2  # eval() changes no weight: the cache stays
    model.train()
    assert model.text_cache is None  # weights may change: never a stale cache
    model.eval()


def test_checkpoint_round_trip_keeps_the_classes(tmp_path):
    cfg = replace(get_config("attribution-tiny"), name="mine")
    cfg = replace(cfg, attribution=replace(cfg.attribution, classes=("real", "sdxl", "midjourney v6")))
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    torch.manual_seed(3)
    model = create_model(cfg).eval()
    save_checkpoint(tmp_path / "a.safetensors", cfg, model.state_dict(), {"source": "test"})
    read, state, provenance = read_checkpoint(tmp_path / "a.safetensors")
    assert read == cfg and provenance == {"source": "test"}
    loaded = build_and_load(read, state)
    assert loaded.captions == ("a real photo", "an image generated by sdxl", "an image generated by midjourney v6")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_openai_layout_weights_give_open_clips_embeddings():
    cfg = get_config("attribution-tiny")
    torch.manual_seed(0)
    reference = CLIP(*open_clip_cfgs(cfg), quick_gelu=True).eval()  # open_clip's own CLIP, fused attention
    for p in reference.parameters():
        p.data.normal_(0, 0.05)
    model = load_weights(create_model(cfg), convert_openai_clip(reference.state_dict())).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        image = reference.encode_image(x, normalize=True)
        text = reference.encode_text(model.tokenizer(list(model.captions)), normalize=True)
        assert (model.encode_image(x) - image).abs().max() < 1e-5
        assert (model.text_features() - text).abs().max() < 1e-5
        assert torch.allclose(model(x), reference.logit_scale.exp() * image @ text.T, atol=1e-4)


def test_the_full_size_config_is_open_clips_vit_l_14_quickgelu():
    cfg = get_config("attribution-vit-l-14")
    with torch.device("meta"):
        model = create_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == 427_616_513  # OpenAI CLIP ViT-L/14, both towers
    wrong = replace(cfg, vision=replace(cfg.vision, layers=12))
    with pytest.raises(ValueError, match="not open_clip's 'ViT-L-14-quickgelu'"):
        open_clip_cfgs(wrong)


def test_classes_are_real_then_the_training_generators():
    s = [Sample("a", 0, "x", "coco"), Sample("b", 1, "x", "sdxl"), Sample("c", 1, "x", "dalle")]
    assert attribution_classes(s, s[:2]) == ("real", "dalle", "sdxl")  # a real image's source is not a class
    with pytest.raises(ValueError, match="absent from the training data: midjourney"):
        attribution_classes(s, [Sample("d", 1, "x", "midjourney")])
    with pytest.raises(ValueError, match="real images and images of at least one generator"):
        attribution_classes(s[1:], [])
    with pytest.raises(ValueError, match="source 'real'"):
        attribution_classes([*s, Sample("e", 1, "x", "real")], [])


# ------------------------------------------------------------------------------------------------
# Scan


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    random_image(300, 240, seed=1).save(root / "wide.png")
    random_image(230, 410, seed=2).save(root / "tall.jpg", quality=95)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    buf = io.BytesIO()
    random_image(240, 250, seed=3).save(buf, "PNG")
    with zipfile.ZipFile(root / "set.zip", "w") as z:
        z.writestr("inner.png", buf.getvalue())
    return root


@pytest.fixture(scope="module")
def shared_preprocessing(tmp_path_factory) -> Path:
    """A random attributor preprocessing exactly as the tiny detector does: the detector's batch serves both."""
    cfg = get_config("attribution-tiny")
    cfg = replace(cfg, vision=replace(cfg.vision, image_size=224), preprocess=PreprocessConfig())
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("shared") / "attr224.safetensors"
    save_checkpoint(path, cfg, create_model(cfg).state_dict())
    return path


@pytest.mark.parametrize("which, workers", [("own", 0), ("own", 2), ("shared", 0)])
def test_scan_fills_source_for_every_decodable_row(photos, tiny_weights, trained, shared_preprocessing, which, workers):
    path = trained[3] / "best.safetensors" if which == "own" else shared_preprocessing
    attributor = load_attributor(path, device="cpu")
    detector = load_detector(weights=tiny_weights, device="cpu")
    assert (attributor.config.preprocess == detector.config.preprocess) == (which == "shared")
    spec = InputSpec.from_args([str(photos)])
    scanner = Scanner(spec, detector, ScanOptions(workers=workers, batch_size=2), attributor=attributor)
    rows = list(scanner)
    assert len(rows) == 4 and sum(r["verdict"] == "error" for r in rows) == 1
    for row in rows:
        if row["verdict"] == "error":
            assert row["source"] == "" and row["source_score"] is None
            continue
        data = zipfile.ZipFile(row["path"]).read(row["member"]) if row["member"] else Path(row["path"]).read_bytes()
        [(source, score)] = attributor.top(attributor.probabilities([decode_image(data).image]))
        assert row["source"] == source and row["source_score"] == pytest.approx(score, abs=1e-5)
    assert scanner.provenance()["attributor"]["classes"] == list(attributor.classes)


def test_a_cached_scan_with_an_attributor_attributes_every_row(photos, tiny_weights, shared_preprocessing, tmp_path):
    from forensix.cache import PredictionCache

    cache = PredictionCache(tmp_path / "predictions.sqlite")
    attributor = load_attributor(shared_preprocessing, device="cpu")
    detector = load_detector(weights=tiny_weights, device="cpu")
    spec = InputSpec.from_args([str(photos)])
    first = list(Scanner(spec, detector, ScanOptions(batch_size=2), attributor=attributor, cache=cache))
    again = Scanner(spec, detector, ScanOptions(batch_size=2), attributor=attributor, cache=cache)
    assert list(again) == first and len(cache) == 3  # written, but not read: the attributor needs the pixels
    assert again.stats.cached == 0 and all(r["source"] for r in first if r["verdict"] != "error")


def test_library_scan_takes_an_attributor(photos, tiny_weights, attributor):
    import forensix

    detector = forensix.load_detector(weights=tiny_weights, device="cpu")
    rows = list(forensix.scan([str(photos / "wide.png")], detector, attributor=attributor, workers=0))
    assert rows[0]["source"] in attributor.classes and 0 < rows[0]["source_score"] <= 1
    assert forensix.load_attributor(attributor.info.source, device="cpu").classes == attributor.classes


def test_cli_scan_writes_the_source_columns(tmp_path, photos, tiny_weights, trained):
    out, plain = tmp_path / "report.csv", tmp_path / "plain.csv"
    args = ["scan", str(photos), "--weights", str(tiny_weights), "--workers", "0"]
    result = runner.invoke(app, [*args, "--attributor", str(trained[3] / "best.safetensors"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(newline="")))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 4
    for row in rows:
        ok = row["verdict"] != "error"
        assert (row["source"] in ("real", "gen_a", "gen_b")) == ok and (row["source_score"] != "") == ok
    meta = json.loads((tmp_path / "report.csv.meta.json").read_text())
    assert meta["attributor"]["classes"] == ["real", "gen_a", "gen_b"]
    assert runner.invoke(app, [*args, "--out", str(plain)]).exit_code == 0
    assert all(r["source"] == r["source_score"] == "" for r in csv.DictReader(plain.open(newline="")))


# ------------------------------------------------------------------------------------------------
# Training CLI and bad options


def test_cli_trains_an_attributor(tmp_path, toy):
    args = ["train", "--task", "attribute", "--data", str(toy), "--out", str(tmp_path / "o"), "--config"]
    result = runner.invoke(app, [*args, "attribution-tiny", "--init", "random", "--epochs", "1", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "validation: epoch 1" in result.stderr and "attribution_acc" in result.stderr
    options = read_checkpoint(tmp_path / "o" / "last.safetensors")[2]["recipe"]["options"]
    assert options["lr"] == 5e-5 and options["weight_decay"] == 0.0  # the attribute recipe: Adam


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "attribute", "--finetune", "half"], "--finetune must be one of lora, full"),
        (["--task", "detect", "--finetune", "full"], "--finetune is for --task attribute"),
        (["--task", "attribute", "--init", "openai"], "forensix weights fetch clip-vit-l-14"),
        (["--task", "attribute", "--data", "REAL"], "real images and images of at least one generator"),
        (["--task", "attribute", "--config", "deeclip-tiny"], "config 'deeclip-tiny' is deeclip"),
    ],
)
def test_cli_train_errors_are_one_line_and_exit_2(tmp_path, toy, extra, message):
    only_real = tmp_path / "only_real"
    (only_real / "0_real").mkdir(parents=True)
    random_image(80, 80).save(only_real / "0_real" / "a.png")
    args = ["train", "--data", str(toy), "--out", str(tmp_path / "o"), "--config", "attribution-tiny", "--init"]
    args = [*args, "random", *[str(only_real) if a == "REAL" else a for a in extra]]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--attributor", "DETECTOR"], "not an attributor"),
        (["--attributor", "deeclip"], "not an attributor"),
        (["--attributor", "nope"], "unknown model"),
        (["--weights", "ATTRIBUTOR"], "an attributor, not a detector: use --attributor"),
    ],
)
def test_cli_scan_with_a_misplaced_attributor_exits_2(photos, tiny_weights, attributor, extra, message):
    subst = {"DETECTOR": str(tiny_weights), "ATTRIBUTOR": attributor.info.source}
    args = ["scan", str(photos), "--weights", str(tiny_weights), *[subst.get(a, a) for a in extra]]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------
# Evaluation


def test_eval_measures_attribution_per_subset_with_a_confusion_matrix(toy, attributor, tiny_weights, tmp_path):
    from forensix.datasets import load_dataset
    from forensix.eval import EvalOptions, evaluate

    data = tmp_path / "data"
    shutil.copytree(toy, data)
    for name, count in (("0_real", 2), ("1_fake", 3)):  # a generator the attributor never saw
        (data / "gen_c" / name).mkdir(parents=True)
        for i in range(count):
            shutil.copy(toy / "gen_a" / name / f"{i:02d}.png", data / "gen_c" / name / f"{i:02d}.png")
    (data / "gen_c" / "1_fake" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    dataset = load_dataset(data)
    detector = load_detector(weights=tiny_weights, device="cpu")
    result = evaluate(dataset, detector, attributor=attributor, options=EvalOptions(batch_size=5, workers=0))
    table = result.tables[0].attribution
    assert [r.subset for r in table.subsets] == ["gen_a", "gen_b", "gen_c"]
    # the oracle: the attributor on every readable image, one by one
    readable = [s for s in dataset.samples if not s.path.endswith("broken.png")]
    top = [attributor.top(attributor.probabilities([Image.open(s.path).convert("RGB")]))[0] for s in readable]
    predicted = {s.path: source for s, (source, _) in zip(readable, top)}
    for row in table.subsets:
        known = [s for s in readable if s.subset == row.subset and s.source_class in attributor.classes]
        assert row.images == len(known)
        assert row.acc == pytest.approx(np.mean([predicted[s.path] == s.source_class for s in known]))
    gen_c = table.subsets[2]
    assert (gen_c.images, gen_c.unknown, gen_c.unreadable) == (2, 3, 1)  # its reals count, its fakes can't
    assert sum(table.confusion["gen_c"].values()) == 3 and list(table.confusion["gen_c"]) == list(attributor.classes)
    reals = [predicted[s.path] for s in readable if not s.label]
    assert table.confusion["real"] == {c: reals.count(c) for c in attributor.classes}
    assert table.mean.acc == pytest.approx(np.mean([r.acc for r in table.subsets]))
    assert result.provenance["attributor"]["classes"] == list(attributor.classes)


def test_cli_eval_with_an_attributor_writes_its_tables(toy, trained, tiny_weights, tmp_path):
    out = tmp_path / "report"
    args = ["eval", "--data", str(toy), "--weights", str(tiny_weights), "--workers", "0", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--attributor", str(trained[3] / "best.safetensors"), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "unknown" in result.stdout and "true class" in result.stdout  # the two attribution tables (titles wrap)
    attribution = json.loads((out / "metrics.json").read_text())["perturbations"][0]["attribution"]
    assert [r["subset"] for r in attribution["subsets"]] == ["gen_a", "gen_b"] and attribution["mean"]["acc"] >= 0.5
    assert sum(sum(row.values()) for row in attribution["confusion"].values()) == 64
    assert "| true class | real | gen_a | gen_b |" in (out / "metrics.md").read_text()
