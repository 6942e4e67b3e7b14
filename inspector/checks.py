"""`hfmem check`: does a model fit a GPU, for one model or a models.toml of them, with exit codes a
pipeline can trust (shared/DESIGN.md: the highest error code if any entry errored, else 3 if any does
not fit, else 0).

A models file is a `[defaults]` table and `[[model]]` entries:

    [defaults]
    gpu = "A100 80GB"
    precision = "bf16"

    [[model]]
    id = "Qwen/Qwen2-7B-Instruct"
    max_model_len = 8192

Each entry may override any default and pin a `revision`. Options given on the command line replace
the file's `[defaults]`; an entry's own values win over both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, EntryError, ExitCode, HfmemError, InternalError, UsageError
from .estimate import AUTO_MAX_MODEL_LEN, Assumptions, Precision, Settings, resolve_context
from .fit import Fit, fit
from .gpus import GPU, find_gpu, read_toml
from .kvcache import KV_CACHE_DTYPES
from .limits import MAX_GPUS, MAX_TOKENS
from .train import METHODS, OPTIMIZERS, TRAIN_PRECISIONS, TrainFit, TrainSettings, train_fit
from .vllm import DTYPES, ENTRYPOINTS, parse_release, supported_range

if TYPE_CHECKING:
    from .api import ModelReport


@dataclass(frozen=True)
class CheckSpec:
    """What to check: a model (and revision) on a GPU, under vLLM's option names."""

    id: str
    gpu: str | None = None
    revision: str | None = None
    count: int | None = None
    precision: str = "stored"
    max_model_len: int | None = None
    batch_size: int = 1
    kv_cache_dtype: str = "auto"
    gpu_memory_utilization: float | None = None
    vllm_version: str | None = None
    entrypoint: str = "serve"
    dtype: str = "auto"
    # Training (`method` set): the fit of one fine-tuning step, `hfmem train`'s options.
    method: str | None = None
    lora_r: int | None = None
    lora_target: str | None = None
    optimizer: str | None = None
    train_precision: str | None = None
    seq_len: int | None = None
    micro_batch_size: int | None = None
    gradient_checkpointing: bool | None = None
    zero: int | None = None
    # A GGUF model (llama.cpp): its file and llama.cpp's options.
    engine: str | None = None  # auto (None), vllm or llama.cpp: as `hfmem MODEL --engine`
    file: str | None = None
    ctx_size: int | None = None
    cache_type_k: str | None = None
    cache_type_v: str | None = None
    flash_attn: str | None = None
    allow_offload: bool = False
    host_memory: float | None = None  # GiB of host memory the offloaded part may use

    @property
    def training(self) -> bool:
        return self.method is not None

    def train_settings(self) -> TrainSettings:
        given = {k: getattr(self, k) for k in TRAIN_KEYS if getattr(self, k) is not None}
        if isinstance(given.get("lora_target"), str):
            given["lora_target"] = tuple(t.strip() for t in given["lora_target"].split(",") if t.strip())
        return TrainSettings(count=self.count or 1, **given)

    def settings(self) -> Settings:
        return Settings(max_model_len=self.max_model_len, batch_size=self.batch_size,
                        kv_cache_dtype=self.kv_cache_dtype, precisions=(Precision(self.precision),),
                        assumptions=Assumptions(gpu_memory_utilization=self.gpu_memory_utilization,
                                                vllm_version=self.vllm_version, entrypoint=self.entrypoint,
                                                dtype=self.dtype))


TRAIN_KEYS = ("method", "lora_r", "lora_target", "optimizer", "train_precision", "seq_len", "micro_batch_size",
              "gradient_checkpointing", "zero")
#: vLLM's options, which mean nothing for a training check.
SERVING_KEYS = ("precision", "max_model_len", "batch_size", "kv_cache_dtype", "gpu_memory_utilization",
                "vllm_version", "entrypoint", "dtype")
#: llama.cpp's options, for a GGUF model.
GGUF_KEYS = ("file", "ctx_size", "cache_type_k", "cache_type_v", "flash_attn", "allow_offload", "host_memory")
DEFAULT_KEYS = frozenset(f.name for f in fields(CheckSpec)) - {"id", "revision"}
ENTRY_KEYS = frozenset(f.name for f in fields(CheckSpec))


@dataclass(frozen=True)
class CheckResult:
    """One entry's answer: a Fit, or the error that stopped it (with its exit code)."""

    spec: CheckSpec
    position: int  # the entry's number in the file, from 1; 0 for a model named on the command line
    fit: Fit | None = None
    train: TrainFit | None = None
    gguf: Any = None  # llamacpp.DeviceFit: a GGUF model under llama.cpp
    gguf_file: str | None = None
    revision_sha: str | None = None
    context_tokens: int | None = None
    native_note: str | None = None
    error: str | None = None
    error_code: int | None = None
    malformed: bool = False  # the entry itself was invalid: `spec` holds only its id

    @property
    def exit_code(self) -> int:
        if self.error_code is not None:
            return self.error_code
        return int(ExitCode.OK if self.fits else ExitCode.DOES_NOT_FIT)

    @property
    def fits(self) -> bool:
        if self.train is not None:
            return self.train.fits
        if self.gguf is not None:
            return bool(self.gguf.all_layers or self.spec.allow_offload and self.gguf.estimate.placement.n_gpu_layers
                        and (self.spec.host_memory is None
                             or self.gguf.estimate.placement.host_bytes <= self.spec.host_memory * 2**30))
        return self.fit is not None and self.fit.fits and self.fit.per_gpu is not None

    @property
    def gpu_name(self) -> str | None:
        if self.gguf is not None:
            return str(self.gguf.device)
        f = self.train or self.fit
        return f.gpu.name if f else None

    @property
    def per_gpu_bytes(self) -> tuple[int, int] | None:
        """(needed, usable) bytes per GPU."""
        if self.gguf is not None:
            return self.gguf.estimate.placement.gpu_bytes, self.gguf.budget_bytes
        if self.train is not None:
            return self.train.estimate.total_bytes, self.train.usable_bytes
        if self.fit is not None and self.fit.per_gpu is not None:
            return self.fit.per_gpu.total_bytes, self.fit.usable_bytes
        return None

    @property
    def gpus_used(self) -> int | None:
        if self.gguf is not None:
            return 1
        if self.train is not None:
            return self.train.count
        return self.fit.tensor_parallel_size if self.fit else None

    @property
    def longest_tokens(self) -> int | None:
        if self.gguf is not None:
            return self.gguf.longest_ctx  # type: ignore[no-any-return]
        if self.train is not None:
            return self.train.max_seq_len
        return self.fit.max_context_tokens if self.fit else None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "fits" if self.exit_code == 0 else "does not fit"

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "model": self.spec.id,
            "requested": None if self.malformed else {k: v for k, v in asdict(self.spec).items() if k != "id"},
            "revision": self.revision_sha,
            "status": self.status,
            "exit_code": self.exit_code,
            "context_tokens": self.context_tokens,
            "fit": (self.fit.to_dict() if self.fit else self.train.to_dict() if self.train
                    else {**self.gguf.to_dict(), "engine": "llama.cpp", "file": self.gguf_file} if self.gguf
                    else None),
            "note": self.native_note,
            "error": self.error,
        }


def overall_exit_code(results: Sequence[CheckResult]) -> int:
    """shared/DESIGN.md: the highest error code among the entries if any errored, else 3 if any
    does not fit, else 0.

    >>> missing = CheckResult(CheckSpec("nobody/nothing"), 1, error="not found", error_code=4)
    >>> overall_exit_code([missing]), overall_exit_code([])
    (4, 0)
    """
    errors = [r.error_code for r in results if r.error_code is not None]
    if errors:
        return max(errors)
    return int(ExitCode.DOES_NOT_FIT) if any(r.exit_code for r in results) else 0


# --- the models file ---------------------------------------------------------------------------


def _validate(values: Mapping[str, Any], where: str, allowed: frozenset[str] = DEFAULT_KEYS) -> dict[str, Any]:
    """The values of a [defaults] table, [[model]] entry or the command line's options, type-checked
    and normalised; raises EntryError naming `where`."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in allowed:
            raise EntryError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
        if key in ("id", "revision", "gpu"):
            ok = isinstance(value, str) and value.strip() != ""
            want = "a non-empty string"
        elif key == "max_model_len" and value == "auto":
            ok, want, value = True, "", AUTO_MAX_MODEL_LEN
        elif key in ("count", "max_model_len", "batch_size"):
            high = MAX_GPUS if key == "count" else MAX_TOKENS
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high
            want = f"a whole number from 1 to {high:,}"
        elif key == "precision":
            ok = isinstance(value, str) and value.lower() in {p.value for p in Precision}
            want = "one of " + ", ".join(p.value for p in Precision)
            value = value.lower() if ok else value
        elif key == "kv_cache_dtype":
            ok = isinstance(value, str) and value.strip().lower() in {"auto", *KV_CACHE_DTYPES}
            want = "auto or one of " + ", ".join(KV_CACHE_DTYPES)
            value = value.strip().lower() if ok else value
        elif key == "vllm_version":
            try:
                ok = isinstance(value, str) and bool(parse_release(value))
            except UsageError:
                ok = False
            want = f"a vLLM release from {supported_range()}"
        elif key == "entrypoint":
            ok = value in ENTRYPOINTS
            want = "one of " + ", ".join(ENTRYPOINTS)
        elif key == "dtype":
            ok = isinstance(value, str) and value.strip().lower() in DTYPES
            want = "one of auto, bfloat16, float16, float32"
        elif key in ("lora_r", "seq_len", "micro_batch_size"):
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_TOKENS
            want = f"a whole number from 1 to {MAX_TOKENS:,}"
        elif key == "zero":
            ok = value in (0, 1, 2, 3) and not isinstance(value, bool)
            want = "a ZeRO stage: 0, 1, 2 or 3"
        elif key in ("gradient_checkpointing", "allow_offload"):
            ok = isinstance(value, bool)
            want = "true or false"
        elif key == "engine":
            ok = value in ("auto", "vllm", "llama.cpp")
            want = "auto, vllm or llama.cpp"
        elif key == "file":
            ok = isinstance(value, str) and value.strip() != "" and value.isprintable()
            want = "a file name in the repo"
        elif key == "ctx_size":
            ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_TOKENS
            want = f"a whole number from 1 to {MAX_TOKENS:,}"
        elif key in ("cache_type_k", "cache_type_v"):
            from .llamacpp import CACHE_TYPES

            ok = isinstance(value, str) and value.lower() in CACHE_TYPES
            want = "one of " + ", ".join(CACHE_TYPES)
            value = value.lower() if ok else value
        elif key == "flash_attn":
            ok = value in ("on", "off", "auto")
            want = "on, off or auto"
        elif key == "host_memory":
            ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1 << 20
            want = "GiB of host memory, a number from 0"
        elif key in ("method", "optimizer", "train_precision"):
            allowed_values = {"method": METHODS, "optimizer": OPTIMIZERS, "train_precision": TRAIN_PRECISIONS}[key]
            ok = value in allowed_values
            want = "one of " + ", ".join(allowed_values)
        elif key == "lora_target":
            ok = isinstance(value, str) and value.strip() != "" or isinstance(value, list) and bool(value) and all(
                isinstance(v, str) and v.strip() for v in value)
            want = 'module names ("q_proj,v_proj" or a list) or "all-linear"'
            value = ",".join(value) if ok and isinstance(value, list) else value
        elif key == "gpu_memory_utilization":
            # (a comparison, not math.isfinite, which overflows on a 400-digit integer; NaN fails it)
            ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1
            want = "a number in (0, 1]"
        else:  # pragma: no cover - every allowed key is handled above
            raise AssertionError(key)
        if not ok:
            raise EntryError(f"{where}: {key} must be {want}, not {value!r}")
        out[key] = value
    return out


def make_spec(values: Mapping[str, Any], where: str = "command line") -> CheckSpec:
    """A CheckSpec from validated values: a training check (`method` set) takes `hfmem train`'s keys
    and none of vLLM's; a serving check none of training's (EntryError otherwise)."""
    if values.get("method") is not None:
        serving = sorted(k for k in SERVING_KEYS if k in values)
        if serving:
            raise EntryError(f"{where}: {serving[0]} is a serving (vLLM) setting; a training check (method = "
                             f"{values['method']!r}) takes seq_len, micro_batch_size and the training keys")
    else:
        training = sorted(k for k in TRAIN_KEYS if k in values)
        if training:
            raise EntryError(f"{where}: {training[0]} is a training setting: set method (full, lora, qlora or "
                             "freeze) to check fine-tuning")
    spec = CheckSpec(**values)
    if spec.training:
        try:
            spec.train_settings()
        except UsageError as e:
            raise EntryError(f"{where}: {e}") from None
    return spec


def load_models_file(path: str | Path, overrides: Mapping[str, Any] | None = None,
                     ) -> list[CheckSpec | CheckResult]:
    """The entries of a models file, in order: a CheckSpec each, or a CheckResult carrying the error
    of a malformed entry (so the others are still checked). Raises UsageError for a file that is
    not valid TOML (naming the line) or whose [defaults] is malformed: nothing can be checked then.

    `overrides` (command-line options) replace the file's defaults; an entry's own values win.
    """
    path = Path(path)
    doc = read_toml(path, "the models file", UsageError)
    unknown = set(doc) - {"defaults", "model"}
    if unknown:
        raise UsageError(f"{path}: unknown table {sorted(unknown)[0]!r} (expected [defaults] and [[model]])")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UsageError(f"{path}: [defaults] must be a table")
    base = {**_validate(defaults, f"{path}: [defaults]"), **_validate(overrides or {}, "command line")}
    models = doc.get("model", [])
    if not isinstance(models, list) or not models:
        raise UsageError(f"{path}: no [[model]] entries")
    out: list[CheckSpec | CheckResult] = []
    for i, entry in enumerate(models, 1):
        name = entry.get("id") if isinstance(entry, dict) else None
        where = f"model {i}" + (f" ({name})" if isinstance(name, str) else "")
        try:
            if not isinstance(entry, dict):
                raise EntryError(f"{where}: must be a table")
            if "id" not in entry:
                raise EntryError(f"{where}: has no id")
            out.append(make_spec({**base, **_validate(entry, where, ENTRY_KEYS)}, where))
        except EntryError as e:
            spec = CheckSpec(id=name if isinstance(name, str) else "?")
            out.append(CheckResult(spec, i, error=str(e), error_code=int(e.exit_code), malformed=True))
    return out


# --- checking ----------------------------------------------------------------------------------

Reader = Callable[[str, str | None], "ModelReport"]


def evaluate(spec: CheckSpec, report: ModelReport, gpus: Sequence[GPU], position: int = 0) -> CheckResult:
    """Fit one spec against a model already read; raises HfmemError for a bad GPU name or a model
    without a usable config."""
    if not spec.gpu:
        raise UsageError("no GPU named: give --gpu or set gpu in [defaults] or the entry")
    target = find_gpu(spec.gpu, gpus)
    gguf = getattr(report, "chosen_file", None) is not None
    if spec.engine == "vllm" and gguf:
        raise UsageError(f"{report.checkpoint.name} is a GGUF model: engine vllm reads safetensors checkpoints "
                         "(use llama.cpp, the default for GGUF)")
    if spec.engine == "llama.cpp" and not gguf:
        raise UsageError(f"{report.checkpoint.name} has {report.checkpoint.plan.format} weights: engine llama.cpp "
                         "reads a GGUF file")
    if gguf:
        return _evaluate_gguf(spec, report, target, position)
    if spec.file or any(getattr(spec, k) not in (None, False) for k in GGUF_KEYS):
        given = next(k for k in GGUF_KEYS if getattr(spec, k) not in (None, False))
        raise EntryError(f"{report.checkpoint.name}: {given} is a llama.cpp setting, for a GGUF model")
    if report.architecture is None:
        why = report.architecture_error or "no config.json"
        raise ConfigError(f"{report.checkpoint.name}: {why}; cannot check")
    if spec.training:
        tf = train_fit(report.checkpoint, report.architecture, spec.train_settings(), target)
        return CheckResult(spec, position, train=tf, revision_sha=report.checkpoint.sha,
                           context_tokens=spec.train_settings().seq_len)
    settings = spec.settings()
    precision = Precision(spec.precision)
    result = fit(report.architecture, report.parameters, precision, target, settings, spec.count)
    note = None
    own = report.memory.compute_dtype if report.memory else None
    ran = result.engine.dtype if result.engine else None
    if not result.native:
        dtype = ran if precision is Precision.STORED and ran else spec.precision
        note = f"{dtype} is not native on {target.name}; it would be emulated or refused"
    elif precision is Precision.STORED and own and ran and own != ran and spec.dtype == "auto":
        note = (f"vLLM's --dtype auto runs this {own} model in {ran} on {target.name} "
                f"(vllm/config/model.py _resolve_auto_dtype)")
    context = result.context_tokens or resolve_context(report.architecture, spec.max_model_len,
                                                       settings.assumptions)[0]
    return CheckResult(spec, position, result, revision_sha=report.checkpoint.sha, context_tokens=context,
                       native_note=note)


def _evaluate_gguf(spec: CheckSpec, report: Any, target: GPU, position: int) -> CheckResult:
    """A GGUF model on one GPU as llama.cpp's --fit would place it: it fits when every layer does
    (or, with allow_offload, when some layers do and the rest fit host_memory). Without a file
    named, the largest quantization whose every layer fits this GPU is the one checked."""
    from . import llamacpp as lc

    if spec.training:
        raise EntryError(f"{report.checkpoint.name}: hfmem's training estimate reads safetensors checkpoints, "
                         "not GGUF")
    vllm = {"precision": spec.precision != "stored",
            "gpu_memory_utilization": spec.gpu_memory_utilization is not None,
            "vllm_version": spec.vllm_version is not None, "entrypoint": spec.entrypoint != "serve",
            "dtype": spec.dtype != "auto"}
    given = next((k for k, v in vllm.items() if v), None)
    if given:
        raise EntryError(f"{report.checkpoint.name} is a GGUF model, checked for llama.cpp: {given} is a vLLM "
                         "setting")
    from .api import llamacpp_settings

    # (the one mapping of hfmem's names onto llama.cpp's, as `hfmem MODEL` makes it; count: that many
    # of the GPU, the layers split as llama.cpp splits them by free memory: evenly)
    settings = llamacpp_settings(
        ctx_size=spec.ctx_size, max_model_len=spec.max_model_len, batch_size=spec.batch_size,
        kv_cache_dtype=spec.kv_cache_dtype, cache_type_k=spec.cache_type_k, cache_type_v=spec.cache_type_v,
        flash_attn=spec.flash_attn or "auto",
        tensor_split=(1.0,) * spec.count if spec.count and spec.count > 1 else None).resolved()
    checkpoint, model = report.checkpoint, report.model
    free = lc.device_free_bytes(target.vendor, target.memory_bytes)
    budget = max(0, free - settings.fit_target_mib * lc.MIB)
    named = spec.file or (report.chosen_file if report.file_named else None)
    if not named and report.reader is not None and len(report.quantizations) > 1:
        from .gguf import gguf_files

        best = lc.pick_file(model, settings, gguf_files(checkpoint.files), budget)
        named = best.name if best is not None else None
    if named and named not in checkpoint.plan.files:
        if report.reader is None:
            raise EntryError(f"{checkpoint.name}: no GGUF file {named!r} was read")
        checkpoint = report.reader(named)
        model = lc.llama_model(checkpoint.gguf_model())
    n = len(settings.tensor_split)
    device = lc.fit_device(model, settings, f"{n} x {target.name}" if n > 1 else target.name, free)
    return CheckResult(spec, position, gguf=device, gguf_file=checkpoint.plan.files[0],
                       revision_sha=checkpoint.sha, context_tokens=device.estimate.kv.n_ctx)


def run_checks(entries: Sequence[CheckSpec | CheckResult], read: Reader, gpus: Sequence[GPU], *,
               workers: int = 4, done: Callable[[], None] | None = None) -> list[CheckResult]:
    """Check every entry, reading each distinct (model, revision) once and `workers` at a time; an
    error in one entry becomes that entry's result and never stops the others."""
    wanted = {(e.id, e.revision) for e in entries if isinstance(e, CheckSpec)}
    reports: dict[tuple[str, str | None], ModelReport | HfmemError] = {}

    def load(key: tuple[str, str | None]) -> None:
        try:
            reports[key] = read(*key)
        except HfmemError as e:
            reports[key] = e
        except Exception as e:  # a bug in one entry must not hide the answers for the others
            reports[key] = _internal(e)
        if done:
            done()

    from .threads import stopping_executor

    with stopping_executor(max(1, min(workers, len(wanted) or 1))) as pool:
        list(pool.map(load, sorted(wanted, key=lambda k: (k[0], k[1] or ""))))

    results = []
    for i, entry in enumerate(entries, 1):
        if isinstance(entry, CheckResult):
            results.append(entry)
            continue
        got = reports[(entry.id, entry.revision)]
        try:
            if isinstance(got, HfmemError):
                raise got
            results.append(evaluate(entry, got, gpus, i))
        except HfmemError as e:
            results.append(CheckResult(entry, i, error=str(e), error_code=int(e.exit_code)))
        except Exception as e:
            err = _internal(e)
            results.append(CheckResult(entry, i, error=str(err), error_code=int(err.exit_code)))
    return results


def _internal(e: Exception) -> HfmemError:
    return InternalError(f"internal error ({type(e).__name__}: {e}); this is a bug in hfmem: please report it")
