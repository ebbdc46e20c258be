"""`--engine ray`: the scan's stages on a local Ray the tests start, against the local engine's rows.

One Ray (4 logical CPUs on the 2 cores: up to two actors and two record tasks) for the module; its workers
run tests/ray_hooks.py, whose decoder crashes on a marked file as a decoder's bug would on a
hostile one. The rows, the CLI and the options are in the default tier; the localizer and
attributor, a killed actor, an interrupted scan resumed and the driver's memory in the slow one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import signal
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from conftest import assert_same_rows, decoder_crashing_on, mixed_inputs, png_bytes, random_image
from ray_hooks import LISTER_CRASH_MARK, ONCE_CRASH_MARK
from tiny_models import tiny_attributor_file, tiny_localizer_file
from typer.testing import CliRunner

import forensix
from forensix.cli import app
from forensix.inputs import InputSpec
from forensix.pipeline import Scanner, ScanOptions
from forensix.ray_options import Plan, RayMissing, RayOptions, require_ray
from forensix.report import read_rows
from forensix.shards import read_index, shard_rows
from forensix.stages import records

ray = pytest.importorskip("ray")
TESTS = Path(__file__).parent
CRASHED = "cannot decode image: the process reading it was killed by SIGSEGV"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=4,  # logical: two scoring actors and two record tasks at once, so the order is Ray's to keep
        include_dashboard=False,
        logging_level="ERROR",
        runtime_env={
            "env_vars": {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])},
            "worker_process_setup_hook": "ray_hooks.crash_on_marked_files",
        },
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> InputSpec:
    return mixed_inputs(tmp_path_factory.mktemp("ray-inputs"))


@pytest.fixture(scope="module")
def detector(small_input_weights):
    return forensix.load_detector(weights=small_input_weights, device="cpu")


@pytest.fixture
def crashing_here(monkeypatch, inputs):
    """The local engine's workers crash on the marked file too (forked: they inherit the patch)."""
    bomb = next(p for p in Path(inputs.sources[0][1]).iterdir() if p.name == "bomb.png").read_bytes()
    monkeypatch.setattr(records, "decode_image", decoder_crashing_on(bomb, records.decode_image))


def local_rows(inputs, detector, **kw) -> list[dict]:
    return list(Scanner(inputs, detector, ScanOptions(workers=1, batch_size=4, **kw)))


def local_report(inputs, detector, path: Path, **kw) -> list[dict]:
    """The local engine's report, read back (as a Ray report, or a sharded report's rows, are)."""
    forensix.write_report(inputs, detector, path, workers=1, batch_size=4, **kw)
    return read_rows(path)


def ray_scan(inputs, detector, **kw) -> Scanner:
    return Scanner(inputs, detector, ScanOptions(batch_size=4, ray=RayOptions(block_size=4), **kw))


RAY = RayOptions(block_size=4)  # blocks of one model batch: many blocks over the tests' few inputs


def test_rows_are_the_local_engines_over_folders_archives_lists_and_hostile_files(
    local_ray, inputs, detector, crashing_here
):
    want = local_rows(inputs, detector)
    # Ray blocks of two model batches, over two actors and two record tasks
    options = ScanOptions(batch_size=4, ray=RayOptions(actors=2, build_tasks=2, block_size=8))
    scanner = Scanner(inputs, detector, options)
    got = list(scanner)
    by_name = {Path(r["path"]).name + r["member"]: r for r in got}
    assert by_name["bomb.png"]["error"] == CRASHED and by_name["bomb.png"]["sha256"]
    assert by_name["gone.png"]["verdict"] == "error" and by_name["cut.png"]["verdict"] == "error"
    members = {f"z/{i}.png" for i in range(4)} | {f"t/{i}.png" for i in range(4)}
    assert {r["member"] for r in got if r["member"]} == members
    scores = [r["score"] for r in got if r["score"] is not None]
    assert len(scores) == len(got) - 3 and max(scores) - min(scores) > 0.01  # the tolerance means something
    # skipped: notes.txt, empty.jpg, the zip's readme.txt
    assert scanner.stats.worker_deaths == 1 and scanner.stats.skipped_non_images == 3
    assert any("no row is lost" in n for n in scanner.notices)
    assert_same_rows(got, want)


def shard_folder(folder: Path) -> list[Path]:
    """A folder of input shards (plain, gzip and xz tars, a zip, a damaged tar.gz, one whose listing
    crashes its process every time, one whose listing crashes once, midway), each of a few images and a
    text file; its files in walk order."""
    folder.mkdir()
    kinds = ["w", "w:gz", "zip", "w:gz", "w:xz", "w"]
    for k, kind in enumerate(kinds):
        name = f"{k:03d}" + {1: "-" + ONCE_CRASH_MARK, 3: "-" + LISTER_CRASH_MARK}.get(k, "")
        members = {f"s{k}/{i}.png": png_bytes(random_image(30 + 3 * i, 20 + k, seed=10 * k + i)) for i in range(5)}
        members[f"s{k}/notes.txt"] = b"not an image"
        if kind == "zip":
            with zipfile.ZipFile(folder / f"{name}.zip", "w") as z:
                for member, data in members.items():
                    z.writestr(member, data)
            continue
        with tarfile.open(folder / f"{name}.tar{kind[2:] and '.' + kind[2:]}", kind) as t:
            for member, data in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    (folder / "006.tar.gz").write_bytes(b"not a tar at all")
    return sorted(folder.iterdir())


def test_a_folder_of_shards_is_listed_by_tasks_and_a_listing_that_dies_is_an_error_row(local_ray, detector, tmp_path):
    files = shard_folder(tmp_path / "shards")
    crasher = next(str(f) for f in files if LISTER_CRASH_MARK in f.name)
    want = local_rows(InputSpec.from_args([str(f) for f in files if str(f) != crasher]), detector)
    got = list(ray_scan(InputSpec.from_args([str(tmp_path / "shards")]), detector))
    lost = [r for r in got if r["path"] == crasher]
    assert [(r["member"], r["verdict"]) for r in lost] == [("", "error")]
    assert lost[0]["error"] == (
        "cannot read archive: the task listing it was lost, each time it was started "
        "(WorkerCrashedError: its process or node died)"
    )
    assert len(want) == 5 * 5 + 1 and sum(r["verdict"] == "error" for r in want) == 1  # the damaged tar.gz
    assert_same_rows([r for r in got if r["path"] != crasher], want)


@pytest.mark.slow
def test_the_localizer_and_attributor_run_in_the_actors(local_ray, inputs, detector, tmp_path, crashing_here):
    localizer = forensix.load_localizer(tiny_localizer_file(tmp_path / "loc.safetensors"), device="cpu")
    attributor = forensix.load_attributor(tiny_attributor_file(tmp_path), device="cpu")
    options = dict(masks_all=True, batch_size=4)
    here, there = tmp_path / "masks-here", tmp_path / "masks-ray"
    models = dict(localizer=localizer, attributor=attributor)
    want = list(Scanner(inputs, detector, ScanOptions(workers=1, masks_dir=here, **options), **models))
    scanner = Scanner(inputs, detector, ScanOptions(masks_dir=there, ray=RayOptions(block_size=4), **options), **models)
    got = list(scanner)
    assert scanner.stats.masks == sum(1 for r in want if r["mask"]) > 20
    assert {r["source"] for r in got if r["score"] is not None} <= {"real", "gen_a", "gen_b"}
    for row in got:
        if row["mask"]:
            mine = Path(row["mask"])
            assert mine.read_bytes() == (here / mine.relative_to(there)).read_bytes()
    assert_same_rows(got, want, masks=(there, here))


def score_actor_pids() -> set[int]:
    """The scoring actors' processes (Ray names them by their class in their command line)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"MapBatches(_Score)" in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_killed_scoring_actor_costs_no_row(local_ray, inputs, detector, crashing_here):
    want = local_rows(inputs, detector)
    rows = iter(ray_scan(inputs, detector))
    got = [next(rows)]  # the pipeline is running: blocks in flight in the actor
    killed = score_actor_pids()
    assert len(killed) == 1
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    got += list(rows)
    assert score_actor_pids().isdisjoint(killed)
    assert_same_rows(got, want)


class OnRow:
    """A progress display for write_report that calls ``each(rows written)`` after every row."""

    def __init__(self, stats, each) -> None:
        self.stats, self.each = stats, each

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def update(self) -> None:
        self.each(self.stats.images)


def interrupt_at(rows: int):
    """``each`` for :class:`OnRow`: SIGINT to this process, as Ctrl-C sends it, once ``rows`` rows are written
    (a sharded report's count goes up a shard at a time)."""
    sent = []

    def each(written: int) -> None:
        if written >= rows and not sent:
            sent.append(written)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the signal arrives here

    return lambda stats, count: OnRow(stats, each)


@pytest.mark.slow
def test_an_interrupted_ray_scan_resumes_with_no_duplicate_or_gap(local_ray, inputs, detector, tmp_path, crashing_here):
    out = tmp_path / "report.jsonl"
    first = forensix.write_report(inputs, detector, out, batch_size=4, ray=RAY, progress=interrupt_at(9))
    assert first.interrupted and len(out.read_text().splitlines()) == 9
    second = forensix.write_report(inputs, detector, out, resume=True, batch_size=4, ray=RAY)
    assert not second.interrupted and second.previous_rows == 9 and second.stats.resumed == 9
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert_same_rows(got, local_rows(inputs, detector))


@pytest.mark.slow
def test_a_local_report_resumes_on_ray(local_ray, inputs, detector, tmp_path, crashing_here):
    out = tmp_path / "report.jsonl"
    want = local_report(inputs, detector, out)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:12]))  # a local scan stopped after 12 rows (its .meta.json stays)
    resumed = forensix.write_report(inputs, detector, out, resume=True, batch_size=4, ray=RAY)
    assert resumed.previous_rows == 12 and resumed.stats.resumed == 12
    assert_same_rows(read_rows(out), want)


def test_the_cli_scans_on_ray_and_its_options_are_checked(
    local_ray, inputs, small_input_weights, tmp_path, home, crashing_here
):
    runner = CliRunner()
    photos = inputs.sources[0][1]
    out = tmp_path / "r.csv"
    done = runner.invoke(app, ["scan", photos, "--weights", small_input_weights, "--engine", "ray", "--out", out])
    assert done.exit_code == 0, done.output
    local = runner.invoke(app, ["scan", photos, "--weights", small_input_weights, "--out", tmp_path / "l.csv"])
    assert local.exit_code == 0
    assert_same_rows(list(read_rows(out)), list(read_rows(tmp_path / "l.csv")))
    meta = json.loads(Path(f"{out}.meta.json").read_text())
    assert meta["engine"]["name"] == "ray" and meta["device"] == "ray actors: auto"
    sharded = ["--engine", "ray", "--out", f"{tmp_path}/shards/", "--shard-size", "8", "--ray-block", "4"]
    done = runner.invoke(app, ["scan", photos, "--weights", small_input_weights, *sharded])
    assert done.exit_code == 0, done.output
    fields = ("path", "member", "verdict", "error")
    got, want = list(shard_rows(tmp_path / "shards")), read_rows(tmp_path / "l.csv")
    assert [tuple(r[k] for k in fields) for r in got] == [tuple(r[k] for k in fields) for r in want]
    assert all(math.isclose(a["score"] or 0, b["score"] or 0, abs_tol=1e-6) for a, b in zip(got, want))
    for args, says in [
        (["--actors", "2"], "--actors: for --engine ray"),
        (["--ray-block", "64"], "--ray-block: for --engine ray"),
        (["--engine", "spark"], "--engine must be local or ray"),
        (["--engine", "ray", "--use-cache"], "does not take --use-cache"),
        (["--engine", "ray", "--actors", "4"], "4 scoring actors take 4"),
        (["--engine", "ray", "--gpus-per-actor", "1"], "need 1 GPUs: the Ray cluster has 0"),
    ]:
        options = ["--weights", small_input_weights, "--out", tmp_path / "x.csv", *args]
        refused = runner.invoke(app, ["scan", photos, *options])
        assert refused.exit_code == 2 and says in refused.output, (args, refused.output)


def test_the_plan_fits_the_cluster():
    assert Plan.on({"CPU": 16, "GPU": 4}, RayOptions()) == Plan(4, 1.0, 12, "auto")
    assert Plan.on({"CPU": 16, "GPU": 4}, RayOptions(gpus_per_actor=0.5)) == Plan(8, 0.5, 8, "auto")
    assert Plan.on({"CPU": 16, "GPU": 4}, RayOptions(device="cpu")) == Plan(1, 0.0, 15, "cpu")
    assert Plan.on({"CPU": 8}, RayOptions()) == Plan(1, 0.0, 7, "cpu")  # no GPU: the actors' models on the CPU
    assert Plan.on({"CPU": 8, "GPU": 1}, RayOptions(gpus_per_actor=0)) == Plan(1, 0.0, 7, "cpu")
    assert Plan.on({"CPU": 8}, RayOptions(actors=3, build_tasks=2)) == Plan(3, 0.0, 2, "cpu")
    # A sharded report's writers: CPUs of their own, more when they draw mask files; none to spare: shared
    assert Plan.on({"CPU": 16, "GPU": 4}, RayOptions(), shards=True) == Plan(4, 1.0, 11, "auto", 1, 1.0)
    assert Plan.on({"CPU": 16, "GPU": 4}, RayOptions(), shards=True, masks=True) == Plan(4, 1.0, 6, "auto", 6, 1.0)
    assert Plan.on({"CPU": 2}, RayOptions(), shards=True) == Plan(1, 0.0, 1, "cpu", 1, 0.0)
    assert Plan.on({"CPU": 8}, RayOptions(build_tasks=7), shards=True) == Plan(1, 0.0, 7, "cpu", 1, 0.0)
    # Archives listed at once, ahead of the walk: one for each 8 CPUs, 2 to 16
    assert [Plan.on({"CPU": cpus}, RayOptions()).list_tasks for cpus in (4, 40, 1000)] == [2, 5, 16]
    for options, says in [
        (RayOptions(device="cuda"), "--device cuda on Ray needs --gpus-per-actor"),
        (RayOptions(precision="fp16"), "--precision fp16 needs GPUs"),
        (RayOptions(actors=3, gpus_per_actor=1), "3 scoring actors with 1 GPUs each need 3 GPUs"),
        (RayOptions(actors=8), "building records needs one more"),
    ]:
        with pytest.raises(ValueError, match=says):
            Plan.on({"CPU": 8, "GPU": 2}, options) if options.actors == 3 else Plan.on({"CPU": 8}, options)


def test_a_plan_the_cluster_cannot_hold_touches_no_report(local_ray, inputs, detector, tmp_path):
    """Refused before any file is opened: an earlier report, resumed, keeps every byte; a new one is not made."""
    too_many = RayOptions(actors=8, block_size=4)  # the tests' Ray has 4 CPUs
    kept = tmp_path / "kept.jsonl"
    kept.write_text('{"path": "a.png", "member": ""}\n')
    meta = tmp_path / "kept.jsonl.meta.json"
    meta.write_text("{}\n")
    for out, resume in [(kept, True), (tmp_path / "new.csv", False), (f"{tmp_path}/shards/", False)]:
        with pytest.raises(ValueError, match="8 scoring actors take 8 and building records needs one more"):
            forensix.write_report(inputs, detector, str(out), resume=resume, batch_size=4, ray=too_many)
    assert kept.read_text() == '{"path": "a.png", "member": ""}\n' and meta.read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.jsonl", "kept.jsonl.meta.json"]


def test_without_ray_the_engine_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    with pytest.raises(RayMissing, match=r"pip install 'forensix\[ray\]'"):
        require_ray()


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_the_drivers_memory_does_not_grow_with_the_inputs(local_ray, detector, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(10_000):
        random_image(16, 16, seed=i).save(folder / f"{i:05d}.png")
    seen: dict[int, int] = {}
    summary = forensix.write_report(
        [str(folder)],
        detector,
        tmp_path / "many.jsonl",
        batch_size=64,
        ray=RayOptions(),
        progress=lambda stats, count: OnRow(stats, lambda n: n in (2_000, 10_000) and seen.update({n: rss_bytes()})),
    )
    assert summary.rows == 10_000 and not summary.stats.errors
    # 8,000 rows kept would be over 15 MB (a row's dict and strings: about 2 kB)
    assert seen[10_000] - seen[2_000] < 8 << 20, seen


def test_a_sharded_report_holds_the_local_rows_in_shards_its_tasks_wrote(
    local_ray, inputs, detector, tmp_path, crashing_here
):
    want = local_report(inputs, detector, tmp_path / "local.jsonl")
    out = tmp_path / "shards"
    ray_options = RayOptions(actors=2, build_tasks=2, block_size=4)
    summary = forensix.write_report(inputs, detector, f"{out}/", batch_size=4, ray=ray_options, shard_size=8)
    assert summary.format == "shards" and summary.rows == len(want) and summary.stats.worker_deaths == 1
    layout, committed, complete = read_index(out)
    assert complete and layout.shard_blocks == 2 and len(committed) >= 3
    assert [line.shard for line in committed] == list(range(len(committed)))
    assert sum(line.rows for line in committed) == len(want)
    files = sorted(p.name for p in out.glob("shard-*"))
    assert files == sorted(line.file for line in committed)  # each written whole, no temporary left
    for line in committed:
        data = (out / line.file).read_bytes()
        assert len(data) == line.bytes and hashlib.sha256(data).hexdigest() == line.sha256
    assert_same_rows(list(shard_rows(out)), want)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["engine"]["name"] == "ray"


@pytest.mark.slow
def test_an_interrupted_sharded_scan_resumes_its_shards_and_rescans_what_changed(
    local_ray, inputs, detector, tmp_path, crashing_here
):
    out = tmp_path / "shards"
    options = dict(batch_size=4, ray=RAY, shard_size=8)
    first = forensix.write_report(inputs, detector, f"{out}/", progress=interrupt_at(16), **options)
    assert first.interrupted
    _, committed, complete = read_index(out)
    assert not complete and 2 <= len(committed) < 6 and first.rows >= 16
    second = forensix.write_report(inputs, detector, out, resume=True, **options)
    assert not second.interrupted and second.previous_rows == sum(line.rows for line in committed)
    assert second.stats.resumed == second.previous_rows
    assert_same_rows(list(shard_rows(out)), local_report(inputs, detector, tmp_path / "a.jsonl"))
    assert {line.file for line in read_index(out)[1][: len(committed)]} == {line.file for line in committed}

    # A new image sorted first in the folder: every shard's inputs shift, so all are scanned again.
    photos = Path(inputs.sources[0][1])
    random_image(24, 24, seed=99).save(photos / "000-new.png")
    try:
        third = forensix.write_report(inputs, detector, out, resume=True, **options)
        assert third.stats.resumed == 0 and any("changed since they were scanned" in n for n in third.notices)
        assert_same_rows(list(shard_rows(out)), local_report(inputs, detector, tmp_path / "b.jsonl"))
        assert sorted(p.name for p in out.glob("shard-*")) == sorted(line.file for line in read_index(out)[1])
    finally:
        (photos / "000-new.png").unlink()
