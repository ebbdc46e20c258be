"""The scan: inputs → decode → preprocess → batched scoring → one row per input, in order."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .detector import Detector
from .imaging import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from .inputs import InputItem

DEFAULT_MAX_BYTES = 512 * 1024 * 1024


@dataclass
class ScanOptions:
    batch_size: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass
class ScanSummary:
    scanned: int = 0
    fake: int = 0
    real: int = 0
    errors: int = 0
    counts: dict[str, int] = field(default_factory=dict)


def _base_row(item: InputItem, detector: Detector) -> dict[str, Any]:
    return {
        "path": item.path,
        "member": item.member,
        "sha256": "",
        "verdict": "error",
        "score": None,
        "threshold": detector.threshold,
        "model": detector.name,
        "width": None,
        "height": None,
        "format": "",
        "notes": "",
        "mask": "",
        "error": item.error,
    }


def _prepare(item: InputItem, detector: Detector, options: ScanOptions) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Read, hash, decode and preprocess one input; failures become the row's error."""
    row = _base_row(item, detector)
    if item.error:
        return row, None
    try:
        data = item.read(options.max_bytes)
        row["sha256"] = hashlib.sha256(data).hexdigest()
        decoded = decode_image(data, options.max_pixels)
        row.update(width=decoded.width, height=decoded.height, format=decoded.format)
        return row, detector.preprocess(decoded.image)
    except (DecodeError, OSError, ValueError) as e:
        row["error"] = str(e) if not isinstance(e, OSError) else f"cannot read: {e.strerror or e}"
        return row, None


def scan(
    items: Iterable[InputItem],
    detector: Detector,
    options: ScanOptions | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one row per item, in input order, scoring images in batches."""
    options = options or ScanOptions()
    pending: list[tuple[dict[str, Any], torch.Tensor | None]] = []

    def flush() -> Iterator[dict[str, Any]]:
        tensors = [t for _, t in pending if t is not None]
        scores = iter(torch.sigmoid(detector.logits(torch.stack(tensors))).tolist()) if tensors else iter(())
        for row, tensor in pending:
            if tensor is not None:
                score = next(scores)
                row["score"] = score
                row["verdict"] = "fake" if score >= detector.threshold else "real"
            yield row
        pending.clear()

    for item in items:
        pending.append(_prepare(item, detector, options))
        if sum(t is not None for _, t in pending) >= options.batch_size:
            yield from flush()
    yield from flush()
