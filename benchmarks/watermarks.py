"""The invisible-watermark rule's false-positive rate on clean images and its detection rate after
re-saving and resizing (docs/provenance.md).

Clean images: Pillow's own Tests/images of at least 256×256 pixels (fetched once, as the fuzz
corpus is: ``python -m fuzz corpus``), crops and rescales of scikit-learn's two sample photos, and
synthetic images of the tests' generator. Marked images: crops of the sample photos at 512 and
1,024 px, marked as SD 1.x, SD 2.x and SDXL mark theirs (tests/sd_watermarks.py), then saved as
PNG, as JPEG at quality 95/90/75, and resized.

    python benchmarks/watermarks.py                   # about two minutes on 2 cores
    python benchmarks/watermarks.py --synthetic 500 --marked 4
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from sd_watermarks import marked  # noqa: E402
from tiny_models import random_image  # noqa: E402

from forensix.imaging import DecodeError, decode_image  # noqa: E402
from forensix.watermarks import MARKS, MIN_AGREEING, read_watermark  # noqa: E402


def photos(count: int, side: int, rng: np.random.Generator) -> list[Image.Image]:
    samples = [Image.fromarray(a) for a in load_sample_images().images]
    out = []
    for i in range(count):
        src = samples[i % 2]
        w = int(rng.integers(256, 427))
        x, y = int(rng.integers(0, 640 - w)), int(rng.integers(0, 427 - w + 1))
        out.append(src.crop((x, y, x + w, y + w)).resize((side, side), Image.Resampling.BICUBIC))
    return out


def pillow_images() -> Iterator[Image.Image]:
    from fuzz.corpus import pillow_images as fetched

    for path in sorted(p for p in fetched().rglob("*") if p.is_file()):
        try:
            decoded = decode_image(path.read_bytes(), 64_000_000)
        except (DecodeError, ValueError, OSError):
            continue
        if decoded.image.width * decoded.image.height >= 256 * 256:
            yield decoded.image


def false_positives(sets: dict[str, Iterable[Image.Image]]) -> dict:
    out = {}
    for name, images in sets.items():
        found, highest, count = 0, Counter(), 0
        for image in images:
            count += 1
            field = read_watermark(image)
            found += field["found"] is not None
            for key, m in field["marks"].items():
                highest[key] = max(highest[key], m["agree"])
        out[name] = {"images": count, "found": found, "most agreeing bits": dict(highest)}
    return out


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


CHANGES = {
    "as made (PNG)": lambda im: im,
    "JPEG q95": lambda im: jpeg(im, 95),
    "JPEG q90": lambda im: jpeg(im, 90),
    "JPEG q75": lambda im: jpeg(im, 75),
    "resized x0.5": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC),
    "resized x0.75": lambda im: im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.Resampling.BICUBIC),
    "resized x1.5": lambda im: im.resize((im.width * 3 // 2, im.height * 3 // 2), Image.Resampling.BICUBIC),
}


def detection(count: int, rng: np.random.Generator) -> dict:
    out = {}
    for side in (512, 1024):
        bases = photos(count, side, rng)
        for mark in MARKS:
            images = [marked(b, mark.key) for b in bases]
            for change, apply in CHANGES.items():
                fields = [read_watermark(apply(im)) for im in images]
                hits = sum(f.get("found") == mark.name for f in fields)
                agree = [f["marks"][mark.key]["agree"] for f in fields if f["checked"]]
                key = f"{mark.key} {side}px {change}"
                out[key] = {
                    "found": f"{hits}/{len(images)}",
                    "median agreeing bits": float(np.median(agree)) if agree else None,
                }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic", type=int, default=2000)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--marked", type=int, default=10, help="photos per mark and size")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(json.dumps({"rule: fewest agreeing bits": {len(m.bits): MIN_AGREEING[len(m.bits)] for m in MARKS}}))
    sizes = rng.integers(256, 769, size=(args.synthetic, 2))
    synthetic = (random_image(int(w), int(h), seed=i) for i, (w, h) in enumerate(sizes))
    sets = {
        "Pillow Tests/images": pillow_images(),
        "sample-photo crops": photos(args.photos, 512, rng),
        "synthetic": synthetic,
    }
    print(json.dumps({"clean": false_positives(sets)}, indent=1))
    print(json.dumps({"marked": detection(args.marked, rng)}, indent=1))


if __name__ == "__main__":
    main()
