"""A model family defined here, in the test, touching no file of forensix: registered, its authors'
checkpoint imported, scanned, evaluated and exported to ONNX.

The toy family, "patchmean": a CLIP ViT read at one block, the mean of its patch tokens, a linear
head, times a family setting ``scale``. Its "authors" release a dict ``{"arch_tag": "patchmean-v1",
"layer": N, "state": {...}}`` whose state holds an OpenAI-layout vision tower under ``encoder.`` and
the head as ``head.w``/``head.b``. The reference scores come from open_clip's own VisionTransformer,
built independently of forensix's backbone.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import random_image
from open_clip.transformer import QuickGELU, VisionTransformer
from sklearn.metrics import average_precision_score
from torch import nn
from typer.testing import CliRunner

from forensix.cli import app
from forensix.detector import load_detector
from forensix.models import registry
from forensix.models.backbone import ClipVisionTower, split_in_proj
from forensix.models.checkpoints import CheckpointError
from forensix.models.clip_weights import openai_vision
from forensix.models.config import ModelConfig, PreprocessConfig, get_config
from forensix.models.registry import CheckpointFormat, ConvertOptions, Family, get_family, register_family

runner = CliRunner()
LAYER = 2  # hidden_states numbering: the output of block 1
SIZE = dict(image_size=32, patch_size=8, width=32, layers=3, heads=2, mlp_ratio=2.0, output_dim=16)


class PatchMean(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ClipVisionTower(cfg.vision, blocks=cfg.blocks_needed)
        self.fc = nn.Linear(cfg.vision.width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (patches,) = self.backbone.hidden_states(x, self.cfg.feature_layers)  # class token dropped
        return self.fc(patches.mean(dim=1)).squeeze(-1) * self.cfg.setting("scale")


def check(cfg: ModelConfig) -> None:
    if len(cfg.feature_layers) != 1:
        raise ValueError("patchmean reads one feature layer")


def convert(obj: Mapping[str, Any], options: ConvertOptions, source: str) -> tuple[ModelConfig, dict]:
    state = obj["state"]
    visual = {"visual." + k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    if set(state) - {"head.w", "head.b"} - {k for k in state if k.startswith("encoder.")}:
        raise CheckpointError(f"{source}: unexpected keys")
    vision = openai_vision(visual, SIZE["heads"], source)  # the release is known to use 2 heads
    layer = int(obj["layer"])
    cfg = ModelConfig(
        name="patchmean-custom",
        arch="patchmean",
        vision=vision,
        feature_layers=(layer,),
        preprocess=PreprocessConfig(mode="squash", resize=vision.image_size, crop=vision.image_size),
    )
    out = {}
    for key, value in split_in_proj(visual, "visual.").items():
        block = key.split(".")[3] if key.startswith("visual.transformer.resblocks.") else None
        if key.startswith(("visual.ln_post", "visual.proj")) or (block is not None and int(block) >= layer):
            continue  # after the feature block: never run
        out["backbone." + key] = value
    out["fc.weight"], out["fc.bias"] = state["head.w"], state["head.b"]
    return cfg, out


FAMILY = register_family(
    Family(
        arch="patchmean",
        kind="detector",
        build=PatchMean,
        check=check,
        blocks_needed=lambda cfg: cfg.feature_layers[0],
        settings={"scale": 1.0},
        formats=(
            CheckpointFormat(
                name="patchmean-v1",
                recognise=lambda obj: obj.get("arch_tag") == "patchmean-v1",
                convert=convert,
                recipe=lambda obj: {"layer": obj["layer"]},
            ),
        ),
    )
)


@pytest.fixture(scope="module")
def authors(tmp_path_factory):
    """The authors' model (open_clip's VisionTransformer + a head) and its release file."""
    torch.manual_seed(7)
    vit = VisionTransformer(**SIZE, act_layer=QuickGELU).eval()
    head = nn.Linear(SIZE["width"], 1)
    nn.init.normal_(head.weight, std=4.0)  # a head that spreads the scores
    state = {"encoder." + k: v for k, v in vit.state_dict().items()}
    state |= {"head.w": head.weight.detach().clone(), "head.b": head.bias.detach().clone()}
    path = tmp_path_factory.mktemp("authors") / "patchmean_release.pth"
    torch.save({"arch_tag": "patchmean-v1", "layer": LAYER, "state": state}, path)
    return vit, head, path


def reference_logits(vit: VisionTransformer, head: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The authors' forward, with open_clip's modules: patch embedding, class token, ln_pre, LAYER blocks."""
    with torch.no_grad():
        h = vit.conv1(x).flatten(2).transpose(1, 2)
        h = torch.cat([vit.class_embedding.expand(len(h), 1, -1), h], dim=1) + vit.positional_embedding
        h = vit.ln_pre(h)
        for block in vit.transformer.resblocks[:LAYER]:
            h = block(h)
        return head(h[:, 1:].mean(dim=1)).squeeze(-1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-photos")
    for i in range(8):
        random_image(40 + 9 * i, 36 + 5 * i, seed=100 + i).save(root / f"{i}.png")
    return root


def test_the_family_is_known_to_the_factory_and_configs(tmp_path):
    assert get_family("patchmean") is FAMILY
    cfg = ModelConfig.from_json(
        json.dumps({"name": "patchmean-toy", "arch": "patchmean", "feature_layers": [3], "settings": {"scale": 2.0}})
    )
    assert cfg.kind == "detector" and cfg.blocks_needed == 3 and cfg.setting("scale") == 2.0
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="patchmean reads one feature layer"):
        ModelConfig(name="x", arch="patchmean", feature_layers=(1, 2))
    with pytest.raises(ValueError, match="patchmean has no settings \\['depth'\\]"):
        ModelConfig(name="x", arch="patchmean", feature_layers=(1,), settings={"depth": 3})
    with pytest.raises(ValueError, match="patchmean has no LoRA settings"):
        ModelConfig.from_dict({"name": "x", "arch": "patchmean", "feature_layers": [1], "lora": {"r": 4}})


def test_its_authors_checkpoint_scores_like_the_authors_model(authors, photos):
    vit, head, path = authors
    detector = load_detector(weights=path, device="cpu")
    assert detector.info.provenance["source_format"] == "patchmean-v1" and detector.config.arch == "patchmean"
    images = [random_image(40 + 9 * i, 36 + 5 * i, seed=100 + i) for i in range(8)]
    x = detector.stack(images)
    want = torch.sigmoid(reference_logits(vit, head, x)).numpy()
    got = detector.score(images)
    assert want.max() - want.min() > 0.2  # scores that differ from image to image, far beyond the tolerance
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_import_scan_eval_and_onnx_touch_no_other_file(authors, photos, tmp_path):
    vit, head, path = authors
    imported = tmp_path / "patchmean.safetensors"
    result = runner.invoke(app, ["weights", "import", str(path), "--out", str(imported)])
    assert result.exit_code == 0, result.output

    report = tmp_path / "report.csv"
    result = runner.invoke(
        app, ["scan", str(photos), "--weights", str(imported), "--workers", "1", "--out", str(report)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(report.open()))
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == [f"{i}.png" for i in range(8)]
    detector = load_detector(weights=imported, device="cpu")
    x = torch.stack([detector.preprocess(random_image(40 + 9 * i, 36 + 5 * i, seed=100 + i)) for i in range(8)])
    want = torch.sigmoid(reference_logits(vit, head, x)).numpy()
    np.testing.assert_allclose([float(r["score"]) for r in rows], want, atol=1e-5)
    assert {r["model"] for r in rows} == {detector.name} and detector.name.startswith("patchmean-custom@")

    data = tmp_path / "data"
    for label, folder in enumerate(("0_real", "1_fake")):
        (data / "toy" / folder).mkdir(parents=True)
        for i in range(4):
            random_image(40 + 9 * i, 36, seed=10 * label + i).save(data / "toy" / folder / f"{i}.png")
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        ["eval", "--data", str(data), "--weights", str(imported), "--workers", "0", "--out", str(out), "--no-plots"],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    clean = metrics["perturbations"][0]["subsets"][0]
    assert clean["subset"] == "toy" and clean["real"] == 4 and clean["fake"] == 4
    labelled = [(label, random_image(40 + 9 * i, 36, seed=10 * label + i)) for label in (0, 1) for i in range(4)]
    scores = detector.score([im for _, im in labelled])
    assert clean["ap"] == pytest.approx(average_precision_score([lab for lab, _ in labelled], scores), abs=1e-6)

    onnx = tmp_path / "patchmean.onnx"
    result = runner.invoke(app, ["export-onnx", "--weights", str(imported), "--out", str(onnx)])
    assert result.exit_code == 0, result.output
    by_onnx = load_detector(weights=onnx, device="cpu")
    assert by_onnx.backend.name == "onnx" and by_onnx.name == detector.name
    np.testing.assert_allclose(by_onnx.score(list(x)), want, atol=1e-4)


def test_a_config_of_the_family_from_its_own_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "patchmean-tiny.json").write_text(
        json.dumps({"name": "patchmean-tiny", "arch": "patchmean", "vision": SIZE, "feature_layers": [LAYER]})
    )
    monkeypatch.setitem(registry._FAMILIES, "patchmean", replace(FAMILY, configs=folder))
    cfg = get_config("patchmean-tiny")
    assert cfg.vision.width == 32 and cfg.blocks_needed == LAYER
