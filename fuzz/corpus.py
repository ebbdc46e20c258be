"""Seeds for the fuzz targets: Pillow's own test images, fetched from its sdist, and small files made here.

The Pillow sdist is fetched with ``pip download`` (the package registry is the one thing reachable
everywhere this project runs) for the installed Pillow's version, and only its ``Tests/images``
are kept, under ``$FORENSIX_FUZZ_HOME`` (default ``~/.cache/forensix-fuzz``). Nothing of it is
committed: it is Pillow's, and 60 MB.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import PIL


class CorpusUnavailable(RuntimeError):
    """The Pillow sdist could not be fetched (no registry reachable); the message says what pip said."""


def fuzz_home() -> Path:
    return Path(os.environ.get("FORENSIX_FUZZ_HOME") or "~/.cache/forensix-fuzz").expanduser()


def pillow_images() -> Path:
    """The folder of the installed Pillow's ``Tests/images``, fetched once (see the module's doc)."""
    target = fuzz_home() / f"pillow-{PIL.__version__}" / "images"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps"]
            + [f"pillow=={PIL.__version__}", "--dest", scratch],
            capture_output=True,
            text=True,
        )
        sdists = sorted(Path(scratch).glob("pillow-*.tar.gz"))
        if fetched.returncode != 0 or not sdists:
            said = (fetched.stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
            raise CorpusUnavailable(f"cannot fetch the Pillow {PIL.__version__} sdist: {said}")
        unpacked = Path(scratch) / "images"
        prefix = f"{sdists[0].name.removesuffix('.tar.gz')}/Tests/images/"
        with tarfile.open(sdists[0]) as sdist:
            for member in sdist:
                if member.name.startswith(prefix) and member.isfile():
                    member.name = member.name[len(prefix) :]
                    sdist.extract(member, unpacked, filter="data")
        os.replace(unpacked, target)  # whole or absent: a fetch cut short leaves nothing behind
    return target


def image_files(folder: Path, max_bytes: int | None = None) -> list[Path]:
    """Every file under ``folder`` (sorted), those over ``max_bytes`` left out."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return [p for p in files if max_bytes is None or p.stat().st_size <= max_bytes]


def write_seeds(target: str, images: Path, out: Path) -> Path:
    """The seed folder of ``target`` under ``out``: Pillow's images, or small files made from them."""
    out = out / target
    out.mkdir(parents=True, exist_ok=True)
    small = image_files(images, 64 << 10)
    if target == "image":
        for path in small:
            (out / path.relative_to(images).as_posix().replace("/", "__")).write_bytes(path.read_bytes())
    elif target == "archive":
        _archive_seeds(small[:: max(1, len(small) // 6)][:6], out)
    elif target == "path-list":
        (out / "plain").write_bytes(b"a.png\nmissing.png\n\nsub/../a.png\n")
        (out / "odd").write_bytes(b"a.png\r\n=cmd|' C calc'!A0.png\n\xff\xfe.png\n\t\na\rb.png\n")
        (out / "nul").write_bytes(b"\0a.png\0with\nnewline.png\0\0trailing-cr\r\0")
    elif target == "checkpoint":
        _checkpoint_seeds(out)
    else:
        raise ValueError(f"no fuzz target {target!r}")
    return out


def _archive_seeds(members: list[Path], out: Path) -> None:
    # The first byte of a seed picks the archive kind (fuzz.targets.ARCHIVE_SUFFIXES' order).
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in members:
            archive.write(path, f"folder/{path.name}")
        archive.writestr("notes.txt", "not an image")
    (out / "zip").write_bytes(b"\x00" + buffer.getvalue())
    for index, mode in ((1, "w"), (2, "w:gz"), (3, "w:bz2"), (4, "w:xz")):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode=mode) as archive:
            for path in members:
                archive.add(path, f"folder/{path.name}")
            if members:
                link = tarfile.TarInfo("folder/hardlink")
                link.type, link.linkname = tarfile.LNKTYPE, f"folder/{members[0].name}"
                archive.addfile(link)
        (out / mode.replace(":", "-")).write_bytes(bytes([index]) + buffer.getvalue())


def _checkpoint_seeds(out: Path) -> None:
    import torch

    from forensix.models.checkpoints import save_checkpoint
    from forensix.models.config import get_config
    from forensix.models.factory import create_model

    torch.manual_seed(0)
    cfg = get_config("deeclip-tiny")
    state = create_model(cfg).state_dict()
    save_checkpoint(out / "tiny.safetensors", cfg, state)
    head = {k: v for k, v in state.items() if k.startswith("fc.")}
    save_checkpoint(out / "head-only.safetensors", cfg, head)  # reaches the strict load's key checks
    torch.save(head, out / "head.pth")
    repository = Path(__file__).resolve().parent.parent
    for path in sorted((repository / "tests" / "data").glob("*.pth")):
        (out / path.name).write_bytes(path.read_bytes())
