"""A user's first run, end to end over loopback HTTP: fetch pins on first use, the README's scan works,
and what is not the expected file (changed on the server, tampered on disk, a web page, another
model, junk given with --url) is refused in one line. Hub files go through huggingface_hub against
a loopback stand-in for the Hub."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from pathlib import Path

import pytest
import torch
from conftest import UNIVFD_HEAD
from reference_deeclip import LAYERS_FULL, RefDeeCLIP
from safetensors.torch import save
from test_download import _server, server  # noqa: F401  (the loopback server fixtures)
from typer.testing import CliRunner

from forensix import pins
from forensix import weights as W
from forensix.cli import app

runner = CliRunner()
EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
DEECLIP = "/releases/deeclip_weight_complete_with_lora_5.pth"


def _official_bytes(seed: int) -> tuple[bytes, RefDeeCLIP]:
    """A DeeCLIP in the authors' exact layout, 24 blocks deep (the release's feature layers, no options
    needed) but 32 wide: the file a first fetch downloads, and its reference model."""
    torch.manual_seed(seed)
    ref = RefDeeCLIP(width=32, layers=24, heads=1, patch=14, image=224, proj=16, feature_layers=LAYERS_FULL, rank=2)
    buffer = io.BytesIO()
    torch.save(ref.official_state_dict(), buffer)
    return buffer.getvalue(), ref.eval()


@pytest.fixture(scope="module")
def release() -> tuple[bytes, RefDeeCLIP]:
    return _official_bytes(seed=11)


@pytest.fixture
def manifest(monkeypatch, server):  # noqa: F811
    """The shipped manifest, with the addresses of its files moved to the loopback server."""
    entries = W.load_manifest()

    def move(name: str, role: str, url: str | None = None, **changes: object) -> W.WeightFile:
        entry = entries[name]
        f = dataclasses.replace(entry.file(role), url=url, **changes)
        files = tuple(f if g.role == role else g for g in entry.files)
        entries[name] = dataclasses.replace(entry, files=files)
        return f

    monkeypatch.setattr(W, "load_manifest", lambda path=None: entries)
    move("deeclip", "checkpoint", server.url(DEECLIP))
    return move


def _report(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_readme_first_run_fetches_pins_and_scans(home, manifest, server, release, tmp_path, monkeypatch):  # noqa: F811
    """`forensix weights fetch deeclip && forensix scan docs/examples --out report.csv`, the address
    being the loopback server's: the file is imported strictly, pinned, and the scan's scores are the
    authors' architecture's."""
    data, ref = release
    server.files[DEECLIP] = data
    result = runner.invoke(app, ["weights", "fetch", "deeclip"])
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(data).hexdigest()
    assert f"sha256 {digest}, pinned on first use" in result.output
    lock = json.loads((home / pins.LOCK_FILE).read_text())
    pin = lock["files"]["deeclip_weight_complete_with_lora_5.pth"]
    assert (pin["sha256"], pin["size"], pin["pinned"], pin["url"]) == (
        digest,
        len(data),
        "first use",
        server.url(DEECLIP),
    )
    assert sorted(p.name for p in home.iterdir() if p.is_file() and not p.name.startswith(".")) == [
        "deeclip_weight_complete_with_lora_5.pth",
        pins.LOCK_FILE,
    ]

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["scan", str(EXAMPLES), "--out", "report.csv", "--workers", "0"])
    assert result.exit_code == 0, result.output
    rows = _report(tmp_path / "report.csv")
    images = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
    assert [Path(r["path"]).name for r in rows] == [p.name for p in images]
    assert {r["model"] for r in rows} == {f"deeclip@{digest[:12]}"}

    from PIL import Image

    from forensix import load_detector

    detector = load_detector("deeclip", device="cpu")
    with torch.no_grad():
        x = torch.stack([detector.preprocess(Image.open(p).convert("RGB")) for p in images])
        expected = torch.sigmoid(ref(x)).tolist()
    scores = [float(r["score"]) for r in rows]
    assert max(abs(a - b) for a, b in zip(scores, expected)) <= 1e-5
    assert max(scores) - min(scores) > 1e-3  # the images get different scores: the comparison can fail


def test_a_pinned_file_that_changed_on_the_server_is_refused(home, manifest, server, release):  # noqa: F811
    server.files[DEECLIP] = release[0]
    assert runner.invoke(app, ["weights", "fetch", "deeclip"]).exit_code == 0
    (home / "deeclip_weight_complete_with_lora_5.pth").unlink()
    server.files[DEECLIP] = _official_bytes(seed=12)[0]  # a valid checkpoint, but another one
    result = runner.invoke(app, ["weights", "fetch", "deeclip"])
    assert result.exit_code == 2
    assert "not the one the sha256 pinned on first use" in result.output and "nothing kept" in result.output
    assert "forensix weights pin deeclip" in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in home.iterdir() if p.is_file() and not p.name.startswith(".")) == [pins.LOCK_FILE]


def test_a_tampered_local_file_is_refused_by_scan_and_verify(home, manifest, server, release, photos):  # noqa: F811
    server.files[DEECLIP] = release[0]
    assert runner.invoke(app, ["weights", "fetch", "deeclip"]).exit_code == 0
    assert runner.invoke(app, ["weights", "verify"]).exit_code == 0
    local = home / "deeclip_weight_complete_with_lora_5.pth"
    tampered = bytearray(local.read_bytes())
    tampered[-1000] ^= 0x01
    local.write_bytes(bytes(tampered))
    result = runner.invoke(app, ["scan", str(photos), "--workers", "0"])
    assert result.exit_code == 2 and result.stdout == ""
    assert (
        "differs from the sha256 pinned on first use" in result.output
        and "forensix weights fetch deeclip" in result.output
    )
    result = runner.invoke(app, ["weights", "verify"])
    assert result.exit_code == 2 and "SHA256 MISMATCH (pinned on first use" in result.output
    result = runner.invoke(app, ["weights", "fetch", "deeclip"])
    assert (
        result.exit_code == 2 and "differs from the sha256 pinned on first use" in result.output
    )  # never overwritten unasked


def _html(size: int = 3000) -> bytes:
    return (b"<!DOCTYPE html><html><head><title>Dropbox - Error</title></head><body>" + b"x" * size)[:size]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (_html(), "is an HTML page (3,000 bytes: an expired or private share link"),
        (b"", "is an empty file"),
        (b'{"error": "link expired"}', "is a JSON document"),
        ("truncated", "not a readable weights file"),
        ("univfd", "a univfd checkpoint"),
    ],
)
def test_what_is_not_the_expected_file_is_refused_at_fetch(home, manifest, server, release, body, said):  # noqa: F811
    if body == "truncated":
        body = release[0][: len(release[0]) // 2]
    elif body == "univfd":
        body = UNIVFD_HEAD.read_bytes()  # a real checkpoint, of another model
    server.files[DEECLIP] = body
    result = runner.invoke(app, ["weights", "fetch", "deeclip"])
    assert result.exit_code == 2, result.output
    assert said in result.output and "nothing kept" in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not home.exists() or not any(home.glob("deeclip*"))  # neither the file nor a .part
    assert not (home / pins.LOCK_FILE).exists()


def test_url_junk_is_refused_at_fetch_not_at_scan(home, manifest, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk\n")
    result = runner.invoke(app, ["weights", "fetch", "deeclip", "--url", junk.as_uri()])
    assert result.exit_code == 2 and "is text (5 bytes: 'junk')" in result.output and "nothing kept" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not any(home.glob("deeclip*")) and not (home / pins.LOCK_FILE).exists()
    result = runner.invoke(app, ["scan", str(EXAMPLES), "--workers", "0"])  # nothing a scan could load
    assert result.exit_code == 2 and "forensix weights fetch deeclip" in result.output


def test_url_for_a_pinned_file_must_give_the_pinned_bytes(home, manifest, server, release, tmp_path):  # noqa: F811
    server.files[DEECLIP] = release[0]
    assert runner.invoke(app, ["weights", "fetch", "deeclip"]).exit_code == 0
    local = home / "deeclip_weight_complete_with_lora_5.pth"
    local.unlink()
    server.files["/mirror/other.pth"] = _official_bytes(seed=13)[0]
    result = runner.invoke(app, ["weights", "fetch", "deeclip", "--url", server.url("/mirror/other.pth")])
    assert result.exit_code == 2 and "the sha256 pinned on first use" in result.output and not local.exists()
    server.files["/mirror/same.pth"] = release[0]
    assert runner.invoke(app, ["weights", "fetch", "deeclip", "--url", server.url("/mirror/same.pth")]).exit_code == 0
    assert local.read_bytes() == release[0]


def test_an_unexpected_error_while_checking_keeps_nothing(home, manifest, server, release, monkeypatch):  # noqa: F811
    from forensix.models import checkpoints

    def broken(found):
        raise RuntimeError("the model could not be built")

    monkeypatch.setattr(checkpoints, "check_loadable", broken)
    server.files[DEECLIP] = release[0]
    result = runner.invoke(app, ["weights", "fetch", "deeclip"])
    assert result.exit_code == 2 and "the model could not be built" in result.output and "nothing kept" in result.output
    assert not any(home.glob("deeclip*")) and not (home / pins.LOCK_FILE).exists()


def test_an_interrupted_unpinned_download_resumes_only_the_same_version(home, manifest, server, release):  # noqa: F811
    """No sha256 to catch a splice: the partial file is resumed only with If-Range, against the version the
    server named when it started; a server that names none, or another version, gets a whole download."""
    data = release[0]
    part = home / "deeclip_weight_complete_with_lora_5.pth.part"
    server.files[DEECLIP] = data
    server.cut[DEECLIP] = 100_000
    assert runner.invoke(app, ["weights", "fetch", "deeclip"]).exit_code == 2
    assert part.stat().st_size == 100_000
    server.cut.clear()
    server.requests.clear()
    assert runner.invoke(app, ["weights", "fetch", "deeclip"]).exit_code == 0  # no ETag: fetched whole
    assert server.requests == [(DEECLIP, None)]
    assert (home / part.name.removesuffix(".part")).read_bytes() == data

    (home / part.name.removesuffix(".part")).unlink()
    (home / pins.LOCK_FILE).unlink()
    server.headers[DEECLIP] = {"ETag": '"v1"'}
    server.cut[DEECLIP] = 100_000
    assert runner.invoke(app, ["weights", "fetch", "deeclip"]).exit_code == 2
    server.cut.clear()
    server.requests.clear()
    assert runner.invoke(app, ["weights", "fetch", "deeclip"]).exit_code == 0
    assert server.requests == [(DEECLIP, "bytes=100000-")]  # the same version: resumed
    assert server.if_range == ['"v1"'] and (home / part.name.removesuffix(".part")).read_bytes() == data
    assert not list(home.glob("*.part*"))


def test_a_resume_answered_with_another_version_is_fetched_whole(home, manifest, server, release):  # noqa: F811
    """A server that ignores If-Range but names another version in its 206: the partial file is dropped."""
    server.files[DEECLIP] = release[0]
    server.headers[DEECLIP] = {"ETag": '"v1"'}
    server.cut[DEECLIP] = 100_000
    assert runner.invoke(app, ["weights", "fetch", "deeclip"]).exit_code == 2
    server.cut.clear()
    newer = _official_bytes(seed=14)[0]
    server.files[DEECLIP] = newer
    server.headers[DEECLIP] = {"ETag": '"v2"'}
    server.ignore_if_range = True
    assert runner.invoke(app, ["weights", "fetch", "deeclip"]).exit_code == 0
    assert (home / "deeclip_weight_complete_with_lora_5.pth").read_bytes() == newer  # whole, never spliced


def test_the_lock_held_twice_in_one_thread_is_the_same_lock(home):
    import threading

    def nested() -> None:
        with pins.editing() as outer, pins.editing() as inner:  # inside a held lock: no deadlock
            inner.record("a.pth", pins.Pin("a" * 64, 1, "by hand"))
            assert outer.pins["a.pth"].sha256 == "a" * 64

    worker = threading.Thread(target=nested, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive() and pins.read_pins()["a.pth"].size == 1


def test_concurrent_pins_are_all_kept(home):
    import threading

    def pin_many(prefix: str) -> None:
        for i in range(15):
            with pins.editing() as lock:
                lock.record(
                    f"{prefix}{i}.pth", pins.Pin(hashlib.sha256(f"{prefix}{i}".encode()).hexdigest(), i, "by hand")
                )

    threads = [threading.Thread(target=pin_many, args=(p,)) for p in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(pins.read_pins()) == 45


def test_a_tampered_file_the_manifest_pins_is_refused_at_load(home, own_backbones, images):
    """UnivFD's head has a published sha256: a changed copy is refused, by name and as a companion."""
    import shutil

    from conftest import pin_placed
    from safetensors.torch import save_file
    from test_checkpoints import _tiny_openai_clip

    from forensix import load_detector

    home.mkdir()
    head = home / "univfd_fc_weights.pth"
    shutil.copy(UNIVFD_HEAD, head)
    _, clip_state = _tiny_openai_clip()
    clip = home / "openai_clip_vit_l_14.safetensors"
    save_file({k: v.contiguous() for k, v in clip_state.items()}, str(clip))
    pin_placed(clip)
    assert load_detector("univfd", device="cpu").score(images[:1]).shape == (1,)
    state = torch.load(UNIVFD_HEAD, map_location="cpu", weights_only=True)
    state["bias"] = state["bias"] + 1
    torch.save(state, head)
    with pytest.raises(W.WeightsRefused, match="differs from the manifest's sha256"):
        load_detector("univfd", device="cpu")
    save_file({k: v.contiguous() + 1 for k, v in clip_state.items()}, str(clip))  # the backbone changed
    with pytest.raises(W.WeightsRefused, match="openai_clip_vit_l_14.safetensors: sha256 .* differs from"):
        load_detector(UNIVFD_HEAD, device="cpu")  # the released head by path, the backbone as its companion


def test_a_file_placed_by_hand_is_checked_and_pinned_by_fetch(home, manifest, server, release, tmp_path):  # noqa: F811
    home.mkdir()
    placed = home / "deeclip_weight_complete_with_lora_5.pth"
    placed.write_bytes(_html())
    result = runner.invoke(app, ["weights", "fetch", "deeclip"])
    assert result.exit_code == 2 and "is an HTML page" in result.output and "not pinned" in result.output
    assert placed.exists() and not server.requests  # the user's file is left alone, nothing downloaded
    placed.write_bytes(release[0])
    result = runner.invoke(app, ["weights", "fetch", "deeclip"])
    assert result.exit_code == 0 and "pinned on first use" in result.output and not server.requests
    assert pins.read_pins()[placed.name].url is None


def test_offline_fetch_is_one_line(home, manifest):
    manifest("deeclip", "checkpoint", "https://forensix.invalid/deeclip.pth")  # .invalid never resolves
    result = runner.invoke(app, ["weights", "fetch", "deeclip"])
    assert result.exit_code == 2
    assert "forensix.invalid cannot be reached: its name does not resolve (offline, or no DNS)" in result.output
    assert "Errno" not in result.output and len(result.output.strip().splitlines()) == 1


def test_pin_by_hand_then_fetch_checks_it(home, manifest, server, release):  # noqa: F811
    data = release[0]
    digest = hashlib.sha256(data).hexdigest()
    result = runner.invoke(app, ["weights", "pin", "deeclip", "0" * 64])
    assert result.exit_code == 0 and "pinned by hand" in result.output
    server.files[DEECLIP] = data
    result = runner.invoke(app, ["weights", "fetch", "deeclip"])
    assert result.exit_code == 2 and "not the one the sha256 pinned by hand" in result.output
    assert runner.invoke(app, ["weights", "pin", "deeclip", digest.upper()]).exit_code == 0
    assert runner.invoke(app, ["weights", "fetch", "deeclip"]).exit_code == 0
    rows = [json.loads(line) for line in runner.invoke(app, ["weights", "list", "--json"]).stdout.splitlines()]
    deeclip = next(r for r in rows if r["name"] == "deeclip")
    assert (deeclip["pinned"], deeclip["sha256"], deeclip["present"]) == ("by hand", digest, True)
    univfd_head = next(r for r in rows if r["name"] == "univfd" and r["role"] == "head")
    assert univfd_head["pinned"] == "manifest" and not univfd_head["present"]
    result = runner.invoke(app, ["weights", "pin", "deeclip", "1" * 64])
    assert result.exit_code == 2 and f"is present with sha256 {digest}" in result.output
    result = runner.invoke(app, ["weights", "pin", "univfd", "--role", "head", "1" * 64])
    assert result.exit_code == 2 and "the manifest publishes sha256" in result.output
    assert runner.invoke(app, ["weights", "pin", "deeclip", "xyz"]).exit_code == 2


def test_a_broken_lock_is_one_line(home, manifest):
    home.mkdir()
    (home / pins.LOCK_FILE).write_text("{not json")
    (home / "deeclip_weight_complete_with_lora_5.pth").write_bytes(b"x")  # present: its pin is looked up
    result = runner.invoke(app, ["weights", "list"])
    assert result.exit_code == 2 and "not a readable weights lock" in result.output and pins.LOCK_FILE in result.output
    assert len(result.output.strip().splitlines()) == 1
    for args in (["scan", str(EXAMPLES)], ["weights", "fetch", "deeclip"], ["weights", "pin", "deeclip", "0" * 64]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "not a readable weights lock" in result.output, args


# ------------------------------------------------------------------------------------------------
# Hugging Face Hub files, through huggingface_hub, against a loopback stand-in for the Hub

REVISION = "18d0535469bb561bf468d76c1d73aa35156c922b"


@pytest.fixture
def hub(monkeypatch, tmp_path, server, manifest):  # noqa: F811
    """clip-vit-l-14 served by a loopback 'Hub' at a pinned revision; huggingface_hub's cache in tmp."""
    from huggingface_hub import constants

    data = save({"visual.proj": torch.arange(12.0).reshape(3, 4)})
    digest = hashlib.sha256(data).hexdigest()
    path = f"/timm/clip/resolve/{REVISION}/open_clip_model.safetensors"
    server.files[path] = data
    server.headers[path] = {"X-Repo-Commit": REVISION, "ETag": f'"{digest}"'}
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub_file = W.HubFile("timm/clip", "open_clip_model.safetensors", REVISION)
    manifest("clip-vit-l-14", "backbone", None, hub=hub_file, sha256=digest, size=None)
    return data, digest, path


def test_hub_files_come_through_huggingface_hub_and_its_cache(home, hub, server, tmp_path, monkeypatch):  # noqa: F811
    from huggingface_hub import constants

    data, digest, path = hub
    result = runner.invoke(app, ["weights", "fetch", "clip-vit-l-14"])
    assert result.exit_code == 0, result.output
    local = home / "openai_clip_vit_l_14.safetensors"
    assert local.read_bytes() == data and "pinned by the manifest" in result.output
    blob = tmp_path / "hf" / "models--timm--clip" / "blobs" / digest  # the Hub cache names LFS blobs by sha256
    assert blob.stat().st_ino == local.stat().st_ino  # a hard link: no second copy
    assert any(r[0] == f"HEAD {path}" for r in server.requests)

    local.unlink()
    server.requests.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 does
    assert runner.invoke(app, ["weights", "fetch", "clip-vit-l-14"]).exit_code == 0
    assert local.read_bytes() == data and server.requests == []  # served by the Hub cache, offline


def test_hub_offline_without_the_file_is_one_line(home, hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result = runner.invoke(app, ["weights", "fetch", "clip-vit-l-14"])
    assert result.exit_code == 2
    assert "offline (HF_HUB_OFFLINE is set) and not in the Hugging Face cache" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_hub_unreachable_is_one_line_at_once(home, hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://forensix.invalid")
    result = runner.invoke(app, ["weights", "fetch", "clip-vit-l-14"])  # no minute of huggingface_hub's retries
    assert result.exit_code == 2
    assert "the Hugging Face Hub cannot be reached (offline?), and the file is not in its cache" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_hub_bytes_or_hub_hash_other_than_the_manifest_are_refused(home, hub, server, manifest):  # noqa: F811
    data, digest, path = hub
    server.files[path] = data[:-1] + bytes([data[-1] ^ 1])  # the Hub serves other bytes than its ETag says
    result = runner.invoke(app, ["weights", "fetch", "clip-vit-l-14"])
    assert result.exit_code == 2 and f"sha256 mismatch for huggingface.co/timm/clip@{REVISION[:10]}" in result.output
    assert not (home / "openai_clip_vit_l_14.safetensors").exists()
    server.headers[path]["ETag"] = '"' + "e" * 64 + '"'  # the Hub now says the file is another one
    server.requests.clear()
    result = runner.invoke(app, ["weights", "fetch", "clip-vit-l-14"])
    assert result.exit_code == 2 and "the Hub says sha256 eeee" in result.output
    assert all(r[0].startswith("HEAD") for r in server.requests)  # refused before downloading it
    assert not (home / "openai_clip_vit_l_14.safetensors").exists()


def test_shipped_hub_files_are_pinned_to_a_revision_and_a_sha256():
    for entry in W.load_manifest().values():
        for f in entry.files:
            if f.hub is not None:
                assert len(f.hub.revision) == 40 and set(f.hub.revision) <= set("0123456789abcdef")
                assert f.sha256 and pins.is_sha256(f.sha256) and f.url is None
            assert f.hub is not None or f.url, f"{entry.name} {f.role}: no address"


def test_entries_that_share_a_file_agree_on_what_it_is():
    """The lock and the weights folder know a file by its name: every entry naming it must mean the same bytes."""
    seen: dict[str, W.WeightFile] = {}
    for entry in W.load_manifest().values():
        for f in entry.files:
            first = seen.setdefault(f.file, f)
            assert (f.url, f.sha256, f.size, f.hub) == (first.url, first.sha256, first.size, first.hub), f.file


def test_the_manifest_has_the_authors_address_for_deeclip():
    f = W.get_entry("deeclip").file("checkpoint")
    assert f.url == (
        "https://www.dropbox.com/scl/fi/ttiqnbxu8atz4on5gqvgd/deeclip_weight_complete_with_lora_5.pth"
        "?rlkey=6xznuvriabkqfdcofhi1pbihu&st=fk02k7hf&dl=1"
    )  # as the DeeCLIP README gives it
    assert f.sha256 is None and f.size is None  # published by no one: pinned on first use


def test_list_shows_pins_sources_and_notes_and_verify_needs_something_to_verify(home):
    result = runner.invoke(app, ["weights", "list"])
    assert result.exit_code == 0
    assert "deeclip: The address is the Dropbox share link of the authors' README" in result.output
    assert "pinned: manifest = its published sha256" in result.output
    result = runner.invoke(app, ["weights", "verify"])
    assert result.exit_code == 2 and "nothing to verify: no weights of any known entry in" in result.output
    assert result.output.strip().count("\n") == 0


def test_the_main_install_brings_onnx_and_onnxruntime():
    """export-onnx and --backend onnx work after the README's `pip install -e .`: no extra needed."""
    from importlib.metadata import requires

    main = [r for r in requires("forensix") if "extra ==" not in r]
    assert any(r.startswith("onnx>") for r in main) and any(r.startswith("onnxruntime") for r in main)
    assert any(r.startswith("huggingface_hub") or r.startswith("huggingface-hub") for r in main)
