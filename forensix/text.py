"""Text from other libraries made fit for a report row or a log line."""

from __future__ import annotations

import re

# CSI sequences (colours, bold: ESC [ ... final byte), OSC sequences (links, titles: ESC ] ... BEL or
# ESC \), and any other two-byte escape. torch, for one, puts bold in its weights_only error.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")


def plain(text: str) -> str:
    """``text`` without terminal escape sequences: what it says, never how a terminal should show it."""
    return _ESCAPES.sub("", text) if ("\x1b" in text or "\x9b" in text) else text


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """``text`` as one plain line (a row's error, a note): no escape sequences, control characters
    and line breaks as spaces, runs of white space as one. A decoder's message may end in a newline,
    tarfile's lists a line per compression method, an EXIF string may hold anything."""
    return " ".join(_CONTROL.sub(" ", plain(text)).split())
