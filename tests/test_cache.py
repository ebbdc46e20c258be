"""The prediction cache: counts, clearing by model key, and the `forensix cache` commands."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from forensix.cache import CACHE_FILE, PredictionCache
from forensix.cli import app

runner = CliRunner()


def filled(path) -> PredictionCache:
    cache = PredictionCache(path)
    cache.put_many([(f"{i:064x}", "aaaa:arch:fp32", "none", float(i)) for i in range(300)])
    cache.put_many([(f"{i:064x}", "aaaa:arch:fp32", "jpeg=75", -float(i)) for i in range(5)])
    cache.put_many([(f"{i:064x}", "aaab:arch:bf16", "none", 0.5) for i in range(7)])
    cache.put_many([(f"{i:064x}", "b%_:arch:fp32", "none", 0.5) for i in range(2)])  # LIKE's wildcards, literally
    return cache


def test_counts_and_clearing_by_model_key_prefix(tmp_path):
    cache = filled(tmp_path / CACHE_FILE)
    assert cache.counts() == [
        ("aaaa:arch:fp32", "jpeg=75", 5),
        ("aaaa:arch:fp32", "none", 300),
        ("aaab:arch:bf16", "none", 7),
        ("b%_:arch:fp32", "none", 2),
    ]
    assert cache.clear("b%") == 2 and cache.clear("b") == 0  # a prefix, not a pattern
    assert cache.clear("aaaa") == 305 and cache.counts() == [("aaab:arch:bf16", "none", 7)]
    assert cache.get(f"{3:064x}", "aaab:arch:bf16", "none") == 0.5
    assert cache.get(f"{3:064x}", "aaaa:arch:fp32", "none") is None
    assert cache.clear() == 7 and len(cache) == 0


def test_cli_cache_info_and_clear(tmp_path):
    folder = tmp_path / ("a-folder-with-a-long-name-" * 6)  # longer than a line: the output must not depend on it
    folder.mkdir()
    cache = filled(folder / CACHE_FILE)
    before = cache.size_bytes()
    info = runner.invoke(app, ["cache", "info", "--cache", str(folder), "--json"])
    assert info.exit_code == 0, info.output
    data = json.loads(info.stdout)
    assert data["path"] == str(cache.path) and data["bytes"] == before
    assert {(e["model"], e["perturbation"]): e["logits"] for e in data["entries"]}[("aaaa:arch:fp32", "none")] == 300
    table = runner.invoke(app, ["cache", "info", "--cache", str(folder)])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0] == f"{cache.path}: 314 logits, {before / 2**20:.1f} MiB"
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    assert cells == [
        ["aaaa:arch:fp32", "jpeg=75", "5"],
        ["aaaa:arch:fp32", "none", "300"],
        ["aaab:arch:bf16", "none", "7"],
        ["b%_:arch:fp32", "none", "2"],
    ]
    cleared = runner.invoke(app, ["cache", "clear", "--cache", str(folder), "--model-key", "aaaa"])
    assert cleared.exit_code == 0 and "dropped 305 logits, 9 left" in cleared.stderr
    assert cache.size_bytes() < before / 5  # compacted: 9 of 314 logits left


def test_a_cache_that_cannot_be_opened_says_which_and_why(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CACHE_FILE).write_text("not a database, whatever its name says" * 3)
    (tmp_path / "file").write_text("a file where the cache folder should be")
    for folder, reason in (("bad", "file is not a database"), ("file/sub", "Not a directory")):
        result = runner.invoke(app, ["cache", "info", "--cache", str(tmp_path / folder)])
        assert result.exit_code == 2
        assert f"prediction cache {tmp_path / folder / CACHE_FILE}: {reason}" in " ".join(result.stderr.split())
