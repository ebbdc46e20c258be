"""The weights manifest (weights/manifest.json) and the local weights folder.

Nothing downloads unless asked (`forensix weights fetch NAME`). Files live in ``$FORENSIX_HOME``
if set, else in the checkout's ``weights/`` folder when forensix runs from a source tree, else in
``~/.cache/forensix``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .digests import cached_sha256
from .download import DownloadError, download


class WeightsMissing(Exception):
    """Weights a command needs are not on disk; the message says which command gets them."""


@dataclass(frozen=True)
class WeightFile:
    role: str
    file: str
    url: str | None
    sha256: str | None
    size: int | None


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    kind: str  # "detector" | "localizer"
    format: str  # how the files are read: deeclip-official | univfd | declip-official
    files: tuple[WeightFile, ...]
    description: str = ""
    paper: str = ""
    homepage: str = ""
    license: str = ""
    config: str | None = None
    notes: str = ""

    def file(self, role: str) -> WeightFile:
        for f in self.files:
            if f.role == role:
                return f
        raise KeyError(f"{self.name} has no {role!r} file")


def load_manifest(path: Path | None = None) -> dict[str, ManifestEntry]:
    """Known checkpoints by name."""
    text = Path(path).read_text() if path else (resources.files("forensix") / "manifest.json").read_text()
    entries = {}
    for name, raw in json.loads(text).items():
        raw = dict(raw)
        files = tuple(WeightFile(**f) for f in raw.pop("files"))
        entries[name] = ManifestEntry(name=name, files=files, **raw)
    return entries


def get_entry(name: str) -> ManifestEntry:
    manifest = load_manifest()
    if name not in manifest:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(manifest))} (see 'forensix weights list')")
    return manifest[name]


def weights_dir() -> Path:
    """Where downloaded weights live (see module docstring)."""
    if home := os.environ.get("FORENSIX_HOME"):
        return Path(home).expanduser()
    checkout = Path(__file__).resolve().parent.parent / "weights"
    if (checkout / "manifest.json").is_file() and os.access(checkout, os.W_OK):
        return checkout
    return Path("~/.cache/forensix").expanduser()


def local_path(f: WeightFile) -> Path:
    return weights_dir() / f.file


def get_entry_of_kind(name: str, kind: str) -> ManifestEntry:
    """The manifest entry ``name``, which must be a ``kind`` (detector, localizer, attributor, backbone)."""
    entry = get_entry(name)
    if entry.kind != kind:
        article = "an" if kind[0] in "aeiou" else "a"
        raise ValueError(f"{name} is a {entry.kind}, not {article} {kind}")
    return entry


def resolve(name: str) -> dict[str, Path]:
    """Paths of an entry's files by role; raise WeightsMissing naming the command that gets them."""
    entry = get_entry(name)
    paths = {f.role: local_path(f) for f in entry.files}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise WeightsMissing(
            f"weights for {name!r} are missing ({', '.join(missing)} in {weights_dir()}); "
            f"get them with: forensix weights fetch {name}"
        )
    return paths


@dataclass(frozen=True)
class FileStatus:
    entry: str
    role: str
    path: Path
    present: bool
    size: int | None
    verified: bool | None  # None: no published checksum, or not present


def status(entry: ManifestEntry, check: bool = False) -> list[FileStatus]:
    """Which of an entry's files are present; with ``check``, whether their sha256 matches."""
    out = []
    for f in entry.files:
        path = local_path(f)
        present = path.is_file()
        verified = None
        if check and present and f.sha256:
            verified = cached_sha256(path).lower() == f.sha256.lower()
        out.append(FileStatus(entry.name, f.role, path, present, path.stat().st_size if present else None, verified))
    return out


def fetch(
    name: str,
    url: str | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> dict[str, Path]:
    """Download an entry's missing files (resuming partial downloads, checking sha256).

    ``url`` overrides the manifest's address for an entry with a single file (a mirror, or a
    file the authors share privately).
    """
    entry = get_entry(name)
    if url is not None and len(entry.files) != 1:
        raise ValueError(f"--url needs a single-file entry; {name} has {len(entry.files)} files")
    paths = {}
    for f in entry.files:
        source = url or f.url
        dest = local_path(f)
        if source is None:
            if dest.is_file():
                paths[f.role] = dest
                continue
            hint = f" {entry.notes}" if entry.notes else ""
            raise WeightsMissing(f"{name}: no public download address for {f.file}.{hint}")
        report = (lambda done, total, _f=f.file: progress(_f, done, total)) if progress else None
        try:
            download(source, dest, sha256=f.sha256, size=None if url else f.size, progress=report)
        except DownloadError as e:
            raise WeightsMissing(str(e)) from e
        paths[f.role] = dest
    return paths
