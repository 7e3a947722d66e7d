"""The persistent job store: one SQLite database (stdlib ``sqlite3``) in the state directory.

Each job is a row holding its record as JSON, with its status in a column of its own so the
queue can be rebuilt after a restart. Input files live beside it in ``inputs/<id>/``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from lipkit.logs import get_logger
from lipkit.service.models import JobRecord, JobStatus

log = get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
"""


class JobStore:
    """Thread-safe access to the jobs table; every write is committed at once."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, job: JobRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, status, created_at, record) VALUES (?, ?, ?, ?)",
                (job.id, job.status, job.created_at, job.model_dump_json()),
            )

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRecord.model_validate_json(row[0]) if row else None

    def update(self, job_id: str, **fields: Any) -> JobRecord:
        """Set ``fields`` on the job (read-modify-write under the lock) and return it."""
        with self._lock:
            job = self._update_locked(job_id, None, fields)
        assert job is not None
        return job

    def transition(self, job_id: str, expect: set[str], **fields: Any) -> JobRecord | None:
        """Like :meth:`update`, only if the job's status is in ``expect``; else None."""
        with self._lock:
            return self._update_locked(job_id, expect, fields)

    def _update_locked(
        self, job_id: str, expect: set[str] | None, fields: dict[str, Any]
    ) -> JobRecord | None:
        row = self._db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        job = JobRecord.model_validate_json(row[0])
        if expect is not None and job.status not in expect:
            return None
        job = job.model_copy(update={**fields, "updated_at": time.time()})
        job = JobRecord.model_validate(job.model_dump())  # validate the new values
        self._db.execute(
            "UPDATE jobs SET status = ?, record = ? WHERE id = ?",
            (job.status, job.model_dump_json(), job_id),
        )
        return job

    def ids(self, status: JobStatus) -> list[str]:
        """Jobs with ``status``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE status = ? ORDER BY created_at, id", (status,)
            ).fetchall()
        return [r[0] for r in rows]

    def count(self, status: JobStatus) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)
            ).fetchone()
        return int(row[0])

    def recover(self) -> list[str]:
        """After a restart: running jobs go back to the queue (cancelled if that was asked).

        Returns the queued jobs, oldest first.
        """
        for job_id in self.ids("running"):
            job = self.get(job_id)
            if job is not None and job.cancel_requested:
                self.update(job_id, status="cancelled")
            else:
                self.update(job_id, status="queued", phase=None)
                log.info("job re-queued after restart", job=job_id)
        return self.ids("queued")
