"""Resumable HTTP(S) downloads with sha256 verification, using only the standard library.

A download goes to ``<dest>.part`` and is moved onto ``dest`` only once it is complete and verified,
so ``dest`` is never a partial file. An interrupted download leaves the ``.part`` file behind, and
the next call asks the server for the rest with a ``Range`` request.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .digests import sha256_file

CHUNK = 1 << 20
SCHEMES = ("http", "https", "file")

Progress = Callable[[int, int | None], None]


class DownloadError(Exception):
    """A download failed; the message is one line naming what went wrong, the url and the file."""


class ChecksumError(DownloadError):
    """The downloaded file's sha256 is not the expected one."""


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
    check: Callable[[Path, str], None] | None = None,
) -> str:
    """Download url to dest atomically; return the sha256 hex digest of the file.

    ``check(part, digest)``, if given, is called on the complete file (before the sha256 is compared,
    so it can say what arrived) and before it is moved onto ``dest``; an exception it raises deletes
    the file and is raised.

    A partial file is resumed only when the whole file's sha256 is known (a splice would not match
    it), or when it came from the same ``url`` and the server named its version (ETag or
    Last-Modified, sent back as If-Range, so a file changed since is fetched whole).
    """
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise DownloadError(f"unsupported URL scheme {scheme or '(none)'!r} (only http, https, file): {url} -> {dest}")
    if dest.is_file():
        digest = sha256_file(dest)
        if sha256 is None or digest == sha256.lower():
            return digest

    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create folder {dest.parent} for {url}: {e}") from e
    offset = part.stat().st_size if part.is_file() else 0
    source = _read_source(part)
    same_source = source is not None and source.get("url") == url and bool(source.get("validator"))
    if offset and sha256 is None and not same_source:  # a splice of two files could not be caught
        _discard(part)
        offset = 0
    validator = source.get("validator") if same_source else None
    if size is not None and offset > size:
        _discard(part)
        offset = 0
    if size is not None and offset == size:
        if progress is not None:
            progress(offset, size)
    else:
        _fetch(url, part, offset, size, progress, timeout, validator)
    return _finish(url, part, dest, sha256, size, check)


def _source_of(part: Path) -> Path:
    """Where a partial download notes its url and the version the server named (for a safe resume)."""
    return part.with_name(part.name + ".source")


def _read_source(part: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(_source_of(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _validator(headers: Any) -> str | None:
    """The version a server gives a file: a strong ETag, else its Last-Modified date."""
    etag = headers.get("ETag")
    return etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")


def _same_version(headers: Any, validator: str | None) -> bool:
    """False when a resumed response says it is another version than the one the partial file holds."""
    now = _validator(headers)
    return validator is None or now is None or now == validator


def _note_source(part: Path, url: str, headers: Any) -> None:
    """Record the url and the server's version of the file whose bytes start ``part``."""
    validator = _validator(headers)
    try:
        _source_of(part).write_text(json.dumps({"url": url, "validator": validator}), encoding="utf-8")
    except OSError:
        pass  # without it the partial file is only resumed against a known sha256


def _fetch(
    url: str,
    part: Path,
    offset: int,
    size: int | None,
    progress: Progress | None,
    timeout: float,
    validator: str | None = None,
) -> None:
    """Fetch url into part, appending from offset when the server honours the Range request."""
    resp = _open(url, part, offset, timeout, validator)
    if resp is None and offset:
        # 416 with the .part as long as the file: it is already whole, and verification decides.
        if progress is not None:
            progress(offset, offset)
        return
    if resp is None:
        raise DownloadError(f"HTTP 416 Range Not Satisfiable for {url} without a Range request -> {part}")

    with resp:
        status = resp.status
        length = _int(resp.headers.get("Content-Length"))
        if status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if (start is not None and start != offset) or not _same_version(resp.headers, validator):
                # Appending would corrupt the file (another offset, or a server that ignored If-Range
                # and sent another version's bytes): fetching it whole is the safe answer.
                resp.close()
                _discard(part)
                return _fetch(url, part, 0, size, progress, timeout)
            if total is None and length is not None:
                total = offset + length
        else:
            # 200 (or a file: URL): the body is the whole file (a changed one, after If-Range), so any
            # partial file is dropped.
            offset = 0
            total = length
            _source_of(part).unlink(missing_ok=True)  # the old bytes' version no longer describes the file
        if size is not None and total is not None and total != size:
            _discard(part)
            raise DownloadError(f"server reports {total} bytes for {url}, expected {size} -> {part}")

        done = offset
        if progress is not None:
            progress(done, total)
        try:
            f = open(part, "ab" if offset else "wb")
        except OSError as e:
            raise DownloadError(f"cannot write {part} for {url}: {e}") from e
        if not offset:  # only now that part holds none of the old bytes
            _note_source(part, url, resp.headers)
        with f:
            while True:
                try:
                    block = resp.read(CHUNK)
                except http.client.IncompleteRead as e:
                    # The bytes of the failed read are good; keeping them makes the resume start later.
                    if e.partial:
                        _write(f, e.partial, url, part)
                        done += len(e.partial)
                    raise _truncated(url, part, done, total, "connection closed mid-transfer") from e
                except (http.client.HTTPException, OSError) as e:
                    raise _truncated(url, part, done, total, _reason(e)) from e
                if not block:
                    break
                _write(f, block, url, part)
                done += len(block)
                if progress is not None:
                    progress(done, total)
    # http.client returns b"" rather than raising when the peer closes before Content-Length arrives.
    if total is not None and done < total:
        raise _truncated(url, part, done, total, "connection closed early")


def _open(url: str, part: Path, offset: int, timeout: float, validator: str | None = None) -> Any:
    """Open url (asking for bytes from offset on, if still ``validator``'s version); the response, or None
    where the server answered 416."""
    req = urllib.request.Request(url, headers={"User-Agent": "forensix", "Accept-Encoding": "identity"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
        if validator:
            req.add_header("If-Range", validator)
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416:
            _, total = _content_range(e.headers.get("Content-Range") if e.headers else None)
            if offset and total is not None and total != offset:
                _discard(part)
                return _open(url, part, 0, timeout)
            return None
        raise DownloadError(f"HTTP {e.code} {e.reason} for {url} -> {part}") from e
    except urllib.error.URLError as e:
        raise DownloadError(f"cannot fetch {url} -> {part}: {_unreachable(url, e.reason)}") from e
    except (http.client.HTTPException, OSError, ValueError) as e:
        raise DownloadError(f"cannot fetch {url} -> {part}: {_unreachable(url, e)}") from e


def _finish(
    url: str, part: Path, dest: Path, sha256: str | None, size: int | None, check: Callable[[Path, str], None] | None
) -> str:
    """Check the finished .part file's size and digest, then move it onto dest."""
    if not part.is_file():
        raise DownloadError(f"no data received from {url} -> {part}")
    actual = part.stat().st_size
    if size is not None and actual != size:
        if actual > size:
            _discard(part)
        raise DownloadError(f"got {actual} bytes from {url}, expected {size} -> {part}")
    digest = sha256_file(part)
    if check is not None:
        try:
            check(part, digest)
        except Exception:  # not Ctrl-C: the complete file stays (resumed, it is checked again)
            _discard(part)
            raise
    if sha256 is not None and digest != sha256.lower():
        _discard(part)
        raise ChecksumError(f"sha256 mismatch for {url} -> {dest}: expected {sha256.lower()}, got {digest}")
    try:
        os.replace(part, dest)
    except OSError as e:
        raise DownloadError(f"cannot move {part} onto {dest} for {url}: {e}") from e
    _source_of(part).unlink(missing_ok=True)
    return digest


def _truncated(url: str, part: Path, done: int, total: int | None, reason: str) -> DownloadError:
    of = f" of {total}" if total is not None else ""
    return DownloadError(
        f"download of {url} stopped after {done}{of} bytes ({reason}); partial file kept at {part}, re-running resumes"
    )


def _write(f: BinaryIO, block: bytes, url: str, part: Path) -> None:
    try:
        f.write(block)
    except OSError as e:
        raise DownloadError(f"cannot write {part} for {url}: {e}") from e


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _source_of(part).unlink(missing_ok=True)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) from 'bytes START-END/TOTAL' or 'bytes */TOTAL'; None where absent or '*'."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _unreachable(url: str, e: object) -> str:
    """Why an address can't be reached, in words (offline machines get a DNS error, not a refusal)."""
    host = urllib.parse.urlsplit(url).hostname or url
    if isinstance(e, socket.gaierror):
        return f"{host} cannot be reached: its name does not resolve (offline, or no DNS)"
    if isinstance(e, ConnectionRefusedError):
        return f"{host} refused the connection"
    if isinstance(e, TimeoutError):
        return f"{host} did not answer in time"
    return _reason(e)


def _reason(e: object) -> str:
    text = str(e) or type(e).__name__
    return " ".join(text.split())
