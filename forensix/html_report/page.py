"""The page itself: a report's rows as the page's data, its summary and histogram, and the HTML.

Every string of a row is untrusted (file names, EXIF, prompts): the template escapes what it writes
(jinja2's autoescape), the rows travel as JSON in a ``<script type="application/json">`` block with
``<``, ``>`` and ``&`` escaped, and the page's script writes text only through ``textContent``. The
Content-Security-Policy lets the page load nothing but its own script and style (by hash) and
images from its own folder: no remote request, whatever a row holds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote

from ..metadata import GENERATION_KEYS
from ..report import name_text, printable
from ..watermarks import watermark_note
from .views import Found, picture_name

NOT_PROVENANCE = ("JPEG quality", "decoder warning")  # notes that say nothing of where an image came from
KEPT = ("i", "path", "member", "group", "verdict")  # a page row's fields that are there even when empty
BINS = 20  # the histogram's bars over [0, 1]
MAX_GROUPS = 100  # folders and archives listed in the summary (the largest)
VERDICT_ORDER = ("fake", "uncertain", "real", "error")  # the summary's columns (any other verdict follows)
# Where a text chunk's generation parameters are: the keys forensix.metadata keeps, in this order.
PARAMETER_KEYS = (*GENERATION_KEYS, "comment", "description")
_TEXT_LIMIT = 4000  # chars of one field kept for the page (a prompt, a ComfyUI workflow)


@dataclass(frozen=True)
class Summary:
    total: int
    verdicts: list[tuple[str, int]]  # (verdict, count), in VERDICT_ORDER then the others
    groups: list[tuple[str, list[int]]]  # (folder or archive, counts in ``verdicts`` order), largest first
    more_groups: int  # groups not listed
    thresholds: list[float]
    bands: list[tuple[float, float]]  # uncertain bands [low, high) of the rows that have one


def page_rows(rows: Sequence[dict[str, Any]], found: Found) -> list[dict[str, Any]]:
    """What the page's script shows of each row: plain values only (strings, numbers, booleans, lists),
    an empty one left out but for KEPT (the script fills them in: a page of 100,000 rows is half the size)."""
    return [_page_row(i, row, found) for i, row in enumerate(rows)]


def _page_row(i: int, row: dict[str, Any], found: Found) -> dict[str, Any]:
    # The names as the walk gave them find the pictures; the page shows them as the report writes them
    # (a name that is not UTF-8 with its bytes escaped: forensix.report.name_text).
    names = {key: str(row.get(key) or "") for key in ("path", "member")}
    path, member = (name_text(names[key]) for key in ("path", "member"))
    sha256 = _text(row.get("sha256"))
    provenance = provenance_fields(row.get("metadata"), _text(row.get("notes")), row.get("watermark"))
    out: dict[str, Any] = {
        "i": i,
        "path": path,
        "member": member,
        "group": group_of(path, member),
        "sha256": sha256,
        "verdict": _text(row.get("verdict")) or "error",
        "score": _number(row.get("score")),
        "threshold": _number(row.get("threshold")),
        "band_low": _number(row.get("band_low")),
        "model": _text(row.get("model")),
        "size": _size(row),
        "format": _text(row.get("format")),
        "notes": _text(row.get("notes")),
        "error": _text(row.get("error")),
        "source": _text(row.get("source")),
        "source_score": _number(row.get("source_score")),
        "mask_fraction": _number(row.get("mask_fraction")),
        "provenance": provenance,
        "has_provenance": has_provenance(provenance),
    }
    if out["verdict"] != "error":  # a scored row whose mask files failed still has its image
        out["picture"] = picture_name(sha256) if sha256 in found.pictures else None
        out["missing"] = found.why_missing(names["path"], names["member"], sha256)
        mask = found.masks.get(_text(row.get("mask")))
        out["mask_picture"] = picture_name(mask) if mask in found.pictures else None
    return {k: v for k, v in out.items() if k in KEPT or not (v is None or v is False or v == "" or v == [])}


def provenance_fields(metadata: Any, notes: str, watermark: Any = None) -> list[tuple[str, str]]:
    """(label, text) pairs a person reads: an invisible watermark, C2PA, generation parameters, XMP,
    EXIF camera and software, JPEG quality. A CSV report has no metadata: its notes then stand for them."""
    if not isinstance(metadata, dict):
        return [("Notes", notes)] if notes else []
    fields: list[tuple[str, Any]] = []
    if isinstance(watermark, dict) and watermark.get("found"):
        fields.append(("Invisible watermark", watermark_note(watermark).removeprefix("invisible watermark: ")))
    c2pa, text, exif = (_dict(metadata.get(k)) for k in ("c2pa", "png_text", "exif"))
    xmp = _dict(metadata.get("xmp"))
    if c2pa.get("present"):
        declared = "AI-generated" if c2pa.get("generated_by_ai") else ""
        if c2pa.get("edited_with_ai"):
            declared = ", ".join(filter(None, (declared, "edited with an AI tool")))
        fields += [
            ("C2PA", c2pa.get("validation_state") or "present"),
            ("C2PA declares", declared),
            ("C2PA source type", c2pa.get("digital_source_type_name")),
            (
                "C2PA failures",
                ", ".join(c2pa["validation_status"]) if isinstance(c2pa.get("validation_status"), list) else None,
            ),
            ("C2PA generator", c2pa.get("claim_generator")),
            ("C2PA signer", c2pa.get("signer")),
            ("C2PA issuer", c2pa.get("issuer")),
        ]
    elif c2pa.get("error"):
        fields.append(("C2PA", f"unreadable: {c2pa['error']}"))
    for where, keys in ((text, PARAMETER_KEYS), (exif, ("user_comment",))):
        if where.get("generation_parameters"):
            fields.append(("Generator", where.get("generator") or "unknown"))
            fields.append(("Generation parameters", _first_of(where, keys)))
    fields += [
        ("XMP source type", xmp.get("digital_source_type_name")),
        ("Creator tool", xmp.get("creator_tool")),
        ("Camera", " ".join(str(exif[k]) for k in ("make", "model") if exif.get(k))),
        ("Software", exif.get("software")),
        ("Taken", exif.get("date_taken")),
        ("JPEG quality", metadata.get("jpeg_quality")),
    ]
    return [(label, _text(value)) for label, value in fields if value not in (None, "", False)]


def has_provenance(fields: list[tuple[str, str]]) -> bool:
    """Whether anything says where the image came from: not a JPEG quality or a decoder's warning alone."""
    if fields[:1] and fields[0][0] == "Notes":  # a CSV's notes: their parts
        return any(not part.startswith(NOT_PROVENANCE) for part in fields[0][1].split("; "))
    return any(label != "JPEG quality" for label, _ in fields)


def group_of(path: str, member: str) -> str:
    """What a row is counted under in the summary: its archive, or its file's folder."""
    return path if member else (os.path.dirname(path) or ".")


def summarise(rows: Sequence[dict[str, Any]]) -> Summary:
    """Counts by verdict, and by folder or archive, of the page's rows."""
    by_verdict = Counter(row["verdict"] for row in rows)
    verdicts = sorted(by_verdict, key=_verdict_rank)
    groups: dict[str, Counter[str]] = {}
    for row in rows:
        groups.setdefault(row["group"], Counter())[row["verdict"]] += 1
    largest = sorted(groups.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    thresholds = sorted({row["threshold"] for row in rows if row.get("threshold") is not None})
    bands = sorted(
        {
            (row["band_low"], row["threshold"])
            for row in rows
            if row.get("band_low") is not None and row.get("threshold") is not None
        }
    )
    return Summary(
        total=len(rows),
        verdicts=[(v, by_verdict[v]) for v in verdicts],
        groups=[(name, [counts[v] for v in verdicts]) for name, counts in largest[:MAX_GROUPS]],
        more_groups=max(0, len(largest) - MAX_GROUPS),
        thresholds=thresholds,
        bands=bands,
    )


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    verdict: str
    count: int
    low: float  # the scores of its bin: [low, high)
    high: float


@dataclass(frozen=True)
class Histogram:
    """The scores in BINS bins over [0, 1], stacked by verdict, and the thresholds: SVG coordinates."""

    width: int
    height: int
    bars: list[Bar]
    thresholds: list[tuple[float, float]]  # (x, threshold)
    bands: list[tuple[float, float]]  # (x, width) of each uncertain band
    peak: int  # the tallest bin's count


def histogram(
    rows: Sequence[dict[str, Any]],
    thresholds: Sequence[float],
    bands: Sequence[tuple[float, float]] = (),
    width: int = 640,
    height: int = 120,
) -> Histogram:
    counts: list[Counter[str]] = [Counter() for _ in range(BINS)]
    for row in rows:
        score = row.get("score")
        if score is not None and 0.0 <= score <= 1.0:
            counts[min(int(score * BINS), BINS - 1)][row["verdict"]] += 1
    peak = max((sum(c.values()) for c in counts), default=0)
    step = width / BINS
    bars = []
    for b, c in enumerate(counts):
        y = float(height)
        for verdict in sorted(c, key=_verdict_rank):
            h = height * c[verdict] / peak
            y -= h
            x, w = round(b * step + 1, 2), round(step - 2, 2)
            bars.append(Bar(x, round(y, 2), w, round(h, 2), verdict, c[verdict], b / BINS, (b + 1) / BINS))
    lines = [(round(width * t, 2), t) for t in thresholds if 0.0 <= t <= 1.0]
    shaded = [(round(width * low, 2), round(width * (high - low), 2)) for low, high in bands]
    return Histogram(width, height, bars, lines, shaded, peak)


def _verdict_rank(verdict: str) -> tuple[int, str]:
    return (VERDICT_ORDER.index(verdict) if verdict in VERDICT_ORDER else len(VERDICT_ORDER), verdict)


def render(
    rows: list[dict[str, Any]], summary: Summary, title: str, source: str, made: str, files: str, previews: bool
) -> str:
    """The whole page: the template filled, its script and style hashed into its Content-Security-Policy.

    ``files`` is the pictures folder as a URL relative to the page; ``previews`` whether it holds previews.
    """
    import jinja2

    here = resources.files(__package__)
    script, style = (here.joinpath(name).read_text(encoding="utf-8") for name in ("page.js", "page.css"))
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = env.from_string(here.joinpath("page.html.j2").read_text(encoding="utf-8"))
    return template.render(
        title=title,
        source=source,
        made=made,
        summary=summary,
        histogram=histogram(rows, summary.thresholds, summary.bands),
        data=json_for_script({"files": files, "previews": previews, "rows": rows}),
        script=script,
        style=style,
        script_hash=csp_hash(script),
        style_hash=csp_hash(style),
    )


def json_for_script(value: Any) -> str:
    """JSON that can sit inside a <script> element: no '<', '>' or '&' (so no '</script>'), no U+2028/9."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for c in "<>&\u2028\u2029":
        text = text.replace(c, f"\\u{ord(c):04x}")
    return text


def csp_hash(text: str) -> str:
    """The CSP source that allows exactly this inline script or style."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def files_url_of(folder_name: str) -> str:
    """The picture folder's name as a relative URL (any character of a file name, percent-encoded)."""
    return quote(folder_name, safe="")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        text = printable(value)  # no lone surrogate reaches the page's UTF-8
    else:
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "…"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _size(row: dict[str, Any]) -> str:
    w, h = row.get("width"), row.get("height")
    return f"{w}×{h}" if isinstance(w, int) and isinstance(h, int) else ""


def _first_of(found: dict[str, Any], keys: Sequence[str]) -> Any:
    """The value under the first of ``keys`` (any case) that ``found`` has."""
    lower = {k.lower(): v for k, v in found.items() if isinstance(k, str) and v}
    return next((lower[k] for k in keys if k in lower), None)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
