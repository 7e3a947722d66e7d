"""A job's work directory: finished segments, their manifest, and a lock.

The directory is named by a key over the inputs' content and every setting that changes the
output, so a re-run with the same inputs and settings finds the finished segments and resumes.
A second concurrent job with the same key cannot take the lock and gets a fresh directory of its
own: concurrent jobs never share one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import IO, Any

from lipkit.errors import ResourceError
from lipkit.logs import get_logger
from lipkit.weights import sha256_of

log = get_logger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def content_key(*parts: Any) -> str:
    """A stable hash of JSON-able parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def unusable_work_dir(root: Path, exc: OSError) -> ResourceError:
    """The error for a work directory that cannot be made or written (read-only, a file, ...)."""
    reason = exc.strerror or type(exc).__name__
    return ResourceError(
        f"cannot write lipkit's work directory {root}: {reason}",
        hint="give a writable folder with --work-dir (the work_dir setting), or point "
        "LIPKIT_HOME at a writable folder (models may stay in a read-only LIPKIT_HOME "
        "when the work directory is elsewhere)",
    )


def _lock_exclusive(handle: IO[str]) -> bool:
    """Take an exclusive, non-blocking lock on an open file; False if another process has it.

    The lock dies with the process (also on SIGKILL), so a killed job never blocks its re-run.
    """
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class WorkDir:
    """An exclusively locked job directory with an atomically updated manifest."""

    def __init__(self, root: Path, key: str, meta: dict[str, Any]) -> None:
        self.key = key
        self.meta = meta
        self._lock: IO[str] | None = None
        try:
            self._open(root)
        except OSError as exc:
            self.release(remove=False)
            raise unusable_work_dir(root, exc) from exc
        self.manifest = self._read_manifest()

    def _open(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / self.key[:24]
        if not self._try_lock(self.path):
            # another job with the same key is running: never share its directory
            self.path = root / f"{self.key[:24]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            if not self._try_lock(self.path):
                raise RuntimeError(f"cannot lock fresh work directory {self.path}")
            log.info("work directory busy; using a private one", path=str(self.path))

    def _try_lock(self, path: Path) -> bool:
        path.mkdir(parents=True, exist_ok=True)
        handle = (path / "lock").open("w")
        if not _lock_exclusive(handle):
            handle.close()
            return False
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle
        return True

    def _read_manifest(self) -> dict[str, Any]:
        fresh = {"version": MANIFEST_VERSION, "key": self.key, "meta": self.meta, "segments": {}}
        path = self.path / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return fresh
        if data.get("version") != MANIFEST_VERSION or data.get("key") != self.key:
            return fresh
        return data

    def _write_manifest(self) -> None:
        tmp = self.path / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=1, sort_keys=True))
        os.replace(tmp, self.path / MANIFEST)

    def segment_path(self, index: int, suffix: str = ".mp4") -> Path:
        return self.path / f"segment_{index:05d}{suffix}"

    def finished(self, index: int, frames: int) -> Path | None:
        """The segment's file if it was finished intact with ``frames`` frames, else None."""
        entry = self.manifest["segments"].get(str(index))
        if not entry or entry.get("frames") != frames:
            return None
        path = self.path / entry["file"]
        if not path.is_file() or path.stat().st_size != entry.get("size"):
            return None
        if sha256_of(path) != entry.get("sha256"):
            return None
        return path

    def record(
        self, index: int, path: Path, frames: int, extra: dict[str, Any] | None = None
    ) -> None:
        """Mark segment ``index`` finished (after its file is complete on disk)."""
        self.manifest["segments"][str(index)] = {
            "file": path.name,
            "frames": frames,
            "size": path.stat().st_size,
            "sha256": sha256_of(path),
            **(extra or {}),
        }
        self._write_manifest()

    def release(self, *, remove: bool) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if remove:
            shutil.rmtree(self.path, ignore_errors=True)


def file_digest(path: Path) -> str:
    """Content hash of an input file, memoised by (path, size, mtime) for the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    cached = _DIGESTS.get(key)
    if cached is None:
        cached = _DIGESTS[key] = sha256_of(path)
    return cached


_DIGESTS: dict[tuple[str, int, int], str] = {}
