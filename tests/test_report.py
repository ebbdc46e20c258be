import base64
import csv
import io
import json
import os
from pathlib import Path

import pytest

from forensix.report import COLUMNS, ReportError, ReportWriter, format_for, open_for_resume, read_report


def row(i: int, **extra) -> dict:
    base = {c: "" for c in COLUMNS}
    base.update(path=f"/data/img{i}.png", sha256=f"{i:064x}", verdict="real", score=0.25 + i / 100, threshold=0.5)
    base.update(model="deeclip@0123456789ab", width=10, height=20, format="PNG")
    base.update(extra)
    return base


def write_report(path, fmt: str, rows: list[dict], close: bool = True) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = ReportWriter(f, fmt)
        for r in rows:
            writer.write(r)
        if close:
            writer.close()
    return path.read_bytes().decode()


def test_format_follows_extension_unless_given():
    assert format_for("r.csv", None) == "csv"
    assert format_for("r.JSON", None) == "json"
    assert format_for("r.ndjson", None) == "jsonl"
    assert format_for(None, None) == "jsonl"
    assert format_for("r.txt", "csv") == "csv"
    with pytest.raises(ValueError, match="cannot tell"):
        format_for("report.txt", None)
    with pytest.raises(ValueError, match="must be one of"):
        format_for("r.csv", "xml")


def test_csv_is_rfc4180_with_header_and_quoted_fields(tmp_path):
    tricky = row(1, path='/odd/"quoted", name\nwith newline.png', notes="Camera: A, B")
    text = write_report(tmp_path / "r.csv", "csv", [tricky, row(2, score=None, verdict="error", error="bad")])
    assert text.startswith(",".join(COLUMNS) + "\r\n")
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    assert parsed[0]["path"] == tricky["path"]
    assert float(parsed[0]["score"]) == tricky["score"]  # full precision, not rounded
    assert parsed[1]["score"] == "" and parsed[1]["error"] == "bad"


def test_json_array_and_jsonl_round_trip_nested_fields(tmp_path):
    rows = [row(1, metadata={"exif": {"make": "Canon"}}), row(2)]
    assert json.loads(write_report(tmp_path / "r.json", "json", rows)) == rows
    assert json.loads(write_report(tmp_path / "e.json", "json", [])) == []
    lines = write_report(tmp_path / "r.jsonl", "jsonl", rows).splitlines()
    assert [json.loads(x) for x in lines] == rows


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_resume_finds_rows_and_appends_a_valid_report(tmp_path, fmt):
    path = tmp_path / f"r.{fmt}"
    write_report(path, fmt, [row(0), row(1)])
    existing = read_report(path, fmt)
    assert existing.keys == [(f"/data/img{i}.png", "", f"{i:064x}") for i in (0, 1)]
    assert existing.models == {"deeclip@0123456789ab"} and existing.thresholds == {0.5}
    stream, continued = open_for_resume(path, fmt, existing)
    with stream:
        writer = ReportWriter(stream, fmt, continued)
        writer.write(row(2))
        writer.close()
    assert [k[0] for k in read_report(path, fmt).keys] == [f"/data/img{i}.png" for i in (0, 1, 2)]
    if fmt == "json":
        assert [r["path"] for r in json.loads(path.read_text())] == [f"/data/img{i}.png" for i in (0, 1, 2)]
    if fmt == "csv":
        assert path.read_text().count("path,member") == 1  # one header


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_a_row_cut_off_by_a_killed_scan_is_dropped(tmp_path, fmt):
    path = tmp_path / f"r.{fmt}"
    full = write_report(path, fmt, [row(0), row(1, notes="a note, with a comma")], close=False)
    path.write_bytes(full.encode()[:-15])  # killed in the middle of the second row
    existing = read_report(path, fmt)
    assert [k[0] for k in existing.keys] == ["/data/img0.png"]
    assert existing.dropped > 0
    stream, continued = open_for_resume(path, fmt, existing)
    with stream:
        writer = ReportWriter(stream, fmt, continued)
        writer.write(row(1))
        writer.close()
    again = read_report(path, fmt)
    assert [k[0] for k in again.keys] == ["/data/img0.png", "/data/img1.png"] and again.dropped == 0
    if fmt == "json":
        assert len(json.loads(path.read_text())) == 2


def test_csv_record_end_inside_quotes_is_not_a_row_end(tmp_path):
    path = tmp_path / "r.csv"
    full = write_report(path, "csv", [row(0), row(1, path="a\r\nb.png")], close=False)
    cut = full.index("a\r\nb.png") + 3  # just after the CRLF inside the quoted path
    path.write_bytes(full.encode()[:cut])
    assert [k[0] for k in read_report(path, "csv").keys] == ["/data/img0.png"]


def test_missing_or_empty_report_starts_fresh(tmp_path):
    for fmt in ("csv", "json", "jsonl"):
        assert read_report(tmp_path / "absent", fmt).rows == 0
        (tmp_path / "empty").write_bytes(b"")
        existing = read_report(tmp_path / "empty", fmt)
        assert existing.rows == 0 and existing.end == 0


@pytest.mark.parametrize(
    ("fmt", "content", "message"),
    [
        ("csv", "a,b,c\r\n1,2,3\r\n", "header"),
        ("json", '{"not": "an array"}', "not a JSON array"),
        ("jsonl", '{"path": "a"}\nnot json\n{"path": "b"}\n', "not a report row"),
        ("jsonl", "[1, 2]\n", "not a report row"),
        ("csv", b"\xff\xfe\r\n", "not UTF-8"),
    ],
)
def test_foreign_files_are_not_resumed_into(tmp_path, fmt, content, message):
    path = tmp_path / f"r.{fmt}"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ReportError, match=message):
        read_report(path, fmt)


OLD_COLUMNS = tuple(c for c in COLUMNS if c not in ("mask_fraction", "source", "source_score"))  # before 2026-11-24


def old_csv(rows: list[dict]) -> str:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=OLD_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return out.getvalue()


def test_an_older_csv_report_is_resumed_under_todays_header(tmp_path):
    path = tmp_path / "r.csv"
    text = old_csv([row(0, notes="a, comma"), row(1, path="line\r\nbreak.png"), row(2)])
    path.write_bytes(text.encode()[:-20])  # its last row cut off by a killed scan
    existing = read_report(path, "csv")
    assert existing.columns == OLD_COLUMNS and [k[0] for k in existing.keys] == ["/data/img0.png", "line\r\nbreak.png"]
    stream, continued = open_for_resume(path, "csv", existing)
    with stream:
        writer = ReportWriter(stream, "csv", continued)
        writer.write(row(2, mask_fraction=0.25, source="sdxl", source_score=0.9))
        writer.close()
    parsed = list(csv.DictReader(io.StringIO(path.read_bytes().decode(), newline="")))
    assert path.read_bytes().decode().startswith(",".join(COLUMNS) + "\r\n")
    assert [r["path"] for r in parsed] == ["/data/img0.png", "line\r\nbreak.png", "/data/img2.png"]
    assert parsed[0]["notes"] == "a, comma" and parsed[0]["sha256"] == f"{0:064x}"  # old values where they were
    assert [(r["mask_fraction"], r["source"]) for r in parsed] == [("", ""), ("", ""), ("0.25", "sdxl")]
    assert read_report(path, "csv").columns == COLUMNS and not list(tmp_path.glob("*.upgrade"))


@pytest.mark.parametrize(
    "header",
    [
        ("member", "path", "sha256"),  # not in forensix's order
        ("path", "member", "sha256", "colour"),  # a column forensix never wrote
        ("path", "score", "verdict"),  # no sha256: its rows could not be matched
        ("path", "path", "member", "sha256"),
    ],
)
def test_csv_headers_of_no_forensix_version_are_refused(tmp_path, header):
    path = tmp_path / "r.csv"
    path.write_text(",".join(header) + "\r\n" + ",".join("x" * len(header)) + "\r\n", newline="")
    with pytest.raises(ReportError, match="header"):
        read_report(path, "csv")


# --- names that are not UTF-8, and cells a spreadsheet would run ---------------------------------

NOT_UTF8 = os.fsdecode(b"/data/bad\xff\xfe.png")  # what os.fsdecode gives for such a name: lone surrogates
LATIN1_MEMBER = os.fsdecode(b"caf\xe9.png")  # a tar member name in Latin-1, as tarfile decodes it
# Names whose text must stay unambiguous: real backslashes, text that looks like an escape, quotes.
TRICKY = [
    NOT_UTF8,
    os.fsdecode(b"back\\slash\xff.png"),
    "plain\\backslash.png",
    "looks\\xffescaped.png",
    "double\\\\backslash.png",
    "trailing\\",
    "'quoted.png",
    "'=quoted formula.png",
    "''-two quotes.png",
    "=cmd|' /C calc'!A0.png",
    "-1+1.png",
    "+sum.png",
    "@SUM(1+1).png",
    "\tTAB.png",
    "\rCR.png",
    "=" + os.fsdecode(b"\xff"),
]


def encoded_stream(path) -> io.TextIOWrapper:
    """A report file as the CLI opens it: strict UTF-8, so a name that is not UTF-8 can't slip through."""
    return open(path, "w", newline="", encoding="utf-8", errors="strict")


def write_strict_utf8(path: Path, fmt: str, rows: list[dict]) -> None:
    """A report of ``rows`` written to a strictly UTF-8 file, as a scan writes it."""
    with encoded_stream(path) as f:
        writer = ReportWriter(f, fmt)
        for r in rows:
            writer.write(r)
        writer.close()


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_names_that_are_not_utf8_are_written_readable_and_read_back_byte_for_byte(tmp_path, fmt):
    rows = [row(0), row(1, path=NOT_UTF8), row(2, path="/data/t.tar", member=LATIN1_MEMBER)]
    path = tmp_path / f"r.{fmt}"
    write_strict_utf8(path, fmt, rows)
    text = path.read_bytes().decode("utf-8")  # the report is UTF-8 text
    written = read_rows(text, fmt)
    assert [(r["path"], r["member"]) for r in written] == [
        ("/data/img0.png", ""),
        ("/data/bad\\xff\\xfe.png", ""),  # readable: the bytes that are not UTF-8 as \xHH
        ("/data/t.tar", "caf\\xe9.png"),
    ]
    if fmt != "csv":  # the exact bytes, for names whose text is not the name itself; ordinary rows unchanged
        assert "path_bytes" not in written[0] and "member_bytes" not in written[0]
        assert base64.b64decode(written[1]["path_bytes"]) == b"/data/bad\xff\xfe.png"
        assert base64.b64decode(written[2]["member_bytes"]) == b"caf\xe9.png" and "path_bytes" not in written[2]
    assert [k[:2] for k in read_report(path, fmt).keys] == [(r["path"], r["member"]) for r in rows]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_every_name_round_trips_through_a_report(tmp_path, fmt):
    rows = [row(i, path=name, member=name) for i, name in enumerate(TRICKY)]
    path = tmp_path / f"r.{fmt}"
    write_strict_utf8(path, fmt, rows)
    assert read_report(path, fmt).keys == [(r["path"], r["member"], r["sha256"]) for r in rows]


def test_csv_cells_a_spreadsheet_would_run_are_neutralised_and_json_stays_exact(tmp_path):
    formula = '=HYPERLINK("http://x","y").png'
    rows = [row(0, path="=cmd|' /C calc'!A0.png", member="-1+1.png", notes="@x", error="+1", source="\tx")]
    rows.append(row(1, path="'=already quoted.png", member="'plain quote.png", notes="\rx", model=formula))
    cells = list(csv.DictReader(io.StringIO(write_report(tmp_path / "r.csv", "csv", rows), newline="")))
    assert [cells[0][c] for c in ("path", "member", "notes", "error", "source")] == [
        "'=cmd|' /C calc'!A0.png",
        "'-1+1.png",
        "'@x",
        "'+1",
        "'\tx",
    ]
    # One more quote before quotes that lead to a trigger, so the rule can be undone; none before other quotes.
    assert [cells[1][c] for c in ("path", "member", "notes", "model")] == [
        "''=already quoted.png",
        "'plain quote.png",
        "'\rx",
        "'" + formula,
    ]
    assert all(not v.startswith(("=", "+", "-", "@", "\t", "\r")) for r in cells for v in r.values())
    assert cells[0]["score"] == str(rows[0]["score"])  # numbers are not text: left alone
    assert json.loads(write_report(tmp_path / "r.json", "json", rows)) == rows
    existing = read_report(tmp_path / "r.csv", "csv")
    assert existing.keys == [(r["path"], r["member"], r["sha256"]) for r in rows]
    assert existing.models == {"deeclip@0123456789ab", formula}


def read_rows(text: str, fmt: str) -> list[dict]:
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text, newline="")))
    if fmt == "json":
        return json.loads(text)
    return [json.loads(line) for line in text.split("\n") if line]
