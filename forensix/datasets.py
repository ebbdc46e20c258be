"""Labelled image sets, read in place from the layouts users already have.

- ``univfd``: UnivFD / CNNDetection, ``<root>/<subset>/{0_real,1_fake}``, also with class folders
  under a subset (``<root>/progan/airplane/0_real``); a root that itself holds ``0_real`` /
  ``1_fake`` is one subset named after the root.
- ``genimage``: GenImage, ``<root>/<generator>/.../{train,val}/{nature,ai}`` (the split is chosen);
  a root that itself holds ``train`` / ``val`` is one generator.
- ``list``: a CSV or JSON Lines file of ``path,label[,source][,subset]`` (CSV with or without a
  header; labels 0/1 or real/fake; relative paths resolved against the list's folder).
- ``dolos``: localization sets (DeCLIP's Dolos), any folder with ``images/`` and ``masks/``: every
  image there is fake, its mask is the file in ``masks/`` with the same relative path and stem;
  images in folders named ``real`` elsewhere in the tree are real.

Label convention everywhere: 1 = fake, 0 = real. Nothing is copied: a :class:`Dataset` is a
deterministic list of :class:`Sample` (paths); :func:`forensix.stages.entries.sample_entries` makes
them the entries the scan's stages read, decode and preprocess (an unreadable file becomes an error
value, never an exception, so the caller counts and reports it).
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .inputs import iter_entries

LAYOUTS = ("univfd", "genimage", "list", "dolos")
SPLITS = ("train", "val")
LIST_SUFFIXES = (".csv", ".jsonl", ".json")
REAL_DIR, FAKE_DIR = "0_real", "1_fake"
_LABEL_WORDS = {"0": 0, "1": 1, "real": 0, "fake": 1}
_SEARCH_DEPTH = 6  # how deep layout detection looks for class folders


class DatasetError(ValueError):
    """A data root that matches no layout, or a list with a bad row; the message says which and why."""


@dataclass(frozen=True)
class Sample:
    path: str
    label: int  # 1 = fake, 0 = real
    subset: str  # the group metrics are computed over (UnivFD subset, GenImage generator, ...)
    source: str  # "real", or the generator that made it (folder name or the list's column)
    mask: str | None = None  # ground-truth manipulation mask (dolos layout)

    @property
    def source_class(self) -> str:
        """Its class for source attribution: ``real`` for real images (whatever their source), else its generator."""
        return self.source if self.label else "real"


@dataclass
class Dataset:
    """Samples in a deterministic order: subsets sorted, real before fake, paths sorted (lists: file order)."""

    root: str
    layout: str
    samples: list[Sample]
    split: str | None = None
    masks_inverted: bool = False
    skipped: int = 0  # non-images and archive members found in the class folders
    missing_masks: list[str] = field(default_factory=list)  # dolos images with no mask

    @property
    def subsets(self) -> list[str]:
        return sorted({s.subset for s in self.samples})

    def counts(self) -> dict[str, dict[str, int]]:
        """{subset: {"real": n, "fake": n}}."""
        c = Counter((s.subset, s.label) for s in self.samples)
        return {name: {"real": c[name, 0], "fake": c[name, 1]} for name in self.subsets}

    def summary(self) -> dict[str, object]:
        return {
            "root": self.root,
            "layout": self.layout,
            "split": self.split,
            "samples": len(self.samples),
            "real": sum(s.label == 0 for s in self.samples),
            "fake": sum(s.label == 1 for s in self.samples),
            "skipped_non_images": self.skipped,
            "missing_masks": len(self.missing_masks),
            "subsets": self.counts(),
        }


def load_dataset(root: str | Path, layout: str = "auto", split: str = "val", inverted_masks: bool = True) -> Dataset:
    """The samples under ``root`` (a folder or a list file), in the given or detected layout.

    ``split`` selects GenImage's ``train`` or ``val``; ``inverted_masks`` reads dolos masks as
    stored by Dolos (0 = manipulated). Raises DatasetError when ``root`` matches no layout.
    """
    root = Path(root)
    if layout not in ("auto", *LAYOUTS):
        raise DatasetError(f"unknown layout {layout!r}; known: auto, {', '.join(LAYOUTS)}")
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not root.exists():
        raise DatasetError(f"{root}: no such file or directory")
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "list":
        if not root.is_file():
            raise DatasetError(f"{root}: the list layout needs a .csv or .jsonl file")
        return Dataset(str(root), "list", read_list(root))
    if not root.is_dir():
        raise DatasetError(f"{root}: the {layout} layout needs a folder")
    if layout == "univfd":
        return _univfd(root)
    if layout == "genimage":
        return _genimage(root, split)
    return _dolos(root, inverted_masks)


def detect_layout(root: Path) -> str:
    """Which layout ``root`` is in; DatasetError naming the layouts tried when none matches."""
    if root.is_file():
        if root.suffix.lower() in LIST_SUFFIXES:
            return "list"
        raise DatasetError(f"{root}: a data file must be a .csv or .jsonl list of path,label[,source]")
    if _find_dirs(root, _is_dolos_dir):
        return "dolos"
    if _find_dirs(root, _is_univfd_dir):
        return "univfd"
    if _find_dirs(root, _is_genimage_dir):
        return "genimage"
    raise DatasetError(
        f"{root}: no known dataset layout found (looked {_SEARCH_DEPTH} folders deep for "
        f"<subset>/{{{REAL_DIR},{FAKE_DIR}}} (UnivFD), <generator>/{{train,val}}/{{nature,ai}} (GenImage), "
        "images/ + masks/ (Dolos)); or give a .csv/.jsonl list of path,label"
    )


# --- folder layouts ---------------------------------------------------------------------------


def _subdirs(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if e.is_dir())
    except OSError:
        return []


def _find_dirs(root: Path, match: Callable[[Path], bool], depth: int = _SEARCH_DEPTH) -> list[Path]:
    """Folders under ``root`` (itself included) for which ``match`` holds, sorted; matches are not entered."""
    found, level = [], [root]
    for _ in range(depth + 1):
        below = []
        for folder in level:
            if match(folder):
                found.append(folder)
            else:
                below.extend(_subdirs(folder))
        level = below
    return sorted(found)


def _is_univfd_dir(folder: Path) -> bool:
    return (folder / REAL_DIR).is_dir() or (folder / FAKE_DIR).is_dir()


def _is_genimage_dir(folder: Path) -> bool:
    return folder.name in SPLITS and ((folder / "nature").is_dir() or (folder / "ai").is_dir())


def _is_dolos_dir(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "masks").is_dir()


def _images(folder: Path) -> tuple[list[str], int]:
    """Image paths under ``folder`` (recursive, sorted, sniffed as the scan does) and how many were skipped.

    Entries that can't be listed or read stay in: reading them later gives the error that is reported.
    """
    paths, skipped = [], 0
    for item in iter_entries([str(folder)]):
        if item.skipped or item.member:  # non-images, and archive members: archives in a dataset are not read
            skipped += 1
            continue
        paths.append(item.path)
    return paths, skipped


def _relative_name(folder: Path, root: Path) -> str:
    return root.name if folder == root else folder.relative_to(root).as_posix()


def _univfd(root: Path) -> Dataset:
    samples, skipped = [], 0
    for parent in _find_dirs(root, _is_univfd_dir):
        # Nested class folders (progan/airplane) belong to their top-level subset (progan).
        subset = root.name if parent == root else parent.relative_to(root).parts[0]
        for label, name in ((0, REAL_DIR), (1, FAKE_DIR)):
            paths, n = _images(parent / name) if (parent / name).is_dir() else ([], 0)
            skipped += n
            samples += [Sample(p, label, subset, subset if label else "real") for p in paths]
    samples.sort(key=lambda s: (s.subset, s.label))  # stable: paths stay sorted within
    return Dataset(str(root), "univfd", samples, skipped=skipped)


def _genimage(root: Path, split: str) -> Dataset:
    samples, skipped = [], 0
    for folder in _find_dirs(root, _is_genimage_dir):
        if folder.name != split:
            continue
        # The generator is the top-level folder (GenImage nests one more level: sdv4/imagenet_ai_0419_sdv4/val).
        subset = root.name if folder.parent == root else folder.relative_to(root).parts[0]
        for label, name in ((0, "nature"), (1, "ai")):
            paths, n = _images(folder / name) if (folder / name).is_dir() else ([], 0)
            skipped += n
            samples += [Sample(p, label, subset, subset if label else "real") for p in paths]
    samples.sort(key=lambda s: (s.subset, s.label))
    if not samples:
        raise DatasetError(f"{root}: no GenImage images in the {split!r} split")
    return Dataset(str(root), "genimage", samples, split=split, skipped=skipped)


def _dolos(root: Path, inverted: bool) -> Dataset:
    samples, skipped, missing = [], 0, []
    for folder in _find_dirs(root, _is_dolos_dir):
        subset = _relative_name(folder, root)
        masks = {}
        for dirpath, dirnames, filenames in os.walk(folder / "masks"):
            dirnames.sort()
            for name in sorted(filenames):
                rel = (Path(dirpath) / name).relative_to(folder / "masks")
                masks.setdefault(rel.with_suffix("").as_posix(), str(Path(dirpath) / name))
        paths, n = _images(folder / "images")
        skipped += n
        for p in paths:
            mask = masks.get(Path(p).relative_to(folder / "images").with_suffix("").as_posix())
            if mask is None:
                missing.append(p)
            samples.append(Sample(p, 1, subset, subset, mask))
    for folder in _find_dirs(root, lambda f: f.name == "real"):
        paths, n = _images(folder)
        skipped += n
        samples += [Sample(p, 0, "real", "real") for p in paths]
    return Dataset(str(root), "dolos", samples, masks_inverted=inverted, skipped=skipped, missing_masks=missing)


# --- lists ------------------------------------------------------------------------------------


def parse_label(value: object) -> int:
    """0/1 (int or text) or real/fake (any case) → 0/1; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"label must be 0, 1, real or fake, got {value!r}")
    text = str(value).strip().lower()
    if text not in _LABEL_WORDS:
        raise ValueError(f"label must be 0, 1, real or fake, got {value!r}")
    return _LABEL_WORDS[text]


def read_list(path: Path) -> list[Sample]:
    """Samples from a CSV (``path,label[,source][,subset]``, header optional) or JSON Lines list, in file order.

    Without a subset column every row is in one subset named after the list file.
    """
    path = Path(path)
    base = path.parent
    rows = _jsonl_rows(path) if path.suffix.lower() in (".jsonl", ".json") else _csv_rows(path)
    samples = []
    for line, row in rows:
        try:
            file = str(row["path"]).strip()
            if not file:
                raise ValueError("empty path")
            label = parse_label(row["label"])
        except (KeyError, ValueError) as e:
            raise DatasetError(f"{path}:{line}: {e.args[0] if isinstance(e, KeyError) else e}") from None
        subset = str(row.get("subset") or path.stem)
        source = str(row.get("source") or ("fake" if label else "real"))
        samples.append(Sample(str(base / file) if not os.path.isabs(file) else file, label, subset, source))
    if not samples:
        raise DatasetError(f"{path}: the list holds no rows")
    return samples


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        columns = ["path", "label", "source", "subset"]
        for line, cells in enumerate(reader, 1):
            if not cells or not any(c.strip() for c in cells):
                continue
            if line == 1 and cells[0].strip().lower() == "path":
                columns = [c.strip().lower() for c in cells]  # a header names the columns
                continue
            yield line, dict(zip(columns, cells))


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{line}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{line}: expected an object with path and label")
            yield line, row
