"""``python -m fuzz``: run a fuzz target under atheris, replay the crashers, or fetch the seeds.

    python -m fuzz run image --max-time 14400       # hours: a long campaign
    python -m fuzz run archive --runs 3000 --seed 1 # short and deterministic (the test suite's)
    python -m fuzz replay                           # every committed crasher, every target
    python -m fuzz corpus                           # fetch Pillow's Tests/images, print where

A run grows its corpus in ``$FORENSIX_FUZZ_HOME/corpus/TARGET`` (default ``~/.cache/forensix-fuzz``)
and writes what breaks a target (a crash, a timeout, memory over the limit) to
``fuzz/crashers/TARGET/``: commit it, fix the reader, and ``replay`` keeps it fixed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CRASHERS = Path(__file__).resolve().parent / "crashers"
_FUZZING = "FORENSIX_FUZZ_CHILD"
TARGET_NAMES = ("image", "archive", "path-list", "checkpoint")
MAX_LEN = {"image": 256 << 10, "archive": 256 << 10, "path-list": 4 << 10, "checkpoint": 1 << 20}


def _targets() -> dict:
    return importlib.import_module("fuzz.targets").TARGETS


def replay(targets: list[str]) -> int:
    """Run every committed crasher of ``targets`` through its target; how many still break it."""
    failures = 0
    for name in targets:
        target = _targets()[name]
        for path in sorted((CRASHERS / name).glob("*")):
            try:
                target(path.read_bytes())
            except Exception as e:  # noqa: BLE001 - each crasher's failure is reported, then the next
                failures += 1
                print(f"{name}: {path.name}: {type(e).__name__}: {e}", file=sys.stderr)
    return failures


def run(target: str, runs: int | None, seed: int, max_time: int | None, timeout: int, rss_mb: int) -> None:
    """``target`` under atheris (libFuzzer): returns only if nothing broke it (libFuzzer exits otherwise)."""
    import atheris

    from .corpus import fuzz_home, pillow_images, write_seeds

    with atheris.instrument_imports(include=["PIL", "forensix", "zipfile", "tarfile", "safetensors"]):
        target_fn = _targets()[target]
    seeds = write_seeds(target, pillow_images(), Path(tempfile.mkdtemp(prefix="forensix-seeds-")))
    corpus = fuzz_home() / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts = CRASHERS / target
    artifacts.mkdir(parents=True, exist_ok=True)
    flags = [
        f"-seed={seed}",
        f"-timeout={timeout}",
        f"-rss_limit_mb={rss_mb}",
        f"-max_len={MAX_LEN[target]}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
    ]
    if runs is not None:
        flags.append(f"-runs={runs}")
    if max_time is not None:
        flags.append(f"-max_total_time={max_time}")
    # libFuzzer adds what it finds to the first folder and only reads the others (the seeds).
    atheris.Setup([sys.argv[0], *flags, str(corpus), str(seeds)], target_fn)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="fuzz one target under atheris")
    run_parser.add_argument("target", choices=TARGET_NAMES)
    run_parser.add_argument("--runs", type=int, help="inputs to try (deterministic with --seed)")
    run_parser.add_argument("--max-time", type=int, help="seconds to fuzz for")
    run_parser.add_argument("--seed", type=int, default=1)
    run_parser.add_argument("--timeout", type=int, default=30, help="seconds one input may take")
    run_parser.add_argument("--rss-mb", type=int, default=4096, help="memory the run may use")
    replay_parser = commands.add_parser("replay", help="run the committed crashers")
    replay_parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"of {', '.join(TARGET_NAMES)} (all)")
    commands.add_parser("corpus", help="fetch Pillow's Tests/images and print where they are")
    args = parser.parse_args(argv)
    if args.command == "corpus":
        from .corpus import pillow_images

        print(pillow_images())
        return 0
    if args.command == "replay":
        if unknown := set(args.targets) - set(TARGET_NAMES):
            parser.error(f"no fuzz target {', '.join(sorted(unknown))}")
        return 1 if replay(args.targets or list(TARGET_NAMES)) else 0
    if args.runs is None and args.max_time is None:
        parser.error("give --runs or --max-time")
    if not os.environ.get(_FUZZING):
        # libFuzzer's memory limit reads the peak RSS, which a process inherits through fork and exec:
        # started from a big process (a test suite's), it would be out of memory before its first
        # input. So the fuzzing runs in a child of this small process.
        command = [sys.executable, "-m", "fuzz", *(sys.argv[1:] if argv is None else argv)]
        return subprocess.call(command, env={**os.environ, _FUZZING: "1"})
    run(args.target, args.runs, args.seed, args.max_time, args.timeout, args.rss_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
