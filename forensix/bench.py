"""``forensix bench``: how fast the model, the decoding and the whole scan run on this machine.

Three figures, each the median of ``runs`` timed passes over the same images after ``warmup``
untimed ones: model only (a batch of preprocessed tensors already on the device), decode +
preprocess (the scan's own DataLoader workers, :meth:`Scanner.blocks`), and end to end (the real
:class:`Scanner`, rows discarded). Optionally a fourth: JPEG decode + preprocess on the device
(:mod:`forensix.gpu_decode`), after its parity check against the Pillow path.
"""

from __future__ import annotations

import math
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .detector import Detector
from .inputs import InputSpec
from .pipeline import Scanner, ScanOptions, default_workers
from .provenance import model_provenance, package_versions
from .stages.records import IMAGE

SYNTHETIC_SIDES = (224, 512)


def synthetic_jpegs(
    folder: Path, count: int, sides: tuple[int, int] = SYNTHETIC_SIDES, seed: int = 0, quality: int = 90
) -> list[Path]:
    """``count`` deterministic JPEGs, width and height drawn from ``sides``: smooth colour fields plus grain.

    Grain keeps the entropy (and so the decoding cost) nearer a photo's than flat colour would.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        w, h = (int(v) for v in rng.integers(sides[0], sides[1] + 1, size=2))
        colours = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        colours = colours.resize((w, h), Image.Resampling.BICUBIC)
        pixels = np.asarray(colours, dtype=np.float32) + rng.normal(0, 12, (h, w, 3))
        path = folder / f"synthetic-{i:05d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class BenchOptions:
    batch_size: int = 32
    workers: int = field(default_factory=default_workers)
    images: Path | None = None  # a folder to scan; None = synthetic JPEGs in a temporary folder
    count: int | None = None  # synthetic images (default: 4 batches, at least 64)
    runs: int = 3
    warmup: int = 1
    gpu_decode: bool = False  # also time JPEG decode + preprocess on the device

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.runs < 1 or self.warmup < 0 or self.workers < 0:
            raise ValueError("batch size and runs must be positive, warmup and workers not negative")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be positive, got {self.count}")

    @property
    def synthetic_count(self) -> int:
        return self.count if self.count is not None else max(64, 4 * self.batch_size)


@dataclass
class BenchResult:
    model_img_per_s: float
    decode_img_per_s: float
    end_to_end_img_per_s: float
    settings: dict[str, Any]
    peak_rss_mb: float  # this process (decode workers are separate processes, not included)
    peak_worker_rss_mb: float | None  # the largest decode worker (None without workers)
    peak_gpu_mb: float | None  # CUDA only: torch's peak allocation
    versions: dict[str, str]
    gpu_decode_img_per_s: float | None = None
    gpu_decode_max_score_diff: float | None = None
    end_to_end_gpu_decode_img_per_s: float | None = None  # the scan with gpu_decode

    def to_dict(self) -> dict[str, Any]:
        """One flat object: the figures, then the settings, then the versions."""
        data = asdict(self)
        settings, versions = data.pop("settings"), data.pop("versions")
        return {**data, **settings, "versions": versions}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} torch threads)"


def median_rate(run: Callable[[], int], runs: int, warmup: int, sync: Callable[[], None]) -> float:
    """Median images/s of ``runs`` timed calls of ``run`` (which returns how many images it did)."""
    for _ in range(warmup):
        run()
        sync()
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        done = run()
        sync()
        rates.append(done / (time.perf_counter() - start))
    return statistics.median(rates)


def run_bench(detector: Detector, options: BenchOptions, log: Callable[[str], None] | None = None) -> BenchResult:
    """Measure the three stages (four with ``gpu_decode``) with ``detector`` on ``options.images``."""
    say = log or (lambda _: None)
    device = detector.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    with tempfile.TemporaryDirectory(prefix="forensix-bench-") as tmp:
        if options.images is None:
            folder = Path(tmp)
            say(f"writing {options.synthetic_count} synthetic JPEGs ({SYNTHETIC_SIDES[0]}-{SYNTHETIC_SIDES[1]} px)")
            synthetic_jpegs(folder, options.synthetic_count)
        else:
            folder = options.images
        spec = InputSpec.from_args([str(folder)])
        scan_options = ScanOptions(batch_size=options.batch_size, workers=options.workers)
        first: list[torch.Tensor] = []  # the first batch's tensors, kept for the model-only stage
        images = 0  # how many images a pass over the folder yields

        def decode_pass() -> int:
            nonlocal images
            images = 0
            for block in Scanner(spec, detector, scan_options).blocks():
                if (tensor := block.inputs.get(IMAGE)) is not None:
                    if len(first) < options.batch_size:
                        first.extend(tensor[: options.batch_size - len(first)].clone())
                    images += len(tensor)
            return images

        say("decode + preprocess")
        decode_rate = median_rate(decode_pass, options.runs, options.warmup, sync)
        if not first:
            raise ValueError(f"{folder}: no image that decodes; nothing to benchmark")
        # Model only: full batches (the first images, repeated if there are fewer), resident on the device.
        batch = torch.stack([first[i % len(first)] for i in range(options.batch_size)]).to(device)
        batches = math.ceil(images / options.batch_size)

        def model_pass() -> int:
            for _ in range(batches):
                detector.raw_logits(batch)
            return batches * options.batch_size

        say("model only")
        model_rate = median_rate(model_pass, options.runs, options.warmup, sync)

        def scan_pass(o: ScanOptions = scan_options) -> int:
            return sum(1 for _ in Scanner(spec, detector, o))

        say("end to end")
        end_to_end_rate = median_rate(scan_pass, options.runs, options.warmup, sync)
        gpu_rate, parity_diff, gpu_end_to_end_rate = None, None, None
        if options.gpu_decode:
            gpu_rate, parity_diff = _gpu_decode(detector, spec, options, sync, say)
            say("end to end, JPEGs decoded on the device")
            device_decoding = replace(scan_options, gpu_decode=True)
            gpu_end_to_end_rate = median_rate(lambda: scan_pass(device_decoding), options.runs, options.warmup, sync)

    settings = {
        **model_provenance(detector),  # model, weights and their sha256, config, preprocessing, device, precision
        "backend": detector.backend.name,
        "device_name": device_name(device),
        "batch_size": options.batch_size,
        "workers": options.workers,
        "images": str(options.images) if options.images is not None else "synthetic",
        "image_count": images,
        "runs": options.runs,
        "warmup": options.warmup,
        "compile": getattr(detector.backend, "compiled", False),  # onnxruntime has no such option
        "gpu_decode": options.gpu_decode,
        "max_batch": detector.max_batch,  # not None: batch_size ran out of GPU memory, the figures are of pieces
    }
    kib = 1024.0  # ru_maxrss is in KiB on Linux
    return BenchResult(
        model_img_per_s=model_rate,
        decode_img_per_s=decode_rate,
        end_to_end_img_per_s=end_to_end_rate,
        settings=settings,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
        # The largest child this process has waited for: the workers, in the CLI (all of them end with each pass).
        peak_worker_rss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib if options.workers else None,
        peak_gpu_mb=torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
        versions=package_versions(),
        gpu_decode_img_per_s=gpu_rate,
        gpu_decode_max_score_diff=parity_diff,
        end_to_end_gpu_decode_img_per_s=gpu_end_to_end_rate,
    )


def _gpu_decode(
    detector: Detector, spec: InputSpec, options: BenchOptions, sync: Callable[[], None], say: Callable[[str], None]
) -> tuple[float, float]:
    """Images/s of JPEG decode + preprocess on the device from bytes in memory, after the parity check."""
    from .gpu_decode import check_parity, first_jpegs, preprocess_jpegs

    jpegs = first_jpegs(spec, ScanOptions().limits)
    if not jpegs:
        raise ValueError("--gpu-decode: no JPEG among the images")
    parity = check_parity(detector, jpegs[: options.batch_size])
    say(f"device JPEG decode vs Pillow: max |Δ score| {parity.max_score_diff:.2g} on {parity.images} images")
    if not parity.ok:
        raise ValueError(
            f"device JPEG decoding changes scores by up to {parity.max_score_diff:.2g} "
            f"(> {parity.tolerance:g}) on these images: keep decoding on the CPU"
        )
    cfg, size = detector.config.preprocess, options.batch_size

    def run() -> int:
        for start in range(0, len(jpegs), size):
            preprocess_jpegs(jpegs[start : start + size], cfg, detector.device)
        return len(jpegs)

    say("JPEG decode + preprocess on the device")
    return median_rate(run, options.runs, options.warmup, sync), parity.max_score_diff
