"""`hfmem check`'s summary: a table for people, a GitHub Markdown table for pull-request comments,
or JSON; one row per model checked, its columns defined once for both tables."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from .checks import CheckResult, overall_exit_code
from .columns import Column, table
from .text import markdown_text, terminal_safe


def _fit_or_blank(value: Callable[[CheckResult], str]) -> Callable[[CheckResult], str]:
    """A column that shows only for a model that fits."""
    return lambda r: value(r) if r.error is None and r.fits else ""


def _detail(r: CheckResult) -> str:
    if r.error is not None:
        return r.error
    if r.train is not None:
        t = r.train
        what = f"{t.estimate.settings.method}, {t.estimate.precision}"
        if t.fits:
            return what
        more = f"; {t.gpus_needed} GPUs with ZeRO-{t.gpus_needed_zero}" if t.gpus_needed else ""
        return f"{what}: needs {t.estimate.total_bytes / 2**30:.1f} of {t.usable_bytes / 2**30:.1f} GiB{more}"
    f = r.fit
    if r.fits:
        return r.native_note or ""
    return f.reason if f else ""


def _precision(r: CheckResult) -> str:
    if r.malformed:
        return ""
    return r.train.estimate.precision if r.train else r.spec.precision


def _context(r: CheckResult) -> str:
    if not r.context_tokens:
        return ""
    batch = r.train.estimate.settings.micro_batch_size if r.train else r.spec.batch_size
    return f"{r.context_tokens:,} x {batch}"


SUMMARY_COLUMNS: list[Column[CheckResult]] = [
    Column("#", "left", lambda r: str(r.position or "")),
    Column("model", "left", lambda r: r.spec.id + (f"@{r.spec.revision}" if r.spec.revision else "")),
    Column("GPU", "left", lambda r: r.gpu_name or r.spec.gpu or ""),
    Column("precision", "left", _precision),
    Column("context", "left", _context),
    Column("result", "left", lambda r: r.status),
    Column("GPUs", "left", _fit_or_blank(lambda r: f"{r.gpus_used}")),
    Column("per GPU", "left", _fit_or_blank(
        lambda r: "{:.1f} / {:.1f} GiB".format(*(b / 2**30 for b in r.per_gpu_bytes)) if r.per_gpu_bytes else "")),
    Column("longest context", "left", _fit_or_blank(lambda r: f"{r.longest_tokens:,}" if r.longest_tokens else "")),
    Column("detail", "left", _detail),
]
_MARKS = {"fits": "✅ fits", "does not fit": "❌ does not fit", "error": "⚠️ error"}


def render_summary(results: Sequence[CheckResult], fmt: str) -> str:
    """The summary as a plain table, a GitHub Markdown table (pull-request comments) or JSON."""
    code = overall_exit_code(results)
    if fmt == "json":
        return json.dumps({"exit_code": code, "results": [r.to_dict() for r in results]}, indent=2) + "\n"
    counts = {s: sum(r.status == s for r in results) for s in ("fits", "does not fit", "error")}
    tail = f"{counts['fits']} fit, {counts['does not fit']} do not fit, {counts['error']} errors: exit {code}"
    if fmt == "markdown":
        # Ids, revisions, GPU names and error messages come from outside: each cell renders as itself.
        columns = [Column(c.header, c.align, lambda r: _MARKS[r.status]) if c.header == "result" else c
                   for c in SUMMARY_COLUMNS]
        text = table(columns, results, markdown=True, escape=markdown_text, align_markdown=False)
        return f"### hfmem check\n\n{text}\n\n{tail}\n"
    return f"{table(SUMMARY_COLUMNS, results, markdown=False, escape=terminal_safe)}\n{tail}\n"
