"""ONNX export and the onnxruntime backend: parity with PyTorch, metadata, scans, errors (CPU provider, tiny models)."""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_spread, random_image
from PIL import Image
from tiny_models import tiny_attributor_file, tiny_localizer_file
from typer.testing import CliRunner

import forensix
from forensix import onnx_export
from forensix.cli import app
from forensix.detector import load_detector
from forensix.imaging import preprocess
from forensix.loading import load_weights
from forensix.models.checkpoints import CheckpointError, save_checkpoint
from forensix.models.config import PreprocessConfig, ResNetConfig, get_config
from forensix.models.factory import create_model
from forensix.onnx_backend import METADATA_KEYS, MissingDependency, open_onnx, require
from forensix.onnx_export import ExportCheckFailed, export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("home")  # every test: a FORENSIX_HOME of its own (conftest)


@pytest.fixture(scope="module")
def exported(tiny_weights, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "deeclip-tiny.onnx"
    loaded = load_weights(tiny_weights, "detector")
    with torch.inference_mode():
        assert_spread(loaded.model(onnx_export.check_batch(loaded.config)), 1e-4)  # the logits the check compares
    result = export_onnx(loaded, path)
    assert result.max_diff is not None and result.max_diff <= 1e-4 and result.check_inputs == 4
    return path


@pytest.fixture(scope="module")
def tiny_localizer(tmp_path_factory) -> Path:
    return tiny_localizer_file(tmp_path_factory.mktemp("localizer") / "declip-tiny.safetensors")


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for i, (w, h) in enumerate([(300, 240), (230, 410), (224, 224), (640, 480), (260, 250)]):
        random_image(w, h, seed=i).save(root / f"img{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return root


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def batch(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, 224, 224)).astype(np.float32))


def graph_ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


# ------------------------------------------------------------------------------------------------
# Export


@pytest.mark.parametrize("n", [1, 5])
def test_fp32_export_matches_pytorch_at_any_batch_size(exported, tiny_weights, n):
    model = load_weights(tiny_weights, "detector").model
    x = batch(n, seed=n)
    (got,) = session(exported).run(["logits"], {"pixel_values": x.numpy()})
    with torch.inference_mode():
        want = model(x).numpy()
    if n > 1:
        assert_spread(want, 1e-4)
    assert got.shape == (n,) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4


def test_graph_has_a_symbolic_batch_axis_and_only_the_blocks_it_needs(exported):
    (inp,) = session(exported).get_inputs()
    assert inp.name == "pixel_values" and inp.shape == ["batch", 3, 224, 224]
    # deeclip-tiny: 4 layers, but hidden states 1..3 need 3 blocks: ln_pre + 2 per block + the fuser's 3.
    assert graph_ops(exported).count("LayerNormalization") == 1 + 2 * 3 + 3


def test_metadata_round_trips(exported, tiny_weights):
    loaded = load_weights(tiny_weights, "detector")
    meta = session(exported).get_modelmeta().custom_metadata_map
    assert set(METADATA_KEYS) <= set(meta)
    assert meta["format"] == "forensix" and meta["kind"] == "detector" and meta["precision"] == "fp32"
    assert meta["model_name"] == "deeclip-tiny" and meta["weights_sha256"] == loaded.sha256
    assert json.loads(meta["preprocess"]) == json.loads(json.dumps(asdict(loaded.config.preprocess)))
    assert json.loads(meta["threshold"]) == 0.5 and json.loads(meta["temperature"]) == 1.0
    assert meta["forensix_version"] == forensix.__version__
    _, opened = open_onnx(exported, device="cpu")
    assert opened.config == loaded.config and opened.name == loaded.name and opened.sha256 == loaded.sha256
    assert opened.provenance["source"] == "random init for tests"
    assert opened.provenance["onnx"]["file"] == exported.name and opened.provenance["onnx"]["precision"] == "fp32"


def test_lora_is_merged_into_the_exported_weights(tmp_path):
    torch.manual_seed(3)
    cfg = get_config("deeclip-tiny")
    model = create_model(cfg, with_lora=True).eval()
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)  # peft starts B at zero: make the adapters count
    weights = tmp_path / "with-lora.safetensors"
    save_checkpoint(weights, cfg, model.state_dict())
    out = tmp_path / "merged.onnx"
    export_onnx(load_weights(weights, "detector"), out)
    x = batch(3)
    with torch.inference_mode():
        want = model(x).numpy()  # the unmerged peft model
    (got,) = session(out).run(None, {"pixel_values": x.numpy()})
    assert np.abs(got - want).max() <= 1e-4
    assert not [i.name for i in onnx.load(str(out)).graph.initializer if "lora" in i.name]


def test_fp16_export_scores_within_5e_3_and_keeps_fragile_ops_in_fp32(tiny_weights, exported, images, tmp_path):
    out = tmp_path / "fp16.onnx"
    loaded = load_weights(tiny_weights, "detector")
    result = export_onnx(loaded, out, precision="fp16")
    assert result.compared == "score" and result.max_diff <= 1e-2
    assert out.stat().st_size < 0.7 * exported.stat().st_size  # the weights are stored in fp16
    # onnxruntime's CPU provider runs fp16 graphs (ops without fp16 kernels get casts): check the scores,
    # on images whose scores spread far wider than the tolerance (the export check's own barely differ).
    x = torch.stack([preprocess(image, loaded.config.preprocess) for image in images])
    with torch.inference_mode():
        want = torch.sigmoid(loaded.model(x)).numpy()
    assert_spread(want, 5e-3)
    (got,) = session(out).run(["logits"], {"pixel_values": x.numpy()})
    assert got.dtype == np.float32 and np.abs(1 / (1 + np.exp(-got)) - want).max() <= 5e-3
    # ... and that LayerNorm, Softmax and the L2 norm compute in fp32.
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(out)))
    g = proto.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types |= {i.name: i.data_type for i in g.initializer}
    fragile = [n for n in g.node if n.op_type in onnx_export.FP32_OPS]
    assert {n.op_type for n in fragile} == {"LayerNormalization", "Softmax", "ReduceL2"}
    assert all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in fragile)
    assert onnx.TensorProto.FLOAT16 in types.values()


def test_a_failed_check_writes_nothing_and_exits_2(tiny_weights, tmp_path, monkeypatch):
    out = tmp_path / "bad.onnx"
    monkeypatch.setattr(onnx_export, "compare", lambda *a, **k: 0.5)  # as if the graph computed something else
    with pytest.raises(ExportCheckFailed, match="not written"):
        export_onnx(load_weights(tiny_weights, "detector"), out)
    out.write_bytes(b"an earlier export")
    result = runner.invoke(app, ["export-onnx", "--weights", str(tiny_weights), "--out", str(out)])
    assert result.exit_code == 2 and "max |Δ logit| 0.5 > 0.0001" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["bad.onnx"]  # home: $FORENSIX_HOME
    result = runner.invoke(app, ["export-onnx", "--weights", str(tiny_weights), "--out", str(out), "--no-check"])
    assert result.exit_code == 0 and "not checked" in result.stderr
    assert open_onnx(out, device="cpu")[1].config.kind == "detector"


@pytest.mark.parametrize("cnn", [None, ResNetConfig(layers=(1, 2, 1, 1), width=8)], ids=["vit", "vit+rn50"])
def test_localizer_export_matches_pytorch(tmp_path, cnn):
    weights = tiny_localizer_file(tmp_path / "declip-tiny.safetensors", cnn)
    loaded = load_weights(weights, "localizer")
    out = tmp_path / "declip-tiny.onnx"
    result = runner.invoke(app, ["export-onnx", "--localizer", str(weights), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "localizer" in result.stderr and "mask logit" in result.stderr
    x = batch(3, seed=5)
    (got,) = session(out).run(["mask_logits"], {"pixel_values": x.numpy()})
    with torch.inference_mode():
        want = loaded.model(x).numpy()
    assert_spread(want, 1e-4)
    assert got.shape == (3, 256, 256) and np.abs(got - want).max() <= 1e-4
    backend, opened = open_onnx(out, device="cpu")
    assert opened.config.kind == "localizer" and opened.config == loaded.config and backend.output == "mask_logits"


@pytest.fixture(scope="module")
def tiny_attributor(tmp_path_factory) -> Path:
    return tiny_attributor_file(tmp_path_factory.mktemp("attributor"))


def test_attributor_export_matches_pytorch_without_its_text_tower(tmp_path, tiny_attributor):
    from forensix.attributor import load_attributor

    loaded = load_weights(tiny_attributor, "attributor")
    out = tmp_path / "attributor.onnx"
    result = runner.invoke(app, ["export-onnx", "--attributor", str(tiny_attributor), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "attributor" in result.stderr and "class logit" in result.stderr
    x = torch.from_numpy(np.random.default_rng(4).standard_normal((3, 3, 64, 64)).astype(np.float32))
    (got,) = session(out).run(["class_logits"], {"pixel_values": x.numpy()})
    with torch.inference_mode():
        want = loaded.model(x).numpy()
    assert_spread(want, 1e-4)
    assert got.shape == (3, 3) and np.abs(got - want).max() <= 1e-4
    # The captions' embeddings are a constant: no token embedding table, no text tower in the graph.
    shapes = [tuple(t.dims) for t in onnx.load(str(out)).graph.initializer]
    assert not any(49408 in shape for shape in shapes) and "ArgMax" not in graph_ops(out)  # text EOT pooling

    by_onnx = load_attributor(out, device="cpu")
    by_torch = load_attributor(tiny_attributor, device="cpu")
    assert by_onnx.backend.name == "onnx" and by_onnx.classes == by_torch.classes == ("real", "gen_a", "gen_b")
    assert by_onnx.name == by_torch.name
    images = [random_image(90, 70, seed=i) for i in range(4)]
    assert_spread(by_torch.probabilities(images), 1e-5)
    np.testing.assert_allclose(by_onnx.probabilities(images), by_torch.probabilities(images), atol=1e-5)

    half = tmp_path / "attributor-fp16.onnx"
    r = export_onnx(load_weights(tiny_attributor, "attributor"), half, precision="fp16")
    assert r.compared == "class probability" and r.max_diff <= 1e-2
    fp16 = load_attributor(half, device="cpu")
    # Measured 4.3e-4 on these images, whose probabilities spread over 0.71; the product's check holds 1e-2.
    assert_spread(by_torch.probabilities(images), 5e-3)
    np.testing.assert_allclose(fp16.probabilities(images), by_torch.probabilities(images), atol=5e-3)


def test_scan_attributes_with_an_onnx_attributor_as_with_torch(photos, tiny_weights, tiny_attributor, tmp_path):

    exported_attributor = tmp_path / "attributor.onnx"
    export_onnx(load_weights(tiny_attributor, "attributor"), exported_attributor)
    rows = {}
    for name, attributor in (("onnx", exported_attributor), ("torch", tiny_attributor)):
        out = tmp_path / f"{name}.jsonl"
        args = ["scan", str(photos), "--weights", str(tiny_weights), "--attributor", str(attributor), "--out", str(out)]
        result = runner.invoke(app, [*args, "--workers", "0"])
        assert result.exit_code == 0, result.output
        rows[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(bool(r["source"]) for r in rows["onnx"]) == len(rows["onnx"]) - 1  # all but broken.png
    for a, b in zip(rows["onnx"], rows["torch"]):
        assert a["source"] == b["source"]
        assert (a["source_score"] is None) == (b["source_score"] is None)
        if a["source_score"] is not None:
            assert a["source_score"] == pytest.approx(b["source_score"], abs=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "bf16"], "precision must be one of fp32, fp16"),
        (["--model", "deeclip", "--weights", "x.safetensors"], "not both"),
        (["--localizer", "declip-tiny", "--model", "deeclip"], "one model per ONNX file"),
        (["--attributor", "a.safetensors", "--localizer", "declip-tiny"], "one model per ONNX file"),
        (["--opset", "16"], "greater than or equal to 17"),
    ],
)
def test_export_usage_errors_exit_2(tiny_weights, tmp_path, args, message):
    weights = [] if {"--model", "--localizer", "--attributor"} & set(args) else ["--weights", str(tiny_weights)]
    result = runner.invoke(app, ["export-onnx", *weights, *args, "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------------------------------------
# Scanning through onnxruntime


def test_library_scan_through_onnx_gives_torch_s_rows(photos, exported, tiny_weights):
    torch_rows = list(forensix.scan([str(photos)], load_detector(weights=tiny_weights, device="cpu"), workers=0))
    scores = sorted(r["score"] for r in torch_rows if r["score"] is not None)
    threshold = (scores[1] + scores[2]) / 2  # verdicts of both kinds
    runs = {
        "torch": load_detector(weights=tiny_weights, device="cpu", threshold=threshold),
        "onnx": load_detector(exported, device="cpu", threshold=threshold),
    }
    rows = {k: list(forensix.scan([str(photos)], d, workers=0, batch_size=2)) for k, d in runs.items()}
    assert len(rows["onnx"]) == len(rows["torch"]) == 6
    assert_spread(scores, 1e-4)
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert (a["path"], a["verdict"], a["model"], a["threshold"]) == (
            b["path"],
            b["verdict"],
            b["model"],
            b["threshold"],
        )
        assert (a["score"] is None) == (b["score"] is None)
        if a["score"] is not None:
            assert abs(a["score"] - b["score"]) <= 1e-4
    assert {r["verdict"] for r in rows["onnx"]} == {"real", "fake", "error"}
    assert runs["onnx"].score([random_image(300, 200)]).shape == (1,)


def test_cli_scan_with_an_onnx_file_matches_the_torch_backend(photos, exported, tiny_weights, tmp_path):
    by_torch = runner.invoke(app, ["scan", str(photos), "--weights", str(tiny_weights), "--workers", "0"])
    out = tmp_path / "report.jsonl"
    by_onnx = runner.invoke(
        app,
        ["scan", str(photos), "--weights", str(exported), "--backend", "onnx", "--device", "cpu", "--out", str(out)],
    )
    by_suffix = runner.invoke(app, ["scan", str(photos), "--weights", str(exported), "--workers", "0"])
    for result in (by_torch, by_onnx, by_suffix):
        assert result.exit_code == 0, result.output
    torch_rows = [json.loads(line) for line in by_torch.stdout.splitlines()]
    assert_spread([r["score"] for r in torch_rows if r["score"] is not None], 1e-4)
    for onnx_rows in (
        [json.loads(line) for line in out.read_text().splitlines()],
        [json.loads(line) for line in by_suffix.stdout.splitlines()],
    ):
        assert [r["verdict"] for r in onnx_rows] == [r["verdict"] for r in torch_rows]
        assert [r["model"] for r in onnx_rows] == [r["model"] for r in torch_rows]
        for a, b in zip(torch_rows, onnx_rows):
            assert a["score"] is None and b["score"] is None or abs(a["score"] - b["score"]) <= 1e-4
    meta = json.loads((tmp_path / "report.jsonl.meta.json").read_text())
    assert meta["weights"]["source"] == str(exported) and meta["device"] == "cpu" and meta["precision"] == "fp32"
    assert meta["weights"]["provenance"]["onnx"]["providers"] == ["CPUExecutionProvider"]
    assert meta["preprocess"]["mode"] == "resize_crop"


def test_calibrating_an_onnx_model_sets_the_threshold_its_scans_use(exported, tmp_path):
    data = tmp_path / "data"
    for label in ("0_real", "1_fake"):
        (data / "set" / label).mkdir(parents=True)
        for i in range(4):
            random_image(240, 230, seed=10 * i + len(label)).save(data / "set" / label / f"{i}.png")
    onnx = tmp_path / "model.onnx"
    shutil.copy(exported, onnx)
    args = ["calibrate", "--data", str(data), "--weights", str(onnx), "--device", "cpu", "--workers", "0"]
    result = runner.invoke(app, [*args, "--balanced", "--no-cache"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "model.onnx.calibration.json").read_text())
    detector = load_detector(weights=onnx, device="cpu")
    assert detector.threshold == sidecar["threshold"] != 0.5
    assert f"now uses threshold {sidecar['threshold']:.6g}" in result.stderr
    assert detector.info.provenance["calibration_file"] == "model.onnx.calibration.json"
    assert load_detector(weights=exported, device="cpu").threshold == 0.5  # the uncalibrated copy is untouched


def test_onnx_logits_are_cached_apart_from_torch_ones(exported, tiny_weights):
    from forensix.cache import model_key

    torch_key = model_key(load_detector(weights=tiny_weights, device="cpu"))
    onnx_key = model_key(load_detector(weights=exported, device="cpu"))
    assert onnx_key == f"{torch_key}:onnx"  # the same weights and precision, another arithmetic


class ArenaFullAbove:
    """An onnxruntime session failing as its CUDA arena does when a batch holds more than ``limit`` images."""

    def __init__(self, session, limit: int) -> None:
        self.session, self.limit, self.calls = session, limit, []

    def run(self, outputs, feeds):
        n = len(next(iter(feeds.values())))
        self.calls.append(n)
        if n > self.limit:
            from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

            raise RuntimeException(
                "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
                "MatMul node. Status Message: bfc_arena.cc:376 void* onnxruntime::BFCArena::AllocateRawInternal"
                "(size_t, bool, onnxruntime::Stream*, bool, onnxruntime::WaitNotificationFn) Failed to allocate "
                "memory for requested buffer of size 8388608000"
            )
        return self.session.run(outputs, feeds)


def test_an_onnx_batch_too_big_for_the_gpu_runs_in_pieces(exported):
    detector = load_detector(exported, device="cpu")
    images = [random_image(240, 230, seed=i) for i in range(6)]
    expected = detector.score(images)
    detector.backend.session = ArenaFullAbove(detector.backend.session, limit=2)
    np.testing.assert_allclose(detector.score(images), expected, atol=1e-6)
    assert detector.backend.session.calls == [6, 3, 1, 1, 1, 1, 1, 1] and detector.max_batch == 1
    detector.backend.session.limit = 0
    with pytest.raises(Exception, match="Failed to allocate memory"):  # not even one image fits
        detector.score(images[:1])


def test_other_onnxruntime_errors_are_not_taken_for_a_full_gpu(exported):
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    detector = load_detector(exported, device="cpu")
    calls = []

    class Broken:
        def run(self, outputs, feeds):
            calls.append(len(next(iter(feeds.values()))))
            raise InvalidArgument("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions")

    detector.backend.session = Broken()
    with pytest.raises(InvalidArgument):
        detector.score([random_image(64, 64, seed=i) for i in range(4)])
    assert calls == [4] and detector.max_batch is None


def test_cuda_asked_where_onnxruntime_cannot_use_it_falls_back_with_one_line(exported, capsys):
    detector = load_detector(exported, device="cuda")
    if detector.device.type == "cuda":
        pytest.skip("onnxruntime runs on CUDA here")
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and "running on the CPU" in notice[0]
    load_detector(exported, device="cpu")
    assert capsys.readouterr().err == ""


def test_scan_draws_masks_with_an_onnx_localizer_as_with_torch(photos, tiny_weights, tiny_localizer, tmp_path):
    from forensix.localizer import load_localizer

    exported_localizer = tmp_path / "localizer.onnx"
    export_onnx(load_weights(tiny_localizer, "localizer"), exported_localizer)
    by_onnx = load_localizer(exported_localizer, device="cpu")
    by_torch = load_localizer(tiny_localizer, device="cpu")
    assert by_onnx.backend.name == "onnx" and by_onnx.name == by_torch.name
    images = [random_image(300, 240, seed=1), random_image(240, 320, seed=2)]
    assert_spread(by_torch.probabilities(images), 1e-5)
    np.testing.assert_allclose(by_onnx.probabilities(images), by_torch.probabilities(images), atol=1e-5)
    rows = {}
    for name, localizer in (("onnx", exported_localizer), ("torch", tiny_localizer)):
        args = ["scan", str(photos), "--weights", str(tiny_weights), "--threshold", "0", "--workers", "0"]
        args += ["--localizer", str(localizer), "--masks", str(tmp_path / name)]
        args += ["--out", str(tmp_path / f"{name}.jsonl")]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        rows[name] = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert sum(bool(r["mask"]) for r in rows["onnx"]) == sum(bool(r["mask"]) for r in rows["torch"]) > 0
    assert_spread([r["mask_fraction"] for r in rows["torch"] if r["mask_fraction"] is not None], 1e-3)
    for a, b in zip(rows["onnx"], rows["torch"]):
        assert (a["mask_fraction"] is None) == (b["mask_fraction"] is None)
        if a["mask_fraction"] is not None:
            assert a["mask_fraction"] == pytest.approx(b["mask_fraction"], abs=1e-3)


def test_a_corrupt_or_foreign_onnx_file_is_a_one_line_error(photos, exported, tiny_localizer, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a model at all")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported.read_bytes()[:5000])
    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(
        onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), str(foreign)
    )
    localizer = tmp_path / "localizer.onnx"
    export_onnx(load_weights(tiny_localizer, "localizer"), localizer, check=False)
    cases = [
        (["--weights", garbage], "not a readable ONNX model"),
        (["--weights", truncated], "not a readable ONNX model"),
        (["--weights", foreign], "without forensix metadata"),
        (["--weights", localizer], "a localizer, not a detector"),
        (["--weights", tmp_path / "missing.onnx"], "no such file"),
        (["--backend", "onnx"], "--backend onnx needs --weights"),
        (["--weights", exported, "--backend", "torch"], "use --backend onnx"),
        (["--weights", exported, "--backend", "tvm"], "--backend must be torch or onnx"),
        (["--weights", exported, "--precision", "bf16"], "exported in fp32"),
        (["--localizer", exported, "--masks", tmp_path / "m"], "a detector, not a localizer"),
        (["--attributor", exported], "a detector, not an attributor"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["scan", str(photos), *map(str, args), "--workers", "0"])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.output, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        load_detector(garbage, device="cpu")


def test_missing_onnxruntime_says_how_to_install_it(monkeypatch, exported, photos):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(MissingDependency, match=r"pip install onnxruntime-gpu \(or onnxruntime\)"):
        require("onnxruntime")
    result = runner.invoke(app, ["scan", str(photos), "--weights", str(exported), "--workers", "0"])
    assert result.exit_code == 2 and "pip install onnxruntime" in result.stderr and "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------
# The docs' example for plain onnxruntime


def docs_example() -> str:
    text = (Path(__file__).parents[1] / "docs" / "onnx.md").read_text(encoding="utf-8")
    return text.split("## Use it without forensix", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_the_plain_onnxruntime_example_in_the_docs_gives_forensix_scores(exported, tiny_weights, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(exported, "deeclip.onnx")
    random_image(300, 240, seed=1).save("photo.jpg", quality=95)
    random_image(230, 410, seed=2).save("screenshot.png")
    namespace: dict = {}
    exec(compile(docs_example(), "docs/onnx.md", "exec"), namespace)
    rows = list(forensix.scan(["photo.jpg", "screenshot.png"], load_detector(weights=tiny_weights, device="cpu")))
    scores = 1 / (1 + np.exp(-namespace["logits"].astype(np.float64)))
    assert_spread(scores, 1e-4)
    assert np.abs(scores - [r["score"] for r in rows]).max() <= 1e-4
    # Its preprocessing is forensix's, pixel for pixel, in every mode and for images smaller than the crop.
    for mode, interpolation in [("resize_crop", "bicubic"), ("squash", "bilinear"), ("center_crop", "bicubic")]:
        cfg = PreprocessConfig(mode=mode, interpolation=interpolation)
        namespace["pre"].update(mode=mode, interpolation=interpolation)
        for i, (w, h) in enumerate([(300, 240), (225, 301), (200, 180), (231, 224), (224, 224)]):
            random_image(w, h, seed=i).save(f"{i}.png")
            want = preprocess(Image.open(f"{i}.png"), cfg).numpy()
            assert np.array_equal(namespace["preprocess"](f"{i}.png"), want), (mode, w, h)


def test_the_library_loads_an_onnx_file_with_onnxruntime(exported, tiny_weights):
    onnx = forensix.load_detector(weights=exported, device="cpu")
    torch_detector = forensix.load_detector(weights=tiny_weights, device="cpu")
    assert (onnx.backend.name, torch_detector.backend.name) == ("onnx", "torch")
    images = [random_image(240, 300, seed=s) for s in range(3)]
    assert_spread(torch_detector.score(images), 1e-5)
    assert np.abs(onnx.score(images) - torch_detector.score(images)).max() <= 1e-5
    with pytest.raises(ValueError, match="ONNX model: use --backend onnx"):
        forensix.load_detector(weights=exported, backend="torch")


def test_packed_backends_open_again_with_the_same_outputs(exported, tiny_weights, tmp_path):
    """What the Ray engine ships to its actors: a torch module on the CPU, an ONNX file's bytes,
    opened again from the bytes alone (the actor's node need not have the file)."""
    x = batch(3)
    copy = tmp_path / "copy.onnx"
    shutil.copy(exported, copy)
    detectors = (load_detector(weights=tiny_weights, device="cpu"), load_detector(copy, device="cpu"))
    shipped = [pickle.dumps(d.backend.packed()) for d in detectors]
    copy.unlink()
    for detector, packed in zip(detectors, shipped):
        twin = pickle.loads(packed).open("cpu", "fp32")
        assert twin.name == detector.backend.name and twin.device.type == "cpu"
        torch.testing.assert_close(twin(x), detector.backend(x), atol=1e-6, rtol=0)
