"""The `hfmem` command: parse, call the library, render. Errors become exit codes in `main()` only.

`hfmem MODEL` runs the default command (`inspect`: vLLM for safetensors, llama.cpp for GGUF);
`check`, `train` and `cache` are subcommands. Data goes to stdout, warnings and hints to stderr, so
`hfmem MODEL --json | jq` works.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .errors import ExitCode, HfmemError, linked_errors
from .limits import MAX_AGE_DAYS, MAX_GPUS, MAX_TIMEOUT_S, MAX_TOKENS
from .text import terminal_safe
from .version import version_line
from .vllm import NEWEST, release_name, supported_range

DEFAULT_COMMAND = "inspect"


class DefaultCommandGroup(TyperGroup):
    """A group whose first argument, when it is not a subcommand, goes to the default command:
    `hfmem gpt2 --json` runs `hfmem inspect gpt2 --json`. A subcommand name wins over a path of
    the same name; write `./check` for a folder called `check`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        passthrough = {*ctx.help_option_names, "--version", "--install-completion", "--show-completion"}
        if args and args[0] not in self.commands and args[0] not in passthrough:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=DefaultCommandGroup,
    name="hfmem",
    help="Will this model run on my GPUs? Exact parameter counts and memory from a model's metadata, "
    "without downloading weights.\n\nRun `hfmem MODEL` (the default command, `inspect`) or a subcommand.",
    no_args_is_help=True,
    add_completion=True,
    # Never print local variables in a traceback: a token could be one of them.
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """hfmem: memory needs of Hugging Face models from their metadata."""


class Bounded:
    """A number between `low` and `high` (inclusive), refused in one line when it is not one: NaN,
    inf, a sign where none is wanted, 400 digits (the bounds: inspector/limits.py). Given to typer
    as an option's `parser`."""

    def __init__(self, kind: type, low: float, high: float, *, unit: str = "") -> None:
        self.kind, self.low, self.high, self.unit = kind, low, high, unit
        self.__name__ = "INTEGER" if kind is int else "NUMBER"  # (typer's metavar)

    def __call__(self, value: Any) -> Any:
        high = f"{self.high:,}" if self.kind is int else f"{self.high:g}"
        refusal = f"not {'a whole number' if self.kind is int else 'a number'} from {self.low:g} to {high}{self.unit}"
        number: Any
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            # Every value in range is shorter than 30 characters; int() of thousands of digits is slow.
            ok = 0 < len(text) <= 30 and (text.isascii() and text.isdigit() if self.kind is int else text.isascii())
            try:
                number = self.kind(text) if ok else None
            except ValueError:
                number = None
            if number is None:
                shown = text if len(text) <= 40 else text[:20] + f"... ({len(text)} characters)"
                raise typer.BadParameter(f"'{terminal_safe(shown)}' is {refusal}")
        if not self.low <= number <= self.high:  # (NaN fails it)
            raise typer.BadParameter(f"{number} is {refusal}")
        return number


def _tokens(what: str) -> Bounded:
    return Bounded(int, 1, MAX_TOKENS, unit=f" {what}")


class _ContextLength(Bounded):
    """--max-model-len: tokens, or `auto` (or vLLM's -1): the longest context that fits."""

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("auto", "-1"):
            return -1
        return super().__call__(value)


ModelArg = Annotated[
    str,
    typer.Argument(
        help="A Hub repo id (org/name, or a bare name such as gpt2), a Hub URL "
        "(.../tree/<rev>, .../blob/<rev>/<file>.safetensors), a local model directory "
        "(or a snapshot folder of the HF cache), a .safetensors file, or a snapshot file "
        "written by --save-snapshot. An existing path on disk wins over a repo id.",
    ),
]
RevisionOpt = Annotated[
    str | None,
    typer.Option("--revision", help="Branch, tag, commit sha or refs/pr/N (default: the repo's default branch)."),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Hub token for gated or private repos. Prefer the HF_TOKEN environment variable or "
        "`hf auth login`: a --token value is visible to other users of a shared machine.",
        show_default=False,
    ),
]
FormatOpt = Annotated[
    OutputFormat,
    typer.Option("--format", help="Output format.", case_sensitive=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Shortcut for --format json.")]
OfflineOpt = Annotated[
    bool,
    typer.Option(
        "--offline", help="Answer from the cache alone (also HF_HUB_OFFLINE=1); exit 8 if something is missing."
    ),
]
RefreshOpt = Annotated[bool, typer.Option("--refresh", help="Revalidate cached Hub answers instead of trusting them.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No warnings or hints on stderr.")]
# Our policy: long enough for a 1000-shard model over a slow link with retries, short enough that
# a CI job stuck on a dead mirror fails within minutes.
DEFAULT_TIMEOUT_S = 120.0
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", parser=Bounded(float, 0.1, MAX_TIMEOUT_S, unit=" seconds"), metavar="SECONDS",
                 help="Give up reading from the Hub after this long in all, retries included (exit 7)."),
]


class PrecisionChoice(str, Enum):
    stored = "stored"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    fp8 = "fp8"
    int8 = "int8"
    int4 = "int4"


# The estimate's options carry vLLM's names, so a command line can be pasted between the two.
MaxModelLenOpt = Annotated[
    int | None,
    typer.Option("--max-model-len", parser=_ContextLength(int, 1, MAX_TOKENS, unit=" tokens, or auto"),
                 metavar="TOKENS|auto",
                 help="Context length per sequence (default: the model's own, from config.json, with its rope "
                 "scaling); `auto` as vLLM's: the longest that fits. Beyond the model's own is refused unless "
                 "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."),
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", parser=_tokens("sequences"),
                                           help="Sequences held in the KV cache at once.")]
KvCacheDtypeOpt = Annotated[
    str,
    typer.Option("--kv-cache-dtype", metavar="DTYPE",
                 help="KV cache dtype: auto (the model's), bfloat16, float16, fp8, fp8_e4m3, fp8_e5m2, "
                 "bf16, fp16, fp32."),
]
TensorParallelOpt = Annotated[
    int, typer.Option("--tensor-parallel-size", "-tp", parser=Bounded(int, 1, MAX_GPUS, unit=" GPUs"),
                      help="GPUs the model is split across (memory per GPU).")
]
PrecisionOpt = Annotated[
    list[PrecisionChoice] | None,
    typer.Option("--precision", case_sensitive=False,
                 help="Weight precision to estimate; repeat for several (default: stored, bf16, fp8, int8, int4)."),
]
# Unset engine options (None) keep inspector.estimate.Assumptions' defaults, the one place they live.
MaxBatchedTokensOpt = Annotated[
    int | None,
    typer.Option("--max-num-batched-tokens", parser=_tokens("tokens"), show_default=False,
                 help="Tokens per step, and in vLLM's profiling forward pass (default: vLLM's for the GPU: "
                 "8192 for `vllm serve` on a >= 70 GiB GPU other than an A100, else 2048)."),
]
MaxNumSeqsOpt = Annotated[
    int | None,
    typer.Option("--max-num-seqs", parser=_tokens("sequences"), show_default=False,
                 help="Sequences per step, and rows of vLLM's profiling sampler run (default: vLLM's for the "
                 "GPU: 1024 on a >= 70 GiB GPU other than an A100, else 256)."),
]
GpuUtilOpt = Annotated[
    float | None,
    typer.Option("--gpu-memory-utilization", parser=Bounded(float, 0.01, 1.0), show_default=False,
                 help="Fraction of each GPU's memory (CUDA's total) vLLM may use (default: the release's, 0.92 "
                 "from vLLM 0.20, 0.9 before)."),
]
GpusFileOpt = Annotated[
    Path | None,
    typer.Option("--gpus-file", metavar="FILE", help="Extra GPUs in TOML, as inspector/data/gpus.toml "
                 "(also HFMEM_GPUS_FILE)."),
]
GpuListOpt = Annotated[list[str] | None, typer.Option(
    "--gpu", help="GPU for the fit table; repeat for several (default: RTX 4090, L40S, A100 80GB, H100, "
    "H200).", show_default=False)]
EagerOpt = Annotated[bool, typer.Option("--enforce-eager", help="No CUDA graphs (as vLLM's --enforce-eager).")]
VllmVersionOpt = Annotated[
    str | None,
    typer.Option("--vllm-version", metavar="RELEASE", show_default=False,
                 help=f"vLLM release whose defaults and memory rules to mirror, e.g. 0.19 or 0.19.1 "
                 f"(hfmem knows {supported_range()}; default {release_name(NEWEST)})."),
]
EntrypointOpt = Annotated[
    str, typer.Option("--entrypoint", metavar="serve|llm",
                      help="`vllm serve` or the `LLM()` class: their batch defaults differ."),
]
DtypeOpt = Annotated[
    str, typer.Option("--dtype", metavar="DTYPE",
                      help="As vLLM's --dtype: auto (a float32 checkpoint loads in bf16, or fp16 without bf16), "
                      "bfloat16, float16, float32."),
]


# llama.cpp's options, by llama.cpp's names (llama-server / llama-cli), for a GGUF model.
EngineOpt = Annotated[str, typer.Option("--engine", metavar="auto|vllm|llama.cpp",
                                        help="Engine whose memory to estimate (auto: llama.cpp for a GGUF model, "
                                        "else vLLM).")]
FileOpt = Annotated[str | None, typer.Option("--file", metavar="NAME", show_default=False,
                                             help="One GGUF file of a repo or folder (also MODEL:Q4_K_M, as "
                                             "llama.cpp's -hf and Ollama name them).")]
CtxSizeOpt = Annotated[int | None, typer.Option("--ctx-size", "-c", parser=Bounded(int, 0, MAX_TOKENS, unit=" tokens"),
                                                show_default=False,
                                                help="llama.cpp: context cells shared by the --parallel slots "
                                                "(default, or 0: --max-model-len x --batch-size, else the "
                                                "model's).")]
ParallelOpt = Annotated[int | None, typer.Option("--parallel", "-np", parser=_tokens("slots"), show_default=False,
                                                 help="llama.cpp: sequences at once (default: --batch-size).")]
CacheTypeKOpt = Annotated[str | None, typer.Option("--cache-type-k", "-ctk", metavar="TYPE", show_default=False,
                                                   help="llama.cpp: K cache type: f32, f16, bf16, q8_0, q4_0, q4_1, "
                                                   "iq4_nl, q5_0, q5_1 (default f16, or --kv-cache-dtype's).")]
CacheTypeVOpt = Annotated[str | None, typer.Option("--cache-type-v", "-ctv", metavar="TYPE", show_default=False,
                                                   help="llama.cpp: V cache type (a quantized V needs flash "
                                                   "attention).")]
FlashAttnOpt = Annotated[str, typer.Option("--flash-attn", "-fa", metavar="on|off|auto",
                                           help="llama.cpp: flash attention (auto: on for a GPU).")]
UbatchOpt = Annotated[int, typer.Option("--ubatch-size", "-ub", parser=Bounded(int, 1, 1 << 20, unit=" tokens"),
                                        help="llama.cpp: tokens per physical batch (sizes the compute buffer).")]
NglOpt = Annotated[str | None, typer.Option("--n-gpu-layers", "-ngl", metavar="N|auto|all", show_default=False,
                                            help="llama.cpp: layers on the GPU (default auto: all that fit, as "
                                            "--fit places them).")]
NCpuMoeOpt = Annotated[int, typer.Option("--n-cpu-moe", "-ncmoe", parser=Bounded(int, 0, 4096),
                                         help="llama.cpp: the first N layers' MoE experts in host memory.")]
SwaFullOpt = Annotated[bool, typer.Option("--swa-full", help="llama.cpp: full-size cache for sliding-window layers.")]
TensorSplitOpt = Annotated[str | None, typer.Option("--tensor-split", "-ts", metavar="SHARES", show_default=False,
                                                    help="llama.cpp: layers over several of each --gpu, by "
                                                    "these shares (1,1: two GPUs, evenly).")]
NoRepackOpt = Annotated[bool, typer.Option("--no-repack", "-nr",
                                           help="llama.cpp: no repacked copy of the CPU's weights.")]
FitTargetOpt = Annotated[int, typer.Option("--fit-target", parser=Bounded(int, 0, 1 << 20, unit=" MiB"),
                                           metavar="MiB", help="llama.cpp: memory --fit leaves free per device.")]


def _llamacpp(*, ctx_size: int | None, parallel: int | None, max_model_len: int | None, batch_size: int,
              kv_cache_dtype: str, cache_type_k: str | None, cache_type_v: str | None, flash_attn: str,
              ubatch_size: int, n_gpu_layers: str | None, n_cpu_moe: int, swa_full: bool, fit_target: int,
              no_repack: bool = False, tensor_split: str | None = None, allow_offload: bool = False) -> Any:
    # The options as given: inspector.api makes them LlamaCppSettings (and checks them) once the model
    # is known to be GGUF, so a safetensors run never imports the llama.cpp module.
    return dict(ctx_size=ctx_size, parallel=parallel, max_model_len=max_model_len, batch_size=batch_size,
                kv_cache_dtype=kv_cache_dtype, cache_type_k=cache_type_k, cache_type_v=cache_type_v,
                flash_attn=flash_attn, ubatch_size=ubatch_size, n_gpu_layers=n_gpu_layers, n_cpu_moe=n_cpu_moe,
                swa_full=swa_full, fit_target_mib=fit_target, repack=not no_repack, tensor_split=tensor_split,
                allow_offload=allow_offload)


def _settings(precision: list[PrecisionChoice] | None, *, max_model_len: int | None, batch_size: int,
              kv_cache_dtype: str, tensor_parallel_size: int = 1, enforce_eager: bool = False,
              **engine: str | int | float | None) -> Any:
    from .api import build_settings

    return build_settings([p.value for p in precision] if precision else None, max_model_len=max_model_len,
                          batch_size=batch_size, kv_cache_dtype=kv_cache_dtype,
                          tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager, **engine)


def _read(model: str, settings: Any, *, revision: str | None, token: str | None, offline: bool,
          refresh: bool = False, quiet: bool, deadline: float, label: str = "", progress: bool = True,
          gpus: Any = None, **gguf: Any) -> Any:
    """inspect_model with the progress bar and the checkpoint's warnings on stderr."""
    from .api import inspect_model

    with _progress_bar(enabled=progress and not quiet and sys.stderr.isatty()) as bar:
        report = inspect_model(model, revision=revision, token=token, offline=offline or None, refresh=refresh,
                               progress=bar, settings=settings, gpus=gpus, deadline=deadline, **gguf)
    for warning in report.checkpoint.warnings:
        _hint(f"warning: {label + ': ' if label else ''}{warning}", quiet)
    return report


@app.command(DEFAULT_COMMAND)
def inspect_cmd(
    model: ModelArg,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    json_: JsonOpt = False,
    files: Annotated[bool, typer.Option("--files", help="Also list every weight file.")] = False,
    save_snapshot: Annotated[
        Path | None,
        typer.Option(
            "--save-snapshot",
            metavar="FILE",
            help="Also write everything read (config, index, headers, commit sha) to FILE; "
            "`hfmem FILE` reads it back with no network.",
        ),
    ] = None,
    offline: OfflineOpt = False,
    refresh: RefreshOpt = False,
    quiet: QuietOpt = False,
    max_model_len: MaxModelLenOpt = None,
    batch_size: BatchSizeOpt = 1,
    kv_cache_dtype: KvCacheDtypeOpt = "auto",
    tensor_parallel_size: TensorParallelOpt = 1,
    precision: PrecisionOpt = None,
    max_num_batched_tokens: MaxBatchedTokensOpt = None,
    max_num_seqs: MaxNumSeqsOpt = None,
    gpu_memory_utilization: GpuUtilOpt = None,
    enforce_eager: EagerOpt = False,
    vllm_version: VllmVersionOpt = None,
    entrypoint: EntrypointOpt = "serve",
    dtype: DtypeOpt = "auto",
    gpu: GpuListOpt = None,
    gpus_file: GpusFileOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
    engine: EngineOpt = "auto",
    file: FileOpt = None,
    ctx_size: CtxSizeOpt = None,
    parallel: ParallelOpt = None,
    cache_type_k: CacheTypeKOpt = None,
    cache_type_v: CacheTypeVOpt = None,
    flash_attn: FlashAttnOpt = "auto",
    ubatch_size: UbatchOpt = 512,
    n_gpu_layers: NglOpt = None,
    n_cpu_moe: NCpuMoeOpt = 0,
    swa_full: SwaFullOpt = False,
    fit_target: FitTargetOpt = 1024,
    no_repack: NoRepackOpt = False,
    tensor_split: TensorSplitOpt = None,
) -> None:
    """Count a model's parameters exactly and estimate its memory per precision (the default command).
    For a GGUF model (a file, a repo of them, MODEL:Q4_K_M), llama.cpp's memory and where it fits."""
    from .report import TABLE_PRECISIONS, render_json, render_markdown, render_table

    settings = _settings(precision, max_model_len=max_model_len, batch_size=batch_size,
                         kv_cache_dtype=kv_cache_dtype, tensor_parallel_size=tensor_parallel_size,
                         enforce_eager=enforce_eager, max_num_batched_tokens=max_num_batched_tokens,
                         max_num_seqs=max_num_seqs, gpu_memory_utilization=gpu_memory_utilization,
                         vllm_version=vllm_version, entrypoint=entrypoint, dtype=dtype)
    shown = tuple(p.value for p in settings.precisions) if precision else TABLE_PRECISIONS
    gpus = None
    if gpu or gpus_file:
        from .api import gpu_set

        gpus = gpu_set(gpu, gpus_file)
    if save_snapshot is not None:  # refused before anything is read (and checked again when written)
        from .api import check_snapshot_target

        check_snapshot_target(save_snapshot)
    llamacpp = _llamacpp(ctx_size=ctx_size, parallel=parallel, max_model_len=max_model_len, batch_size=batch_size,
                         kv_cache_dtype=kv_cache_dtype, cache_type_k=cache_type_k, cache_type_v=cache_type_v,
                         flash_attn=flash_attn, ubatch_size=ubatch_size, n_gpu_layers=n_gpu_layers,
                         n_cpu_moe=n_cpu_moe, swa_full=swa_full, fit_target=fit_target, no_repack=no_repack,
                         tensor_split=tensor_split)
    report = _read(model, settings, revision=revision, token=token, offline=offline, refresh=refresh, quiet=quiet,
                   gpus=gpus, deadline=time.monotonic() + timeout, engine=engine, llamacpp=llamacpp, filename=file)
    if getattr(report, "chosen_file", None) is not None:
        from . import llamacpp_report as lr
        from .errors import UsageError

        vllm_only = {"--precision": precision, "--tensor-parallel-size": tensor_parallel_size > 1,
                     "--max-num-batched-tokens": max_num_batched_tokens, "--max-num-seqs": max_num_seqs,
                     "--gpu-memory-utilization": gpu_memory_utilization, "--enforce-eager": enforce_eager,
                     "--vllm-version": vllm_version, "--entrypoint": entrypoint != "serve", "--dtype": dtype != "auto"}
        given = [name for name, value in vllm_only.items() if value]
        if given:
            tp = given[0].startswith("--tensor")
            more = " (for llama.cpp's split of layers over GPUs, give --tensor-split 1,1)" if tp else ""
            raise UsageError(f"{given[0]} is a vLLM option; {report.checkpoint.name} is a GGUF model, estimated "
                             f"for llama.cpp{more}")

        render = {OutputFormat.json: lr.render_json, OutputFormat.markdown: lr.render_markdown}
        fmt = OutputFormat.json if json_ else fmt
        if save_snapshot is not None:
            from .api import save_snapshot as save

            save(report.checkpoint, save_snapshot)
            _hint(f"snapshot written to {save_snapshot}", quiet)
        sys.stdout.write(render[fmt](report) if fmt in render else lr.render_table(report, files=files))
        return
    llama_only = {"--ctx-size": ctx_size is not None, "--parallel": parallel is not None,
                  "--cache-type-k": cache_type_k, "--cache-type-v": cache_type_v, "--flash-attn": flash_attn != "auto",
                  "--ubatch-size": ubatch_size != 512, "--n-gpu-layers": n_gpu_layers, "--n-cpu-moe": n_cpu_moe,
                  "--swa-full": swa_full, "--fit-target": fit_target != 1024, "--no-repack": no_repack,
                  "--tensor-split": tensor_split}
    given_llama = [name for name, value in llama_only.items() if value]
    if given_llama:
        from .errors import UsageError

        raise UsageError(f"{given_llama[0]} is a llama.cpp option; {report.checkpoint.name} is estimated for vLLM "
                         "(a GGUF model is estimated for llama.cpp)")
    if save_snapshot is not None:
        from .api import save_snapshot as save

        save(report.checkpoint, save_snapshot)
        _hint(f"snapshot written to {save_snapshot}", quiet)
    if json_ or fmt is OutputFormat.json:
        sys.stdout.write(render_json(report))
    elif fmt is OutputFormat.markdown:
        sys.stdout.write(render_markdown(report, files=files, precisions=shown))
    else:
        sys.stdout.write(render_table(report, files=files, precisions=shown))


class MethodChoice(str, Enum):
    full = "full"
    lora = "lora"
    qlora = "qlora"
    freeze = "freeze"


class OptimizerChoice(str, Enum):
    adamw = "adamw"
    adamw_8bit = "adamw-8bit"
    paged_adamw_8bit = "paged-adamw-8bit"
    adafactor = "adafactor"
    sgd = "sgd"
    sgd_momentum = "sgd-momentum"


class TrainPrecisionChoice(str, Enum):
    bf16_mixed = "bf16-mixed"
    fp16_mixed = "fp16-mixed"
    bf16_true = "bf16-true"
    fp16_true = "fp16-true"
    true32 = "32-true"


class AttnChoice(str, Enum):
    eager = "eager"
    sdpa = "sdpa"
    flash_attention_2 = "flash_attention_2"


class OffloadChoice(str, Enum):
    none = "none"
    optimizer = "optimizer"
    optimizer_params = "optimizer+params"


# `hfmem train`'s options carry PEFT's, transformers', Lightning's and DeepSpeed's names.
MethodOpt = Annotated[MethodChoice, typer.Option("--method", case_sensitive=False,
                                                 help="full, lora, qlora (NF4 base) or freeze (the last 2 layers).")]
LoraROpt = Annotated[int, typer.Option("--lora-r", parser=Bounded(int, 1, 65536), help="LoRA rank (PEFT's r).")]
LoraTargetOpt = Annotated[
    str | None,
    typer.Option("--lora-target", metavar="NAMES|all-linear", show_default=False,
                 help="Modules LoRA adapts, comma-separated (q_proj,v_proj), or all-linear (default: PEFT's "
                 "mapping for the model type)."),
]
LoraDropoutOpt = Annotated[float, typer.Option("--lora-dropout", parser=Bounded(float, 0, 0.99),
                                               help="Above 0 keeps each adapted module's dropped input.")]
OptimizerOpt = Annotated[OptimizerChoice, typer.Option("--optimizer", case_sensitive=False, help="Optimizer.")]
TrainPrecisionOpt = Annotated[
    TrainPrecisionChoice | None,
    typer.Option("--train-precision", case_sensitive=False, show_default=False,
                 help="Lightning's precision (default: bf16-mixed where the GPU has bf16, else fp16-mixed)."),
]
SeqLenOpt = Annotated[int, typer.Option("--seq-len", parser=_tokens("tokens"), help="Tokens per sequence.")]
MicroBatchOpt = Annotated[int, typer.Option("--micro-batch-size", parser=Bounded(int, 1, 1 << 16, unit=" sequences"),
                                            help="Sequences per GPU per step (gradient accumulation adds nothing).")]
CheckpointingOpt = Annotated[bool, typer.Option(
    "--gradient-checkpointing/--no-gradient-checkpointing",
    help="Recompute each layer in the backward (transformers' Trainer default: off).")]
AttnOpt = Annotated[AttnChoice, typer.Option("--attn-implementation", case_sensitive=False,
                                             help="transformers' attention implementation.")]
FusedCeOpt = Annotated[bool, typer.Option(
    "--fused-cross-entropy", help="A fused or chunked linear cross-entropy (Liger, torchtune, Unsloth): no logits.")]
TrainEmbeddingsOpt = Annotated[bool, typer.Option(
    "--train-embeddings", help="Also train the embeddings and lm_head (PEFT modules_to_save).")]
ZeroOpt = Annotated[int, typer.Option("--zero", parser=Bounded(int, 0, 3),
                                      help="DeepSpeed ZeRO stage over --count GPUs (3 = FSDP full shard).")]
FsdpOpt = Annotated[bool, typer.Option("--fsdp", help="FSDP full sharding (the same as --zero 3).")]
OffloadOpt = Annotated[OffloadChoice, typer.Option("--offload", case_sensitive=False,
                                                   help="What DeepSpeed moves to host memory.")]


CountOpt = Annotated[
    int | None, typer.Option("--count", parser=Bounded(int, 1, MAX_GPUS, unit=" GPUs"),
                             help="GPUs available (default: the fewest that fit, up to 8).")
]


@app.command("check")
def check_cmd(
    model: Annotated[str | None, typer.Argument(help="The model to check (or give --models).", show_default=False)
                     ] = None,
    models: Annotated[
        Path | None,
        typer.Option("--models", metavar="FILE", help="Check every [[model]] of a TOML file concurrently "
                     "(see README, 'CI gate'); options given here replace its [defaults]."),
    ] = None,
    gpu: Annotated[str | None, typer.Option(
        "--gpu", help='GPU to check against, e.g. "H100 80GB", h100, a100-80g.', show_default=False)] = None,
    count: CountOpt = None,
    precision: Annotated[PrecisionChoice | None, typer.Option(
        "--precision", case_sensitive=False, help="Weight precision (default: as stored).", show_default=False,
    )] = None,
    gpus_file: GpusFileOpt = None,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    json_: JsonOpt = False,
    offline: OfflineOpt = False,
    quiet: QuietOpt = False,
    max_model_len: MaxModelLenOpt = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", parser=_tokens("sequences"), help="Sequences held in the KV cache at once (default 1).",
        show_default=False,
    )] = None,
    kv_cache_dtype: Annotated[str | None, typer.Option(
        "--kv-cache-dtype", metavar="DTYPE", help="KV cache dtype (default auto: the model's).", show_default=False,
    )] = None,
    gpu_memory_utilization: GpuUtilOpt = None,
    vllm_version: VllmVersionOpt = None,
    entrypoint: Annotated[str | None, typer.Option("--entrypoint", metavar="serve|llm", show_default=False,
                                                   help="`vllm serve` (default) or `LLM()`.")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", metavar="DTYPE", show_default=False,
                                              help="As vLLM's --dtype (default auto).")] = None,
    method: Annotated[MethodChoice | None, typer.Option(
        "--method", case_sensitive=False, show_default=False,
        help="Check fine-tuning instead of serving: full, lora, qlora or freeze (as `hfmem train`).")] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", parser=Bounded(int, 1, 65536), show_default=False,
                                               help="LoRA rank (default 16).")] = None,
    lora_target: LoraTargetOpt = None,
    optimizer: Annotated[OptimizerChoice | None, typer.Option("--optimizer", case_sensitive=False,
                                                              show_default=False, help="Optimizer (default adamw).")
                         ] = None,
    train_precision: TrainPrecisionOpt = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", parser=_tokens("tokens"), show_default=False,
                                                help="Training tokens per sequence (default 2048).")] = None,
    micro_batch_size: Annotated[int | None, typer.Option(
        "--micro-batch-size", parser=Bounded(int, 1, 1 << 16, unit=" sequences"), show_default=False,
        help="Training sequences per GPU per step (default 1).")] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing", show_default=False,
        help="Training: recompute each layer in the backward (default off).")] = None,
    zero: Annotated[int | None, typer.Option("--zero", parser=Bounded(int, 0, 3), show_default=False,
                                             help="Training: DeepSpeed ZeRO stage over --count GPUs.")] = None,
    engine: Annotated[str | None, typer.Option("--engine", metavar="auto|vllm|llama.cpp", show_default=False,
                                               help="Engine (default auto: llama.cpp for GGUF, else vLLM).")
                      ] = None,
    file: FileOpt = None,
    ctx_size: CtxSizeOpt = None,
    cache_type_k: CacheTypeKOpt = None,
    cache_type_v: CacheTypeVOpt = None,
    flash_attn: Annotated[str | None, typer.Option("--flash-attn", "-fa", metavar="on|off|auto", show_default=False,
                                                   help="llama.cpp: flash attention (default auto).")] = None,
    allow_offload: Annotated[bool | None, typer.Option(
        "--allow-offload", show_default=False,
        help="GGUF: pass with some layers in host memory (default: every layer must be on the GPU).")] = None,
    host_memory: Annotated[float | None, typer.Option(
        "--host-memory", parser=Bounded(float, 0, 1 << 20, unit=" GiB"), metavar="GiB", show_default=False,
        help="GGUF with --allow-offload: host memory the offloaded layers may use.")] = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Exit 0 if the model fits on the GPU(s), 3 if it does not, an error code otherwise; say why.
    With --method, the check is of one fine-tuning step (as `hfmem train`), not of serving.

    With --models FILE, every entry is checked and the exit code is the highest error code if any
    entry errored, else 3 if any does not fit, else 0."""
    from .api import load_gpus
    from .check_report import render_summary
    from .checks import evaluate, load_models_file, make_spec, run_checks
    from .errors import UsageError

    given: dict[str, Any] = {k: v for k, v in dict(gpu=gpu, count=count, precision=precision and precision.value,
                                   max_model_len=max_model_len, batch_size=batch_size,
                                   kv_cache_dtype=kv_cache_dtype,
                                   gpu_memory_utilization=gpu_memory_utilization, vllm_version=vllm_version,
                                   entrypoint=entrypoint, dtype=dtype, method=method and method.value,
                                   lora_r=lora_r, lora_target=lora_target, optimizer=optimizer and optimizer.value,
                                   train_precision=train_precision and train_precision.value, seq_len=seq_len,
                                   micro_batch_size=micro_batch_size, gradient_checkpointing=gradient_checkpointing,
                                   zero=zero, engine=engine, file=file, ctx_size=ctx_size, cache_type_k=cache_type_k,
                                   cache_type_v=cache_type_v, flash_attn=flash_attn, allow_offload=allow_offload,
                                   host_memory=host_memory).items() if v is not None}
    if (model is None) == (models is None):
        raise UsageError("give either a MODEL or --models FILE")
    if models is not None and revision is not None:
        raise UsageError("--revision applies to one model; pin revisions per entry in the models file")
    fmt = OutputFormat.json if json_ else fmt
    deadline = time.monotonic() + timeout  # one deadline for the whole command, every model included
    gpus = load_gpus(gpus_file)
    settings_read = _settings(None, max_model_len=None, batch_size=1, kv_cache_dtype="auto")
    if models is None:
        assert model is not None
        if gpu is None:
            raise UsageError("--gpu is required with a MODEL (e.g. --gpu h100)")
        spec = make_spec(dict(id=model, revision=revision, **given))
        report = _read(model, settings_read, revision=revision, token=token, offline=offline, quiet=quiet,
                       deadline=deadline, gpus=())
        results = [evaluate(spec, report, gpus)]
        if fmt is OutputFormat.table:
            sys.stdout.write(terminal_safe(_check_line(results[0]).rstrip("\n")) + "\n")
        elif fmt is OutputFormat.json:
            import json

            r = results[0]
            fit_dict = r.to_dict()["fit"] or {}
            sys.stdout.write(json.dumps({"model": model, "revision": r.revision_sha, "exit_code": r.exit_code,
                                         "context_tokens": r.context_tokens, **fit_dict}, indent=2) + "\n")
        else:
            sys.stdout.write(render_summary(results, fmt.value))
    else:
        entries = load_models_file(models, given)

        def read(model_id: str, rev: str | None) -> Any:
            # gpus=(): `check` fits its own GPU; the default set's table would be thrown away.
            return _read(model_id, settings_read, revision=rev, token=token, offline=offline, quiet=quiet,
                         deadline=deadline, label=model_id, progress=False, gpus=())

        results = run_checks(entries, read, gpus)
        sys.stdout.write(render_summary(results, fmt.value))
    for r in results:
        if r.native_note:
            _hint(f"note: {r.spec.id}: {r.native_note}", quiet)
    from .checks import overall_exit_code

    code = overall_exit_code(results)
    if code:
        raise typer.Exit(code)


def _check_line(r: Any) -> str:
    """One line saying whether and how the model fits, and why."""
    from .report import gib

    if r.train is not None:
        return _train_check_line(r)
    if r.gguf is not None:
        return _gguf_check_line(r)
    f, s = r.fit, r.spec
    if not (f.fits and f.per_gpu is not None):
        return f"does not fit: {s.id} ({s.precision}): {f.reason}\n"
    n = f.tensor_parallel_size
    return (f"fits: {s.id} ({s.precision}) on {n} x {f.gpu.name}{f' (tensor parallel {n})' if n > 1 else ''}: "
            f"{gib(f.per_gpu.total_bytes)} of {gib(f.usable_bytes)} usable per GPU at {r.context_tokens:,} tokens "
            f"x {s.batch_size}; longest context {f.max_context_tokens:,} tokens; largest batch {f.max_batch_size}; "
            f"decode <= {f.decode_tokens_per_s_bound:.0f} tokens/s per sequence (bandwidth bound)\n")


def _gguf_check_line(r: Any) -> str:
    """One line for a GGUF model under llama.cpp: which file, where its layers go, and why."""
    from .report import gib

    d, s = r.gguf, r.spec
    p = d.estimate.placement
    n = d.estimate.model.n_layer + 1
    what = (f"{s.id}: {r.gguf_file} on {d.device} at -c {d.estimate.kv.n_ctx:,}: {gib(p.gpu_bytes)} of "
            f"{gib(d.budget_bytes)} (--fit-target {d.estimate.settings.fit_target_mib} MiB left free)")
    longest = f"; longest -c with every layer {d.longest_ctx:,}" if d.longest_ctx else ""
    if d.all_layers:
        return f"fits: {what}, all {n} layers on the GPU{longest}\n"
    placed = (f"{p.n_gpu_layers}/{n} layers on the GPU" if not d.estimate.settings.n_cpu_moe else
              f"the experts of {d.estimate.settings.n_cpu_moe} layers in host memory")
    verdict = "fits with offload" if r.fits else "does not fit"
    why = "" if r.fits else (" (--allow-offload passes this)" if p.n_gpu_layers and not s.allow_offload
                             else f" (host memory {gib(p.host_bytes)} > --host-memory {s.host_memory:g} GiB)"
                             if p.n_gpu_layers else "")
    return f"{verdict}: {what}, {placed}, {gib(p.host_bytes)} in host memory{why}\n"


@app.command("train")
def train_cmd(
    model: ModelArg,
    method: MethodOpt = MethodChoice.lora,
    lora_r: LoraROpt = 16,
    lora_target: LoraTargetOpt = None,
    lora_dropout: LoraDropoutOpt = 0.0,
    train_embeddings: TrainEmbeddingsOpt = False,
    optimizer: OptimizerOpt = OptimizerChoice.adamw,
    train_precision: TrainPrecisionOpt = None,
    seq_len: SeqLenOpt = 2048,
    micro_batch_size: MicroBatchOpt = 1,
    gradient_checkpointing: CheckpointingOpt = False,
    attn_implementation: AttnOpt = AttnChoice.sdpa,
    fused_cross_entropy: FusedCeOpt = False,
    count: Annotated[int, typer.Option("--count", parser=Bounded(int, 1, MAX_GPUS, unit=" GPUs"),
                                       help="Data-parallel GPUs.")] = 1,
    zero: ZeroOpt = 0,
    fsdp: FsdpOpt = False,
    offload: OffloadOpt = OffloadChoice.none,
    gpu: GpuListOpt = None,
    gpus_file: GpusFileOpt = None,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    json_: JsonOpt = False,
    offline: OfflineOpt = False,
    refresh: RefreshOpt = False,
    quiet: QuietOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Fine-tuning memory per GPU (full, LoRA, QLoRA, freeze) from the model's real tensor shapes."""
    from .api import gpu_set, train_model, train_settings
    from .errors import UsageError
    from .train_report import render_train_json, render_train_markdown, render_train_table

    if fsdp and zero not in (0, 3):
        raise UsageError(f"--fsdp is full sharding (ZeRO-3): it contradicts --zero {zero}")
    settings = train_settings(
        method=method.value, lora_r=lora_r, lora_target=lora_target, lora_dropout=lora_dropout,
        train_embeddings=train_embeddings, optimizer=optimizer.value,
        train_precision=train_precision.value if train_precision else None, seq_len=seq_len,
        micro_batch_size=micro_batch_size, gradient_checkpointing=gradient_checkpointing,
        attn_implementation=attn_implementation.value, fused_cross_entropy=fused_cross_entropy, count=count,
        zero=3 if fsdp else zero, offload=offload.value)
    gpus = gpu_set(gpu, gpus_file) if gpu or gpus_file else None
    with _progress_bar(enabled=not quiet and sys.stderr.isatty()) as bar:
        report = train_model(model, settings, revision=revision, token=token, offline=offline or None,
                             refresh=refresh, progress=bar, gpus=gpus, deadline=time.monotonic() + timeout)
    if json_ or fmt is OutputFormat.json:
        sys.stdout.write(render_train_json(report))
    elif fmt is OutputFormat.markdown:
        sys.stdout.write(render_train_markdown(report))
    else:
        sys.stdout.write(render_train_table(report))


def _train_check_line(r: Any) -> str:
    from .report import gib

    t, s = r.train, r.spec
    e = t.estimate
    what = (f"{s.id} ({e.settings.method}, {e.precision}, --seq-len {e.settings.seq_len:,} x "
            f"{e.settings.micro_batch_size})")
    where = f"{t.count} x {t.gpu.name}" + (f" (ZeRO-{t.zero})" if t.zero else "")
    if not t.fits:
        more = f"; {t.gpus_needed} GPUs with ZeRO-{t.gpus_needed_zero} would" if t.gpus_needed else ""
        if t.fits_with_checkpointing:
            more = "; it fits with --gradient-checkpointing" + more
        longest = f"; longest --seq-len that fits {t.max_seq_len:,}" if t.max_seq_len else ""
        return (f"does not fit: {what} on {where}: needs {gib(e.total_bytes)} of {gib(t.usable_bytes)} per GPU"
                f"{longest}{more}\n")
    return (f"fits: {what} on {where}: {gib(e.total_bytes)} of {gib(t.usable_bytes)} per GPU; longest --seq-len "
            f"{t.max_seq_len:,}; largest --micro-batch-size {t.max_micro_batch_size}\n")


cache_app = typer.Typer(
    name="cache",
    help="Inspect or empty hfmem's cache (HTTP answers and per-commit snapshots). "
    "The Hugging Face cache itself is never touched.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info_cmd(json_: JsonOpt = False) -> None:
    """Where the cache is and what it holds."""
    from .api import cache_info
    from .cache_report import render_cache_info

    sys.stdout.write(render_cache_info(cache_info(), json=json_))


@cache_app.command("clear")
def cache_clear_cmd(quiet: QuietOpt = False) -> None:
    """Delete everything hfmem cached (only the files it writes; a folder holding others is refused)."""
    from .api import cache_dir, clear_cache

    freed = clear_cache()
    _hint(f"removed hfmem's files from {cache_dir()} ({freed:,} bytes)", quiet)


@cache_app.command("prune")
def cache_prune_cmd(
    older_than: Annotated[
        float, typer.Option("--older-than", metavar="DAYS", help="Drop snapshots unused for DAYS days.",
                            parser=Bounded(float, 0, MAX_AGE_DAYS, unit=" days"))
    ] = 30,
    quiet: QuietOpt = False,
) -> None:
    """Drop expired HTTP answers, snapshots not used for a while and leftover temporary files."""
    from .api import prune_cache

    freed = prune_cache(older_than)
    _hint(f"freed {freed:,} bytes", quiet)


#: Below this many shards the read is over before a bar would be worth drawing.
PROGRESS_MIN_SHARDS = 8


@contextmanager
def _progress_bar(*, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A transient progress bar on stderr for models with many shards (only on a terminal)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task: list[Any] = []

        def update(done: int, total: int) -> None:
            if total < PROGRESS_MIN_SHARDS:
                return
            if not task:
                task.append(bar.add_task("reading safetensors headers", total=total))
            bar.update(task[0], completed=done)

        yield update


def _hint(message: str, quiet: bool) -> None:
    if not quiet:  # warnings carry names and messages from outside: one line, shown as they are
        sys.stderr.write(terminal_safe(message) + "\n")


def _fail(message: str, code: int) -> int:
    # One line, no colour codes unless wanted: plain text honours NO_COLOR trivially.
    # A server's message or a name from a repo may hold escape sequences: shown escaped, on one line.
    line = next((x for x in message.splitlines() if x.strip()), "unknown error")
    sys.stderr.write(f"hfmem: error: {terminal_safe(line)}\n")
    return code


def run(args: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this; `main` exits with it)."""
    command = typer.main.get_command(app)
    try:
        # standalone mode: typer reports its own usage errors (exit 2) and help/--version exits.
        command.main(args=args, prog_name="hfmem", standalone_mode=True)
    except SystemExit as e:
        if any(isinstance(x, KeyboardInterrupt) for x in linked_errors(e)):  # typer: a silent exit 130
            sys.stderr.write("hfmem: interrupted\n")
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except HfmemError as e:
        return _fail(str(e), int(e.exit_code))
    except KeyboardInterrupt:
        sys.stderr.write("hfmem: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug: say so, without a traceback full of locals
        if os.environ.get("HFMEM_DEBUG"):
            raise
        return _fail(
            f"internal error ({type(e).__name__}: {e}); this is a bug in hfmem: please report it "
            "with the command you ran (HFMEM_DEBUG=1 shows the traceback)",
            int(ExitCode.INTERNAL),
        )
    return 0


def main() -> None:
    import gc

    # A large model's tables are ~100,000 small objects made and kept, none in a cycle: with the
    # default threshold (700) the collector walks them again and again, about 0.3 s of DeepSeek-V3's
    # cold run. The process is short-lived; collect rarely.
    gc.set_threshold(100_000, 50, 100)
    code = run()
    # The interpreter's teardown frees every object one by one and unloads every module: ~0.07 s
    # after DeepSeek-V3, a third of a warm run. Everything hfmem writes is closed and renamed into
    # place (and each cache write committed) before `run` returns, so the process ends here, once
    # its output is flushed.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # a reader that went away (`| head`), or a closed stream
        pass
    os._exit(code)
