"""The scan's stages on their own: records built from entries, collated into blocks, run in workers."""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_image
from test_timeouts import LIMIT_TEXT, slow_jpeg, stuck_jpeg

from forensix.datasets import Sample
from forensix.imaging import DecodeError, decode_image, preprocess
from forensix.inputs import file_entry
from forensix.models.config import PreprocessConfig
from forensix.stages import records
from forensix.stages.batches import collate
from forensix.stages.entries import sample_entries
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
    entries = partial(sample_entries, samples, 1 << 20)
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


@pytest.mark.parametrize("workers", [1, 2])
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
    # A death may be noticed while an earlier batch is still awaited: that one is then built alone too.
    assert 1 <= len(deaths) <= workers and len(loader) == 5


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
        (slow_jpeg, f"decoding took longer than {LIMIT_TEXT}"),  # in the worker, between chunks
        # the worker is killed at its hard limit; alone, the entry's process is stopped by its parent
        (stuck_jpeg, f"cannot decode image: its process was stopped still decoding it after 0.4 s, past {LIMIT_TEXT}"),
    ],
    ids=["slow", "stuck"],
)
def test_in_workers_a_slow_image_costs_its_own_record_only(tmp_path, slow, error):
    samples = samples_with_a_slow_file(tmp_path, slow())
    entries = partial(sample_entries, samples + [samples[0], samples[2], samples[0]], 1 << 30)
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
