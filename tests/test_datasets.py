"""Dataset layouts: detection, labels, subsets, order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import random_image
from PIL import Image

from forensix.datasets import (
    DatasetError,
    detect_layout,
    load_dataset,
    parse_label,
)


def save(path: Path, seed: int = 0, size: tuple[int, int] = (40, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    random_image(*size, seed=seed).save(path)
    return path


@pytest.fixture
def univfd(tmp_path) -> Path:
    root = tmp_path / "univfd"
    for name in ("b.png", "a.png"):
        save(root / "progan" / "0_real" / name)
    save(root / "progan" / "1_fake" / "c.png")
    for cls in ("cat", "airplane"):  # nested class folders under one subset
        save(root / "biggan" / cls / "0_real" / "r.png")
        save(root / "biggan" / cls / "1_fake" / "f.png")
    (root / "progan" / "1_fake" / "notes.txt").write_text("not an image")
    return root


def test_univfd_layout_with_nested_class_folders(univfd):
    ds = load_dataset(univfd)
    assert ds.layout == "univfd" and ds.subsets == ["biggan", "progan"]
    rel = [(Path(s.path).relative_to(univfd).as_posix(), s.label, s.subset, s.source) for s in ds.samples]
    assert rel == [
        ("biggan/airplane/0_real/r.png", 0, "biggan", "real"),
        ("biggan/cat/0_real/r.png", 0, "biggan", "real"),
        ("biggan/airplane/1_fake/f.png", 1, "biggan", "biggan"),
        ("biggan/cat/1_fake/f.png", 1, "biggan", "biggan"),
        ("progan/0_real/a.png", 0, "progan", "real"),
        ("progan/0_real/b.png", 0, "progan", "real"),
        ("progan/1_fake/c.png", 1, "progan", "progan"),
    ]
    assert ds.skipped == 1 and all(s.mask is None for s in ds.samples)
    assert ds.counts() == {"biggan": {"real": 2, "fake": 2}, "progan": {"real": 2, "fake": 1}}
    assert load_dataset(univfd).samples == ds.samples  # deterministic


def test_a_root_that_holds_the_class_folders_is_one_subset(univfd):
    ds = load_dataset(univfd / "progan")
    assert ds.subsets == ["progan"] and [s.label for s in ds.samples] == [0, 0, 1]


def test_genimage_layout_and_split(tmp_path):
    root = tmp_path / "GenImage"
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            save(root / "sdv4" / "imagenet_ai_0419_sdv4" / split / "nature" / f"n{i}.png")
            save(root / "sdv4" / "imagenet_ai_0419_sdv4" / split / "ai" / f"a{i}.png")
    save(root / "midjourney" / "val" / "ai" / "x.png")
    val = load_dataset(root)
    assert val.layout == "genimage" and val.split == "val" and val.subsets == ["midjourney", "sdv4"]
    assert [(s.subset, s.label, s.source) for s in val.samples] == [
        ("midjourney", 1, "midjourney"),
        ("sdv4", 0, "real"),
        ("sdv4", 1, "sdv4"),
    ]
    train = load_dataset(root, split="train")
    assert len(train.samples) == 4 and {Path(s.path).parent.parent.name for s in train.samples} == {"train"}
    one = root / "sdv4" / "imagenet_ai_0419_sdv4"  # a root that holds the splits is one generator
    assert load_dataset(one, layout="genimage").subsets == ["imagenet_ai_0419_sdv4"]


def test_csv_list_with_and_without_header(tmp_path):
    save(tmp_path / "imgs" / "a.png")
    (tmp_path / "lists").mkdir()
    with_header = tmp_path / "lists" / "val.csv"
    with_header.write_text("path,label,source\n../imgs/a.png,real,coco\n../imgs/b.png,1,sdxl\n")
    ds = load_dataset(with_header)
    assert ds.layout == "list" and ds.subsets == ["val"]
    assert [(s.path, s.label, s.source) for s in ds.samples] == [
        (str(tmp_path / "lists" / "../imgs/a.png"), 0, "coco"),
        (str(tmp_path / "lists" / "../imgs/b.png"), 1, "sdxl"),
    ]
    bare = tmp_path / "bare.csv"
    bare.write_text(f"{tmp_path / 'imgs/a.png'},FAKE\nimgs/a.png,0\n")
    assert [(s.label, s.source) for s in load_dataset(bare).samples] == [(1, "fake"), (0, "real")]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.png,0\nb.png,maybe\n")
    with pytest.raises(DatasetError, match=r"bad.csv:3: label must be"):
        load_dataset(bad)


def test_jsonl_list_with_subsets(tmp_path):
    f = tmp_path / "set.jsonl"
    rows = [{"path": "x.png", "label": 0, "subset": "a"}, {"path": "y.png", "label": "fake", "subset": "b"}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = load_dataset(f)
    assert [(s.subset, s.label) for s in ds.samples] == [("a", 0), ("b", 1)]
    f.write_text('{"path": "x.png"}\n')
    with pytest.raises(DatasetError, match=r"set.jsonl:1: label"):
        load_dataset(f)


def test_parse_label():
    assert [parse_label(v) for v in (0, 1, "0", " 1 ", "Real", "FAKE")] == [0, 1, 0, 1, 0, 1]
    for bad in (2, "yes", True, ""):
        with pytest.raises(ValueError):
            parse_label(bad)


def test_dolos_layout_matches_masks_by_stem(tmp_path):
    root = tmp_path / "dolos"
    fake = root / "fake" / "lama" / "test"
    save(fake / "images" / "001.png")
    save(fake / "images" / "002.png")
    (fake / "masks").mkdir()
    Image.new("L", (40, 32), 0).save(fake / "masks" / "001.png")
    save(root / "real" / "test" / "r.png")
    assert detect_layout(root) == "dolos"
    ds = load_dataset(root)
    assert ds.subsets == ["fake/lama/test", "real"] and ds.masks_inverted
    assert [(Path(s.path).name, s.label, s.mask and Path(s.mask).name) for s in ds.samples] == [
        ("001.png", 1, "001.png"),
        ("002.png", 1, None),
        ("r.png", 0, None),
    ]
    assert [Path(p).name for p in ds.missing_masks] == ["002.png"]
    assert not load_dataset(root, inverted_masks=False).masks_inverted


def test_no_layout_is_a_clear_error(tmp_path):
    save(tmp_path / "loose" / "a.png")
    with pytest.raises(DatasetError, match="no known dataset layout"):
        load_dataset(tmp_path / "loose")
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DatasetError, match=".csv or .jsonl"):
        load_dataset(tmp_path / "x.txt")
