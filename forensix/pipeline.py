"""The scan: inputs → prepared records (DataLoader workers) → batched scoring → one row per input, in order.

:class:`Scanner` drives the stages of :mod:`forensix.stages`: the scan's entries
(:func:`~forensix.stages.entries.input_entries`) go through its :class:`~forensix.stages.records.RecordBuilder`
in DataLoader workers (:func:`~forensix.stages.loader.prepared_blocks`: blocks in input order, a dead
worker costing no row), the images of consecutive blocks are regrouped into full model batches
(:class:`~forensix.stages.scoring.BatchQueue`), and each scored record becomes its row. Non-images
found in folders and archives, and inputs already in a resumed report, travel as markers so the
order stays gapless; they are counted, not written.

With a localizer, workers also make its input tensor and keep the file's bytes; the main process
runs the localizer on the images judged fake (or all, ``masks_all``) and a small thread pool
re-decodes them and writes their mask files (:mod:`forensix.overlay`) while the next batches run.
Each row leaves once its mask files are written, still in input order.

With ``gpu_decode``, a parity check first scores the first JPEGs of the inputs both ways, before
any worker starts. If the scores agree within 1e-3, workers only read a JPEG's header and notes and
hand over its bytes, and the main process decodes each block's JPEGs in one batched call on the
model's device (:mod:`forensix.stages.device_decode`); otherwise the workers decode everything with
Pillow as usual and the scan says why in ``notices``.

With an attributor, the main process runs it on every scored batch and fills ``source`` and
``source_score``; workers prepare its input too when its preprocessing differs from the
detector's (else the detector's batch serves both).

With ``ray`` (:class:`~forensix.ray_options.RayOptions`), the blocks are built by Ray tasks and
scored by Ray actors, each running its copy of :class:`ScanModels` (:mod:`forensix.ray_engine`);
they come back in input order with each image's :class:`ImageOutputs`, and this process makes
the rows from them exactly as from its own batches (:meth:`Scanner._apply`). For a sharded report
(:meth:`Scanner.shards`), Ray tasks make and write the rows, with the same
:class:`~forensix.stages.rows.RowMaker` this process uses.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .cache import CLEAN, PredictionCache, model_key
from .detector import Detector
from .gpu_decode import check_parity, first_jpegs
from .imaging import DEFAULT_MAX_PIXELS
from .inputs import ArchiveLister, InputItem, InputSpec, Limits, count_entries
from .limits import DEFAULT_DECODE_TIMEOUT
from .provenance import provenance
from .ray_options import RayOptions, require_ray
from .stages.batches import Block
from .stages.device_decode import decode_on_device
from .stages.entries import input_entries
from .stages.loader import LoaderOptions, prepared_blocks
from .stages.records import ATTR, IMAGE, MASK, SKIP_RESUMED, RecordBuilder
from .stages.rows import ImageOutputs, Pending, RowMaker, ScanStats, scores_of, writing_masks
from .stages.scoring import BatchQueue

if TYPE_CHECKING:
    from .attributor import Attributor
    from .localizer import Localizer
    from .shards import ShardIndex, ShardLine

PARITY_IMAGES = 8  # JPEGs scored both ways before the device decodes any (gpu_decode)
PARITY_LOOK_AT = 1000  # inputs searched for them


def default_workers() -> int:
    """Decode workers: all cores but the one the main process needs to feed the model (at most 16)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus - 1, 16))


@dataclass(frozen=True)
class ScanOptions:
    batch_size: int = 16
    workers: int = 0  # 0 = decode in the main process
    limits: Limits = field(default_factory=Limits)
    max_pixels: int = DEFAULT_MAX_PIXELS
    metadata: bool = True
    watermarks: bool = False  # read invisible generator watermarks (forensix[watermark]; forensix.watermarks)
    c2pa_trust: str | None = None  # PEM trust anchors or c2pa settings JSON: Content Credentials can be Trusted
    prefetch: int = 4  # blocks in flight per worker
    masks_dir: Path | None = None  # where mask files go (needs a localizer)
    masks_all: bool = False  # masks for every image, not only those judged fake
    mask_threads: int = 4  # threads re-decoding images and writing mask files
    gpu_decode: bool = False  # JPEGs decoded in batches on the model's device, not in the workers
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT  # seconds per image to decode, read notes, preprocess (0 = none)
    ray: RayOptions | None = None  # run the stages on a Ray cluster (forensix.ray_engine); None: here


class ResumeIndex:
    """Inputs already in a report, a multiset: a report with k rows of an input (path, member and
    sha256) stands for its first k occurrences in the input stream, and the next one is scanned.

    A worker sees the bytes (the sha256) of only the entries it prepares, so it cannot count a
    key's occurrences; the walk of the inputs counts, before entries go to the workers, the earlier
    entries with the same path and member (:meth:`walk`), which are at least as many. Fewer of those than the key's
    rows: the entry is certainly done and it is skipped undecoded (:meth:`reported`). Otherwise it
    is prepared, and the main process, which sees every record in order, decides exactly
    (:meth:`tally`); only a name given again with other bytes is prepared in vain.

    Compact, so that millions of rows fit in every worker: sorted 64-bit hashes of the keys and of
    their (path, member) names, 16 bytes a row, and the counts of the keys that repeat; the walk
    counts in 4 bytes per name. A false match needs a 64-bit collision.
    """

    def __init__(self, keys: np.ndarray | None = None, names: np.ndarray | None = None) -> None:
        empty = np.zeros(0, np.uint64)
        keys = empty if keys is None else keys
        self.rows = len(keys)
        self.keys, counts = np.unique(keys, return_counts=True)
        repeated = counts > 1
        self.repeated, self.repeats = self.keys[repeated], counts[repeated].astype(np.uint32)
        self.names = np.unique(names) if names is not None else empty

    @staticmethod
    def key(path: str, member: str, sha256: str) -> int:
        return _hash64(f"{path}\0{member}\0{sha256}")

    @staticmethod
    def name(path: str, member: str) -> int:
        return _hash64(f"{path}\0{member}")

    @classmethod
    def from_rows(cls, rows: list[tuple[str, str, str]]) -> ResumeIndex:
        keys = np.fromiter((cls.key(*r) for r in rows), dtype=np.uint64, count=len(rows))
        return cls(keys, np.fromiter((cls.name(p, m) for p, m, _ in rows), dtype=np.uint64, count=len(rows)))

    def __len__(self) -> int:
        """Rows in the report."""
        return self.rows

    def count(self, path: str, member: str, sha256: str) -> int:
        """How many rows of this input the report holds."""
        k = np.uint64(self.key(path, member, sha256))
        return self._count(k, _find(self.keys, k))

    def _count(self, k: np.uint64, at: int) -> int:
        """The rows of key ``k``, found at ``at`` in ``keys`` (-1: not there)."""
        if at < 0:
            return 0
        i = _find(self.repeated, k)
        return int(self.repeats[i]) if i >= 0 else 1

    def walk(self, entries: Iterable[InputItem]) -> Iterator[InputItem]:
        """``entries``, each one not skipped whose name is in the report given its ``repeats``."""
        seen = np.zeros(len(self.names), np.uint32)
        for item in entries:
            if not item.skipped and (i := _find(self.names, np.uint64(self.name(item.path, item.member)))) >= 0:
                item.repeats = int(seen[i])
                seen[i] += 1
            yield item

    def reported(self, path: str, member: str, sha256: str, repeats: int) -> bool:
        """Whether an entry is surely among its key's first k occurrences: its name came fewer than k times before."""
        return repeats < self.count(path, member, sha256)

    def tally(self) -> ResumeTally:
        """The exact count, for one pass over the records in input order."""
        return ResumeTally(self)


class ResumeTally:
    """Occurrences of the report's keys so far in one scan's records, in input order (the main process)."""

    def __init__(self, index: ResumeIndex) -> None:
        self.index = index
        self.taken = np.zeros(len(index.keys), np.uint32)

    def take(self, path: str, member: str, sha256: str) -> bool:
        """Whether this record, the next occurrence of its key, is one the report holds (then it is counted)."""
        k = np.uint64(self.index.key(path, member, sha256))
        i = _find(self.index.keys, k)
        if i < 0 or self.taken[i] >= self.index._count(k, i):
            return False
        self.taken[i] += 1
        return True


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


def _find(sorted_keys: np.ndarray, k: np.uint64) -> int:
    """The index of ``k`` in ``sorted_keys``, or -1."""
    i = int(np.searchsorted(sorted_keys, k))
    return i if i < len(sorted_keys) and sorted_keys[i] == k else -1


def scan_entries(
    spec: InputSpec, limits: Limits, done: ResumeIndex | None = None, archives: ArchiveLister | None = None
) -> Iterator[InputItem]:
    """A scan's entries in input order, its archives listed by ``archives`` if given; resuming, each
    counted against the report's names (:meth:`ResumeIndex.walk`)."""
    entries = input_entries(spec, limits, archives)
    return done.walk(entries) if done is not None else entries


def _part(inputs: Any, at: int, size: int) -> Any:
    """``size`` of the inputs (a tensor, a list, or None) from ``at``."""
    return None if inputs is None else inputs[at : at + size]


@dataclass
class ScanModels:
    """The models a scan runs on each batch of images, wherever it runs them: the scan's process, or a
    Ray actor holding its own copy (:mod:`forensix.ray_engine`)."""

    detector: Detector
    localizer: Localizer | None = None
    attributor: Attributor | None = None
    masks_all: bool = False  # mask files for every image, not only those judged fake
    batch_size: int = 16  # the localizer's batches

    def run(
        self,
        batch: torch.Tensor,
        attr_inputs: torch.Tensor | None = None,
        mask_inputs: list[torch.Tensor] | None = None,
    ) -> list[ImageOutputs]:
        """Each image's outputs: the detector on ``batch``; the attributor on ``attr_inputs`` (its own
        preprocessing) or ``batch``; the localizer on the ``mask_inputs`` of the images that get masks
        (finite scores, judged fake unless ``masks_all``). More images than ``batch_size`` (a Ray
        block) run in batches of that size."""
        if len(batch) > self.batch_size:  # a Ray block: in model batches
            return [
                o
                for at in range(0, len(batch), self.batch_size)
                for o in self.run(*(_part(x, at, self.batch_size) for x in (batch, attr_inputs, mask_inputs)))
            ]
        raw = self.detector.raw_logits(batch)
        outputs = [ImageOutputs(v) for v in raw.tolist()]
        if self.attributor is not None:
            probabilities = self.attributor.probabilities(attr_inputs if attr_inputs is not None else batch)
            for o, p in zip(outputs, probabilities):
                o.probabilities = p
        if self.localizer is not None and mask_inputs is not None:
            threshold = self.detector.threshold
            chosen = [
                (o, x)
                for o, x, score in zip(outputs, mask_inputs, scores_of(raw, self.detector.temperature))
                if math.isfinite(score) and (self.masks_all or score >= threshold)
            ]
            for start in range(0, len(chosen), self.batch_size):
                group = chosen[start : start + self.batch_size]
                for (o, _), prob in zip(group, self.localizer.probabilities(torch.stack([x for _, x in group]))):
                    o.mask = prob
        return outputs


class Scanner:
    """Iterate to get one row per input image, in input order; ``stats`` counts as it goes.

    With a ``localizer`` and ``options.masks_dir``, images judged fake (all with
    ``options.masks_all``) also get mask files; their rows name the overlay and the flagged area.
    With an ``attributor``, every scored row gets its most likely ``source`` and ``source_score``.
    With a ``cache``, every logit the detector computes is stored by image sha256 and model, and an
    image found there is neither decoded nor scored again (unless a localizer or an attributor,
    which need its pixels, runs too).
    """

    def __init__(
        self,
        spec: InputSpec,
        detector: Detector,
        options: ScanOptions | None = None,
        done: ResumeIndex | None = None,
        localizer: Localizer | None = None,
        attributor: Attributor | None = None,
        cache: PredictionCache | None = None,
    ) -> None:
        self.spec, self.detector, self.localizer, self.attributor = spec, detector, localizer, attributor
        self.cache, self.cache_key = cache, model_key(detector) if cache is not None else ""
        # The attributor's own input only when the detector's batch is not already that input.
        self.attr_cfg = None
        if attributor is not None and attributor.config.preprocess != detector.config.preprocess:
            self.attr_cfg = attributor.config.preprocess
        self.options = options or ScanOptions()
        if (localizer is None) != (self.options.masks_dir is None):
            raise ValueError("a localizer and a masks folder go together (--localizer with --masks DIR)")
        if self.options.ray is not None and (cache is not None or self.options.gpu_decode):
            raise ValueError("--engine ray does not take --use-cache or --gpu-decode; scan with --engine local")
        if self.options.ray is not None:
            require_ray()  # now, before a report is opened
        self.done = done if done is not None and len(done) else None
        self._tally: ResumeTally | None = None  # resuming: the report's keys met so far (set by __iter__)
        self.stats = ScanStats()
        self.rows = RowMaker.of(detector, attributor, self.options.masks_dir, self.options.max_pixels)
        self.notices: list[str] = []  # things the user should know about how the scan ran
        self.gpu_parity: bool | None = None  # gpu_decode: the parity check's verdict; None until it has run
        # What runs on each batch: here, or in Ray actors holding copies (options.ray: forensix.ray_engine)
        self.models = ScanModels(detector, localizer, attributor, self.options.masks_all, self.options.batch_size)
        if self.options.gpu_decode and detector.device.type != "cuda":
            self.notices.append(
                f"--gpu-decode with the model on {detector.device.type}: JPEGs are decoded in the main process, "
                "not in the workers, which is slower; it pays only with a CUDA device"
            )

    def _builder(self) -> RecordBuilder:
        """The scan's record builder: notes, the localizer's and attributor's inputs, the cache, device JPEGs."""
        o, extra = self.options, []
        if self.localizer is not None:
            extra.append((MASK, self.localizer.config.preprocess))
        if self.attr_cfg is not None:
            extra.append((ATTR, self.attr_cfg))
        lookup = None  # a localizer or an attributor needs every image's pixels: the cache is then only written
        if self.cache is not None and self.localizer is None and self.attributor is None:
            lookup = partial(self.cache.get, model=self.cache_key, perturbation=CLEAN)
        return RecordBuilder(
            self.detector.config.preprocess,
            max_pixels=o.max_pixels,
            metadata=o.metadata,
            extra=tuple(extra),
            keep_bytes=self.localizer is not None,  # the mask files are drawn at the image's own size
            lookup=lookup,
            done=self.done.reported if self.done is not None else None,
            device_jpegs=o.gpu_decode and self._device_decodes(),
            watermarks=o.watermarks,
            c2pa_trust=o.c2pa_trust,
            decode_timeout=o.decode_timeout,
        )

    def blocks(self) -> Iterator[Block]:
        """The prepared blocks in input order, unscored: the decode stage alone (``forensix bench`` times it).

        A worker that dies (a decoder's crash on a hostile file, the out-of-memory killer) costs no
        row (:func:`forensix.stages.loader.prepared_blocks`); ``stats.worker_deaths`` counts it.
        """
        o = self.options
        loader = LoaderOptions(o.batch_size, o.workers, o.prefetch, pin_memory=self.detector.device.type == "cuda")
        entries = scan_entries(self.spec, o.limits, self.done)
        yield from prepared_blocks(entries, self._builder(), loader, self._worker_died)

    def _worker_died(self, times: int = 1) -> None:
        self.stats.worker_deaths += times

    def __iter__(self) -> Iterator[dict[str, Any]]:
        size = self.options.batch_size
        pool = ThreadPoolExecutor(self.options.mask_threads, "forensix-mask") if self.localizer else None
        # In input order; busy while its mask files are written. Scored here, or already on Ray.
        queue = BatchQueue(size, partial(self._score, pool), busy=writing_masks)
        self._tally = self.done.tally() if self.done is not None else None
        rows = self._rows_on_ray(queue, pool) if self.options.ray is not None else self._rows_here(queue)
        try:
            for pending in rows:
                yield self.rows.finish(pending, self.stats)
        finally:
            rows.close()  # now, not when collected: a Ray scan disconnects from its cluster
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            self._say_how_it_ran()

    def _say_how_it_ran(self) -> None:
        """The notices of a scan that has ended: workers lost, batches that did not fit."""
        if self.stats.worker_deaths:
            self.notices.append(
                f"a decode worker died {self.stats.worker_deaths} time(s) (a decoder crash, out of memory, or "
                "an image still decoding at twice --decode-timeout); "
                "the images it held were read again one by one, in processes of their own: no row is lost"
            )
        for runner in (self.detector, self.localizer, self.attributor):
            if runner is not None and runner.max_batch is not None:
                self.notices.append(
                    f"{runner.name} ran out of GPU memory at batch {self.options.batch_size}: it ran in pieces of "
                    f"{runner.max_batch} images (same scores; pass --batch-size {runner.max_batch} next time)"
                )

    def shards(self, index: ShardIndex) -> Iterator[ShardLine]:
        """The Ray engine writing the sharded report ``index``: the rows made and written as shards by
        Ray tasks (:func:`forensix.ray_engine.written_shards`); each shard's line in input order, its
        counts added to ``stats``. The caller commits them (:func:`forensix.scan_report.write_report`)."""
        from .ray_engine import written_shards

        o = self.options
        if o.ray is None or self.done is not None:
            raise ValueError("a sharded report is written by --engine ray, and resumed by its index")
        entries = partial(scan_entries, self.spec, o.limits, None)
        lines = written_shards(
            entries, self._builder(), self.models, self.rows, o.ray, index, o.mask_threads,
            self._worker_died,
        )  # fmt: skip
        try:
            for line in lines:
                self.stats.add(line.stats)
                yield line
        finally:
            lines.close()  # now, not when collected: the scan disconnects from its cluster
            self._say_how_it_ran()

    def _rows_here(self, queue: BatchQueue[Pending]) -> Iterator[Pending]:
        """The local engine: blocks from DataLoader workers, scored in this process in full model batches."""
        for block in self.blocks():
            if self.gpu_parity:
                d = self.detector
                decode_on_device(block, d.config.preprocess, d.device, self.options.max_pixels)
            if self._tally is not None:
                self._drop_resumed(block)
            yield from queue.push(self.rows.pending(block, self.stats), block.inputs.get(IMAGE))
        yield from queue.close()

    def _rows_on_ray(self, queue: BatchQueue[Pending], pool: ThreadPoolExecutor | None) -> Iterator[Pending]:
        """The Ray engine: blocks built and scored by Ray actors (:mod:`forensix.ray_engine`), rows made here."""
        from .ray_engine import scored_blocks

        o = self.options
        assert o.ray is not None
        entries = partial(scan_entries, self.spec, o.limits, self.done)
        block_bytes = LoaderOptions().block_bytes
        expected = 0  # the next entry: Ray keeps the order, and this checks it keeps every block
        for scored in scored_blocks(
            entries, self._builder(), self.models, o.ray, o.ray.block_for(o.batch_size), block_bytes, self._worker_died
        ):
            block = scored.block
            if block.records[0].index != expected:
                raise RuntimeError(f"the Ray scan lost its place: expected entry {expected}, got a block from "
                                   f"{block.records[0].index}")  # fmt: skip
            expected = block.records[-1].index + 1
            if self._tally is not None:
                self._drop_resumed(block)
            pending = [p for p, _ in self.rows.pending(block, self.stats)]
            ready = [p for p in pending if p.record.index in scored.outputs]
            self._apply(ready, [scored.outputs[p.record.index] for p in ready], pool)
            yield from queue.push(((p, False) for p in pending), None)  # nothing left to score: order and masks
        yield from queue.close()

    def _drop_resumed(self, block: Block) -> None:
        """Resuming: skip the records the report holds, counted exactly in input order (:class:`ResumeTally`).

        A worker skips undecoded only what is surely done; what it could not tell (a name given again)
        it prepared, and its inputs leave the block here. Each input stacks over the records that have one.
        """
        assert self._tally is not None
        kept: list[bool] = []  # for each record with inputs: whether it stays
        for record in block.records:
            prepared = record.has_input
            if record.skip not in ("", SKIP_RESUMED):
                continue
            if self._tally.take(record.path, record.member, record.sha256):
                record.skip = SKIP_RESUMED
            elif record.skip == SKIP_RESUMED:  # a worker skipped what the report lacks: never drop a row silently
                raise RuntimeError(f"resume lost its place at {record.path} {record.member}")
            if prepared:
                kept.append(not record.skip)
        if not all(kept):
            rows = torch.tensor(kept)
            block.inputs = {name: t[rows] for name, t in block.inputs.items() if rows.any()}

    def _score(self, pool: ThreadPoolExecutor | None, batch: torch.Tensor, scored: list[Pending]) -> None:
        """Score one model batch (the images of ``scored``, in order) here, then use what the models said."""
        attr = torch.stack([p.inputs.pop(ATTR) for p in scored]) if self.attr_cfg is not None else None
        masks = [p.inputs.pop(MASK) for p in scored] if self.localizer is not None else None
        self._apply(scored, self.models.run(batch, attr, masks), pool)

    def _apply(self, scored: list[Pending], outputs: list[ImageOutputs], pool: ThreadPoolExecutor | None) -> None:
        """What the models said of each record of ``scored``: its row's fields, its mask job, its cache entry."""
        self.rows.apply(scored, outputs, pool.submit if pool is not None else None)
        if self.cache is not None:
            fresh = zip(scored, (o.logit for o in outputs))
            self.cache.put_many([(p.row["sha256"], self.cache_key, CLEAN, v) for p, v in fresh if math.isfinite(v)])

    def _device_decodes(self) -> bool:
        """gpu_decode: the parity check on the first JPEGs, before any worker starts, picks the whole scan's decoder."""
        if self.gpu_parity is None:
            o = self.options
            jpegs = first_jpegs(self.spec, o.limits, PARITY_IMAGES, PARITY_LOOK_AT, o.max_pixels)
            if not jpegs:
                self.notices.append(f"--gpu-decode: no JPEG among the first {PARITY_LOOK_AT} inputs; Pillow decoded")
                return False
            parity = check_parity(self.detector, jpegs)
            self.gpu_parity = parity.ok
            if not parity.images:
                self.notices.append(
                    f"JPEGs decoded with Pillow, not on the device: none of the first {len(jpegs)} decoded both ways"
                )
            elif not parity.ok:
                self.notices.append(
                    f"JPEGs decoded with Pillow, not on the device: max |Δ score| {parity.max_score_diff:.2g} "
                    f"on {parity.images} images exceeds {parity.tolerance:g}"
                )
        return self.gpu_parity

    def count_entries(self) -> int | None:
        """How many entries the stream has, from a second walk that reads no file (a progress bar's
        total); None where a compressed tar would have to be decompressed again to tell."""
        return count_entries(self.spec.paths(), self.options.limits)

    def provenance(self) -> dict[str, Any]:
        """What produces this scan's rows, so that a report can be reproduced (and a resume checked)."""
        o = self.options
        found = provenance(
            self.detector,
            self.localizer,
            self.attributor,
            batch_size=o.batch_size,
            limits={**asdict(o.limits), "max_pixels": o.max_pixels, "decode_timeout": o.decode_timeout},
            metadata=o.metadata,
            watermarks=o.watermarks,
            c2pa_trust=None if o.c2pa_trust is None else hashlib.sha256(o.c2pa_trust.encode()).hexdigest(),
            gpu_decode=o.gpu_decode,
            cache=None if self.cache is None else {"path": str(self.cache.path), "model_key": self.cache_key},
            resumed_from_rows=len(self.done) if self.done is not None else 0,
        )
        if o.ray is not None:  # the models run in the actors: their device and precision, not this process's
            found["engine"] = {"name": "ray", **asdict(o.ray)}
            runners = (self.detector, self.localizer, self.attributor)
            for record, runner in zip((found, found["localizer"], found["attributor"]), runners):
                if record is not None and runner is not None:
                    record["device"] = f"ray actors: {o.ray.device}"
                    if runner.backend.name == "torch":  # an ONNX file runs at the precision it was exported in
                        record["precision"] = o.ray.precision
        else:
            found["engine"] = {"name": "local", "workers": o.workers}
        if found["localizer"] is not None:
            found["localizer"]["masks_dir"] = str(o.masks_dir)
            found["localizer"]["masks_for"] = "all images" if o.masks_all else "images judged fake"
        return found


def scan(
    paths: list[str],
    detector: Detector,
    localizer: Localizer | None = None,
    attributor: Attributor | None = None,
    cache: PredictionCache | None = None,
    **options: Any,
) -> Iterator[dict[str, Any]]:
    """One row per image in ``paths`` (files, folders, archives), in order: ``forensix scan`` as a library.

    ``options`` are :class:`ScanOptions`' fields; ``cache`` is ``scan --use-cache``.
    """
    spec, scan_options = InputSpec.from_args(paths), ScanOptions(**options)
    return iter(Scanner(spec, detector, scan_options, localizer=localizer, attributor=attributor, cache=cache))
