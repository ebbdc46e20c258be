"""The scan: inputs → decode + notes (DataLoader workers) → batched scoring → one row per input, in order.

Every worker walks the same deterministic entry stream (:func:`forensix.inputs.iter_entries`) and
prepares only its own blocks of ``batch_size`` consecutive entries (block j → worker j mod W), so
nothing but finished records crosses a process boundary and memory does not grow with the number
of inputs. Each record carries its entry index; the main process restores input order through a
reorder buffer bounded by the DataLoader's prefetch window, regroups images into full model
batches, scores them and emits rows. Non-images found in folders and archives, and inputs already
in a resumed report, travel as markers so the order stays gapless; they are counted, not written.

With a localizer, workers also make its input tensor and keep the file's bytes; the main process
runs the localizer on the images judged fake (or all, ``masks_all``) and a small thread pool
re-decodes them and writes their mask files (:mod:`forensix.overlay`) while the next batches run.
Each row leaves once its mask files are written, still in input order.

With ``gpu_decode``, a parity check first scores the first JPEGs of the inputs both ways, before
any worker starts. If the scores agree within 1e-3, workers only read a JPEG's header and notes and
hand over its bytes, and the main process decodes each block's JPEGs in one batched call on the
model's device (nvjpeg on CUDA); otherwise the workers decode everything with Pillow as usual and
the scan says why in ``notices``.

A worker that dies (a decoder's crash, the out-of-memory killer) costs no row: the first block not
yet handed over is prepared entry by entry in processes of their own (the entry that crashes its
process becomes an error row) and workers start again after it (:meth:`Scanner.blocks`).

With an attributor, the main process runs it on every scored batch and fills ``source`` and
``source_score``; workers prepare its input too when its preprocessing differs from the
detector's (else the detector's batch serves both).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .cache import CLEAN, PredictionCache, model_key
from .detector import Detector, scale_logits
from .gpu_decode import check_parity, first_jpegs, is_complete_jpeg, preprocess_jpegs
from .imaging import DEFAULT_MAX_PIXELS, DecodeError, decode_image, open_image, preprocess
from .inputs import InputItem, InputSpec, Limits, iter_entries
from .metadata import read_metadata
from .models.config import PreprocessConfig
from .overlay import MaskFiles, write_mask_files
from .provenance import provenance
from .schema import new_row
from .workers import ProcessDied, WorkerLoader, init_worker, run_alone, worker_died

if TYPE_CHECKING:
    from .attributor import Attributor
    from .localizer import Localizer

SKIP_NON_IMAGE = "non-image"
SKIP_RESUMED = "resumed"
READ_ERRORS = (OSError, ValueError, EOFError, RuntimeError)  # what reading an entry raises (zipfile/tarfile: all)
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
    prefetch: int = 4  # blocks in flight per worker
    masks_dir: Path | None = None  # where mask files go (needs a localizer)
    masks_all: bool = False  # masks for every image, not only those judged fake
    mask_threads: int = 4  # threads re-decoding images and writing mask files
    gpu_decode: bool = False  # JPEGs decoded in batches on the model's device, not in the workers


class ResumeIndex:
    """Inputs already in a report, as sorted 64-bit hashes of (path, member, sha256): 8 bytes each.

    Compact so that millions of rows fit in every worker; a false match needs a 64-bit collision.
    """

    def __init__(self, keys: np.ndarray | None = None) -> None:
        self.keys = np.unique(keys) if keys is not None else np.zeros(0, np.uint64)

    @staticmethod
    def key(path: str, member: str, sha256: str) -> int:
        text = f"{path}\0{member}\0{sha256}".encode("utf-8", "surrogateescape")
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")

    @classmethod
    def from_rows(cls, rows: list[tuple[str, str, str]]) -> ResumeIndex:
        return cls(np.fromiter((cls.key(*r) for r in rows), dtype=np.uint64, count=len(rows)))

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, triple: tuple[str, str, str]) -> bool:
        k = np.uint64(self.key(*triple))
        i = int(np.searchsorted(self.keys, k))
        return i < len(self.keys) and self.keys[i] == k


@dataclass
class Record:
    """One prepared entry: a row (without score), its input tensor(s) if it decoded, or a skip marker.

    ``mask_tensor`` and ``raw`` (the file's bytes) are there only when a localizer runs, ``attr_tensor``
    only when an attributor with its own preprocessing runs.
    """

    index: int
    row: dict[str, Any] | None
    tensor: torch.Tensor | None = None
    skip: str = ""
    mask_tensor: torch.Tensor | None = None
    raw: bytes | None = None
    mask_job: Future[MaskFiles] | None = None
    attr_tensor: torch.Tensor | None = None
    jpeg: bytes | None = None  # a JPEG left for the device to decode (``gpu_decode``)
    logit: float | None = None  # the raw logit found in the prediction cache: not decoded, not scored again

    @property
    def has_input(self) -> bool:
        """Whether the block holds a model input for it: an image read, decoded and not found in the cache."""
        return not self.skip and self.row is not None and not self.row["error"] and self.logit is None


@dataclass
class Block:
    """Records of consecutive entries with their tensors stacked: what a worker hands over at once."""

    records: list[Record]
    tensor: torch.Tensor | None  # (n, 3, H, W) for the records that have one, in order
    mask_tensor: torch.Tensor | None = None  # the localizer's inputs of the same records
    attr_tensor: torch.Tensor | None = None  # the attributor's

    def pin_memory(self) -> Block:
        def pin(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.pin_memory() if t is not None else None

        return Block(self.records, pin(self.tensor), pin(self.mask_tensor), pin(self.attr_tensor))


def collate(records: list[Record]) -> Block:
    def stack(attr: str) -> torch.Tensor | None:
        tensors = [getattr(r, attr) for r in records if getattr(r, attr) is not None]
        for r in records:
            setattr(r, attr, None)  # the stacked copy is the one that travels
        return torch.stack(tensors) if tensors else None

    return Block(records, stack("tensor"), stack("mask_tensor"), stack("attr_tensor"))


class ScanDataset(IterableDataset):
    """Prepared records for this worker's share of the input stream (all of it without workers).

    With ``mask_cfg`` (a localizer's preprocessing) records also carry the localizer's input and
    the file's bytes, from which the mask files are drawn at the image's own size; with
    ``attr_cfg`` (an attributor's) the attributor's input. With ``lookup`` (sha256 → a cached raw
    logit, or None) an image already scored is not decoded: its record carries the logit.
    """

    def __init__(
        self,
        spec: InputSpec,
        cfg: PreprocessConfig,
        options: ScanOptions,
        done: ResumeIndex | None = None,
        mask_cfg: PreprocessConfig | None = None,
        attr_cfg: PreprocessConfig | None = None,
        lookup: Callable[[str], float | None] | None = None,
    ) -> None:
        self.spec, self.cfg, self.options, self.done = spec, cfg, options, done
        self.mask_cfg, self.attr_cfg, self.lookup = mask_cfg, attr_cfg, lookup
        self.start = 0  # entries before this one are not this dataset's (a scan restarted after a crash)

    def entries(self) -> Iterator[tuple[int, InputItem]]:
        """(index, entry) of every input entry from ``start`` on."""
        for index, item in enumerate(iter_entries(self.spec.paths(), self.options.limits)):
            if index >= self.start:
                yield index, item

    def __iter__(self) -> Iterator[Record]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        block = self.options.batch_size
        for index, item in self.entries():
            if (index // block) % workers == worker:
                yield self.prepare(index, item)

    def prepare_alone(self, index: int, item: InputItem) -> Record:
        """``prepare`` in a process of its own: if reading the file crashes that process, an error row."""
        try:
            return run_alone(self.prepare, index, item)
        except ProcessDied as e:
            row = new_row(item)
            row["error"] = f"cannot decode image: {e}"
            try:  # reading and hashing are safe here: it is decoding that crashes
                row["sha256"] = hashlib.sha256(item.read()).hexdigest()
            except READ_ERRORS:
                pass
            return Record(index, row)

    def prepare(self, index: int, item: InputItem) -> Record:
        """Read, hash, decode, read notes and preprocess one entry; every failure becomes the row's error."""
        if item.skipped:
            return Record(index, None, skip=SKIP_NON_IMAGE)
        row = new_row(item)
        data = b""
        try:
            if not item.error:
                data = item.read()
                row["sha256"] = hashlib.sha256(data).hexdigest()
        except READ_ERRORS as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            row["error"] = f"cannot read: {reason}"
        if self.done is not None and (item.path, item.member, row["sha256"]) in self.done:
            return Record(index, None, skip=SKIP_RESUMED)
        if row["error"]:
            return Record(index, row)
        options, only_detector = self.options, self.mask_cfg is None and self.attr_cfg is None
        try:
            if self.lookup is not None and (logit := self.lookup(row["sha256"])) is not None:
                return self._undecoded(index, row, data, logit=logit)
            if only_detector and options.gpu_decode and is_complete_jpeg(data):
                return self._undecoded(index, row, data, jpeg=data)
            decoded = decode_image(data, options.max_pixels)
            row.update(width=decoded.width, height=decoded.height, format=decoded.format)
            if options.metadata:
                meta = read_metadata(data, decoded.source)
                row["notes"], row["metadata"] = meta.notes, meta.fields
            record = Record(index, row, preprocess(decoded.image, self.cfg))
            if self.mask_cfg is not None:
                record.mask_tensor, record.raw = preprocess(decoded.image, self.mask_cfg), data
            if self.attr_cfg is not None:
                record.attr_tensor = preprocess(decoded.image, self.attr_cfg)
            return record
        except (DecodeError, ValueError, OSError) as e:
            row["error"] = str(e)
            return Record(index, row)

    def _undecoded(self, index: int, row: dict[str, Any], data: bytes, **fields: Any) -> Record:
        """A record from the image's header and notes alone: its pixels are decoded elsewhere, or not needed."""
        header = open_image(data, self.options.max_pixels)
        row.update(width=header.size[0], height=header.size[1], format=header.format)
        if self.options.metadata:
            meta = read_metadata(data, header)
            row["notes"], row["metadata"] = meta.notes, meta.fields
        return Record(index, row, **fields)


def ordered_blocks(loader: DataLoader, first: int = 0) -> Iterator[Block]:
    """Blocks in input order from entry ``first`` on, whatever order the workers finish them in."""
    waiting: dict[int, Block] = {}
    expected = first
    for block in loader:
        waiting[block.records[0].index] = block
        while expected in waiting:
            ready = waiting.pop(expected)
            expected = ready.records[-1].index + 1
            yield ready
    if waiting:  # a worker died without raising: never drop rows silently
        raise RuntimeError(f"scan lost its place: expected entry {expected}, have {sorted(waiting)}")


@dataclass
class ScanStats:
    entries: int = 0
    images: int = 0  # rows written
    fake: int = 0
    real: int = 0
    errors: int = 0
    skipped_non_images: int = 0
    resumed: int = 0
    masks: int = 0  # images whose mask files were written
    cached: int = 0  # images whose logit came from the prediction cache
    worker_deaths: int = 0  # decode workers that died (the scan went on without losing a row)


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
        self.done = done if done is not None and len(done) else None
        self.stats = ScanStats()
        self.notices: list[str] = []  # things the user should know about how the scan ran
        self.gpu_parity: bool | None = None  # gpu_decode: the parity check's verdict; None until it has run
        if self.options.gpu_decode and detector.device.type != "cuda":
            self.notices.append(
                f"--gpu-decode with the model on {detector.device.type}: JPEGs are decoded in the main process, "
                "not in the workers, which is slower; it pays only with a CUDA device"
            )

    def _dataset(self) -> ScanDataset:
        o = self.options
        if o.gpu_decode and not self._device_decodes():
            o = replace(o, gpu_decode=False)  # the workers decode every image with Pillow
        mask_cfg = self.localizer.config.preprocess if self.localizer is not None else None
        lookup = None  # a localizer or an attributor needs every image's pixels: the cache is then only written
        if self.cache is not None and self.localizer is None and self.attributor is None:
            lookup = partial(self.cache.get, model=self.cache_key, perturbation=CLEAN)
        return ScanDataset(self.spec, self.detector.config.preprocess, o, self.done, mask_cfg, self.attr_cfg, lookup)

    def _loader(self, dataset: ScanDataset) -> DataLoader:
        o = self.options
        extra: dict[str, Any] = {}
        if o.workers > 0:
            # in_order=False: a slow image in one worker does not stall the others; ordered_blocks
            # restores the order, holding at most workers x prefetch blocks.
            extra = dict(prefetch_factor=o.prefetch, worker_init_fn=init_worker, in_order=False)
        return WorkerLoader(
            dataset,
            batch_size=o.batch_size,
            num_workers=o.workers,
            collate_fn=collate,
            pin_memory=self.detector.device.type == "cuda",
            **extra,
        )

    def blocks(self) -> Iterator[Block]:
        """The prepared blocks in input order, unscored: the decode stage alone (``forensix bench`` times it).

        A worker that dies (a decoder's crash on a hostile file, the out-of-memory killer) loses the
        blocks it held. The first block not yet handed over is then prepared entry by entry, each
        in a process of its own, so that the file that kills its process becomes an error row;
        workers start again after it. Every crash moves the scan on by at least one block.
        """
        dataset = self._dataset()
        while True:
            try:
                for block in ordered_blocks(self._loader(dataset), dataset.start):
                    dataset.start = block.records[-1].index + 1
                    yield block
                return
            except Exception as e:
                if not worker_died(e):
                    raise
            self.stats.worker_deaths += 1
            entries = itertools.islice(dataset.entries(), self.options.batch_size)
            records = [dataset.prepare_alone(index, item) for index, item in entries]
            if not records:
                return
            dataset.start = records[-1].index + 1
            yield collate(records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pending: deque[Record] = deque()  # in order, waiting for their batch to be scored
        queued: list[torch.Tensor] = []  # the unscored tensors of pending, in order
        size = self.options.batch_size
        pool = ThreadPoolExecutor(self.options.mask_threads, "forensix-mask") if self.localizer else None

        def score(n: int) -> None:
            joined = queued[0] if len(queued) == 1 else torch.cat(queued)
            batch, rest = joined[:n], joined[n:]
            queued[:] = [rest] if len(rest) else []
            raw = self.detector.raw_logits(batch)
            scores = iter(torch.sigmoid(scale_logits(raw, self.detector.temperature)).tolist())
            scored = []
            for r in pending:
                if r.tensor is not None and r.row["score"] is None:
                    r.row["score"] = next(scores, None)
                    if r.row["score"] is None:
                        break
                    scored.append(r)
            if self.cache is not None:
                fresh = zip(scored, raw.tolist())
                self.cache.put_many([(r.row["sha256"], self.cache_key, CLEAN, v) for r, v in fresh if math.isfinite(v)])
            if self.attributor is not None:
                self._attribute(scored, batch)
            if pool is not None:
                self._start_masks(scored, pool)

        def ready(wait: bool = False) -> Iterator[dict[str, Any]]:
            while pending and (pending[0].tensor is None or pending[0].row["score"] is not None):
                job = pending[0].mask_job
                # Mask files are written while the next batches run; wait only when they pile up.
                if job is not None and not job.done() and not wait and len(pending) <= 4 * size:
                    return
                yield self._finish(pending.popleft())

        try:
            for block in self.blocks():
                if self.gpu_parity:
                    self._decode_jpegs(block)
                tensors = iter(block.tensor) if block.tensor is not None else iter(())
                mask_tensors = iter(block.mask_tensor) if block.mask_tensor is not None else None
                attr_tensors = iter(block.attr_tensor) if block.attr_tensor is not None else None
                for record in block.records:
                    self.stats.entries += 1
                    if record.skip:
                        self._count_skip(record.skip)
                        continue
                    if record.logit is not None:
                        record.row["score"] = self._cached_score(record.logit)
                    elif record.has_input:
                        record.tensor = next(tensors)  # a view into the block's (pinned) tensor
                        if mask_tensors is not None:
                            record.mask_tensor = next(mask_tensors)
                        if attr_tensors is not None:
                            record.attr_tensor = next(attr_tensors)
                    pending.append(record)
                if block.tensor is not None:
                    queued.append(block.tensor)
                while sum(len(t) for t in queued) >= size:
                    score(size)
                    yield from ready()
                if queued and len(pending) > 4 * size:  # many error rows behind a part batch: score it now
                    score(size)
                yield from ready()
            if queued:
                score(size)
            yield from ready(wait=True)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if self.stats.worker_deaths:
                self.notices.append(
                    f"a decode worker died {self.stats.worker_deaths} time(s) (a decoder crash, or out of memory); "
                    "the images it held were read again one by one, in processes of their own: no row is lost"
                )
            for runner in (self.detector, self.localizer, self.attributor):
                if runner is not None and runner.max_batch is not None:
                    self.notices.append(
                        f"{runner.name} ran out of GPU memory at batch {size}: it ran in pieces of "
                        f"{runner.max_batch} images (same scores; pass --batch-size {runner.max_batch} next time)"
                    )

    def _cached_score(self, logit: float) -> float:
        """P(fake) from a cached raw logit, by the very operations that score a batch."""
        self.stats.cached += 1
        raw = torch.tensor([logit], dtype=torch.float32)
        return float(torch.sigmoid(scale_logits(raw, self.detector.temperature)).item())

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

    def _decode_jpegs(self, block: Block) -> None:
        """Decode the block's JPEGs on the model's device and make ``block.tensor`` every input, in order, there."""
        device, cfg = self.detector.device, self.detector.config.preprocess
        jpegs = [r for r in block.records if r.jpeg is not None]
        decoded: dict[int, torch.Tensor] = {}
        if jpegs:
            try:
                decoded = {id(r): t for r, t in zip(jpegs, preprocess_jpegs([r.jpeg for r in jpegs], cfg, device))}
            except (RuntimeError, ValueError):
                pass  # one file the device decoder refuses fails the batch: take them one by one
        for r in jpegs:
            if id(r) not in decoded and (t := self._decode_one(r)) is not None:
                decoded[id(r)] = t
            r.jpeg = None
        cpu = iter(block.tensor) if block.tensor is not None else iter(())
        ordered = [
            decoded[id(r)] if id(r) in decoded else next(cpu).to(device, non_blocking=True)
            for r in block.records
            if r.has_input
        ]
        block.tensor = torch.stack(ordered) if ordered else None

    def _decode_one(self, record: Record) -> torch.Tensor | None:
        """One JPEG on the device if it decodes there, else with Pillow; None (an error row) if neither."""
        cfg, device = self.detector.config.preprocess, self.detector.device
        try:
            return preprocess_jpegs([record.jpeg], cfg, device)[0]
        except (RuntimeError, ValueError):
            pass
        try:
            return preprocess(decode_image(record.jpeg, self.options.max_pixels).image, cfg).to(device)
        except (DecodeError, ValueError, OSError) as e:
            record.row["error"] = str(e)
            return None

    def _attribute(self, scored: list[Record], batch: torch.Tensor) -> None:
        """Run the attributor on the records the detector just scored (its ``batch``, or their own inputs)."""
        assert self.attributor is not None
        inputs = torch.stack([r.attr_tensor for r in scored]) if self.attr_cfg is not None else batch
        probabilities = self.attributor.probabilities(inputs)
        for r, (source, p) in zip(scored, self.attributor.top(probabilities)):
            if math.isfinite(p):
                r.row["source"], r.row["source_score"] = source, p
            elif not r.row["error"]:
                r.row["error"] = "the attributor returned a non-finite score (try --precision fp32)"
            r.attr_tensor = None

    def _start_masks(self, scored: list[Record], pool: ThreadPoolExecutor) -> None:
        """Run the localizer on the scored records that get masks; write their files in ``pool``."""
        assert self.localizer is not None and self.options.masks_dir is not None
        threshold = self.detector.threshold
        chosen = []
        for r in scored:
            score = r.row["score"]
            if math.isfinite(score) and (self.options.masks_all or score >= threshold):
                chosen.append(r)
            else:
                r.raw = r.mask_tensor = None
        if not chosen:
            return
        size = self.options.batch_size
        for start in range(0, len(chosen), size):
            group = chosen[start : start + size]
            probs = self.localizer.probabilities(torch.stack([r.mask_tensor for r in group]))
            for r, prob in zip(group, probs):
                r.mask_job = pool.submit(
                    _write_masks, r.raw, prob, self.options.masks_dir, r.row, self.options.max_pixels
                )
                r.raw = r.mask_tensor = None

    def count_entries(self) -> int:
        """How many entries the stream has (a second walk; for a progress bar's total)."""
        return sum(1 for _ in iter_entries(self.spec.paths(), self.options.limits))

    def provenance(self) -> dict[str, Any]:
        """What produces this scan's rows, so that a report can be reproduced (and a resume checked)."""
        o = self.options
        found = provenance(
            self.detector,
            self.localizer,
            self.attributor,
            batch_size=o.batch_size,
            limits={**asdict(o.limits), "max_pixels": o.max_pixels},
            metadata=o.metadata,
            gpu_decode=o.gpu_decode,
            cache=None if self.cache is None else {"path": str(self.cache.path), "model_key": self.cache_key},
            resumed_from_rows=len(self.done) if self.done is not None else 0,
        )
        if found["localizer"] is not None:
            found["localizer"]["masks_dir"] = str(o.masks_dir)
            found["localizer"]["masks_for"] = "all images" if o.masks_all else "images judged fake"
        return found

    def _count_skip(self, reason: str) -> None:
        if reason == SKIP_RESUMED:
            self.stats.resumed += 1
        else:
            self.stats.skipped_non_images += 1

    def _finish(self, record: Record) -> dict[str, Any]:
        row = record.row
        assert row is not None
        if record.mask_job is not None:
            try:
                files = record.mask_job.result()
                row["mask"], row["mask_map"], row["mask_fraction"] = (
                    str(files.overlay_path),
                    str(files.map_path),
                    files.fraction,
                )
                self.stats.masks += 1
            except (OSError, ValueError) as e:  # the verdict stands; the row says what is missing
                row["error"] = f"mask files not written: {e}"
        record.tensor = record.mask_tensor = record.attr_tensor = record.raw = record.mask_job = None
        row["model"] = self.detector.name
        row["threshold"] = self.detector.threshold
        if row["score"] is not None and not math.isfinite(row["score"]):
            row["score"], row["error"] = None, "the model returned a non-finite score (try --precision fp32)"
        if row["score"] is not None:
            row["verdict"] = "fake" if row["score"] >= self.detector.threshold else "real"
        self.stats.images += 1
        self.stats.fake += row["verdict"] == "fake"
        self.stats.real += row["verdict"] == "real"
        self.stats.errors += row["verdict"] == "error"
        return row


def _write_masks(data: bytes, prob: np.ndarray, out_dir: Path, row: dict[str, Any], max_pixels: int) -> MaskFiles:
    """Decode the image again (the workers' copy stayed there) and write its mask files."""
    image = decode_image(data, max_pixels).image
    return write_mask_files(image, prob, out_dir, row["path"], row["member"])


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
