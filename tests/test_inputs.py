"""forensix.inputs: what to scan → a deterministic stream of entries; errors are items, never exceptions."""

from __future__ import annotations

import builtins
import bz2
import gzip
import hashlib
import io
import lzma
import os
import pickle
import random
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from forensix.inputs import (
    ArchiveAt,
    InputItem,
    InputSpec,
    InputStats,
    Limits,
    NotAnImage,
    archive_entries,
    count_entries,
    is_archive,
    iter_entries,
    iter_inputs,
    read_path_list,
)
from forensix.workers import run_alone

TAR_MODES = {"tar": "w", "tar.gz": "w:gz", "tgz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}
FORMATS = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF", "webp": "WEBP"}


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chmod_000_denies(tmp_path_factory) -> None:
    """Skip unless a chmod 000 folder really is unreadable here (root, or CAP_DAC_OVERRIDE, reads it anyway)."""
    probe = tmp_path_factory.mktemp("probe")
    probe.chmod(0)
    try:
        os.listdir(probe)
    except PermissionError:
        return
    finally:
        probe.chmod(0o755)
    pytest.skip("running with rights that ignore file permissions (root)")


def image_bytes(fmt: str = "PNG", seed: int = 0, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((size, size), 40 + seed).convert("RGB").save(buf, fmt)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w", links: dict[str, str] | None = None) -> Path:
    """A tar of members, then symlinks (name → target) from links."""
    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return path


def make_archive(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A zip or a tar (compressed as the name says); links only in a tar."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".zip"):
        return make_zip(path, members)
    return make_tar(path, members, TAR_MODES[path.name.split(".", 1)[1]], links)


def summary(items, base: Path) -> list[tuple[str, str, str, bool]]:
    """(path relative to base, member, error, skipped) per item: everything but the reader."""
    return [(os.path.relpath(i.path, base), i.member, i.error, i.skipped) for i in items]


def entries(paths, base: Path, limits: Limits | None = None) -> list[tuple[str, str, str, bool]]:
    return summary(iter_entries([str(p) for p in paths], limits), base)


def read_while_streaming(paths, limits: Limits | None = None) -> dict[tuple[str, str], bytes | str]:
    """(path, member) → the bytes read() returns, or 'ExcType: message', reading each item as it comes."""
    out: dict[tuple[str, str], bytes | str] = {}
    for item in iter_entries([str(p) for p in paths], limits):
        if item.skipped or item.error:
            continue
        try:
            out[(item.path, item.member)] = item.read()
        except Exception as e:  # the exception's type is part of what the tests check
            out[(item.path, item.member)] = f"{type(e).__name__}: {e}"
    return out


def read_detached(paths, limits: Limits | None = None) -> dict[tuple[str, str], bytes | str]:
    """As :func:`read_while_streaming`, but each item detached as it comes and read after the walk has
    ended, in another process (how the scan's workers read them)."""
    items = [i.detach() for i in iter_entries([str(p) for p in paths], limits) if not (i.skipped or i.error)]
    return run_alone(read_all, pickle.dumps(items))


def read_all(pickled: bytes) -> dict[tuple[str, str], bytes | str]:
    out: dict[tuple[str, str], bytes | str] = {}
    for item in pickle.loads(pickled):
        try:
            out[(item.path, item.member)] = item.read()
        except Exception as e:
            out[(item.path, item.member)] = f"{type(e).__name__}: {e}"
    return out


def incompressible(n: int, seed: int = 0) -> bytes:
    """n bytes that no compressor shrinks, starting with zeros so that they are no image."""
    return bytes(16) + random.Random(seed).randbytes(n - 16)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(root: Path) -> list[str]:
    """Every name under root, recursively, without following symlinks."""
    return sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, dirs, files in os.walk(root)
        for name in dirs + files
    )


# --- directories ---------------------------------------------------------------------------------


def test_every_supported_format_is_an_image(tmp_path):
    for ext, fmt in FORMATS.items():
        write(tmp_path / "imgs" / f"img.{ext}", image_bytes(fmt))
    assert entries([tmp_path / "imgs"], tmp_path) == [(f"imgs/img.{ext}", "", "", False) for ext in sorted(FORMATS)]


def test_directories_are_walked_depth_first_with_names_sorted(tmp_path):
    root = tmp_path / "root"
    # created out of order: the listing order of the file system must not matter
    for name in ["c.jpg", "a.bmp", "a/z.gif", "a-1.tiff", "a/b/c.webp", "B.png"]:
        write(root / name, image_bytes(FORMATS[name.rsplit(".", 1)[1]]))
    assert [e[0] for e in entries([root], root)] == [
        "B.png",  # upper case sorts first
        "a/b/c.webp",  # a folder's contents come where its name sorts ...
        "a/z.gif",
        "a-1.tiff",  # ... not where its full paths would
        "a.bmp",
        "c.jpg",
    ]


def test_two_walks_give_the_same_stream(tmp_path):
    root = tmp_path / "root"
    write(root / "q" / "2.png", image_bytes(seed=1))
    write(root / "q" / "1.png", image_bytes(seed=2))
    write(root / "p" / "x.jpg", b"not an image")
    write(root / "notes.txt", b"hello")
    write(root / "zz" / "deep" / "er" / "img.gif", image_bytes("GIF"))
    make_zip(root / "m.zip", {"k/b.png": image_bytes(), "k/a.png": image_bytes(seed=1), "t.txt": b"text"})
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    first, second = entries([root], tmp_path), entries([root], tmp_path)
    assert first == second
    assert len(first) == 9


def test_images_are_recognised_by_content_not_by_name(tmp_path):
    root = tmp_path / "root"
    write(root / "x.jpg", b"this is a text file named like a JPEG")
    write(root / "noext", image_bytes("PNG"))
    write(root / "notes.txt", b"hello")
    write(root / "photo.dat", image_bytes("JPEG"))
    assert entries([root], root) == [
        ("noext", "", "", False),
        ("notes.txt", "", "", True),
        ("photo.dat", "", "", False),
        ("x.jpg", "", "", True),
    ]


def test_iter_inputs_counts_skipped_non_images_and_drops_them(tmp_path):
    root = tmp_path / "root"
    write(root / "x.jpg", b"not an image")
    write(root / "notes.txt", b"hello")
    write(root / "real.png", image_bytes())
    make_zip(root / "a.zip", {"readme.md": b"# hi", "in.png": image_bytes()})
    stats = InputStats()
    rows = summary(iter_inputs([str(root)], stats), root)
    assert rows == [("a.zip", "in.png", "", False), ("real.png", "", "", False)]
    assert stats.skipped_non_images == 3


def test_a_non_image_named_explicitly_is_still_an_item(tmp_path):
    text = write(tmp_path / "x.jpg", b"not an image at all")
    [item] = iter_entries([str(text)])
    assert (item.path, item.member, item.error, item.skipped) == (str(text), "", "", False)
    assert item.read() == b"not an image at all"  # the decoder, not the walk, turns it into an error row


def test_read_returns_exactly_the_files_bytes(tmp_path):
    names = {"a.png": "PNG", "b.jpg": "JPEG", "c.webp": "WEBP"}
    files = {name: write(tmp_path / "d" / name, image_bytes(fmt)) for name, fmt in names.items()}
    got = read_while_streaming([tmp_path / "d"])
    assert {Path(p).name: sha256(data) for (p, _), data in got.items()} == {
        name: sha256(path.read_bytes()) for name, path in files.items()
    }


def test_read_of_an_error_item_raises_oserror():
    item = InputItem("gone.png", error="no such file or directory")
    with pytest.raises(OSError, match="no such file or directory"):
        item.read()


def test_a_missing_path_is_an_error_item(tmp_path):
    assert entries([tmp_path / "missing.png", tmp_path / "missing.zip"], tmp_path) == [
        ("missing.png", "", "no such file or directory", False),
        ("missing.zip", "", "no such file or directory", False),
    ]


def test_a_file_over_max_bytes_fails_to_read_naming_the_limit(tmp_path):
    path = write(tmp_path / "big.png", image_bytes(size=64))
    [item] = iter_entries([str(path)], Limits(max_bytes=100))
    with pytest.raises(ValueError, match=r"max-bytes limit \(100\)"):
        item.read()


# --- symlinks and permissions --------------------------------------------------------------------


def test_broken_symlinks_are_error_items(tmp_path):
    root = tmp_path / "root"
    write(root / "ok.png", image_bytes())
    (root / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    assert entries([root, root / "dangling.png"], root) == [
        ("dangling.png", "", "broken symlink", False),
        ("ok.png", "", "", False),
        ("dangling.png", "", "broken symlink", False),  # named explicitly
    ]


def test_a_symlink_loop_is_one_error_item_and_the_walk_ends(tmp_path):
    root = tmp_path / "root"
    write(root / "a" / "img.png", image_bytes())
    write(root / "top.png", image_bytes())
    (root / "a" / "link").symlink_to("..")  # root/a/link → root
    got = entries([root], root)
    assert got == [
        ("a/img.png", "", "", False),
        ("a/link", "", "symlink loop: leads back to a folder being scanned", False),
        ("top.png", "", "", False),
    ]
    assert sum("symlink loop" in e[2] for e in got) == 1


def test_a_symlinked_folder_elsewhere_is_scanned_once(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "photo.png", image_bytes())
    root = tmp_path / "root"
    write(root / "own.png", image_bytes())
    (root / "link1").symlink_to(elsewhere)
    (root / "link2").symlink_to(elsewhere)  # the same folder again: not scanned twice
    got = entries([root], root)
    assert [e for e in got if not e[2]] == [("link1/photo.png", "", "", False), ("own.png", "", "", False)]
    assert [(path, error) for path, _, error, _ in got if error] == [
        ("link2", "folder already scanned under another path")
    ]


def test_an_unreadable_folder_is_an_error_item_and_the_walk_goes_on(tmp_path, chmod_000_denies):
    root = tmp_path / "root"
    write(root / "locked" / "secret.png", image_bytes())
    write(root / "open.png", image_bytes())
    (root / "locked").chmod(0)
    try:
        got = entries([root], root)
    finally:
        (root / "locked").chmod(0o755)
    assert got == [("locked", "", "cannot list directory: Permission denied", False), ("open.png", "", "", False)]


def test_a_folder_that_cannot_be_listed_is_an_error_item(tmp_path, monkeypatch):
    """The same, for any user: listing the folder fails as a chmod 000 folder would for a non-root user."""
    root = tmp_path / "root"
    write(root / "locked" / "secret.png", image_bytes())
    write(root / "open.png", image_bytes())
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path) == str(root / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert entries([root], root) == [
        ("locked", "", "cannot list directory: Permission denied", False),
        ("open.png", "", "", False),
    ]


# --- archives ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.zip", "a.tar", "a.tar.gz", "a.tgz", "a.tar.bz2", "a.tar.xz"])
def test_archive_members_are_listed_in_archive_order_and_read_in_memory(tmp_path, name):
    members = {
        "z/deep/er/1.png": image_bytes("PNG", 1),
        "b.jpg": image_bytes("JPEG", 2),
        "readme.txt": b"not an image",
        "a/noext": image_bytes("GIF", 3),
    }
    archive = make_archive(tmp_path / name, members)
    assert entries([archive], tmp_path) == [
        (name, "z/deep/er/1.png", "", False),
        (name, "b.jpg", "", False),
        (name, "readme.txt", "", True),
        (name, "a/noext", "", False),
    ]
    got = read_while_streaming([archive])
    assert {member: sha256(data) for (_, member), data in got.items()} == {
        m: sha256(d) for m, d in members.items() if m != "readme.txt"
    }
    assert listing(tmp_path) == [name]  # read in memory: nothing extracted


def test_archives_inside_folders_are_opened(tmp_path):
    root = tmp_path / "root"
    make_archive(root / "sub" / "pics.zip", {"in/1.png": image_bytes()})
    make_archive(root / "sub" / "pics.tar.gz", {"in/2.png": image_bytes()})
    assert entries([root], root) == [
        ("sub/pics.tar.gz", "in/2.png", "", False),
        ("sub/pics.zip", "in/1.png", "", False),
    ]


def test_a_walk_that_opens_no_archive_hands_each_to_its_lister_in_its_place(tmp_path):
    root = tmp_path / "root"
    write(root / "a.png", image_bytes(seed=1))
    make_archive(root / "b.tar.gz", {"in/1.png": image_bytes(seed=2), "in/t.txt": b"text"})
    write(root / "c" / "d.jpg", b"not an image")
    make_archive(root / "c" / "e.zip", {"2.png": image_bytes(seed=3)})
    (root / "f.tar").write_bytes(b"no tar at all")
    met = []

    def lister(walk, limits):  # what the Ray engine does in tasks, here in turn
        for item in walk:
            if isinstance(item, ArchiveAt):
                met.append(os.path.relpath(item.path, root))
                yield from archive_entries(item.path, limits)
            else:
                yield item

    def read(items):
        return [(*s, _read_or_why(i)) for s, i in zip(summary(items, root), items)]

    here = list(iter_entries([str(root)], sniff=False))
    handed = list(iter_entries([str(root)], sniff=False, archives=lister))
    assert read(handed) == read(here)
    assert len(here) == 6 and [e.member for e in here if e.path.endswith("b.tar.gz")] == ["in/1.png", "in/t.txt"]
    assert met == ["b.tar.gz", "c/e.zip", "f.tar"]
    with pytest.raises(ValueError, match="sniff=False"):
        iter_entries([str(root)], archives=lister)


def _read_or_why(item: InputItem) -> bytes | str:
    try:
        return item.read()
    except Exception as e:
        return type(e).__name__


def test_is_archive_goes_by_name():
    assert all(is_archive(n) for n in ["a.zip", "A.ZIP", "b.tar", "c.tar.gz", "d.tgz", "e.tar.bz2", "f.tar.xz"])
    assert not any(is_archive(n) for n in ["a.png", "zip", "a.gz", "a.tar.zst", "a.zipx"])


@pytest.mark.parametrize("name", ["evil.zip", "evil.tar", "evil.tar.gz"])
def test_member_names_that_escape_are_labels_only(tmp_path, monkeypatch, name):
    members = {
        "../evil.png": image_bytes(seed=1),
        "/etc/evil.png": image_bytes(seed=2),
        "ok/../../x.png": image_bytes(),
    }
    links = {"passwd.png": "/etc/passwd", "up.png": "../../evil.png"}  # tar symlinks: never followed
    archive = make_archive(tmp_path / "in" / name, members, links)
    real_cwd = Path.cwd()
    cwd = tmp_path / "work" / "here"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)  # so "../evil.png" from the working folder lands in tmp_path, watched below
    escapes = [d / ".." / n for d in [real_cwd, real_cwd.parent] for n in ["evil.png", "x.png"]]
    escapes.append(Path("/etc/evil.png"))
    existed = [os.path.lexists(p) for p in escapes]
    before = listing(tmp_path), sorted(os.listdir(tmp_path.parent))

    got = entries([archive], tmp_path)
    contents = read_while_streaming([archive])

    not_followed = [(f"in/{name}", m, SYMLINK_NOT_FOLLOWED, False) for m in links if "tar" in name]
    assert got == [(f"in/{name}", m, "", False) for m in members] + not_followed
    assert {member: sha256(d) for (_, member), d in contents.items()} == {m: sha256(d) for m, d in members.items()}
    assert (listing(tmp_path), sorted(os.listdir(tmp_path.parent))) == before
    assert [os.path.lexists(p) for p in escapes] == existed


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory) -> Path:
    """A PNG signature, then 100 MiB of zeros that deflate to ~100 KB (ratio ~1000), written in chunks."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("small.png", image_bytes())
        with archive.open("zeros.png", "w", force_zip64=True) as member:
            member.write(b"\x89PNG\r\n\x1a\n" + chunk[8:])  # it looks like an image: the limits apply
            for _ in range(99):
                member.write(chunk)
    return path


def test_a_zip_bomb_hits_the_ratio_limit(zip_bomb):
    assert zip_bomb.stat().st_size < 200_000
    small, bomb = iter_entries([str(zip_bomb)])
    assert (small.member, small.error) == ("small.png", "")
    assert bomb.member == "zeros.png"
    assert "max-ratio limit (200)" in bomb.error
    assert bomb.reader is None


def test_a_zip_bomb_hits_max_bytes_first_when_that_is_smaller(zip_bomb):
    _, bomb = iter_entries([str(zip_bomb)], Limits(max_bytes=1_000_000))
    assert bomb.error == f"member is {100 << 20} bytes, over the max-bytes limit (1000000)"


def test_a_tar_member_over_max_bytes_is_an_error_item(tmp_path):
    small, big = image_bytes(size=4), image_bytes(size=64)
    archive = make_tar(tmp_path / "t.tar", {"small.png": small, "big.png": big, "after.png": small})
    got = entries([archive], tmp_path, Limits(max_bytes=len(small)))
    assert got == [
        ("t.tar", "small.png", "", False),
        ("t.tar", "big.png", f"member is {len(big)} bytes, over the max-bytes limit ({len(small)})", False),
        ("t.tar", "after.png", "", False),
    ]


def test_members_past_max_archive_bytes_are_error_items(tmp_path):
    data = image_bytes(size=16)
    archive = make_tar(tmp_path / "t.tar.gz", {f"{i}.png": data for i in range(4)}, "w:gz")
    got = entries([archive], tmp_path, Limits(max_archive_bytes=2 * len(data) + 1))
    assert [e[1] for e in got] == ["0.png", "1.png", "2.png", "3.png"]
    assert [e[2] for e in got[:2]] == ["", ""]
    for _, _, error, _ in got[2:]:
        assert error == f"archive exceeds the max-archive-bytes limit ({2 * len(data) + 1}) of uncompressed data"


@pytest.mark.parametrize("name", ["bad.zip", "bad.tar.gz", "bad.tar"])
def test_a_corrupt_archive_is_one_error_item(tmp_path, name):
    path = write(tmp_path / name, b"PK\x03\x04 this is no archive " * 10)
    [(label, member, error, skipped)] = entries([path], tmp_path)
    assert (label, member, skipped) == (name, "", False)
    assert error.startswith("cannot read archive: ")


@pytest.mark.parametrize("name", ["t.tar", "t.tar.gz", "t.tar.xz"])
def test_a_truncated_tar_keeps_the_members_before_the_damage(tmp_path, name):
    filler = incompressible(200_000)  # the cut lands inside it
    members = {
        "a.png": image_bytes(seed=1),
        "d/b.png": image_bytes(seed=2),
        "filler.bin": filler,
        "z.png": image_bytes(),
    }
    whole = make_archive(tmp_path / name, members).read_bytes()
    cut = write(tmp_path / "cut" / name, whole[: len(whole) // 2])

    got = entries([cut], tmp_path / "cut")
    assert got[:3] == [(name, "a.png", "", False), (name, "d/b.png", "", False), (name, "filler.bin", "", True)]
    assert len(got) == 4
    assert got[3][1] == "" and got[3][2].startswith("cannot read archive: ")
    contents = read_while_streaming([cut])
    assert [sha256(d) for d in contents.values()] == [sha256(members["a.png"]), sha256(members["d/b.png"])]


def test_a_zip_member_with_damaged_data_is_an_error_item_not_a_crash(tmp_path):
    """zlib.error from a damaged deflate stream used to escape iter_entries."""
    path = make_zip(tmp_path / "d.zip", {"bad.png": image_bytes(size=32) * 4, "good.png": image_bytes()})
    data = bytearray(path.read_bytes())
    start = 30 + len("bad.png")  # the first member's deflate stream follows its local header
    data[start : start + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(data)
    got = entries([path], tmp_path)
    assert [e[1] for e in got] == ["bad.png", "good.png"]
    assert got[0][2].startswith("cannot read member: ") and "decompressing" in got[0][2]
    assert got[1][2] == ""


def test_a_damaged_xz_stream_is_an_error_item_not_a_crash(tmp_path):
    """lzma.LZMAError from a damaged .tar.xz used to escape iter_entries."""
    filler = incompressible(200_000)
    whole = bytearray(make_tar(tmp_path / "t.tar.xz", {"a.png": image_bytes(), "f.bin": filler}, "w:xz").read_bytes())
    middle = len(whole) // 2
    whole[middle : middle + 64] = bytes(64)
    path = write(tmp_path / "damaged.tar.xz", bytes(whole))
    got = entries([path], tmp_path)
    assert got[0] == ("damaged.tar.xz", "a.png", "", False)
    assert got[-1][1] == "" and got[-1][2].startswith("cannot read archive: ")


def lying_zip(path: Path, data: bytes, claimed_size: int) -> Path:
    """A one-member zip whose local and central headers give claimed_size as the member's size."""
    make_zip(path, {"a.png": data}, zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, 22, claimed_size)  # local header: uncompressed size
    struct.pack_into("<I", raw, raw.index(b"PK\x01\x02") + 24, claimed_size)  # central directory
    path.write_bytes(raw)
    return path


def test_a_zip_header_claiming_more_bytes_than_stored_fails_to_read(tmp_path):
    data = image_bytes()
    path = lying_zip(tmp_path / "more.zip", data, len(data) + 1000)
    assert read_while_streaming([path]) == {
        (str(path), "a.png"): f"ValueError: member 'a.png' holds {len(data)} bytes, its header says {len(data) + 1000}"
    }


def test_a_zip_header_claiming_fewer_bytes_fails_to_read_with_a_value_error(tmp_path):
    """A bad CRC surfaces as ValueError (what callers catch), not as zipfile.BadZipFile."""
    data = image_bytes(size=64)
    assert len(data) > 8192  # big enough that the 16-byte sniff does not reach the CRC check
    path = lying_zip(tmp_path / "fewer.zip", data, len(data) - 10)
    assert read_while_streaming([path]) == {
        (str(path), "a.png"): "ValueError: member 'a.png' is damaged: Bad CRC-32 for file 'a.png'"
    }


SYMLINK_NOT_FOLLOWED = "symbolic link in archive: not followed"


def hardlinked_folder(root: Path) -> dict[str, bytes]:
    """a.png, b.png (a hard link to a.png) and c.png under root: three names, two files."""
    files = {"a.png": image_bytes(seed=1), "c.png": image_bytes(seed=2)}
    for name, data in files.items():
        write(root / name, data)
    os.link(root / "a.png", root / "b.png")
    return {"a.png": files["a.png"], "b.png": files["a.png"], "c.png": files["c.png"]}


@pytest.mark.parametrize("name", ["t.tar", "t.tar.gz", "t.tar.xz"])
def test_a_hard_link_in_a_tar_is_an_item_with_the_linked_files_bytes(tmp_path, name):
    """A hard link member used to be dropped with nothing counted: 3 rows from the folder, 2 from its tar."""
    files = hardlinked_folder(tmp_path / "photos")
    archive = tmp_path / name
    with tarfile.open(archive, TAR_MODES[name.split(".", 1)[1]]) as t:
        t.add(tmp_path / "photos", arcname="photos")  # the second name of a file goes in as a hard link
    with tarfile.open(archive) as t:
        assert [m.name for m in t if m.islnk()] == ["photos/b.png"]
    assert len(entries([tmp_path / "photos"], tmp_path)) == 3
    assert entries([archive], tmp_path) == [(name, f"photos/{n}", "", False) for n in files]
    contents = read_while_streaming([archive])
    assert {m: sha256(d) for (_, m), d in contents.items()} == {f"photos/{n}": sha256(d) for n, d in files.items()}


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar command here")
def test_a_tar_made_by_the_tar_command_gives_an_item_per_name_as_its_folder(tmp_path):
    files = hardlinked_folder(tmp_path / "photos")
    archive = tmp_path / "photos.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(tmp_path / "photos"), "."], check=True)
    got = {i.member.removeprefix("./"): i.read() for i in iter_entries([str(archive)]) if not i.skipped}
    assert {n: sha256(d) for n, d in got.items()} == {n: sha256(d) for n, d in files.items()}


NO_DATA = (tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE)


def link_tar(path: Path, items: list[tuple[str, bytes | str]]) -> Path:
    """A tar of (name, bytes) files, (name, 'hard:target' or 'sym:target') links, (name, a NO_DATA type) others."""
    with tarfile.open(path, "w") as archive:
        for name, what in items:
            info = tarfile.TarInfo(name)
            if isinstance(what, str):
                kind, info.linkname = what.split(":", 1)
                info.type = tarfile.LNKTYPE if kind == "hard" else tarfile.SYMTYPE
            elif what in NO_DATA:
                info.type = what
            else:
                info.size = len(what)
                archive.addfile(info, io.BytesIO(what))
                continue
            archive.addfile(info)
    return path


def test_links_and_special_members_of_a_tar_are_rows_or_counted_never_dropped(tmp_path):
    image = image_bytes()
    archive = link_tar(
        tmp_path / "t.tar",
        [
            ("dir/a.png", image),
            ("dir/", tarfile.DIRTYPE),
            ("notes.txt", b"some text"),
            ("hard.png", "hard:dir/a.png"),
            ("hard-to-text", "hard:notes.txt"),  # a non-image under two names: skipped twice
            ("hard-chain.png", "hard:./hard.png"),  # tar normalises names; a link to a link is to its file
            ("sym.png", "sym:dir/a.png"),
            ("hard-to-sym.png", "hard:sym.png"),  # the same link under a second name
            ("hard-missing.png", "hard:later.png"),  # a hard link names an earlier member
            ("later.png", image),
            ("fifo", tarfile.FIFOTYPE),
            ("tty", tarfile.CHRTYPE),
            ("disk", tarfile.BLKTYPE),
        ],
    )
    assert entries([archive], tmp_path) == [
        ("t.tar", "dir/a.png", "", False),
        ("t.tar", "notes.txt", "", True),
        ("t.tar", "hard.png", "", False),
        ("t.tar", "hard-to-text", "", True),
        ("t.tar", "hard-chain.png", "", False),
        ("t.tar", "sym.png", SYMLINK_NOT_FOLLOWED, False),
        ("t.tar", "hard-to-sym.png", SYMLINK_NOT_FOLLOWED, False),
        ("t.tar", "hard-missing.png", "hard link to 'later.png', which is not an earlier member of the archive", False),
        ("t.tar", "later.png", "", False),
        ("t.tar", "fifo", "", True),
        ("t.tar", "tty", "", True),
        ("t.tar", "disk", "", True),
    ]
    contents = read_while_streaming([archive])
    assert {m for _, m in contents} == {"dir/a.png", "hard.png", "hard-chain.png", "later.png"}
    assert all(data == image for data in contents.values())
    stats = InputStats()
    assert len(list(iter_inputs([str(archive)], stats))) == 7
    assert stats.skipped_non_images == 5


def test_a_hard_link_is_held_to_the_limits_as_the_file_it_names(tmp_path):
    small, big = image_bytes(size=4), image_bytes(size=64)
    archive = link_tar(
        tmp_path / "t.tar",
        [
            ("small.png", small),
            ("big.png", big),
            ("big-again.png", "hard:big.png"),
            ("small-again.png", "hard:small.png"),
        ],
    )
    over = f"member is {len(big)} bytes, over the max-bytes limit ({len(small)})"
    assert [e[2] for e in entries([archive], tmp_path, Limits(max_bytes=len(small)))] == ["", over, over, ""]
    # Each name's bytes are read again, so they count again towards the archive's total.
    total = Limits(max_archive_bytes=len(small) + len(big) + len(big))
    assert [e[2] == "" for e in entries([archive], tmp_path, total)] == [True, True, True, False]


def read_counting_bytes(archive: Path, monkeypatch) -> tuple[dict[tuple[str, str], bytes | str], int]:
    """:func:`read_while_streaming` of one archive, and how many bytes of the archive's file it read."""
    read, real_open = [0], open

    class Counted(io.BufferedReader):
        def read(self, n=-1):
            data = super().read(n)
            read[0] += len(data)
            return data

    def counting_open(file, mode="r", *args, **kwargs):
        if os.fspath(file) == str(archive) and "b" in mode:
            return Counted(real_open(file, "rb", buffering=0))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    contents = read_while_streaming([archive])
    monkeypatch.undo()
    return contents, read[0]


def test_hard_links_in_a_compressed_tar_do_not_decompress_it_again_for_each_link(tmp_path, monkeypatch):
    """Reading a linked file seeks back in the stream; it must not rewind the walk's own stream each time."""
    items: list[tuple[str, bytes | str]] = []
    for i in range(8):
        items += [(f"{i}.png", image_bytes(seed=i)), (f"filler{i}.bin", incompressible(300_000, seed=i))]
        items += [(f"{i}-again.png", f"hard:{i}.png")]
    plain = link_tar(tmp_path / "t.tar", items)
    archive = tmp_path / "t.tar.gz"
    with open(plain, "rb") as src, gzip.open(archive, "wb") as dst:
        shutil.copyfileobj(src, dst)
    size = archive.stat().st_size
    contents, read = read_counting_bytes(archive, monkeypatch)
    assert len(contents) == 16 and all(isinstance(d, bytes) for d in contents.values())
    assert read <= 2.2 * size, f"read {read / size:.1f} times the archive's size"


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_a_compressed_tar_is_decompressed_once_however_many_images_it_holds(tmp_path, monkeypatch, mode):
    """Issue 15: a member sniffed, then read whole through a second handle, sent the stream back to the
    member's start, and a gzip, bzip2 or xz stream goes back by decompressing again from the start."""
    archive, images = tmp_path / f"t.tar.{mode[2:]}", {}
    with tarfile.open(archive, mode) as out:
        for i in range(12):
            images[f"{i}.png"] = b"\x89PNG\r\n\x1a\n" + incompressible(200_000, seed=i)  # sniffed as images
            info = tarfile.TarInfo(f"{i}.png")
            info.size = len(images[f"{i}.png"])
            out.addfile(info, io.BytesIO(images[f"{i}.png"]))
    size = archive.stat().st_size
    contents, read = read_counting_bytes(archive, monkeypatch)
    assert contents == {(str(archive), name): data for name, data in images.items()}
    assert read <= 1.2 * size, f"read {read / size:.1f} times the archive's size"


def test_a_non_image_zip_member_is_skipped_whatever_its_size(zip_bomb, tmp_path):
    """Sniffed first (16 bytes stream, even from a bomb): the limits apply to what is read whole."""
    chunk = bytes(1 << 20)
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("zeros.bin", "w", force_zip64=True) as member:
            for _ in range(20):
                member.write(chunk)  # ratio ~1000: over the max-ratio limit
        archive.writestr("text.txt", b"hello " * 1000)
        archive.writestr("small.png", image_bytes())
    got = entries([path], tmp_path, Limits(max_bytes=1000, max_archive_bytes=len(image_bytes()) + 10))
    assert got == [("z.zip", "zeros.bin", "", True), ("z.zip", "text.txt", "", True), ("z.zip", "small.png", "", False)]
    stats = InputStats()
    assert [i.member for i in iter_inputs([str(zip_bomb)], stats)] == ["small.png", "zeros.png"]  # images: limits
    assert stats.skipped_non_images == 0


def test_a_symlink_in_a_zip_is_an_error_item_not_followed(tmp_path):
    path = tmp_path / "links.zip"
    with zipfile.ZipFile(path, "w") as archive:
        link = zipfile.ZipInfo("passwd.png")
        link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16  # as zip -y stores it
        archive.writestr(link, "/etc/passwd")
        archive.writestr("a.png", image_bytes())
    assert entries([path], tmp_path) == [
        ("links.zip", "passwd.png", SYMLINK_NOT_FOLLOWED, False),
        ("links.zip", "a.png", "", False),
    ]


# --- path lists and InputSpec --------------------------------------------------------------------


def test_read_path_list_drops_blank_lines_and_crlf(tmp_path):
    listed = write(tmp_path / "list.txt", b"a.png\r\n\r\n   \r\nsub dir/b c.jpg\r\n\nlast.png")
    assert list(read_path_list(str(listed))) == ["a.png", "sub dir/b c.jpg", "last.png"]


def test_read_path_list_from_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("x.png\r\n\r\ny.png\n"))
    assert list(read_path_list("-")) == ["x.png", "y.png"]


def test_a_path_list_splits_at_lf_only_so_a_cr_inside_a_name_is_kept(tmp_path):
    """Universal newlines would cut 'a\\rb.png' in two: two 'no such file' rows for one file."""
    listed = write(tmp_path / "list.txt", b"a\rb.png\nc.png\r\n\rd.png\n")
    assert list(read_path_list(str(listed))) == ["a\rb.png", "c.png", "\rd.png"]


def binary_stdin(data: bytes) -> io.TextIOWrapper:
    """stdin as a process has it: a strict UTF-8 text stream over the bytes."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="strict")


def test_path_lists_take_names_that_are_not_utf8_byte_for_byte(tmp_path, monkeypatch):
    names = [b"bad\xff\xfe.png", b"caf\xe9/x.png"]
    listed = write(tmp_path / "list.txt", b"\n".join(names) + b"\n")
    expected = [os.fsdecode(n) for n in names]
    assert list(read_path_list(str(listed))) == expected
    monkeypatch.setattr(sys, "stdin", binary_stdin(b"\n".join(names)))
    spec = InputSpec.from_args(["-"], spool_dir=tmp_path)
    assert list(spec.paths()) == list(spec.paths()) == expected
    assert [os.fsencode(p) for p in spec.paths()] == names


def test_a_nul_separated_list_takes_every_byte_of_every_name(tmp_path, monkeypatch):
    data = b"a\nb.png\0 c\r\0\0bad\xff.png\0"  # find -print0: newlines, CRs and spaces are parts of names
    expected = ["a\nb.png", " c\r", os.fsdecode(b"bad\xff.png")]
    listed = write(tmp_path / "list0", data)
    assert list(read_path_list(str(listed), nul=True)) == expected
    monkeypatch.setattr(sys, "stdin", binary_stdin(data))
    spec = InputSpec.from_args(["x.png"], spool_dir=tmp_path, from_lists0=["-", str(listed)])
    assert list(spec.paths()) == ["x.png", *expected, *expected]
    assert list(spec.paths()) == ["x.png", *expected, *expected]  # stdin was spooled: walked again


def test_stdin_is_spooled_so_the_paths_can_be_walked_twice(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("one.png\r\n\r\ndir/two.png\n  \nthree.zip"))
    spool = tmp_path / "spool"
    spool.mkdir()
    spec = InputSpec.from_args(["-"], spool_dir=spool)
    assert sys.stdin.read() == ""  # consumed once, up front
    first, second = list(spec.paths()), list(spec.paths())
    assert first == second == ["one.png", "dir/two.png", "three.zip"]
    assert len(os.listdir(spool)) == 1


def test_paths_come_in_argument_order_then_lists(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("from-stdin.png\n"))
    listed = write(tmp_path / "list.txt", b"listed.png\n")
    spec = InputSpec.from_args(["first.png", "-", "last.png"], [str(listed)], spool_dir=tmp_path)
    assert list(spec.paths()) == ["first.png", "from-stdin.png", "last.png", "listed.png"]


def test_stdin_without_a_spool_folder_is_refused(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("a.png\n"))
    with pytest.raises(ValueError, match="spool folder"):
        InputSpec.from_args(["-"])


def test_from_list_of_a_missing_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--from-list .*missing.txt: cannot read that file"):
        InputSpec.from_args([], [str(tmp_path / "missing.txt")], spool_dir=tmp_path)


def test_from_list_of_a_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot read that file"):
        InputSpec.from_args([], [str(tmp_path)], spool_dir=tmp_path)


def test_from_list_of_an_unreadable_file_is_refused(tmp_path, chmod_000_denies):
    listed = write(tmp_path / "list.txt", b"a.png\n")
    listed.chmod(0)
    with pytest.raises(ValueError, match="cannot read that file"):
        InputSpec.from_args([], [str(listed)], spool_dir=tmp_path)


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd")
def test_from_list_of_a_pipe_is_spooled_like_stdin(tmp_path):
    """--from-list <(find ...): a pipe reads once, but the stream is walked more than once."""
    read_end, write_end = os.pipe()
    os.write(write_end, b"one.png\r\ntwo.png\n")
    os.close(write_end)
    try:
        spec = InputSpec.from_args([], [f"/dev/fd/{read_end}"], spool_dir=tmp_path)
    finally:
        os.close(read_end)
    assert list(spec.paths()) == list(spec.paths()) == ["one.png", "two.png"]


def test_a_spec_feeds_iter_entries(tmp_path, monkeypatch):
    write(tmp_path / "pics" / "a.png", image_bytes())
    write(tmp_path / "pics" / "b.txt", b"text")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{tmp_path / 'pics'}\n{tmp_path / 'gone.png'}\n"))
    spec = InputSpec.from_args(["-"], spool_dir=tmp_path)
    stats = InputStats()
    assert summary(iter_inputs(spec.paths(), stats), tmp_path) == [
        ("pics/a.png", "", "", False),
        ("gone.png", "", "no such file or directory", False),
    ]
    assert stats.skipped_non_images == 1


def test_a_very_deep_tree_is_walked_without_recursion_limits(tmp_path):
    folder = tmp_path / "deep"
    deep = folder
    folder.mkdir()
    for _ in range(1200):  # deeper than Python's recursion limit
        deep = deep / "d"
        deep.mkdir()
    write(deep / "bottom.png", image_bytes())
    got = [e for e in iter_entries([str(folder)]) if not e.error]
    assert len(got) == 1 and got[0].path.endswith("bottom.png")
    # Remove it bottom-up here: shutil.rmtree (pytest's cleanup) recurses and would hit the limit.
    (deep / "bottom.png").unlink()
    while deep != tmp_path:
        deep.rmdir()
        deep = deep.parent


def test_a_named_fifo_is_an_error_item_not_a_blocking_read(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    (item,) = iter_entries([str(fifo)])
    assert item.error == "not a regular file" and item.reader is None


def test_a_fifo_in_a_folder_is_skipped_unopened_and_counted(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it to sniff would block the scan for good
    write(tmp_path / "real.png", image_bytes())
    items = list(iter_entries([str(tmp_path)]))
    assert [(Path(i.path).name, i.skipped) for i in items] == [("pipe.jpg", True), ("real.png", False)]


def test_a_zip_member_without_a_name_is_an_entry_not_a_crash(tmp_path):
    """Found by the fuzzer: zipfile's own is_dir() raises IndexError for an empty member name."""
    path, png = tmp_path / "unnamed.zip", image_bytes()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo(""), png)
    assert [(item.member, item.read()) for item in iter_entries([str(path)])] == [("", png)]


# --- one walk: entries detached, read elsewhere (issue 15) ---------------------------------------


def hostile_archives(root: Path) -> list[Path]:
    """Archives whose reads fail in every way a member can: cut short, damaged, lying headers; and hard links."""
    root.mkdir()
    made = []
    big = b"\x89PNG\r\n\x1a\n" + incompressible(200_000)  # sniffed as an image; the cut lands in it
    members = {"a.png": image_bytes(seed=1), "filler.bin": incompressible(50_000), "big.png": big}
    for name in ("t.tar", "t.tar.gz", "t.tar.bz2", "t.tar.xz"):
        whole = make_archive(root / "whole" / name, members).read_bytes()
        made.append(write(root / f"cut-{name}", whole[: len(whole) - 100_000]))
        made.append(root / "whole" / name)
        plain = link_tar(root / "links.tar", [("a.png", image_bytes(seed=3)), ("b.png", "hard:a.png")]).read_bytes()
        compress = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}.get(name.rsplit(".", 1)[1])
        links = write(root / f"links-{name}", compress(plain) if compress else plain)
        made.append(links)
    made.append(lying_zip(root / "more.zip", image_bytes(), len(image_bytes()) + 1000))
    data = image_bytes(size=64)
    made.append(lying_zip(root / "fewer.zip", data, len(data) - 10))
    made.append(make_zip(root / "ok.zip", {"a.png": image_bytes(seed=4), "d/b.png": image_bytes(seed=5)}))
    return made


def test_a_detached_entry_reads_elsewhere_what_it_reads_in_the_stream(tmp_path):
    """The scan's one walk detaches every entry and workers read it later: same bytes, same errors."""
    archives = hostile_archives(tmp_path / "a")
    streamed, detached = read_while_streaming(archives), read_detached(archives)
    assert detached == streamed
    failed = {f"{Path(p).name}:{m}": v for (p, m), v in streamed.items() if isinstance(v, str)}
    assert len(failed) == 5, failed  # the failures are there, not only bytes
    assert sum(isinstance(v, bytes) for v in streamed.values()) == 21


@pytest.mark.parametrize("name", ["t.tar", "t.zip", "t.tar.gz", "t.tar.xz"])
def test_only_a_compressed_tar_hands_its_members_bytes_over(tmp_path, name):
    """A zip's or a plain tar's member is read by the worker from where it lies; a compressed one only
    by the walk, in stream order."""
    members = {f"{i}.png": image_bytes(seed=i) for i in range(3)}
    archive = make_archive(tmp_path / name, members)
    held = [i.detach().held_bytes for i in iter_entries([str(archive)])]
    compressed = name not in ("t.tar", "t.zip")
    assert held == ([len(d) for d in members.values()] if compressed else [0, 0, 0])


def test_a_folder_walked_unsniffed_opens_nothing_and_its_reads_sniff(tmp_path, monkeypatch):
    image = image_bytes()
    write(tmp_path / "a.png", image)
    write(tmp_path / "notes.txt", b"hello")
    write(tmp_path / "big.bin", bytes(5000))  # a non-image over the limit: skipped all the same
    real_open = builtins.open
    opened: list[str] = []
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(os.fspath(f)) or real_open(f, *a, **k))
    items = list(iter_entries([str(tmp_path)], Limits(max_bytes=1000), sniff=False))
    assert opened == [] and [i.skipped for i in items] == [False, False, False]
    reads = {}
    for item in items:
        try:
            reads[Path(item.path).name] = item.read()
        except NotAnImage:
            reads[Path(item.path).name] = "not an image"
    assert reads == {"a.png": image, "big.bin": "not an image", "notes.txt": "not an image"}
    assert sorted(opened) == sorted(i.path for i in items)  # each file opened once, by its read


def test_the_count_reads_no_file_and_matches_the_walk(tmp_path, monkeypatch):
    write(tmp_path / "in" / "a.png", image_bytes())
    write(tmp_path / "in" / "notes.txt", b"hello")
    make_archive(tmp_path / "in" / "sub" / "z.zip", {"b.png": image_bytes(seed=1), "c.txt": b"text", "d/": b""})
    link_tar(tmp_path / "in" / "t.tar", [("e.png", image_bytes(seed=2)), ("f.png", "sym:e.png")])
    walked = len(list(iter_entries([str(tmp_path / "in")])))
    real_open = builtins.open
    read: list[str] = []

    def watching(f, mode="r", *args, **kwargs):
        handle = real_open(f, mode, *args, **kwargs)
        if not os.fspath(f).endswith((".zip", ".tar")):
            read.append(os.fspath(f))
        return handle

    monkeypatch.setattr(builtins, "open", watching)
    assert count_entries([str(tmp_path / "in")]) == walked == 6 and read == []
    make_tar(tmp_path / "in" / "t.tar.gz", {"g.png": image_bytes()}, "w:gz")
    assert count_entries([str(tmp_path / "in")]) is None  # only decompressing it all would tell


@pytest.mark.parametrize("name", ["t.zip", "t.tar"])
@pytest.mark.parametrize("how", ["replaced", "rewritten"])
def test_an_archive_changed_after_its_listing_is_an_error_never_another_files_bytes(tmp_path, name, how):
    """A worker opens the archive again by its path: it must be the file the walk listed."""
    archive = make_archive(tmp_path / name, {"a.png": image_bytes(seed=1)})
    [item] = [i.detach() for i in iter_entries([str(archive)])]
    other = make_archive(tmp_path / "other" / name, {"a.png": image_bytes(seed=2), "b.png": image_bytes(seed=3)})
    if how == "replaced":  # a new file under the old name, its first member at the same offset
        other.replace(archive)
    else:  # the same file, written over
        archive.write_bytes(other.read_bytes())
    with pytest.raises(OSError, match="changed after it was listed"):
        item.read()
