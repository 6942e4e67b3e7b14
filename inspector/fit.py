"""Where a model fits: which GPUs, how many (tensor-parallel sizes the heads allow), the longest
context and the largest batch, and a bandwidth bound on decode speed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .arch import Architecture
from .estimate import (
    AUTO_MAX_MODEL_LEN,
    Engine,
    Estimate,
    MemoryEstimate,
    Precision,
    Settings,
    estimate_memory,
    resolve_context,
)
from .gpus import GPU
from .kvcache import KVCache, capacity_tokens
from .params import ParameterCount

# One node: NVIDIA's HGX/DGX H100, H200 and B200 systems hold 8 GPUs (NVIDIA DGX H100 datasheet:
# "8x NVIDIA H100 Tensor Core GPUs"), as do AMD's MI300X platforms; beyond that vLLM needs pipeline
# parallelism across nodes (--pipeline-parallel-size).
MAX_NODE_GPUS = 8


def tp_allowed(tp: int, heads: int, kv_heads: int) -> bool:
    """vLLM's rule (vllm/config/parallel.py, model.py verify_with_parallel_config): the attention
    heads must divide by the tensor-parallel size; KV heads are split when the size divides them
    and replicated when it is a multiple of them.

    >>> [tp for tp in range(1, 17) if tp_allowed(tp, 40, 8)]
    [1, 2, 4, 8]
    """
    if heads == 0:  # attention-free (Mamba): no head constraint modelled
        return True
    if heads % tp:
        return False
    return kv_heads == 0 or kv_heads % tp == 0 or tp % kv_heads == 0


@dataclass(frozen=True)
class Fit:
    """One precision on one GPU model."""

    gpu: GPU
    precision: Precision
    tensor_parallel_size: int | None  # None: no size up to MAX_NODE_GPUS fits
    usable_bytes: int  # per GPU: memory x gpu_memory_utilization
    per_gpu: Estimate | None
    max_context_tokens: int | None
    max_batch_size: int | None
    decode_tokens_per_s_bound: float | None
    native: bool
    reason: str = ""
    engine: Engine | None = None  # what vLLM would run with on this GPU (batch defaults, dtype)
    gpus_needed: int | None = None  # the fewest GPUs (up to a node's 8) that fit the request
    kv_cache_capacity_tokens: int | None = None  # vLLM's "GPU KV cache size: N tokens" at this size
    context_tokens: int | None = None  # the context asked for (with --max-model-len auto: the longest)

    @property
    def fits(self) -> bool:
        return self.tensor_parallel_size is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu.name,
            "precision": self.precision.value,
            "fits": self.fits,
            "gpus_needed": self.gpus_needed,
            "tensor_parallel_size": self.tensor_parallel_size,
            "usable_bytes_per_gpu": self.usable_bytes,
            "weights_bytes_per_gpu": self.per_gpu.weights_bytes if self.per_gpu else None,
            "kv_cache_bytes_per_gpu": self.per_gpu.kv_cache_bytes if self.per_gpu else None,
            "total_bytes_per_gpu": self.per_gpu.total_bytes if self.per_gpu else None,
            "max_context_tokens": self.max_context_tokens,
            "max_batch_size": self.max_batch_size,
            "kv_cache_capacity_tokens": self.kv_cache_capacity_tokens,
            "context_tokens": self.context_tokens,
            "decode_tokens_per_s_bound": self.decode_tokens_per_s_bound,
            "native_precision": self.native,
            "reason": self.reason,
            **({"engine": self.engine.to_dict()} if self.engine else {}),
        }


def _memory(arch: Architecture, params: ParameterCount, settings: Settings, tp: int, gpu: GPU,
            **changes: Any) -> MemoryEstimate:
    return estimate_memory(arch, params, replace(settings, tensor_parallel_size=tp, **changes), gpu)


def _one(arch: Architecture, params: ParameterCount, settings: Settings, tp: int, gpu: GPU,
         **changes: Any) -> Estimate:
    return _memory(arch, params, settings, tp, gpu, **changes).estimates[0]


def usable_bytes(gpu: GPU, engine: Engine) -> int:
    """vLLM's budget on one GPU: ceil(CUDA's total x gpu_memory_utilization) (vllm/v1/worker/
    utils.py request_memory, 0.14.0+; int() before)."""
    return -(-gpu.cuda_bytes * round(engine.gpu_memory_utilization * 10**6) // 10**6)


def _fits(est: Estimate, gpu: GPU, usable: int) -> bool:
    # vLLM refuses to start when free memory is below its budget ("Free memory on device ... is
    # less than desired GPU memory utilization"): what lives outside the budget (the CUDA context,
    # CUDA graphs before 0.20) must fit in the rest.
    return est.total_bytes <= usable and est.outside_budget_bytes <= gpu.cuda_bytes - usable


def fit(arch: Architecture, params: ParameterCount, precision: Precision, gpu: GPU, settings: Settings,
        count: int | None = None) -> Fit:
    """Where `precision` fits on `gpu`, with the defaults vLLM picks on that GPU: the smallest
    tensor-parallel size the heads allow, among `count` GPUs available (None: a node's 8), or
    exactly settings.tensor_parallel_size when it is above 1. Whether or not it fits, the longest
    context and largest batch at the largest size tried, and the GPUs the request would need.
    With max_model_len AUTO_MAX_MODEL_LEN, the request is the longest context that fits."""
    settings = replace(settings, precisions=(precision,))
    auto = settings.max_model_len == AUTO_MAX_MODEL_LEN
    first = _memory(arch, params, settings, 1, gpu)
    engine = first.engine
    top = resolve_context(arch, None, settings.assumptions)[0]  # the model's limit: the longest searched
    if not auto:
        top = max(top, first.context_tokens)  # (beyond it only with VLLM_ALLOW_LONG_MAX_MODEL_LEN)
    usable = usable_bytes(gpu, engine)
    # As stored, a model computes in the dtype vLLM picks there (bf16 needs sm80+); fp8 needs sm89+.
    native = gpu.native(engine.dtype if precision is Precision.STORED else precision.value)
    heads, kv = arch.num_attention_heads, arch.num_key_value_heads
    forced = settings.tensor_parallel_size if settings.tensor_parallel_size > 1 else None
    if forced:
        sizes = [forced] if tp_allowed(forced, heads, kv) else []
    else:
        sizes = [tp for tp in range(1, (count or MAX_NODE_GPUS) + 1) if tp_allowed(tp, heads, kv)]
    if not sizes:  # (1 always splits: only a forced size can fail here)
        reason = f"{forced} GPUs cannot split {heads} attention heads / {kv} KV heads"
        return Fit(gpu, precision, None, usable, None, None, None, None, native, reason, engine)

    def attempt(tp: int) -> tuple[MemoryEstimate, int]:
        """The memory at this size and the context it is for (auto: the longest that fits)."""
        if auto:
            longest = _longest_context(arch, params, settings, tp, gpu, usable, top)
            return _memory(arch, params, settings, tp, gpu, max_model_len=max(1, longest)), longest
        return (first if tp == 1 else _memory(arch, params, settings, tp, gpu)), first.context_tokens

    chosen = None
    for tp in sizes:
        m, context = attempt(tp)
        last = (tp, m, context)
        if _fits(m.estimates[0], gpu, usable) and context > 0:
            chosen = last
            break
    tp, m, context = chosen or last
    est, eng = m.estimates[0], m.engine
    longest = context if auto else _longest_context(arch, params, settings, tp, gpu, usable, top)
    at_longest = est if auto or longest == context else _one(arch, params, settings, tp, gpu,
                                                             max_model_len=max(1, longest))
    capacity = _kv_capacity(m.kv_cache, usable, at_longest if longest else est)
    batch = _largest_batch(est, settings, usable) if chosen else (
        _largest_batch(at_longest, settings, usable) if longest else 0)
    needed = tp if chosen else _gpus_needed(arch, params, settings, gpu, usable, heads, kv, sizes)
    if chosen:
        return Fit(gpu, precision, tp, usable, est, longest, batch, _decode_bound(gpu, est, params, arch, tp), native,
                   "", eng, needed, capacity, context)
    if est.total_bytes <= usable and context > 0:
        reason = (f"vLLM needs {_gib(est.outside_budget_bytes)} beyond its budget (the CUDA context"
                  f"{', CUDA graphs' if est.outside_budget.get('cuda_graphs') else ''}) but "
                  f"gpu_memory_utilization {engine.gpu_memory_utilization} leaves {_gib(gpu.cuda_bytes - usable)}")
    else:
        on = f"{_gib(est.total_bytes)} per GPU on {tp} x {gpu.name}, {_gib(usable)} usable"
        more = (f"; {needed} GPUs would fit it" if needed else
                f"; more than {MAX_NODE_GPUS} GPUs: pipeline parallelism across nodes")
        reason = f"needs {on}{more}"
        if longest:
            reason += f"; the longest context that fits there is {longest:,} tokens"
    return Fit(gpu, precision, None, usable, None, longest or None, batch, None, native, reason, eng, needed,
               capacity, context)


def _gpus_needed(arch: Architecture, params: ParameterCount, settings: Settings, gpu: GPU, usable: int,
                 heads: int, kv: int, tried: list[int]) -> int | None:
    """The fewest GPUs of a node (up to 8) at which the request fits, beyond those tried."""
    for tp in range(max(tried) + 1, MAX_NODE_GPUS + 1):
        if tp_allowed(tp, heads, kv) and _fits(_one(arch, params, settings, tp, gpu), gpu, usable):
            return tp
    return None


def _kv_capacity(kv: KVCache, usable: int, est: Estimate) -> int:
    """The tokens the KV budget holds per GPU, as vLLM's "GPU KV cache size" line counts them
    (inspector/kvcache.py capacity_tokens)."""
    return capacity_tokens(kv, usable - (est.total_bytes - est.kv_cache_bytes))


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _longest_context(arch: Architecture, params: ParameterCount, settings: Settings, tp: int, gpu: GPU,
                     usable: int, top: int) -> int:
    """The largest --max-model-len that fits at this size, up to the model's limit `top` (0: none)."""
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fits(_one(arch, params, settings, tp, gpu, max_model_len=mid), gpu, usable):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _largest_batch(est: Estimate, settings: Settings, usable: int) -> int:
    per_seq = est.kv_cache_bytes // settings.batch_size
    if per_seq == 0:
        return settings.batch_size
    return settings.batch_size + (usable - est.total_bytes) // per_seq


def _decode_bound(gpu: GPU, est: Estimate, params: ParameterCount, arch: Architecture, tp: int) -> float:
    """Decoding reads every active weight and the sequence's KV cache once per token, so
    tokens/s per sequence <= bandwidth / bytes read (a bound, not a prediction)."""
    from .estimate import active_params

    weights = est.weights_bytes
    active = active_params(params, arch)
    if active:
        weights = weights * active // max(1, params.total_params)
    per_seq_kv = est.kv_cache_bytes
    return gpu.bandwidth_bytes_per_s / max(1, weights + per_seq_kv)
