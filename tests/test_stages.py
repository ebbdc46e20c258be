"""The scan's stages on their own: records built from entries, collated into blocks, run in workers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_image
from test_timeouts import LIMIT_TEXT, slow_jpeg, stuck_jpeg

from forensix.datasets import Sample
from forensix.imaging import DecodeError, decode_image, preprocess
from forensix.inputs import InputSpec, Limits, MemberSpool, file_entry
from forensix.models.config import PreprocessConfig
from forensix.stages import records
from forensix.stages.batches import collate
from forensix.stages.entries import input_entries, sample_entries
from forensix.stages.loader import LoaderOptions, SampledBatches, prepared_blocks
from forensix.stages.records import IMAGE, RecordBuilder


def samples_with_a_broken_file(root: Path) -> list[Sample]:
    paths = []
    for i in range(3):
        random_image(40, 32, seed=i).save(root / f"{i}.png")
        paths.append(root / f"{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    paths.insert(2, root / "broken.png")
    return [Sample(str(p), 0, "s", "real") for p in paths]


def test_records_are_decoded_like_the_scan_and_unreadable_files_are_errors(tmp_path):
    samples = samples_with_a_broken_file(tmp_path)
    cfg = PreprocessConfig()
    build = RecordBuilder(cfg)
    records = [build(i, file_entry(s.path)) for i, s in enumerate(samples)]
    assert [Path(r.path).name for r in records if r.error] == ["broken.png"]
    assert IMAGE not in records[2].inputs and len(records[2].sha256) == 64
    expected = preprocess(decode_image(Path(samples[0].path).read_bytes()).image, cfg)
    assert np.array_equal(records[0].inputs[IMAGE].numpy(), expected.numpy())
    block = collate(records)
    assert block.inputs[IMAGE].shape == (3, 3, 224, 224) and all(not r.inputs for r in block.records)
    # a known logit means no decoding at all
    cached = RecordBuilder(cfg, lookup=lambda sha: 1.5)(0, file_entry(samples[0].path))
    assert cached.logit == 1.5 and not cached.inputs and not cached.has_input


def test_a_file_over_the_byte_limit_is_an_error_not_read(tmp_path):
    (path := tmp_path / "a.png").write_bytes(b"\x89PNG" + bytes(100))
    record = RecordBuilder(PreprocessConfig())(0, file_entry(str(path), max_bytes=10))
    assert record.error == "cannot read: file is 104 bytes, over the max-bytes limit (10)" and not record.sha256


def test_workers_hand_every_record_over_once_in_order(tmp_path):
    samples = samples_with_a_broken_file(tmp_path) * 3
    entries = sample_entries(samples, 1 << 20)
    build = RecordBuilder(PreprocessConfig())
    blocks = list(prepared_blocks(entries, build, LoaderOptions(block_size=2, workers=2)))
    assert [r.index for b in blocks for r in b.records] == list(range(len(samples)))
    assert [len(b.inputs[IMAGE]) for b in blocks] == [2, 1] * 3  # the broken file (third of four) has no input


class _CrashesOn(torch.utils.data.Dataset):
    """Item i is i, except that building item ``bomb`` kills its process, as a decoder's segfault would."""

    def __init__(self, n: int, bomb: int) -> None:
        self.n, self.bomb = n, bomb

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        if index == self.bomb:
            os.kill(os.getpid(), signal.SIGSEGV)
        return index


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sampled_batches_survive_a_worker_killed_by_one_item(workers):
    batches = [[6, 7], [0, 1], [4, 5], [2, 3], [8, 9]]  # a sampler's order, not the dataset's
    deaths: list[int] = []
    loader = SampledBatches(
        _CrashesOn(10, bomb=5),
        batches,
        collate_fn=list,
        crashed=lambda index, why: ("crashed", index, why),
        workers=workers,
        on_worker_death=lambda: deaths.append(1),
    )
    got = list(loader)
    assert got == [[6, 7], [0, 1], [4, ("crashed", 5, "the process reading it was killed by SIGSEGV")], [2, 3], [8, 9]]
    # A death may be noticed while an earlier batch is still awaited: that one is then built alone, and
    # workers start again from the next, so the bomb's batch (the third) can cost up to three deaths.
    assert 1 <= len(deaths) <= 3 and len(loader) == 5


def samples_with_a_slow_file(root: Path, data: bytes) -> list[Sample]:
    samples = samples_with_a_broken_file(root)[:2]  # two readable images
    (root / "slow.jpg").write_bytes(data)
    samples.insert(1, Sample(str(root / "slow.jpg"), 0, "s", "real"))
    return samples


@pytest.mark.parametrize("slow", [slow_jpeg, stuck_jpeg], ids=["slow", "stuck"])
def test_an_image_over_its_time_budget_is_an_error_and_the_next_one_is_built(tmp_path, slow):
    """A decode the budget interrupts between chunks (slow), or one it can only judge when the decoder
    returns, in the main process (stuck): an error record either way, then the next entry."""
    samples = samples_with_a_slow_file(tmp_path, slow())
    build = RecordBuilder(PreprocessConfig(), metadata=True, decode_timeout=0.2)
    got = [build(i, file_entry(s.path)) for i, s in enumerate(samples)]
    assert [r.error for r in got] == ["", f"decoding took longer than {LIMIT_TEXT}", ""]
    assert IMAGE in got[2].inputs and not got[1].inputs and len(got[1].sha256) == 64


@pytest.mark.parametrize(
    "slow, error",
    [
        pytest.param(slow_jpeg, f"decoding took longer than {LIMIT_TEXT}", id="slow"),  # in the worker, between chunks
        # the worker is killed at its hard limit; alone, the entry's process is stopped by its parent
        pytest.param(
            stuck_jpeg,
            f"cannot decode image: its process was stopped still decoding it after 0.4 s, past {LIMIT_TEXT}",
            id="stuck",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_in_workers_a_slow_image_costs_its_own_record_only(tmp_path, slow, error):
    samples = samples_with_a_slow_file(tmp_path, slow())
    entries = sample_entries(samples + [samples[0], samples[2], samples[0]], 1 << 30)
    build = RecordBuilder(PreprocessConfig(), decode_timeout=0.2)
    deaths: list[int] = []
    blocks = list(prepared_blocks(entries, build, LoaderOptions(block_size=3, workers=1), lambda: deaths.append(1)))
    got = [r for b in blocks for r in b.records]
    assert [r.index for r in got] == list(range(6))
    assert [r.error for r in got] == ["", error, "", "", "", ""]  # workers start again after it
    assert [len(b.inputs[IMAGE]) for b in blocks] == [2, 3]
    assert len(deaths) == (1 if slow is stuck_jpeg else 0)


def test_error_text_from_a_decoder_carries_no_terminal_codes(tmp_path, monkeypatch):
    random_image(40, 32).save(path := tmp_path / "a.png")

    def coloured(*args):
        raise DecodeError("cannot decode image: \x1b[1mbold\x1b[0m and \x1b]8;;http://x\x1b\\a link\x1b]8;;\x1b\\")

    monkeypatch.setattr(records, "decode_image", coloured)
    record = RecordBuilder(PreprocessConfig())(0, file_entry(str(path)))
    assert record.error == "cannot decode image: bold and a link"


OPENS_SCRIPT = """
import os, sys
log, watched = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND), sys.argv[2]

def hook(event, args):  # every open, by any module, in this process and its forked workers
    if event == "open" and isinstance(args[0], str) and args[0].startswith(watched):
        os.write(log, f"{os.getpid()}\\t{args[0]}\\n".encode())

sys.addaudithook(hook)
import forensix
from forensix.datasets import load_dataset
from forensix.eval.predict import EvalOptions, predict
detector = forensix.load_detector(sys.argv[3], device="cpu")
summary = forensix.write_report(sys.argv[6:], detector, sys.argv[4], workers=2, batch_size=3, metadata=False)
os.write(log, f"{os.getpid()}\\tmain\\n".encode())
predictions = predict(load_dataset(sys.argv[5]).samples, detector, options=EvalOptions(batch_size=3, workers=2))
assert predictions.ok.all()
os.write(log, f"{os.getpid()}\\teval\\n".encode())
"""


def test_inputs_are_read_once_whatever_the_number_of_workers(tmp_path, small_input_weights):
    """Issue 15: every worker used to walk the whole input stream, opening and sniffing each folder file and
    decompressing each compressed tar once per worker. One walk, in the main process, now hands them out.
    An eval's dataset is listed once and each image read by one worker: two opens, however many workers."""
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    names = []
    for i in range(8):
        folder = inputs / "sub" if i % 3 == 0 else inputs
        random_image(24 + i, 20, seed=i).save(folder / f"{i}.png")
        names.append(folder / f"{i}.png")
    (inputs / "notes.txt").write_text("not an image")
    (inputs / "sub" / "data.bin").write_bytes(bytes(300))
    tgz, zipped = tmp_path / "images.tar.gz", tmp_path / "images.zip"
    with tarfile.open(tgz, "w:gz") as tar, zipfile.ZipFile(zipped, "w") as z:
        for i in range(12):
            image = io.BytesIO()
            random_image(30, 20 + i, seed=100 + i).save(image, "PNG")
            info = tarfile.TarInfo(f"{i}.png")
            info.size = len(image.getvalue())
            tar.addfile(info, io.BytesIO(image.getvalue()))
            z.writestr(f"{i}.png", image.getvalue())
    dataset = tmp_path / "dataset"  # eval's: listed (sniffed) once, each image then read by one worker
    for i, label in enumerate(["0_real", "1_fake"] * 4):
        (dataset / label).mkdir(parents=True, exist_ok=True)
        random_image(20, 20 + i, seed=50 + i).save(dataset / label / f"{i}.png")
    (script := tmp_path / "opens.py").write_text(OPENS_SCRIPT)
    (log := tmp_path / "opens.log").touch()
    out = tmp_path / "report.jsonl"
    args = [str(p) for p in (log, tmp_path, small_input_weights, out, dataset, inputs, tgz, zipped)]
    subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True, timeout=300)

    lines = [line.split("\t") for line in log.read_text().splitlines()]
    main = next(pid for pid, what in lines if what == "main")
    scanning = lines[: lines.index([main, "main"])]
    evaluating = [path for _, path in lines[len(scanning) + 1 : lines.index([main, "eval"])]]
    images = [str(p) for p in dataset.rglob("*.png")]
    assert {p: evaluating.count(p) for p in images} == dict.fromkeys(images, 2)  # with 2 workers
    opens = [(pid, path) for pid, path in scanning if not path.startswith(str(out))]
    by_path: dict[str, list[str]] = {}
    for pid, path in opens:
        by_path.setdefault(path, []).append(pid)
    folder_files = [str(p) for p in inputs.rglob("*") if p.is_file()]
    assert {p: len(by_path.get(p, [])) for p in folder_files} == dict.fromkeys(folder_files, 1)
    assert all(main not in by_path[p] for p in folder_files)  # the listing opens none of them
    assert len({by_path[p][0] for p in folder_files}) == 2  # both workers read some
    assert by_path[str(tgz)] == [main]  # decompressed by the walk alone, once
    assert by_path[str(zipped)].count(main) == 1 and len(by_path[str(zipped)]) <= 1 + 2  # one handle per process
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(Path(r["path"]).name, r["member"]) for r in rows] == (
        [(p.name, "") for p in sorted(names, key=str)]  # in/1.png ... in/7.png, then in/sub/0.png ...
        + [(tgz.name, f"{i}.png") for i in range(12)]
        + [(zipped.name, f"{i}.png") for i in range(12)]
    )
    assert all(not r["error"] for r in rows) and len({r["score"] for r in rows}) > 10


def test_blocks_that_carry_their_bytes_end_early_past_the_byte_budget(tmp_path):
    """A compressed tar's members travel to the workers with their bytes: a block of big ones stays small."""
    archive = tmp_path / "t.tar.gz"
    sizes = []
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(7):
            image = io.BytesIO()
            random_image(40 + 30 * i, 40, seed=i).save(image, "PNG")
            sizes.append(len(image.getvalue()))
            info = tarfile.TarInfo(f"{i}.png")
            info.size = sizes[-1]
            tar.addfile(info, io.BytesIO(image.getvalue()))
    budget = sizes[0] + sizes[1] + 1  # the third member closes the first block
    entries = input_entries(InputSpec.from_args([str(archive)]), Limits())
    options = LoaderOptions(block_size=4, workers=2, block_bytes=budget)
    blocks = list(prepared_blocks(entries, RecordBuilder(PreprocessConfig()), options))
    assert [[r.member for r in b.records] for b in blocks][0] == ["0.png", "1.png", "2.png"]
    assert all(sum(sizes[int(r.member[0])] for r in b.records[:-1]) < budget for b in blocks)
    assert [r.member for b in blocks for r in b.records] == [f"{i}.png" for i in range(7)]
    assert all(IMAGE in b.inputs and len(b.inputs[IMAGE]) == len(b.records) for b in blocks)


def test_a_compressed_tars_members_wait_in_a_spool_file_per_block_removed_when_done(tmp_path, monkeypatch):
    """The walk holds one block's bytes at a time: what workers are sent is where the bytes are, not the bytes."""
    archive, digests = tmp_path / "t.tar.gz", []
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(9):
            image = io.BytesIO()
            random_image(30 + i, 30, seed=i).save(image, "PNG")
            digests.append(hashlib.sha256(image.getvalue()).hexdigest())
            info = tarfile.TarInfo(f"{i}.png")
            info.size = len(image.getvalue())
            tar.addfile(info, io.BytesIO(image.getvalue()))
    (spools := tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))
    sent: list[int] = []
    real_store = MemberSpool.store

    def store(self, items):
        spooled, path = real_store(self, items)
        sent.extend(len(pickle.dumps(i)) for i in spooled)
        return spooled, path

    monkeypatch.setattr(MemberSpool, "store", store)
    entries = input_entries(InputSpec.from_args([str(archive)]), Limits())
    blocks = prepared_blocks(entries, RecordBuilder(PreprocessConfig()), LoaderOptions(block_size=2, workers=2))
    first = next(blocks)
    (folder,) = spools.glob("forensix-spool-*")
    assert 1 <= len(list(folder.iterdir())) <= 5  # the blocks in flight, not yet done
    rest = list(blocks)
    assert not list(spools.glob("forensix-spool-*"))  # every spool file and its folder removed
    assert [r.sha256 for b in [first, *rest] for r in b.records] == digests
    assert max(sent) < 1000  # a path and an offset, never the member's bytes
