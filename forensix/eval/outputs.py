"""An eval's outputs: metrics.json, metrics.csv, metrics.md, predictions.csv, and rows for the terminal."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..report import csv_cell, name_text, printable
from .detection import METRIC_FIELDS
from .plots import write_plots
from .predict import scores_from_logits
from .tables import LOCALIZATION_FIELDS, AttributionTable, EvalResult, PerturbationResult

COLUMNS = ("subset", "real", "fake", "unreadable", *METRIC_FIELDS, "best_threshold")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def table_rows(result: PerturbationResult) -> list[list[str]]:
    """Rows for people (terminal, markdown): counts, then metrics in percent."""
    rows = []
    for r in [*result.subsets, result.mean]:
        best = "-" if r.best_threshold is None else f"{r.best_threshold:.4g}"
        counts = [str(r.real), str(r.fake), str(r.unreadable)]
        rows.append([r.subset, *counts, *(percent(getattr(r, m)) for m in METRIC_FIELDS), best])
    return rows


LOCALIZATION_COLUMNS = ("subset", "images", "unreadable", *LOCALIZATION_FIELDS)


def localization_rows(result: PerturbationResult) -> list[list[str]]:
    rows = []
    for r in [*(result.localization or []), *([result.localization_mean] if result.localization_mean else [])]:
        values = (percent(getattr(r, m)) for m in LOCALIZATION_FIELDS)
        rows.append([r.subset, str(r.images), str(r.unreadable), *values])
    return rows


ATTRIBUTION_COLUMNS = ("subset", "images", "unreadable", "unknown", "acc")


def attribution_rows(table: AttributionTable) -> list[list[str]]:
    return [
        [r.subset, str(r.images), str(r.unreadable), str(r.unknown), percent(r.acc)]
        for r in [*table.subsets, table.mean]
    ]


def confusion_rows(table: AttributionTable) -> tuple[tuple[str, ...], list[list[str]]]:
    """Columns (true class, then each predicted class) and one row of counts per true class."""
    predicted = next(iter(table.confusion.values()), {})
    return ("true class", *predicted), [[t, *map(str, row.values())] for t, row in table.confusion.items()]


def write_outputs(result: EvalResult, out_dir: Path, plots: bool = True) -> list[Path]:
    """metrics.json, metrics.csv, metrics.md, predictions.csv and (with ``plots``) PNGs in ``out_dir``."""
    import csv
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "metrics.json", out_dir / "metrics.csv", out_dir / "metrics.md", out_dir / "predictions.csv"]
    data = result.to_dict()
    written[0].write_text(json.dumps(_finite(data), indent=2) + "\n", encoding="utf-8")
    with open(written[1], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["perturbation", *COLUMNS])
        for t in result.tables:
            for r in [*t.subsets, t.mean]:
                w.writerow([t.perturbation.name, *(cell(getattr(r, c)) for c in COLUMNS)])
    band = "" if result.band_low is None else f", uncertain band [{result.band_low:g}, {result.threshold:g})"
    lines = [
        f"# {result.model} on {result.dataset.root}",
        "",
        f"Threshold {result.threshold:g}{band}; metrics in %.",
        "",
    ]
    for t in result.tables:
        lines += [f"## {t.perturbation.name}", "", "| " + " | ".join(COLUMNS) + " |"]
        lines.append("|" + "---|" * len(COLUMNS))
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(t)]
        lines.append("")
        if t.localization is not None:
            lines += ["| " + " | ".join(LOCALIZATION_COLUMNS) + " |", "|" + "---|" * len(LOCALIZATION_COLUMNS)]
            lines += ["| " + " | ".join(row) + " |" for row in localization_rows(t)]
            lines.append("")
        if t.attribution is not None:
            lines += ["| " + " | ".join(ATTRIBUTION_COLUMNS) + " |", "|" + "---|" * len(ATTRIBUTION_COLUMNS)]
            lines += ["| " + " | ".join(row) + " |" for row in attribution_rows(t.attribution)]
            columns, rows = confusion_rows(t.attribution)
            lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
    written[2].write_text("\n".join(lines), encoding="utf-8")
    with open(written[3], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "subset", "label", "perturbation", "sha256", "logit", "score", "error"])
        for t in result.tables:
            p = t.predictions
            scores = scores_from_logits(np.nan_to_num(p.logits), result.temperature)
            for i, s in enumerate(result.dataset.samples):
                logit, score = (repr(float(p.logits[i])), repr(float(scores[i]))) if p.ok[i] else ("", "")
                path, subset, error = cell(s.path), cell(s.subset), csv_cell(printable(p.errors[i]))
                w.writerow([path, subset, s.label, t.perturbation.name, p.sha256[i], logit, score, error])
    if plots:
        written += write_plots(result, out_dir)
    return written


def cell(value: Any) -> Any:
    """A CSV cell as a scan's report writes it: any file or folder name, never a formula (docs/scan.md)."""
    if value is None:
        return ""
    return csv_cell(name_text(value)) if isinstance(value, str) else value


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
