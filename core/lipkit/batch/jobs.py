"""A batch's jobs: CSV rows parsed into :class:`JobRow`, their settings, and the resume state.

Columns ``face``, ``audio`` and ``output`` are paths (relative ones are taken from the CSV's
folder), ``backend`` names the generator; every other column is a setting of
:class:`lipkit.config.LipkitSettings` (``fps``, ``seed``, ``device``, ``length_policy``, ...;
a section's key as ``section.key``: ``face.pads``, ``output.crf``, ``memory.batch_size``) or else a
backend parameter. An empty cell leaves that column unset for the row. Values are read as JSON
when they parse (``25``, ``true``, ``[0, 10, 0, 0]``), else as plain text.

A row that cannot run (an empty face cell, a bad setting, an output named twice) is kept as a
failed row with its message; only a CSV that cannot be read at all is an error of the batch.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lipkit.config import LipkitSettings, load_settings
from lipkit.errors import ConfigError, LipkitError
from lipkit.logs import get_logger
from lipkit.pipeline.workdir import content_key

log = get_logger(__name__)

PATH_COLUMNS = ("face", "audio", "output")
REQUIRED_COLUMNS = ("face", "output")
SECTIONS = ("face", "input", "output", "memory")
_SETTING_NAMES = set(LipkitSettings.model_fields)
STATE_VERSION = 1
_NOT_IN_KEY = {"home", "work_dir", "keep_work", "resume"}
"""Settings that do not change a row's output, so not part of its key in the batch state."""

Status = Literal["ok", "skipped", "failed"]


class JobRow(BaseModel):
    """One CSV row, resolved: absolute paths, settings overrides and backend parameters."""

    model_config = ConfigDict(frozen=True)

    row: int = Field(description="1-based row number, not counting the header")
    face: Path | None
    audio: Path | None
    output: Path | None
    backend: str | None = None
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="settings the row sets (nested for sections)"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="backend parameters")
    error: str | None = Field(default=None, description="why the row cannot run, if it cannot")


class RowTask(BaseModel):
    """What a worker needs to run a row: the row and its fully resolved settings."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    row: JobRow
    settings: LipkitSettings
    key: str = Field(description="content key of the row's job, for the resume state")
    part: tuple[int, int] | None = Field(
        default=None, description="(k, n): this task makes part k of n of the row's job"
    )
    score: bool = Field(default=True, description="score the output when a scorer can run")


class RowResult(BaseModel):
    """How a row ended."""

    row: int
    output: Path | None
    status: Status
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None
    exit_code: int = 0
    frames: int | None = None
    resumed_segments: int = 0
    part: tuple[int, int] | None = Field(
        default=None, description="set on a part's result (k, n); the row's result has none"
    )
    segment_files: list[Path] = Field(
        default_factory=list, description="a part's finished segments, for the join"
    )
    lse_c: float | None = Field(default=None, description="the output's LSE-C, when scored")
    lse_d: float | None = Field(default=None, description="the output's LSE-D, when scored")


def _cell(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _path(raw: str, base: Path) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else base / path


def _parse_row(number: int, cells: dict[str, str], base: Path) -> JobRow:
    paths: dict[str, Path | None] = {}
    for name in PATH_COLUMNS:
        raw = (cells.get(name) or "").strip()
        paths[name] = _path(raw, base) if raw else None
    backend = (cells.get("backend") or "").strip() or None
    overrides: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for column, raw in cells.items():
        if column in PATH_COLUMNS or column == "backend" or raw is None or not raw.strip():
            continue
        name = column.strip().replace("-", "_")
        value = _cell(raw.strip())
        section, dot, key = name.partition(".")
        if dot and section in SECTIONS:
            overrides.setdefault(section, {})[key] = value
        elif name in _SETTING_NAMES and name not in SECTIONS:
            overrides[name] = value
        else:
            params[name] = value
    error = None
    missing = [name for name in REQUIRED_COLUMNS if paths[name] is None]
    if missing:
        error = f"row {number}: empty {' and '.join(missing)} cell"
    return JobRow(
        row=number,
        face=paths["face"],
        audio=paths["audio"],
        output=paths["output"],
        backend=backend,
        overrides=overrides,
        params=params,
        error=error,
    )


def read_jobs(csv_path: str | os.PathLike[str]) -> list[JobRow]:
    """Parse a batch CSV. Raises ConfigError only when the file itself is unusable."""
    path = Path(csv_path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"batch file not found: {path}", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read batch file {path}: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if not columns:
        raise ConfigError(
            f"batch file {path} is empty",
            hint="the first line names the columns: face,audio,output",
        )
    lacking = [c for c in REQUIRED_COLUMNS if c not in columns]
    if lacking:
        raise ConfigError(
            f"batch file {path} has no {' or '.join(lacking)} column (columns: "
            f"{', '.join(columns)})",
            hint="the first line names the columns: face,audio,output,backend,...",
        )
    if len(set(columns)) != len(columns):
        raise ConfigError(f"batch file {path} names a column twice: {', '.join(columns)}")
    base = path.resolve().parent
    rows: list[JobRow] = []
    for number, record in enumerate(reader, start=1):
        extra = record.pop(None, None)
        cells = {(k or "").strip(): v for k, v in record.items()}
        if not any((v or "").strip() for v in cells.values()) and not extra:
            continue  # blank line
        row = _parse_row(number, cells, base)
        if extra:
            row = row.model_copy(
                update={"error": f"row {number}: more cells than columns ({len(columns)})"}
            )
        rows.append(row)
    if not rows:
        raise ConfigError(f"batch file {path} has no rows", hint="add one line per job")
    return _flag_duplicates(rows)


def _flag_duplicates(rows: list[JobRow]) -> list[JobRow]:
    """A second row writing the same output fails instead of overwriting the first's."""
    first: dict[Path, int] = {}
    out = []
    for row in rows:
        if row.output is not None and row.error is None:
            key = row.output.resolve()
            if key in first:
                row = row.model_copy(
                    update={
                        "error": f"row {row.row}: output {row.output} is also row "
                        f"{first[key]}'s output"
                    }
                )
            else:
                first[key] = row.row
        out.append(row)
    return out


def _stat(path: Path | None) -> list[Any] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return [str(path)]
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def prepare_task(row: JobRow, config: Path | None = None) -> RowTask:
    """The row's settings, resolved here (config file, preset, environment, row overrides),
    so every worker, on any machine, runs the same job. Raises ConfigError for bad settings."""
    overrides = dict(row.overrides)
    if row.backend is not None:
        overrides["backend"] = row.backend
    settings = load_settings(overrides, config_file=config)
    key = content_key(
        "lipkit-batch-row",
        _stat(row.face),
        _stat(row.audio),
        str(row.output.resolve()) if row.output else None,
        settings.model_dump(mode="json", exclude=_NOT_IN_KEY),
        row.params,
    )
    return RowTask(row=row, settings=settings, key=key)


def failed(row: JobRow, exc: BaseException | str, seconds: float = 0.0) -> RowResult:
    """A failed row's result, from an error or a message."""
    if isinstance(exc, str):
        return RowResult(row=row.row, output=row.output, status="failed", error=exc, exit_code=2)
    if isinstance(exc, LipkitError):
        return RowResult(
            row=row.row,
            output=row.output,
            status="failed",
            seconds=seconds,
            error=exc.message,
            hint=exc.hint,
            exit_code=exc.exit_code,
        )
    return RowResult(
        row=row.row,
        output=row.output,
        status="failed",
        seconds=seconds,
        error=f"internal error: {type(exc).__name__}: {exc}",
        hint="run the row alone with `lipkit run --debug` for a traceback, and report it",
        exit_code=1,
    )


class BatchState:
    """Which rows finished, kept next to the CSV (``.NAME.lipkit-batch.json``).

    A row is skipped on a re-run when its output exists with the size and modification time
    recorded when it finished, under the same content key (same inputs, settings and
    parameters). Written atomically, by the parent process only.
    """

    def __init__(self, csv_path: Path) -> None:
        self.path = csv_path.resolve().parent / f".{csv_path.name}.lipkit-batch.json"
        self.rows: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return
        if isinstance(data, dict) and data.get("version") == STATE_VERSION:
            self.rows = dict(data.get("rows") or {})

    def finished(self, task: RowTask) -> bool:
        entry = self.rows.get(task.key)
        out = task.row.output
        if not entry or out is None:
            return False
        try:
            st = out.stat()
        except OSError:
            return False
        return bool(st.st_size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns"))

    def record(self, task: RowTask) -> None:
        out = task.row.output
        if out is None:
            return
        st = out.stat()
        self.rows[task.key] = {
            "output": str(out),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"version": STATE_VERSION, "rows": self.rows}, indent=1))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot write the batch state; a re-run redoes this row", error=str(exc))
