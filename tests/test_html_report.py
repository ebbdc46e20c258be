"""The HTML report's library side: rows read back, pictures made from the scan's inputs, the page's data and HTML.

What the page does in a browser is tests/test_html_browser.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import zipfile
from html import unescape
from pathlib import Path

import pytest
from conftest import decoder_crashing_on, random_image
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from forensix import report as report_module
from forensix.cli import app
from forensix.detector import load_detector
from forensix.html_report import pictures_folder, write_html
from forensix.html_report.page import (
    csp_hash,
    group_of,
    has_provenance,
    histogram,
    json_for_script,
    provenance_fields,
    summarise,
)
from forensix.html_report.views import Thumbnails, make_views
from forensix.report import ReportError, ReportWriter, read_rows
from forensix.scan_report import write_report

pytestmark = pytest.mark.usefixtures("home")
runner = CliRunner()

A1111 = "a red fox in snow\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, Model: sd15"
HOSTILE = "<img src=x onerror=alert(1)>.png"


def png_bytes(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()


@pytest.fixture
def inputs(tmp_path) -> Path:
    """Images in a folder and a subfolder, a zip and a tar.gz of members, a hostile name, generation
    parameters and a camera's EXIF, a truncated file: 10 rows, one an error."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    random_image(900, 600, seed=0).save(root / "big.jpg", quality=92)
    random_image(120, 90, seed=1).save(root / "sub" / "small.png")
    (root / "sub" / HOSTILE).write_bytes(png_bytes(random_image(200, 150, seed=2)))
    (root / "sd.png").write_bytes(png_bytes(random_image(300, 300, seed=3), {"parameters": A1111}))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "Canon EOS 5D", "<b>editor</b>"
    random_image(400, 300, seed=4).save(root / "camera.jpg", quality=90, exif=exif)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    with zipfile.ZipFile(root / "set.zip", "w") as z:
        for i in range(2):
            z.writestr(f"z{i}.png", png_bytes(random_image(100 + 30 * i, 80, seed=10 + i)))
    with tarfile.open(root / "set.tar.gz", "w:gz") as t:
        for i in range(2):
            data = png_bytes(random_image(90, 110 + 20 * i, seed=20 + i))
            info = tarfile.TarInfo(f"t/t{i}.png")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return root


@pytest.fixture
def scanned(inputs, tiny_weights, tmp_path) -> Path:
    out = tmp_path / "report.jsonl"
    write_report([str(inputs)], load_detector(weights=tiny_weights), out, workers=0)
    return out


def test_read_rows_gives_back_the_rows_the_scan_wrote_in_every_format(tmp_path):
    rows = [
        {"path": "/d/a.png", "member": "", "sha256": "ab" * 32, "verdict": "fake", "score": 0.75, "threshold": 0.5,
         "width": 64, "height": 48, "notes": "=cmd()", "metadata": {"jpeg_quality": 90}},
        {"path": os.fsdecode(b"/d/bad\xff.zip"), "member": "m\\x41.png", "verdict": "error", "error": "cannot read"},
    ]  # fmt: skip
    for fmt in ("csv", "json", "jsonl"):
        path = tmp_path / f"r.{fmt}"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = ReportWriter(f, fmt)
            for row in rows:
                writer.write(row)
            writer.close()
        back = read_rows(path)
        assert [(r["path"], r["member"]) for r in back] == [(r["path"], r["member"]) for r in rows]
        assert back[0]["score"] == 0.75 and back[0]["width"] == 64 and back[0]["notes"] == "=cmd()"
        assert back[1]["score"] is None and back[1]["error"] == "cannot read"
        assert ("metadata" in back[0]) == (fmt != "csv")  # CSV has no JSON-only fields
        assert all("path_bytes" not in r for r in back)


def test_read_rows_refuses_what_is_not_a_report_and_leaves_out_a_cut_row(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\r\n1,2\r\n")
    with pytest.raises(ReportError, match="not a forensix report") as e:
        read_rows(tmp_path / "x.csv")
    assert "resuming" not in str(e.value)
    (tmp_path / "n.csv").write_text("path,member,sha256,verdict,score\r\na.png,,,real,high\r\n")
    with pytest.raises(ReportError, match="row 1: score is not a number"):
        read_rows(tmp_path / "n.csv")
    (tmp_path / "cut.jsonl").write_text('{"path": "a.png", "verdict": "real"}\n{"path": "b.p')
    assert [r["path"] for r in read_rows(tmp_path / "cut.jsonl")] == ["a.png"]
    with pytest.raises(ReportError, match="not resuming"):  # resume still says so
        report_module.read_report(tmp_path / "x.csv", "csv")


def test_every_image_gets_a_bounded_thumbnail_and_preview_made_from_its_input(scanned, inputs, tmp_path):
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    page = write_html(scanned, tmp_path / "page.html")
    rows = read_rows(scanned)
    assert page.rows == len(rows) == 10 and page.pictures == 9 and page.missing == []
    folder = pictures_folder(tmp_path / "page.html")
    assert folder == tmp_path / "page_files"
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    new = [p for p in made if p not in before]
    # Nothing but the page and its pictures: no archive was extracted.
    assert {p.parts[0] for p in new} == {"page.html", "page_files"}
    for row in rows:
        if row["error"]:
            continue
        thumb = Image.open(folder / "thumb" / f"{row['sha256'][:32]}.jpg")
        preview = Image.open(folder / "preview" / f"{row['sha256'][:32]}.jpg")
        long_edge = max(row["width"], row["height"])
        assert max(thumb.size) == min(256, long_edge) and max(preview.size) == min(1024, long_edge)
        # the preview is the image itself: the same aspect, and the same picture
        assert abs(preview.size[0] / preview.size[1] - row["width"] / row["height"]) < 0.02
    original = Image.open(inputs / "big.jpg").convert("RGB").resize((256, 171))
    big = next(r for r in rows if r["path"].endswith("big.jpg"))
    thumb = Image.open(folder / "thumb" / f"{big['sha256'][:32]}.jpg").convert("RGB")
    diff = sum(abs(a - b) for a, b in zip(original.tobytes(), thumb.tobytes())) / len(thumb.tobytes())
    assert thumb.size == (256, 171) and diff < 12


def test_an_input_changed_moved_or_gone_from_its_archive_is_named_and_has_no_picture(scanned, inputs, tmp_path):
    random_image(120, 90, seed=99).save(inputs / "sub" / "small.png")  # other pixels now
    (inputs / "camera.jpg").unlink()
    with zipfile.ZipFile(inputs / "set.zip", "w") as z:  # z1.png gone from the archive
        z.writestr("z0.png", png_bytes(random_image(100, 80, seed=10)))
    (inputs / "set.tar.gz").unlink()
    page = write_html(scanned, tmp_path / "page.html")
    missing = dict(page.missing)
    assert missing == {
        f"{inputs}/sub/small.png": "changed since the scan (its sha256 is not the report's)",
        f"{inputs}/camera.jpg": "cannot read: No such file or directory",
        f"{inputs}/set.zip:z1.png": "no longer in the archive",
        f"{inputs}/set.tar.gz:t/t0.png": "no such file or directory",
        f"{inputs}/set.tar.gz:t/t1.png": "no such file or directory",
    }
    assert page.pictures == 9 - len(missing)
    rows = _page_data(tmp_path / "page.html")
    small = next(r for r in rows if r["path"].endswith("small.png"))
    assert "picture" not in small and small["missing"].startswith("changed since the scan")


def test_the_cli_says_which_inputs_it_could_not_find_again(scanned, inputs, tmp_path):
    (inputs / "camera.jpg").unlink()
    result = runner.invoke(app, ["report", str(scanned), "--html", str(tmp_path / "p.html"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr and "10 rows, 8 with pictures" in result.stderr
    assert "1 images could not be found again" in result.stderr
    assert f"{inputs}/camera.jpg: cannot read: No such file or directory" in result.stderr
    bad = runner.invoke(app, ["report", str(tmp_path / "absent.jsonl"), "--html", str(tmp_path / "q.html")])
    assert bad.exit_code == 2 and "absent.jsonl" in bad.stderr and not (tmp_path / "q.html").exists()


def test_relative_paths_are_found_from_root(inputs, tiny_weights, tmp_path, monkeypatch):
    monkeypatch.chdir(inputs.parent)
    out = tmp_path / "rel.csv"
    write_report([inputs.name], load_detector(weights=tiny_weights), out, workers=0)
    monkeypatch.chdir(tmp_path / "..")
    assert write_html(out, tmp_path / "a.html").pictures == 0  # from elsewhere, nothing is found
    assert write_html(out, tmp_path / "b.html", root=inputs.parent).pictures == 9


def test_pictures_already_made_are_kept_and_not_made_again(scanned, tmp_path, monkeypatch):
    first = write_html(scanned, tmp_path / "page.html")
    stamps = {p: p.stat().st_mtime_ns for p in first.folder.rglob("*.jpg")}

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(Thumbnails, "__call__", no_decoding)
    again = write_html(scanned, tmp_path / "page.html")
    assert again.pictures == first.pictures == 9
    assert {p: p.stat().st_mtime_ns for p in again.folder.rglob("*.jpg")} == stamps


@pytest.mark.slow
def test_a_decoder_that_crashes_on_a_file_costs_only_its_picture(scanned, inputs, tmp_path, monkeypatch):
    from forensix.stages import records

    bomb = (inputs / "sd.png").read_bytes()
    monkeypatch.setattr(records, "decode_image", decoder_crashing_on(bomb, records.decode_image))
    rows = read_rows(scanned)
    found = make_views(rows, tmp_path / "files", workers=2)
    sd = next(r for r in rows if r["path"].endswith("sd.png"))
    assert found.why_missing(sd["path"], "", sd["sha256"]).startswith("cannot decode image")
    assert sum(1 for r in rows if r["sha256"] in found.pictures) == 8


def test_the_page_escapes_every_string_and_allows_only_its_own_script_and_style(tmp_path):
    evil = "</script><script>window.pwned=1</script>"
    rows = [
        {"path": f"/x/{evil}.png", "member": "", "sha256": "0" * 64, "verdict": "fake", "score": 0.9,
         "threshold": 0.5, "notes": "<b>bold</b> &amp;", "error": "",
         "metadata": {"exif": {"make": "<i>Canon</i>", "model": evil}}},
        {"path": "/x/\u2028line.png", "member": evil, "verdict": evil, "error": "<svg onload=alert(1)>"},
    ]  # fmt: skip
    report = tmp_path / "r.jsonl"
    report.write_text("".join(json.dumps(r) + "\n" for r in rows))
    html = write_html(report, tmp_path / "p.html").page.read_text()
    # Only the page's two script elements (its data and its code), and no tag a row could have made.
    assert html.count("<script") == 2 and "<script>window" not in html and "</script><script>" not in html
    assert "<b>bold" not in html and "<svg onload" not in html and "<i>Canon" not in html
    data = _page_data(tmp_path / "p.html")
    assert data[0]["path"] == f"/x/{evil}.png" and data[1]["member"] == evil and data[1]["verdict"] == evil
    assert ["Camera", f"<i>Canon</i> {evil}"] in data[0]["provenance"]
    csp = unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1))
    script = re.findall(r"<script>(.*?)</script>", html, re.S)[0]
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    assert f"script-src {csp_hash(script)}" in csp and f"style-src {csp_hash(style)}" in csp
    assert "default-src 'none'" in csp and "img-src 'self';" in csp and "http" not in csp


def test_json_for_script_cannot_end_its_element_and_reads_back_the_same():
    value = ["</script>", "<!--", "a&b", "\u2028\u2029", {"k": "</SCRIPT >"}]
    text = json_for_script(value)
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text) == value


def test_provenance_fields_say_what_a_person_reads_first():
    metadata = {
        "c2pa": {"present": True, "validation_state": "Valid", "claim_generator": "Adobe Firefly",
                 "digital_source_type_name": "trainedAlgorithmicMedia", "issuer": "Adobe Inc."},
        "png_text": {"parameters": A1111, "generation_parameters": True, "generator": "A1111"},
        "exif": {"make": "Canon", "model": "Canon EOS 5D", "software": "GIMP", "date_taken": "2024:01:02 03:04:05"},
        "xmp": {"digital_source_type_name": "compositeWithTrainedAlgorithmicMedia", "creator_tool": "Photoshop"},
        "jpeg_quality": 92,
    }  # fmt: skip
    assert provenance_fields(metadata, "ignored") == [
        ("C2PA", "Valid"),
        ("C2PA source type", "trainedAlgorithmicMedia"),
        ("C2PA generator", "Adobe Firefly"),
        ("C2PA issuer", "Adobe Inc."),
        ("Generator", "A1111"),
        ("Generation parameters", A1111),
        ("XMP source type", "compositeWithTrainedAlgorithmicMedia"),
        ("Creator tool", "Photoshop"),
        ("Camera", "Canon Canon EOS 5D"),
        ("Software", "GIMP"),
        ("Taken", "2024:01:02 03:04:05"),
        ("JPEG quality", "92"),
    ]
    assert provenance_fields(None, "Camera: X") == [("Notes", "Camera: X")]  # a CSV report: its notes
    assert provenance_fields({"jpeg_quality": 80, "c2pa": {"present": False}}, "") == [("JPEG quality", "80")]


def test_the_page_data_of_a_scan(scanned, inputs, tmp_path):
    write_html(scanned, tmp_path / "page.html")
    data = _page_data(tmp_path / "page.html")
    rows = read_rows(scanned)
    assert [(d["path"], d["member"]) for d in data] == [(r["path"], r["member"]) for r in rows]
    assert [d.get("score") for d in data] == [r["score"] for r in rows]  # the error row's left out
    by_name = {Path(d["member"] or d["path"]).name: d for d in data}
    assert by_name["sd.png"]["has_provenance"] and ["Generator", "A1111"] in by_name["sd.png"]["provenance"]
    assert ["Camera", "Canon Canon EOS 5D"] in by_name["camera.jpg"]["provenance"]
    assert ["Software", "<b>editor</b>"] in by_name["camera.jpg"]["provenance"]
    assert "has_provenance" not in by_name["small.png"]  # left out: false
    assert "has_provenance" not in by_name["big.jpg"]  # a JPEG quality is no provenance
    assert by_name["broken.png"]["verdict"] == "error" and "picture" not in by_name["broken.png"]
    assert by_name["z1.png"]["group"] == str(inputs / "set.zip")
    assert by_name["small.png"]["group"] == str(inputs / "sub")
    assert by_name["t1.png"]["picture"] == by_name["t1.png"]["sha256"][:32]


def test_summary_and_histogram_count_every_row():
    rows = [
        {"verdict": v, "score": s, "threshold": 0.5, "group": g}
        for v, s, g in [("fake", 0.9, "a"), ("fake", 0.99, "a"), ("real", 0.1, "b"), ("error", None, "b"),
                        ("real", 0.0, "a"), ("fake", 1.0, "c")]
    ]  # fmt: skip
    summary = summarise(rows)
    assert summary.verdicts == [("fake", 3), ("real", 2), ("error", 1)] and summary.total == 6
    assert summary.groups == [("a", [2, 1, 0]), ("b", [0, 1, 1]), ("c", [1, 0, 0])] and summary.thresholds == [0.5]
    h = histogram(rows, summary.thresholds)
    assert sum(b.count for b in h.bars) == 5 and h.peak == 2  # 0.99 and 1.0 share the last bin
    last = [b for b in h.bars if b.low == 0.95]
    assert [(b.verdict, b.count) for b in last] == [("fake", 2)] and h.thresholds == [(320.0, 0.5)]
    assert group_of("/a/b.png", "") == "/a" and group_of("set.zip", "m.png") == "set.zip"
    assert group_of("x.png", "") == "."


def test_scan_html_writes_the_page_at_the_end_of_the_scan(inputs, tiny_weights, tmp_path):
    out, page = tmp_path / "r.csv", tmp_path / "r.html"
    args = ["scan", str(inputs), "--weights", str(tiny_weights), "--workers", "0", "--html", str(page)]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert page.exists() and "10 rows, 9 with pictures" in result.stderr
    data = _page_data(page)
    assert [d["path"] for d in data] == [r["path"] for r in read_rows(out)]
    no_out = runner.invoke(app, args)
    assert no_out.exit_code == 2 and "--html makes its page from the report file: add --out FILE" in no_out.stderr


def _page_data(page: Path) -> list[dict]:
    html = page.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="rows">(.*?)</script>', html, re.S).group(1))
    assert data["files"] == f"{page.stem}_files" and data["previews"] is True
    return data["rows"]


def test_a_csv_report_has_provenance_when_its_notes_say_more_than_the_file_format():
    assert has_provenance(provenance_fields(None, "Generation parameters in PNG text (A1111); JPEG quality ≈ 90"))
    assert not has_provenance(provenance_fields(None, "JPEG quality ≈ 90; decoder warning: Corrupt EXIF data"))
    assert not has_provenance(provenance_fields(None, ""))


def test_the_summary_shows_the_uncertain_band():
    rows = [
        {"verdict": "uncertain", "score": 0.4, "threshold": 0.6, "band_low": 0.3, "group": "a"},
        {"verdict": "fake", "score": 0.7, "threshold": 0.6, "band_low": 0.3, "group": "a"},
        {"verdict": "real", "score": 0.1, "threshold": 0.6, "band_low": 0.3, "group": "a"},
    ]
    summary = summarise(rows)
    assert summary.verdicts == [("fake", 1), ("uncertain", 1), ("real", 1)] and summary.bands == [(0.3, 0.6)]
    h = histogram(rows, summary.thresholds, summary.bands)
    assert h.bands == [(192.0, 192.0)] and h.thresholds == [(384.0, 0.6)]


def test_a_name_that_is_not_utf8_is_shown_escaped_and_its_picture_found(tmp_path, tiny_weights):
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"bad\xff.png")
    random_image(300, 200, seed=5).save(folder / name)
    detector = load_detector(weights=tiny_weights)
    for fmt in ("csv", "jsonl"):
        report = tmp_path / f"r.{fmt}"
        write_report([str(folder)], detector, report, workers=0)
        page = write_html(report, tmp_path / f"{fmt}.html")
        assert page.pictures == 1 and page.missing == []
        (row,) = _page_data(page.page)
        assert row["path"] == f"{folder}/bad\\xff.png" and row["group"] == str(folder)


def test_the_page_never_overwrites_its_report(scanned, tmp_path):
    for target in (scanned, Path(f"{scanned}.meta.json")):
        before = target.read_bytes()
        with pytest.raises(ValueError, match="that is the report"):
            write_html(scanned, target)
        assert target.read_bytes() == before
    result = runner.invoke(app, ["report", str(scanned), "--html", str(scanned)])
    assert result.exit_code == 2 and "that is the report" in result.stderr


def test_scan_html_is_checked_before_the_scan(inputs, tiny_weights, tmp_path):
    out = tmp_path / "r.jsonl"
    base = ["scan", str(inputs), "--weights", str(tiny_weights), "--workers", "0", "--out", str(out)]
    for html, message in ((out, "that is the report"), (tmp_path / "no" / "p.html", "cannot write in")):
        result = runner.invoke(app, [*base, "--html", str(html)])
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert "scanned" not in result.stderr  # refused before a single image


def test_a_scored_row_whose_mask_failed_keeps_its_picture_and_a_row_without_sha256_says_why(scanned, tmp_path):
    rows = read_rows(scanned)
    fake = next(r for r in rows if r["verdict"] != "error")
    unhashed = next(r for r in rows if r["verdict"] != "error" and r is not fake)
    fake["error"] = "mask files not written: disk full"
    unhashed["sha256"] = ""
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_html(edited, tmp_path / "p.html")
    data = {(d["path"], d["member"]): d for d in _page_data(tmp_path / "p.html")}
    assert data[(fake["path"], fake["member"])]["picture"] == fake["sha256"][:32]
    assert data[(unhashed["path"], unhashed["member"])]["missing"] == "the report gives no sha256 to find it by"


def test_pictures_of_other_sizes_are_made_again(scanned, tmp_path):
    write_html(scanned, tmp_path / "p.html")
    folder = tmp_path / "p_files"
    big = next(folder.glob("thumb/*.jpg"))
    assert max(Image.open(big).size) <= 256
    write_html(scanned, tmp_path / "p.html", thumbnails=Thumbnails(thumb=64, preview=0))
    assert all(max(Image.open(p).size) <= 64 for p in folder.glob("thumb/*.jpg")) and not list(folder.glob("preview/*"))
    assert json.loads((folder / "sizes.json").read_text()) == {"thumb": 64, "preview": 0}
