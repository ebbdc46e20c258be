"""Every GPU figure of docs/benchmarks.md ("GPU targets") in one script, in stages that can be run apart.

GPU time is lent in short calls (at most 10 minutes each), so each stage appends its figures as one
JSON line to ``--out`` and the script ends by printing the table of everything in that file; run
the stages in as many calls as needed with the same ``--work`` folder and ``--out`` file.

- ``setup``: random full-size DeeCLIP weights (speed does not depend on the values) and 512 px
  JPEGs (``--images`` of them, and the first 1,024 again for the small-batch runs); kept if present.
- ``torch``: ``forensix bench`` at ``--precision`` and ``--batch-size``: model only, decode +
  preprocess, end to end, peak RSS of the process and of a decode worker, peak GPU memory.
- ``compile``: the same with ``torch.compile``.
- ``gpu-decode``: JPEG decoding on the device: its parity with Pillow (scores within 1e-3), its
  speed from bytes in memory, and the scan end to end with it.
- ``layout``: model only with channels-last weights and inputs against the default layout.
- ``onnx``: an fp16 ONNX export, then onnxruntime against torch at batch 1, 32 and 256.

    python benchmarks/gpu_targets.py --stages setup,torch            # on the GPU machine
    python benchmarks/gpu_targets.py --stages compile,gpu-decode,layout
    python benchmarks/gpu_targets.py --stages onnx
    python benchmarks/gpu_targets.py --size tiny --device cpu --images 16 --batch-size 8   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from forensix.bench import BenchOptions, device_name, run_bench, synthetic_jpegs
from forensix.detector import load_detector
from forensix.loading import load_weights
from forensix.models.checkpoints import save_checkpoint
from forensix.models.config import get_config
from forensix.models.factory import create_model
from forensix.pipeline import default_workers
from forensix.torch_backend import autocast_forward

STAGES = ("setup", "torch", "compile", "gpu-decode", "layout", "onnx")
SMALL_SET = 1024  # images of the small-batch (ONNX) runs
ONNX_BATCHES = (1, 32, 256)
TARGETS = {"model_img_per_s": 2500.0, "end_to_end_img_per_s": 2000.0}  # H100, bf16, batch 256 (the issue)


def paths(work: Path, size: str) -> dict[str, Path]:
    return {
        "weights": work / f"deeclip-{size}-random.safetensors",
        "onnx": work / f"deeclip-{size}-random-fp16.onnx",
        "images": work / "jpeg512",
        "small": work / "jpeg512-small",
    }


def setup(work: Path, size: str, images: int) -> dict[str, Any]:
    p = paths(work, size)
    if not p["weights"].exists():
        cfg = get_config("deeclip-vit-l-14" if size == "full" else "deeclip-tiny")
        save_checkpoint(p["weights"], cfg, create_model(cfg).state_dict(), {"source": "random init, benchmarks"})
    for folder, count in ((p["images"], images), (p["small"], min(images, SMALL_SET))):
        if len(list(folder.glob("*.jpg"))) != count:
            synthetic_jpegs(folder, count, sides=(512, 512))
    return {"weights": str(p["weights"]), "images": images}


def bench(args: argparse.Namespace, weights: Path, folder: Path, batch_size: int, **kw: Any) -> dict[str, Any]:
    gpu_decode = kw.pop("gpu_decode", False)
    onnx = weights.suffix == ".onnx"
    detector = load_detector(weights=weights, device=args.device, precision="fp32" if onnx else args.precision, **kw)
    options = BenchOptions(
        batch_size=batch_size,
        workers=args.workers,
        images=folder,
        runs=args.runs,
        warmup=args.warmup,
        gpu_decode=gpu_decode,
    )
    return run_bench(detector, options, log=lambda message: print(f"  {message}", file=sys.stderr)).to_dict()


def layout(args: argparse.Namespace, weights: Path) -> dict[str, Any]:
    """Model-only images/s with channels-last weights and inputs (the detector's) and with the default layout."""
    detector = load_detector(weights=weights, device=args.device, precision=args.precision)
    device, model = detector.device, detector.backend.module
    size = detector.config.preprocess.crop
    batch = torch.randn(args.batch_size, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    found = {}
    for name, memory_format in (("channels_last", torch.channels_last), ("contiguous", torch.contiguous_format)):
        model.to(memory_format=memory_format)
        x = batch.contiguous(memory_format=memory_format)
        rates = []
        for i in range(args.warmup + args.runs):
            start = time.perf_counter()
            for _ in range(args.layout_batches):
                autocast_forward(model, x, device, args.precision)
            sync()
            if i >= args.warmup:
                rates.append(args.layout_batches * args.batch_size / (time.perf_counter() - start))
        found[f"model_img_per_s_{name}"] = statistics.median(rates)
    return found


def onnx(args: argparse.Namespace, p: dict[str, Path]) -> dict[str, Any]:
    from forensix.onnx_export import export_onnx

    if not p["onnx"].exists():
        result = export_onnx(load_weights(p["weights"], "detector"), p["onnx"], precision="fp16")
        print(f"  exported {p['onnx']}: max |Δ score| {result.max_diff:.2g}", file=sys.stderr)
    found: dict[str, Any] = {}
    for batch_size in ONNX_BATCHES:
        for backend, weights in (("torch", p["weights"]), ("onnx", p["onnx"])):
            data = bench(args, weights, p["small"], batch_size)
            for key in ("model_img_per_s", "end_to_end_img_per_s", "peak_gpu_mb"):
                found[f"{backend}_b{batch_size}_{key}"] = data[key]
    return found


def run_stage(stage: str, args: argparse.Namespace) -> dict[str, Any]:
    p = paths(args.work, args.size)
    if stage == "setup":
        return setup(args.work, args.size, args.images)
    if stage == "torch":
        return bench(args, p["weights"], p["images"], args.batch_size)
    if stage == "compile":
        return bench(args, p["weights"], p["images"], args.batch_size, compile=True)
    if stage == "gpu-decode":
        return bench(args, p["weights"], p["images"], args.batch_size, gpu_decode=True)
    if stage == "layout":
        return layout(args, p["weights"])
    return onnx(args, p)


def table(out: Path) -> str:
    """Every recorded stage's figures, with the issue's H100 targets beside the torch stage's."""
    lines = ["| date | device | stage | figure | value | target |", "|---|---|---|---|---|---|"]
    for record in map(json.loads, out.read_text().splitlines()):
        for key, value in record["figures"].items():
            if value is None or not key.endswith(("_per_s", "_mb", "_diff")):
                continue  # settings and versions: in the JSON Lines, not the table
            target = TARGETS.get(key) if record["stage"] == "torch" else None
            verdict = ""
            if target is not None:
                verdict = f"≥ {target:,.0f} on an H100"
                if "H100" in record["device"]:
                    verdict += ": met" if value >= target else ": NOT met"
            shown = f"{value:.3g}" if key.endswith("_diff") else f"{value:,.1f}"
            lines.append(f"| {record['date']} | {record['device']} | {record['stage']} | {key} | {shown} | {verdict} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of: {', '.join(STAGES)}")
    parser.add_argument("--work", type=Path, default=Path("/tmp/forensix-gpu"), help="weights and images")
    parser.add_argument("--out", type=Path, default=None, help="JSON Lines of figures (default: WORK/figures.jsonl)")
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=8192, help="512 px JPEGs for the end-to-end runs")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--layout-batches", type=int, default=20, help="batches per timed pass of the layout stage")
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.out or args.work / "figures.jsonl"
    device = torch.device(args.device)
    for stage in stages:
        print(f"{stage} …", file=sys.stderr)
        figures = run_stage(stage, args)
        record = {
            "stage": stage,
            "date": datetime.now(timezone.utc).date().isoformat(),
            "device": device_name(device),
            "settings": {k: str(v) for k, v in vars(args).items() if k != "stages"},
            "figures": figures,
        }
        with out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
