"""What the HTML report costs: pictures per 1,000 images, the page per 1,000 rows, and a 100,000-row page
in headless Chromium (load, sort, filter).

The pictures are made from real photos shipped with scikit-learn (``load_sample_images``: china.jpg
and flower.jpg, 640×427), cut into crops of 300–640 px and, for camera-sized images, the same crops
scaled up to 2,000 px (smoother than a camera's, so their JPEGs are somewhat smaller than a real
photo's would be). The rows of the big page are synthetic, with notes as a scan writes them.

    python benchmarks/html_report.py                 # about a minute on 2 cores
    python benchmarks/html_report.py --rows 20000 --images 100
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

from forensix.html_report import write_html
from forensix.html_report.page import page_rows, render, summarise
from forensix.html_report.views import Found


def photos(folder: Path, count: int, long_edge: int | None) -> list[dict]:
    """``count`` JPEG crops of the sample photos (scaled to ``long_edge``), and their report rows."""
    rng = np.random.default_rng(0)
    samples = [Image.fromarray(a) for a in load_sample_images().images]
    rows = []
    for i in range(count):
        src = samples[i % len(samples)]
        w, h = int(rng.integers(300, 640)), int(rng.integers(300, 427))
        x, y = int(rng.integers(0, 640 - w + 1)), int(rng.integers(0, 427 - h + 1))
        image = src.crop((x, y, x + w, y + h))
        if long_edge:
            scale = long_edge / max(w, h)
            image = image.resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC)
        path = folder / f"photo{i:05d}.jpg"
        image.save(path, quality=90)
        score = float(rng.uniform())
        rows.append({"path": str(path), "member": "", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                     "verdict": "fake" if score >= 0.5 else "real", "score": score, "threshold": 0.5,
                     "width": image.width, "height": image.height, "notes": "JPEG quality ≈ 90"})  # fmt: skip
    return rows


def pictures(work: Path, count: int, long_edge: int | None, workers: int) -> dict:
    folder = work / f"photos-{long_edge or 'crops'}"
    folder.mkdir()
    rows = photos(folder, count, long_edge)
    report = work / f"{folder.name}.jsonl"
    report.write_text("".join(json.dumps(r) + "\n" for r in rows))
    start = time.perf_counter()
    page = write_html(report, work / f"{folder.name}.html", workers=workers)
    seconds = time.perf_counter() - start
    files = page.folder
    thumbs = sum(p.stat().st_size for p in (files / "thumb").iterdir())
    previews = sum(p.stat().st_size for p in (files / "preview").iterdir())
    return {
        "images": count,
        "long edge": long_edge or "300-640",
        "thumbnails MB per 1000": round(thumbs / count * 1000 / 1e6, 1),
        "previews MB per 1000": round(previews / count * 1000 / 1e6, 1),
        "page KB per 1000 rows": round(page.page.stat().st_size / count * 1000 / 1e3),
        "images/s": round(count / seconds, 1),
        "workers": workers,
    }


def big_page(work: Path, n: int) -> tuple[Path, dict]:
    rng = np.random.default_rng(1)
    scores = rng.uniform(size=n)
    notes = "JPEG quality ≈ 90; Camera: Canon EOS 5D; taken 2024:05:01 10:00:00"
    exif = {"make": "Canon", "model": "Canon EOS 5D", "date_taken": "2024:05:01 10:00:00"}
    rows = [{"path": f"/scan/batch{i % 200}/img{i:07d}.jpg", "member": "", "sha256": f"{i:064x}",
             "verdict": "fake" if s >= 0.5 else "real", "score": float(s), "threshold": 0.5, "width": 1024,
             "height": 768, "format": "JPEG", "notes": notes, "metadata": {"exif": exif, "jpeg_quality": 90}}
            for i, s in enumerate(scores)]  # fmt: skip
    start = time.perf_counter()
    shown = page_rows(rows, Found())
    html = render(shown, summarise(shown), "benchmark", "benchmark.jsonl", "now", "big_files", True)
    seconds = time.perf_counter() - start
    path = work / "big.html"
    path.write_text(html, encoding="utf-8")
    return path, {"rows": n, "page MB": round(path.stat().st_size / 1e6, 1), "render s": round(seconds, 2)}


def in_browser(path: Path) -> dict:
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("FORENSIX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return {"browser": "no chromium"}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        start = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready]")
        loaded = time.perf_counter() - start
        timings = {}
        for what, action in (
            ("sort s", lambda: page.select_option("#sort", "score-desc")),
            ("filter s", lambda: page.select_option("#verdict", "fake")),
            ("search s", lambda: page.fill("#q", "batch7/")),
        ):
            start = time.perf_counter()
            action()
            page.wait_for_function("document.getElementById('cards').children.length > 0")
            timings[what] = round(time.perf_counter() - start, 2)
        memory = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : null")
        version = browser.version
        browser.close()
    return {"browser": f"Chromium {version}", "load s": round(loaded, 2), **timings,
            "JS heap MB": round(memory / 1e6) if memory else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for long_edge in (None, 2000):
            print(json.dumps(pictures(work, args.images, long_edge, args.workers), ensure_ascii=False))
        path, figures = big_page(work, args.rows)
        print(json.dumps({**figures, **in_browser(path)}, ensure_ascii=False))


if __name__ == "__main__":
    main()
