"""forensix.write_report from Python: order, summary, streams, resume, refusals, and an interrupted scan."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import random_image

import forensix
from forensix.report import ReportError
from forensix.scan_report import ScanSummary, write_report


@pytest.fixture(scope="module")
def detector(tiny_weights):
    return forensix.load_detector(weights=tiny_weights, device="cpu")


def test_rows_are_the_scan_in_order_and_the_summary_counts_them(photos, detector, tmp_path):
    out = tmp_path / "report.jsonl"
    summary = forensix.write_report([str(photos)], detector, out, workers=0, batch_size=2)
    assert isinstance(summary, ScanSummary) and not summary.interrupted
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == list(forensix.scan([str(photos)], detector, workers=0, batch_size=2))
    s = summary.stats
    assert summary.rows == len(rows) == 7 and (s.fake + s.real, s.errors, s.skipped_non_images) == (6, 1, 1)
    assert summary.meta_path == tmp_path / "report.jsonl.meta.json" and summary.format == "jsonl"
    meta = json.loads(summary.meta_path.read_text())
    assert meta["model"] == detector.name and meta["limits"]["max_pixels"] == 178_956_970


def test_a_stream_gets_the_report_and_no_sidecar(photos, detector):
    stream = io.StringIO()
    summary = write_report([str(photos)], detector, stream, format="json", workers=0)
    assert summary.meta_path is None and not stream.closed
    one = io.StringIO()
    write_report(photos, detector, one, format="json", workers=0)  # one path, as a Path
    assert one.getvalue() == stream.getvalue()
    assert [r["path"] for r in json.loads(stream.getvalue())] == [
        r["path"] for r in forensix.scan([str(photos)], detector, workers=0)
    ]


def parse_report(data: bytes, fmt: str) -> list[dict]:
    text = data.decode()
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    if fmt == "json":
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_resume_appends_without_duplicates_or_gaps(photos, detector, tmp_path, fmt):
    out = tmp_path / f"report.{fmt}"
    write_report([str(photos)], detector, out, workers=0)
    complete = out.read_bytes()
    out.write_bytes(complete[: len(complete) // 2])  # killed halfway, mid-row
    said: list[str] = []
    summary = write_report([str(photos)], detector, out, resume=True, workers=0, log=said.append)
    # The rows of a scan never cut; a resumed image is scored in another batch, so its score may
    # differ in float rounding (one image's score does not depend on its batch otherwise).
    resumed, uncut = parse_report(out.read_bytes(), fmt), parse_report(complete, fmt)
    assert [{**r, "score": None} for r in resumed] == [{**r, "score": None} for r in uncut]
    assert [float(r["score"] or "nan") for r in resumed] == pytest.approx(
        [float(r["score"] or "nan") for r in uncut], abs=1e-6, nan_ok=True
    )
    assert summary.previous_rows + summary.rows == 7 and summary.stats.resumed == summary.previous_rows > 0
    assert said == [f"resuming {out}: {summary.previous_rows} rows already there"]


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ({"max_pixels": 10_000}, "--max-pixels 178956970"),
        ({"metadata": False}, "--metadata"),
        ({"threshold": 0.9}, "--threshold"),
    ],
)
def test_resume_refuses_a_report_made_with_other_settings(photos, tiny_weights, detector, tmp_path, changed, named):
    out = tmp_path / "report.csv"
    write_report([str(photos)], detector, out, workers=0)
    before = out.read_bytes()
    threshold = changed.pop("threshold", None)
    other = forensix.load_detector(weights=tiny_weights, device="cpu", threshold=threshold)
    with pytest.raises(ReportError, match=f"pass {named}"):
        write_report([str(photos)], other, out, resume=True, workers=0, **changed)
    assert out.read_bytes() == before  # refused before anything was touched


def test_resume_needs_a_file_and_masks_need_a_usable_folder(photos, detector, tmp_path):
    with pytest.raises(ReportError, match="--resume needs --out"):
        write_report([str(photos)], detector, io.StringIO(), resume=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot create the folder"):
        write_report([str(photos)], detector, tmp_path / "r.csv", masks_dir=tmp_path / "file" / "masks")


SCRIPT = """
import json, sys
import forensix
detector = forensix.load_detector(weights=sys.argv[1], device="cpu")
summary = forensix.write_report([sys.argv[2]], detector, sys.argv[3], batch_size=1, workers=1)
print(json.dumps({"interrupted": summary.interrupted, "rows": summary.rows}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_write_report_returns_with_a_valid_report(tmp_path, tiny_weights, signum):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(400):
        random_image(32, 32, seed=i).save(root / f"{i:04d}.png")
    out = tmp_path / "report.json"
    args = [sys.executable, "-c", SCRIPT, str(tiny_weights), str(root), str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.stat().st_size > 2000):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.02)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    rows = json.loads(out.read_text())  # the array is closed
    assert summary == {"interrupted": True, "rows": len(rows)}  # every row counted is in the report
    assert [r["path"] for r in rows] == sorted(str(p) for p in root.iterdir())[: len(rows)]


def test_a_meta_path_that_cannot_be_written_leaves_the_report_as_it_was(photos, detector, tmp_path):
    """Issue 14, defect 8: the report was emptied before the sidecar failed."""
    out = tmp_path / "report.csv"
    out.write_text("an earlier report\n")
    with pytest.raises(OSError):
        write_report([str(photos)], detector, out, meta=tmp_path / "no-such-folder" / "x.meta.json", workers=0)
    assert out.read_text() == "an earlier report\n"
