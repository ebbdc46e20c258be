"""`forensix scan` end to end: Typer's runner for the contracts, real subprocesses for signals and pipes."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import random_image
from test_imaging import WARNING_FILES
from test_timeouts import LIMIT_TEXT, slow_jpeg
from typer.testing import CliRunner

from forensix.cli import app
from forensix.report import COLUMNS

runner = CliRunner()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FORENSIX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def scan(*args: str, input: str | None = None):
    return runner.invoke(app, ["scan", *map(str, args)], input=input)


def forensix(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "forensix", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def test_csv_report_has_one_row_per_image_and_a_provenance_sidecar(photos, tiny_weights, tmp_path):
    out = tmp_path / "report.csv"
    result = scan(photos, "--weights", tiny_weights, "--out", out, "--workers", "0")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(newline="")))
    assert len(rows) == 7 and list(rows[0]) == list(COLUMNS)
    assert sum(r["verdict"] == "error" for r in rows) == 1
    assert "scanned 7 images" in result.stderr and "skipped 1 non-images" in result.stderr
    meta = json.loads((tmp_path / "report.csv.meta.json").read_text())
    assert meta["model"] == rows[0]["model"] and len(meta["weights"]["sha256"]) == 64
    assert meta["threshold"] == 0.5 and meta["preprocess"]["mode"] == "resize_crop"
    assert {"forensix", "torch", "python"} <= set(meta["versions"])


def test_jsonl_on_stdout_by_default_and_messages_on_stderr(photos, tiny_weights):
    result = scan(photos / "img0.png", photos / "sub", "--weights", tiny_weights, "--workers", "1")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["img0.png", "img1.png", "img3.png", "img5.png"]
    assert "scanned" in result.stderr and "scanned" not in result.stdout


def test_paths_from_a_list_and_from_stdin(photos, tiny_weights, tmp_path):
    names = [str(photos / "img0.png"), "", str(photos / "sub" / "img1.png"), str(photos / "nope.png")]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(names) + "\n")
    by_list = scan("--from-list", listing, "--weights", tiny_weights, "--workers", "0")
    by_stdin = scan("-", "--weights", tiny_weights, "--workers", "0", input="\n".join(names))
    for result in (by_list, by_stdin):
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert [r["path"] for r in rows] == [n for n in names if n]
        assert rows[-1]["error"] == "no such file or directory"


@pytest.mark.parametrize(
    ("threshold", "code"),
    [("0", 1), ("1", 3)],  # fake found; none fake but one image unreadable: the gate fails closed
)
def test_fail_on_fake_exit_code(photos, tiny_weights, threshold, code):
    result = scan(photos, "--weights", tiny_weights, "--threshold", threshold, "--fail-on-fake", "--workers", "0")
    assert result.exit_code == code, result.output
    verdicts = {json.loads(line)["verdict"] for line in result.stdout.splitlines()}
    assert verdicts == ({"fake", "error"} if code == 1 else {"real", "error"})


def test_fail_on_fake_exits_0_when_every_image_is_scored_and_real(tiny_weights, tmp_path):
    random_image(64, 48, seed=1).save(tmp_path / "a.png")
    result = scan(tmp_path / "a.png", "--weights", tiny_weights, "--threshold", "1", "--fail-on-fake", "--workers", "0")
    assert result.exit_code == 0 and json.loads(result.stdout)["verdict"] == "real"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xml"], "--format must be one of"),
        (["--out", "report.txt"], "cannot tell the report format"),
        (["--out", "/proc/forbidden/report.csv"], "No such file or directory"),
        (["--resume"], "--resume needs --out"),
        (["--weights", "missing.safetensors"], "no such file"),
        (["--device", "cuda:7"], "CUDA"),
    ],
)
def test_usage_and_fatal_errors_exit_2_with_one_line(photos, tiny_weights, args, message):
    weights = [] if "--weights" in args else ["--weights", str(tiny_weights)]
    result = scan(photos, *weights, *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_default_weights_say_how_to_get_them(photos):
    result = scan(photos)
    assert result.exit_code == 2 and "forensix weights" in result.stderr and "Traceback" not in result.output


def test_nothing_to_scan_is_a_usage_error():
    result = scan()
    assert result.exit_code == 2 and "nothing to scan" in result.stderr


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_resume_after_a_cut_report_gives_exactly_one_row_per_image(photos, tiny_weights, tmp_path, fmt):
    out = tmp_path / f"report.{fmt}"
    assert scan(photos, "--weights", tiny_weights, "--out", out, "--workers", "0").exit_code == 0
    complete = out.read_bytes()
    out.write_bytes(complete[: len(complete) * 2 // 3])  # as if killed two thirds in, mid-row
    result = scan(photos, "--weights", tiny_weights, "--out", out, "--resume", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr and "already in the report" in result.stderr
    first = read_rows(complete.decode(), fmt)
    resumed = read_rows(out.read_text(), fmt)
    assert sorted(r["path"] for r in resumed) == sorted(r["path"] for r in first)  # no gap, no duplicate
    assert {r["path"]: r["score"] for r in resumed} == {r["path"]: r["score"] for r in first}


def test_resume_upgrades_a_csv_report_of_an_older_version(photos, tiny_weights, tmp_path):
    out = tmp_path / "report.csv"
    assert scan(photos, "--weights", tiny_weights, "--out", out, "--workers", "0").exit_code == 0
    first = read_rows(out.read_text(), "csv")
    old = [c for c in COLUMNS if c not in ("source", "source_score")]
    legacy = io.StringIO(newline="")
    writer = csv.DictWriter(legacy, fieldnames=old, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(first[:3])
    out.write_text(legacy.getvalue(), newline="")
    result = scan(photos, "--weights", tiny_weights, "--out", out, "--resume", "--workers", "0")
    assert result.exit_code == 0, result.output
    upgraded = "3 rows already there (written by an older forensix: added the columns source, source_score)"
    assert upgraded in result.stderr
    resumed = read_rows(out.read_text(), "csv")
    assert list(resumed[0]) == list(COLUMNS)
    assert [r["path"] for r in resumed] == [r["path"] for r in first]
    # the resumed images ran in other batches: the same scores to float32's precision, not to the bit
    scores = [[float(r["score"] or "nan") for r in rows] for rows in (resumed, first)]
    assert scores[0] == pytest.approx(scores[1], abs=1e-6, nan_ok=True)


def test_use_cache_serves_a_second_scan_from_the_prediction_cache(photos, tiny_weights, tmp_path):
    args = [photos, "--weights", tiny_weights, "--workers", "0", "--use-cache", "--cache", tmp_path / "cache"]
    first = scan(*args, "--out", tmp_path / "first.jsonl")
    assert first.exit_code == 0, first.output
    assert "from the cache" not in first.stderr
    second = scan(*args, "--out", tmp_path / "second.jsonl")
    assert second.exit_code == 0, second.output
    assert "6 scores from the cache" in second.stderr  # the six images; broken.png has no logit to reuse
    assert (tmp_path / "second.jsonl").read_text() == (tmp_path / "first.jsonl").read_text()
    meta = json.loads((tmp_path / "second.jsonl.meta.json").read_text())
    assert meta["cache"]["path"] == str(tmp_path / "cache" / "predictions.sqlite")
    plain = scan(photos, "--weights", tiny_weights, "--workers", "0", "--out", tmp_path / "plain.jsonl")
    assert "from the cache" not in plain.stderr  # the cache is opt-in for scan
    assert json.loads((tmp_path / "plain.jsonl.meta.json").read_text())["cache"] is None


def test_resume_refuses_a_report_of_another_threshold(photos, tiny_weights, tmp_path):
    out = tmp_path / "report.jsonl"
    assert scan(photos, "--weights", tiny_weights, "--out", out, "--workers", "0").exit_code == 0
    result = scan(photos, "--weights", tiny_weights, "--out", out, "--resume", "--threshold", "0.9")
    assert result.exit_code == 2 and "threshold" in result.stderr


def read_rows(text: str, fmt: str) -> list[dict]:
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text, newline="")))
    if fmt == "json":
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines()]


def many_images(tmp_path: Path, n: int) -> Path:
    root = tmp_path / "many"
    root.mkdir()
    for i in range(n):
        random_image(32, 32, seed=i).save(root / f"{i:04d}.png")
    return root


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_real_pipe_streams_jsonl_from_a_subprocess(photos, tiny_weights):
    listing = "\n".join(str(p) for p in sorted(photos.rglob("*.png"))) + "\n"
    proc = forensix("scan", "-", "--weights", tiny_weights, "--workers", "1", stdin=subprocess.PIPE)
    stdout, stderr = proc.communicate(listing, timeout=120)
    assert proc.returncode == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert len(rows) == 7 and rows[0]["path"] == str(sorted(photos.rglob("*.png"))[0]), stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interruption_leaves_a_valid_json_array_and_exits_130(tmp_path, tiny_weights, signum):
    root = many_images(tmp_path, 400)
    out = tmp_path / "report.json"
    proc = forensix("scan", root, "--weights", tiny_weights, "--out", out, "--batch-size", "1", "--workers", "2")
    wait_for(lambda: out.exists() and out.stat().st_size > 2000)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    rows = json.loads(out.read_text())
    assert rows and "Traceback" not in stderr, stderr
    # However far the scan got before the signal: the rows it counts are the report's, in order.
    assert f"interrupted after {len(rows)} images" in stderr
    assert [r["path"] for r in rows] == sorted(str(p) for p in root.iterdir())[: len(rows)]


def test_a_killed_scan_resumed_gives_every_image_once(tmp_path, tiny_weights):
    root = many_images(tmp_path, 400)
    out = tmp_path / "report.jsonl"
    proc = forensix("scan", root, "--weights", tiny_weights, "--out", out, "--batch-size", "1", "--workers", "1")
    wait_for(lambda: out.exists() and out.read_text().count("\n") >= 20)
    proc.kill()
    proc.communicate(timeout=60)
    before = out.read_text().count("\n")
    assert before < 400, "the scan finished before it could be killed; the test proves nothing"
    proc = forensix("scan", root, "--weights", tiny_weights, "--out", out, "--resume", "--workers", "2")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert sorted(paths) == sorted(str(p) for p in root.iterdir())


def test_progress_bar_runs_to_the_total(photos, tiny_weights):
    result = scan(photos, "--weights", tiny_weights, "--progress", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "8/8" in result.stderr  # 7 images + 1 non-image counted by the background walk


# --- every option end to end ---------------------------------------------------------------------


def jsonl_rows(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_meta_writes_the_sidecar_where_asked_even_for_stdout(photos, tiny_weights, tmp_path):
    meta = tmp_path / "elsewhere" / "scan.json"
    meta.parent.mkdir()
    rows = jsonl_rows(scan(photos, "--weights", tiny_weights, "--workers", "0", "--meta", meta))
    recorded = json.loads(meta.read_text())
    assert recorded["model"] == rows[0]["model"] and recorded["metadata"] is True


def test_no_metadata_leaves_notes_out(tmp_path, tiny_weights):
    exif = random_image(240, 240).getexif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 5D"
    random_image(240, 240).save(tmp_path / "photo.jpg", exif=exif)
    (with_notes,) = jsonl_rows(scan(tmp_path / "photo.jpg", "--weights", tiny_weights, "--workers", "0"))
    (without,) = jsonl_rows(scan(tmp_path / "photo.jpg", "--weights", tiny_weights, "--workers", "0", "--no-metadata"))
    assert "Camera: Canon EOS 5D" in with_notes["notes"] and with_notes["metadata"]["exif"]["make"] == "Canon"
    assert without["notes"] == "" and "metadata" not in without
    assert without["score"] == with_notes["score"]  # notes never feed the score


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def archive(tmp_path) -> Path:
    """A zip of three PNGs (159 kB each, barely compressible) and a flat BMP (173 kB, compressed 750 times)."""
    import zipfile

    path = tmp_path / "set.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(3):
            z.writestr(f"{i}.png", png_bytes(random_image(240, 240, seed=i)))
        flat = io.BytesIO()
        random_image(240, 240).point(lambda _: 128).save(flat, "BMP")
        z.writestr("flat.bmp", flat.getvalue())
    return path


@pytest.mark.parametrize(
    ("option", "value", "errors", "message"),
    [
        ("--max-pixels", "50000", ["0.png", "1.png", "2.png", "flat.bmp"], "limit (50000; --max-pixels raises"),
        ("--max-bytes", "165000", ["flat.bmp"], "over the max-bytes limit (165000)"),
        ("--max-archive-bytes", "400000", ["2.png", "flat.bmp"], "the max-archive-bytes limit (400000)"),
        ("--max-ratio", "50", ["flat.bmp"], "exceeds the max-ratio limit (50)"),
    ],
)
def test_each_limit_turns_what_exceeds_it_into_an_error_row(archive, tiny_weights, option, value, errors, message):
    plain = jsonl_rows(scan(archive, "--weights", tiny_weights, "--workers", "0", "--max-ratio", "1000"))
    assert [r["error"] for r in plain] == [""] * 4
    ratio = [] if option == "--max-ratio" else ["--max-ratio", "1000"]  # the flat BMP is a zip bomb by default
    rows = jsonl_rows(scan(archive, "--weights", tiny_weights, "--workers", "0", option, value, *ratio))
    assert [r["member"] for r in rows] == ["0.png", "1.png", "2.png", "flat.bmp"]  # still a row each, in order
    assert [r["member"] for r in rows if r["verdict"] == "error"] == errors
    assert all(message in r["error"] for r in rows if r["verdict"] == "error")


def test_bf16_scores_follow_fp32(photos, tiny_weights, tmp_path):
    fp32 = jsonl_rows(scan(photos, "--weights", tiny_weights, "--workers", "0"))
    out = tmp_path / "bf16.jsonl"
    result = scan(photos, "--weights", tiny_weights, "--workers", "0", "--precision", "bf16", "--out", out)
    assert result.exit_code == 0, result.output
    bf16 = read_rows(out.read_text(), "jsonl")
    assert [r["path"] for r in bf16] == [r["path"] for r in fp32]
    pairs = [(a["score"], b["score"]) for a, b in zip(fp32, bf16) if a["score"] is not None]
    assert len(pairs) == 6 and all(abs(a - b) < 0.02 for a, b in pairs)  # bf16 keeps 8 bits of mantissa
    assert json.loads((tmp_path / "bf16.jsonl.meta.json").read_text())["precision"] == "bf16"


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_format_overrides_the_extension_and_applies_to_stdout(photos, tiny_weights, tmp_path, fmt):
    out = tmp_path / "report.txt"
    assert scan(photos, "--weights", tiny_weights, "--workers", "0", "--out", out, "--format", fmt).exit_code == 0
    on_stdout = scan(photos, "--weights", tiny_weights, "--workers", "0", "--format", fmt)
    assert on_stdout.exit_code == 0, on_stdout.output
    assert out.read_text() == on_stdout.stdout
    assert len(read_rows(on_stdout.stdout, fmt)) == 7


@pytest.mark.slow  # torch.compile's inductor builds C++ kernels: minutes on a small CPU
def test_compile_gives_the_same_rows(photos, tiny_weights):
    plain = jsonl_rows(scan(photos, "--weights", tiny_weights, "--workers", "0"))
    compiled = jsonl_rows(scan(photos, "--weights", tiny_weights, "--workers", "0", "--compile"))
    assert [r["path"] for r in compiled] == [r["path"] for r in plain]
    assert all(
        (a["score"] is None and b["score"] is None) or abs(a["score"] - b["score"]) < 1e-4
        for a, b in zip(plain, compiled)
    )


@pytest.mark.parametrize(
    ("first", "then", "named"),
    [
        ([], ["--max-pixels", "50000"], "pass --max-pixels 178956970"),
        ([], ["--max-bytes", "100000"], "pass --max-bytes 536870912"),
        ([], ["--max-archive-bytes", "400000"], "pass --max-archive-bytes 68719476736"),
        (["--max-ratio", "1000"], ["--max-ratio", "50"], "pass --max-ratio 1000.0"),
        ([], ["--no-metadata"], "pass --metadata"),
        (["--no-metadata"], [], "pass --no-metadata"),
    ],
)
def test_resume_refuses_changed_limits_or_notes_setting(photos, tiny_weights, tmp_path, first, then, named):
    out = tmp_path / "report.jsonl"
    args = [photos, "--weights", tiny_weights, "--out", out, "--workers", "0"]
    assert scan(*args, *first).exit_code == 0
    before = out.read_bytes()
    result = scan(*args, "--resume", *then)
    assert result.exit_code == 2, result.output
    assert named in result.stderr and "Traceback" not in result.output
    assert out.read_bytes() == before
    assert scan(*args, "--resume", *first).exit_code == 0  # the same settings resume


def test_the_default_model_comes_from_the_manifest(photos, tiny_weights, home):
    import shutil

    import forensix
    from forensix.weights import cached_sha256

    # Where the shipped manifest looks for deeclip's file. The loader goes by content, not name, and
    # a tiny model in the authors' layout would need --feature-layers: the tiny forensix file stands in.
    home.mkdir()
    placed = home / "deeclip_weight_complete_with_lora_5.pth"
    shutil.copy(tiny_weights, placed)
    rows = jsonl_rows(scan(photos, "--workers", "0"))  # no --model: deeclip, resolved in FORENSIX_HOME
    name = f"deeclip@{cached_sha256(placed)[:12]}"
    assert {r["model"] for r in rows} == {name}
    by_file = forensix.load_detector(weights=tiny_weights, device="cpu")
    assert [r["score"] for r in rows] == [r["score"] for r in forensix.scan([str(photos)], by_file, workers=0)]
    by_name = forensix.load_detector("deeclip", device="cpu")
    assert by_name.name == name and by_name.info.source == str(placed)


def test_hostile_files_in_a_folder_cost_only_their_own_rows(tiny_weights, tmp_path):
    """Issue 14: a corrupt AVIF ended the scan (0 rows); a PNG text bomb was an error row."""
    from test_imaging import corrupt_avif, png_with_text_bomb, unimplemented_dds

    folder = tmp_path / "mixed"
    folder.mkdir()
    random_image(64, 48, seed=1).save(folder / "a-good.png")
    (folder / "b-bad.avif").write_bytes(corrupt_avif())
    buf = io.BytesIO()
    random_image(50, 40, seed=2).save(buf, "PNG")
    (folder / "c-text-bomb.png").write_bytes(png_with_text_bomb(buf.getvalue()))
    random_image(64, 48, seed=3).save(folder / "d-good.jpg")
    dds = tmp_path / "e-unimplemented.dds"
    dds.write_bytes(unimplemented_dds())
    out = tmp_path / "report.csv"
    args = ["scan", str(folder), str(dds), "--weights", str(tiny_weights), "--workers", "1", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["path"]).name for r in rows] == [
        "a-good.png",
        "b-bad.avif",
        "c-text-bomb.png",
        "d-good.jpg",
        "e-unimplemented.dds",
    ]
    assert [r["verdict"] != "error" for r in rows] == [True, False, True, True, False]
    assert rows[1]["error"].startswith("cannot decode image: RuntimeError: ")
    assert rows[4]["error"].startswith("cannot decode image: NotImplementedError: ")


@pytest.mark.parametrize("workers", ["0", "1"])
def test_decode_timeout_makes_a_slow_image_an_error_row_and_the_scan_goes_on(tmp_path, tiny_weights, workers):
    random_image(60, 50, seed=1).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(slow_jpeg())  # about 4 s to decode: thousands of progressive scans
    random_image(60, 50, seed=2).save(tmp_path / "c.png")
    out = tmp_path / "report.jsonl"
    result = scan(tmp_path, "--weights", tiny_weights, "--workers", workers, "--decode-timeout", "0.2", "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_rows(out.read_text(), "jsonl")
    assert [r["error"] for r in rows] == ["", f"decoding took longer than {LIMIT_TEXT}", ""]
    assert rows[0]["score"] is not None and rows[2]["score"] is not None
    assert json.loads((tmp_path / "report.jsonl.meta.json").read_text())["limits"]["decode_timeout"] == 0.2


def test_decode_timeout_has_a_default_shown_in_help():
    result = runner.invoke(app, ["scan", "--help"], env={"COLUMNS": "200"})
    line = next(line for line in result.stdout.splitlines() if "--decode-timeout" in line)
    assert "[default: 30.0]" in line


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_decoders_warnings_go_to_the_rows_notes_never_to_stderr(tmp_path, tiny_weights, workers):
    """A real process: pytest records warnings itself, in its process and the workers it forks."""
    for name, (data, _) in WARNING_FILES.items():
        (tmp_path / name).write_bytes(data)
    process = forensix("scan", tmp_path, "--weights", tiny_weights, "--workers", workers, "--device", "cpu")
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    notes = {Path(r["path"]).name: r["notes"] for r in read_rows(stdout, "jsonl")}
    assert all(notes[name].startswith("decoder warning: ") for name in WARNING_FILES)
    assert all(text in notes[name] for name, (_, text) in WARNING_FILES.items())
    assert stderr.startswith("scanned 4 images") and len(stderr.splitlines()) == 1, stderr


class Unsafe:
    """A class a weights file should not hold: torch.load(weights_only=True) refuses its pickle."""


def test_errors_carry_no_terminal_codes(tmp_path, photos, tiny_weights):
    """torch's refusal of an unsafe pickle has bold in it; neither the message nor stderr may."""
    import torch

    torch.save({"model": Unsafe()}, weights := tmp_path / "unsafe.pth")
    for env in ({}, {"NO_COLOR": "1"}):
        result = runner.invoke(app, ["scan", str(photos), "--weights", str(weights)], env=env)
        assert result.exit_code == 2 and "\x1b" not in result.stderr, repr(result.stderr)
        assert "not a readable weights file (its pickle is refused: Unsupported global: GLOBAL" in result.stderr
