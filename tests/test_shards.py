"""The sharded report's format (forensix/shards.py), without Ray: files written whole, an index
committed in order and read back, what a resume keeps and refuses. The scans into it are in
tests/test_ray_engine.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import forensix
from forensix.cli import app
from forensix.ray_options import is_sharded
from forensix.report import ReportError, read_rows
from forensix.shards import (
    INDEX,
    Layout,
    ShardIndex,
    ShardLine,
    names_digest,
    read_index,
    shard_rows,
    shard_size_blocks,
    write_shard,
)
from forensix.stages.rows import ScanStats

LAYOUT = Layout(block_size=4, block_bytes=1 << 20, shard_blocks=2)


def rows_of(shard: int, n: int) -> list[dict]:
    return [
        {"path": f"/p/{shard}-{i}.png", "member": "", "score": (shard * 10 + i) / 100, "verdict": "real",
         "model": "m@abc", "threshold": 0.5, "band_low": None}
        for i in range(n)
    ]  # fmt: skip


def written(folder: Path, index: ShardIndex, shard: int, n: int) -> ShardLine:
    rows = rows_of(shard, n)
    name, size, sha256 = write_shard(folder, shard, index.run, rows)
    names = names_digest((r["path"], r["member"]) for r in rows)
    return ShardLine(shard, name, n, n, names, size, sha256, "m@abc", 0.5, None, ScanStats(images=n, real=n))


def three_shards(folder: Path) -> ShardIndex:
    index = ShardIndex(folder, LAYOUT)
    index.start()
    for shard, n in enumerate((8, 8, 3)):
        index.commit(written(folder, index, shard, n))
    return index


def test_a_shard_is_its_rows_as_json_lines_written_whole(tmp_path):
    name, size, sha256 = write_shard(tmp_path, 7, "0123abcd", rows_of(7, 3))
    assert name == "shard-000007-0123abcd.jsonl" and [p.name for p in tmp_path.iterdir()] == [name]
    data = (tmp_path / name).read_bytes()
    assert len(data) == size and hashlib.sha256(data).hexdigest() == sha256
    assert [r["score"] for r in read_rows(tmp_path / name, "jsonl")] == [0.7, 0.71, 0.72]


def test_the_index_lists_the_shards_in_order_and_the_report_is_their_rows(tmp_path):
    index = three_shards(tmp_path)
    layout, committed, complete = read_index(tmp_path)
    assert layout == LAYOUT and [c.rows for c in committed] == [8, 8, 3] and not complete
    index.finish()
    index.close()
    _, again, complete = read_index(tmp_path)
    assert complete and again == committed and again[0].stats == ScanStats(images=8, real=8)
    every = [r["path"] for s, n in enumerate((8, 8, 3)) for r in rows_of(s, n)]
    assert [r["path"] for r in shard_rows(tmp_path)] == every
    last = json.loads((tmp_path / INDEX).read_text().splitlines()[-1])
    assert last == {"complete": True, "shards": 3, "rows": 19}
    with pytest.raises(RuntimeError, match="shard 5 committed after shard 2"):
        index.commit(written(tmp_path, index, 5, 1))


def test_a_line_cut_off_by_a_killed_driver_is_not_a_shard_and_a_resume_drops_it(tmp_path):
    index = three_shards(tmp_path)
    index.close()
    with open(tmp_path / INDEX, "a") as f:
        f.write('{"shard": 3, "file": "shard-000003-')  # the driver died mid-line
    assert len(read_index(tmp_path)[1]) == 3
    resumed = ShardIndex.resumed(tmp_path, LAYOUT)
    assert resumed.rows == 19 and resumed.existing().models == {"m@abc"} and resumed.existing().thresholds == {0.5}
    resumed.start()
    assert (tmp_path / INDEX).read_text().endswith("}\n") and len((tmp_path / INDEX).read_text().splitlines()) == 4


def test_a_resume_removes_shard_files_never_committed_and_keeps_other_files(tmp_path):
    index = three_shards(tmp_path)
    index.close()
    orphan = write_shard(tmp_path, 3, "ffffffff", rows_of(3, 2))[0]  # written, the driver stopped before committing
    (tmp_path / f"{orphan}.123.tmp").write_text("half")  # a task killed while writing
    (tmp_path / f"{INDEX}.77.tmp").write_text("{")  # a driver killed while rewriting the index
    (tmp_path / "notes.txt").write_text("mine")
    resumed = ShardIndex.resumed(tmp_path, LAYOUT)
    resumed.start()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([INDEX, "notes.txt", *(line.file for line in resumed.committed)])


def test_keep_drops_the_shards_whose_inputs_changed(tmp_path):
    index = three_shards(tmp_path)
    dropped = index.keep(1)
    assert [d.shard for d in dropped] == [1, 2] and index.rows == 8
    index.commit(written(tmp_path, index, 1, 2))
    index.finish()
    index.close()
    _, committed, complete = read_index(tmp_path)
    assert complete and [c.rows for c in committed] == [8, 2]
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == sorted(c.file for c in committed)


def test_a_resume_refuses_another_layout_and_missing_or_changed_shard_files(tmp_path):
    index = three_shards(tmp_path)
    index.close()
    with pytest.raises(ReportError, match="pass --ray-block 4 --shard-size 8"):
        ShardIndex.resumed(tmp_path, Layout(8, 1 << 20, 2))
    second = tmp_path / read_index(tmp_path)[1][1].file
    second.write_bytes(second.read_bytes() + b"\n")
    with pytest.raises(ReportError, match=r"holds \d+ bytes, not \d+"):
        ShardIndex.resumed(tmp_path, LAYOUT)
    second.unlink()
    with pytest.raises(ReportError, match="shard 1's file .* is missing"):
        ShardIndex.resumed(tmp_path, LAYOUT)


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "no forensix-shards header"),
        ('{"format": "forensix-shards", "version": 9, "block_size": 4}\n', "version 9, this forensix reads 1"),
        ('{"format": "other"}\n', "no forensix-shards header"),
        (
            '{"format": "forensix-shards", "version": 1, "block_size": 4, "block_bytes": 9, "shard_blocks": 2}\n[1]\n',
            "not a forensix shard index",
        ),
    ],
)
def test_an_index_that_is_not_forensix_s_is_refused(tmp_path, text, says):
    (tmp_path / INDEX).write_text(text)
    with pytest.raises(ReportError, match=says):
        read_index(tmp_path)


def test_shards_out_of_order_in_an_index_are_refused(tmp_path):
    index = three_shards(tmp_path)
    index.close()
    lines = (tmp_path / INDEX).read_text().splitlines()
    (tmp_path / INDEX).write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")
    with pytest.raises(ReportError, match="line 2 is shard 1, not 0"):
        read_index(tmp_path)


def test_names_digest_is_the_names_in_order():
    a = [("/p/a.png", ""), ("/p/z.zip", "x.png")]
    assert names_digest(a) == names_digest(iter(a)) != names_digest(a[::-1])
    assert names_digest([("/p/a", "b")]) != names_digest([("/p/ab", "")])  # names are kept apart
    assert names_digest([("/p/\udcff.png", "")])  # a name that is not UTF-8 (a surrogate escape)


def test_shard_sizes_are_whole_blocks():
    assert shard_size_blocks(4096, 16) == 256 and shard_size_blocks(17, 16) == 2 and shard_size_blocks(1, 16) == 1
    with pytest.raises(ValueError, match="--shard-size must be at least 1"):
        shard_size_blocks(0, 16)


def test_a_folder_out_is_a_sharded_report(tmp_path):
    assert is_sharded(f"{tmp_path}/new/") and is_sharded(tmp_path) and not is_sharded(tmp_path / "r.jsonl")


def test_a_new_sharded_report_replaces_one_but_never_a_folder_of_other_files(tmp_path):
    three_shards(tmp_path / "old").close()
    assert ShardIndex.new(tmp_path / "old", LAYOUT).committed == []
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ReportError, match="holds files and no forensix index.jsonl"):
        ShardIndex.new(tmp_path / "mine", LAYOUT)
    with pytest.raises(ReportError, match="holds files and no forensix index.jsonl"):
        ShardIndex.resumed(tmp_path / "mine", LAYOUT)
    assert ShardIndex.new(tmp_path / "empty", LAYOUT).committed == []


def test_a_sharded_report_needs_the_ray_engine(tmp_path, photos, small_input_weights, home):
    detector = forensix.load_detector(weights=small_input_weights, device="cpu")
    with pytest.raises(ReportError, match="a sharded report .* is written by --engine ray"):
        forensix.write_report([str(photos)], detector, f"{tmp_path}/out/")
    assert not (tmp_path / "out").exists()
    runner = CliRunner()
    for args, says in [
        (["--out", f"{tmp_path}/out/"], "is written by --engine ray"),
        (["--out", f"{tmp_path}/out/", "--engine", "ray", "--html", tmp_path / "p.html"], "not a sharded report"),
        (["--out", tmp_path / "r.jsonl", "--shard-size", "8"], "--shard-size: for a sharded report"),
        (["--out", f"{tmp_path}/out/", "--engine", "ray", "--use-cache"], "does not take --use-cache"),
    ]:
        refused = runner.invoke(app, ["scan", str(photos), "--weights", small_input_weights, *args])
        assert refused.exit_code == 2 and says in refused.output, refused.output
