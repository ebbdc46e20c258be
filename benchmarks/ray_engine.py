"""What the Ray engine costs and how it scales (docs/scale.md, docs/benchmarks.md).

- **The engine's own cost**: the same scan of small JPEG crops of scikit-learn's sample photos with
  the tests' tiny DeeCLIP (224 px input, random weights: its forward is cheap, so the figures are
  the engines'), on the local engine (DataLoader workers) and on a local Ray with 1 → N scoring actors.
  Ray gets ``1 + N`` logical CPUs, so that records always have one; on a 2-core machine the actors
  share the cores, so this shows overheads, not speed-ups.
- **The driver's ceiling**: rows per second that one driver makes into a report (the row's verdict
  and the report writer, JSON Lines and CSV), the rate past which more GPUs give nothing; and the
  driver's CPU time a block in a Ray scan (Ray Data's executor included), writing one report file
  or a sharded report (``--out DIR/``: the rows made and written by Ray tasks).
- **A folder of shards**: the same images in gzipped tars of 100, scanned on Ray with one actor: each
  shard listed and decompressed by a task of its own, against the plain folder's figure.
- ``--gpus 1,2,4``, on a machine with GPUs: the full-size DeeCLIP (ViT-L/14, random weights) on
  1 → N GPUs, one actor each.

    python benchmarks/ray_engine.py                        # about 3 minutes on 2 cores
    python benchmarks/ray_engine.py --images 4000 --actors 1,2,4 --gpus 1,2,4,8
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from tiny_models import tiny_deeclip_file  # noqa: E402

import forensix  # noqa: E402
from forensix.models.checkpoints import save_checkpoint  # noqa: E402
from forensix.models.config import get_config  # noqa: E402
from forensix.models.factory import create_model  # noqa: E402
from forensix.ray_options import RayOptions  # noqa: E402
from forensix.report import ReportWriter  # noqa: E402


def crops(folder: Path, count: int) -> Path:
    """``count`` JPEG crops (200–400 px) of the two sample photos."""
    rng = np.random.default_rng(0)
    samples = [Image.fromarray(a) for a in load_sample_images().images]
    folder.mkdir()
    for i in range(count):
        w, h = (int(v) for v in rng.integers(200, 400, 2))
        x, y = int(rng.integers(0, 640 - w)), int(rng.integers(0, 427 - h))
        samples[i % 2].crop((x, y, x + w, y + h)).save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def tar_shards(folder: Path, shards: Path, per: int) -> Path:
    """The images of ``folder`` packed in order into gzipped tars of ``per`` images: a folder of input shards."""
    shards.mkdir()
    files = sorted(folder.iterdir())
    for start in range(0, len(files), per):
        with tarfile.open(shards / f"{start // per:05d}.tar.gz", "w:gz") as tar:
            for file in files[start : start + per]:
                tar.add(file, arcname=file.name)
    return shards


class FirstRow:
    """A progress display that notes when the first row arrives (start-up is then over)."""

    def __init__(self, stats, count) -> None:
        self.stats, self.first = stats, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def update(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()


def timed_scan(folder: Path, detector, out: Path | str, **options) -> dict:
    displays: list[FirstRow] = []

    def display(stats, count):
        displays.append(FirstRow(stats, count))
        return displays[-1]

    start = time.perf_counter()
    summary = forensix.write_report([str(folder)], detector, out, progress=display, **options)
    end = time.perf_counter()
    rows = summary.rows
    steady = (rows - 1) / (end - displays[0].first) if rows > 1 else float("nan")
    return {"rows": rows, "wall_s": round(end - start, 1), "images_per_s": round(rows / (end - start), 1),
            "after_first_row_per_s": round(steady, 1)}  # fmt: skip


def driver_cpu_a_block(folder: Path, detector, out: str, options: RayOptions, images: int) -> float:
    """Milliseconds of the driver's CPU a block of a Ray scan: the difference between scans of the same
    images in blocks (and batches) of 32 and of 8 (what does not grow with the blocks cancels out)."""
    cpu = {}
    for size in (32, 8):
        start = time.process_time()
        blocks = replace(options, block_size=size)
        forensix.write_report([str(folder)], detector, out, batch_size=size, ray=blocks, shard_size=256)
        cpu[size] = time.process_time() - start
    return round(1000 * (cpu[8] - cpu[32]) / (images / 8 - images / 32), 1)


def driver_rate(rows: list[dict], fmt: str, count: int) -> float:
    """Rows per second one process writes into a report, the rows made as a scan makes them."""
    stream = io.StringIO()
    writer = ReportWriter(stream, fmt, None)
    start = time.perf_counter()
    for i in range(count):
        row = dict(rows[i % len(rows)])
        row["verdict"] = "fake" if row["score"] is not None and row["score"] >= 0.5 else row["verdict"]
        writer.write(row)
        if stream.tell() > 64 << 20:
            stream.seek(0)
            stream.truncate()
    writer.close()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--actors", default="1,2", help="scoring actors on the CPU, comma-separated")
    parser.add_argument("--gpus", default="", help="GPU counts for the full-size model, comma-separated")
    parser.add_argument("--driver-rows", type=int, default=200_000)
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory(prefix="forensix-ray-bench-") as tmp:
        work = Path(tmp)
        folder = crops(work / "crops", args.images)
        weights = tiny_deeclip_file(work)
        detector = forensix.load_detector(weights=weights, device="cpu")
        figures: dict = {"images": args.images}
        figures["local"] = timed_scan(folder, detector, work / "local.jsonl", batch_size=32)
        for actors in [int(n) for n in args.actors.split(",") if n]:
            ray.init(num_cpus=1 + actors, include_dashboard=False, logging_level="ERROR")
            try:
                options = RayOptions(actors=actors, gpus_per_actor=0)
                figures[f"ray, {actors} CPU actor(s)"] = timed_scan(
                    folder, detector, work / f"ray{actors}.jsonl", batch_size=32, ray=options
                )
                if actors == 1:  # the same images in tar.gz shards of 100: each listed by a task of its own
                    shards = tar_shards(folder, work / "shards", 100)
                    figures["ray, 1 CPU actor, tar.gz shards of 100"] = timed_scan(
                        shards, detector, work / "shards.jsonl", batch_size=32, ray=options
                    )
                    figures["driver CPU ms a block"] = {
                        name: driver_cpu_a_block(folder, detector, out, options, args.images)
                        for name, out in (("report file", f"{work}/b.jsonl"), ("sharded report", f"{work}/b/"))
                    }
            finally:
                ray.shutdown()
        local = (work / "local.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in local]
        figures["driver rows/s"] = {fmt: round(driver_rate(rows, fmt, args.driver_rows)) for fmt in ("jsonl", "csv")}
        gpus = [int(n) for n in args.gpus.split(",") if n]
        if gpus:
            full = work / "deeclip-vit-l-14-random.safetensors"
            cfg = get_config("deeclip-vit-l-14")
            save_checkpoint(full, cfg, create_model(cfg).state_dict(), provenance={"source": "random, for timing"})
            big = forensix.load_detector(weights=full, device="cpu")
            for n in gpus:
                ray.init(include_dashboard=False, logging_level="ERROR")
                try:
                    options = RayOptions(actors=n, gpus_per_actor=1, precision="bf16")
                    figures[f"ray, {n} GPU(s), ViT-L/14 bf16"] = timed_scan(
                        folder, big, work / f"gpu{n}.jsonl", batch_size=64, ray=options
                    )
                finally:
                    ray.shutdown()
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
