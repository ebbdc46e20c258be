"""The ``forensix`` command line: thin wrappers over the library."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from . import __version__
from . import weights as W
from .download import DownloadError
from .imaging import DEFAULT_MAX_PIXELS
from .models.checkpoints import CheckpointError
from .pipeline import DEFAULT_MAX_BYTES

app = typer.Typer(help="Find AI-generated images: batch scanning with CLIP-based detectors.", no_args_is_help=True)
weights_app = typer.Typer(help="Known checkpoints: list, fetch, verify, import.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

err = Console(stderr=True)
out = Console()


class Fatal(Exception):
    """A usage or fatal error: one line on stderr, exit code 2."""


@contextmanager
def fatal_errors() -> Iterator[None]:
    """Turn the library's expected failures into one clear line and exit code 2."""
    try:
        yield
    except (W.WeightsMissing, CheckpointError, DownloadError, Fatal, KeyError, ValueError, OSError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"forensix {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


@weights_app.command("list")
def weights_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per entry on stdout.")] = False,
) -> None:
    """What checkpoints forensix knows, which are present, and where."""
    with fatal_errors():
        rows = []
        for entry in W.load_manifest().values():
            for s in W.status(entry):
                f = entry.file(s.role)
                rows.append(
                    {
                        "name": entry.name,
                        "kind": entry.kind,
                        "role": s.role,
                        "file": f.file,
                        "present": s.present,
                        "path": str(s.path),
                        "size": s.size or f.size,
                        "downloadable": f.url is not None,
                        "license": entry.license,
                    }
                )
        if as_json:
            for row in rows:
                typer.echo(json.dumps(row))
            return
        table = Table(title=f"weights in {W.weights_dir()}")
        for col in ("name", "kind", "role", "file", "present", "downloadable"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                r["name"],
                r["kind"],
                r["role"],
                r["file"],
                "yes" if r["present"] else "no",
                "yes" if r["downloadable"] else "no (see notes)",
            )
        out.print(table)


@weights_app.command("fetch")
def weights_fetch(
    name: Annotated[str, typer.Argument(help="A name from 'forensix weights list'.")],
    url: Annotated[str | None, typer.Option(help="Download from this address instead (a mirror).")] = None,
) -> None:
    """Download a checkpoint into the weights folder (resumes, checks sha256)."""
    with fatal_errors():
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err,
            transient=True,
        ) as bar:
            tasks: dict[str, int] = {}

            def report(file: str, done: int, total: int | None) -> None:
                if file not in tasks:
                    tasks[file] = bar.add_task(file, total=total)
                bar.update(tasks[file], completed=done, total=total)

            paths = W.fetch(name, url=url, progress=report)
        for role, path in paths.items():
            err.print(f"{name} {role}: {path} (sha256 {W.cached_sha256(path)})", highlight=False)


@weights_app.command("verify")
def weights_verify(
    name: Annotated[str | None, typer.Argument(help="One entry; all present ones if omitted.")] = None,
) -> None:
    """Check the sha256 of downloaded checkpoints against the manifest (exit 2 on a mismatch)."""
    with fatal_errors():
        entries = [W.get_entry(name)] if name else list(W.load_manifest().values())
        bad = []
        for entry in entries:
            for s in W.status(entry, check=True):
                if not s.present:
                    if name:
                        err.print(f"{entry.name} {s.role}: missing ({s.path}); forensix weights fetch {entry.name}")
                    continue
                state = {True: "ok", False: "SHA256 MISMATCH", None: "present (no published checksum)"}[s.verified]
                err.print(f"{entry.name} {s.role}: {state} {s.path}", highlight=False)
                if s.verified is False:
                    bad.append(str(s.path))
        if bad:
            raise Fatal(f"checksum mismatch: {', '.join(bad)}; delete and fetch again")


def _parse_layers(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise Fatal(f"--feature-layers takes comma-separated integers, got {text!r}") from None


@weights_app.command("import")
def weights_import(
    file: Annotated[Path, typer.Argument(help="An official checkpoint (DeeCLIP .pth).")],
    out_path: Annotated[Path, typer.Option("--out", help="The forensix .safetensors file to write.")],
    feature_layers: Annotated[
        str | None, typer.Option(help="Hidden states feeding the fuser, e.g. 1,2,3 (default: the paper's).")
    ] = None,
    keep_lora: Annotated[bool, typer.Option(help="Keep LoRA unmerged (to fine-tune further).")] = False,
    lora_alpha: Annotated[
        float, typer.Option(help="LoRA alpha the file was trained with (not stored in it; the release used 32).")
    ] = 32.0,
    threshold: Annotated[float | None, typer.Option(help="Decision threshold to store.")] = None,
) -> None:
    """Convert an official checkpoint into forensix's safetensors format."""
    from .convert import import_checkpoint

    with fatal_errors():
        cfg = import_checkpoint(
            file,
            out_path,
            feature_layers=_parse_layers(feature_layers),
            merge_lora=not keep_lora,
            lora_alpha=lora_alpha,
            threshold=threshold,
        )
        err.print(f"wrote {out_path} ({cfg.name}, threshold {cfg.threshold})", highlight=False)


@app.command()
def scan(
    paths: Annotated[list[str], typer.Argument(help="Image files and directories; '-' reads paths from stdin.")],
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report file (default: JSON Lines on stdout).")
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="csv | json | jsonl (default: from --out).")] = None,
    model: Annotated[str, typer.Option(help="A detector from 'forensix weights list'.")] = "deeclip",
    weights_file: Annotated[
        Path | None, typer.Option("--weights", help="A weights file instead (official .pth or forensix .safetensors).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32 | bf16 | fp16 (autocast on CUDA)")] = "fp32",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 16,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Verdict 'fake' when score >= this (default: stored).")
    ] = None,
    max_pixels: Annotated[int, typer.Option(min=1, help="Decompression-bomb limit per image.")] = DEFAULT_MAX_PIXELS,
    max_bytes: Annotated[int, typer.Option(min=1, help="Largest file read, in bytes.")] = DEFAULT_MAX_BYTES,
    fail_on_fake: Annotated[bool, typer.Option(help="Exit 1 when any image is judged fake.")] = False,
) -> None:
    """Score every image and write one row per input (see docs/scan.md)."""
    from .detector import load_detector
    from .inputs import InputStats, iter_inputs
    from .pipeline import ScanOptions
    from .pipeline import scan as run_scan
    from .report import ReportWriter, format_for

    with fatal_errors():
        report_format = format_for(str(out_path) if out_path else None, fmt)
        detector = load_detector(model, weights=weights_file, device=device, precision=precision, threshold=threshold)
        stream = open(out_path, "w", newline="", encoding="utf-8") if out_path else sys.stdout
    stats, counts = InputStats(), {"fake": 0, "real": 0, "error": 0}
    writer = ReportWriter(stream, report_format)
    started = time.perf_counter()
    try:
        options = ScanOptions(batch_size=batch_size, max_pixels=max_pixels, max_bytes=max_bytes)
        for row in run_scan(iter_inputs(paths, stats), detector, options):
            writer.write(row)
            counts[row["verdict"]] += 1
    finally:
        writer.close()  # also on Ctrl-C: the JSON array stays valid
        if out_path:
            stream.close()
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    err.print(
        f"scanned {total} ({counts['fake']} fake, {counts['real']} real, {counts['error']} errors), "
        f"skipped {stats.skipped_non_images} non-images, {elapsed:.1f}s, {total / max(elapsed, 1e-9):.1f} images/s",
        highlight=False,
    )
    if fail_on_fake and counts["fake"]:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
