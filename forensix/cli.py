"""The ``forensix`` command line: thin wrappers over the library."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from . import __version__
from . import weights as W
from .download import DownloadError
from .imaging import DEFAULT_MAX_PIXELS
from .inputs import DEFAULT_MAX_ARCHIVE_BYTES, DEFAULT_MAX_BYTES, DEFAULT_MAX_RATIO, InputSpec, Limits
from .models.checkpoints import CheckpointError
from .report import ExistingReport, ReportError

if TYPE_CHECKING:
    from .localizer import Localizer
    from .pipeline import Scanner
    from .report import ReportWriter

app = typer.Typer(help="Find AI-generated images: batch scanning with CLIP-based detectors.", no_args_is_help=True)
weights_app = typer.Typer(help="Known checkpoints: list, fetch, verify, import.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

err = Console(stderr=True, soft_wrap=True)  # messages are lines for logs: never wrapped
out = Console()


class Fatal(Exception):
    """A usage or fatal error: one line on stderr, exit code 2."""


@contextmanager
def fatal_errors() -> Iterator[None]:
    """Turn the library's expected failures into one clear line and exit code 2."""
    try:
        yield
    except (W.WeightsMissing, CheckpointError, DownloadError, ReportError, Fatal, KeyError, ValueError, OSError) as e:
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
    file: Annotated[Path, typer.Argument(help="An official checkpoint (DeeCLIP or DeCLIP .pth).")],
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


def _scan_spec(paths: list[str], from_lists: list[str], spool: Path) -> InputSpec:
    if not paths and not from_lists:
        raise Fatal("nothing to scan: give paths, '-' for paths on stdin, or --from-list FILE")
    if sum(p == "-" for p in paths) + sum(f == "-" for f in from_lists) > 1:
        raise Fatal("stdin can be read only once: use '-' as a path or as --from-list, not both")
    return InputSpec.from_args(paths, from_lists, spool_dir=spool)


@app.command()
def scan(
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Images, folders, zip/tar archives; '-' reads paths from stdin.", show_default=False),
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report file (default: JSON Lines on stdout).")
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="csv | json | jsonl (default: from --out).")] = None,
    from_list: Annotated[
        list[str] | None, typer.Option("--from-list", help="A file listing paths, one per line ('-' = stdin).")
    ] = None,
    model: Annotated[str, typer.Option(help="A detector from 'forensix weights list'.")] = "deeclip",
    weights_file: Annotated[
        Path | None, typer.Option("--weights", help="A weights file instead (official .pth or forensix .safetensors).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    precision: Annotated[
        str, typer.Option(help="fp32 | bf16 | fp16 (autocast on CUDA; LayerNorm stays fp32)")
    ] = "fp32",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Decode workers (default: CPU count - 1; 0 = in this process).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Verdict 'fake' when score >= this (default: stored).")
    ] = None,
    metadata: Annotated[bool, typer.Option(help="Read EXIF/XMP/PNG-text/C2PA notes.")] = True,
    resume: Annotated[bool, typer.Option(help="Skip inputs already in --out and append to it.")] = False,
    max_pixels: Annotated[int, typer.Option(min=1, help="Largest image, in pixels (decompression bombs).")] = (
        DEFAULT_MAX_PIXELS
    ),
    max_bytes: Annotated[int, typer.Option(min=1, help="Largest file or archive member, in bytes.")] = (
        DEFAULT_MAX_BYTES
    ),
    max_archive_bytes: Annotated[
        int, typer.Option(min=1, help="Most uncompressed bytes read from one archive.")
    ] = DEFAULT_MAX_ARCHIVE_BYTES,
    max_ratio: Annotated[
        float, typer.Option(min=1.0, help="Highest compression ratio of a zip member (zip bombs).")
    ] = DEFAULT_MAX_RATIO,
    meta_path: Annotated[
        Path | None, typer.Option("--meta", help="Where to write the scan's provenance (default: <out>.meta.json).")
    ] = None,
    progress: Annotated[
        bool | None, typer.Option(help="Progress bar on stderr (default: when stderr is a terminal).")
    ] = None,
    fail_on_fake: Annotated[bool, typer.Option(help="Exit 1 when any image is judged fake.")] = False,
    localizer_spec: Annotated[
        str | None,
        typer.Option("--localizer", help="A DeCLIP localizer (manifest name or file) drawing masks; needs --masks."),
    ] = None,
    masks_dir: Annotated[
        Path | None, typer.Option("--masks", help="Folder for the mask and overlay PNGs (with --localizer).")
    ] = None,
    masks_all: Annotated[bool, typer.Option(help="Masks for every image, not only those judged fake.")] = False,
) -> None:
    """Score every image and write one row per input image (see docs/scan.md)."""
    import tempfile

    from .detector import load_detector
    from .pipeline import ResumeIndex, Scanner, ScanOptions, default_workers
    from .report import ReportWriter, format_for, open_for_resume, read_report

    with tempfile.TemporaryDirectory(prefix="forensix-") as spool, fatal_errors():
        report_format = format_for(str(out_path) if out_path else None, fmt)
        if resume and out_path is None:
            raise Fatal("--resume needs --out: the report to resume")
        spec = _scan_spec(paths or [], from_list or [], Path(spool))
        localizer = _load_localizer(localizer_spec, masks_dir, masks_all, device, precision)
        detector = load_detector(model, weights=weights_file, device=device, precision=precision, threshold=threshold)
        limits = Limits(max_bytes=max_bytes, max_archive_bytes=max_archive_bytes, max_ratio=max_ratio)
        options = ScanOptions(
            batch_size=batch_size,
            workers=default_workers() if workers is None else workers,
            limits=limits,
            max_pixels=max_pixels,
            metadata=metadata,
            masks_dir=masks_dir,
            masks_all=masks_all,
        )
        done, continued = None, None
        if resume and out_path is not None:
            existing = read_report(out_path, report_format)
            _check_resumable(existing, detector.name, detector.threshold, out_path)
            done = ResumeIndex.from_rows(existing.keys)
            stream, continued = open_for_resume(out_path, report_format, existing)
            if existing.rows:
                err.print(f"resuming {out_path}: {existing.rows} rows already there", highlight=False)
        else:
            stream = open(out_path, "w", newline="", encoding="utf-8") if out_path else sys.stdout
        scanner = Scanner(spec, detector, options, done, localizer=localizer)
        meta_file = meta_path or (out_path.with_name(out_path.name + ".meta.json") if out_path else None)
        if meta_file is not None:
            meta_file.write_text(json.dumps(scanner.provenance(), indent=2) + "\n", encoding="utf-8")
        show = sys.stderr.isatty() if progress is None else progress
        _run_scan(scanner, stream, ReportWriter(stream, report_format, continued), show, close=out_path is not None)
        if fail_on_fake and scanner.stats.fake:
            raise typer.Exit(1)


def _load_localizer(
    spec: str | None, masks_dir: Path | None, masks_all: bool, device: str, precision: str
) -> Localizer | None:
    """The localizer, after checking that its options fit together and the masks folder is writable."""
    if spec is None:
        if masks_dir is not None or masks_all:
            raise Fatal("--masks and --masks-all need a localizer: add --localizer NAME|PATH")
        return None
    if masks_dir is None:
        raise Fatal("--localizer draws masks: add --masks DIR (the folder for the mask PNGs)")
    from .localizer import load_localizer

    try:
        masks_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Fatal(f"--masks {masks_dir}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(masks_dir, os.W_OK | os.X_OK):
        raise Fatal(f"--masks {masks_dir}: the folder is not writable")
    return load_localizer(spec, device=device, precision=precision)


def _check_resumable(existing: ExistingReport, model: str, threshold: float, path: Path) -> None:
    """Resuming with another model or threshold would mix verdicts of two kinds in one report."""
    others = existing.models - {model}
    if others:
        raise Fatal(f"{path} was written with model {', '.join(sorted(others))}, not {model}; use a new --out")
    thresholds = existing.thresholds - {threshold}
    if thresholds:
        raise Fatal(
            f"{path} was written with threshold {min(thresholds)}, not {threshold}; pass --threshold or a new --out"
        )


def _run_scan(scanner: Scanner, stream: IO[str], writer: ReportWriter, show_progress: bool, close: bool) -> None:
    """Write every row; on Ctrl-C or SIGTERM finish the report (the JSON array stays valid) and exit 130."""
    from .progress import ScanProgress

    started = time.perf_counter()
    interrupted = False
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    display = ScanProgress(err, scanner.stats, scanner.count_entries) if show_progress else nullcontext()
    try:
        with display:
            for row in scanner:
                writer.write(row)
                if show_progress:
                    display.update()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        writer.close()
        if close:
            stream.close()
    s, elapsed = scanner.stats, time.perf_counter() - started
    resumed = f", {s.resumed} already in the report" if s.resumed else ""
    masks = f", {s.masks} masks" if s.masks else ""
    err.print(
        f"{'interrupted after' if interrupted else 'scanned'} {s.images} images ({s.fake} fake, {s.real} real, "
        f"{s.errors} errors{masks}), skipped {s.skipped_non_images} non-images{resumed}; {elapsed:.1f}s, "
        f"{s.images / max(elapsed, 1e-9):.1f} images/s",
        highlight=False,
    )
    if interrupted:
        raise typer.Exit(130)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
