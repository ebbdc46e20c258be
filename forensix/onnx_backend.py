"""The onnxruntime backend: forensix models exported to ONNX, with their metadata, behind the Detector interface.

An ONNX file written by ``forensix export-onnx`` holds one model (a detector, a localizer or an attributor) whose
input is the preprocessed batch and whose ``metadata_props`` carry what forensix needs to feed and
judge it (see :data:`METADATA_KEYS` and docs/onnx.md). Scanning needs only ``onnxruntime`` (or
``onnxruntime-gpu``), never the ``onnx`` package; both are imported only when used.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from . import weights as W
from .models.checkpoints import FORMAT_NAME, FORMAT_VERSION, CheckpointError
from .models.config import ModelConfig
from .runner import ModelInfo

INPUT_NAME = "pixel_values"
OUTPUT_NAMES = {"detector": "logits", "localizer": "mask_logits", "attributor": "class_logits"}
ONNX_PRECISIONS = ("fp32", "fp16")
# What export writes into metadata_props (all strings; JSON where structured).
METADATA_KEYS = (
    "format",  # "forensix"
    "format_version",  # "1"
    "kind",  # "detector" | "localizer" | "attributor"
    "model_name",
    "weights_sha256",  # of the weights file exported (not of the .onnx file)
    "threshold",  # JSON number: verdict "fake" when the score >= threshold (see band_low below)
    "temperature",  # JSON number: score = sigmoid(logit / temperature) (1 unless calibrated)
    "preprocess",  # JSON: PreprocessConfig (mode, resize, crop, interpolation, mean, std)
    "config",  # JSON: the full ModelConfig
    "provenance",  # JSON: where the weights came from
    "precision",  # "fp32" | "fp16"
    "input",  # input name; float32 (B, 3, crop, crop)
    "output",  # output name; float32 (B,) logits or (B, S, S) mask logits
    "forensix_version",
)
# Written when there is one, and optional to read (files exported before it are complete without it).
OPTIONAL_METADATA_KEYS = (
    "band_low",  # JSON number: verdict "uncertain" for scores in [band_low, threshold) (forensix.verdicts)
)


class MissingDependency(ValueError):
    """onnx or onnxruntime is not installed (a ValueError so the CLI reports it in one line)."""


def require(module: str) -> ModuleType:
    """Import onnx or onnxruntime (imported only when used), or say how to install it where it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = "onnxruntime-gpu (or onnxruntime)" if module == "onnxruntime" else module
        raise MissingDependency(
            f"{module} is not installed ({e}); forensix needs it for ONNX files: pip install {package}"
        ) from None


@contextmanager
def _quiet_onnxruntime(ort: ModuleType) -> Iterator[None]:
    # A CUDA provider that fails to load logs several lines of its own; forensix says it in one.
    ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default (warnings)


def _cuda_index(device: str) -> int | None:
    """The CUDA device to try for ``device`` (auto | cpu | cuda[:N]), or None for the CPU."""
    if device == "auto":
        return 0
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {device!r}") from None
    if dev.type == "cpu":
        return None
    if dev.type != "cuda":
        raise ValueError(f"onnxruntime runs on cpu or cuda, not {dev.type}")
    return dev.index or 0


def open_session(path: Path, device: str = "auto", data: bytes | None = None) -> tuple[Any, torch.device]:
    """An onnxruntime session on CUDA when asked (or ``auto``) and usable, else on the CPU.

    ``data``: the file's bytes, read already (``path`` then only names it). Asking for ``cuda``
    where onnxruntime cannot use it falls back to the CPU with a one-line notice on stderr; ``auto``
    falls back silently. Unreadable files raise CheckpointError.
    """
    ort = require("onnxruntime")
    path = Path(path)
    if data is None and not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    index = _cuda_index(device)
    providers: list[Any] = ["CPUExecutionProvider"]
    cuda_built = "CUDAExecutionProvider" in ort.get_available_providers()
    if index is not None and cuda_built:
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    try:
        with _quiet_onnxruntime(ort):
            session = ort.InferenceSession(data if data is not None else str(path), providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable ONNX model ({first})") from None
    on_cuda = session.get_providers()[0] == "CUDAExecutionProvider"
    if index is not None and not on_cuda and device != "auto":
        why = "CUDA or cuDNN libraries or the GPU are missing" if cuda_built else "install onnxruntime-gpu"
        print(f"notice: onnxruntime cannot use CUDA here ({why}); running on the CPU", file=sys.stderr)
    return session, torch.device("cuda", index) if on_cuda else torch.device("cpu")


def read_metadata(session: Any, path: Path) -> dict[str, str]:
    """forensix's metadata_props of an open session; CheckpointError for any other ONNX model."""
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: an ONNX model without forensix metadata (write one with forensix export-onnx)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: forensix ONNX format version {meta.get('format_version')!r} is not supported")
    missing = [k for k in METADATA_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: forensix ONNX metadata lacks {', '.join(missing)}")
    return meta


# What onnxruntime's errors say when its CUDA arena or CUDA itself has no memory left; it raises
# its generic RuntimeException/Fail for these, so the message is all there is to go by.
OUT_OF_MEMORY_MESSAGES = ("Failed to allocate memory", "out of memory")


class OnnxBackend:
    """An exported model's onnxruntime session: float32 in, float32 out, at the precision it was exported in."""

    name = "onnx"

    def __init__(self, session: Any, input: str, output: str, device: torch.device, precision: str, path: Path) -> None:
        self.session, self.input, self.output = session, input, output
        self.device, self.precision, self.path = device, precision, path

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(np.asarray(self.session.run([self.output], {self.input: x})[0], dtype=np.float32))

    @staticmethod
    def out_of_memory(error: Exception) -> bool:
        return type(error).__module__.startswith("onnxruntime") and any(m in str(error) for m in OUT_OF_MEMORY_MESSAGES)

    def packed(self) -> PackedOnnx:
        """The model file's bytes and the session's names, to pickle and open again in another process (a Ray actor)."""
        return PackedOnnx(self.path.read_bytes(), self.path, self.input, self.output, self.precision)


@dataclass
class PackedOnnx:
    """An :class:`OnnxBackend`'s model file, picklable: its bytes, opened as they are (no file written)."""

    data: bytes
    path: Path  # where the driver read it (what errors name)
    input: str
    output: str
    precision: str  # fixed at export

    def open(self, device: str, precision: str = "fp32", compile: bool = False) -> OnnxBackend:
        """A session on ``device`` (``precision`` and ``compile`` were checked where the file was first opened)."""
        session, used = open_session(self.path, device, self.data)
        return OnnxBackend(session, self.input, self.output, used, self.precision, self.path)


def open_onnx(path: str | Path, device: str = "auto", precision: str | None = None) -> tuple[OnnxBackend, ModelInfo]:
    """An exported forensix model (detector, localizer or attributor): its backend and what it is.

    ``precision``, if given, must be the one it was exported in. The info's config carries the
    threshold and temperature of the metadata; ``info.sha256`` is that of the weights exported,
    so reports name the same model as the torch backend.
    """
    path = Path(path)
    session, used = open_session(path, device)
    meta = read_metadata(session, path)
    try:
        config = ModelConfig.from_json(meta["config"])
        config = replace(
            config, threshold=float(json.loads(meta["threshold"])), temperature=float(json.loads(meta["temperature"]))
        )
        provenance = json.loads(meta["provenance"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad forensix metadata ({e})") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if meta["kind"] not in OUTPUT_NAMES or meta["input"] not in inputs or meta["output"] not in outputs:
        raise CheckpointError(
            f"{path}: metadata names {meta['input']}/{meta['output']}, the graph has {inputs}/{outputs}"
        )
    if precision is not None and precision != meta["precision"]:
        raise ValueError(
            f"{path} was exported in {meta['precision']}; for {precision}, export with --precision {precision}"
            if precision in ONNX_PRECISIONS
            else f"{path} was exported in {meta['precision']}; ONNX models run in fp32 or fp16, not {precision}"
        )
    onnx_info = {
        "file": path.name,
        "sha256": W.cached_sha256(path),
        "precision": meta["precision"],
        "exported_by": f"forensix {meta['forensix_version']}",
        "providers": session.get_providers(),
    }
    backend = OnnxBackend(session, meta["input"], meta["output"], used, meta["precision"], path)
    info = ModelInfo(config, meta["model_name"], meta["weights_sha256"], str(path), {**provenance, "onnx": onnx_info})
    return backend, info
