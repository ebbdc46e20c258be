"""What the stages run over: the entries of a scan's inputs, or of a labelled dataset's samples.

Each function gives the same deterministic stream every time it is called; a runner walks it once
(:mod:`forensix.stages.loader`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..datasets import Sample
from ..inputs import ArchiveLister, InputItem, InputSpec, Limits, file_entry, iter_entries


def input_entries(spec: InputSpec, limits: Limits, archives: ArchiveLister | None = None) -> Iterator[InputItem]:
    """The scan's entries: files, folders, archive members, lists, in order (:func:`~forensix.inputs.iter_entries`).

    A folder's files are sniffed when read, not while listing: each is opened once, by the worker
    that reads it, and the listing opens nothing. ``archives`` lists the archives, elsewhere.
    """
    return iter_entries(spec.paths(), limits, sniff=False, archives=archives)


def sample_entries(samples: Sequence[Sample], max_bytes: int) -> Iterator[InputItem]:
    """One entry per sample, in the dataset's order."""
    return (file_entry(s.path, max_bytes) for s in samples)
