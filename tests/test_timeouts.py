"""The time budget of one image: a slow decode stops, within a chunk of input, and leaves nothing armed."""

from __future__ import annotations

import signal
import struct
import threading
import time

import pytest

from forensix.imaging import decode_image
from forensix.timeouts import DecodeTimeout, TimeLimit, hard_timeout, stopped

LIMIT_TEXT = "the decode-timeout limit (0.2 s; --decode-timeout raises it, 0 = no limit)"


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _bits(codes: list[tuple[int, int]]) -> bytes:
    """(value, length) Huffman codes packed MSB first, 0xFF stuffed, padded with ones."""
    bits = "".join(format(value, f"0{length}b") if length else "" for value, length in codes)
    bits += "1" * (-len(bits) % 8)
    out = bytearray()
    for k in range(0, len(bits), 8):
        out.append(int(bits[k : k + 8], 2))
        if out[-1] == 0xFF:
            out.append(0)
    return bytes(out)


def many_scans_jpeg(width: int, height: int, scans: int, pad: int = 0) -> bytes:
    """A valid grey progressive JPEG (uniform mid-grey) whose one AC scan is repeated ``scans`` times.

    The shape of issue 14's file (a 2.8 MB 9000x9000 JPEG with 20,000 scans decodes in about 2
    minutes): libjpeg visits every block in every scan, so decoding costs scans x blocks (about 12 ns
    each here) while each scan is a few bytes (end-of-band runs of up to 32767 blocks). ``pad`` bytes
    of comment after each scan spread the scans over Pillow's 64 KiB chunks without costing time.
    """
    blocks = -(-width // 8) * -(-height // 8)
    head = [b"\xff\xd8", _segment(0xDB, b"\x00" + b"\x01" * 64)]
    head.append(_segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"))
    head.append(_segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00"))  # DC: one code, '0' = no change
    eob_runs = bytes(r << 4 for r in range(15))  # AC: the symbols EOBr (runs of 2^r + r extra bits)
    head.append(_segment(0xC4, b"\x10" + bytes([0, 0, 0, 15] + [0] * 12) + eob_runs))
    head.append(_segment(0xDA, b"\x01\x01\x00\x00\x00\x00") + _bits([(0, 1)] * blocks))
    runs, left = [], blocks
    while left:
        run = min(left, 32767)
        r = run.bit_length() - 1
        runs += [(r, 4), (run - (1 << r), r)]
        left -= run
    scan = _segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + _bits(runs)  # AC 1-63, first pass, all blocks empty
    if pad:
        scan += _segment(0xFE, bytes(pad))
    return b"".join(head) + scan * scans + b"\xff\xd9"


def slow_jpeg() -> bytes:
    """About 4 s to decode on an idle core here, spread over 97 chunks of Pillow's input (40 ms each): 6 MB."""
    return many_scans_jpeg(1024, 1024, 20_000, pad=300)


def stuck_jpeg() -> bytes:
    """About 2 s to decode on an idle core here, all in one call of the C decoder (its 53 KB fit one chunk)."""
    return many_scans_jpeg(2048, 2048, 2_500)


def test_many_scans_jpeg_is_a_valid_image():
    decoded = decode_image(many_scans_jpeg(100, 60, 5, pad=10))
    assert decoded.format == "JPEG" and decoded.image.size == (100, 60)
    assert decoded.image.getextrema() == ((128, 128),) * 3


def test_a_slow_decode_stops_within_a_chunk_and_nothing_stays_armed():
    data = slow_jpeg()
    before = signal.getsignal(signal.SIGALRM)
    started = time.perf_counter()
    with pytest.raises(DecodeTimeout) as raised:
        with TimeLimit(0.2):
            decode_image(data)
    elapsed = time.perf_counter() - started
    assert str(raised.value) == f"decoding took longer than {LIMIT_TEXT}"
    assert elapsed < 2.0  # the whole decode takes about 4 s; a chunk about 40 ms
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) is before


def test_a_decode_stuck_in_one_call_is_an_error_when_it_returns():
    with pytest.raises(DecodeTimeout, match="--decode-timeout"):
        with TimeLimit(0.2):
            decode_image(stuck_jpeg())  # the signal waits for the decoder: only a worker can be stopped sooner


def test_a_swallowed_timeout_is_raised_again_when_the_budget_ends():
    swallowed = []
    with pytest.raises(DecodeTimeout, match="longer than the decode-timeout limit"):
        with TimeLimit(0.05):
            try:  # a notes reader that catches everything
                while True:
                    time.sleep(0.01)
            except Exception as e:
                swallowed.append(e)
    assert isinstance(swallowed[0], DecodeTimeout)


def test_another_error_on_the_way_out_of_a_timed_out_decode_is_the_timeout():
    with pytest.raises(DecodeTimeout):
        with TimeLimit(0.05):
            try:
                time.sleep(1)
            except DecodeTimeout as e:
                raise OSError("a decoder's wrapper turned it into its own error") from e


def test_a_fast_body_is_untouched_and_zero_or_another_thread_sets_no_limit():
    with TimeLimit(5):
        pass
    with TimeLimit(0):
        time.sleep(0.05)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    errors = []

    def in_a_thread() -> None:
        try:
            with TimeLimit(0.01):
                time.sleep(0.1)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert errors == []


def test_the_hard_limit_is_twice_the_budget_and_says_so():
    assert hard_timeout(0.2) == 0.4 and hard_timeout(0) is None
    assert stopped(0.2) == f"its process was stopped still decoding it after 0.4 s, past {LIMIT_TEXT}"


def test_a_sigalrm_in_use_by_the_program_is_left_alone():
    """An embedding program's own timer and handler survive a decode: no limit is set over them."""
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with TimeLimit(0.05):
            time.sleep(0.1)  # past the budget: no timeout, since the timer is the program's
        assert 0.1 < signal.getitimer(signal.ITIMER_REAL)[0] <= 0.2  # still running, not cancelled
        time.sleep(0.3)
        assert fired == [True]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
