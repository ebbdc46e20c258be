"""forensix's DeeCLIP against the authors' way of running it: same weights, same inputs, one process.

The reference is tests/reference_deeclip.py (transformers CLIPVisionModel + peft LoRA, unmerged, the
fuser, fp32, eager attention, all 24 blocks), with random weights; forensix gets them through the
official-checkpoint path (``convert_deeclip`` on the reference's ``official_state_dict``). Printed:
both speeds and their ratio, with max |Δ logit| (must be ≤ 1e-4); forensix with LoRA unmerged, to
see what merging buys; the scan pipeline against a naive loop (Pillow in this process, batch 1) on
the same JPEG files, rows compared; this CPU's fp32 matmul GFLOP/s and the fraction forensix
achieves; dynamic int8 quantization of the Linear layers, against the rule for keeping it
(≥ 1.5x faster, |Δ score| ≤ 0.02); and bf16 autocast (``--precision bf16``), for comparison.
Exit status 1 if the fp32 scores or the rows disagree.

    python benchmarks/compare_reference.py --size tiny
    python benchmarks/compare_reference.py --size full --images 4 --batch-size 2 --runs 1   # minutes on a CPU
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reference_deeclip import LAYERS_FULL, RefDeeCLIP  # noqa: E402

from forensix.bench import SYNTHETIC_SIDES, cpu_name, synthetic_jpegs  # noqa: E402
from forensix.detector import Detector  # noqa: E402
from forensix.imaging import decode_image, preprocess  # noqa: E402
from forensix.inputs import InputSpec  # noqa: E402
from forensix.models.checkpoints import build_and_load  # noqa: E402
from forensix.models.deeclip import convert_deeclip  # noqa: E402
from forensix.pipeline import Scanner, ScanOptions, default_workers, package_versions  # noqa: E402
from forensix.runner import LoadedWeights  # noqa: E402

SIZES = {
    "tiny": dict(width=64, layers=4, heads=1, patch=14, image=224, proj=48, feature_layers=[1, 2, 3], rank=4, alpha=8),
    "full": dict(width=1024, layers=24, heads=16, patch=14, image=224, proj=768, feature_layers=LAYERS_FULL, alpha=32),
}
LOGIT_TOLERANCE = 1e-4
INT8_MIN_SPEEDUP, INT8_MAX_SCORE_DIFF = 1.5, 0.02

Forward = Callable[[torch.Tensor], torch.Tensor]


def _cpu_sdpa_flops(query: tuple[int, ...], key: tuple[int, ...], value: tuple[int, ...], *_, **__) -> int:
    return sdpa_flop_count(query, key, value)


# torch's counter knows SDPA's CUDA kernels but not the CPU one, which would count attention as free.
_CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def flops_per_image(forward: Forward, batch: torch.Tensor) -> float:
    """FLOPs one image costs, as torch counts them (matmuls, convolutions, attention) on a real pass."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_SDPA) as counter:
        forward(batch)
    return counter.get_total_flops() / len(batch)


def timed(forward: Forward, batches: list[torch.Tensor], runs: int) -> tuple[torch.Tensor, float]:
    """Logits of all batches, and the median images/s of ``runs`` passes over them."""
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        logits = torch.cat([forward(b) for b in batches])
        rates.append(len(logits) / (time.perf_counter() - start))
    return logits, statistics.median(rates)


def median_rate(run: Callable[[], int], runs: int) -> float:
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        done = run()
        rates.append(done / (time.perf_counter() - start))
    return statistics.median(rates)


def matmul_gflops(n: int = 2048, runs: int = 5) -> float:
    """This machine's fp32 matrix-multiply rate: median over n³ products (2n³ FLOPs each)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="tiny, or full = ViT-L/14 (slow)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--images", type=int, default=6, help="synthetic JPEGs, 224-512 px")
    parser.add_argument("--runs", type=int, default=3, help="timed passes; the median is reported")
    args = parser.parse_args()
    size = SIZES[args.size]

    v = package_versions()
    sides = f"{SYNTHETIC_SIDES[0]}-{SYNTHETIC_SIDES[1]} px"
    print(f"DeeCLIP {args.size} (random weights), {args.images} JPEGs {sides}, batch {args.batch_size}, median of")
    print(f"{args.runs} timed runs; {cpu_name()}, {torch.get_num_threads()} threads")
    print(f"torch {v['torch']}, open_clip {v.get('open_clip_torch')}; {load()}")

    torch.manual_seed(0)
    reference = RefDeeCLIP(**size).eval()
    official = reference.official_state_dict()
    layers, alpha = tuple(size["feature_layers"]), size["alpha"]
    cfg, merged = convert_deeclip(official, feature_layers=layers, lora_alpha=alpha, source="reference")
    loaded = LoadedWeights(cfg, f"deeclip-{args.size}-random", "", "reference", {}, model=build_and_load(cfg, merged))
    detector = Detector.from_torch(loaded, device="cpu")
    bf16 = Detector.from_torch(loaded, device="cpu", precision="bf16")
    _, unmerged_state = convert_deeclip(official, feature_layers=layers, lora_alpha=alpha, merge_lora=False)
    unmerged = build_and_load(cfg, unmerged_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        int8 = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(detector.backend.module), {nn.Linear}, dtype=torch.qint8
        )

    with tempfile.TemporaryDirectory(prefix="forensix-compare-") as tmp:
        paths = synthetic_jpegs(Path(tmp), args.images)
        x = torch.stack([preprocess(decode_image(p.read_bytes()).image, cfg.preprocess) for p in paths])
        batches = list(x.split(args.batch_size))
        variants: dict[str, Forward] = {
            "reference (transformers + peft, all blocks, eager)": reference,
            "forensix, LoRA unmerged": unmerged,
            "forensix (as scanned)": detector.raw_logits,
            "forensix int8 dynamic (Linear)": int8,
            "forensix bf16 autocast": bf16.raw_logits,
        }
        logits, rates, flops = {}, {}, {}
        with torch.inference_mode():
            for name, forward in variants.items():
                flops[name] = flops_per_image(forward, batches[0])  # also the untimed warm-up
                logits[name], rates[name] = timed(forward, batches, args.runs)

        names = list(variants)
        ref_name, fx_name, int8_name = names[0], names[2], names[3]
        print(f"\n{'model':52} {'img/s':>9} {'GFLOP/img':>10} {'vs reference':>13}")
        for name in names:
            speedup = rates[name] / rates[ref_name]
            # The counter sees no FLOPs in quantized Linear layers.
            gflop = "int8" if name == int8_name else f"{flops[name] / 1e9:.2f}"
            print(f"{name:52} {rates[name]:9.3f} {gflop:>10} {speedup:12.2f}x")

        ok = True
        ref_logits = logits[ref_name]
        for name in names[1:3]:
            diff = (logits[name] - ref_logits).abs().max().item()
            good = diff <= LOGIT_TOLERANCE
            ok &= good
            verdict = "OK" if good else "FAIL"
            print(f"agreement, {name}: max |Δ logit| {diff:.2g} (limit {LOGIT_TOLERANCE:g}): {verdict}")
        print(f"reference logits span {ref_logits.min().item():.3g} .. {ref_logits.max().item():.3g}")

        peak = matmul_gflops()
        achieved = rates[fx_name] * flops[fx_name] / 1e9
        print(f"\nfp32 matmul 2048³: {peak:.1f} GFLOP/s; forensix achieves {achieved:.1f}, {achieved / peak:.0%} of it")

        def against_fp32(name: str) -> tuple[float, float, str]:
            score_diff = (torch.sigmoid(logits[name]) - torch.sigmoid(logits[fx_name])).abs().max().item()
            logit_diff = (logits[name] - logits[fx_name]).abs().max().item()
            speedup = rates[name] / rates[fx_name]
            summary = f"{speedup:.2f}x fp32, max |Δ score| {score_diff:.3g}, max |Δ logit| {logit_diff:.3g}"
            return speedup, score_diff, summary

        speedup, score_diff, summary = against_fp32(int8_name)
        keep = speedup >= INT8_MIN_SPEEDUP and score_diff <= INT8_MAX_SCORE_DIFF
        rule = f"keep if ≥ {INT8_MIN_SPEEDUP}x and ≤ {INT8_MAX_SCORE_DIFF}"
        print(f"int8: {summary} ({rule}): {'keep' if keep else 'leave out'}")
        print(f"bf16: {against_fp32(names[4])[2]}")
        ok &= compare_pipeline(detector, paths, Path(tmp), args)
    print(load())
    return 0 if ok else 1


def compare_pipeline(detector: Detector, paths: list[Path], folder: Path, args: argparse.Namespace) -> bool:
    """The scan (DataLoader workers, batches) against a naive loop (Pillow here, batch 1): speed and rows."""

    def naive() -> list[tuple[Path, float]]:
        return [(p, float(detector.score([Image.open(p).convert("RGB")])[0])) for p in paths]

    options = ScanOptions(batch_size=args.batch_size, workers=default_workers())

    def scanned() -> list[tuple[Path, float]]:
        return [(Path(r["path"]), r["score"]) for r in Scanner(InputSpec.from_args([str(folder)]), detector, options)]

    rows: dict[str, list[tuple[Path, float]]] = {}

    def run(name: str, fn: Callable[[], list[tuple[Path, float]]]) -> Callable[[], int]:
        def go() -> int:
            rows[name] = fn()
            return len(rows[name])

        return go

    naive_rate = median_rate(run("naive", naive), args.runs)
    scan_rate = median_rate(run("scan", scanned), args.runs)
    t = detector.threshold
    same_files = [p for p, _ in rows["naive"]] == [p for p, _ in rows["scan"]]
    same_verdicts = [s >= t for _, s in rows["naive"]] == [s >= t for _, s in rows["scan"]]
    diff = max(abs(a - b) for (_, a), (_, b) in zip(rows["naive"], rows["scan"]))
    good = same_files and same_verdicts and diff <= LOGIT_TOLERANCE
    print(
        f"\nscan (batch {args.batch_size}, decode workers: {options.workers}): {scan_rate:.3f} img/s; naive loop "
        f"(Pillow in this process, batch 1): {naive_rate:.3f} img/s; ratio {scan_rate / naive_rate:.2f}x"
    )
    print(
        f"rows: same files in the same order {same_files}, same verdicts {same_verdicts}, "
        f"max |Δ score| {diff:.2g}: {'OK' if good else 'FAIL'}"
    )
    return good


if __name__ == "__main__":
    sys.exit(main())
