"""Make docs/examples/localization-{input,mask,overlay}.png with forensix's own code.

No released localizer can be downloaded where the docs are built, so this trains a tiny DeCLIP
(the `declip-tiny` config: a 4-block ViT of width 64, random frozen weights, a conv-4 decoder) for
a few seconds on a synthetic inpainting task — smooth colour fields with a green-cast square
pasted in, Dolos-style masks — then draws the mask files of a new image of the same kind exactly as
`forensix scan --localizer ... --masks DIR` does. It shows what the outputs look like, not how
well DeCLIP localizes real inpainting.

    python docs/examples/make_localization_example.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import forensix
from forensix.overlay import write_mask_files
from forensix.train import TrainOptions, fit, prepare
from forensix.train.augment import Augment

HERE = Path(__file__).resolve().parent


def smooth(rng: np.random.Generator, h: int, w: int, cast: bool) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    ph = rng.uniform(0, 6, 3)
    img = (np.stack([np.sin(6 * x + ph[0]), np.cos(5 * y + ph[1]), np.sin(4 * (x + y) + ph[2])], -1) * 0.5 + 0.5) * 255
    return img * 0.6 + np.array([0, 90, 0]) if cast else img


def inpainted(rng: np.random.Generator, size: int = 240) -> tuple[Image.Image, Image.Image]:
    """An image with a pasted square and its Dolos-style mask (0 = manipulated)."""
    img = smooth(rng, size, size, cast=False)
    side = int(rng.integers(70, 110))
    top, left = (int(v) for v in rng.integers(10, size - side - 10, size=2))
    img[top : top + side, left : left + side] = smooth(rng, side, side, cast=True)
    mask = np.full((size, size), 255, np.uint8)
    mask[top : top + side, left : left + side] = 0
    noisy = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy), Image.fromarray(mask)


def main() -> None:
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "toy" / "inpainted"
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        for i in range(24):
            image, mask = inpainted(rng)
            image.save(root / "images" / f"{i:02d}.png")
            mask.save(root / "masks" / f"{i:02d}.png")
        run = prepare("localize", Path(tmp) / "toy", config="declip-tiny", init="random", seed=0)
        options = TrainOptions(epochs=10, batch_size=4, lr=1e-3, augment=Augment.none(), device="cpu")
        done = fit(run.task, options, Path(tmp) / "run", run.provenance)
        print(f"trained: validation IoU {done.history[-1]['iou']:.2f} after {done.epoch} epochs")

        image, _ = inpainted(np.random.default_rng(2024))  # an image the model never saw
        localizer = forensix.load_localizer(Path(tmp) / "run" / "last.safetensors", device="cpu")
        files = write_mask_files(image, localizer.probabilities([image])[0], Path(tmp) / "masks", "example.png")
        image.save(HERE / "localization-input.png", optimize=True)
        shutil.copy(files.map_path, HERE / "localization-mask.png")
        shutil.copy(files.overlay_path, HERE / "localization-overlay.png")
        print(f"flagged {files.fraction:.1%} of the image; wrote {HERE}/localization-{{input,mask,overlay}}.png")


if __name__ == "__main__":
    main()
