"""Prepared records → model batches → records leaving scored, in input order.

Blocks hold ``block_size`` entries but fewer images (errors, cached logits, non-images), so the
images of consecutive blocks are regrouped into full model batches of ``size``; each batch goes to
``score`` with the items it belongs to, and items leave in input order once scored (an item with
no image leaves as soon as those before it have). An item may stay ``busy`` after scoring (mask
files being written): the queue waits for it only when many items pile up behind it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

T = TypeVar("T")
BACKLOG = 4  # items held, in model batches, before a part batch is scored or a busy item waited for


@dataclass
class _Slot(Generic[T]):
    item: T
    waiting: bool  # its image is not scored yet


class BatchQueue(Generic[T]):
    """Regroup images into batches of ``size`` for ``score(batch, items)``; hand items back in order."""

    def __init__(
        self,
        size: int,
        score: Callable[[torch.Tensor, list[T]], None],
        busy: Callable[[T], bool] = lambda item: False,
    ) -> None:
        self.size, self.score, self.busy = size, score, busy
        self.slots: deque[_Slot[T]] = deque()  # in input order, waiting to leave
        self.unscored: deque[_Slot[T]] = deque()  # the slots whose images are queued, in order
        self.queued: list[torch.Tensor] = []  # those images, in order

    def push(self, items: Iterable[tuple[T, bool]], images: torch.Tensor | None) -> Iterator[T]:
        """Add a block's items, each with whether it has an image (``images`` stacks those), in
        order; yield the items now ready to leave."""
        for item, has_image in items:
            slot = _Slot(item, has_image)
            self.slots.append(slot)
            if has_image:
                self.unscored.append(slot)
        if images is not None:
            self.queued.append(images)
        while sum(len(t) for t in self.queued) >= self.size:
            self._score()
            yield from self._ready()
        if self.queued and len(self.slots) > BACKLOG * self.size:  # many items behind a part batch: score it now
            self._score()
        yield from self._ready()

    def close(self) -> Iterator[T]:
        """Score what is left and yield every remaining item, waiting for busy ones."""
        if self.queued:
            self._score()
        yield from self._ready(wait=True)

    def _score(self) -> None:
        joined = self.queued[0] if len(self.queued) == 1 else torch.cat(self.queued)
        batch, rest = joined[: self.size], joined[self.size :]
        self.queued = [rest] if len(rest) else []
        slots = [self.unscored.popleft() for _ in range(len(batch))]
        self.score(batch, [s.item for s in slots])
        for s in slots:
            s.waiting = False

    def _ready(self, wait: bool = False) -> Iterator[T]:
        while self.slots and not self.slots[0].waiting:
            item = self.slots[0].item
            # Busy items finish while the next batches run; wait for them only when they pile up.
            if not wait and self.busy(item) and len(self.slots) <= BACKLOG * self.size:
                return
            self.slots.popleft()
            yield item
