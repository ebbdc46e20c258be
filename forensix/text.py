"""Text from other libraries made fit for a report row or a log line."""

from __future__ import annotations

import re

# CSI sequences (colours, bold: ESC [ ... final byte), OSC sequences (links, titles: ESC ] ... BEL or
# ESC \), and any other two-byte escape. torch, for one, puts bold in its weights_only error.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")


def plain(text: str) -> str:
    """``text`` without terminal escape sequences: what it says, never how a terminal should show it."""
    return _ESCAPES.sub("", text) if ("\x1b" in text or "\x9b" in text) else text
