"""Memory terms per precision: weights, KV cache, activations, CUDA graphs and runtime overhead.

Pure functions over an Architecture and a ParameterCount; every number is an integer of bytes.
The engine modelled is vLLM (V1), whose layout and profiling the formulas follow; each formula
names its source. The README's "How the estimate is computed" is the long form of this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .arch import Architecture
from .errors import UsageError
from .kvcache import KVCache, compute_dtype, context_length, kv_cache, kv_cache_dtype
from .limits import MAX_GPUS, MAX_TOKENS
from .params import ParameterCount

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
    """Engine settings the estimate depends on, under vLLM's option names."""

    engine: str = "vllm"
    # vLLM >= 0.20: CacheConfig.gpu_memory_utilization = Field(default=0.92) (vllm/config/cache.py;
    # 0.9 before). A fraction of the GPU's total memory for weights, activations and KV cache.
    gpu_memory_utilization: float = 0.92
    # shared/DESIGN.md; vLLM's `vllm serve` default on >= 70 GiB GPUs (vllm/engine/arg_utils.py
    # get_batch_defaults: OPENAI_API_SERVER 8192 tokens, 1024 sequences).
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 1024
    enforce_eager: bool = False  # vLLM's --enforce-eager: no CUDA graphs

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "max_num_seqs": self.max_num_seqs,
            "enforce_eager": self.enforce_eager,
        }


def weights_bytes(precision: Precision, params: ParameterCount, arch: Architecture) -> int:
    """Weight bytes at a precision, by shared/DESIGN.md's "what if" rules.

    STORED is what the checkpoint holds and vLLM loads (quantized weights with their scales and
    zeros). FP32/BF16/FP16: every parameter at 4 or 2 bytes. FP8/INT8/INT4 quantize the decoder
    blocks' linear weights only (embeddings, lm_head, norms, biases and routers stay 16-bit):
    - fp8: 1 byte per weight + one fp32 scale per 128x128 block (DeepSeek-V3's FP8 layout,
      `weight_block_size` [128, 128], `weight_scale_inv`);
    - int8: 1 byte per weight + one 16-bit scale per group of 128 inputs;
    - int4: half a byte per weight + per group of 128 a 16-bit scale and a packed 4-bit zero
      (GPTQ/AWQ: `scales` fp16, `qzeros` eight 4-bit zeros per int32).
    """
    inv = params.weights
    total = params.total_params - (inv.mtp_params if inv else 0)
    if precision is Precision.STORED:
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


def activation_bytes(arch: Architecture, a: Assumptions, compute_bits: int, tp: int = 1) -> int:
    """Peak transient memory of vLLM's profiling run (vllm/v1/worker/gpu_model_runner.py
    profile_run): a forward pass of T = max_num_batched_tokens dummy tokens, then the sampler on
    R = min(max_num_seqs, T) rows with top-k/top-p on. The larger of the two, per GPU:

    - forward: T x (4 x hidden + the widest block) x dtype bytes, where 4 x hidden is the residual
      stream and hidden states around a layer, and the widest block is the larger of attention's
      projections (q, k, v and the attention output: (2 x heads + 2 x kv_heads) x head_dim / tp),
      the MLP's gate_up output and activation (3 x intermediate / tp; LlamaMLP + SiluAndMul), and
      fused MoE's workspace (top_k x (max(N, hidden) + N / 2), N = 2 x moe_intermediate / tp:
      fused_moe.py cache13 and cache2);
    - sampler: T x hidden x dtype bytes (the hidden states stay alive) + R x vocab x (dtype bytes
      + 20): the logits, their fp32 copy, the sorted copy, its int64 indices and the fp32
      probabilities (vllm/v1/sample/sampler.py, ops/topk_topp_sampler.py).
    """
    t = a.max_num_batched_tokens
    b = compute_bits // 8
    h = arch.hidden_size
    attn = (2 * arch.num_attention_heads + 2 * arch.num_key_value_heads) * arch.head_dim // tp
    widest = max(attn, 3 * (arch.intermediate_size or 4 * h) // tp)
    if arch.num_experts and arch.num_experts_per_tok:
        n = 2 * (arch.moe_intermediate_size or arch.intermediate_size or 4 * h) // tp
        widest = max(widest, arch.num_experts_per_tok * (max(n, h) + n // 2))
    forward = t * (4 * h + widest) * b
    rows = min(a.max_num_seqs, t)
    sampler = t * h * b + rows * (arch.vocab_size or 0) * (b + 20)
    return max(forward, sampler)


MIB = 1 << 20
# CUDA graphs: vLLM captures 51 piecewise + 35 full graphs at its default sizes up to 512
# (vllm/config/vllm.py: [1, 2, 4] + range(8, 256, 8) + range(256, 513, 16); FULL_AND_PIECEWISE).
# Their memory grows with the kernels per graph, so per graph per layer: 256 KiB, calibrated on
# the one V1 measurement found with its model and GPU: gemma-3-4b-it (34 layers) on an H200,
# "0.65 GiB for CUDAGraph memory" (vllm-project/vllm PR #21489); 86 x 34 x 256 KiB = 0.71 GiB.
CUDA_GRAPHS = 86
CUDA_GRAPH_BYTES_PER_LAYER = 256 * 1024
# The CUDA context: "around 400MB if CUDA >= 11.7 is used and lazy module loading enabled"
# (pytorch/pytorch#109888, a PyTorch maintainer); vLLM loads more kernels (attention, NCCL), so 512 MiB.
CUDA_CONTEXT_BYTES = 512 * MIB
# cuBLASLt workspace: 32 MiB on Hopper (pytorch/pytorch PR #120925, CUDABlas.cpp).
CUBLAS_WORKSPACE_BYTES = 32 * MIB
# Tensor parallel: NCCL's SIMPLE buffer is 4 MiB per channel per peer (NVIDIA/nccl src/init.cc
# DEFAULT_BUFFSIZE 1 << 22); a ring has 2 peers; 16 channels assumed. Plus vLLM's custom all-reduce:
# max_size 8 MiB, three buffers (custom_all_reduce.py) = 24 MiB.
NCCL_BYTES = 4 * MIB * 2 * 16 + 24 * MIB


def overhead_bytes(arch: Architecture, a: Assumptions, tp: int = 1) -> dict[str, int]:
    """Runtime memory outside PyTorch's tensors, per GPU, by source (see the constants above)."""
    return {
        "cuda_context": CUDA_CONTEXT_BYTES,
        "cublas_workspace": CUBLAS_WORKSPACE_BYTES,
        "cuda_graphs": 0 if a.enforce_eager else CUDA_GRAPHS * arch.num_hidden_layers * CUDA_GRAPH_BYTES_PER_LAYER,
        "nccl": NCCL_BYTES if tp > 1 else 0,
    }


@dataclass(frozen=True)
class Estimate:
    """Memory for one precision, per GPU at `tensor_parallel_size` (the whole model at 1)."""

    precision: Precision
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    overhead: Mapping[str, int]
    rule_of_thumb_bytes: int  # weights x 1.2, the folk estimate, shown beside the real one

    @property
    def overhead_bytes(self) -> int:
        return sum(self.overhead.values())

    @property
    def total_bytes(self) -> int:
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
            "rule_of_thumb_bytes": self.rule_of_thumb_bytes,
        }


@dataclass(frozen=True)
class Settings:
    """What the user asked for, under vLLM's option names."""

    max_model_len: int | None = None
    batch_size: int = 1
    kv_cache_dtype: str = "auto"
    tensor_parallel_size: int = 1
    precisions: tuple[Precision, ...] = JSON_PRECISIONS
    assumptions: Assumptions = Assumptions()


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "kv_cache": self.kv_cache.to_dict(),
            "estimates": [e.to_dict() for e in self.estimates],
        }


PRECISION_BITS = {Precision.FP32: 32}


def estimate_memory(arch: Architecture, params: ParameterCount, settings: Settings = Settings()) -> MemoryEstimate:
    """Every memory term for every requested precision, per GPU at the tensor-parallel size."""
    a = settings.assumptions
    for name, value, high in (("--batch-size", settings.batch_size, MAX_TOKENS),
                              ("--tensor-parallel-size", settings.tensor_parallel_size, MAX_GPUS),
                              ("--max-model-len", settings.max_model_len or 1, MAX_TOKENS),
                              ("--max-num-batched-tokens", a.max_num_batched_tokens, MAX_TOKENS),
                              ("--max-num-seqs", a.max_num_seqs, MAX_TOKENS)):
        if not (isinstance(value, int) and 1 <= value <= high):  # the CLI checks these; the API too
            raise UsageError(f"{name} must be a whole number from 1 to {high:,}, not {value!r}")
    if not (isinstance(a.gpu_memory_utilization, int | float) and 0 < a.gpu_memory_utilization <= 1):
        raise UsageError(f"--gpu-memory-utilization must be in (0, 1], not {a.gpu_memory_utilization!r}")
    tp = settings.tensor_parallel_size
    context, where = context_length(arch, settings.max_model_len)
    compute = compute_dtype(arch, params.stored_by_dtype_elements)
    caches: dict[int, KVCache] = {}

    def cache_at(bits: int) -> KVCache:
        # --dtype float32 makes "auto" KV and the Mamba state fp32 too; other precisions keep 16-bit.
        if bits not in caches:
            dtype = kv_cache_dtype(settings.kv_cache_dtype, "fp32" if bits == 32 else compute)
            caches[bits] = kv_cache(arch, context, settings.batch_size, dtype, tensor_parallel_size=tp,
                                    max_num_batched_tokens=a.max_num_batched_tokens, state_bits=bits)
        return caches[bits]

    estimates = []
    for p in settings.precisions:
        bits = PRECISION_BITS.get(p, 16)
        weights = -(-weights_bytes(p, params, arch) // tp)
        estimates.append(Estimate(
            precision=p,
            weights_bytes=weights,
            kv_cache_bytes=cache_at(bits).bytes,
            activation_bytes=activation_bytes(arch, a, bits, tp),
            overhead=overhead_bytes(arch, a, tp),
            rule_of_thumb_bytes=weights * 12 // 10,
        ))
    return MemoryEstimate(context, where, compute, active_params(params, arch), cache_at(16),
                          tuple(estimates), settings)
