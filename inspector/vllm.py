"""vLLM's own rules, per release: the defaults `vllm serve` and `LLM()` pick on a given GPU, and
what its memory profiler puts inside the budget.

Every rule names the file and function it mirrors and the releases it holds for. They were read
from the source distributions on PyPI (`vllm-X.tar.gz`, built from tag vX) of every release from
0.9.1 to 0.34.0. 0.15.0 and 0.15.1 have no source distribution; 0.15.1 is offered from its wheel,
whose files these rules read (arg_utils, config/cache, config/vllm, config/model, kv_cache_utils,
mem_utils, topk_topp_sampler) differ from 0.16.0's in nothing the rules use. A release is a tuple
(0, 19, 1); `--vllm-version 0.19` means the newest patch hfmem knows of that minor.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    from .arch import Architecture

GIB = 1 << 30

#: The releases whose rules hfmem mirrors. Before 0.9.1 the V1 worker profiled with other
#: formulas (absolute peaks; vllm/v1/worker/gpu_worker.py determine_available_memory); from 0.34.0
#: the KV cache is sized after warm-up by the extensible KV cache (vllm/v1/worker/
#: extensible_kv_cache.py measure_kv_cache_bytes), which hfmem does not model yet.
RELEASES: tuple[tuple[int, int, int], ...] = (
    (0, 9, 1), (0, 9, 2), (0, 10, 0), (0, 10, 1), (0, 10, 2), (0, 11, 0), (0, 11, 1), (0, 11, 2),
    (0, 12, 0), (0, 13, 0), (0, 14, 0), (0, 14, 1), (0, 15, 1), (0, 16, 0), (0, 17, 0), (0, 17, 1),
    (0, 18, 0), (0, 18, 1),
    (0, 19, 0), (0, 19, 1), (0, 20, 0), (0, 20, 1), (0, 20, 2), (0, 21, 0), (0, 22, 0), (0, 22, 1), (0, 23, 0),
    (0, 24, 0), (0, 25, 0), (0, 25, 1), (0, 26, 0), (0, 27, 0), (0, 27, 1), (0, 28, 0), (0, 29, 0), (0, 30, 0),
    (0, 31, 0), (0, 32, 0), (0, 33, 0),
)
NEWEST = RELEASES[-1]
ENTRYPOINTS = ("serve", "llm")  # vllm.usage.usage_lib.UsageContext OPENAI_API_SERVER and LLM_CLASS


def release_name(release: tuple[int, ...]) -> str:
    return ".".join(map(str, release))


def supported_range() -> str:
    return f"{release_name(RELEASES[0])} to {release_name(NEWEST)}"


@lru_cache(maxsize=256)  # (pure; called for every step of the fit's searches)
def parse_release(text: str | None) -> tuple[int, int, int]:
    """A `--vllm-version` value as a known release; None is the newest hfmem knows.

    >>> parse_release("0.19"), parse_release("0.11.1"), parse_release("v0.20.2"), parse_release(None)
    ((0, 19, 1), (0, 11, 1), (0, 20, 2), (0, 33, 0))
    """
    if text is None:
        return NEWEST
    raw = text.strip().lower().removeprefix("v")
    parts = raw.split(".")
    if not (2 <= len(parts) <= 3 and all(p.isascii() and p.isdigit() and len(p) <= 4 for p in parts)):
        raise UsageError(f"--vllm-version {text!r} is not a release like 0.19 or 0.19.1 "
                         f"(hfmem knows {supported_range()})")
    want = tuple(int(p) for p in parts)
    matches = [r for r in RELEASES if r[: len(want)] == want]
    if not matches:
        why = (" (its KV cache is sized after warm-up, which hfmem does not model yet)" if want >= (0, 34)
               else " (0.15.0 has no source release on PyPI; 0.15.1 is known)" if want == (0, 15, 0) else "")
        raise UsageError(f"vLLM {raw} is not a release hfmem knows{why}: it knows {supported_range()}")
    return matches[-1]


def default_gpu_memory_utilization(release: tuple[int, ...]) -> float:
    """CacheConfig.gpu_memory_utilization (vllm/config/cache.py): Field(default=0.9) to 0.19.1,
    Field(default=0.92) from 0.20.0."""
    return 0.92 if release >= (0, 20) else 0.9


@dataclass(frozen=True)
class BatchDefaults:
    max_num_batched_tokens: int
    max_num_seqs: int
    tier: str  # which of vLLM's device tiers chose them, said in the output


@lru_cache(maxsize=256)  # (pure; called for every step of the fit's searches)
def batch_defaults(release: tuple[int, ...], entrypoint: str, *, device_total_bytes: int | None,
                   device_name: str = "", compute_capability: str = "",
                   max_model_len: int | None = None) -> BatchDefaults:
    """The default max_num_batched_tokens and max_num_seqs vLLM picks for a GPU
    (vllm/engine/arg_utils.py EngineArgs.get_batch_defaults and
    _set_default_max_num_seqs_and_batched_tokens_args; `_set_default_args` before 0.12.0).

    `device_total_bytes` is what `current_platform.get_device_total_memory()` returns (CUDA's total
    memory, torch's `total_memory`); None stands for a GPU of the ">= 70 GiB" tier.
    - 0.9.1-0.27.1: `device_memory >= 70 * GiB_bytes and "a100" not in device_name`: 16384 tokens
      for LLM(), 8192 for `vllm serve`, 1024 sequences; else 8192 / 2048 tokens, 256 sequences.
    - 0.28.0+: `device_memory >= 160 * GiB_bytes` ("GPUs like B200/B300"): 16384 tokens for both.
    - 0.33.0+: the 70 GiB tier also requires `not is_gb10` (compute capability 12.1, DGX Spark).
    - 0.11.1+: tokens = min(max_num_seqs * max_model_len, tokens) when not given; all releases:
      max_num_seqs = min(max_num_seqs, max_num_batched_tokens).

    >>> batch_defaults((0, 33, 0), "serve", device_total_bytes=85_045_477_376, device_name="H100 80GB")
    BatchDefaults(max_num_batched_tokens=8192, max_num_seqs=1024, tier='>= 70 GiB')
    >>> batch_defaults((0, 33, 0), "serve", device_total_bytes=85_045_477_376, device_name="A100 80GB")
    BatchDefaults(max_num_batched_tokens=2048, max_num_seqs=256, tier='< 70 GiB or A100')
    """
    if entrypoint not in ENTRYPOINTS:
        raise UsageError(f"--entrypoint {entrypoint!r} is not one of: {', '.join(ENTRYPOINTS)}")
    llm = entrypoint == "llm"
    size = 70 * GIB if device_total_bytes is None else device_total_bytes
    gb10 = release >= (0, 33) and compute_capability == "12.1"
    if release >= (0, 28) and size >= 160 * GIB:
        tokens, seqs, tier = 16384, 1024, ">= 160 GiB"
    elif size >= 70 * GIB and "a100" not in device_name.lower() and not gb10:
        tokens, seqs, tier = (16384 if llm else 8192), 1024, ">= 70 GiB"
    else:
        tokens, seqs, tier = (8192 if llm else 2048), 256, "< 70 GiB or A100"
    if release >= (0, 11, 1) and max_model_len:
        tokens = min(seqs * max_model_len, tokens)
    return BatchDefaults(tokens, min(seqs, tokens), tier)


def cuda_graphs_in_budget(release: tuple[int, ...]) -> bool:
    """Whether the CUDA graphs' memory is taken from the KV cache's budget.

    Before 0.18.0 graphs are captured after the KV cache is allocated and their memory is not
    counted (vllm/v1/worker/gpu_worker.py compile_or_warm_up_model: "memory_profiling does not
    consider CUDAGraph memory size"); 0.18.0-0.19.1 estimate it (profile_cudagraph_memory) but
    subtract it only with VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1, off by default
    (vllm/envs.py); from 0.20.0 that variable defaults to 1 and the estimate is subtracted."""
    return release >= (0, 20)


# vllm/config/model.py _FLOAT16_NOT_SUPPORTED_MODELS (0.9.1: gemma2, gemma3, plamo2, glm4;
# 0.34.0: gemma2, gemma3, gemma3_text, glm4).
_NO_FP16 = frozenset({"gemma2", "gemma3", "gemma3_text", "plamo2", "glm4"})


def auto_dtype(config_dtype: str, model_type: str, *, bf16_supported: bool) -> str:
    """The dtype `--dtype auto` loads and computes in (vllm/config/model.py _resolve_auto_dtype,
    identical 0.9.1-0.34.0): a float32 checkpoint is downcast to the first supported dtype, bf16
    on compute capability 8.0+ (vllm/platforms/cuda.py supported_dtypes: [bf16, fp16, fp32]),
    fp16 on 6.0-7.5 ([fp16, fp32]); a bf16 checkpoint on a GPU without bf16 falls back to fp16.
    Models that refuse fp16 (Gemma 2/3, GLM-4) stay in float32 there.

    >>> auto_dtype("fp32", "llama", bf16_supported=True), auto_dtype("fp32", "gpt2", bf16_supported=False)
    ('bf16', 'fp16')
    >>> auto_dtype("bf16", "gemma2", bf16_supported=False)
    'fp32'
    """
    supported = (["bf16"] if bf16_supported else []) + (["fp16"] if model_type not in _NO_FP16 else []) + ["fp32"]
    wanted = supported[0] if config_dtype == "fp32" else config_dtype
    return wanted if wanted in supported else supported[0]


DTYPES = {"auto": None, "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "half": "fp16", "fp16": "fp16",
          "float32": "fp32", "float": "fp32", "fp32": "fp32"}  # vLLM's --dtype choices (and hfmem's short names)


def parse_dtype(value: str) -> str | None:
    """A `--dtype` value: None for auto, else bf16, fp16 or fp32."""
    key = value.strip().lower()
    if key not in DTYPES:
        raise UsageError(f"--dtype {value!r} is not one of: auto, bfloat16, float16, float32")
    return DTYPES[key]


#: Models whose vLLM config class raises the largest capture size (vllm/model_executor/models/
#: config.py GptOssForCausalLMConfig.verify_and_update_config: "Increase the max capture size from
#: 512 to 1024 for performance", 67 graphs to 83; logged from 0.10.1).
MAX_CAPTURE_OVERRIDES = {"gpt_oss": 1024}


def cuda_graph_sizes(release: tuple[int, ...], max_num_batched_tokens: int, max_num_seqs: int,
                     max_capture: int | None = None) -> list[int]:
    """The batch sizes vLLM captures CUDA graphs for (VllmConfig._set_cudagraph_sizes, vllm/config/
    vllm.py; vllm/config/__init__.py and config.py before 0.11.1), on a GPU outside the sm_100
    family (which captures up to 1024 from 0.28.0), without speculative decoding.

    - 0.9.x: [1, 2, 4] + range(8, 513, 8), those <= max_num_batched_tokens;
    - 0.10.0-0.11.0: the same up to min(2 x max_num_seqs, 512);
    - 0.11.1+: max = min(2 x max_num_seqs, 512, max_num_batched_tokens); [1, 2, 4], step 8 below 256,
      step 16 from 256; 0.20.1+ adds max_num_batched_tokens itself when <= max, 0.31.0+ max_num_seqs.
      A model's `max_capture` (MAX_CAPTURE_OVERRIDES) replaces min(2 x max_num_seqs, 512): gpt-oss-120b
      on vLLM 0.11.2 with max_num_seqs 6 captured 83 piecewise graphs (blog.huikang.dev, 2025-11-28).

    >>> len(cuda_graph_sizes((0, 33, 0), 8192, 1024)), len(cuda_graph_sizes((0, 10, 0), 8192, 1024))
    (51, 67)
    """
    if release < (0, 10):
        top = 512
    else:
        top = min(2 * max_num_seqs, 512)
    if release < (0, 11, 1):
        return [s for s in [1, 2, 4, *range(8, top + 1, 8)] if s <= min(top, max_num_batched_tokens)]
    top = min(max_capture or top, max_num_batched_tokens)
    sizes = [s for s in (1, 2, 4) if s <= top] + list(range(8, min(top + 1, 256), 8))
    if top >= 256:
        sizes += range(256, top + 1, 16)
    if release >= (0, 20, 1) and max_num_batched_tokens <= top:
        sizes.append(max_num_batched_tokens)
    if release >= (0, 31) and max_num_seqs <= top:
        sizes.append(max_num_seqs)
    return sorted(set(sizes))


@lru_cache(maxsize=256)  # (pure; called for every step of the fit's searches)
def cuda_graph_count(release: tuple[int, ...], max_num_batched_tokens: int, max_num_seqs: int,
                     max_capture: int | None = None) -> int:
    """Graphs captured: a piecewise graph per size, and from 0.11.0 (cudagraph_mode
    FULL_AND_PIECEWISE by default) a full graph per size of a uniform decode batch (<= max_num_seqs).

    >>> cuda_graph_count((0, 11, 2), 8192, 6, 1024)  # the log: 83 piecewise, 3 full
    86
    """
    sizes = cuda_graph_sizes(release, max_num_batched_tokens, max_num_seqs, max_capture)
    full = [s for s in sizes if s <= max_num_seqs] if release >= (0, 11) else []
    return len(sizes) + len(full)


def mxfp4_backend(release: tuple[int, ...], compute_capability: str) -> str:
    """The MoE kernel vLLM picks for MXFP4 experts (gpt-oss) on a CUDA GPU.

    0.10.2-0.18 (vllm/model_executor/layers/quantization/mxfp4.py get_mxfp4_backend): FlashInfer on
    sm_100; below sm_90 `return Mxfp4Backend.MARLIN`; on sm_90 TRITON (triton_kernels) when it is
    installed, as in vLLM's images. 0.19+ (fused_moe/oracle/mxfp4.py _get_priority_backends): from
    0.22.0 the CUDA order is [FLASHINFER_TRTLLM_MXFP4_MXFP8, DEEPGEMM_MXFP4, MARLIN, ...], so an
    H100 gets MARLIN."""
    try:
        major = int(compute_capability.split(".")[0])
    except ValueError:
        return "marlin"
    if major >= 10:
        return "flashinfer-trtllm"
    if major == 9:
        return "marlin" if release >= (0, 22) else "triton"
    return "marlin"


def mxfp4_padding(release: tuple[int, ...], backend: str) -> tuple[int, int]:
    """(intermediate, hidden) multiples the expert weights are padded to before they are allocated
    (mxfp4.py create_weights / mxfp4_round_up_hidden_size_and_intermediate_size): MARLIN
    round_up(I, 128), round_up(H, 256); TRITON round_up(I, 64); the TRT-LLM FlashInfer backends
    256 and 256, 128 and 256 from 0.27.0."""
    if backend == "marlin":
        return 128, 256
    if backend == "triton":
        return 64, 1
    return (256 if release < (0, 27) else 128), 256


def mxfp4_expert_bytes(intermediate: int, hidden: int) -> int:
    """One MXFP4 expert as vLLM allocates it (Mxfp4MoEMethod.create_weights): w13 [2I, H/2] uint8
    with scales [2I, H/32] and a bf16 bias [2I]; w2 [H, I/2], scales [H, I/32], bias [H]."""
    w13 = 2 * intermediate * hidden // 2 + 2 * intermediate * hidden // 32 + 2 * intermediate * 2
    w2 = hidden * intermediate // 2 + hidden * intermediate // 32 + hidden * 2
    return w13 + w2


def derived_max_model_len(release: tuple[int, ...], arch: Architecture) -> int | None:
    """The longest --max-model-len vLLM accepts without VLLM_ALLOW_LONG_MAX_MODEL_LEN, None when the
    config names none (vllm/config/model.py _get_and_verify_max_len; from 0.14.0
    model_arch_config_convertor.py derive_max_model_len_and_key): the config's length, replaced by
    its `model_max_length` when it has one; scaled by the rope factor unless the rope type is su,
    longrope or llama3 (or the model Gemma 3), YaRN giving original_max_position_embeddings x factor;
    from 0.30.0 YaRN (and DeepSeek's YaRN) is not scaled again."""
    derived = arch.max_position_embeddings
    if arch.model_max_length:
        derived = arch.model_max_length
    if derived is None:
        return None
    rope = arch.rope_scaling
    unscaled = ("su", "longrope", "llama3") + (("yarn", "deepseek_yarn", "deepseek_llama_scaling")
                                               if release >= (0, 30) else ())
    if rope and rope[0] not in unscaled and "gemma3" not in arch.model_type:
        kind, factor, original = rope
        if kind == "yarn" and original:
            derived = original
        derived = int(derived * factor)
    return derived


def sampler_path(release: tuple[int, ...], env: bool | None, rows: int) -> str:
    """Which top-k/top-p code the profiling sampler run takes (vllm/v1/sample/ops/
    topk_topp_sampler.py): "flashinfer", "triton" or "pytorch" (a sort of the whole vocabulary).

    - FlashInfer's kernel: 0.9.1-0.11.0 whenever FlashInfer >= 0.2.3 is installed unless
      VLLM_USE_FLASHINFER_SAMPLER=0 ("In V1, None means True"); from 0.11.1 only with
      VLLM_USE_FLASHINFER_SAMPLER=1 ("Users must opt in explicitly"). Unset, hfmem takes FlashInfer
      as not installed (a plain `pip install vllm`).
    - Otherwise, from 0.17.0 apply_top_k_top_p runs the Triton pivot-search kernel (vllm PR
      #33538, topk_topp_triton.py) when Triton is there, as on every CUDA install: in 0.17.0-0.19.1
      for batches of 8 rows or more (`logits.shape[0] >= 8`), in 0.33.0 for any batch (read in the
      0.17.0, 0.19.0 and 0.33.0 wheels; hfmem takes the 0.33.0 rule from 0.20.0). Before 0.17.0,
      and for smaller batches, PyTorch's sort.

    >>> sampler_path((0, 19, 0), None, 1024), sampler_path((0, 19, 0), None, 6), sampler_path((0, 16, 0), None, 1024)
    ('triton', 'pytorch', 'pytorch')
    """
    if env:
        return "flashinfer"
    if release >= (0, 17) and (rows >= 8 or release >= (0, 20)):
        return "triton"
    return "pytorch"
