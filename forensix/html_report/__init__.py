"""The HTML report: one page of a scan's report for people to look at, with its pictures beside it.

:func:`write_html` reads a report (CSV, JSON or JSON Lines: :func:`forensix.report.read_rows`),
makes a thumbnail and a preview of each image it can find again where the scan read it
(:mod:`.views`), and writes the page (:mod:`.page`): ``OUT.html`` and the folder ``OUT_files/``
beside it. The two travel together (a USB stick) and the page loads nothing from anywhere else.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..files import replacing
from ..imaging import DEFAULT_MAX_PIXELS
from ..inputs import Limits
from ..limits import DEFAULT_DECODE_TIMEOUT
from ..report import read_rows
from ..scan_report import META_SUFFIX
from .page import files_url_of, page_rows, render, summarise
from .views import Thumbnails, make_views


@dataclass
class PageSummary:
    """What :func:`write_html` wrote."""

    page: Path
    folder: Path  # the pictures
    rows: int
    pictures: int  # rows shown with their picture
    missing: list[tuple[str, str]] = field(default_factory=list)  # (name, why) of images found no more
    bytes: int = 0  # of the page and its pictures


def pictures_folder(page: Path) -> Path:
    """Where a page's pictures go: ``report.html`` → ``report_files/`` beside it (as browsers save a page)."""
    return page.with_name(f"{page.stem if page.suffix else page.name}_files")


def write_html(
    report: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    root: str | os.PathLike[str] | None = None,
    title: str | None = None,
    thumbnails: Thumbnails | None = None,
    workers: int = 0,
    limits: Limits | None = None,
    max_pixels: int | None = None,
    decode_timeout: float | None = None,
) -> PageSummary:
    """The page of ``report`` at ``out``, its pictures in :func:`pictures_folder`.

    A row's relative path is taken from ``root`` (default: the current folder, where a scan run
    from here read it). ``workers`` decode in processes of their own, as a scan's do. The input limits,
    ``max_pixels`` and ``decode_timeout`` default to those the scan ran with (its ``.meta.json``), else
    to a scan's defaults. The page is
    written whole (a page that was there stays until the new one replaces it); pictures a former
    run made are kept and not made again. Raises OSError or :class:`forensix.report.ReportError`
    when the report cannot be read.
    """
    page = Path(out)
    sidecar = Path(f"{os.fspath(report)}{META_SUFFIX}")
    if page.resolve() in (Path(report).resolve(), sidecar.resolve()):
        raise ValueError(f"--html {page}: that is the report (or its sidecar); the page needs a name of its own")
    rows = read_rows(report, fmt)
    thumbnails = thumbnails or Thumbnails()
    scanned = _scan_settings(sidecar)
    limits = limits or Limits(**{k: v for k, v in scanned.items() if k in LIMIT_FIELDS})
    max_pixels = max_pixels if max_pixels is not None else scanned.get("max_pixels", DEFAULT_MAX_PIXELS)
    decode_timeout = (
        decode_timeout if decode_timeout is not None else scanned.get("decode_timeout", DEFAULT_DECODE_TIMEOUT)
    )
    folder = pictures_folder(page)
    found = make_views(
        rows,
        folder,
        os.fspath(root) if root is not None else "",
        thumbnails,
        workers=workers,
        limits=limits,
        max_pixels=max_pixels,
        decode_timeout=decode_timeout,
    )
    shown = page_rows(rows, found)
    html = render(
        shown,
        summarise(shown),
        title=title or f"forensix report: {Path(report).name}",
        source=os.fspath(report),
        made=time.strftime("%Y-%m-%d %H:%M %Z"),
        files=files_url_of(folder.name),
        previews=thumbnails.preview > 0,
    )
    with replacing(page) as tmp:
        tmp.write_text(html, encoding="utf-8")
    pictures = sum(1 for r in shown if "picture" in r)
    missing = [(_name(r), r["missing"]) for r in shown if r.get("missing")]
    size = page.stat().st_size + sum(p.stat().st_size for p in folder.rglob("*.jpg"))
    return PageSummary(page, folder, len(shown), pictures, missing, size)


LIMIT_FIELDS = {f.name for f in fields(Limits)}


def _scan_settings(sidecar: Path) -> dict[str, Any]:
    """The limits a scan recorded in its ``.meta.json`` (none when it has none, or is not readable)."""
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8")).get("limits")
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in recorded.items() if isinstance(v, (int, float))} if isinstance(recorded, dict) else {}


def _name(row: dict) -> str:
    return f"{row['path']}:{row['member']}" if row["member"] else row["path"]
