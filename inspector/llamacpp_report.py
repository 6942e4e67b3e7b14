"""`hfmem MODEL` for a GGUF model: the file, llama.cpp's memory terms, the repo's quantizations and
where it fits, as a terminal table, Markdown or JSON. Every string from outside goes through
text.terminal_safe or text.markdown_text."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .columns import Column, table
from .text import markdown_text, terminal_lines, terminal_safe

MIB = 1 << 20


def size(n: int | None) -> str:
    """Bytes as llama.cpp users read them: MiB below 1 GiB, else GiB."""
    if n is None:
        return "?"
    if n < 1 << 30:
        return f"{n / MIB:,.1f} MiB"
    return f"{n / (1 << 30):,.2f} GiB"


def render_json(report: Any) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def _title(r: Any) -> str:
    m, e = r.model, r.estimate
    bpw = e.model_bytes * 8 / m.params if m.params else 0
    name = r.checkpoint.name if r.checkpoint.name.endswith(r.chosen_file) else f"{r.checkpoint.name}: {r.chosen_file}"
    return (f"{name}  ({m.arch}, {m.params / 1e9:,.2f} B parameters, "
            f"mostly {m.file_type}, {bpw:.2f} bits per weight, {size(e.model_bytes)} of tensors)")


def _arch_line(r: Any) -> str:
    m = r.model
    d = m.to_dict()
    kv = d["head_count_kv"]
    parts = [f"layers {m.n_layer}", f"embedding {m.n_embd:,}", f"heads {d['head_count']} (KV {kv})",
             f"head dim {m.n_embd_head_k}" + (f"/{m.n_embd_head_v}" if m.n_embd_head_v != m.n_embd_head_k else ""),
             f"vocab {m.n_vocab:,}", f"context {m.n_ctx_train:,}"]
    if m.n_expert:
        parts.append(f"experts {m.n_expert} ({m.n_expert_used} active)")
    if m.n_swa:
        parts.append(f"sliding window {m.n_swa:,} on {sum(m.swa_layers)} of {m.n_layer} layers")
    if m.kv_lora_rank:
        parts.append(f"MLA latent {m.kv_lora_rank} + rope {m.n_rot}")
    return " · ".join(parts)


def _settings_line(r: Any) -> str:
    e = r.estimate
    s, kv, p = e.settings, e.kv, e.placement
    layers = (f"all {p.n_gpu_layers} layers on the GPU" if p.n_gpu_layers == r.model.n_layer + 1
              else f"{p.n_gpu_layers} of {r.model.n_layer + 1} layers on the GPU")
    moe = f", --n-cpu-moe {s.n_cpu_moe}" if s.n_cpu_moe else ""
    ub = min(s.ubatch_size, s.batch_size, kv.n_ctx)
    return (f"llama.cpp: -c {kv.n_ctx:,} ({s.parallel} slot{'s' * (s.parallel > 1)}), cache {kv.type_k}/{kv.type_v}, "
            f"flash attention {'on' if kv.flash_attn else 'off'}, ubatch {ub}, {layers}{moe}")


TermRow = tuple[str, int, int, str]


def _terms(r: Any) -> list[TermRow]:
    p, kv = r.estimate.placement, r.estimate.kv
    swa = (f"; sliding-window layers keep {kv.swa_cells:,} cells" if kv.swa_cells != kv.cells else "")
    return [
        ("model buffers", p.model_gpu, p.model_host, "token embeddings stay in host memory (with mmap: page cache)"),
        *([("repacked weights", 0, p.repack_host, "the CPU's copy of its Q4_0/Q4_K/IQ4_NL/MXFP4 matrices "
            "(x86-64 AVX2, no GPU; --no-repack: none)")] if p.repack_host else []),
        ("KV cache", p.kv_gpu, p.kv_host, f"{kv.cells:,} cells, K {kv.type_k} + V {kv.type_v}{swa}"),
        ("compute buffers", p.compute_gpu, p.compute_host, "worst-case graph for one ubatch (modelled)"),
        ("total", p.gpu_bytes, p.host_bytes, ""),
    ]


TERM_COLUMNS: list[Column[TermRow]] = [
    Column("term", "left", lambda t: t[0]),
    Column("GPU", "right", lambda t: size(t[1])),
    Column("host", "right", lambda t: size(t[2])),
    Column("", "left", lambda t: t[3]),
]


def _quant_columns(first_gpu: str | None) -> list[Column[Any]]:
    cols: list[Column[Any]] = [
        Column("", "left", lambda q: "*" if q.chosen else ""),
        Column("quant", "left", lambda q: q.label),
        Column("file", "left", lambda q: q.file),
        Column("size", "right", lambda q: size(q.file_bytes)),
        Column("bits/w", "right", lambda q: f"{q.bits_per_weight:.2f}" if q.bits_per_weight else "?"),
        Column("GPU, all layers", "right", lambda q: size(q.gpu_bytes)),
    ]
    if first_gpu:
        cols.append(Column(f"fits {first_gpu}", "left",
                           lambda q: "?" if q.fits is None else "yes" if q.fits else "no"))
    return cols


def _fit_columns() -> list[Column[Any]]:
    def layers(f: Any) -> str:
        p = f.estimate.placement
        n = f.estimate.model.n_layer + 1
        moe = f", experts of {f.estimate.settings.n_cpu_moe} in host" if f.estimate.settings.n_cpu_moe else ""
        return f"{p.n_gpu_layers}/{n}{moe}"

    return [
        Column("GPU", "left", lambda f: f.device),
        Column("budget", "right", lambda f: size(f.budget_bytes)),
        Column("fits", "left", lambda f: "yes" if f.all_layers else "offload" if f.estimate.placement.n_gpu_layers
               or f.estimate.settings.n_cpu_moe else "no"),
        Column("-c", "right", lambda f: f"{f.estimate.kv.n_ctx:,}"),
        Column("layers on GPU", "right", layers),
        Column("GPU use", "right", lambda f: " / ".join(size(b) for b in f.estimate.placement.device_bytes)
               if f.estimate.placement.device_bytes else size(f.estimate.placement.gpu_bytes)),
        Column("host memory", "right", lambda f: size(f.estimate.placement.host_bytes)),
        Column("longest -c, all layers", "right", lambda f: f"{f.longest_ctx:,}" if f.longest_ctx else "-"),
    ]


def _render(r: Any, markdown: bool, esc: Callable[[str], str], files: bool) -> list[str]:
    def tab(columns: list[Column[Any]], items: Any) -> str:
        return table(columns, items, markdown=markdown, escape=esc)

    head = (lambda t: f"**{esc(t)}**") if markdown else esc
    out = [head(_title(r)), "", esc(_arch_line(r)), "", esc(_settings_line(r)), tab(TERM_COLUMNS, _terms(r))]
    if len(r.quantizations) > 1 or files:
        ctx = (f"-c {r.rows_ctx:,}" if r.estimate.settings.ctx_size is not None else
               f"-c {r.rows_ctx:,}, the shortest llama.cpp's --fit shortens the context to")
        out += ["", esc(f"GGUF files in the repo, every layer on the GPU at {ctx} (weights from each file's size):"),
                tab(_quant_columns(r.first_gpu), r.quantizations)]
    if r.fit:
        target = r.estimate.settings.fit_target_mib
        out += ["", esc(f"Where it fits (as llama.cpp's --fit: every layer, else MoE experts or layers to host "
                        f"memory; --fit-target {target} MiB left free):"), tab(_fit_columns(), r.fit)]
    if r.cpu_only is not None:
        c = r.cpu_only.placement
        repack = f" + repacked copy {size(c.repack_host)}" if c.repack_host else ""
        out += ["", esc(f"Without a GPU (a CPU build, x86-64 with AVX2), at -c {r.cpu_only.kv.n_ctx:,}: "
                        f"{size(c.host_bytes)} of host memory (weights {size(c.model_host)}{repack} + KV "
                        f"{size(c.kv_host)} + compute {size(c.compute_host)}).")]
    for f in r.projectors:
        out += ["", esc(f"projector: {f.name} ({size(f.bytes)}): with --mmproj, llama.cpp loads it too and --fit "
                        "keeps room for it on the GPU (not counted above)")]
    out += [esc(f"warning: {w}") for w in r.checkpoint.warnings]
    return out


def render_table(report: Any, *, files: bool = False) -> str:
    return terminal_lines("\n".join(_render(report, False, terminal_safe, files))) + "\n"


def render_markdown(report: Any, *, files: bool = False) -> str:
    return "\n".join(_render(report, True, markdown_text, files)) + "\n"
