"""A fast start: --help, --version and usage errors do not import torch (seconds on a small machine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "open_clip", "transformers", "peft", "onnxruntime", "safetensors")

# Runs the console script's main() with these arguments, then says which heavy modules it imported.
PROBE = """
import json, sys
from forensix.cli import main
modules, sys.argv = sys.argv[1], ["forensix", *sys.argv[2:]]
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
heavy = [m for m in modules.split(",") if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def run(*args: str) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(HEAVY), *args], capture_output=True, text=True, timeout=120
    )
    return json.loads(done.stderr.strip().splitlines()[-1]), done.stdout


def test_importing_the_cli_and_the_package_imports_no_torch():
    code = f"import sys, forensix, forensix.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--version"], 0),
        (["--help"], 0),
        (["scan", "--help"], 0),
        (["weights", "--help"], 0),
        (["scna"], 2),  # an unknown command
        (["scan", "--bogus"], 2),  # an unknown option
        (["scan", "x.png", "--batch-size", "0"], 2),  # a bad value
    ],
)
def test_help_version_and_usage_errors_import_no_torch(args, code):
    result, stdout = run(*args)
    assert result == {"code": code, "heavy": []}
    if args == ["--version"]:
        assert stdout.startswith("forensix ")


def test_the_library_functions_still_resolve_lazily():
    import forensix
    from forensix.detector import load_detector
    from forensix.scan_report import write_report

    assert forensix.load_detector is load_detector and forensix.write_report is write_report
    assert {"load_detector", "load_localizer", "load_attributor", "scan", "write_report"} <= set(dir(forensix))
    with pytest.raises(AttributeError):
        forensix.no_such_name  # noqa: B018
