"""`forensix scan` end to end: Typer's runner for the contracts, real subprocesses for signals and pipes."""

from __future__ import annotations

import base64
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


pytestmark = pytest.mark.usefixtures("home")  # every test: a FORENSIX_HOME of its own (conftest)


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

    # The same scores, to the CPU's rounding: the images resumed go through the model in other batches.
    def scores(rows):
        return {r["path"]: float(r["score"]) if r["score"] not in ("", None) else -1.0 for r in rows}

    assert scores(resumed) == pytest.approx(scores(first), abs=1e-6)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_file_given_twice_gives_two_rows_resumed_or_not(tiny_weights, tmp_path, workers):
    """The resume index was a set: a report cut after the first a.png skipped the second one too."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    random_image(240, 230, seed=1).save(a)
    random_image(230, 240, seed=2).save(b)
    out = tmp_path / "r.jsonl"
    # One entry per block: with 2 workers the two a.png are prepared by different workers.
    args = (a, a, b, "--weights", tiny_weights, "--out", out, "--workers", workers, "--batch-size", "1")
    assert scan(*args).exit_code == 0
    complete = out.read_text().splitlines(keepends=True)
    first = read_rows("".join(complete), "jsonl")
    assert [Path(r["path"]).name for r in first] == ["a.png", "a.png", "b.png"]
    for kept in (1, 2):
        out.write_text("".join(complete[:kept]))
        result = scan(*args, "--resume")
        assert result.exit_code == 0, result.output
        assert f"{kept} already in the report" in result.stderr
        resumed = read_rows(out.read_text(), "jsonl")
        assert [(r["path"], r["sha256"]) for r in resumed] == [(r["path"], r["sha256"]) for r in first]
        assert [r["score"] for r in resumed] == [pytest.approx(r["score"], abs=1e-5) for r in first]


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
    assert result.exit_code == 2 and "written with threshold 0.5, not 0.9" in result.stderr
    assert "pass --threshold 0.5 to resume it" in result.stderr


def test_a_named_path_that_does_not_exist_is_exit_2_before_the_model_loads(photos, tmp_path, monkeypatch):
    import forensix.detector

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(forensix.detector, "load_detector", no_model)
    result = scan(photos, tmp_path / "nonexistnt" / "dir", "-", "--out", tmp_path / "r.csv", input="")
    assert result.exit_code == 2 and result.stdout == ""
    assert "no such file or directory: " + repr(str(tmp_path / "nonexistnt" / "dir")) in result.stderr
    assert not (tmp_path / "r.csv").exists()


def test_write_report_refuses_a_named_path_that_does_not_exist(photos, tiny_weights, tmp_path):
    import forensix
    from forensix.inputs import MissingInput

    detector = forensix.load_detector(weights=tiny_weights, device="cpu")
    with pytest.raises(MissingInput, match="nonexistnt"):
        forensix.write_report([photos, tmp_path / "nonexistnt"], detector, tmp_path / "r.jsonl", workers=0)
    assert not (tmp_path / "r.jsonl").exists()
    rows = list(forensix.scan([str(tmp_path / "nonexistnt")], detector, workers=0))  # the row API: an error row
    assert [r["error"] for r in rows] == ["no such file or directory"]


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


@pytest.mark.slow
def test_a_real_pipe_streams_jsonl_from_a_subprocess(photos, tiny_weights):
    listing = "\n".join(str(p) for p in sorted(photos.rglob("*.png"))) + "\n"
    proc = forensix("scan", "-", "--weights", tiny_weights, "--workers", "1", stdin=subprocess.PIPE)
    stdout, stderr = proc.communicate(listing, timeout=120)
    assert proc.returncode == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert len(rows) == 7 and rows[0]["path"] == str(sorted(photos.rglob("*.png"))[0]), stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
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


@pytest.mark.slow
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
    refused = scan(photos, "--workers", "0")
    assert refused.exit_code == 2 and "not pinned" in refused.stderr  # put there by hand: pin it first
    assert runner.invoke(app, ["weights", "pin", "deeclip", cached_sha256(placed)]).exit_code == 0
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


# --- any file name reaches the report (issue 14) -------------------------------------------------


def odd_names(tmp_path: Path, names: list[bytes]) -> Path:
    """A folder holding an image under each of these names (bytes: any name POSIX allows)."""
    root = tmp_path / "odd"
    root.mkdir()
    for i, name in enumerate(names):
        random_image(32, 32, seed=i).save(os.fsdecode(os.fsencode(root) + b"/" + name), "PNG")
    return root


def stdout_rows(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.split("\n") if line]


def test_a_cr_in_a_listed_name_is_one_row_and_a_nul_list_takes_any_name(tiny_weights, tmp_path):
    root = odd_names(tmp_path, [b"a\rb.png", b"line\nbreak.png", b"plain.png"])
    crlf = tmp_path / "list.txt"  # a CRLF list, as Windows tools write: the CR inside a name stays
    crlf.write_bytes(b"".join(os.fsencode(root) + b"/" + n + b"\r\n" for n in (b"a\rb.png", b"plain.png")))
    rows = stdout_rows(scan("--from-list", crlf, "--weights", tiny_weights, "--workers", "0"))
    assert [(r["path"], r["verdict"] != "error") for r in rows] == [
        (str(root / "a\rb.png"), True),
        (str(root / "plain.png"), True),
    ]
    find0 = b"".join(os.fsencode(p) + b"\0" for p in sorted(root.iterdir()))  # find -print0
    rows = stdout_rows(scan("--from-list0", "-", "--weights", tiny_weights, "--workers", "1", input=find0))
    assert [r["path"] for r in rows] == [str(p) for p in sorted(root.iterdir())]
    assert all(r["verdict"] != "error" for r in rows)
    both = scan("-", "--from-list0", "-", "--weights", tiny_weights, input=find0)
    assert both.exit_code == 2 and "stdin can be read only once" in both.stderr


def latin1_tar(path: Path) -> Path:
    """A tar whose member name is Latin-1 bytes (a GNU header, no UTF-8 PAX record): 'café.png'."""
    import tarfile

    data = png_bytes(random_image(32, 32, seed=9))
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as archive:
        info = tarfile.TarInfo("café.png")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def cut_after(data: bytes, fmt: str, rows: int) -> bytes:
    """The report as a scan killed while writing row ``rows + 1``: ``rows`` whole rows and half a line."""
    head = 1 if fmt in ("csv", "json") else 0  # the CSV header, the JSON array's bracket
    lines = data.split(b"\r\n" if fmt == "csv" else b"\n")
    end = b"\r\n" if fmt == "csv" else b"\n"
    return end.join(lines[: head + rows]) + end + lines[head + rows][:20]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_names_that_are_not_utf8_reach_the_report_and_a_resume_skips_them(tiny_weights, tmp_path, fmt):
    root = odd_names(tmp_path, [b"a.png", b"back\\slash.png", b"bad\xff\xfe.png"])
    latin1_tar(root / "z.tar")
    out = tmp_path / f"report.{fmt}"
    result = scan(root, "--weights", tiny_weights, "--out", out, "--workers", "0", "--no-watermarks")
    assert result.exit_code == 0, result.output
    complete = out.read_bytes()
    rows = read_rows(complete.decode("utf-8"), fmt)  # UTF-8 text, whatever the names
    assert [(r["path"], r["member"]) for r in rows] == [
        (f"{root}/a.png", ""),
        (f"{root}/back\\slash.png", ""),  # a backslash that reads as no escape: the name as it is
        (f"{root}/bad\\xff\\xfe.png", ""),  # bytes that are not UTF-8, readable as \xHH
        (f"{root}/z.tar", "caf\\xe9.png"),
    ]
    assert all(r["verdict"] != "error" for r in rows), rows
    if fmt != "csv":  # and the exact bytes, only where the text is not the name itself
        assert base64.b64decode(rows[2]["path_bytes"]) == os.fsencode(root) + b"/bad\xff\xfe.png"
        assert base64.b64decode(rows[3]["member_bytes"]) == b"caf\xe9.png"
        assert [sorted(set(r) - set(COLUMNS)) for r in rows] == [
            ["metadata"],
            ["metadata"],
            ["metadata", "path_bytes"],
            ["member_bytes", "metadata"],
        ]
    out.write_bytes(cut_after(complete, fmt, 3))  # killed while writing the tar member's row
    result = scan(root, "--weights", tiny_weights, "--out", out, "--resume", "--workers", "0", "--no-watermarks")
    assert result.exit_code == 0, result.output
    assert "3 already in the report" in result.stderr  # the row of bad\xff\xfe.png matched its file
    assert read_rows(out.read_bytes().decode("utf-8"), fmt) == rows


@pytest.mark.slow
@pytest.mark.parametrize(
    "env",
    [
        {"LANG": "C.UTF-8"},
        {"LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict"},  # what en_US.UTF-8 gives, where it is installed
        {"LANG": "C.UTF-8", "PYTHONIOENCODING": "latin-1"},  # a report is UTF-8 whatever the locale
    ],
)
def test_stdout_and_a_stdin_list_carry_names_that_are_not_utf8(tiny_weights, tmp_path, env):
    root = odd_names(tmp_path, [b"bad\xff\xfe.png", "été ≈.png".encode()])
    listing = b"".join(os.fsencode(p) + b"\n" for p in sorted(root.iterdir()))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIOENCODING", "PYTHONUTF8"))}
    command = ["scan", "-", "--weights", str(tiny_weights), "--workers", "0"]  # a list on stdin, rows on stdout
    env = {**base, **env}
    proc = subprocess.run([sys.executable, "-m", "forensix", *command], input=listing, capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    rows = [json.loads(line) for line in proc.stdout.decode("utf-8").split("\n") if line]
    assert [r["path"] for r in rows] == [f"{root}/bad\\xff\\xfe.png", f"{root}/été ≈.png"]
    assert base64.b64decode(rows[0]["path_bytes"]) == os.fsencode(root) + b"/bad\xff\xfe.png"
    assert "path_bytes" not in rows[1] and all(r["verdict"] != "error" for r in rows)


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised_and_resume_matches_them(
    tiny_weights, tmp_path, monkeypatch
):
    import zipfile

    names = ["'quoted.png", "'=quoted formula.png", "+1.png", "-1+1.png", "=cmd|' C calc'!A0.png", "@SUM(1).png"]
    root = odd_names(tmp_path, [n.encode() for n in names])
    members = ['=HYPERLINK("http://example.com","open").png', "-2.png"]
    with zipfile.ZipFile(root / "set.zip", "w") as z:
        for i, member in enumerate(members):
            z.writestr(member, png_bytes(random_image(32, 32, seed=20 + i)))
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{n}\n" for n in [*names, "set.zip"]))
    monkeypatch.chdir(root)  # relative paths: each cell begins with the name itself
    out = tmp_path / "report.csv"
    result = scan("--from-list", listing, "--weights", tiny_weights, "--out", out, "--workers", "0")
    assert result.exit_code == 0, result.output
    complete = out.read_bytes()
    rows = read_rows(complete.decode(), "csv")
    assert [(r["path"], r["member"]) for r in rows] == [
        ("'quoted.png", ""),  # a quote before no formula character: left as it is
        ("''=quoted formula.png", ""),  # one more quote, so that reading it back is unambiguous
        ("'+1.png", ""),
        ("'-1+1.png", ""),
        ("'=cmd|' C calc'!A0.png", ""),
        ("'@SUM(1).png", ""),
        ("set.zip", "'" + members[0]),
        ("set.zip", "'" + members[1]),
    ]
    assert all(r["verdict"] != "error" for r in rows), rows
    exact = stdout_rows(scan("--from-list", listing, "--weights", tiny_weights, "--workers", "0"))
    assert [(r["path"], r["member"]) for r in exact] == [*((n, "") for n in names), *(("set.zip", m) for m in members)]
    out.write_bytes(cut_after(complete, "csv", 4))
    result = scan("--from-list", listing, "--weights", tiny_weights, "--out", out, "--resume", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "4 already in the report" in result.stderr  # every neutralised name matched its file
    assert read_rows(out.read_text(), "csv") == rows


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


@pytest.mark.slow
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


def test_a_file_path_is_accepted_wherever_a_model_name_is(photos, tiny_weights, tmp_path, monkeypatch):
    import shutil

    import forensix

    shutil.copy(tiny_weights, tmp_path / "my.safetensors")
    monkeypatch.chdir(tmp_path)
    by_name = forensix.load_detector("my.safetensors", device="cpu")  # the README's Python example
    assert by_name.info.source == "my.safetensors"
    by_model = jsonl_rows(scan(photos, "--model", "my.safetensors", "--workers", "0"))
    by_weights = jsonl_rows(scan(photos, "--weights", tiny_weights, "--workers", "0"))
    assert [r["score"] for r in by_model] == [r["score"] for r in by_weights]
    with pytest.raises(ValueError, match="absent.safetensors: no such file"):
        forensix.load_detector("absent.safetensors")
