"""The weights manifest (forensix/manifest.json), the local weights folder, and what each file must be.

Nothing downloads unless asked (`forensix weights fetch NAME`, fetching.py). Files live in
``$FORENSIX_HOME`` if set, else in the checkout's ``weights/`` folder when forensix runs from a
source tree, else in ``~/.cache/forensix``. A file is pinned by the manifest's sha256, else by the
weights lock (pins.py: trust on first use, or by hand); every load checks a present file against
its pin, so a file that changed on disk is refused, never scanned with.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .digests import cached_sha256
from .pins import BY_HAND, MANIFEST, Pin, editing, is_sha256, now, read_pins


class WeightsMissing(Exception):
    """Weights a command needs are not on disk; the message says which command gets them."""


class WeightsRefused(Exception):
    """A weights file present under a manifest name is not to be loaded: it is not the file its pin names
    (changed on disk, or another file of that name), or it has no pin at all."""


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face Hub repository, at a pinned revision (a commit hash)."""

    repo: str
    filename: str
    revision: str

    def __str__(self) -> str:
        return f"huggingface.co/{self.repo}@{self.revision[:10]}/{self.filename}"


@dataclass(frozen=True)
class WeightFile:
    role: str
    file: str
    url: str | None
    sha256: str | None
    size: int | None
    hub: HubFile | None = None  # fetched with huggingface_hub (its cache, HF_HUB_OFFLINE) rather than by url

    @property
    def source(self) -> str | None:
        """Where it is fetched from, in full; None when nothing is published."""
        return str(self.hub) if self.hub else self.url

    @property
    def origin(self) -> str:
        """Where it is fetched from, in a word or two: 'Hugging Face', or the address's host."""
        if self.hub:
            return "Hugging Face"
        return urllib.parse.urlsplit(self.url).hostname or self.url if self.url else "none published"


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
        files = tuple(_weight_file(**f) for f in raw.pop("files"))
        entries[name] = ManifestEntry(name=name, files=files, **raw)
    return entries


def _weight_file(hub: dict[str, str] | None = None, **fields: object) -> WeightFile:
    f = WeightFile(**fields, hub=HubFile(**hub) if hub else None)  # type: ignore[arg-type]
    if f.hub is not None and not f.sha256:
        raise ValueError(f"weights manifest: {f.file} is a Hub file without a sha256 (the Hub's, to check it by)")
    return f


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


def pin_of(f: WeightFile, pins: dict[str, Pin]) -> Pin | None:
    """What ``f`` must be: the manifest's sha256, else its pin in the lock (``pins``); None if unpinned."""
    if f.sha256:
        return Pin(f.sha256.lower(), f.size, MANIFEST)
    return pins.get(f.file)


def check_pinned(entry: ManifestEntry, f: WeightFile, path: Path, pin: Pin | None) -> str:
    """The sha256 of ``path``; WeightsRefused unless it is what ``pin`` says (and there is a pin)."""
    role = f" --role {f.role}" if len(entry.files) > 1 else ""
    if pin is None:  # said before hashing: a gigabyte read for nothing otherwise
        raise WeightsRefused(
            f"{path}: not pinned (no published sha256, none in the weights lock); check and pin it with: "
            f"forensix weights fetch {entry.name} (or pin it by hand: forensix weights pin {entry.name}{role} SHA256)"
        )
    digest = cached_sha256(path)
    if digest != pin.sha256:
        by_hand = f" (or, if this file is the right one: forensix weights pin {entry.name}{role} {digest})"
        raise WeightsRefused(
            f"{path}: sha256 {digest[:16]}… differs from {pin.describe()}, {pin.sha256[:16]}…: "
            f"delete it and run forensix weights fetch {entry.name}" + (by_hand if pin.pinned != MANIFEST else "")
        )
    return digest


def resolve(name: str) -> dict[str, Path]:
    """Paths of an entry's files by role, each checked against its pin.

    WeightsMissing names the command that gets missing files; WeightsRefused a file whose sha256
    is not its pin's, or that has no pin.
    """
    entry = get_entry(name)
    paths = {f.role: local_path(f) for f in entry.files}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise WeightsMissing(
            f"weights for {name!r} are missing ({', '.join(missing)} in {weights_dir()}); "
            f"get them with: forensix weights fetch {name}"
        )
    check_files(entry, paths)
    return paths


def check_files(entry: ManifestEntry, paths: dict[str, Path]) -> None:
    """WeightsRefused unless each of ``paths`` (by role, those present) is the file its pin names."""
    pins = read_pins()
    for role, path in paths.items():
        if path.is_file():
            check_pinned(entry, entry.file(role), path, pin_of(entry.file(role), pins))


@dataclass(frozen=True)
class FileStatus:
    entry: str
    role: str
    path: Path
    present: bool
    size: int | None
    pin: Pin | None
    verified: bool | None  # None: not checked, not present, or not pinned


def status(entry: ManifestEntry, check: bool = False) -> list[FileStatus]:
    """Which of an entry's files are present and pinned; with ``check``, whether they match their pins."""
    out = []
    pins = read_pins()
    for f in entry.files:
        path = local_path(f)
        present = path.is_file()
        pin = pin_of(f, pins)
        verified = None
        if check and present and pin is not None:
            verified = cached_sha256(path) == pin.sha256
        out.append(
            FileStatus(entry.name, f.role, path, present, path.stat().st_size if present else None, pin, verified)
        )
    return out


def pin_by_hand(name: str, sha256: str, role: str | None = None) -> tuple[WeightFile, str, Path]:
    """Record in the weights lock the sha256 an entry's file must have; (the file, the digest, the lock).

    ValueError for a digest that is not one, that the manifest contradicts, or that the file already
    present does not have.
    """
    entry = get_entry(name)
    if role is None and len(entry.files) != 1:
        roles = ", ".join(f.role for f in entry.files)
        raise ValueError(f"{name} has {len(entry.files)} files: say which with --role ({roles})")
    f = entry.file(role) if role else entry.files[0]
    digest = sha256.strip().lower()
    if not is_sha256(digest):
        raise ValueError(f"not a sha256 (64 hex digits): {sha256!r}")
    if f.sha256:
        said = "already pins it to that" if f.sha256.lower() == digest else "can't be overruled"
        raise ValueError(f"{name} {f.role}: the manifest publishes sha256 {f.sha256.lower()} and {said}")
    path = local_path(f)
    with editing() as lock:
        present = path.is_file()
        if present and (actual := cached_sha256(path)) != digest:
            raise ValueError(f"{path} is present with sha256 {actual}, not {digest}: delete it first, or pin {actual}")
        lock.record(f.file, Pin(digest, path.stat().st_size if present else None, BY_HAND, date=now()))
    return f, digest, lock.path
