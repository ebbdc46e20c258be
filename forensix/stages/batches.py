"""Prepared records → blocks: consecutive records with each named model input stacked; the one collate."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from .records import Record


@dataclass
class Block:
    """Records of consecutive entries; ``inputs[name]`` stacks that input of the records that have it, in order."""

    records: list[Record]
    inputs: dict[str, torch.Tensor]


def collate(records: list[Record]) -> Block:
    """Stack each named input over the records that have it; the records keep none (only the stack travels)."""
    names = dict.fromkeys(name for r in records for name in r.inputs)
    inputs = {name: torch.stack([r.inputs.pop(name) for r in records if name in r.inputs]) for name in names}
    return Block(records, inputs)


def ordered_blocks(blocks: Iterable[Block], first: int = 0) -> Iterator[Block]:
    """Blocks in input order from entry ``first`` on, whatever order the workers finish them in."""
    waiting: dict[int, Block] = {}
    expected = first
    for block in blocks:
        waiting[block.records[0].index] = block
        while expected in waiting:
            ready = waiting.pop(expected)
            expected = ready.records[-1].index + 1
            yield ready
    if waiting:  # a worker died without raising: never drop rows silently
        raise RuntimeError(f"scan lost its place: expected entry {expected}, have {sorted(waiting)}")
