"""Weights digests: remembered under the forensix home, never stale, never written beside an input."""

from __future__ import annotations

import hashlib
import os

import pytest
from typer.testing import CliRunner

from forensix.cli import app
from forensix.digests import cached_sha256

pytestmark = pytest.mark.usefixtures("home")  # every test: a FORENSIX_HOME of its own (conftest)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_digest_is_remembered_under_the_home_not_beside_the_file(tmp_path, home):
    folder = tmp_path / "evidence"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"first contents")
    assert cached_sha256(weights) == sha(b"first contents")
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]
    remembered = [p for p in (home / "cache" / "sha256").rglob("*") if p.is_file()]
    assert [p.read_text().strip() for p in remembered] == [sha(b"first contents")]
    assert cached_sha256(weights) == sha(b"first contents")  # served from the cache: still one entry
    assert len([p for p in (home / "cache" / "sha256").rglob("*") if p.is_file()]) == 1


def test_weights_changed_in_place_with_the_same_size_and_mtime_are_hashed_again(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"A" * 64)
    before = os.stat(weights)
    assert cached_sha256(weights) == sha(b"A" * 64)
    with open(weights, "r+b") as f:  # rewritten in place: same size, same inode
        f.write(b"B" * 64)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the mtime set back
    assert os.stat(weights).st_size == before.st_size and os.stat(weights).st_mtime_ns == before.st_mtime_ns
    assert cached_sha256(weights) == sha(b"B" * 64)


def test_a_planted_sidecar_is_not_believed(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"real weights")
    st = os.stat(weights)
    # What older versions trusted: "<size>:<mtime_ns> <digest>" beside the file.
    (tmp_path / "model.safetensors.sha256").write_text(f"{st.st_size}:{st.st_mtime_ns} {'ab' * 32}\n")
    assert cached_sha256(weights) == sha(b"real weights")


def test_a_corrupt_cache_entry_is_hashed_again(tmp_path, home):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"contents")
    cached_sha256(weights)
    (entry,) = [p for p in (home / "cache" / "sha256").rglob("*") if p.is_file()]
    entry.write_text("not a digest\n")
    assert cached_sha256(weights) == sha(b"contents")


def test_an_unwritable_home_only_costs_a_rehash(tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    monkeypatch.setenv("FORENSIX_HOME", str(blocker))  # the cache can't be made under a file
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"contents")
    assert cached_sha256(weights) == sha(b"contents")


def test_a_scan_writes_nothing_into_its_inputs(photos, tiny_weights, tmp_path):
    """A failed load of a photo as weights, then a scan with real weights: both folders as they were."""
    weights_folder = tmp_path / "weights-folder"
    weights_folder.mkdir()
    weights = weights_folder / tiny_weights.name
    weights.write_bytes(tiny_weights.read_bytes())
    before = {p: sorted(os.listdir(p)) for p in (photos, weights_folder)}
    a_photo = sorted(p for p in photos.iterdir() if p.is_file())[0]
    runner = CliRunner()
    failed = runner.invoke(app, ["scan", str(photos), "--weights", str(a_photo), "--workers", "0"])
    assert failed.exit_code == 2, failed.output
    ok = runner.invoke(app, ["scan", str(photos), "--weights", str(weights), "--workers", "0"])
    assert ok.exit_code in (0, 1), ok.output
    assert {p: sorted(os.listdir(p)) for p in (photos, weights_folder)} == before
