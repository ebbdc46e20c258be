"""Raw logits cached by image sha256 and model, shared by eval, calibrate and scan (``--cache``).

A logit depends on the image's bytes, the weights, the architecture and preprocessing, and the
precision (:func:`model_key`), not on the threshold or temperature, which are applied on reading.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .detector import Detector
from .runner import ModelInfo

CACHE_FILE = "predictions.sqlite"
CLEAN = "none"  # the perturbation name of unperturbed images (eval's clean pass, and every scan)


class PredictionCache:
    """Raw logits by (image sha256, model key, perturbation) in one SQLite file.

    Workers read through their own connections (opened lazily per process: a connection can't
    cross a fork or a pickle); the main process writes. WAL mode lets both go on at once, and
    several evals may share the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db()
        except OSError as e:
            raise OSError(f"prediction cache {self.path}: {e.strerror or e}") from None
        except sqlite3.Error as e:
            raise OSError(f"prediction cache {self.path}: {e}") from None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self._conn = sqlite3.connect(self.path, timeout=60)
            self._pid = os.getpid()
            self._conn.execute("PRAGMA journal_mode=WAL")
            # A cache may lose its last writes in a power cut, never its consistency: no fsync per commit
            # (the scan commits once per batch, from the thread that feeds the GPU).
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS logits (sha256 TEXT, model TEXT, perturbation TEXT, logit REAL, "
                "PRIMARY KEY (sha256, model, perturbation)) WITHOUT ROWID"
            )
        return self._conn

    def get(self, sha256: str, model: str, perturbation: str) -> float | None:
        query = "SELECT logit FROM logits WHERE sha256=? AND model=? AND perturbation=?"
        row = self._db().execute(query, (sha256, model, perturbation)).fetchone()
        return None if row is None else float(row[0])

    def put_many(self, rows: Sequence[tuple[str, str, str, float]]) -> None:
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO logits VALUES (?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM logits").fetchone()[0])

    def counts(self) -> list[tuple[str, str, int]]:
        """(model key, perturbation, logits) for everything stored, by model key and perturbation."""
        query = "SELECT model, perturbation, COUNT(*) FROM logits GROUP BY model, perturbation ORDER BY 1, 2"
        return [(str(m), str(p), int(n)) for m, p, n in self._db().execute(query)]

    def clear(self, model_prefix: str = "") -> int:
        """Drop the logits of the model keys starting with ``model_prefix`` (all by default); how many went.

        The file is compacted afterwards, so that it shrinks on disk.
        """
        with self._db() as db:
            query = "DELETE FROM logits WHERE substr(model, 1, length(?1)) = ?1"
            gone = db.execute(query, (model_prefix,)).rowcount
        db = self._db()
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the compacted pages into the file, the log emptied
        return int(gone)

    def size_bytes(self) -> int:
        """On disk: the database and its write-ahead log (where recent writes wait for a checkpoint)."""
        files = (self.path, self.path.with_name(self.path.name + "-wal"))
        return sum(f.stat().st_size for f in files if f.exists())

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_conn": None, "_pid": 0}


def weights_identity(info: ModelInfo) -> str:
    """sha256 of the weights' tensors' origin: a calibrated copy keeps the file it was made from."""
    return str(info.provenance.get("calibration", {}).get("weights_sha256") or info.sha256)


def model_key(detector: Detector) -> str:
    """What a raw logit depends on: weights, architecture and preprocessing, precision (not threshold or band).

    onnxruntime computes fp16 otherwise than torch's autocast, so its logits get keys of their own.
    """
    arch = replace(detector.config, threshold=0.5, temperature=1.0, band_low=None).to_json()
    key = f"{weights_identity(detector.info)}:{hashlib.sha256(arch.encode()).hexdigest()[:16]}:{detector.precision}"
    return key if detector.backend.name == "torch" else f"{key}:{detector.backend.name}"
