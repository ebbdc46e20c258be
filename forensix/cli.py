"""The ``forensix`` command line: thin wrappers over the library."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

# Only light modules here: --help, --version and usage errors must not wait for torch (about 6 s
# on a small machine). Each command imports what it runs.
from . import __version__
from . import weights as W
from .download import DownloadError
from .limits import (
    DEFAULT_DECODE_TIMEOUT,
    DEFAULT_MAX_ARCHIVE_BYTES,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_RATIO,
    PREVIEW_SIZE,
    THUMB_SIZE,
    Limits,
)
from .pins import lock_path
from .ray_options import DEFAULT_SHARD_SIZE, is_sharded
from .text import plain
from .verdicts import parse_band

if TYPE_CHECKING:
    from .attributor import Attributor
    from .cache import PredictionCache
    from .calibrate import Rate
    from .datasets import Dataset
    from .html_report.views import Thumbnails
    from .inputs import InputSpec
    from .localizer import Localizer
    from .ray_options import RayOptions
    from .scan_report import ScanSummary

app = typer.Typer(help="Find AI-generated images: batch scanning with CLIP-based detectors.", no_args_is_help=True)
weights_app = typer.Typer(help="Known checkpoints: list, fetch, verify, pin, import.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
cache_app = typer.Typer(help="The prediction cache of eval, calibrate and scan --use-cache: info, clear.")
app.add_typer(cache_app, name="cache", no_args_is_help=True)

err = Console(stderr=True, soft_wrap=True)  # messages are lines for logs: never wrapped
out = Console()

# Options several commands share, spelled once.
ModelOpt = Annotated[str, typer.Option(help="A detector from 'forensix weights list'.")]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", help="A weights file instead (official .pth, forensix .safetensors or .onnx)."),
]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")]
ThresholdOpt = Annotated[
    float | None, typer.Option(min=0.0, max=1.0, help="Verdict 'fake' when score >= this (default: stored).")
]
BackendOpt = Annotated[
    str | None, typer.Option(help="torch | onnx (default: onnx for a .onnx --weights file, else torch)")
]
PrecisionOpt = Annotated[
    str, typer.Option(help="fp32 | bf16 | fp16 (autocast, LayerNorm and softmax in fp32; fp16 on CUDA only)")
]
UncertainOpt = Annotated[
    str | None,
    typer.Option(
        "--uncertain",
        metavar="LOW,HIGH",
        help="Verdict 'uncertain' for scores in [LOW, HIGH), 'fake' from HIGH (default: the weights' band).",
    ),
]
BatchOpt = Annotated[int, typer.Option(min=1, help="Images per forward pass.")]
WorkersOpt = Annotated[
    int | None, typer.Option(min=0, help="Decode workers (default: CPU count - 1; 0 = in this process).")
]
DecodeTimeoutOpt = Annotated[
    float,
    typer.Option(
        min=0.0, help="Seconds to decode one image, read its notes and preprocess it; then an error row. 0 = no limit."
    ),
]
ProgressOpt = Annotated[bool | None, typer.Option(help="Progress bar on stderr (default: when stderr is a terminal).")]


_CACHE_OPTION = typer.Option("--cache", help="Folder of the prediction cache (default: $FORENSIX_HOME/cache).")
_USE_CACHE_OPTION = typer.Option("--use-cache/--no-cache", help="Reuse and store logits by image and model.")


def _cache_at(cache_dir: Path | None) -> PredictionCache:
    from .cache import CACHE_FILE, PredictionCache
    from .home import cache_dir as home_cache_dir

    return PredictionCache((cache_dir or home_cache_dir()) / CACHE_FILE)


def _open_cache(cache_dir: Path | None, use: bool) -> PredictionCache | None:
    return _cache_at(cache_dir) if use else None


def _workers(workers: int | None) -> int:
    """--workers, else the default (imported late: the pipeline pulls in torch, --help should not)."""
    from .pipeline import default_workers

    return default_workers() if workers is None else workers


def _band(uncertain: str | None, threshold: float | None) -> tuple[float, float] | None:
    """--uncertain LOW,HIGH as numbers; refused beside --threshold, since HIGH is the threshold."""
    if uncertain is None:
        return None
    if threshold is not None:
        raise Fatal("--uncertain LOW,HIGH sets the threshold too (HIGH): leave out --threshold")
    return parse_band(uncertain)


def _watermarks(asked: bool | None) -> bool:
    """--watermarks, else on when forensix[watermark] is installed; asked for without it is an error."""
    from .watermarks import available

    installed = available()
    if asked and not installed:
        raise Fatal("--watermarks needs pip install 'forensix[watermark]' (the invisible-watermark library)")
    return installed if asked is None else asked


def _c2pa_trust(path: Path | None) -> str | None:
    """The --c2pa-trust file's text, checked by c2pa-python before the scan starts."""
    if path is None:
        return None
    from .metadata import check_c2pa_trust

    try:
        text = path.read_text(encoding="utf-8")
        check_c2pa_trust(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise Fatal(f"--c2pa-trust {path}: {getattr(e, 'strerror', None) or e}") from None
    return text


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


class Fatal(Exception):
    """A usage or fatal error: one line on stderr, exit code 2."""


@contextmanager
def fatal_errors() -> Iterator[None]:
    """Turn the library's expected failures into one clear line and exit code 2."""
    try:
        yield
    # ValueError covers the library's own: CheckpointError, ReportError, DatasetError, DecodeError.
    except (W.WeightsMissing, W.WeightsRefused, DownloadError, Fatal, KeyError, ValueError, OSError) as e:
        message = plain(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
        # escape: messages quote things like 'forensix[heif]' that rich would take for markup; plain:
        # a library's own terminal codes (torch's bold) must not reach a log, a pipe or even a terminal
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


EXIT_UNSCORED = 3  # --fail-on-fake: no image judged fake, but some could not be scored (error rows)
EXIT_UNCERTAIN = 4  # --fail-on-fake: no image judged fake, but some uncertain (unless --uncertain-passes)


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
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per file on stdout.")] = False,
) -> None:
    """What checkpoints forensix knows, which are present and pinned, where, and where they come from."""
    with fatal_errors():
        manifest = W.load_manifest()
        rows = []
        for entry in manifest.values():
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
                        "size": s.size or (s.pin.size if s.pin else None),
                        "pinned": s.pin.pinned if s.pin else "no",
                        "sha256": s.pin.sha256 if s.pin else None,
                        "source": f.source,
                        "origin": f.origin,
                        "license": entry.license,
                        "notes": entry.notes,
                    }
                )
        if as_json:
            for row in rows:
                typer.echo(json.dumps(row))
            return
        table = Table(title=f"weights in {W.weights_dir()}")
        for col in ("name", "kind", "role", "file", "present", "pinned", "from"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(
                r["name"],
                r["kind"],
                r["role"],
                r["file"],
                "yes" if r["present"] else "no",
                r["pinned"],
                escape(r["origin"]),
            )
        out.print(table)
        for entry in manifest.values():
            if entry.notes:
                out.print(f"{entry.name}: {escape(entry.notes)}", highlight=False)
        out.print(
            "pinned: manifest = its published sha256; first use / by hand = recorded in "
            f"{escape(str(lock_path()))} (docs/weights.md)",
            highlight=False,
        )


class _DownloadBars:
    """One progress bar per file downloaded, on stderr; drawn only once a download starts (so a fetch
    that fails at once prints its one error line and nothing else)."""

    def __init__(self) -> None:
        self.bar: Progress | None = None
        self.tasks: dict[str, int] = {}

    def report(self, file: str, done: int, total: int | None) -> None:
        if self.bar is None:
            columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
            self.bar = Progress(*columns, console=err, transient=True)
            self.bar.start()
        if file not in self.tasks:
            self.tasks[file] = self.bar.add_task(file, total=total)
        self.bar.update(self.tasks[file], completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@weights_app.command("fetch")
def weights_fetch(
    name: Annotated[str, typer.Argument(help="A name from 'forensix weights list'.")],
    url: Annotated[str | None, typer.Option(help="Download from this address instead (a mirror).")] = None,
) -> None:
    """Download a checkpoint into the weights folder, check it and pin it (resumes; see docs/weights.md)."""
    from .fetching import fetch

    with fatal_errors():
        bars = _DownloadBars()
        try:
            paths = fetch(name, url=url, progress=bars.report)
        finally:
            bars.close()
        entry = W.get_entry(name)
        for s in W.status(entry):
            how = s.pin.how() if s.pin else "not pinned"
            err.print(f"{name} {s.role}: {s.path} (sha256 {W.cached_sha256(paths[s.role])}, {how})", highlight=False)


@weights_app.command("verify")
def weights_verify(
    name: Annotated[str | None, typer.Argument(help="One entry; all present ones if omitted.")] = None,
) -> None:
    """Check present checkpoints against their pins, the manifest's or the weights lock's (exit 2 on a mismatch)."""
    with fatal_errors():
        entries = [W.get_entry(name)] if name else list(W.load_manifest().values())
        bad, checked = [], 0
        for entry in entries:
            for s in W.status(entry, check=True):
                if not s.present:
                    if name:
                        err.print(f"{entry.name} {s.role}: missing ({s.path}); forensix weights fetch {entry.name}")
                    continue
                checked += 1
                if s.verified is None:
                    state = f"NOT PINNED: 'forensix weights fetch {entry.name}' checks and pins it"
                else:
                    state = f"{'ok' if s.verified else 'SHA256 MISMATCH'} ({s.pin.how()})"  # type: ignore[union-attr]
                err.print(f"{entry.name} {s.role}: {state} {s.path}", highlight=False)
                if s.verified is not True:
                    bad.append(str(s.path))
        if bad:
            raise Fatal(f"not the pinned files, or not pinned: {', '.join(bad)}; loads refuse them (see above)")
        if not checked:
            raise Fatal(
                f"nothing to verify: no weights of {name or 'any known entry'} in {W.weights_dir()} "
                "(forensix weights list; forensix weights fetch NAME)"
            )


@weights_app.command("pin")
def weights_pin(
    name: Annotated[str, typer.Argument(help="A name from 'forensix weights list'.")],
    sha256: Annotated[str, typer.Argument(help="The sha256 (64 hex digits) its file must have.")],
    role: Annotated[str | None, typer.Option(help="Which of the entry's files (default: its only one).")] = None,
) -> None:
    """Pin a file by hand: record the sha256 it must have in the weights lock (docs/weights.md)."""
    with fatal_errors():
        f, digest, lock = W.pin_by_hand(name, sha256, role)
        err.print(f"{name} {f.role}: pinned by hand to sha256 {digest} in {lock}", highlight=False)


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


def _scan_spec(paths: list[str], from_lists: list[str], from_lists0: list[str], spool: Path) -> InputSpec:
    from .inputs import InputSpec

    if not paths and not from_lists and not from_lists0:
        raise Fatal("nothing to scan: give paths, '-' for paths on stdin, or --from-list FILE")
    if [*paths, *from_lists, *from_lists0].count("-") > 1:
        raise Fatal("stdin can be read only once: give '-' once, as a path, --from-list or --from-list0")
    spec = InputSpec.from_args(paths, from_lists, spool_dir=spool, from_lists0=from_lists0)
    spec.check_named_paths()  # before the model loads: a typo is exit 2 at once, not an error row
    return spec


@app.command()
def scan(
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Images, folders, zip/tar archives; '-' reads paths from stdin.", show_default=False),
    ] = None,
    out_path: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="Report file (default: JSON Lines on stdout); a folder (DIR/): a sharded report (--engine ray).",
        ),
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv | json | jsonl | shards (default: from --out).")
    ] = None,
    from_list: Annotated[
        list[str] | None, typer.Option("--from-list", help="A file listing paths, one per line ('-' = stdin).")
    ] = None,
    from_list0: Annotated[
        list[str] | None,
        typer.Option("--from-list0", help="A file listing paths separated by NUL bytes, as find -print0 writes."),
    ] = None,
    model: ModelOpt = "deeclip",
    weights_file: WeightsOpt = None,
    backend: BackendOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
    threshold: ThresholdOpt = None,
    metadata: Annotated[bool, typer.Option(help="Read EXIF/XMP/PNG-text/C2PA notes.")] = True,
    watermarks: Annotated[
        bool | None,
        typer.Option(
            "--watermarks/--no-watermarks",
            help="Read Stable Diffusion's invisible watermarks (forensix[watermark]; default: on when installed).",
        ),
    ] = None,
    c2pa_trust: Annotated[
        Path | None,
        typer.Option(
            "--c2pa-trust",
            help="Trust anchors (PEM) or a c2pa settings file (JSON): Content Credentials they sign are Trusted.",
        ),
    ] = None,
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
    decode_timeout: DecodeTimeoutOpt = DEFAULT_DECODE_TIMEOUT,
    meta_path: Annotated[
        Path | None, typer.Option("--meta", help="Where to write the scan's provenance (default: <out>.meta.json).")
    ] = None,
    progress: ProgressOpt = None,
    uncertain: UncertainOpt = None,
    fail_on_fake: Annotated[
        bool,
        typer.Option(
            help="Exit 1 when any image is judged fake, else 4 when any is uncertain, else 3 when any was not scored."
        ),
    ] = False,
    uncertain_fails: Annotated[
        bool,
        typer.Option(
            "--uncertain-fails/--uncertain-passes",
            help="With --fail-on-fake: whether an uncertain image fails the gate (exit 4) or passes it.",
        ),
    ] = True,
    compile_model: Annotated[
        bool, typer.Option("--compile", help="Run the model through torch.compile (compiles on the first batch).")
    ] = False,
    gpu_decode: Annotated[
        bool,
        typer.Option(
            help="Decode JPEGs in batches on the model's device (nvjpeg on CUDA) after a parity check with Pillow."
        ),
    ] = False,
    localizer_spec: Annotated[
        str | None,
        typer.Option("--localizer", help="A DeCLIP localizer (manifest name or file) drawing masks; needs --masks."),
    ] = None,
    masks_dir: Annotated[
        Path | None, typer.Option("--masks", help="Folder for the mask and overlay PNGs (with --localizer).")
    ] = None,
    masks_all: Annotated[bool, typer.Option(help="Masks for every image, not only those judged fake.")] = False,
    attributor_spec: Annotated[
        str | None,
        typer.Option("--attributor", help="A source-attribution model (manifest name or file): source, source_score."),
    ] = None,
    use_cache: Annotated[bool, _USE_CACHE_OPTION] = False,
    cache_dir: Annotated[Path | None, _CACHE_OPTION] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write the report as a page to look at, once the scan is done (needs --out)."),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="local: this machine's workers; ray: a Ray cluster (RAY_ADDRESS, --ray-address, else a local Ray; "
            "docs/scale.md)."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="--engine ray: the cluster to connect to (ray.init's address).")
    ] = None,
    actors: Annotated[
        int | None,
        typer.Option(
            min=1, help="--engine ray: scoring actors, each with its own copy of the models (default: one per GPU)."
        ),
    ] = None,
    gpus_per_actor: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="--engine ray: GPUs per scoring actor (0.5: two on a GPU; 0: CPU; default: 1 if it has GPUs)."
        ),
    ] = None,
    ray_block: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="--engine ray: inputs a Ray block, built by one task and scored by one actor in batches of "
            "--batch-size (default: 256; at least --batch-size).",
        ),
    ] = None,
    shard_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"A sharded report (--out DIR/): inputs a shard, rounded up to whole Ray blocks (default: "
            f"{DEFAULT_SHARD_SIZE}).",
        ),
    ] = None,
) -> None:
    """Score every image and write one row per input image (see docs/scan.md)."""
    import tempfile
    from functools import partial

    from .detector import load_detector
    from .progress import ScanProgress
    from .scan_report import write_report

    with tempfile.TemporaryDirectory(prefix="forensix-") as spool, fatal_errors():
        sharded = fmt == "shards" or (out_path is not None and is_sharded(out_path))
        if shard_size is not None and not sharded:
            raise Fatal("--shard-size: for a sharded report (--out DIR/)")
        if html is not None:
            if sharded:
                raise Fatal("--html makes its page from one report file, not a sharded report's folder")
            _check_page_path(html, Path(out_path) if out_path is not None else None)
        spec = _scan_spec(paths or [], from_list or [], from_list0 or [], Path(spool))
        read_marks = _watermarks(watermarks)
        trust = _c2pa_trust(c2pa_trust)
        ray = _ray_options(
            engine, ray_address, actors, gpus_per_actor, ray_block, workers, device, precision, compile_model
        )
        # On Ray the models run in the actors; here they are only read (what they are, for the rows), on the CPU.
        here = device if ray is None else "cpu"
        localizer = _load_localizer(
            localizer_spec, masks_dir, masks_all, here, _precision_here(precision, ray, localizer_spec)
        )
        attributor = _load_attributor(attributor_spec, here, _precision_here(precision, ray, attributor_spec))
        detector = load_detector(
            model,
            weights=weights_file,
            device=here,
            precision=_precision_here(precision, ray, str(weights_file or model), backend),
            threshold=threshold,
            compile=compile_model and ray is None,
            backend=backend,
            band=_band(uncertain, threshold),
        )
        summary = write_report(
            spec,
            detector,
            out_path if out_path is not None else _utf8_stdout(),
            resume,
            format=fmt,
            meta=meta_path or True,
            localizer=localizer,
            attributor=attributor,
            cache=_open_cache(cache_dir, use_cache),
            progress=partial(ScanProgress, err) if _show_progress(progress) else None,
            log=lambda message: err.print(message, highlight=False),
            batch_size=batch_size,
            workers=_workers(workers),
            limits=Limits(max_bytes=max_bytes, max_archive_bytes=max_archive_bytes, max_ratio=max_ratio),
            max_pixels=max_pixels,
            decode_timeout=decode_timeout,
            metadata=metadata,
            watermarks=read_marks,
            c2pa_trust=trust,
            masks_dir=masks_dir,
            masks_all=masks_all,
            gpu_decode=gpu_decode,
            ray=ray,
            shard_size=shard_size or DEFAULT_SHARD_SIZE,
        )
    _print_summary(summary)
    if summary.interrupted:
        if html is not None:
            err.print(f"no page written: the scan was interrupted (forensix report {out_path} --html {html} makes it)")
        raise typer.Exit(130)
    if html is not None and out_path is not None:
        with fatal_errors():
            limits = Limits(max_bytes=max_bytes, max_archive_bytes=max_archive_bytes, max_ratio=max_ratio)
            _write_page(
                Path(out_path), html, fmt, None, None, None, _workers(workers), max_pixels, decode_timeout, limits
            )
    if fail_on_fake and summary.stats.fake:
        raise typer.Exit(1)
    if fail_on_fake and uncertain_fails and summary.stats.uncertain:
        # Fails closed too: an image in the band was not shown to be real.
        raise typer.Exit(EXIT_UNCERTAIN)
    if fail_on_fake and summary.stats.errors:
        # A gate fails closed: an image that could not be scored was not shown to be real.
        raise typer.Exit(EXIT_UNSCORED)


def _ray_options(
    engine: str,
    address: str | None,
    actors: int | None,
    gpus_per_actor: float | None,
    block: int | None,
    workers: int | None,
    device: str,
    precision: str,
    compile_model: bool,
) -> RayOptions | None:
    """--engine ray's options (--workers: its record-building tasks at once); None for the local engine."""
    from .ray_options import RayOptions

    if engine not in ("local", "ray"):
        raise Fatal(f"--engine must be local or ray, got {engine!r}")
    if engine == "local":
        ray_only = (
            ("--ray-address", address),
            ("--actors", actors),
            ("--gpus-per-actor", gpus_per_actor),
            ("--ray-block", block),
        )
        given = [name for name, v in ray_only if v is not None]
        if given:
            raise Fatal(f"{', '.join(given)}: for --engine ray")
        return None
    block = block or RayOptions.block_size
    return RayOptions(address, actors, gpus_per_actor, workers or None, device, precision, compile_model, block)


def _precision_here(precision: str, ray: RayOptions | None, spec: str | None, backend: str | None = None) -> str:
    """The precision a model is opened at in this process: --precision, except for a torch model read
    for a Ray scan, opened on the CPU at fp32 (its actors run it at --precision). An ONNX file's was fixed
    at export: it is checked here."""
    from .loading import is_onnx_file

    if ray is None or spec is None or backend == "onnx" or is_onnx_file(spec):
        return precision
    return "fp32"


def _utf8_stdout() -> IO[str]:
    """stdout for a report: UTF-8 whatever the locale says, as report files are (and JSON must be)."""
    import codecs

    stream = sys.stdout
    encoding = getattr(stream, "encoding", None) or "ascii"
    if codecs.lookup(encoding).name != "utf-8" and hasattr(stream, "reconfigure"):
        stream.reconfigure(encoding="utf-8")
    return stream


def _load_localizer(
    spec: str | None, masks_dir: Path | None, masks_all: bool, device: str, precision: str
) -> Localizer | None:
    """The localizer, after checking that its options fit together (write_report checks the masks folder)."""
    if spec is None:
        if masks_dir is not None or masks_all:
            raise Fatal("--masks and --masks-all need a localizer: add --localizer NAME|PATH")
        return None
    if masks_dir is None:
        raise Fatal("--localizer draws masks: add --masks DIR (the folder for the mask PNGs)")
    from .localizer import load_localizer

    return load_localizer(spec, device=device, precision=precision)


def _load_attributor(spec: str | None, device: str, precision: str) -> Attributor | None:
    if spec is None:
        return None
    from .attributor import load_attributor

    return load_attributor(spec, device=device, precision=precision)


def _print_summary(summary: ScanSummary) -> None:
    """The scan's last words on stderr: what it found, how fast, and anything the user should know."""
    s, elapsed = summary.stats, summary.elapsed_s
    resumed = f", {s.resumed} already in the report" if s.resumed else ""
    masks = f", {s.masks} masks" if s.masks else ""
    cached = f", {s.cached} scores from the cache" if s.cached else ""
    uncertain = f"{s.uncertain} uncertain, " if s.uncertain else ""
    err.print(
        f"{'interrupted after' if summary.interrupted else 'scanned'} {s.images} images ({s.fake} fake, "
        f"{s.real} real, {uncertain}{s.errors} errors{masks}{cached}), "
        f"skipped {s.skipped_non_images} non-images{resumed}; "
        f"{elapsed:.1f}s, {s.images / max(elapsed, 1e-9):.1f} images/s",
        highlight=False,
    )
    for notice in summary.notices:
        err.print(f"note: {notice}", highlight=False)


@app.command("report")
def report_command(
    report: Annotated[Path, typer.Argument(help="A report forensix wrote (.csv, .json, .jsonl).", show_default=False)],
    html: Annotated[Path, typer.Option("--html", help="The page to write; its pictures go in NAME_files/ beside it.")],
    fmt: Annotated[str | None, typer.Option("--format", help="csv | json | jsonl (default: from the name).")] = None,
    root: Annotated[
        Path | None, typer.Option(help="Where the report's relative paths start (default: this folder).")
    ] = None,
    title: Annotated[str | None, typer.Option(help="The page's title (default: from the report's name).")] = None,
    thumb_size: Annotated[int, typer.Option(min=16, help="Longest edge of a card's picture, px.")] = THUMB_SIZE,
    preview_size: Annotated[
        int, typer.Option(min=0, help="Longest edge of the detail view's picture, px (0: none, the thumbnail).")
    ] = PREVIEW_SIZE,
    workers: WorkersOpt = None,
    max_pixels: Annotated[
        int | None, typer.Option(min=1, help="Largest image, in pixels (default: the scan's, from its .meta.json).")
    ] = None,
    decode_timeout: Annotated[
        float | None, typer.Option(min=0.0, help="Seconds to decode one image (default: the scan's). 0 = no limit.")
    ] = None,
) -> None:
    """A page of a report to look at: thumbnails, scores, notes, provenance, masks (see docs/report.md).

    The input limits are the scan's, read from the report's .meta.json (else a scan's defaults).
    """
    from .html_report.views import Thumbnails

    with fatal_errors():
        pictures = Thumbnails(thumb_size, preview_size)
        _write_page(report, html, fmt, root, title, pictures, _workers(workers), max_pixels, decode_timeout, None)


def _check_page_path(html: Path, report: Path | None) -> None:
    """Before a scan: that --html can be written at its end (a page made from --out, beside it or elsewhere)."""
    if report is None:
        raise Fatal("--html makes its page from the report file: add --out FILE")
    if html.resolve() == report.resolve():
        raise Fatal(f"--html {html}: that is the report; the page needs a name of its own")
    folder = html.resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise Fatal(f"--html {html}: cannot write in {folder}")


def _write_page(
    report: Path,
    html: Path,
    fmt: str | None,
    root: Path | None,
    title: str | None,
    thumbnails: Thumbnails | None,
    workers: int,
    max_pixels: int | None,
    decode_timeout: float | None,
    limits: Limits | None,
) -> None:
    """The HTML report, and on stderr what it holds and which images it could not find again."""
    from .html_report import write_html

    page = write_html(
        report,
        html,
        fmt=fmt,
        root=root,
        title=title,
        thumbnails=thumbnails,
        workers=workers,
        max_pixels=max_pixels,
        decode_timeout=decode_timeout,
        limits=limits,
    )
    err.print(
        f"wrote {escape(str(page.page))} ({page.rows} rows, {page.pictures} with pictures in "
        f"{escape(str(page.folder))}/; {page.bytes / 1e6:.1f} MB)",
        highlight=False,
    )
    if page.missing:
        err.print(f"{len(page.missing)} images could not be found again (their rows have no picture):", highlight=False)
        for name, why in page.missing[:MISSING_LISTED]:
            err.print(f"  {escape(plain(name))}: {escape(plain(why))}", highlight=False)
        if len(page.missing) > MISSING_LISTED:
            err.print(f"  and {len(page.missing) - MISSING_LISTED} more (each one's card says why)", highlight=False)


MISSING_LISTED = 10  # images found no more, listed by name on stderr


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


# --- eval and calibrate -------------------------------------------------------------------------

_DATA_HELP = "A dataset: UnivFD/GenImage/Dolos folder tree or a .csv/.jsonl list (see docs/evaluation.md)."


def _load_dataset(data: Path, layout: str, split: str, inverted_masks: bool) -> Dataset:
    """The dataset eval and calibrate read, summarised on stderr."""
    from .datasets import load_dataset

    dataset = load_dataset(data, layout, split, inverted_masks)
    s = dataset.summary()
    missing = f", {s['missing_masks']} images without a mask" if s["missing_masks"] else ""
    err.print(
        f"{data}: {dataset.layout} layout, {s['samples']} images ({s['real']} real, {s['fake']} fake) in "
        f"{len(dataset.subsets)} subsets; skipped {s['skipped_non_images']} non-images{missing}",
        highlight=False,
    )
    return dataset


@contextmanager
def _counting_progress(show: bool, total: int, what: str) -> Iterator[object]:
    """A progress bar on stderr; yields the callback that advances it by n images (None when not shown)."""
    if not show:
        yield None
        return
    from rich.progress import MofNCompleteColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(f"[bold]{what}", *columns, console=err, transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def _print_table(title: str, columns: tuple[str, ...], rows: list[list[str]], mean_last: bool = True) -> None:
    """A table on stdout whose last row (the mean) is set apart."""
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=mean_last and i == len(rows) - 2)
    if out.is_terminal:
        out.print(table)
        return
    from rich.measure import Measurement

    # A file or pipe gets 80 columns by default: wider lines beat truncated figures.
    width = max(out.width, Measurement.get(out, out.options.update_width(1000), table).maximum)
    Console(file=out.file, width=width).print(table)


def _rate(r: Rate) -> str:
    if r.value is None or r.low is None or r.high is None:
        return "- (no images)"
    return f"{100 * r.value:.2f}% [{100 * r.low:.2f}, {100 * r.high:.2f}] ({r.k} of {r.n})"


def _report_unreadable(errors: list[tuple[str, str]]) -> None:
    if errors:
        err.print(f"{len(errors)} images could not be read or scored, e.g.:", highlight=False)
        for path, message in errors[:5]:
            err.print(f"  {path}: {message}", highlight=False)


_LAYOUT_OPTION = typer.Option(help="auto | univfd | genimage | list | dolos")
_SPLIT_OPTION = typer.Option(help="GenImage split: train | val.")
_INVERTED_OPTION = typer.Option(help="Dolos masks: 0 = manipulated (as Dolos stores them).")


@app.command("eval")
def eval_command(
    data: Annotated[Path, typer.Option("--data", help=_DATA_HELP, show_default=False)],
    model: ModelOpt = "deeclip",
    weights_file: WeightsOpt = None,
    threshold: ThresholdOpt = None,
    uncertain: UncertainOpt = None,
    perturb: Annotated[
        list[str] | None,
        typer.Option(help="Also under KIND=V1,V2: jpeg=QUALITY, resize=FACTOR, blur=SIGMA (repeatable)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for metrics.json/.csv/.md, predictions.csv and plots.")
    ] = None,
    plots: Annotated[bool, typer.Option(help="ROC curves and score histograms per subset in --out.")] = True,
    embeddings: Annotated[
        bool, typer.Option(help="t-SNE maps of the embedding the head scores, per subset and for all, in --out.")
    ] = False,
    embeddings_max: Annotated[
        int, typer.Option(min=5, help="--embeddings: at most this many images per subset (a seeded sample).")
    ] = 1000,
    localizer_spec: Annotated[
        str | None,
        typer.Option("--localizer", help="A DeCLIP localizer (name or file): IoU/F1/AP on images with masks."),
    ] = None,
    attributor_spec: Annotated[
        str | None,
        typer.Option("--attributor", help="A source attributor (name or file): which-generator accuracy, confusion."),
    ] = None,
    layout: Annotated[str, _LAYOUT_OPTION] = "auto",
    split: Annotated[str, _SPLIT_OPTION] = "val",
    inverted_masks: Annotated[bool, _INVERTED_OPTION] = True,
    cache_dir: Annotated[Path | None, _CACHE_OPTION] = None,
    use_cache: Annotated[bool, _USE_CACHE_OPTION] = True,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
    decode_timeout: DecodeTimeoutOpt = DEFAULT_DECODE_TIMEOUT,
    progress: ProgressOpt = None,
) -> None:
    """Accuracy, AP and ROC-AUC per subset, clean and perturbed; tables on stdout (see docs/evaluation.md)."""
    from .detector import load_detector
    from .eval import (
        ATTRIBUTION_COLUMNS,
        EvalOptions,
        attribution_rows,
        confusion_rows,
        embedding_maps,
        evaluate,
        localization_rows,
        parse_perturbations,
        table_rows,
        write_embedding_maps,
        write_outputs,
    )
    from .eval.embeddings import MIN_POINTS, pick

    with fatal_errors():
        if embeddings and out_dir is None:
            raise Fatal("--embeddings writes its maps to --out: give the folder")
        perturbations = parse_perturbations(perturb or [])
        dataset = _load_dataset(data, layout, split, inverted_masks)
        detector = load_detector(
            model,
            weights=weights_file,
            device=device,
            precision=precision,
            threshold=threshold,
            band=_band(uncertain, threshold),
        )
        if embeddings and not detector.has_embeddings:
            raise Fatal("--embeddings needs the torch backend: an ONNX file outputs only the logit")
        cache = _open_cache(cache_dir, use_cache)
        localizer, masked = None, sum(s.mask is not None for s in dataset.samples)
        if localizer_spec is not None:
            from .localizer import load_localizer

            if not masked:
                raise Fatal("--localizer needs images with masks: a dataset in the dolos layout (images/ + masks/)")
            localizer = load_localizer(localizer_spec, device=device, precision=precision)
        attributor = _load_attributor(attributor_spec, device, precision)
        options = EvalOptions(batch_size=batch_size, workers=_workers(workers), decode_timeout=decode_timeout)
        show = _show_progress(progress)
        started = time.perf_counter()
        per_pass = len(dataset.samples) * (2 if attributor else 1) + (masked if localizer else 0)
        with _counting_progress(show, per_pass * len(perturbations), "eval") as advance:
            result = evaluate(dataset, detector, perturbations, options, cache, advance, localizer, attributor)
        columns = ("subset", "real", "fake", "unread", "real acc", "fake acc", "acc", "AP", "AUC", "best acc")
        columns += ("TPR@1%FPR", "ECE", "flipped", "best t")
        for t in result.tables:
            title = f"{result.model} · threshold {result.threshold:g} · {t.perturbation.name} (%)"
            _print_table(title, columns, table_rows(t))
            if t.localization is not None and localizer is not None:
                columns_loc = ("subset", "images", "unread", "IoU", "F1", "best F1", "pixel AP")
                _print_table(f"{localizer.name} · {t.perturbation.name} (%)", columns_loc, localization_rows(t))
            if t.attribution is not None and attributor is not None:
                title, rows = f"{attributor.name} · {t.perturbation.name}", attribution_rows(t.attribution)
                _print_table(f"{title} · attribution accuracy (%)", ATTRIBUTION_COLUMNS, rows)
                columns, rows = confusion_rows(t.attribution)
                _print_table(f"{title} · images by true and predicted class", columns, rows, mean_last=False)
        scored = sum(t.predictions.scored for t in result.tables)
        err.print(
            f"scored {scored} images, {len(dataset.samples) * len(perturbations) - scored} from the cache or "
            f"unreadable; {time.perf_counter() - started:.1f}s",
            highlight=False,
        )
        first = result.tables[0].predictions
        _report_unreadable([(s.path, e) for s, e in zip(dataset.samples, first.errors) if e])
        if out_dir is not None:
            written = write_outputs(result, out_dir, plots=plots)
            if embeddings:
                picked = sum(len(p) for p in pick(dataset.samples, embeddings_max, seed=0).values())
                with _counting_progress(show, picked, "embeddings") as advance:
                    maps = embedding_maps(dataset, detector, options, embeddings_max, seed=0, progress=advance)
                written += write_embedding_maps(maps, dataset, out_dir)
                mapped = {m.subset for m in maps}
                for name in (n for n in dataset.subsets if n not in mapped):
                    err.print(
                        f"no t-SNE map of {escape(name)}: fewer than {MIN_POINTS} of its images could be read",
                        highlight=False,
                    )
            err.print(f"wrote {len(written)} files to {out_dir}", highlight=False)


@app.command("calibrate")
def calibrate_command(
    data: Annotated[Path, typer.Option("--data", help=_DATA_HELP, show_default=False)],
    model: ModelOpt = "deeclip",
    weights_file: WeightsOpt = None,
    target_fpr: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Threshold for this false-positive rate on real images.")
    ] = None,
    balanced: Annotated[bool, typer.Option(help="Threshold for the best balanced accuracy instead.")] = False,
    target_fnr: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Also an uncertain band below the threshold: at most this share of fakes called real.",
        ),
    ] = None,
    temperature: Annotated[
        bool, typer.Option(help="Also fit temperature scaling: score = sigmoid(logit / T).")
    ] = False,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="The calibrated .safetensors to write (official weights: a sidecar, no --out)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the calibration; write nothing.")] = False,
    layout: Annotated[str, _LAYOUT_OPTION] = "auto",
    split: Annotated[str, _SPLIT_OPTION] = "val",
    cache_dir: Annotated[Path | None, _CACHE_OPTION] = None,
    use_cache: Annotated[bool, _USE_CACHE_OPTION] = True,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
    decode_timeout: DecodeTimeoutOpt = DEFAULT_DECODE_TIMEOUT,
    progress: ProgressOpt = None,
) -> None:
    """Choose the threshold (and temperature) on labelled data; scan then uses it by default."""
    import numpy as np

    from .calibrate import calibrate, calibration_record, store_calibration
    from .detector import load_detector
    from .eval import EvalOptions, predict

    with fatal_errors():
        if (target_fpr is None) == (not balanced):
            raise Fatal("give one of --target-fpr RATE or --balanced")
        dataset = _load_dataset(data, layout, split, inverted_masks=True)
        detector = load_detector(model, weights=weights_file, device=device, precision=precision)
        cache = _open_cache(cache_dir, use_cache)
        options = EvalOptions(batch_size=batch_size, workers=_workers(workers), decode_timeout=decode_timeout)
        show = _show_progress(progress)
        with _counting_progress(show, len(dataset.samples), "calibrate") as advance:
            predictions = predict(dataset.samples, detector, options=options, cache=cache, progress=advance)
        ok = predictions.ok
        labels = np.array([s.label for s in dataset.samples])[ok]
        result = calibrate(
            labels, predictions.logits[ok], target_fpr, temperature, unreadable=int((~ok).sum()), target_fnr=target_fnr
        )
        _report_unreadable([(s.path, e) for s, e in zip(dataset.samples, predictions.errors) if e])

        table = Table(title=f"{detector.name} calibrated on {data}")
        table.add_column("")
        table.add_column("on the calibration data")
        table.add_row("threshold", f"{result.threshold:.6g}")
        table.add_row("temperature", f"{result.temperature:.4g}")
        table.add_row("FPR (95% CI)", _rate(result.fpr))
        table.add_row("TPR (95% CI)", _rate(result.tpr))
        if result.band_low is not None:
            table.add_row("uncertain band", f"[{result.band_low:.6g}, {result.threshold:.6g})")
            table.add_row("FNR below the band (95% CI)", _rate(result.fnr))
            table.add_row("TNR below the band (95% CI)", _rate(result.tnr))
            table.add_row("images in the band (95% CI)", _rate(result.uncertain))
            table.add_row("accuracy outside it (95% CI)", _rate(result.decided_accuracy))
        out.print(table)
        if dry_run:
            err.print("dry run: nothing written", highlight=False)
            return
        written = store_calibration(detector, calibration_record(result, detector, dataset), out_path)
        band = (
            ""
            if result.band_low is None
            else f" and the uncertain band [{result.band_low:.6g}, {result.threshold:.6g})"
        )
        err.print(f"wrote {written}: 'forensix scan' now uses threshold {result.threshold:.6g}{band}", highlight=False)


# --- cache --------------------------------------------------------------------------------------


@cache_app.command("info")
def cache_info(
    cache_dir: Annotated[Path | None, _CACHE_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Where the cache is, its size, and how many logits it holds per model key and perturbation."""
    with fatal_errors():
        cache = _cache_at(cache_dir)
        counts = cache.counts()
        size = cache.size_bytes()
        if as_json:
            rows = [{"model": m, "perturbation": p, "logits": n} for m, p, n in counts]
            typer.echo(json.dumps({"path": str(cache.path), "bytes": size, "entries": rows}))
            return
        # The path on a line of its own: in a table's title rich would wrap it at the table's width.
        typer.echo(f"{cache.path}: {sum(n for *_, n in counts):,} logits, {size / 2**20:.1f} MiB")
        rows = [[m, p, f"{n:,}"] for m, p, n in counts]
        _print_table("logits per model key", ("model key", "perturbation", "logits"), rows, mean_last=False)


@cache_app.command("clear")
def cache_clear(
    cache_dir: Annotated[Path | None, _CACHE_OPTION] = None,
    model_key: Annotated[
        str, typer.Option("--model-key", help="Only the model keys starting with this (see 'forensix cache info').")
    ] = "",
) -> None:
    """Drop cached logits (all, or one model's) and compact the file."""
    with fatal_errors():
        cache = _cache_at(cache_dir)
        gone = cache.clear(model_key)
        err.print(f"{cache.path}: dropped {gone:,} logits, {len(cache):,} left", highlight=False)


# --- bench --------------------------------------------------------------------------------------


@app.command("export-onnx")
def export_onnx_command(
    out_path: Annotated[Path, typer.Option("--out", help="The .onnx file to write.")],
    model: Annotated[
        str | None, typer.Option(help="A detector from 'forensix weights list' (default: deeclip).")
    ] = None,
    weights_file: Annotated[
        Path | None, typer.Option("--weights", help="A detector's weights file instead (.pth or .safetensors).")
    ] = None,
    localizer: Annotated[
        str | None, typer.Option(help="Export this localizer (manifest name or file) instead of a detector.")
    ] = None,
    attributor: Annotated[
        str | None, typer.Option(help="Export this attributor (.safetensors or manifest name) instead of a detector.")
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32 | fp16 (LayerNorm, softmax and L2 norms stay fp32)")] = "fp32",
    opset: Annotated[int, typer.Option(min=17, max=20, help="ONNX opset.")] = 17,
    check: Annotated[
        bool, typer.Option(help="Compare onnxruntime with PyTorch on a test batch; write nothing if they differ.")
    ] = True,
) -> None:
    """Export a detector, a localizer or an attributor to ONNX: input the preprocessed batch (see docs/onnx.md)."""
    from .loading import load_weights
    from .onnx_export import export_onnx

    with fatal_errors():
        if sum(x is not None for x in (localizer, attributor, model or weights_file or None)) > 1:
            raise Fatal("one model per ONNX file: give --localizer, --attributor, or --model/--weights")
        if model and weights_file:
            raise Fatal("give --model or --weights, not both")
        if localizer is not None:
            loaded = load_weights(localizer, "localizer")
        elif attributor is not None:
            loaded = load_weights(attributor, "attributor")
        else:
            loaded = load_weights(weights_file or model or "deeclip", "detector")
        r = export_onnx(loaded, out_path, precision=precision, opset=opset, check=check)
        checked = (
            f"onnxruntime vs PyTorch on {r.check_inputs} inputs: max |Δ {r.compared}| {r.max_diff:.2g} "
            f"(tolerance {r.tolerance:g})"
            if r.max_diff is not None
            else "not checked (--no-check)"
        )
        err.print(
            f"wrote {out_path} ({loaded.name} {r.kind}, {r.precision}, opset {r.opset}); {checked}", highlight=False
        )


@app.command("bench")
def bench_command(
    model: ModelOpt = "deeclip",
    weights_file: WeightsOpt = None,
    backend: BackendOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
    images: Annotated[
        Path | None,
        typer.Option(
            exists=True, file_okay=False, help="A folder of images (default: synthetic 224-512 px JPEGs in a temp dir)."
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option(min=1, help="How many synthetic JPEGs (default: 4 batches, at least 64).")
    ] = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed passes per figure; the median is reported.")] = 3,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed passes before them.")] = 1,
    compile_model: Annotated[
        bool, typer.Option("--compile", help="Run the model through torch.compile (compiles on the first batch).")
    ] = False,
    gpu_decode: Annotated[
        bool, typer.Option(help="Also time JPEG decoding on the device (nvjpeg on CUDA), after a parity check.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Images/s of the model alone, of decode + preprocess, and of the whole scan (see docs/benchmarks.md)."""
    from .bench import BenchOptions, run_bench
    from .detector import load_detector

    with fatal_errors():
        detector = load_detector(
            model, weights=weights_file, device=device, precision=precision, compile=compile_model, backend=backend
        )
        options = BenchOptions(
            batch_size=batch_size,
            workers=_workers(workers),
            images=images,
            count=count,
            runs=runs,
            warmup=warmup,
            gpu_decode=gpu_decode,
        )
        result = run_bench(detector, options, log=lambda message: err.print(message, highlight=False))
        data = result.to_dict()
        if as_json:
            typer.echo(json.dumps(data))
            return
        table = Table(title=f"forensix bench: {detector.name}")
        table.add_column("")
        table.add_column("")
        for key, value in data.items():
            if key == "weights":
                value = f"{value['source']} (sha256 {value['sha256'][:12]})"
            elif isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            elif isinstance(value, float):
                value = f"{value:.3g}" if key.endswith("_diff") else f"{value:,.2f}"
            table.add_row(key, str(value))
        out.print(table)


@app.command("train")
def train_command(
    task: Annotated[
        str, typer.Option(help="detect (DeeCLIP) | localize (DeCLIP decoder) | attribute (CLIP source attribution)")
    ],
    data: Annotated[Path, typer.Option("--data", help=_DATA_HELP, show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for best/last checkpoints and the log.")],
    val: Annotated[
        Path | None, typer.Option(help="Validation set (default: GenImage's val split, else --val-fraction of --data).")
    ] = None,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, help="Held out of --data for validation.")] = 0.1,
    config: Annotated[
        str | None,
        typer.Option(
            help="Model config (default: deeclip-vit-l-14 / declip-vit-l-14-layer20-conv20 / attribution-vit-l-14)."
        ),
    ] = None,
    init: Annotated[
        str, typer.Option(help="openai (CLIP backbone, fresh heads) | random | a checkpoint file to continue from.")
    ] = "openai",
    epochs: Annotated[int | None, typer.Option(min=1, help="(default: 5; attribute 12)")] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Triplets (detect) or images (localize, attribute) per step.")
    ] = 8,
    lr: Annotated[
        float | None, typer.Option(help="AdamW learning rate (default: 5e-5 detect, 1e-3 localize, 5e-5 attribute).")
    ] = None,
    weight_decay: Annotated[float | None, typer.Option(min=0.0, help="(default: 0.01; attribute 0, i.e. Adam)")] = None,
    finetune: Annotated[
        str, typer.Option(help="attribute: lora (LoRA on q/k/v of both towers) | full (every weight).")
    ] = "lora",
    accumulate: Annotated[int, typer.Option(min=1, help="Batches per optimizer step (gradient accumulation).")] = 1,
    precision: Annotated[str, typer.Option(help="fp32 | bf16 | fp16 (autocast on CUDA)")] = "fp32",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N] (torchrun: one GPU per process)")] = "auto",
    workers: Annotated[int | None, typer.Option(min=0, help="Decode workers (default: CPU count - 1).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds initialisation, sampling and augmentation.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from --out's last checkpoint.")] = False,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many optimizer steps.")] = None,
    layout: Annotated[str, _LAYOUT_OPTION] = "auto",
    inverted_masks: Annotated[bool, _INVERTED_OPTION] = True,
    augment: Annotated[bool, typer.Option(help="Robustness augmentations (off: the DeeCLIP authors' recipe).")] = True,
    jpeg_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="P(JPEG re-compression, quality 30-100).")] = 0.5,
    blur_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="P(Gaussian blur, sigma 0-3).")] = 0.5,
    rescale_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="P(down/up-scaling by 0.5-1.5).")] = 0.2,
    crop_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="P(random crop keeping 80-100% a side).")] = 0.5,
    flip_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="P(horizontal flip).")] = 0.5,
    progress: ProgressOpt = None,
) -> None:
    """Train a detector, a localizer or an attributor; best and last checkpoints as safetensors (docs/training.md)."""
    from .train import RECIPES, TrainOptions, fit, prepare
    from .train.augment import Augment

    with fatal_errors():
        aug = Augment(jpeg_p=jpeg_p, blur_p=blur_p, rescale_p=rescale_p, crop_p=crop_p, flip_p=flip_p)
        recipe = RECIPES.get(task, RECIPES["detect"])  # an unknown task is prepare's to report
        options = TrainOptions(
            epochs=epochs if epochs is not None else int(recipe["epochs"]),
            batch_size=batch_size,
            lr=lr if lr is not None else recipe["lr"],
            weight_decay=weight_decay if weight_decay is not None else recipe["weight_decay"],
            accumulate=accumulate,
            precision=precision,
            device=device,
            workers=_workers(workers),
            seed=seed,
            max_steps=max_steps,
            augment=aug if augment else Augment.none(),
        )
        run = prepare(task, data, val, config, init, val_fraction, seed, layout, inverted_masks, finetune)
        counts = run.provenance["trained_on"]
        if int(os.environ.get("RANK", "0")):
            err.quiet = True  # under torchrun, rank 0 speaks for all
        err.print(
            f"{task}: {run.task.cfg.name} from {init}; train {counts['train_counts']}, val {counts['val_counts']}; "
            f"{sum(p.numel() for p in run.task.trainable()):,} trainable parameters",
            highlight=False,
        )
        show = _show_progress(progress)
        with _training_display(show) as report:
            done = fit(run.task, options, out_dir, run.provenance, resume=resume, report=report)
        best = ""
        if done.best is not None:
            best = ", best " + ", ".join(f"{k} {v:.4f}" for k, v in zip(run.task.best_keys, done.best))
        err.print(f"trained {done.epoch} epochs, {done.step} steps{best}; checkpoints in {out_dir}", highlight=False)


@contextmanager
def _training_display(show: bool) -> Iterator[Callable[[dict], None]]:
    """A status line with loss and images/s per step; one line per epoch's validation, always."""
    status = err.status("training", spinner="dots") if show else nullcontext()
    with status:

        def report(event: dict) -> None:
            if "validation" in event:
                v = event["validation"]
                shown = ", ".join(f"{k} {x:.4g}" if isinstance(x, float) else f"{k} {x}" for k, x in v.items())
                err.print(f"validation: {shown}", highlight=False)
            elif show:
                status.update(
                    f"epoch {event['epoch']} step {event['step']}: loss {event['loss']:.4f}, "
                    f"{event['img_per_s']:.1f} img/s"
                )

        yield report
