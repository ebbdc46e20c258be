"""Make docs/examples/report-page.png and report-detail.png: screenshots of `forensix report --html`.

No released detector can be downloaded where the docs are built, so the scan runs the tests' tiny
models (random weights: tests/tiny_models.py) over a small folder: two real photos shipped with
scikit-learn, the localization example, an image with Stable Diffusion parameters, one with a
camera's EXIF, a name that is HTML, a truncated file and a zip. The scores and masks show what the
page looks like, not what a trained detector would say. Needs Chromium and Playwright (the test extra).

    python docs/examples/make_report_example.py
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from PIL import Image, PngImagePlugin
from sklearn.datasets import load_sample_images

import forensix

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from tiny_models import random_image, tiny_attributor_file, tiny_deeclip_file, tiny_localizer_file  # noqa: E402

A1111 = "a lighthouse at dusk, oil painting\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 7, Seed: 42, Size: 512x512"


def inputs(folder: Path) -> None:
    (folder / "desk" / "incoming").mkdir(parents=True)
    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 5D Mark II"
    china.save(folder / "desk" / "china.jpg", quality=92, exif=exif)
    flower.save(folder / "desk" / "flower.jpg", quality=80)
    shutil.copy(HERE / "localization-input.png", folder / "desk" / "incoming" / "inpainted.png")
    shutil.copy(HERE / "gradient.jpg", folder / "desk" / "incoming" / "gradient.jpg")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111)
    random_image(360, 360, seed=3).save(folder / "desk" / "incoming" / "lighthouse.png", pnginfo=info)
    random_image(300, 200, seed=4).save(folder / "desk" / "incoming" / "<b>not bold.png")
    (folder / "desk" / "incoming" / "cut.jpg").write_bytes((HERE / "gradient.jpg").read_bytes()[:600])
    with zipfile.ZipFile(folder / "desk" / "tips.zip", "w") as z:
        for i in range(3):
            out = io.BytesIO()
            flower.crop((60 * i, 40, 60 * i + 320, 280)).save(out, "JPEG", quality=85)
            z.writestr(f"tip-{i + 1}.jpg", out.getvalue())


def screenshot(page: Path, fragment: str, out: Path, height: int) -> None:
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("FORENSIX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": height})
        tab.goto(page.as_uri() + fragment)
        tab.wait_for_selector("body[data-ready]")
        tab.wait_for_function("[...document.images].every(i => i.complete)")
        tab.screenshot(path=str(out))
        browser.close()
    Image.open(out).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs(work)
        detector = forensix.load_detector(weights=tiny_deeclip_file(work))
        localizer = forensix.load_localizer(tiny_localizer_file(work / "declip-tiny.safetensors"))
        attributor = forensix.load_attributor(tiny_attributor_file(work))
        os.chdir(work)  # the report's paths as a user's: relative to where the scan ran
        forensix.write_report(
            ["desk"],
            detector,
            "report.jsonl",
            localizer=localizer,
            attributor=attributor,
            masks_dir=Path("masks"),
            masks_all=True,
        )
        page = forensix.write_html("report.jsonl", "report.html")
        print(f"{page.rows} rows, {page.pictures} with pictures, {page.bytes / 1e3:.0f} kB")
        screenshot(work / "report.html", "", HERE / "report-page.png", 1100)
        screenshot(work / "report.html", "#open=6", HERE / "report-detail.png", 760)
    print(f"wrote {HERE}/report-page.png and report-detail.png")


if __name__ == "__main__":
    main()
