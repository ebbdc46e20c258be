"""forensix train: toy tasks a tiny model can learn, the loss, triplets, augmentation, resume, the CLI."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from forensix.cli import app
from forensix.datasets import Sample
from forensix.detector import load_detector
from forensix.localizer import load_localizer
from forensix.models.checkpoints import read_checkpoint
from forensix.models.config import PreprocessConfig
from forensix.stages.records import IMAGE, Record
from forensix.train import TrainOptions, fit, prepare, split_samples
from forensix.train.augment import Augment
from forensix.train.data import TrainDataset, TripletSampler
from forensix.train.losses import deeclip_loss, triplet_loss
from forensix.train.tasks import collate_triplets

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("home")  # every test: a FORENSIX_HOME of its own (conftest)


def smooth_image(rng: np.random.Generator, fake: bool, size: tuple[int, int] | None = None) -> np.ndarray:
    """Smooth random colour fields; the "generated" ones carry a green cast a tiny model can learn."""
    h, w = size or tuple(rng.integers(224, 256, size=2))
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    ph = rng.uniform(0, 6, 3)
    img = (np.stack([np.sin(6 * x + ph[0]), np.cos(5 * y + ph[1]), np.sin(4 * (x + y) + ph[2])], -1) * 0.5 + 0.5) * 255
    if fake:
        img = img * 0.6 + np.array([0, 90, 0])
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """A UnivFD-layout set: toy/{0_real,1_fake}, 16 images each."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    for label, name in ((0, "0_real"), (1, "1_fake")):
        (root / "toy" / name).mkdir(parents=True)
        for i in range(16):
            Image.fromarray(smooth_image(rng, bool(label)).astype(np.uint8)).save(root / "toy" / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def dolos(tmp_path_factory) -> Path:
    """A Dolos-layout set: a green-cast square pasted into each image; masks stored inverted (0 = fake)."""
    root = tmp_path_factory.mktemp("dolos") / "inpainted"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        img = smooth_image(rng, False, (240, 240))
        top, left = rng.integers(20, 120, size=2)
        img[top : top + 100, left : left + 100] = smooth_image(rng, True, (100, 100))
        mask = np.full((240, 240), 255, np.uint8)
        mask[top : top + 100, left : left + 100] = 0
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:02d}.png")
    return root.parent


def options(**kw) -> TrainOptions:
    return TrainOptions(**{"epochs": 3, "batch_size": 4, "lr": 1e-3, "augment": Augment.none(), **kw})


# ------------------------------------------------------------------------------------------------
# Learning


def test_detector_learns_the_toy_task_and_its_checkpoint_scans(tmp_path, toy):
    run = prepare("detect", toy, config="deeclip-tiny", init="random", val_fraction=0.25)
    events: list[dict] = []
    # The logit is a linear map of a mean of unit vectors: it grows slowly, hence a high learning rate.
    done = fit(run.task, options(lr=1e-2), tmp_path / "out", run.provenance, report=events.append)
    bce = [e["bce"] for e in events if "bce" in e]
    assert done.epoch == 3 and done.step == len(bce) == 18  # 24 anchors, 4 per batch: 6 steps an epoch
    assert np.mean(bce[-4:]) < 0.75 * np.mean(bce[:4])
    final = done.history[-1]
    assert final["ap"] == 1.0 and final["acc"] >= 0.9
    cfg, _, provenance = read_checkpoint(tmp_path / "out" / "last.safetensors")
    assert cfg.name == "deeclip-tiny" and provenance["seed"] == 0
    assert provenance["trained_on"]["train_counts"] == {"real": 12, "fake": 12}
    assert provenance["recipe"]["task"] == "detect" and provenance["recipe"]["options"]["lr"] == 1e-2
    assert [json.loads(line)["epoch"] for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
    ]
    detector = load_detector(weights=tmp_path / "out" / "last.safetensors", device="cpu")
    val = run.task.val_samples
    scores = detector.score([Image.open(s.path) for s in val])
    assert np.mean((scores >= 0.5) == np.array([s.label == 1 for s in val])) == final["acc"]


def test_localizer_learns_where_the_pasted_region_is(tmp_path, dolos):
    run = prepare("localize", dolos, config="declip-tiny", init="random", val_fraction=0.25)
    assert all(s.mask for s in run.task.train_samples) and len(run.task.val_samples) == 3
    before = run.task.validate(torch.device("cpu"), _eval_options())
    done = fit(run.task, options(epochs=6, batch_size=3), tmp_path / "loc", run.provenance)
    assert done.history[-1]["iou"] > before["iou"] + 0.1
    localizer = load_localizer(tmp_path / "loc" / "best.safetensors", device="cpu")
    assert localizer.config.arch == "declip"


def _eval_options():
    from forensix.eval import EvalOptions

    return EvalOptions(batch_size=8)


# ------------------------------------------------------------------------------------------------
# Resume and determinism


def test_a_resumed_run_is_the_run_that_never_stopped(tmp_path, toy):
    straight = prepare("detect", toy, config="deeclip-tiny", init="random", seed=3)
    fit(straight.task, options(epochs=2), tmp_path / "a", straight.provenance)
    first = prepare("detect", toy, config="deeclip-tiny", init="random", seed=3)
    one = fit(first.task, options(epochs=1), tmp_path / "b", first.provenance)
    again = prepare("detect", toy, config="deeclip-tiny", init="random", seed=3)
    resumed = fit(again.task, options(epochs=2), tmp_path / "b", again.provenance, resume=True)
    assert resumed.step == 2 * one.step and resumed.epoch == 2 and len(resumed.history) == 2
    a = read_checkpoint(tmp_path / "a" / "last.safetensors")[1]
    b = read_checkpoint(tmp_path / "b" / "last.safetensors")[1]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with safe_open(str(tmp_path / "b" / "training_state.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["progress"])["step"] == resumed.step


def test_resume_without_a_run_is_a_clear_error(tmp_path, toy):
    run = prepare("detect", toy, config="deeclip-tiny", init="random")
    with pytest.raises(ValueError, match="nothing to resume"):
        fit(run.task, options(), tmp_path / "empty", run.provenance, resume=True)


def test_continuing_from_a_checkpoint_keeps_lora_trainable(tmp_path, toy):
    run = prepare("detect", toy, config="deeclip-tiny", init="random")
    fit(run.task, options(epochs=1), tmp_path / "a", run.provenance)
    more = prepare("detect", toy, config="deeclip-tiny", init=str(tmp_path / "a" / "last.safetensors"))
    trainable = {n for n, p in more.task.model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in run.task.model.named_parameters() if p.requires_grad}
    assert any(".lora_A." in n for n in trainable) and not any(
        n.endswith("q_proj.base_layer.weight") for n in trainable
    )


# ------------------------------------------------------------------------------------------------
# Loss, triplets, augmentation


def test_bce_pairs_every_logit_with_its_own_label():
    emb = F.normalize(torch.randn(6, 5, 4), dim=-1)
    logits = torch.tensor([3.0, -2.0, 0.5, 1.0, -1.0, 2.0])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    total, parts = deeclip_loss(emb, logits, labels)
    z, y = logits.numpy(), labels.numpy()
    expected_bce = np.mean(np.where(y == 1, np.log1p(np.exp(-z)), np.log1p(np.exp(z))))
    assert parts["bce"] == pytest.approx(expected_bce, rel=1e-5)
    assert total.item() == pytest.approx(parts["triplet"] + 2 * expected_bce, rel=1e-5)


def test_triplet_loss_is_the_authors_per_channel_hinge():
    a = torch.zeros(1, 2, 2)
    p = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # d(a, p) per channel: [2, 0]
    n = torch.tensor([[[0.0, 0.0], [0.0, 3.0]]])  # d(a, n) per channel: [0, 9]
    assert triplet_loss(a, p, n, margin=1.0).item() == pytest.approx((max(0, 2 - 0 + 1) + max(0, 0 - 9 + 1)) / 2)


def test_triplets_pair_each_anchor_with_its_class_and_the_other():
    labels = [0, 0, 0, 1, 1, 1, 1]
    sampler = TripletSampler(labels, batch_size=3, seed=5)
    batches = sampler.batches()
    anchors = [i for b in batches for i in b[: len(b) // 3]]
    assert sorted(anchors) == list(range(7))  # every sample is an anchor once per epoch
    for b in batches:
        k = len(b) // 3
        for a, pos, neg in zip(b[:k], b[k : 2 * k], b[2 * k :]):
            assert labels[pos] == labels[a] != labels[neg]
    assert TripletSampler(labels, 3, seed=5).batches() == batches
    sampler.set_epoch(1)
    assert sampler.batches() != batches
    halves = [TripletSampler(labels, 3, seed=5, rank=r, world=2).batches() for r in (0, 1)]
    assert set(map(tuple, halves[0] + halves[1])) == set(map(tuple, batches))  # 3 batches, one repeated


def test_one_class_is_not_enough_for_triplets():
    with pytest.raises(ValueError, match="real and fake"):
        TripletSampler([1, 1, 1], batch_size=2)


def test_a_triplet_that_lost_an_image_is_dropped_whole():
    t = torch.zeros(3, 4, 4)
    items = [
        Record(i, inputs={IMAGE: t} if i != 4 else {}, label=label, error="" if i != 4 else "broken")
        for i, label in enumerate([0, 1, 1, 0, 0, 1])
    ]  # anchors 0,1 | positives 2,3 | negatives 4,5
    batch = collate_triplets(items)
    assert batch.indices == [1, 3, 5] and batch.labels.tolist() == [1.0, 0.0, 1.0]
    assert batch.failed == [(4, "broken")]


def test_augmentation_is_a_function_of_seed_epoch_and_index(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "a.png"
    Image.fromarray(smooth_image(rng, False).astype(np.uint8)).save(path)
    samples = [Sample(str(path), 0, "s", "real")] * 4
    ds = TrainDataset(samples, PreprocessConfig(), Augment(jpeg_p=1.0, blur_p=0.5, crop_p=1.0), seed=1)
    a, b = ds[2].inputs[IMAGE], ds[2].inputs[IMAGE]
    assert torch.equal(a, b) and not torch.equal(a, ds[3].inputs[IMAGE])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[2].inputs[IMAGE])
    plain = TrainDataset(samples, PreprocessConfig(), Augment.none())[0].inputs[IMAGE]
    assert not torch.equal(plain, a)


def test_geometric_augmentation_moves_the_mask_with_the_image():
    # The image's grey level is its column; the mask flags the columns left of 50.
    image = Image.fromarray(np.tile(np.arange(200, dtype=np.uint8), (100, 1))).convert("RGB")
    mask = Image.fromarray(np.tile((np.arange(200) < 50).astype(np.uint8) * 255, (100, 1)))
    for seed in range(20):
        out, m = Augment(jpeg_p=0, blur_p=0, rescale_p=1.0, crop_p=1.0, flip_p=0.5)(image, mask, random.Random(seed))
        grey, flagged = np.asarray(out.convert("L"), dtype=float), np.asarray(m) > 127
        assert m.size == out.size
        assert np.mean(grey[flagged] < 55) > 0.95 and np.mean(grey[~flagged] > 45) > 0.95


def test_validation_split_is_per_class_and_deterministic():
    samples = [Sample(f"{i}.png", i % 2, "s", "x") for i in range(40)]
    train, val = split_samples(samples, 0.25, seed=0)
    assert len(val) == 10 and sum(s.label for s in val) == 5 and not set(train) & set(val)
    assert split_samples(samples, 0.25, seed=0) == (train, val)


# ------------------------------------------------------------------------------------------------
# CLI


def test_cli_trains_and_reports(tmp_path, toy):
    out = tmp_path / "cli"
    args = ["train", "--task", "detect", "--data", str(toy), "--out", str(out), "--config", "deeclip-tiny"]
    result = runner.invoke(app, [*args, "--init", "random", "--epochs", "1", "--workers", "0", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    assert "validation: epoch 1" in result.stderr and "8,869 trainable parameters" in result.stderr
    assert (out / "best.safetensors").is_file() and (out / "training_state.safetensors").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "segment"], "unknown task"),
        (["--task", "detect", "--init", "openai"], "forensix weights fetch clip-vit-l-14"),
        (["--task", "localize", "--config", "declip-tiny", "--init", "random"], "no fake images with masks"),
        (["--task", "detect", "--config", "declip-tiny", "--init", "random"], "'declip-tiny' is declip, a localizer"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path, toy, extra, message):
    result = runner.invoke(app, ["train", "--data", str(toy), "--out", str(tmp_path / "o"), *extra])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


@pytest.mark.slow
def test_torchrun_with_two_processes_trains_one_model(tmp_path, toy):
    """DistributedDataParallel on the CPU (gloo): both processes step together, rank 0 alone writes."""
    out = tmp_path / "ddp"
    args = ["--task", "detect", "--data", str(toy), "--out", str(out), "--config", "deeclip-tiny", "--init", "random"]
    args += ["--epochs", "1", "--batch-size", "3", "--lr", "1e-2", "--workers", "0", "--no-augment"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "forensix", "train", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("trained 1 epochs") == 1  # rank 0 speaks for all
    _, _, provenance = read_checkpoint(out / "last.safetensors")
    # 28 anchors (2 per class held out) in 10 batches of up to 3 triplets, 5 per process: 5 steps together.
    assert provenance["recipe"]["world_size"] == 2 and provenance["step"] == 5


def test_every_process_gets_the_same_number_of_batches():
    labels = [0, 1] * 5  # 10 anchors, batches of 3: 4 batches
    shares = [TripletSampler(labels, 3, seed=0, rank=r, world=3).batches() for r in range(3)]
    assert [len(s) for s in shares] == [2, 2, 2]  # padded with the epoch's first batches
    anchors = {i for s in shares for b in s for i in b[: len(b) // 3]}
    assert anchors == set(range(10))


def test_openai_init_copies_the_clip_tower_and_nothing_else(home, toy, own_backbones):
    """--init openai: the frozen tower from OpenAI's CLIP file (fused q/k/v split), fresh heads, LoRA B = 0."""
    from conftest import pin_placed
    from reference_declip import RefCLIP
    from safetensors.torch import save_file

    from forensix.models.config import get_config
    from forensix.train import build_model
    from forensix.weights import WeightsRefused

    torch.manual_seed(9)
    clip = {k: v.detach().clone().contiguous() for k, v in RefCLIP(64, 4, 1, 14, 224, 48).state_dict().items()}
    home.mkdir(parents=True, exist_ok=True)
    save_file(clip, str(home / "openai_clip_vit_l_14.safetensors"))
    pin_placed(home / "openai_clip_vit_l_14.safetensors")
    _, model = build_model("detect", get_config("deeclip-tiny"), "openai")
    state = model.state_dict()
    q, k, v = clip["visual.transformer.resblocks.1.attn.in_proj_weight"].chunk(3)
    assert torch.equal(state["backbone.visual.transformer.resblocks.1.attn.k_proj.base_layer.weight"], k)
    assert torch.equal(state["backbone.visual.conv1.weight"], clip["visual.conv1.weight"])
    assert not any("resblocks.3." in key for key in state)  # the unread 4th block: neither built nor loaded
    assert all(not p.requires_grad for n, p in model.backbone.named_parameters() if ".lora_" not in n)
    del clip["visual.ln_pre.weight"]
    save_file(clip, str(home / "openai_clip_vit_l_14.safetensors"))
    with pytest.raises(WeightsRefused, match="differs from the sha256 pinned by hand"):
        build_model("detect", get_config("deeclip-tiny"), "openai")  # changed since it was pinned
    pin_placed(home / "openai_clip_vit_l_14.safetensors")
    with pytest.raises(ValueError, match=r"OpenAI CLIP \(backbone\): missing key visual.ln_pre.weight"):
        build_model("detect", get_config("deeclip-tiny"), "openai")


@pytest.mark.slow
def test_a_sample_that_crashes_its_worker_costs_only_itself(tmp_path, toy, monkeypatch):
    """A decoder's segfault on one training image: the run goes on and counts that image as unreadable."""
    from conftest import decoder_crashing_on

    from forensix.stages import records

    run = prepare("detect", toy, config="deeclip-tiny", init="random", val_fraction=0.25)
    bomb = run.task.train_samples[0]
    crashing = decoder_crashing_on(Path(bomb.path).read_bytes(), records.decode_image)
    monkeypatch.setattr(records, "decode_image", crashing)
    done = fit(run.task, options(epochs=1, workers=1), tmp_path / "out", run.provenance)
    assert done.epoch == 1 and done.step == 6  # 24 anchors, 4 per batch: every batch trained
    (entry,) = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert entry["unreadable"] >= 1  # the bomb, once per batch it was drawn into
