"""The library API: `inspect_model("org/name")` -> a ModelReport of frozen records.

    >>> report = inspect_model("fixtures/snapshots/openai-community--gpt2.json")
    >>> report.parameters.total_params
    124439808
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .arch import Architecture, parse_architecture
from .checkpoint import Checkpoint, ReadResult, load_snapshot
from .errors import ConfigError, OfflineMiss, UnsupportedFormat, UsageError
from .estimate import MemoryEstimate, Settings, estimate_memory
from .fit import Fit, fit, tp_allowed
from .gpus import GPU
from .params import ParameterCount, count_parameters, quant_scheme
from .source import Source, SourceKind, parse_source

if TYPE_CHECKING:
    from .train import TrainFit, TrainingEstimate, TrainSettings

JSON_SCHEMA = "hfmem/1"


def __getattr__(name: str) -> Any:
    """`inspector.api.TrainSettings`, imported when first asked for: `hfmem MODEL` never loads the
    training module (its dataclasses cost ~10 ms of start-up)."""
    if name == "TrainSettings":
        from .train import TrainSettings

        return TrainSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ModelReport:
    """Everything hfmem knows about one model; `to_dict()` is the `--json` contract (hfmem/1)."""

    source: Source
    checkpoint: Checkpoint
    parameters: ParameterCount
    architecture: Architecture | None = None  # None: no usable config.json (see `architecture_error`)
    memory: MemoryEstimate | None = None
    architecture_error: str | None = None
    fit: tuple[Fit, ...] = ()  # each GPU x each precision of the estimate

    @property
    def notes(self) -> list[str]:
        notes = [n for n in (self.parameters.derived_note,) if n]
        if self.architecture is None:
            why = self.architecture_error or "no config.json"
            notes.append(f"{why}: the architecture, KV cache and memory estimate are unknown")
        return notes

    def to_dict(self) -> dict[str, Any]:
        from .version import __version__

        cp, p, m = self.checkpoint, self.parameters, self.memory
        scheme = quant_scheme(cp.quantization_config)
        params = p.to_dict()
        params["active"] = m.active_params if m else None
        if p.weights and p.weights.mtp_params:
            params["mtp"] = p.weights.mtp_params
        return {
            "schema": JSON_SCHEMA,
            "tool": {"name": "hfmem", "version": __version__},
            "assumptions": _assumptions(m),
            "model": cp.name,
            "revision": cp.sha,
            "source": {
                "kind": self.source.kind.value,
                "repo_id": cp.repo_id,
                "requested_revision": cp.revision,
                "path": cp.local_path,
            },
            "parameters": params,
            "weights_bytes": p.weights_bytes,
            "weights_format": cp.plan.format,
            "quantization": {"method": scheme.method, "bits": scheme.bits} if scheme else None,
            "architecture": self.architecture.to_dict() if self.architecture else None,
            "kv_cache": m.kv_cache.to_dict() if m else None,
            "estimates": [e.to_dict() for e in m.estimates] if m else [],
            "fit": [f.to_dict() for f in self.fit],
            "files": [f.to_dict() for f in p.files],
            "notes": self.notes,
            "warnings": list(cp.warnings),
        }


def _assumptions(m: MemoryEstimate | None) -> dict[str, Any]:
    settings = m.settings if m else Settings()
    out = settings.assumptions.to_dict()
    if m:  # as resolved for the memory table: a GPU of vLLM's ">= 70 GiB" tier (each fit row has its own)
        out.update(m.engine.to_dict())
    out["tensor_parallel_size"] = settings.tensor_parallel_size
    if m:
        out["context_source"] = m.context_source
        out["compute_dtype"] = m.compute_dtype
    return out


def read_checkpoint(
    source: Source,
    *,
    token: str | bool | None = None,
    offline: bool | None = None,
    refresh: bool = False,
    progress: Callable[[int, int], None] | None = None,
    deadline: float | None = None,
) -> ReadResult:
    """Read what a Source points at: a snapshot file, a local model, or a Hub repo. The Hub reader
    hands what it counted on the way (a digest's counts, shards' tallies) apart from the Checkpoint."""
    if source.kind is SourceKind.SNAPSHOT:
        assert source.path is not None
        return ReadResult(load_snapshot(source.path))
    if source.kind in (SourceKind.LOCAL_DIR, SourceKind.LOCAL_FILE):
        from .local import read_local

        return ReadResult(read_local(source))
    from .reader import read_hub

    return read_hub(source, token=token, offline=offline, refresh=refresh, progress=progress, deadline=deadline)


def inspect_model(
    model: str | Source,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    offline: bool | None = None,
    refresh: bool = False,
    progress: Callable[[int, int], None] | None = None,
    settings: Settings | None = None,
    gpus: Sequence[GPU] | None = None,
    deadline: float | None = None,
    engine: str = "auto",
    llamacpp: Any = None,
    filename: str | None = None,
) -> Any:
    """Read a model's metadata and count it exactly: a ModelReport, or for a GGUF model a
    GGUFReport (llama.cpp's memory at `llamacpp`, an `inspector.llamacpp.LlamaCppSettings`).

    `model` is what a user would type: a path (directory, .safetensors file, snapshot .json), an
    `org/name` repo id or a Hub URL. `token`: a Hub token, False to send none, None to use
    `HF_TOKEN` or the stored login. `offline` (None: `HF_HUB_OFFLINE`) answers from the cache
    alone; `refresh` asks the Hub again where a branch points; `progress(done, total)` is called
    as shard headers arrive; `settings` (context, batch, KV dtype, tensor-parallel size, engine
    assumptions) shape the memory estimate; `gpus` (default: shared/DESIGN.md's set) are those the
    fit is computed for, at the tensor-parallel size when it is above 1; `deadline` (a
    `time.monotonic()` value) is when reading from the Hub gives up (NetworkError). Raises an
    `inspector.errors.HfmemError` subclass on bad input.
    """
    source = model if isinstance(model, Source) else parse_source(model, revision, validate=False)
    source = source.with_file(filename)
    if engine not in ("auto", "vllm", "llama.cpp"):
        raise UsageError(f"--engine {engine!r}: vllm or llama.cpp")
    if engine == "llama.cpp" and source.kind in (SourceKind.HUB, SourceKind.LOCAL_DIR):
        source = replace(source, prefer_gguf=True)
    read = read_checkpoint(source, token=token, offline=offline, refresh=refresh, progress=progress,
                           deadline=deadline)
    checkpoint = read.checkpoint
    if checkpoint.plan.format == "gguf":
        if engine == "vllm":
            raise UsageError(f"{checkpoint.name} is a GGUF model: hfmem estimates vLLM from safetensors "
                             "checkpoints; use --engine llama.cpp (the default for GGUF)")

        def again(s: Source) -> Checkpoint:
            return read_checkpoint(s, token=token, offline=offline, progress=progress, deadline=deadline).checkpoint

        return inspect_gguf(source, again, checkpoint, llamacpp, gpus)
    if engine == "llama.cpp":
        raise UsageError(f"{checkpoint.name} has {checkpoint.plan.format} weights: --engine llama.cpp reads a GGUF "
                         "file (name a GGUF repo or file)")
    parameters = read.counts or count_parameters(checkpoint, read.tallies)
    if source.kind is SourceKind.HUB and not source.filename and read.counts is None:
        from .store import save_counts

        save_counts(checkpoint, parameters)
    if "config.json" not in checkpoint.json_files:
        return ModelReport(source, checkpoint, parameters)
    try:
        arch = parse_architecture(checkpoint.config)
    except ConfigError as e:  # the counts stand on the tensors alone; say why there is no estimate
        return ModelReport(source, checkpoint, parameters, architecture_error=str(e))
    settings = settings or Settings()
    tp = settings.tensor_parallel_size
    if tp > 1 and not tp_allowed(tp, arch.num_attention_heads, arch.num_key_value_heads):
        raise UsageError(f"--tensor-parallel-size {tp} cannot split {arch.num_attention_heads} attention heads / "
                         f"{arch.num_key_value_heads} KV heads (vLLM needs the heads divisible by it, and the KV "
                         "heads divisible by it or it by them)")
    memory = estimate_memory(arch, parameters, settings)
    return ModelReport(source, checkpoint, parameters, arch, memory, fit=fit_table(arch, parameters, settings, gpus))


def fit_table(arch: Architecture, params: ParameterCount, settings: Settings,
              gpus: Sequence[GPU] | None = None) -> tuple[Fit, ...]:
    """The Fit of every precision in `settings` on every GPU (default: DEFAULT_GPUS)."""
    from .gpus import DEFAULT_GPUS, builtin_gpus, find_gpu

    if gpus is None:
        gpus = [find_gpu(name, builtin_gpus()) for name in DEFAULT_GPUS]
    return tuple(fit(arch, params, p, g, settings) for g in gpus for p in settings.precisions)


def build_settings(precision: Sequence[str] | None, *, max_model_len: int | None, batch_size: int,
              kv_cache_dtype: str, tensor_parallel_size: int = 1, enforce_eager: bool = False,
              **engine: str | int | float | None) -> Settings:
    """Settings from the CLI's options, each checked before anything is read (a release, dtype or
    entry point hfmem does not know is a UsageError); engine options left unset (None) keep
    Assumptions' defaults. `precision`: the precisions' names, None for all the JSON shows."""
    from .estimate import JSON_PRECISIONS, Assumptions, Precision
    from .vllm import ENTRYPOINTS, parse_dtype, parse_release

    chosen = tuple(Precision(p) for p in precision) if precision else JSON_PRECISIONS

    given = {k: v for k, v in engine.items() if v is not None}
    parse_release(given.get("vllm_version"))  # type: ignore[arg-type]  # (refused here, before any read)
    parse_dtype(str(given.get("dtype", "auto")))
    if given.get("entrypoint", "serve") not in ENTRYPOINTS:
        raise UsageError(f"--entrypoint {given['entrypoint']!r} is not one of: {', '.join(ENTRYPOINTS)}")
    return Settings(
        max_model_len=max_model_len, batch_size=batch_size, kv_cache_dtype=kv_cache_dtype,
        tensor_parallel_size=tensor_parallel_size, precisions=tuple(dict.fromkeys(chosen)),
        assumptions=Assumptions(enforce_eager=enforce_eager, **given),  # type: ignore[arg-type]
    )

# --- what the CLI's commands call (cli.py imports no module below this one, but the renderers) ---


def gpu_set(names: Sequence[str] | None, gpus_file: str | Path | None) -> list[GPU]:
    """The GPUs named (default: shared/DESIGN.md's set), from the catalog and a --gpus-file."""
    from .gpus import DEFAULT_GPUS, find_gpu, load_gpus

    known = load_gpus(gpus_file)
    return [find_gpu(name, known) for name in (names or DEFAULT_GPUS)]


def load_gpus(gpus_file: str | Path | None) -> Any:
    """The catalog with a --gpus-file's GPUs added (gpus.load_gpus)."""
    from .gpus import load_gpus as load

    return load(gpus_file)


def check_snapshot_target(path: Path) -> None:
    """Refuse a --save-snapshot target before anything is read (checkpoint.check_snapshot_target)."""
    from .checkpoint import check_snapshot_target as check

    check(path)


def save_snapshot(cp: Checkpoint, path: Path) -> None:
    """Write everything read to `path` (checkpoint.save_snapshot)."""
    from .checkpoint import save_snapshot as save

    save(cp, path)


def cache_dir() -> Path:
    """hfmem's cache folder (env.cache_dir)."""
    from .env import cache_dir as folder

    return folder()


def cache_info() -> dict[str, object]:
    """What the cache holds (housekeeping.cache_info)."""
    from .housekeeping import cache_info as info

    return info()


def clear_cache() -> int:
    """Delete what hfmem cached; the bytes freed (housekeeping.clear_cache)."""
    from .housekeeping import clear_cache as clear

    return clear()


def prune_cache(older_than_days: float) -> int:
    """Drop what is old or expired; the bytes freed (housekeeping.prune_cache)."""
    from .housekeeping import prune_cache as prune

    return prune(older_than_days)


@dataclass(frozen=True)
class TrainReport:
    """`hfmem train`: a model read once, its fine-tuning estimate, the fit on each GPU and the rules
    of thumb computed for it; `to_dict()` is the `--json` contract (hfmem/1, with `training`)."""

    source: Source
    checkpoint: Checkpoint
    parameters: ParameterCount
    architecture: Architecture
    training: TrainingEstimate
    fit: tuple[TrainFit, ...] = ()

    @property
    def rules_of_thumb(self) -> list[tuple[str, int]]:
        from .train import rules_of_thumb

        return rules_of_thumb(self.training, self.parameters.weights_bytes)

    def to_dict(self) -> dict[str, Any]:
        from .version import __version__

        cp, p = self.checkpoint, self.parameters
        assumptions = self.training.settings.to_dict()
        assumptions["train_precision"] = self.training.precision
        return {
            "schema": JSON_SCHEMA,
            "tool": {"name": "hfmem", "version": __version__},
            "command": "train",
            "assumptions": assumptions,
            "model": cp.name,
            "revision": cp.sha,
            "source": {"kind": self.source.kind.value, "repo_id": cp.repo_id, "requested_revision": cp.revision,
                       "path": cp.local_path},
            "parameters": p.to_dict(),
            "weights_bytes": p.weights_bytes,
            "architecture": self.architecture.to_dict(),
            "training": self.training.to_dict(),
            "rules_of_thumb": [{"rule": rule, "bytes": b} for rule, b in self.rules_of_thumb],
            "fit": [f.to_dict() for f in self.fit],
            "warnings": list(cp.warnings),
        }


def train_settings(**options: Any) -> TrainSettings:
    """TrainSettings from the CLI's or a models file's options (None keeps the default); a value
    hfmem does not know is a UsageError before anything is read."""
    from .train import TrainSettings

    given = {k: v for k, v in options.items() if v is not None}
    target = given.get("lora_target")
    if isinstance(target, str):
        given["lora_target"] = tuple(t.strip() for t in target.split(",") if t.strip()) or None
    elif isinstance(target, list | tuple):
        given["lora_target"] = tuple(str(t) for t in target) or None
    return TrainSettings(**given)


def train_model(
    model: str | Source,
    settings: TrainSettings,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    offline: bool | None = None,
    refresh: bool = False,
    progress: Callable[[int, int], None] | None = None,
    gpus: Sequence[GPU] | None = None,
    deadline: float | None = None,
) -> TrainReport:
    """Read a model's metadata and estimate one fine-tuning step's peak memory per GPU, and where it
    fits (`gpus`, default shared/DESIGN.md's set). Raises an HfmemError subclass on bad input.

        >>> from inspector.api import TrainSettings
        >>> r = train_model("fixtures/snapshots/meta-llama--Llama-2-7b-hf.json",
        ...                 TrainSettings(lora_r=8, lora_target=("q_proj", "v_proj")), gpus=())
        >>> r.training.trainable_params
        4194304
    """
    from .train import estimate_training, modules_of, train_fit

    source = model if isinstance(model, Source) else parse_source(model, revision, validate=False)
    read = read_checkpoint(source, token=token, offline=offline, refresh=refresh, progress=progress,
                           deadline=deadline)
    checkpoint = read.checkpoint
    if checkpoint.plan.format == "gguf":
        raise UnsupportedFormat(f"{checkpoint.name} is a GGUF model: hfmem train sizes a training step from a "
                                "safetensors checkpoint and its config.json (name the original repo)")
    parameters = read.counts or count_parameters(checkpoint, read.tallies)
    if "config.json" not in checkpoint.json_files:
        raise ConfigError(f"{checkpoint.name}: no config.json: the layers cannot be sized for training")
    arch = parse_architecture(checkpoint.config)
    modules = modules_of(checkpoint)
    estimate = estimate_training(checkpoint, arch, settings, None, modules)
    if gpus is None:
        from .gpus import DEFAULT_GPUS, builtin_gpus, find_gpu

        gpus = [find_gpu(name, builtin_gpus()) for name in DEFAULT_GPUS]
    fits = tuple(train_fit(checkpoint, arch, settings, g, modules) for g in gpus)
    return TrainReport(source, checkpoint, parameters, arch, estimate, fits)


# --- GGUF files and llama.cpp ------------------------------------------------------------------------

#: The fit table's GPUs for a GGUF model when --gpu names none: the cards and Macs llama.cpp users
#: run (our choice; the first is the GPU the default file must fit).
DEFAULT_GGUF_GPUS = ("RTX 4090 24GB", "RTX 4060 Ti 16GB", "RTX 3060 12GB", "M4 Max 36GB", "H100 80GB")


@dataclass(frozen=True)
class QuantRow:
    """One GGUF file of the repo: its size, and llama.cpp's memory with every layer on the GPU,
    the weights from the file's size, the KV cache and compute buffer from the one header read."""

    file: str
    label: str
    file_bytes: int | None
    bits_per_weight: float | None
    gpu_bytes: int | None
    fits: bool | None  # on the first GPU, every layer
    chosen: bool

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "quantization": self.label, "file_bytes": self.file_bytes,
                "bits_per_weight": self.bits_per_weight, "gpu_bytes_all_layers": self.gpu_bytes,
                "fits_first_gpu": self.fits, "chosen": self.chosen}


@dataclass(frozen=True)
class GGUFReport:
    """`hfmem MODEL` for a GGUF file: the chosen file's tensors, llama.cpp's memory, the repo's
    other quantizations, and where it fits. `to_dict()` is the `--json` contract (hfmem/1)."""

    source: Source
    checkpoint: Checkpoint
    model: Any  # llamacpp.LlamaModel
    estimate: Any  # llamacpp.LlamaCppEstimate at the settings
    quantizations: tuple[QuantRow, ...]
    fit: tuple[Any, ...]  # llamacpp.DeviceFit per GPU
    first_gpu: str | None
    file_named: bool = False  # the user named the file (a path, --file, :TAG): no other is chosen
    rows_ctx: int = 0  # the -c the quantization rows are compared at (llamacpp.row_settings)
    cpu_only: Any = None  # llamacpp.LlamaCppEstimate with no GPU: the host memory a CPU-only run takes
    #: Reads another file of the same repo or folder (`check` picks the file for its own GPU).
    reader: Callable[[str], Checkpoint] | None = field(default=None, repr=False, compare=False)

    @property
    def chosen_file(self) -> str:
        return self.checkpoint.plan.files[0]

    @property
    def projectors(self) -> list[Any]:
        """The repo's multimodal projectors (mmproj files): llama-server loads one beside the model
        with --mmproj, and --fit counts it on the GPU."""
        from .gguf import gguf_files

        return [f for f in gguf_files(self.checkpoint.files) if f.projector]

    def to_dict(self) -> dict[str, Any]:
        from .version import __version__

        cp, m = self.checkpoint, self.model
        return {
            "schema": JSON_SCHEMA,
            "tool": {"name": "hfmem", "version": __version__},
            "engine": "llama.cpp",
            "model": cp.name,
            "revision": cp.sha,
            "source": {"kind": self.source.kind.value, "repo_id": cp.repo_id, "requested_revision": cp.revision,
                       "path": cp.local_path},
            "weights_format": "gguf",
            "file": {"name": self.chosen_file, "parts": list(cp.plan.files),
                     "bytes": sum(cp.files.get(p) or 0 for p in cp.plan.files) or None,
                     "tensor_bytes": self.estimate.model_bytes},
            "parameters": {"total": m.params},
            "architecture": m.to_dict(),
            "llama_cpp": self.estimate.to_dict(),
            "quantizations": [q.to_dict() for q in self.quantizations],
            "quantizations_ctx_size": self.rows_ctx,
            "projectors": [{"file": f.name, "bytes": f.bytes} for f in self.projectors],
            "fit": [f.to_dict() for f in self.fit],
            "cpu_only": self.cpu_only.to_dict()["host"] if self.cpu_only else None,
            "warnings": list(cp.warnings),
        }


def inspect_gguf(source: Source, read: Callable[[Source], Checkpoint], checkpoint: Checkpoint,
                 settings: Any = None, gpus: Sequence[GPU] | None = None) -> GGUFReport:
    """A GGUF model's report. Without a file named (`--file`, `:TAG`), the row shown in full is the
    largest quantization whose every layer fits the first GPU at the chosen context; when that is
    not the file whose header was read, its header is read too (`read`)."""
    from . import llamacpp as lc
    from .gguf import gguf_files
    from .gpus import builtin_gpus, find_gpu

    if isinstance(settings, dict):  # the CLI's options as given
        settings = llamacpp_settings(**settings)
    settings = (settings or lc.LlamaCppSettings()).resolved()
    if gpus is None:
        gpus = [find_gpu(name, builtin_gpus()) for name in DEFAULT_GGUF_GPUS]
    model = lc.llama_model(checkpoint.gguf_model())
    first = gpus[0] if gpus else None
    budget = (max(0, lc.device_free_bytes(first.vendor, first.memory_bytes) - settings.fit_target_mib * lc.MIB)
              if first else None)
    files = [f for f in gguf_files(checkpoint.files) if not f.projector and not f.missing]
    chosen = checkpoint.plan.files[0]
    named = source.filename or source.quant or source.kind in (SourceKind.LOCAL_FILE, SourceKind.SNAPSHOT)
    if not named and budget is not None and len(files) > 1:
        best = lc.pick_file(model, settings, files, budget)
        if best is not None and best.name != chosen:
            try:
                checkpoint = read(replace(source, filename=best.name))
            except OfflineMiss:  # the file that fits was never read: show the one that was, and say so
                gpu = first.name if first else "the GPU"
                said = f"offline: {best.name} fits {gpu} better but was never read; shown: {chosen}"
                checkpoint = replace(checkpoint, warnings=(*checkpoint.warnings, said))
            else:
                model = lc.llama_model(checkpoint.gguf_model())
                chosen = best.name
    estimate = lc.estimate(model, settings)
    layers = lc.layer_bytes(model)
    n = len(settings.tensor_split)
    fits = tuple(lc.fit_device(model, settings, f"{n} x {g.name}" if n > 1 else g.name,
                               lc.device_free_bytes(g.vendor, g.memory_bytes), layers) for g in gpus)
    rs = lc.row_settings(settings)
    at_rows = lc.estimate(model, rs, layers=layers)

    def row(f: Any) -> QuantRow:
        size = f.bytes
        if f.name == chosen:
            size = size if size and size >= at_rows.model_bytes else at_rows.model_bytes
        gpu_bytes = (at_rows.placement.gpu_bytes if f.name == chosen
                     else lc.file_gpu_bytes(model, rs, size, full=at_rows) if size is not None else None)
        return QuantRow(f.name, f.label, size, round(size * 8 / model.params, 2) if size and model.params else None,
                        gpu_bytes, None if budget is None or gpu_bytes is None
                        else gpu_bytes <= budget * max(1, len(settings.tensor_split)), f.name == chosen)

    rows = [row(f) for f in files]
    rereadable = source.kind in (SourceKind.HUB, SourceKind.LOCAL_DIR, SourceKind.LOCAL_FILE)
    def reader(name: str) -> Checkpoint:
        return read(replace(source, filename=name, quant=None, kind=_dir_kind(source), path=_dir_path(source)))

    cpu_only = lc.estimate(model, settings, gpu=False, layers=layers)
    return GGUFReport(source, checkpoint, model, estimate, tuple(rows), fits, first.name if first else None,
                      bool(named), at_rows.kv.n_ctx, cpu_only, reader if rereadable else None)


def _dir_kind(source: Source) -> SourceKind:
    return SourceKind.LOCAL_DIR if source.kind is SourceKind.LOCAL_FILE else source.kind


def _dir_path(source: Source) -> Path | None:
    return source.path.parent if source.kind is SourceKind.LOCAL_FILE and source.path else source.path


def llamacpp_settings(*, ctx_size: int | None = None, parallel: int | None = None, max_model_len: int | None = None,
                      batch_size: int = 1, kv_cache_dtype: str = "auto", cache_type_k: str | None = None,
                      cache_type_v: str | None = None, n_gpu_layers: str | int | None = None,
                      **options: Any) -> Any:
    """LlamaCppSettings from the CLI's options (or a models file's keys), each checked before anything
    is read. hfmem's own names map onto llama.cpp's: --batch-size onto --parallel, --max-model-len x
    --batch-size onto -c, --kv-cache-dtype onto --cache-type-k/-v (fp8 refused: llama.cpp has none)."""
    from .llamacpp import LlamaCppSettings

    slots = parallel or batch_size
    # -c 0, as llama.cpp's: the model's own context, which --fit then leaves as it is
    ctx = ctx_size if ctx_size is not None else (max_model_len * slots if max_model_len and max_model_len > 0
                                                 else None)
    split = options.pop("tensor_split", None)
    if isinstance(split, str):
        try:
            split = tuple(float(x) for x in split.split(",") if x.strip())
        except ValueError:
            raise UsageError(f"--tensor-split {split[:40]!r}: shares per GPU, e.g. 1,1 or 3,1") from None
    split = tuple(split or ())
    if any(not 0 <= x < 1e9 for x in split) or split and (sum(split) <= 0 or len(split) > 16):
        raise UsageError("--tensor-split: up to 16 shares per GPU, each a number from 0, not all 0")
    options["tensor_split"] = split if len(split) > 1 else ()
    ngl: int | None
    if n_gpu_layers is None or str(n_gpu_layers).strip().lower() in ("auto", "-1", "all", "-2", "999"):
        ngl = None
    else:
        text = str(n_gpu_layers).strip()
        if not text.isdigit() or len(text) > 5:
            raise UsageError(f"--n-gpu-layers {text[:20]!r}: a number of layers, auto or all")
        ngl = int(text)
    return LlamaCppSettings(ctx_size=ctx, parallel=slots, cache_type_k=cache_type_k and cache_type_k.lower(),
                            cache_type_v=cache_type_v and cache_type_v.lower(), kv_cache_dtype=kv_cache_dtype,
                            n_gpu_layers=ngl, **options).validate()
