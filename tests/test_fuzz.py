"""The fuzz campaign that stays (docs/reliability.md), and Pillow's own test images scanned every way.

Pillow's Tests/images come from its sdist, fetched at test time into ``$FORENSIX_FUZZ_HOME``
(``python -m fuzz corpus``); set ``FORENSIX_FUZZ_OFFLINE=1`` to skip these tests where no package
registry is reachable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fuzz(*args: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fuzz", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def pillow_images() -> Path:
    if os.environ.get("FORENSIX_FUZZ_OFFLINE"):
        pytest.skip("FORENSIX_FUZZ_OFFLINE is set: Pillow's test images are not fetched")
    fetched = fuzz("corpus", timeout=900)
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    return Path(fetched.stdout.strip())


def crasher_files() -> set[Path]:
    return {p for p in (ROOT / "fuzz" / "crashers").rglob("*") if p.is_file()}


@pytest.mark.slow
def test_every_committed_crasher_now_holds():
    assert crasher_files(), "the crashers the campaign found are kept as regression fixtures"
    replayed = fuzz("replay", timeout=600)
    assert replayed.returncode == 0, replayed.stderr[-4000:]


# Inputs per target for the short deterministic run: about a minute in all, on two cores.
SHORT_RUNS = {"image": 1500, "archive": 600, "path-list": 1500, "checkpoint": 150}


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(SHORT_RUNS))
def test_a_short_deterministic_fuzz_run_finds_nothing(target, pillow_images, tmp_path):
    pytest.importorskip("atheris", reason="atheris has wheels for Linux x86_64 only")
    env = {"FORENSIX_FUZZ_HOME": str(pillow_images.parent.parent), "FORENSIX_HOME": str(tmp_path / "home")}
    before = crasher_files()
    run = fuzz("run", target, "--runs", str(SHORT_RUNS[target]), "--seed", "1", timeout=600, env=env)
    found = sorted(crasher_files() - before)
    assert run.returncode == 0 and not found, f"{found}\n{run.stderr[-6000:]}"
    assert f"Done {SHORT_RUNS[target]} runs" in run.stderr


def archive_members(path: Path) -> list[str]:
    """Regular members, listed by the standard library: the oracle of what a scan must account for."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            return [i.filename for i in archive.infolist() if not i.is_dir()]
    with tarfile.open(path) as archive:
        return [m.name for m in archive if m.isfile() or m.islnk()]


@pytest.mark.slow
def test_pillow_test_images_as_a_folder_a_zip_a_tar_gz_and_a_list_give_a_row_or_a_skip_each(
    pillow_images, small_input_weights, tmp_path
):
    files = sorted(p for p in pillow_images.rglob("*") if p.is_file())
    nested = [p for p in files if p.name.lower().endswith((".zip", ".tar", ".tar.gz", ".tgz"))]
    # A folder's archives are opened: each gives its members' rows in place of its own.
    in_folder = len(files) - len(nested) + sum(len(archive_members(p)) for p in nested)
    zipped, tarred = tmp_path / "images.zip", tmp_path / "images.tar.gz"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, path.relative_to(pillow_images.parent).as_posix())
    with tarfile.open(tarred, "w:gz") as archive:
        archive.add(pillow_images, pillow_images.name)
    listing = b"".join(os.fsencode(p) + b"\n" for p in files)

    out = tmp_path / "report.jsonl"
    args = [pillow_images, zipped, tarred, "-", "--weights", small_input_weights, "--out", out, "--workers", "1"]
    env = {**os.environ, "FORENSIX_HOME": str(tmp_path / "home"), "LANG": "C.UTF-8"}
    done = subprocess.run(
        [sys.executable, "-m", "forensix", "scan", *map(str, args)],
        input=listing,
        capture_output=True,
        env=env,
        timeout=900,
    )
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    skipped = int(re.search(r"skipped (\d+) non-images", stderr).group(1))
    by_input = {
        "zip": [r for r in rows if r["path"] == str(zipped)],
        "tar.gz": [r for r in rows if r["path"] == str(tarred)],
    }
    # The list names the folder's files one by one: its archives are opened too.
    expected = 2 * in_folder + len(archive_members(zipped)) + len(archive_members(tarred))
    assert len(rows) + skipped == expected
    assert len({(r["path"], r["member"]) for r in by_input["zip"]}) == len(by_input["zip"])
    assert len({(r["path"], r["member"]) for r in by_input["tar.gz"]}) == len(by_input["tar.gz"])
    # The same images score alike however they arrive.
    scored = {k: sorted(r["score"] for r in v if r["score"] is not None) for k, v in by_input.items()}
    assert scored["zip"] == scored["tar.gz"]
    assert all(r["error"] or r["score"] is not None for r in rows)
    assert all("\n" not in (r["error"] or "") for r in rows)
