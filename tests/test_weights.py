"""The weights manifest, the weights folder, fetch over loopback HTTP, and the `weights` commands."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import UNIVFD_HEAD, pin_placed
from safetensors.torch import save, save_file
from test_download import CUT, DATA, DIGEST, _server, server  # noqa: F401  (the loopback server fixtures)
from typer.testing import CliRunner

from forensix import weights as W
from forensix.cli import app
from forensix.download import ChecksumError, DownloadError, sha256_file
from forensix.fetching import fetch
from forensix.models.config import get_config

runner = CliRunner()


@pytest.fixture
def fake_manifest(monkeypatch, server):  # noqa: F811
    """One downloadable entry served by the loopback server, plus one without an address."""
    entries = {
        "toy": W.ManifestEntry(
            name="toy",
            kind="detector",
            format="deeclip-official",
            config="deeclip-tiny",
            files=(W.WeightFile("checkpoint", "toy.pth", server.url(), DIGEST, len(DATA)),),
        ),
        "private": W.ManifestEntry(
            name="private",
            kind="backbone",
            format="openai-clip",
            files=(W.WeightFile("backbone", "private.safetensors", None, None, None),),
            notes="Ask the authors.",
        ),
    }
    monkeypatch.setattr(W, "load_manifest", lambda path=None: entries)
    return entries


def test_shipped_manifest_is_complete():
    manifest = W.load_manifest()
    assert {
        "deeclip",
        "univfd",
        "declip-pluralistic",
        "declip-lama",
        "declip-repaint-p2-9k",
        "declip-ldm",
        "declip-cocosd",
    } <= set(manifest)
    for entry in manifest.values():
        assert entry.files and entry.license and entry.paper and entry.homepage
        for f in entry.files:
            assert f.url is None or f.url.startswith("https://")
        if entry.kind == "detector":
            get_config(entry.config)  # the config it needs exists
    head = manifest["univfd"].file("head")
    assert head.sha256 == sha256_file(UNIVFD_HEAD) and head.size == UNIVFD_HEAD.stat().st_size


def test_weights_dir_follows_forensix_home(home):
    assert W.weights_dir() == home


def test_missing_weights_name_the_command(home):
    with pytest.raises(W.WeightsMissing, match="forensix weights fetch deeclip"):
        W.resolve("deeclip")


def test_fetch_downloads_checks_and_skips_present_files(home, fake_manifest, server):  # noqa: F811
    paths = fetch("toy")
    assert paths["checkpoint"] == home / "toy.pth" and paths["checkpoint"].read_bytes() == DATA
    assert len(server.requests) == 1
    fetch("toy")
    assert len(server.requests) == 1  # already there and verified: no request
    assert W.resolve("toy") == {"checkpoint": home / "toy.pth"}


def test_fetch_wrong_checksum_leaves_nothing(home, fake_manifest, server, monkeypatch):  # noqa: F811
    entry = fake_manifest["toy"]
    bad = W.WeightFile("checkpoint", "toy.pth", server.url(), "0" * 64, len(DATA))
    fake_manifest["toy"] = W.ManifestEntry(**{**entry.__dict__, "files": (bad,)})
    with pytest.raises(ChecksumError, match="sha256"):
        fetch("toy")
    assert [p.name for p in home.iterdir() if p.name != ".weights.lock"] == []  # no file, no .part


def test_fetch_truncated_then_resumed(home, fake_manifest, server):  # noqa: F811
    server.cut["/model.bin"] = CUT
    with pytest.raises(DownloadError, match="re-running resumes"):
        fetch("toy")
    assert (home / "toy.pth.part").stat().st_size == CUT
    server.cut.clear()
    fetch("toy")
    assert server.requests[-1][1] == f"bytes={CUT}-"
    assert (home / "toy.pth").read_bytes() == DATA


def test_entry_without_address_says_so_and_url_overrides(home, fake_manifest, server):  # noqa: F811
    with pytest.raises(W.WeightsMissing, match="no public download address.*Ask the authors"):
        fetch("private")
    tensors = save({"visual.proj": torch.ones(2, 3)})
    server.files["/private.safetensors"] = tensors
    fetch("private", url=server.url("/private.safetensors"))
    assert (home / "private.safetensors").read_bytes() == tensors
    assert W.status(fake_manifest["private"])[0].pin.pinned == "first use"


def test_cli_fetch_failure_is_one_line_exit_2(home, fake_manifest):
    result = runner.invoke(app, ["weights", "fetch", "private"])
    assert result.exit_code == 2
    assert "no public download address" in result.output and "Traceback" not in result.output


def test_cli_fetch_list_and_verify(home, fake_manifest, server):  # noqa: F811
    assert runner.invoke(app, ["weights", "fetch", "toy"]).exit_code == 0
    rows = [json.loads(line) for line in runner.invoke(app, ["weights", "list", "--json"]).stdout.splitlines()]
    assert {(r["name"], r["present"]) for r in rows} == {("toy", True), ("private", False)}
    assert runner.invoke(app, ["weights", "verify", "toy"]).exit_code == 0
    (home / "toy.pth").write_bytes(b"tampered")
    result = runner.invoke(app, ["weights", "verify"])
    assert result.exit_code == 2 and "mismatch" in result.output.lower()


def test_cli_import_writes_a_checked_forensix_file(tmp_path, tiny_official_file, tiny_reference, images):
    from forensix import load_detector

    out = tmp_path / "tiny.safetensors"
    args = [
        "weights",
        "import",
        str(tiny_official_file),
        "--out",
        str(out),
        "--feature-layers",
        "1,2,3",
        "--lora-alpha",
        "8",
        "--threshold",
        "0.7",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    detector = load_detector(weights=out, device="cpu")
    assert detector.threshold == 0.7
    assert detector.info.provenance["source_sha256"] == sha256_file(tiny_official_file)
    with torch.no_grad():
        expected = torch.sigmoid(tiny_reference(torch.stack([detector.preprocess(im) for im in images]))).numpy()
    assert abs(detector.score(images) - expected).max() <= 1e-5


def test_cli_import_refuses_what_it_cannot_convert(tmp_path, monkeypatch):
    monkeypatch.setenv("FORENSIX_HOME", str(tmp_path / "home"))  # no CLIP backbone for the UnivFD head
    result = runner.invoke(app, ["weights", "import", str(UNIVFD_HEAD), "--out", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and "univfd checkpoint that needs other files" in result.output
    assert "forensix weights fetch clip-vit-l-14" in result.output  # the backbone it needs
    unknown = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, unknown)
    result = runner.invoke(app, ["weights", "import", str(unknown), "--out", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and "not a weights file of any known model family" in result.output


def test_cli_import_of_a_forensix_file_says_so(tiny_weights, tmp_path):
    result = runner.invoke(app, ["weights", "import", str(tiny_weights), "--out", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and "already a forensix checkpoint (deeclip-tiny)" in result.output
    assert not (tmp_path / "x.safetensors").exists()


def test_univfd_from_the_manifest(home, images, own_backbones):
    """Both files in the weights folder: the released head and a (tiny) OpenAI-layout CLIP."""
    from test_checkpoints import _tiny_openai_clip

    from forensix import load_detector

    home.mkdir()
    shutil.copy(UNIVFD_HEAD, home / "univfd_fc_weights.pth")
    visual, clip_state = _tiny_openai_clip()
    save_file({k: v.contiguous() for k, v in clip_state.items()}, str(home / "openai_clip_vit_l_14.safetensors"))
    pin_placed(home / "openai_clip_vit_l_14.safetensors")
    detector = load_detector("univfd", device="cpu")
    head = torch.load(UNIVFD_HEAD, map_location="cpu", weights_only=True)
    x = torch.stack([detector.preprocess(im) for im in images])
    with torch.no_grad():
        expected = torch.sigmoid(visual(x) @ head["weight"].T + head["bias"]).squeeze(-1).numpy()
    assert abs(detector.score(images) - expected).max() <= 1e-5
    assert detector.name.startswith("univfd@")
