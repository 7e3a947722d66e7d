"""The summary of a batch: a table of rows, and the exit code it ends with."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from lipkit.batch.jobs import RowResult

EXIT_ROWS_FAILED = 8
"""Exit code of ``lipkit batch`` when at least one row failed (the others ran to the end).

The batch's own problems keep the usual codes: 2 for an unreadable CSV or bad options,
130 when interrupted (run it again to resume)."""


class BatchSummary(BaseModel):
    """Every row's result, in row order, and what they add up to."""

    results: list[RowResult]
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "skipped": 0, "failed": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    @property
    def exit_code(self) -> int:
        return EXIT_ROWS_FAILED if self.counts["failed"] else 0


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def first_line(text: str | None) -> str:
    """An error's first line, with the next one when it ends in a colon (a list follows)."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def format_summary(summary: BatchSummary) -> str:
    """The summary table (row, output, status, seconds, LSE-C and LSE-D when a scorer ran,
    error), hints of failed rows below it, and a closing line with the counts."""
    header = ["row", "output", "status", "seconds"]
    rows = [
        [
            str(r.row),
            str(r.output) if r.output is not None else "-",
            r.status,
            f"{r.seconds:.1f}" if r.status != "skipped" else "-",
        ]
        for r in summary.results
    ]
    if any(r.lse_c is not None for r in summary.results):  # a scorer ran: LSE columns
        header += ["lse-c", "lse-d"]
        for cells, r in zip(rows, summary.results, strict=True):
            cells += ["-", "-"] if r.lse_c is None else [f"{r.lse_c:.3f}", f"{r.lse_d:.3f}"]
    for cells, r in zip(rows, summary.results, strict=True):
        cells.append(first_line(r.error))
    parts = [_table(rows, (*header, "error"))]
    details = []
    for r in summary.results:
        if r.status != "failed":
            continue
        rest = (r.error or "").strip().splitlines()[1:]
        if rest or r.hint:
            details.append(f"row {r.row}:")
            details += [f"  {line.strip()}" for line in rest]
            if r.hint:
                details.append(f"  hint: {r.hint}")
    if details:
        parts.append("\n".join(details))
    c = summary.counts
    parts.append(
        f"{len(summary.results)} rows: {c['ok']} ok, {c['skipped']} skipped (already done), "
        f"{c['failed']} failed in {summary.seconds:.1f} s"
        + ("; fix them and run the same command again" if c["failed"] else "")
    )
    return "\n\n".join(parts)
