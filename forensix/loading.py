"""Where a runner's backend comes from: a weights-manifest name, a weights file, or an exported ``.onnx`` file.

The one place that chooses a backend: torch for manifest names and weights files (a forensix
``.safetensors`` or any authors' checkpoint a registered family reads), onnxruntime for ``.onnx``
files (or ``backend="onnx"``). Whatever the backend, the model must be of the kind asked for, and
the calibration of an authors' file or an ONNX export (a sidecar ``forensix calibrate`` writes beside
it) is applied here.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from .models.checkpoints import (
    CheckpointError,
    ModelFile,
    build_and_load,
    check_kind,
    read_manifest_entry,
    read_model_file,
)
from .models.config import ModelConfig
from .models.lora import merge_lora
from .models.registry import ConvertOptions
from .runner import Backend, LoadedWeights, ModelInfo
from .torch_backend import TorchBackend

CALIBRATION_SUFFIX = ".calibration.json"
BACKENDS = ("torch", "onnx")


def is_onnx_file(spec: str | Path) -> bool:
    return Path(spec).suffix.lower() == ".onnx"


def load_weights(spec: str | Path, kind: str, options: ConvertOptions | None = None) -> LoadedWeights:
    """A torch model of ``kind`` (detector | localizer | attributor) from a file or a manifest name.

    LoRA is merged (inference); an authors' file gets its calibration sidecar's threshold, if any.
    ``options``: how to translate an authors' file (e.g. DeeCLIP's feature layers for a smaller backbone).
    """
    if Path(spec).is_file():
        found = read_model_file(Path(spec), kind=kind, options=options)
        name = found.config.name
    elif any(sep in str(spec) for sep in ("/", "\\")) or Path(spec).suffix:
        raise CheckpointError(f"{spec}: no such file")
    else:
        found = read_manifest_entry(str(spec), kind)
        name = str(spec)
    return _built(found, name)


def _built(found: ModelFile, name: str) -> LoadedWeights:
    config, provenance = found.config, found.provenance
    if not found.native:  # an authors' file: calibrate writes a sidecar, not a new file
        config, provenance = apply_calibration(Path(found.source), found.sha256, config, provenance)
    model = build_and_load(found.config, found.state, source=found.source)
    merge_lora(model)
    return LoadedWeights(config, name, found.sha256, found.source, provenance, model=model)


def open_backend(
    spec: str | Path,
    kind: str,
    *,
    device: str = "auto",
    precision: str = "fp32",
    backend: str | None = None,
    channels_last: bool = False,
    compile: bool = False,
) -> tuple[Backend, ModelInfo]:
    """The backend that runs ``spec`` (manifest name, weights file or ``.onnx`` file) and what it runs.

    ``backend`` is ``torch`` or ``onnx`` (the default for a ``.onnx`` file, whose precision was
    fixed at export: ``fp32`` then means "as exported").
    """
    backend = backend or ("onnx" if is_onnx_file(spec) else "torch")
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be torch or onnx, got {backend!r}")
    if backend == "onnx":
        if compile:
            raise ValueError("--compile is for the torch backend")
        if not is_onnx_file(spec):
            raise ValueError("--backend onnx needs --weights FILE.onnx (write one with forensix export-onnx)")
        from .onnx_backend import open_onnx  # onnxruntime: only when asked for

        onnx, info = open_onnx(Path(spec), device, None if precision == "fp32" else precision)
        check_kind(info.config.kind, kind, str(spec))
        config, provenance = apply_calibration(Path(spec), info.sha256, info.config, info.provenance)
        return onnx, replace(info, config=config, provenance=provenance)
    if is_onnx_file(spec):
        raise ValueError(f"{spec} is an ONNX model: use --backend onnx")
    loaded = load_weights(spec, kind)
    return TorchBackend(loaded.model, device, precision, channels_last=channels_last, compile=compile), loaded


def calibration_sidecar(weights_file: Path) -> Path:
    """Where `forensix calibrate` stores the threshold of weights it can't rewrite (official files, ONNX)."""
    weights_file = Path(weights_file)
    return weights_file.with_name(weights_file.name + CALIBRATION_SUFFIX)


def apply_calibration(
    weights_file: Path, digest: str, cfg: ModelConfig, provenance: dict[str, Any]
) -> tuple[ModelConfig, dict[str, Any]]:
    """``cfg`` with the threshold, band and temperature of the weights' calibration sidecar, if there is one."""
    sidecar = calibration_sidecar(weights_file)
    if not sidecar.is_file():
        return cfg, provenance
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        threshold, temperature = float(data["threshold"]), float(data.get("temperature", 1.0))
        band_low = None if data.get("band_low") is None else float(data["band_low"])
        made_for = data["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{sidecar}: not a readable calibration file ({e}); delete it or calibrate again") from e
    if made_for != digest:
        raise CheckpointError(
            f"{sidecar}: made for other weights (sha256 {str(made_for)[:12]}, these are {digest[:12]}); "
            "delete it or calibrate again"
        )
    try:
        calibrated = replace(cfg, threshold=threshold, temperature=temperature, band_low=band_low)
    except ValueError as e:
        raise CheckpointError(f"{sidecar}: {e}; delete it or calibrate again") from None
    return calibrated, {**provenance, "calibration": data.get("calibration", {}), "calibration_file": sidecar.name}
