"""What every Ray worker of the tests' local Ray runs at start (``worker_process_setup_hook``): a decoder
that crashes, as a decoder's bug on a hostile file does, on any file that holds :data:`CRASH_MARK`,
a tar reader that crashes on opening an archive whose name holds :data:`LISTER_CRASH_MARK`, and a
listing that crashes once, at its fifth member, in an archive whose name holds :data:`ONCE_CRASH_MARK`.

The workers are processes of their own, started by Ray: a monkeypatch in the test process never
reaches them, so the tests' Ray imports this module there (``PYTHONPATH``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import tarfile
import tempfile

CRASH_MARK = b"forensix-test: this file crashes its decoder"
LISTER_CRASH_MARK = "crashes-its-lister"
ONCE_CRASH_MARK = "lister-crashes-once"


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

    from forensix import inputs

    member_entries = inputs._member_entries

    def crashing_once(path, members, limits):
        flag = os.path.join(tempfile.gettempdir(), "forensix-test-" + hashlib.sha1(path.encode()).hexdigest())
        for n, entry in enumerate(member_entries(path, members, limits)):
            if n == 4 and ONCE_CRASH_MARK in path and not os.path.exists(flag):
                open(flag, "w").close()
                os.kill(os.getpid(), signal.SIGSEGV)
            yield entry

    inputs._member_entries = crashing_once
