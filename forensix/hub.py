"""Weights hosted on the Hugging Face Hub, fetched with huggingface_hub.

The file is downloaded into huggingface_hub's own cache (``HF_HOME``, ``HF_HUB_CACHE``), at the
revision the manifest pins, so offline mode (``HF_HUB_OFFLINE=1``), a cache shared with open_clip
and ``HF_ENDPOINT`` mirrors all work as they do for any Hub user. huggingface_hub does not check
what it downloaded against the Hub's sha256 (the ETag of an LFS file), so this module does, against
the manifest's sha256 and the Hub's, before the file is linked (or copied) into the weights folder
under the manifest's name. huggingface_hub is imported only when a Hub file is fetched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .digests import sha256_file
from .download import ChecksumError, DownloadError
from .files import replacing
from .pins import is_sha256
from .weights import HubFile

Progress = Callable[[int, int | None], None]


def fetch_from_hub(
    hub: HubFile,
    dest: Path,
    *,
    sha256: str,
    size: int | None,
    progress: Progress | None = None,
) -> str:
    """Download ``hub`` and place it at ``dest`` (a hard link into the Hub cache, else a copy); its sha256.

    ``sha256``/``size``: what the manifest says the file is (every Hub file has a sha256 there). The
    Hub's own sha256 and size (when it can be asked: not offline) must agree, and so must the bytes.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    where = str(hub)
    endpoint = os.environ.get("HF_ENDPOINT") or None  # as set now, not at huggingface_hub's import
    hub_sha, hub_size, reachable = None, None, not _offline()
    if reachable:
        try:
            meta = get_hf_file_metadata(hf_hub_url(hub.repo, hub.filename, revision=hub.revision, endpoint=endpoint))
            hub_sha = meta.etag.lower() if meta.etag and is_sha256(meta.etag.lower()) else None
            hub_size = meta.size
        except Exception as e:  # noqa: BLE001 - an answer (404, 401…) is final; no connection: try the cache
            from huggingface_hub import errors

            if isinstance(e, errors.HfHubHTTPError):
                raise DownloadError(f"cannot fetch {where} -> {dest}: {_hub_reason(e, True)}") from None
            reachable = False  # huggingface_hub would retry for a minute before looking in its cache
    sha256 = sha256.lower()
    if hub_sha and hub_sha != sha256:  # before downloading what would be refused
        raise ChecksumError(f"{where}: the Hub says sha256 {hub_sha}, the manifest {sha256}; nothing kept")
    try:
        cached = Path(
            hf_hub_download(
                hub.repo,
                hub.filename,
                revision=hub.revision,
                endpoint=endpoint,
                local_files_only=not reachable,
                tqdm_class=_bar_class(progress) if progress is not None else None,
            )
        )
    except Exception as e:  # noqa: BLE001 - huggingface_hub raises many kinds; each is one line here
        raise DownloadError(f"cannot fetch {where} -> {dest}: {_hub_reason(e, reachable)}") from None
    expected_size = size or hub_size
    actual_size = cached.stat().st_size
    if expected_size is not None and actual_size != expected_size:
        raise DownloadError(f"{where}: {actual_size} bytes in the Hub cache ({cached}), expected {expected_size}")
    digest = sha256_file(cached)
    if digest != sha256:
        raise ChecksumError(
            f"sha256 mismatch for {where} (Hub cache file {cached}): expected {sha256}, got {digest}; "
            "nothing kept: delete that file from the Hub cache and fetch again"
        )
    _place(cached, dest)
    return digest


def _offline() -> bool:
    """HF_HUB_OFFLINE, as huggingface_hub read it at import or as set since."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _place(cached: Path, dest: Path) -> None:
    """Put the Hub cache's file at ``dest`` whole: a hard link (no second copy), else a copy."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with replacing(dest) as tmp:
            try:
                os.link(os.path.realpath(cached), tmp)
            except OSError:  # another file system, or links not allowed: a copy
                shutil.copyfile(cached, tmp)
    except OSError as e:
        raise DownloadError(f"cannot place {cached} at {dest}: {e.strerror or e}") from None


def _hub_reason(error: Exception, reachable: bool) -> str:
    """One line for what huggingface_hub raised: offline, unreachable, not found, or its own words."""
    from huggingface_hub import errors

    if isinstance(error, errors.LocalEntryNotFoundError):
        if _offline():
            return "offline (HF_HUB_OFFLINE is set) and not in the Hugging Face cache"
        if not reachable:
            return "the Hugging Face Hub cannot be reached (offline?), and the file is not in its cache"
    if isinstance(error, errors.RevisionNotFoundError):
        return "the Hub has no such revision"
    if isinstance(error, (errors.RepositoryNotFoundError, errors.RemoteEntryNotFoundError)):
        return "the Hub has no such repository or file (or it needs a login: HF_TOKEN)"
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]


def _bar_class(progress: Progress) -> type:
    """A tqdm class that reports bytes to ``progress`` and draws nothing (the caller draws)."""
    from tqdm.auto import tqdm

    class Report(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = kwargs.get("initial", 0) or 0
            progress(self.done, self.total)

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            progress(self.done, self.total)
            return None

    return Report
