"""``forensix export-onnx``: a loaded forensix model to an ONNX file that scores the same.

Exporter: ``torch.onnx.export(dynamo=False)``, the TorchScript exporter. The torch.export-based one
(torch's default since 2.9) needs ``onnxscript``, which forensix does not depend on; these models have
a fixed input size and no data-dependent control flow, so tracing gives a plain graph: one
``LayerNormalization`` per LayerNorm (opset >= 17), attention as MatMul + Softmax, a symbolic batch
axis. LoRA is merged and the blocks after the deepest feature are not in the model, so neither is
in the graph. fp16 converts the traced fp32 graph with onnxruntime's float16 tool, keeping the
numerically fragile ops (:data:`FP32_OPS`) in fp32 behind Cast nodes; inputs and outputs stay float32.

The export is written to a temporary file beside ``out``, checked against PyTorch (unless
``check=False``) and only then moved into place: a file that fails the check is never written.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .files import replacing
from .imaging import preprocess
from .models.checkpoints import FORMAT_NAME, FORMAT_VERSION
from .models.config import ModelConfig
from .models.lora import merge_lora
from .onnx_backend import INPUT_NAME, ONNX_PRECISIONS, OUTPUT_NAMES, require
from .runner import LoadedWeights

# max |onnxruntime - PyTorch fp32|: on logits for fp32 exports, on scores (sigmoid; an attributor's
# softmax probabilities) for fp16 ones.
TOLERANCES = {"fp32": 1e-4, "fp16": 1e-2}
# 17: the first opset with LayerNormalization as one op (fp16 keeps it in fp32 by op type);
# 20: the last the TorchScript exporter writes.
MIN_OPSET, MAX_OPSET = 17, 20
# Kept in fp32 in fp16 exports: onnxruntime's fp16 LayerNormalization can silently zero outputs,
# softmax rows of thousands of tokens lose their small weights in fp16, and the sum of squares
# behind F.normalize overflows fp16 (max 65504) for wide token embeddings.
FP32_OPS = ("LayerNormalization", "Softmax", "ReduceL2")


class ExportCheckFailed(ValueError):
    """onnxruntime and PyTorch disagree beyond the tolerance; nothing was written."""


@dataclass
class ExportResult:
    path: Path
    kind: str  # "detector" | "localizer" | "attributor"
    precision: str
    opset: int
    compared: str  # what the check compared, e.g. "logit", "mask score" or "class probability"
    max_diff: float | None  # max |onnxruntime - PyTorch| over the check batch; None when not checked
    tolerance: float
    check_inputs: int


def compared_quantity(kind: str, precision: str) -> str:
    """What the export check compares: logits for fp32, the scores users see for fp16."""
    if kind == "attributor":
        return "class logit" if precision == "fp32" else "class probability"
    return ("mask " if kind == "localizer" else "") + ("logit" if precision == "fp32" else "score")


def metadata(loaded: LoadedWeights, kind: str, precision: str) -> dict[str, str]:
    """The metadata_props of an exported model (keys: forensix.onnx_backend.METADATA_KEYS, and
    OPTIONAL_METADATA_KEYS when they apply)."""
    cfg = loaded.config
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model_name": loaded.name,
        "weights_sha256": loaded.sha256,
        "threshold": json.dumps(float(cfg.threshold)),
        "temperature": json.dumps(float(cfg.temperature)),
        "preprocess": json.dumps(asdict(cfg.preprocess), sort_keys=True),
        "config": cfg.to_json(),
        "provenance": json.dumps(loaded.provenance, sort_keys=True),
        "precision": precision,
        "input": INPUT_NAME,
        "output": OUTPUT_NAMES[kind],
        "forensix_version": __version__,
        **({} if cfg.band_low is None else {"band_low": json.dumps(float(cfg.band_low))}),
    }


def check_batch(cfg: ModelConfig, seed: int = 0) -> torch.Tensor:
    """Four inputs (B, 3, S, S): two synthetic photos through the model's own preprocessing, two N(0, 1)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    size = cfg.vision.image_size
    tensors = []
    for w, h in ((size + 96, size + 32), (size + 11, 2 * size)):
        # Smooth gradients, a hard-edged block and sensor-like noise: the statistics of real inputs.
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
        img[h // 4 : h // 2, w // 3 : w // 2] = rng.integers(0, 256, 3)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        tensors.append(preprocess(Image.fromarray(img, "RGB"), cfg.preprocess))
    noise = torch.from_numpy(rng.standard_normal((2, 3, size, size)).astype(np.float32))
    return torch.cat([torch.stack(tensors), noise])


def _export_graph(model: nn.Module, path: Path, kind: str, size: int, opset: int) -> None:
    output = OUTPUT_NAMES[kind]
    sample = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        # dynamo=False is deliberate (see the module docstring); the tracer's warnings are about
        # shape checks whose values the fixed input size makes constant.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # One pass first, so what a model caches on its first run (an attributor: its captions'
        # embeddings) is a constant of the graph, not a text tower run on every batch.
        with torch.no_grad():
            model(sample[:1])
            torch.onnx.export(
                model,
                (sample,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[output],
                dynamic_axes={INPUT_NAME: {0: "batch"}, output: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )


def _finish_graph(path: Path, props: dict[str, str], precision: str) -> None:
    """Convert to fp16 if asked, and write forensix's metadata into the file."""
    onnx = require("onnx")
    proto = onnx.load(str(path))
    if precision == "fp16":
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        proto = convert_float_to_float16(
            proto, keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST + list(FP32_OPS)
        )
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = f"forensix {props['kind']} {props['model_name']}; see the metadata_props"
    onnx.save(proto, str(path))


def compare(model: nn.Module, path: Path, kind: str, precision: str, batch: torch.Tensor, temperature: float) -> float:
    """max |onnxruntime - PyTorch fp32| on ``batch`` (logits for fp32, scores for fp16); inf if non-finite.

    onnxruntime runs on the CPU provider here, the same everywhere; fp16 nodes without a CPU
    fp16 kernel run in fp32 there, so a GPU may differ a little more.
    """
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run([OUTPUT_NAMES[kind]], {INPUT_NAME: batch.numpy()})[0]).double()
    with torch.inference_mode():
        ref = model(batch).double()
    if precision == "fp16" and kind == "attributor":
        got, ref = got.softmax(dim=-1), ref.softmax(dim=-1)
    elif precision == "fp16":
        got, ref = (got / temperature).sigmoid(), (ref / temperature).sigmoid()
    diff = float((got - ref).abs().max())
    return diff if math.isfinite(diff) and got.shape == ref.shape else math.inf


def export_onnx(
    loaded: LoadedWeights, out: Path, *, precision: str = "fp32", opset: int = MIN_OPSET, check: bool = True
) -> ExportResult:
    """Write ``loaded``'s model as an ONNX file at ``out``: input the preprocessed batch, dynamic batch axis.

    With ``check``, onnxruntime and PyTorch score the same four inputs first; beyond
    :data:`TOLERANCES` this raises ExportCheckFailed and ``out`` is left as it was. The model is
    moved to the CPU in fp32 (in place) to be traced.
    """
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(ONNX_PRECISIONS)}, got {precision!r}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in {MIN_OPSET}..{MAX_OPSET}, got {opset}")
    require("onnx")
    require("onnxruntime")
    cfg = loaded.config
    kind = cfg.kind
    model = loaded.model.float().cpu().eval()
    merge_lora(model)  # no-op for models loaded for inference; a training checkpoint keeps its adapters
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compared = compared_quantity(kind, precision)
    result = ExportResult(out, kind, precision, opset, compared, None, TOLERANCES[precision], 0)
    with replacing(out) as tmp:  # beside out: a failed export or check leaves out as it was
        _export_graph(model, tmp, kind, cfg.vision.image_size, opset)
        _finish_graph(tmp, metadata(loaded, kind, precision), precision)
        if check:
            batch = check_batch(cfg)
            result.check_inputs = len(batch)
            result.max_diff = compare(model, tmp, kind, precision, batch, cfg.temperature)
            if not result.max_diff <= result.tolerance:
                raise ExportCheckFailed(
                    f"onnxruntime and PyTorch differ by max |Δ {compared}| {result.max_diff:.3g} > "
                    f"{result.tolerance:g} on {len(batch)} inputs; {out} not written (--no-check writes it anyway)"
                )
    return result
