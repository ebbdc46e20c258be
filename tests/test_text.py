"""Text from other libraries made fit for a row: no terminal codes, one line."""

from __future__ import annotations

import pytest

from forensix.text import one_line, plain


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Weights only load failed, \x1b[1mdo those steps\x1b[0m only if",
            "Weights only load failed, do those steps only if",
        ),
        ("a link \x1b]8;;http://x\x07here\x1b]8;;\x07", "a link here"),
        ("no codes at all", "no codes at all"),
    ],
)
def test_plain_drops_escape_sequences_and_keeps_the_words(text, expected):
    assert plain(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        # pillow's AVIF decoder ends its message with a newline (a fuzz crasher)
        (
            "Invalid input: Unexpected end of file (points to file position 375)\n",
            "Invalid input: Unexpected end of file (points to file position 375)",
        ),
        # tarfile's r:* says what each compression method found, a line each
        (
            "file could not be opened successfully:\n- method gz: ReadError('x')\n- method tar: ReadError('y')",
            "file could not be opened successfully: - method gz: ReadError('x') - method tar: ReadError('y')",
        ),
        # an EXIF string may hold control characters and a terminal's clear-screen
        ("Canon\x00\x07\x1b[2J EOS\r\n\t5D", "Canon EOS 5D"),
    ],
)
def test_one_line_gives_one_plain_line(text, expected):
    assert one_line(text) == expected
