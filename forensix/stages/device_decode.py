"""Blocks → blocks whose JPEGs are decoded on the model's device (``scan --gpu-decode``).

The record builder left complete JPEGs undecoded (``Record.jpeg``); here each block's JPEGs are
decoded in one batched call on the device (nvjpeg on CUDA) and the block's image input becomes
every record's input, in order, on the device. A JPEG the device decoder refuses is decoded with
Pillow; one neither decodes becomes its record's error.
"""

from __future__ import annotations

import torch

from ..gpu_decode import preprocess_jpegs
from ..imaging import decode_image, preprocess
from ..models.config import PreprocessConfig
from .batches import Block
from .records import DECODE_ERRORS, IMAGE, Record


def decode_on_device(block: Block, cfg: PreprocessConfig, device: torch.device, max_pixels: int) -> None:
    """Decode the block's JPEGs on ``device`` and make ``block.inputs[IMAGE]`` every input, in order, there."""
    jpegs = [r for r in block.records if r.jpeg is not None]
    decoded: dict[int, torch.Tensor] = {}
    if jpegs:
        try:
            decoded = {id(r): t for r, t in zip(jpegs, preprocess_jpegs([r.jpeg for r in jpegs], cfg, device))}
        except (RuntimeError, ValueError):
            pass  # one file the device decoder refuses fails the batch: take them one by one
    for r in jpegs:
        if id(r) not in decoded and (t := _decode_one(r, cfg, device, max_pixels)) is not None:
            decoded[id(r)] = t
        r.jpeg = None
    cpu = iter(block.inputs[IMAGE]) if IMAGE in block.inputs else iter(())
    ordered = [
        decoded[id(r)] if id(r) in decoded else next(cpu).to(device, non_blocking=True)
        for r in block.records
        if r.has_input
    ]
    block.inputs.pop(IMAGE, None)
    if ordered:
        block.inputs[IMAGE] = torch.stack(ordered)


def _decode_one(record: Record, cfg: PreprocessConfig, device: torch.device, max_pixels: int) -> torch.Tensor | None:
    """One JPEG on the device if it decodes there, else with Pillow; None (the record's error) if neither."""
    assert record.jpeg is not None
    try:
        return preprocess_jpegs([record.jpeg], cfg, device)[0]
    except (RuntimeError, ValueError):
        pass
    try:
        return preprocess(decode_image(record.jpeg, max_pixels).image, cfg).to(device)
    except DECODE_ERRORS as e:
        record.error = str(e)
        return None
