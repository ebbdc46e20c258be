"""What reading the inputs costs: the same images as a folder, a zip, tars and a path list, scanned whole.

Each form holds the same N JPEGs (512×384, the issue's set: ``forensix.bench.synthetic_jpegs``);
each is scanned by ``forensix scan`` in a process of its own with a tiny random-weight DeeCLIP and
``--no-metadata``, so the figures are the pipeline's (listing, reading, decompressing, decoding,
preprocessing, handing over, writing) more than the model's. Printed per form, each figure the
median of ``--repeat`` scans (3): wall time, CPU time (user + system, the scan's process and its
decode workers) and its ratio to the folder's; the same for 2N images, and the growth from N to 2N.
A scan's fixed cost (starting Python, importing torch, loading the model: about 9 s of CPU here)
is in each of those, so the table also gives the CPU time per image of the N images the second
count adds, the cost the input form itself sets, and the CPU time of reading the 2N images' bytes
alone in one process (decompressing, for an archive): the floor a form sets, whatever reads it.
Every form's rows must agree (same images in the same order with the same sha256 and scores), or
the exit status is 1.

``--tiny COUNT`` adds the overhead run: COUNT 1×1 PNGs as a folder and as a zip, scanned with a
DeeCLIP of 28×28 input (the model then costs about nothing), images/s of the whole scan.

    python benchmarks/inputs.py                       # 300 and 600 images, about 10 minutes here
    python benchmarks/inputs.py --images 100 --tiny 100000 --workers 1
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tiny_models import tiny_deeclip_file  # noqa: E402

from forensix.bench import cpu_name, synthetic_jpegs  # noqa: E402

FORMS = ("folder", "zip", "tar", "tar.gz", "tar.xz", "list")


@dataclass
class Timing:
    wall: float
    cpu: float
    rows: list[tuple[str, float]]  # (sha256, score) in report order


def build_forms(files: list[Path], folder: Path) -> dict[str, list[str]]:
    """The same files as each form: what to pass to ``forensix scan`` for it."""
    folder.mkdir(parents=True, exist_ok=True)
    forms: dict[str, list[str]] = {"folder": [str(files[0].parent)]}
    with zipfile.ZipFile(folder / "images.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(f, f.name)
    forms["zip"] = [str(folder / "images.zip")]
    for suffix, mode in (("tar", "w"), ("tar.gz", "w:gz"), ("tar.xz", "w:xz")):
        path = folder / f"images.{suffix}"
        with tarfile.open(path, mode) as t:
            for f in files:
                t.add(f, f.name)
        forms[suffix] = [str(path)]
    listing = folder / "images.txt"
    listing.write_text("".join(f"{f}\n" for f in files), encoding="utf-8")
    forms["list"] = ["--from-list", str(listing)]
    return forms


def scan(args: list[str], weights: Path, out: Path, workers: int, batch_size: int, repeat: int = 1) -> Timing:
    """``forensix scan`` in a process of its own, ``repeat`` times: the median wall time and CPU time
    (the process's and its workers')."""
    command = [sys.executable, "-m", "forensix", "scan", *args, "--weights", str(weights), "--no-metadata"]
    command += ["--workers", str(workers), "--batch-size", str(batch_size), "--out", str(out), "--no-progress"]
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    out.unlink()
    return Timing(statistics.median(walls), statistics.median(cpus), [(r["sha256"], r["score"]) for r in rows])


def reading_alone(form: str, args: list[str]) -> float:
    """CPU seconds to read every image's bytes of a form in this process, nothing else: the form's floor."""
    start = time.process_time()
    if form in ("folder", "list"):
        listing = Path(args[-1])
        paths = sorted(listing.iterdir()) if form == "folder" else listing.read_text(encoding="utf-8").split()
        for path in paths:
            Path(path).read_bytes()
    elif form == "zip":
        with zipfile.ZipFile(args[0]) as z:
            for info in z.infolist():
                z.read(info)
    else:
        with tarfile.open(args[0], "r:*") as t:
            for member in t:
                t.extractfile(member).read()  # type: ignore[union-attr]
    return time.process_time() - start


def measure(count: int, root: Path, weights: Path, options: argparse.Namespace) -> dict[str, tuple[Timing, float]]:
    """Per form: its scan's timing and the CPU time of reading it alone."""
    files = synthetic_jpegs(root / f"jpegs-{count}", count, sides=(384, 512))
    forms = build_forms(files, root / f"forms-{count}")
    out = root / "out.jsonl"
    return {
        form: (scan(args, weights, out, options.workers, options.batch_size, options.repeat), reading_alone(form, args))
        for form, args in forms.items()
    }


def tiny_pngs(count: int, root: Path) -> dict[str, list[str]]:
    """``count`` 1×1 PNGs (each its own colour) as a folder and as a zip."""
    folder = root / f"tiny-{count}"
    folder.mkdir()
    archive = root / f"tiny-{count}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for i in range(count):
            buffer = io.BytesIO()
            Image.new("RGB", (1, 1), (i % 256, i // 256 % 256, i // 65536 % 256)).save(buffer, "PNG")
            name = f"{i:07d}.png"
            (folder / name).write_bytes(buffer.getvalue())
            z.writestr(name, buffer.getvalue())
    return {"folder": [str(folder)], "zip": [str(archive)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300, help="N: the first count; the second is 2N")
    parser.add_argument("--workers", type=int, default=1, help="decode workers of each scan")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tiny", type=int, default=0, help="also scan this many 1x1 PNGs as a folder and a zip")
    parser.add_argument("--repeat", type=int, default=3, help="scans of each form and size; the median is shown")
    args = parser.parse_args()

    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_name()}, {os.cpu_count()} CPUs, --workers {args.workers}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="forensix-inputs-") as tmp:
        root = Path(tmp)
        weights = tiny_deeclip_file(root)
        small, large = args.images, 2 * args.images
        measured = {n: measure(n, root, weights, args) for n in (small, large)}
        results = {n: {form: timing for form, (timing, _) in forms.items()} for n, forms in measured.items()}
        print(
            f"| input | {small}: wall s | CPU s | / folder | {large}: wall s | CPU s | / folder | growth "
            f"| CPU ms per added image | / folder | reading the {large} alone, CPU s |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        added = {form: (results[large][form].cpu - results[small][form].cpu) / (large - small) for form in FORMS}
        for form in FORMS:
            a, b = results[small][form], results[large][form]
            ra, rb = a.cpu / results[small]["folder"].cpu, b.cpu / results[large]["folder"].cpu
            print(
                f"| {form} | {a.wall:.1f} | {a.cpu:.1f} | {ra:.2f} | {b.wall:.1f} | {b.cpu:.1f} | {rb:.2f} "
                f"| {b.cpu / a.cpu:.2f} | {1000 * added[form]:.1f} | {added[form] / added['folder']:.2f} "
                f"| {measured[large][form][1]:.2f} |"
            )
        for n, timings in results.items():
            reference = timings["folder"].rows
            if len(reference) != n:
                print(f"the folder of {n} gave {len(reference)} rows", file=sys.stderr)
                ok = False
            for form, timing in timings.items():
                if timing.rows != reference:
                    print(f"{form} of {n}: rows differ from the folder's", file=sys.stderr)
                    ok = False
        if args.tiny:
            print(f"\n| {args.tiny} 1×1 PNGs | wall s | CPU s | images/s |")
            print("|---|---|---|---|")
            small_model = tiny_deeclip_file(root, side=28)
            for form, form_args in tiny_pngs(args.tiny, root).items():
                t = scan(form_args, small_model, root / "out.jsonl", args.workers, args.batch_size)
                ok &= len(t.rows) == args.tiny
                print(f"| {form} | {t.wall:.1f} | {t.cpu:.1f} | {args.tiny / t.wall:.0f} |")
    print("rows agree across forms" if ok else "ROWS DISAGREE", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
