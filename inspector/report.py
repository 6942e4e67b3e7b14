"""Render a ModelReport as text: a table for people, JSON for programs, Markdown for PR comments.

Pure functions returning strings; the CLI decides where they go. tabulate is imported lazily.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .api import ModelReport

GIB = 1024**3


def human_count(n: int) -> str:
    """Short count with SI suffix, as model cards write it.

    >>> human_count(6_738_415_616), human_count(124_439_808), human_count(999)
    ('6.74 B', '124.44 M', '999')
    """
    for size, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= size:
            return f"{n / size:.2f} {suffix}"
    return str(n)


def gib(n: int) -> str:
    """Bytes in GiB (2**30), the unit nvidia-smi and PyTorch report.

    >>> gib(13_476_839_424)
    '12.55 GiB'
    """
    return f"{n / GIB:.2f} GiB"


def render_json(report: ModelReport) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def _rows(report: ModelReport, *, files: bool) -> tuple[list[list[str]], list[list[str]]]:
    cp, p = report.checkpoint, report.parameters
    rows = [["Parameters", f"{p.total_params:,}", human_count(p.total_params)]]
    if len(p.by_dtype_params) > 1 or p.derived:
        rows += [[f"  {dtype}", f"{n:,}", human_count(n)] for dtype, n in p.by_dtype_params.items()]
    else:
        rows[0][2] += f"  {next(iter(p.by_dtype_params), '')}"
    if p.buffer_elements:
        rows.append(["Buffers (not parameters)", f"{p.buffer_elements:,}", ""])
    if p.quantization_elements:
        rows.append(["Quantization scales/zeros", f"{p.quantization_elements:,}", ""])
    rows.append(["Stored elements", f"{p.stored_elements:,}", ""])
    n_files = len(p.files)
    where = f"in {n_files} {cp.plan.format} file{'s' * (n_files != 1)}"
    rows.append(["Weights (bytes)", f"{p.weights_bytes:,}", f"{gib(p.weights_bytes)}  {where}"])
    file_rows = (
        [[f.file, f"{f.params:,}", f"{f.tensor_bytes:,}", gib(f.tensor_bytes)] for f in p.files]
        if files
        else []
    )
    return rows, file_rows


def _title(report: ModelReport) -> str:
    cp = report.checkpoint
    parts = [cp.name]
    if cp.sha:
        rev = cp.revision if cp.revision and cp.revision != cp.sha else None
        parts.append(f"@ {rev + ' ' if rev else ''}{cp.sha[:12]}")
    elif cp.revision:
        parts.append(f"@ {cp.revision}")
    if cp.local_path and cp.repo_id:
        parts.append(f"({cp.local_path})")
    return " ".join(parts)


def _notes(report: ModelReport) -> list[str]:
    notes = []
    p = report.parameters
    if p.quant_method:
        notes.append(f"quantized checkpoint ({p.quant_method}): packed weights counted as the weights they hold")
    if p.derived_note:
        notes.append(p.derived_note)
    return notes


def _plain(rows: list[list[str]]) -> str:
    from tabulate import tabulate

    # Indented sub-rows need their leading spaces; tabulate strips them unless told not to.
    return tabulate(rows, tablefmt="plain", colalign=("left", "right", "left"), preserve_whitespace=True)


def render_table(report: ModelReport, *, files: bool = False) -> str:
    """The human-readable table."""
    from tabulate import tabulate

    rows, file_rows = _rows(report, files=files)
    out = [_title(report), "", _plain(rows)]
    if file_rows:
        out += ["", tabulate(file_rows, headers=["file", "parameters", "bytes", ""], tablefmt="simple",
                             colalign=("left", "right", "right", "right"))]
    out += [f"note: {n}" for n in _notes(report)]
    return "\n".join(out) + "\n"


def render_markdown(report: ModelReport, *, files: bool = False) -> str:
    """The same content as a Markdown table, for pull-request comments."""
    from tabulate import tabulate

    rows, file_rows = _rows(report, files=files)
    out = [f"### {_title(report)}", "", tabulate(rows, headers=["", "exact", ""], tablefmt="github")]
    if file_rows:
        out += ["", tabulate(file_rows, headers=["file", "parameters", "bytes", ""], tablefmt="github")]
    out += [f"> note: {n}" for n in _notes(report)]
    return "\n".join(out) + "\n"
