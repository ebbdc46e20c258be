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
from .attributor import Attributor
from .detector import Detector, Runner, apply_calibration
from .localizer import Localizer
from .models.checkpoints import CheckpointError
from .models.config import ModelConfig

FORMAT_NAME = "forensix"
FORMAT_VERSION = "1"
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
    "threshold",  # JSON number: verdict "fake" when the score >= threshold
    "temperature",  # JSON number: score = sigmoid(logit / temperature) (1 unless calibrated)
    "preprocess",  # JSON: PreprocessConfig (mode, resize, crop, interpolation, mean, std)
    "config",  # JSON: the full ModelConfig
    "provenance",  # JSON: where the weights came from
    "precision",  # "fp32" | "fp16"
    "input",  # input name; float32 (B, 3, crop, crop)
    "output",  # output name; float32 (B,) logits or (B, S, S) mask logits
    "forensix_version",
)


class MissingExtra(ValueError):
    """An optional dependency is not installed (a ValueError so the CLI reports it in one line)."""


def require(module: str) -> ModuleType:
    """Import an optional dependency of the ``[onnx]`` extra, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(
            f"{module} is not installed ({e}); pip install 'forensix[onnx]' (or onnxruntime-gpu for CUDA)"
        ) from None


@dataclass
class OnnxModel:
    """An exported model opened in onnxruntime: LoadedWeights' fields, with the session as the model."""

    session: Any  # onnxruntime.InferenceSession
    config: ModelConfig
    kind: str  # "detector" | "localizer" | "attributor"
    name: str
    sha256: str  # of the original weights, so reports name the same model as the torch backend
    source: str  # the .onnx file
    provenance: dict[str, Any]
    precision: str
    input: str
    output: str
    device: torch.device  # where onnxruntime runs it


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


def open_session(path: Path, device: str = "auto") -> tuple[Any, torch.device]:
    """An onnxruntime session on CUDA when asked (or ``auto``) and usable, else on the CPU.

    Asking for ``cuda`` where onnxruntime cannot use it falls back to the CPU with a one-line
    notice on stderr; ``auto`` falls back silently. Unreadable files raise CheckpointError.
    """
    ort = require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    index = _cuda_index(device)
    providers: list[Any] = ["CPUExecutionProvider"]
    cuda_built = "CUDAExecutionProvider" in ort.get_available_providers()
    if index is not None and cuda_built:
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    try:
        with _quiet_onnxruntime(ort):
            session = ort.InferenceSession(str(path), providers=providers)
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


def open_onnx(path: Path, device: str = "auto") -> OnnxModel:
    """An exported forensix model (detector, localizer or attributor), ready to run."""
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
    # A calibration made for this file (forensix calibrate writes a sidecar: it does not rewrite ONNX files).
    config, provenance = apply_calibration(path, meta["weights_sha256"], config, provenance)
    onnx_info = {
        "file": path.name,
        "sha256": W.cached_sha256(path),
        "precision": meta["precision"],
        "exported_by": f"forensix {meta['forensix_version']}",
        "providers": session.get_providers(),
    }
    return OnnxModel(
        session=session,
        config=config,
        kind=meta["kind"],
        name=meta["model_name"],
        sha256=meta["weights_sha256"],
        source=str(path),
        provenance={**provenance, "onnx": onnx_info},
        precision=meta["precision"],
        input=meta["input"],
        output=meta["output"],
        device=used,
    )


def run(model: OnnxModel, batch: torch.Tensor) -> np.ndarray:
    """The model's float32 output for a preprocessed batch (B, 3, H, W)."""
    x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
    return np.asarray(model.session.run([model.output], {model.input: x})[0], dtype=np.float32)


# What onnxruntime's errors say when its CUDA arena or CUDA itself has no memory left; it raises
# its generic RuntimeException/Fail for these, so the message is all there is to go by.
OUT_OF_MEMORY_MESSAGES = ("Failed to allocate memory", "out of memory")


class OnnxRunner(Runner):
    """What the ONNX runners share: onnxruntime runs the batch, in pieces if the GPU is full."""

    def bind(self, loaded: OnnxModel, kind: str, config: ModelConfig) -> None:
        """Take an ONNX model's fields in place of a torch model's (Runner's ``__init__`` is not run)."""
        if loaded.kind != kind:
            raise CheckpointError(f"{loaded.source}: {with_article(loaded.kind)}, not {with_article(kind)}")
        self.loaded = loaded  # LoadedWeights' fields (what the Scanner reads), the session as the model
        self.config, self.precision, self.device = config, loaded.precision, loaded.device
        self.max_batch = None

    def run_onnx(self, batch: torch.Tensor) -> torch.Tensor:
        return self.run_in_pieces(lambda piece: torch.from_numpy(run(self.loaded, piece)), batch)

    @staticmethod
    def out_of_memory(error: Exception) -> bool:
        return type(error).__module__.startswith("onnxruntime") and any(m in str(error) for m in OUT_OF_MEMORY_MESSAGES)


def with_article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


class OnnxDetector(OnnxRunner, Detector):
    """A Detector whose raw logits come from onnxruntime.

    Name, threshold, temperature, preprocessing, ``logits`` and ``score`` are Detector's, fed from
    the ONNX metadata, so the scan pipeline and its report do not know which backend runs.
    """

    def __init__(self, loaded: OnnxModel, threshold: float | None = None) -> None:
        config = loaded.config if threshold is None else replace(loaded.config, threshold=threshold)
        self.bind(loaded, "detector", config)

    def raw_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's own logits (B,) in float32 for a preprocessed batch (B, 3, H, W)."""
        return self.run_onnx(batch)


class OnnxLocalizer(OnnxRunner, Localizer):
    """A Localizer whose mask logits come from onnxruntime; maps, name and preprocessing are Localizer's."""

    def __init__(self, loaded: OnnxModel) -> None:
        self.bind(loaded, "localizer", loaded.config)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Mask logits (B, S, S) in float32 for a preprocessed batch (B, 3, H, W)."""
        return self.run_onnx(batch)


class OnnxAttributor(OnnxRunner, Attributor):
    """An Attributor whose class logits come from onnxruntime (the captions' embeddings are in the graph)."""

    def __init__(self, loaded: OnnxModel) -> None:
        self.bind(loaded, "attributor", loaded.config)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Class logits (B, classes) in float32 for a preprocessed batch (B, 3, H, W)."""
        return self.run_onnx(batch)


def open_at_precision(path: str | Path, device: str, precision: str | None) -> OnnxModel:
    """An exported model; ``precision``, if given, must be the one it was exported in."""
    model = open_onnx(Path(path), device)
    if precision is not None and precision != model.precision:
        raise ValueError(
            f"{path} was exported in {model.precision}; for {precision}, export with --precision {precision}"
            if precision in ONNX_PRECISIONS
            else f"{path} was exported in {model.precision}; ONNX models run in fp32 or fp16, not {precision}"
        )
    return model


def load_onnx_detector(
    path: str | Path, device: str = "auto", threshold: float | None = None, precision: str | None = None
) -> OnnxDetector:
    """A detector from a ``forensix export-onnx`` file; ``precision``, if given, must be the exported one."""
    return OnnxDetector(open_at_precision(path, device, precision), threshold)


def load_onnx_localizer(path: str | Path, device: str = "auto", precision: str | None = None) -> OnnxLocalizer:
    """A localizer from a ``forensix export-onnx --localizer`` file."""
    return OnnxLocalizer(open_at_precision(path, device, precision))


def load_onnx_attributor(path: str | Path, device: str = "auto", precision: str | None = None) -> OnnxAttributor:
    """An attributor from a ``forensix export-onnx --attributor`` file."""
    return OnnxAttributor(open_at_precision(path, device, precision))
