"""What every Ray worker of the tests' local Ray runs at start (``worker_process_setup_hook``): a decoder
that crashes, as a decoder's bug on a hostile file does, on any file that holds :data:`CRASH_MARK`,
and a tar reader that crashes on opening an archive whose name holds :data:`LISTER_CRASH_MARK`.

The workers are processes of their own, started by Ray: a monkeypatch in the test process never
reaches them, so the tests' Ray imports this module there (``PYTHONPATH``).
"""

from __future__ import annotations

import os
import signal
import tarfile

CRASH_MARK = b"forensix-test: this file crashes its decoder"
LISTER_CRASH_MARK = "crashes-its-lister"


def crash_on_marked_files() -> None:
    from forensix.stages import records

    decode = records.decode_image

    def crashing(data, *args, **kwargs):
        if CRASH_MARK in data:
            os.kill(os.getpid(), signal.SIGSEGV)
        return decode(data, *args, **kwargs)

    records.decode_image = crashing

    open_tar = tarfile.open

    def crashing_open(name=None, *args, fileobj=None, **kwargs):
        if LISTER_CRASH_MARK in str(name or getattr(fileobj, "name", "")):
            os.kill(os.getpid(), signal.SIGSEGV)
        return open_tar(name, *args, fileobj=fileobj, **kwargs)

    tarfile.open = crashing_open
