"""Render a ModelReport as text: a table for people, JSON for programs, Markdown for PR comments.

Pure functions returning strings; the CLI decides where they go. tabulate is imported lazily.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from .columns import Column, table
from .text import markdown_text, terminal_lines, terminal_safe
from .vllm import release_name

if TYPE_CHECKING:
    from .api import ModelReport
    from .estimate import Estimate
    from .params import FileCount

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


def _rows(report: ModelReport) -> list[list[str]]:
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
    return rows


#: `--files`: one row per weight file.
FILE_COLUMNS: list[Column[FileCount]] = [
    Column("file", "left", lambda f: f.file),
    Column("parameters", "right", lambda f: f"{f.params:,}"),
    Column("bytes", "right", lambda f: f"{f.tensor_bytes:,}"),
    Column("", "right", lambda f: gib(f.tensor_bytes)),
]


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
    notes += report.notes
    if p.weights and p.weights.mtp_params:
        notes.append(f"{human_count(p.weights.mtp_params)} parameters of multi-token-prediction layers are "
                     "not loaded by vLLM unless speculative decoding uses them; left out of the memory")
    if report.architecture and report.architecture.guessed:
        notes.append("not in config.json, assumed: " + "; ".join(report.architecture.guessed))
    return notes


def human_bytes(n: int) -> str:
    """Bytes in the largest binary unit that keeps the number at least 1.

    >>> human_bytes(327_680), human_bytes(512), human_bytes(10 * 2**30)
    ('320.0 KiB', '512 B', '10.00 GiB')
    """
    if n >= GIB:
        return gib(n)
    for size, unit in ((2**20, "MiB"), (2**10, "KiB")):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


_KIND_NAMES = {"mla": "MLA", "none": "MLP-only"}


def _architecture_rows(report: ModelReport) -> list[list[str]]:
    a, m = report.architecture, report.memory
    if a is None or m is None:
        return []
    kinds = ", ".join(f"{n} {_KIND_NAMES.get(k, k.replace('_', ' '))}" for k, n in a.kind_counts.items())
    attn = f"{a.num_attention_heads} heads / {a.num_key_value_heads} KV heads x {a.head_dim}" if a.head_dim else ""
    if a.kv_lora_rank is not None:
        attn = f"MLA, {a.num_attention_heads} heads, KV latent {a.kv_lora_rank} + rope {a.qk_rope_head_dim}"
    parts = [f"{a.model_type or '?'}: {a.num_hidden_layers} layers ({kinds})", f"hidden {a.hidden_size:,}"]
    parts += [attn] if attn else []
    if a.sliding_window:
        parts.append(f"sliding window {a.sliding_window:,}")
    if a.vocab_size:
        parts.append(f"vocab {a.vocab_size:,}")
    rows = [["Architecture", ", ".join(parts)]]
    if a.num_experts:
        moe = f"{a.num_experts} experts, {a.num_experts_per_tok} per token"
        if a.num_shared_experts:
            moe += f", {a.num_shared_experts} shared"
        if m.active_params is not None:
            moe += f"; {human_count(m.active_params)} parameters active per token"
        rows.append(["Experts", moe])
    kv = m.kv_cache
    line = f"{kv.dtype}, {human_bytes(kv.bytes_per_token)} per token"
    if kv.state_bytes_per_sequence:
        line += f" + {human_bytes(kv.state_bytes_per_sequence)} fixed per sequence"
    seqs = f"{kv.batch_size} sequence{'s' * (kv.batch_size != 1)}"
    line += f"; {human_bytes(kv.bytes)} for {seqs} of {kv.context_tokens:,} tokens"
    rows.append(["KV cache", line])
    return rows




def stored_label(report: ModelReport) -> str:
    """What "stored" means for this checkpoint: its quantization, else its main dtype."""
    p = report.parameters
    if p.quant_method:
        return p.quant_method
    by = p.stored_by_dtype_elements
    return max(by, key=lambda k: by[k]) if by else "?"


def memory_columns(stored: str) -> list[Column[Estimate]]:
    """The memory table: one row per precision, every term in GiB."""
    def in_gib(term: Callable[[Estimate], int]) -> Callable[[Estimate], str]:
        return lambda e: f"{term(e) / GIB:.2f}"

    return [
        Column("precision", "left",
               lambda e: f"stored ({stored})" if e.precision.value == "stored" else e.precision.value),
        Column("weights", "right", in_gib(lambda e: e.weights_bytes)),
        Column("KV cache", "right", in_gib(lambda e: e.kv_cache_bytes)),
        Column("activations", "right", in_gib(lambda e: e.activation_bytes)),
        Column("overhead", "right", in_gib(lambda e: e.overhead_bytes)),
        Column("total", "right", in_gib(lambda e: e.total_bytes)),
        Column("weights x 1.2", "right", in_gib(lambda e: e.rule_of_thumb_bytes)),
    ]


def _memory(report: ModelReport, precisions: tuple[str, ...] | None) -> tuple[str, list[Estimate]]:
    """The memory table's title and the estimates it shows."""
    m = report.memory
    if m is None:
        return "", []
    s = m.settings
    tp = f", {s.tensor_parallel_size} GPUs (per GPU)" if s.tensor_parallel_size > 1 else ""
    eng = m.engine
    batch = (f"{eng.max_num_batched_tokens:,} batched tokens, {eng.max_num_seqs:,} sequences"
             + (" as on an H100" if eng.batch_tier == ">= 70 GiB" else ""))
    title = (f"Memory in GiB (vLLM {release_name(eng.release)}, {m.context_tokens:,} tokens x {s.batch_size}"
             f" sequence{'s' * (s.batch_size != 1)}{tp}; {batch})")
    return title, [e for e in m.estimates if precisions is None or e.precision.value in precisions]


def tokens(n: int) -> str:
    """A context length as people write it: 32k for 32,768, else with thousands separators.

    >>> tokens(32_768), tokens(131_072), tokens(23_417)
    ('32k', '128k', '23,417')
    """
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else f"{n:,}"


def _fit(report: ModelReport, precisions: tuple[str, ...] | None
         ) -> tuple[str, list[Column[tuple[str, dict[str, str]]]], list[tuple[str, dict[str, str]]]]:
    """The fit table: GPUs x precisions, how many GPUs (the tensor-parallel size) and the longest
    context on them. (title, columns, rows: a GPU's name and its cell per precision)."""
    m = report.memory
    if m is None or not report.fit:
        return "", [], []
    s = m.settings
    shown = [p for p in dict.fromkeys(f.precision.value for f in report.fit)
             if precisions is None or p in precisions]
    cells: dict[str, dict[str, str]] = {}
    for f in report.fit:
        if f.precision.value not in shown:
            continue
        if f.fits:
            cell = f"{f.tensor_parallel_size} ({tokens(f.max_context_tokens or 0)})"
        else:
            cell = "-" if s.tensor_parallel_size > 1 else "> 8"
        cells.setdefault(f.gpu.name, {})[f.precision.value] = cell + ("" if f.native else "*")
    stored = stored_label(report)
    columns: list[Column[tuple[str, dict[str, str]]]] = [Column("GPU", "left", lambda row: row[0])]
    columns += [Column(f"stored ({stored})" if p == "stored" else p, "right", _cell(p)) for p in shown]
    at = (f"on {s.tensor_parallel_size} GPUs" if s.tensor_parallel_size > 1
          else "GPUs needed")
    title = (f"Fit: {at} at {m.context_tokens:,} tokens x {s.batch_size} (longest context that fits on them); "
             f"vLLM {release_name(m.engine.release)}'s defaults per GPU, "
             f"gpu_memory_utilization {m.engine.gpu_memory_utilization}")
    return title, columns, list(cells.items())


def _cell(precision: str) -> Callable[[tuple[str, dict[str, str]]], str]:
    return lambda row: row[1][precision]


def _fit_legend(rows: list[tuple[str, dict[str, str]]], tensor_parallel_size: int) -> list[str]:
    cells = [c for _, by in rows for c in by.values()]
    legend = []
    if any("> 8" in c for c in cells):
        legend.append("> 8: needs pipeline parallelism across nodes")
    if any(c == "-" or c == "-*" for c in cells):
        legend.append(f"-: does not fit on {tensor_parallel_size} GPUs")
    if any(c.endswith("*") for c in cells):
        legend.append("*: precision not native on that GPU")
    return ["; ".join(legend)] if legend else []


def _each(rows: list[list[str]], escape: Callable[[str], str]) -> list[list[str]]:
    """Every cell escaped: the names in them (model, dtype, file, GPU, model_type) come from outside."""
    return [[escape(c) for c in row] for row in rows]


def _plain(rows: list[list[str]]) -> str:
    from tabulate import tabulate

    # Indented sub-rows need their leading spaces; tabulate strips them unless told not to.
    return tabulate(rows, tablefmt="plain", colalign=("left", "right", "left"), preserve_whitespace=True)


# shared/DESIGN.md: the table shows these unless --precision names others; JSON has them all.
TABLE_PRECISIONS = ("stored", "bf16", "fp8", "int8", "int4")


def render_table(report: ModelReport, *, files: bool = False,
                 precisions: tuple[str, ...] | None = TABLE_PRECISIONS) -> str:
    """The human-readable table; every string from outside is terminal_safe."""
    from tabulate import tabulate

    esc = terminal_safe
    out = [esc(_title(report)), "", _plain(_each(_rows(report), esc))]
    arch = _architecture_rows(report)
    if arch:
        out += ["", tabulate(_each(arch, esc), tablefmt="plain")]
    title, estimates = _memory(report, precisions)
    if estimates:
        out += ["", title, table(memory_columns(stored_label(report)), estimates, markdown=False, escape=esc)]
    title, columns, fits = _fit(report, precisions)
    if fits:
        assert report.memory is not None
        out += ["", esc(title), table(columns, fits, markdown=False, escape=esc)]
        out += _fit_legend(fits, report.memory.settings.tensor_parallel_size)
    if files:
        out += ["", table(FILE_COLUMNS, report.parameters.files, markdown=False, escape=esc, numbers=True)]
    out += [f"note: {esc(n)}" for n in _notes(report)]
    # Every part was escaped above; this is the guarantee, should a new line forget it.
    return terminal_lines("\n".join(out)) + "\n"


def render_markdown(report: ModelReport, *, files: bool = False,
                    precisions: tuple[str, ...] | None = TABLE_PRECISIONS) -> str:
    """The same content as Markdown tables, for pull-request comments: every cell, title and note
    is markdown_text, so a name from outside renders as itself and never as HTML, a link or a cell."""
    from tabulate import tabulate

    esc = markdown_text
    out = [f"### {esc(_title(report))}", "", tabulate(_each(_rows(report), esc), headers=["", "exact", ""],
                                                     tablefmt="github")]
    arch = _architecture_rows(report)
    if arch:
        out += ["", tabulate(_each(arch, esc), headers=["", ""], tablefmt="github")]
    title, estimates = _memory(report, precisions)
    if estimates:
        out += ["", f"**{esc(title)}**", "",
                table(memory_columns(stored_label(report)), estimates, markdown=True, escape=esc)]
    title, columns, fits = _fit(report, precisions)
    if fits:
        assert report.memory is not None
        out += ["", f"**{esc(title)}**", "", table(columns, fits, markdown=True, escape=esc)]
        out += [f"_{esc(line)}_" for line in _fit_legend(fits, report.memory.settings.tensor_parallel_size)]
    if files:
        out += ["", table(FILE_COLUMNS, report.parameters.files, markdown=True, escape=esc, numbers=True,
                          align_markdown=False)]
    out += [f"> note: {esc(n)}" for n in _notes(report)]
    return "\n".join(out) + "\n"
