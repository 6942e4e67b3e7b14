"""Render a TrainReport (`hfmem train`): a table for people, Markdown for pull requests, JSON for
programs. Pure functions returning strings; every name from outside is escaped for where it goes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from .columns import Column, table
from .report import gib, human_count
from .text import markdown_text, terminal_lines, terminal_safe

if TYPE_CHECKING:
    from .api import TrainReport
    from .train import Term, TrainFit

TERM_COLUMNS: list[Column[Term]] = [
    Column("term", "left", lambda t: t.label),
    Column("per GPU", "right", lambda t: gib(t.bytes)),
    Column("how", "left", lambda t: t.formula),
]


def _fits(f: TrainFit) -> str:
    if f.fits:
        return "yes"
    if f.fits_with_checkpointing:
        return "with --gradient-checkpointing"
    if f.gpus_needed is None:
        return "no"
    return f"no: {f.gpus_needed} GPUs with ZeRO-{f.gpus_needed_zero}"


FIT_COLUMNS: list[Column[TrainFit]] = [
    Column("GPU", "left", lambda f: f.gpu.name + (f" x {f.count}" if f.count > 1 else "")),
    Column("precision", "left", lambda f: f.estimate.precision),
    Column("needs", "right", lambda f: gib(f.estimate.total_bytes)),
    Column("has", "right", lambda f: gib(f.usable_bytes)),
    Column("fits", "left", _fits),
    Column("longest --seq-len", "right", lambda f: f"{f.max_seq_len:,}" if f.max_seq_len else "none"),
    Column("largest --micro-batch-size", "right", lambda f: str(f.max_micro_batch_size or "none")),
]


def render_train_json(report: TrainReport) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def _settings_line(report: TrainReport) -> str:
    s, est = report.training.settings, report.training
    method = s.method + (f" r={s.lora_r} on {','.join(est.targets)}" if s.method in ("lora", "qlora") else "")
    parts = [method, est.precision, f"--optimizer {s.optimizer}", f"--seq-len {s.seq_len:,}",
             f"--micro-batch-size {s.micro_batch_size}",
             "gradient checkpointing" if s.gradient_checkpointing
             else "no gradient checkpointing (the Trainer's default)",
             f"attention {s.attn_implementation}",
             "fused cross-entropy" if s.fused_cross_entropy else "plain cross-entropy"]
    if s.count > 1:
        parts.append(f"{s.count} GPUs, ZeRO-{s.zero}" + (f", offload {s.offload}" if s.offload != "none" else ""))
    return "; ".join(parts)


def _lines(report: TrainReport, esc: Callable[[str], str], markdown: bool) -> list[str]:
    est = report.training
    title = f"{report.checkpoint.name}: fine-tuning memory per GPU"
    out = [f"### {esc(title)}" if markdown else esc(title), "", esc(_settings_line(report)), "",
           esc(est.trainable_line), ""]
    out.append(table(TERM_COLUMNS, [t for t in est.terms if t.bytes], markdown=markdown, escape=esc))
    total = f"peak per GPU: {gib(est.total_bytes)} ({gib(est.peak_allocated_bytes)} as torch.cuda.max_memory_allocated)"
    if est.host_bytes:
        total += f"; host memory (offload): {gib(est.host_bytes)}"
    out += ["", f"**{esc(total)}**" if markdown else esc(total), ""]
    rules = [f"{rule}: {gib(b)}" for rule, b in report.rules_of_thumb]
    out.append(esc(f"rules of thumb for this model ({human_count(est.all_params)} params), for comparison:"))
    out += [("- " if markdown else "  ") + esc(r) for r in rules]
    if report.fit:
        out += ["", table(FIT_COLUMNS, report.fit, markdown=markdown, escape=esc)]
    out += [esc(f"warning: {w}") for w in report.checkpoint.warnings]
    return out


def render_train_table(report: TrainReport) -> str:
    return terminal_lines("\n".join(_lines(report, terminal_safe, False))) + "\n"


def render_train_markdown(report: TrainReport) -> str:
    return "\n".join(_lines(report, markdown_text, True)) + "\n"
