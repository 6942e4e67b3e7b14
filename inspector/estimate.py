"""Memory terms per precision: weights, KV cache, activations, CUDA graphs and runtime overhead.

Pure functions over an Architecture and a ParameterCount; every number is an integer of bytes.
The engine modelled is vLLM (V1), whose layout and profiling the formulas follow; each formula
names its source. The README's "How the estimate is computed" is the long form of this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .arch import Architecture
from .errors import UsageError
from .gpus import GPU
from .kvcache import VLLM_DEFAULT_MAX_LEN, KVCache, compute_dtype, kv_cache, kv_cache_dtype
from .limits import MAX_GPUS, MAX_TOKENS
from .params import ParameterCount
from .vllm import (
    MAX_CAPTURE_OVERRIDES,
    auto_dtype,
    batch_defaults,
    cuda_graph_count,
    cuda_graphs_in_budget,
    default_gpu_memory_utilization,
    derived_max_model_len,
    mxfp4_backend,
    mxfp4_expert_bytes,
    mxfp4_padding,
    parse_dtype,
    parse_release,
    release_name,
    sampler_path,
)

GIB = 1 << 30


class Precision(str, Enum):
    """What the weights are held in. STORED is the checkpoint as it is (scales and zeros included)."""

    STORED = "stored"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"


# shared/DESIGN.md: the table shows these; the JSON carries every precision of the issue.
TABLE_PRECISIONS = (Precision.STORED, Precision.BF16, Precision.FP8, Precision.INT8, Precision.INT4)
JSON_PRECISIONS = (Precision.STORED, Precision.FP32, Precision.BF16, Precision.FP8, Precision.INT8, Precision.INT4)


@dataclass(frozen=True)
class Assumptions:
    """Engine settings the estimate depends on, under vLLM's option names. None: vLLM's default for
    the release and the GPU (inspector/vllm.py), resolved per GPU by `resolve_engine`."""

    engine: str = "vllm"
    vllm_version: str | None = None  # None: the newest release hfmem knows
    entrypoint: str = "serve"  # `vllm serve` or `LLM()`: their batch defaults differ
    dtype: str = "auto"  # vLLM's --dtype
    gpu_memory_utilization: float | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    enforce_eager: bool = False  # vLLM's --enforce-eager: no CUDA graphs
    mxfp4_backend: str | None = None  # None: vLLM's choice for the GPU (a log that names another wins)
    # vLLM's VLLM_ALLOW_LONG_MAX_MODEL_LEN, read as vLLM's envs.py does (bool(int(...)) of "0"/"1"),
    # when the settings are made
    allow_long_max_model_len: bool = field(default_factory=lambda: os.environ.get(
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN", "0").strip().lower() in ("1", "true"))
    # vLLM's VLLM_USE_FLASHINFER_SAMPLER: None (unset) is vLLM's default for the release, taken as
    # FlashInfer not installed (inspector/vllm.py sampler_path)
    flashinfer_sampler: bool | None = field(default_factory=lambda: {"1": True, "true": True, "0": False,
                                            "false": False}.get(os.environ.get("VLLM_USE_FLASHINFER_SAMPLER",
                                                                               "").strip().lower()))

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "vllm_version": release_name(parse_release(self.vllm_version)),
                "entrypoint": self.entrypoint, "dtype": self.dtype, "enforce_eager": self.enforce_eager}


@dataclass(frozen=True)
class Engine:
    """Assumptions resolved for one GPU (or, with no GPU named, for one of vLLM's ">= 70 GiB" tier):
    what vLLM would run with there."""

    release: tuple[int, int, int]
    gpu_memory_utilization: float
    max_num_batched_tokens: int
    max_num_seqs: int
    batch_tier: str  # "given" when both were set
    dtype: str  # what the weights load and compute in as stored: bf16, fp16 or fp32
    enforce_eager: bool
    cuda_graphs_in_budget: bool
    compute_capability: str = "9.0"  # the GPU's (an H100's for the memory table): kernels differ by it
    mxfp4_backend: str = "marlin"
    sampler: str = "pytorch"  # the profiling sampler's top-k/top-p: pytorch (sort), triton or flashinfer

    def to_dict(self) -> dict[str, Any]:
        return {"vllm_version": release_name(self.release), "gpu_memory_utilization": self.gpu_memory_utilization,
                "max_num_batched_tokens": self.max_num_batched_tokens, "max_num_seqs": self.max_num_seqs,
                "batch_defaults": self.batch_tier, "dtype": self.dtype, "enforce_eager": self.enforce_eager,
                "cuda_graphs_in_budget": self.cuda_graphs_in_budget,
                "sampler": self.sampler}


def resolve_engine(a: Assumptions, arch: Architecture, params: ParameterCount, context: int,
                   gpu: GPU | None = None) -> Engine:
    """What vLLM would pick on `gpu` for everything the user left unset (inspector/vllm.py)."""
    release = parse_release(a.vllm_version)
    util = a.gpu_memory_utilization or default_gpu_memory_utilization(release)
    defaults = batch_defaults(release, a.entrypoint, device_total_bytes=gpu.cuda_bytes if gpu else None,
                              device_name=gpu.name if gpu else "", compute_capability=gpu.compute_capability if gpu
                              else "", max_model_len=context)
    tokens = a.max_num_batched_tokens or defaults.max_num_batched_tokens
    seqs = a.max_num_seqs or min(defaults.max_num_seqs, tokens)
    tier = "given" if a.max_num_batched_tokens and a.max_num_seqs else defaults.tier
    chosen = parse_dtype(a.dtype)
    if chosen is None:
        stored = compute_dtype(arch, params.stored_by_dtype_elements, keep_fp32=True)
        chosen = auto_dtype(stored, arch.model_type, bf16_supported=gpu.bf16 if gpu else True)
    cc = gpu.compute_capability if gpu else "9.0"
    return Engine(release, util, tokens, seqs, tier, chosen, a.enforce_eager, cuda_graphs_in_budget(release), cc,
                  a.mxfp4_backend or mxfp4_backend(release, cc),
                  sampler_path(release, a.flashinfer_sampler, min(seqs, tokens)))


def kernel_padding_bytes(arch: Architecture, params: ParameterCount, e: Engine, tp: int = 1) -> int:
    """Bytes vLLM allocates beyond the checkpoint for its kernels' layouts, per GPU: MXFP4 experts
    (gpt-oss) padded to the backend's multiples (inspector/vllm.py mxfp4_padding). gpt-oss-120b on
    an H100 under Marlin: +5.13 GiB, as vLLM 0.10.1 logs "Model loading took 65.97 GiB" for its
    60.77 GiB of tensors (tests/data/vllm_ledger.json)."""
    if params.quant_method != "mxfp4" or not arch.num_experts:
        return 0
    inter = (arch.moe_intermediate_size or arch.intermediate_size or 0) // tp
    hidden = arch.hidden_size
    mi, mh = mxfp4_padding(e.release, e.mxfp4_backend)
    padded = mxfp4_expert_bytes(-(-inter // mi) * mi, -(-hidden // mh) * mh)
    return arch.num_hidden_layers * arch.num_experts * (padded - mxfp4_expert_bytes(inter, hidden))


def rotary_cache_bytes(arch: Architecture, dtype_bytes: int) -> int:
    """vLLM's rotary cos/sin cache (vllm/model_executor/layers/rotary_embedding get_rope): one
    [max_position, rotary_dim] tensor in the model dtype, shared by every layer with the same rope
    (get_rope memoizes it), loaded with the weights. Llama-3.1-8B: 131,072 x 128 x 2 = 32 MiB."""
    if not arch.num_attention_heads:
        return 0
    rotary_dim = arch.qk_rope_head_dim or arch.head_dim
    return (arch.max_position_embeddings or 0) * rotary_dim * dtype_bytes


def weights_bytes(precision: Precision, params: ParameterCount, arch: Architecture, dtype: str = "") -> int:
    """Weight bytes at a precision, by shared/DESIGN.md's "what if" rules.

    STORED is what vLLM loads: a quantized checkpoint as it is (weights with their scales and
    zeros); an unquantized one with every parameter in `dtype` (the Engine's, `--dtype`: vLLM's
    loader copies each tensor into a parameter of the model dtype, so a float32 checkpoint under
    `--dtype auto` loads in 16 bits). Without `dtype`: as the files hold it. FP32/BF16/FP16: every
    parameter at 4 or 2 bytes. FP8/INT8/INT4 quantize the decoder blocks' linear weights only
    (embeddings, lm_head, norms, biases and routers stay 16-bit):
    - fp8: 1 byte per weight + one fp32 scale per 128x128 block (DeepSeek-V3's FP8 layout,
      `weight_block_size` [128, 128], `weight_scale_inv`);
    - int8: 1 byte per weight + one 16-bit scale per group of 128 inputs;
    - int4: half a byte per weight + per group of 128 a 16-bit scale and a packed 4-bit zero
      (GPTQ/AWQ: `scales` fp16, `qzeros` eight 4-bit zeros per int32).
    """
    inv = params.weights
    total = params.total_params - (inv.mtp_params + inv.tied_head_params if inv else 0)
    if precision is Precision.STORED:
        if dtype and not params.quant_method:
            return total * _DTYPE_BYTES[dtype]
        return inv.loaded_bytes if inv else params.weights_bytes
    if precision is Precision.FP32:
        return total * 4
    if precision in (Precision.BF16, Precision.FP16):
        return total * 2
    if inv is not None:
        linear, groups, blocks = inv.linear_params, inv.linear_groups, inv.linear_blocks
    else:  # PyTorch .bin: no tensor names; all but the (untied) embeddings and lm_head count as linear
        linear = max(0, total - 2 * (arch.vocab_size or 0) * arch.hidden_size)
        groups, blocks = -(-linear // _GROUP), -(-linear // (_GROUP * _GROUP))
    rest = (total - linear) * 2
    if precision is Precision.FP8:
        return linear + blocks * 4 + rest
    if precision is Precision.INT8:
        return linear + groups * 2 + rest
    return -(-linear // 2) + groups * 2 + -(-groups // 2) + rest


_GROUP = 128
_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def active_params(params: ParameterCount, arch: Architecture) -> int | None:
    """Parameters one token passes through: everything but the routed experts, plus
    num_experts_per_tok / num_experts of them (shared experts are always active). The expert
    parameters and the number of experts are read from the tensor names; experts per token from
    the config. None for a dense model."""
    inv = params.weights
    if inv is None or not inv.expert_params or not inv.num_experts or not arch.num_experts_per_tok:
        return None
    total = params.total_params - inv.mtp_params
    return total - inv.expert_params + inv.expert_params * arch.num_experts_per_tok // inv.num_experts


# The sampler's share of the profiling peak, per logit element (rows x vocab) and per hidden
# element of the batch (tokens x hidden), by the top-k/top-p path (inspector/vllm.py sampler_path).
# In the code: the logits, their fp32 copy, top-k/top-p's work buffers, softmax and the sample
# (vllm/v1/sample/sampler.py, ops/topk_topp_sampler.py); the constants measure what those leave at
# the peak. All from vLLM's own "torch peak memory increase" at 8192 tokens and 1024 rows on an H100
# (tests/data/vllm_ledger.json):
# - PyTorch's sort: fitted by least squares to llm-d-benchmark's five logs
#   (config_explorer/empirical-vllm-memory-results.md: Llama-3.1-8B, Qwen3-0.6B, Qwen3-32B,
#   Llama-3.3-70B-FP8, gpt-oss-20b, "peak activation" 4.76-7.38 GiB), every residual under 0.01 GiB;
SAMPLER_BYTES_PER_LOGIT = 38.2
SAMPLER_BYTES_PER_HIDDEN = 2.69
# - FlashInfer's kernel: the one such log found, Mistral-Small-3.2 on vLLM 0.11.0 (2.12 GiB, llm-d);
SAMPLER_BYTES_PER_LOGIT_FLASHINFER = 16.1
# - the Triton kernel (0.17.0+): llm-d-planner's four vLLM 0.19.0 logs (Llama-3.1-8B 1.89 GiB,
#   Qwen2.5-7B 2.21, Qwen3-8B 2.21, gemma-2-9b 3.65; vocabularies 128k-256k), 14.65-14.77 each
#   with the hidden term above: 14.7.
SAMPLER_BYTES_PER_LOGIT_TRITON = 14.7
_SAMPLER_BYTES_PER_LOGIT = {"pytorch": SAMPLER_BYTES_PER_LOGIT, "flashinfer": SAMPLER_BYTES_PER_LOGIT_FLASHINFER,
                            "triton": SAMPLER_BYTES_PER_LOGIT_TRITON}


def activation_bytes(arch: Architecture, e: Engine, compute_bits: int, tp: int = 1) -> int:
    """Peak transient memory of vLLM's profiling run (vllm/v1/worker/gpu_model_runner.py
    profile_run): a forward pass of T = max_num_batched_tokens dummy tokens, then the sampler on
    R = min(max_num_seqs, T) rows with top-k/top-p on (_dummy_sampler_run: top_p 0.9, top_k
    vocab - 1, 0.8.0+). The larger of the two, per GPU:

    - forward: T x (4 x hidden + the widest block) x dtype bytes, where 4 x hidden is the residual
      stream and hidden states around a layer, and the widest block is the larger of attention's
      projections (q, k, v and the attention output: (2 x heads + 2 x kv_heads) x head_dim / tp),
      the MLP's gate_up output and activation (3 x intermediate / tp; LlamaMLP + SiluAndMul), and
      fused MoE's workspace (top_k x (max(N, hidden) + N / 2), N = 2 x moe_intermediate / tp:
      fused_moe.py cache13 and cache2);
    - sampler: T x hidden x 2.69 + R x vocab x 38.2 bytes with PyTorch's sort (14.7 with the Triton
      kernel of 0.17.0+, 16.1 with FlashInfer's; measured, above; the logits are gathered whole on
      every GPU, so tensor parallelism does not split them).
    """
    t = e.max_num_batched_tokens
    b = compute_bits // 8
    h = arch.hidden_size
    attn = (2 * arch.num_attention_heads + 2 * arch.num_key_value_heads) * arch.head_dim // tp
    widest = max(attn, 3 * (arch.intermediate_size or 4 * h) // tp)
    if arch.num_experts and arch.num_experts_per_tok:
        n = 2 * (arch.moe_intermediate_size or arch.intermediate_size or 4 * h) // tp
        widest = max(widest, arch.num_experts_per_tok * (max(n, h) + n // 2))
    forward = t * (4 * h + widest) * b
    rows = min(e.max_num_seqs, t)
    per_logit = _SAMPLER_BYTES_PER_LOGIT[e.sampler]
    sampler = int(t * h * SAMPLER_BYTES_PER_HIDDEN + rows * (arch.vocab_size or 0) * per_logit)
    return max(forward, sampler)


MIB = 1 << 20
# CUDA graphs: per graph per layer 256 KiB, calibrated on the one V1 measurement found with its
# model and GPU: gemma-3-4b-it (34 layers) on an H200, "0.65 GiB for CUDAGraph memory"
# (vllm-project/vllm PR #21489), 86 graphs x 34 x 256 KiB = 0.71 GiB. The graphs captured are
# counted per release and batch settings (inspector/vllm.py cuda_graph_count).
CUDA_GRAPH_BYTES_PER_LAYER = 256 * 1024
# The CUDA context: "around 400MB if CUDA >= 11.7 is used and lazy module loading enabled"
# (pytorch/pytorch#109888, a PyTorch maintainer); vLLM loads more kernels (attention, NCCL), so 512
# MiB. It exists before vLLM measures its start-up snapshot, so it is outside the budget
# (vllm/v1/worker/utils.py request_memory: total x gpu_memory_utilization), in the headroom.
CUDA_CONTEXT_BYTES = 512 * MIB
# vLLM's "non-torch memory" (memory_profiling: CUDA's used memory minus torch's reserved, grown
# since the worker's first snapshot: cuBLAS workspaces, NCCL buffers, custom and symmetric-memory
# all-reduce), as its H100 logs print it:
# - up to 0.18: 0.13-0.14 GiB on one GPU (five models), 0.54-0.55 GiB per GPU at tensor parallel 2
#   (Qwen3-32B, Llama-3.3-70B-FP8), llm-d-benchmark's empirical-vllm-memory-results.md (0.11);
# - 0.19.0 on: 0.24-0.25 GiB on one GPU (four models), 2.06-2.07 GiB per GPU at tensor parallel 2
#   and 2.13 at 4 (Llama-3.1-8B, Qwen2.5-7B), llm-d-planner's accuracy/results/v0.19.0 logs. The
#   releases between 0.11 and 0.19 have no log; hfmem gives them the older figures.
NON_TORCH_BYTES = int(0.14 * GIB)
NON_TORCH_TP_BYTES = int(0.55 * GIB)
NON_TORCH_BYTES_0_19 = int(0.25 * GIB)
NON_TORCH_TP_BYTES_0_19 = {2: int(2.07 * GIB), 4: int(2.13 * GIB)}


def non_torch_bytes(release: tuple[int, int, int], tp: int) -> int:
    """vLLM's non-torch memory per GPU (above); tensor parallel 3 and above 4 take 4's figure."""
    if release < (0, 19):
        return NON_TORCH_TP_BYTES if tp > 1 else NON_TORCH_BYTES
    if tp == 1:
        return NON_TORCH_BYTES_0_19
    return NON_TORCH_TP_BYTES_0_19.get(tp, NON_TORCH_TP_BYTES_0_19[4])


def overhead_bytes(arch: Architecture, e: Engine, tp: int = 1) -> tuple[dict[str, int], dict[str, int]]:
    """(inside vLLM's budget, outside it), per GPU. CUDA graphs are inside from vLLM 0.20.0, which
    subtracts their profiled estimate from the KV cache's budget; before, they were captured after
    the KV cache was sized, in the headroom beyond gpu_memory_utilization."""
    override = MAX_CAPTURE_OVERRIDES.get(arch.model_type) if e.release >= (0, 11, 1) else None
    graphs = 0 if e.enforce_eager else (cuda_graph_count(e.release, e.max_num_batched_tokens, e.max_num_seqs, override)
                                        * arch.num_hidden_layers * CUDA_GRAPH_BYTES_PER_LAYER)
    inside = {"non_torch": non_torch_bytes(e.release, tp),
              "cuda_graphs": graphs if e.cuda_graphs_in_budget else 0,
              "rotary_cache": rotary_cache_bytes(arch, 4 if e.dtype == "fp32" else 2)}
    outside = {"cuda_context": CUDA_CONTEXT_BYTES, "cuda_graphs": 0 if e.cuda_graphs_in_budget else graphs}
    return inside, outside


@dataclass(frozen=True)
class Estimate:
    """Memory for one precision, per GPU at `tensor_parallel_size` (the whole model at 1)."""

    precision: Precision
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    overhead: Mapping[str, int]  # inside vLLM's budget
    rule_of_thumb_bytes: int  # weights x 1.2, the folk estimate, shown beside the real one
    outside_budget: Mapping[str, int] = field(default_factory=dict)  # in the headroom beyond it

    @property
    def overhead_bytes(self) -> int:
        return sum(self.overhead.values())

    @property
    def outside_budget_bytes(self) -> int:
        return sum(self.outside_budget.values())

    @property
    def total_bytes(self) -> int:
        """What must fit in vLLM's budget, gpu_memory_utilization x the GPU's CUDA total."""
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes + self.overhead_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision.value,
            "weights_bytes": self.weights_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "activation_bytes": self.activation_bytes,
            "overhead_bytes": self.overhead_bytes,
            "overhead": dict(self.overhead),
            "total_bytes": self.total_bytes,
            "outside_budget_bytes": self.outside_budget_bytes,
            "outside_budget": dict(self.outside_budget),
            "rule_of_thumb_bytes": self.rule_of_thumb_bytes,
        }


#: --max-model-len auto (vLLM's -1, 0.14.0+): the longest context whose KV cache fits the budget.
AUTO_MAX_MODEL_LEN = -1


def resolve_context(arch: Architecture, max_model_len: int | None, a: Assumptions) -> tuple[int, str]:
    """(tokens, where from): --max-model-len, else (and for auto) vLLM's derived limit (the config's
    length with its rope scaling, inspector/vllm.py derived_max_model_len), else vLLM's 2048. A
    length beyond the limit is refused as vLLM refuses it, unless allow_long_max_model_len."""
    release = parse_release(a.vllm_version)
    limit = derived_max_model_len(release, arch)
    if max_model_len is None or max_model_len == AUTO_MAX_MODEL_LEN:
        if limit is None:
            return VLLM_DEFAULT_MAX_LEN, "vLLM's default (config.json names no context length)"
        scaled = limit != arch.max_position_embeddings and not arch.model_max_length
        return limit, "config.json" + (" (with its rope scaling)" if scaled else "")
    if limit is not None and max_model_len > limit and not a.allow_long_max_model_len:
        raise UsageError(f"--max-model-len {max_model_len:,} is beyond the model's {limit:,} tokens, which vLLM "
                         "refuses (set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 to allow it, as vLLM does)")
    return max_model_len, "--max-model-len"


@dataclass(frozen=True)
class Settings:
    """What the user asked for, under vLLM's option names."""

    max_model_len: int | None = None
    batch_size: int = 1
    kv_cache_dtype: str = "auto"
    tensor_parallel_size: int = 1
    precisions: tuple[Precision, ...] = JSON_PRECISIONS
    assumptions: Assumptions = field(default_factory=Assumptions)  # (the environment is read when made)


@dataclass(frozen=True)
class MemoryEstimate:
    """The architecture-dependent part of a report: context, KV cache and one Estimate per precision."""

    context_tokens: int
    context_source: str
    compute_dtype: str
    active_params: int | None
    kv_cache: KVCache
    estimates: tuple[Estimate, ...]
    settings: Settings
    engine: Engine

    def to_dict(self) -> dict[str, Any]:
        return {
            "kv_cache": self.kv_cache.to_dict(),
            "estimates": [e.to_dict() for e in self.estimates],
        }


def estimate_memory(arch: Architecture, params: ParameterCount, settings: Settings | None = None,
                    gpu: GPU | None = None) -> MemoryEstimate:
    """Every memory term for every requested precision, per GPU at the tensor-parallel size, with
    vLLM's defaults for `gpu` (None: a GPU of vLLM's ">= 70 GiB" tier, such as an H100)."""
    settings = settings or Settings()
    a = settings.assumptions
    for name, value, high in (("--batch-size", settings.batch_size, MAX_TOKENS),
                              ("--tensor-parallel-size", settings.tensor_parallel_size, MAX_GPUS),
                              ("--max-model-len", 1 if settings.max_model_len in (None, AUTO_MAX_MODEL_LEN)
                               else settings.max_model_len, MAX_TOKENS),
                              ("--max-num-batched-tokens", a.max_num_batched_tokens or 1, MAX_TOKENS),
                              ("--max-num-seqs", a.max_num_seqs or 1, MAX_TOKENS)):
        if not (isinstance(value, int) and 1 <= value <= high):  # the CLI checks these; the API too
            raise UsageError(f"{name} must be a whole number from 1 to {high:,}, not {value!r}")
    util = a.gpu_memory_utilization
    if util is not None and not (isinstance(util, int | float) and 0 < util <= 1):
        raise UsageError(f"--gpu-memory-utilization must be in (0, 1], not {util!r}")
    tp = settings.tensor_parallel_size
    context, where = resolve_context(arch, settings.max_model_len, a)
    e = resolve_engine(a, arch, params, context, gpu)
    # The "what if" precisions compute in 16 bits: the model's own 16-bit dtype.
    sixteen = e.dtype if e.dtype != "fp32" else compute_dtype(arch, params.stored_by_dtype_elements)
    caches: dict[int, KVCache] = {}

    def cache_at(bits: int) -> KVCache:
        # --dtype float32 makes "auto" KV and the Mamba state fp32 too; other precisions keep 16-bit.
        if bits not in caches:
            dtype = kv_cache_dtype(settings.kv_cache_dtype, "fp32" if bits == 32 else sixteen)
            caches[bits] = kv_cache(arch, context, settings.batch_size, dtype, tensor_parallel_size=tp,
                                    max_num_batched_tokens=e.max_num_batched_tokens, state_bits=bits)
        return caches[bits]

    estimates = []
    stored_bits = 32 if e.dtype == "fp32" else 16
    for p in settings.precisions:
        bits = stored_bits if p is Precision.STORED else 32 if p is Precision.FP32 else 16
        weights = -(-weights_bytes(p, params, arch, e.dtype) // tp)
        if p is Precision.STORED:
            weights += kernel_padding_bytes(arch, params, e, tp)
        inside, outside = overhead_bytes(arch, e, tp)
        estimates.append(Estimate(
            precision=p,
            weights_bytes=weights,
            kv_cache_bytes=cache_at(bits).bytes,
            activation_bytes=activation_bytes(arch, e, bits, tp),
            overhead=inside,
            rule_of_thumb_bytes=weights * 12 // 10,
            outside_budget=outside,
        ))
    return MemoryEstimate(context, where, e.dtype, active_params(params, arch), cache_at(stored_bits),
                          tuple(estimates), settings, e)
