"""The Python API: load a detector by manifest name or file, score images."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import weights as W
from .imaging import preprocess
from .models.checkpoints import (
    CheckpointError,
    build_and_load,
    convert_deeclip,
    convert_univfd,
    detect_format,
    is_safetensors,
    read_checkpoint,
    read_state_dict,
)
from .models.config import ModelConfig
from .models.lora import merge_lora

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CALIBRATION_SUFFIX = ".calibration.json"


@dataclass
class LoadedWeights:
    """A model with its config and where it came from."""

    model: nn.Module
    config: ModelConfig
    name: str
    sha256: str  # of the weights file (for two-file models: of the detector's own head/checkpoint)
    source: str
    provenance: dict[str, Any]


def load_weights_file(path: Path, *, feature_layers: tuple[int, ...] | None = None) -> LoadedWeights:
    """A model from one file: a forensix .safetensors, or an official DeeCLIP .pth."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    digest = W.cached_sha256(path)
    if is_safetensors(path):
        cfg, state, provenance = read_checkpoint(path)
        if cfg.arch == "attribution":
            raise CheckpointError(f"{path}: an attributor, not a detector: use --attributor")
        name = cfg.name
    else:
        state = read_state_dict(path)
        kind = detect_format(state)
        if kind == "deeclip-official":
            cfg, state = convert_deeclip(state, feature_layers=feature_layers, source=str(path))
            provenance = {"source_file": path.name, "source_sha256": digest, "source_format": kind}
            cfg, provenance = apply_calibration(path, digest, cfg, provenance)
            name = cfg.name
        elif kind == "univfd-head":
            raise CheckpointError(f"{path}: a UnivFD head alone; it needs the CLIP backbone: use --model univfd")
        else:
            raise CheckpointError(f"{path}: not a known detector checkpoint (detected: {kind})")
    model = build_and_load(cfg, state, source=str(path))
    merge_lora(model)
    return LoadedWeights(model, cfg, name, digest, str(path), provenance)


def load_manifest_model(name: str) -> LoadedWeights:
    """A model from the weights manifest; raises WeightsMissing if its files are not on disk."""
    entry = W.get_entry_of_kind(name, "detector")
    paths = W.resolve(name)
    if entry.format == "deeclip-official":
        loaded = load_weights_file(paths["checkpoint"])
    elif entry.format == "univfd":
        head, clip = read_state_dict(paths["head"]), read_state_dict(paths["backbone"])
        cfg, state = convert_univfd(head, clip, source=str(paths["backbone"]))
        digest = W.cached_sha256(paths["head"])
        model = build_and_load(cfg, state, source=name)
        provenance = {
            "source_file": paths["head"].name,
            "source_sha256": digest,
            "backbone_file": paths["backbone"].name,
            "source_format": "univfd",
        }
        cfg, provenance = apply_calibration(paths["head"], digest, cfg, provenance)
        loaded = LoadedWeights(model, cfg, cfg.name, digest, str(paths["head"]), provenance)
    else:
        raise ValueError(f"{name}: format {entry.format!r} is not a detector format")
    loaded.name = name
    return loaded


def calibration_sidecar(weights_file: Path) -> Path:
    """Where `forensix calibrate` stores the threshold of weights it can't rewrite (official files)."""
    weights_file = Path(weights_file)
    return weights_file.with_name(weights_file.name + CALIBRATION_SUFFIX)


def apply_calibration(
    weights_file: Path, digest: str, cfg: ModelConfig, provenance: dict[str, Any]
) -> tuple[ModelConfig, dict[str, Any]]:
    """``cfg`` with the threshold and temperature of the weights' calibration sidecar, if there is one."""
    sidecar = calibration_sidecar(weights_file)
    if not sidecar.is_file():
        return cfg, provenance
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        threshold, temperature = float(data["threshold"]), float(data.get("temperature", 1.0))
        made_for = data["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{sidecar}: not a readable calibration file ({e}); delete it or calibrate again") from e
    if made_for != digest:
        raise CheckpointError(
            f"{sidecar}: made for other weights (sha256 {str(made_for)[:12]}, these are {digest[:12]}); "
            "delete it or calibrate again"
        )
    calibrated = replace(cfg, threshold=threshold, temperature=temperature)
    return calibrated, {**provenance, "calibration": data.get("calibration", {}), "calibration_file": sidecar.name}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return dev


def validate_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 needs a CUDA device; use fp32 or bf16 on the CPU")


@torch.inference_mode()
def autocast_forward(model: nn.Module, batch: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """``model(batch)`` on ``device`` in float32, under autocast for bf16/fp16 (LayerNorm, softmax stay fp32)."""
    batch = batch.to(device, non_blocking=True)
    dtype = PRECISIONS[precision]
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        return model(batch).float()


class Runner:
    """A loaded model ready to run on a device at a precision, with its own preprocessing.

    What the detector, the localizer and the attributor share; each adds what its outputs mean.
    """

    def __init__(
        self, loaded: LoadedWeights, device: str = "auto", precision: str = "fp32", config: ModelConfig | None = None
    ) -> None:
        self.device = resolve_device(device)
        validate_precision(precision, self.device)
        self.loaded, self.precision = loaded, precision
        self.config = config or loaded.config
        self.model = loaded.model.to(self.device).eval()
        self.max_batch: int | None = None  # set once a batch ran out of GPU memory: the piece size that fits

    @property
    def name(self) -> str:
        """The model's name @ the first 12 hex digits of its weights' sha256 (the report's ``model``)."""
        return f"{self.loaded.name}@{self.loaded.sha256[:12]}" if self.loaded.sha256 else self.loaded.name

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return preprocess(image, self.config.preprocess)

    def stack(self, images: Sequence[Image.Image | torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """A preprocessed batch from PIL images (preprocessed here) and/or preprocessed tensors; a batch passes."""
        if isinstance(images, torch.Tensor):
            return images
        return torch.stack([im if isinstance(im, torch.Tensor) else self.preprocess(im) for im in images])

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's output in float32 for a preprocessed batch (B, 3, H, W), on this runner's device."""
        return self.run_in_pieces(self.at_precision(self.model), batch)

    def at_precision(self, module: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """``module`` run on this runner's device at its precision (autocast), giving float32."""
        return partial(autocast_forward, module, device=self.device, precision=self.precision)

    def run_in_pieces(self, forward: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        """``forward`` on ``batch``; in pieces along the batch if the whole does not fit the GPU.

        Out of memory, the piece size halves and stays halved for later batches (``max_batch``);
        only a single image that does not fit raises. The outputs are the same up to float rounding
        (one image's output does not depend on its batch), so a scan never stops for a batch size too big.
        """
        while True:
            size = min(len(batch), self.max_batch or len(batch))
            try:
                if size == len(batch):
                    return forward(batch)
                return torch.cat([forward(batch[i : i + size]) for i in range(0, len(batch), size)])
            except Exception as e:
                if size <= 1 or not self.out_of_memory(e):
                    raise
            # Past the except block, so the failed attempt's tensors are already freed.
            self.max_batch = size // 2
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    @staticmethod
    def out_of_memory(error: Exception) -> bool:
        """Whether ``error`` says the device ran out of memory (so a smaller batch may fit)."""
        return isinstance(error, torch.OutOfMemoryError)


class Detector(Runner):
    """Scores images: P(fake) = sigmoid(logit / temperature), with the model's own preprocessing.

    The threshold and temperature come from the weights (a config, or a calibration sidecar for
    official files; see ``forensix calibrate``); an explicit ``threshold`` wins.

    On CUDA, ``bf16``/``fp16`` run under autocast (LayerNorm and softmax stay fp32); weights stay
    fp32 so the same object can be asked for fp32 scores. ``compile`` runs the model through
    ``torch.compile`` (each new batch shape compiles once, tens of seconds; see docs/benchmarks.md).
    """

    def __init__(
        self,
        loaded: LoadedWeights,
        device: str = "auto",
        precision: str = "fp32",
        threshold: float | None = None,
        compile: bool = False,
    ) -> None:
        config = loaded.config if threshold is None else replace(loaded.config, threshold=threshold)
        super().__init__(loaded, device, precision, config)
        # Channels-last: the patch-embedding convolution writes its tokens in the order the
        # transformer reads them, saving a transpose (the tower's only 4-D tensors; docs/benchmarks.md).
        self.model = self.model.to(memory_format=torch.channels_last)
        self.compiled = compile
        self.forward = torch.compile(self.model) if compile else self.model

    @property
    def threshold(self) -> float:
        return self.config.threshold

    @property
    def temperature(self) -> float:
        return self.config.temperature

    def raw_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's own logits (B,) in float32 for a preprocessed batch (B, 3, H, W)."""
        batch = batch.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        return self.run_in_pieces(self.at_precision(self.forward), batch)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Calibrated logits (B,): the model's divided by the temperature, so P(fake) = sigmoid(logits)."""
        return scale_logits(self.raw_logits(batch), self.temperature)

    def score(self, images: Sequence[Image.Image | torch.Tensor]) -> np.ndarray:
        """P(fake) for PIL images (preprocessed here) or already-preprocessed tensors."""
        if not len(images):
            return np.zeros(0, dtype=np.float32)
        return torch.sigmoid(self.logits(self.stack(images))).cpu().numpy()


def scale_logits(raw: torch.Tensor, temperature: float) -> torch.Tensor:
    """What every score is computed from: float32 logits divided by the temperature (none when 1)."""
    return raw if temperature == 1.0 else raw / temperature


def load_detector(
    model: str = "deeclip",
    weights: str | Path | None = None,
    device: str = "auto",
    precision: str = "fp32",
    threshold: float | None = None,
    compile: bool = False,
    backend: str | None = None,
) -> Detector:
    """A ready detector from a manifest name (``model``) or a weights file (``weights``).

    ``backend`` is ``torch`` or ``onnx`` (onnxruntime; the default for a ``.onnx`` file, whose
    precision was fixed at export: ``fp32`` then means "as exported").
    """
    is_onnx = weights is not None and Path(weights).suffix.lower() == ".onnx"
    backend = backend or ("onnx" if is_onnx else "torch")
    if backend == "onnx":
        if compile:
            raise ValueError("--compile is for the torch backend")
        if weights is None:
            raise ValueError("--backend onnx needs --weights FILE.onnx (write one with forensix export-onnx)")
        from .onnx_backend import load_onnx_detector

        as_exported = None if precision == "fp32" else precision
        return load_onnx_detector(Path(weights), device=device, threshold=threshold, precision=as_exported)
    if backend != "torch":
        raise ValueError(f"--backend must be torch or onnx, got {backend!r}")
    if is_onnx:
        raise ValueError(f"{weights} is an ONNX model: use --backend onnx")
    loaded = load_weights_file(Path(weights)) if weights is not None else load_manifest_model(model)
    return Detector(loaded, device=device, precision=precision, threshold=threshold, compile=compile)
