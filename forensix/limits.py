"""The limits that keep hostile inputs (decompression and zip bombs, huge files, slow decodes) from exhausting
memory or time, and the sizes that bound the HTML report's pictures.

Their one home, free of heavy imports: the command line shows the defaults in ``--help`` without
loading torch, and a scan's ``.meta.json`` records them so that a resume can insist on the same.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own bomb limit (2x its warning threshold)
DEFAULT_MAX_BYTES = 512 * 1024 * 1024  # one file or member
DEFAULT_MAX_ARCHIVE_BYTES = 64 * 1024**3  # uncompressed total of one archive
DEFAULT_MAX_RATIO = 200.0  # uncompressed / compressed size of a zip member
# Seconds to decode one image, read its notes and preprocess it. A 100-megapixel JPEG decodes in
# about 2 s here; a progressive JPEG of a few MB with thousands of scans takes minutes (issue 14).
DEFAULT_DECODE_TIMEOUT = 30.0
# A worker process still decoding one image at this multiple of its budget is killed (the decoder is
# stuck in C, where the budget's own signal cannot reach it; see forensix/timeouts.py).
HARD_TIMEOUT_FACTOR = 2.0
# The HTML report's pictures, long edge in px: what bounds its folder (docs/report.md: MB per 1,000 images).
THUMB_SIZE = 256  # a card's
PREVIEW_SIZE = 1024  # the detail view's (an image smaller keeps its size)


@dataclass(frozen=True)
class Limits:
    """What reading the inputs may cost: bytes of one file or member, of one archive, a zip member's ratio."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES
    max_ratio: float = DEFAULT_MAX_RATIO
