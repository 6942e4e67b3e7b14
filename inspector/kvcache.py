"""The KV cache as vLLM V1 lays it out per layer kind, and the dtypes and context it depends on.

Pure functions over an Architecture; exact integer bytes (vllm/v1/kv_cache_interface.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .arch import Architecture, LayerKind
from .errors import UsageError

# --kv-cache-dtype: vLLM's CacheConfig values plus the aliases people type. Bits per element.
KV_CACHE_DTYPES: dict[str, tuple[str, int]] = {
    "bfloat16": ("bf16", 16), "bf16": ("bf16", 16),
    "float16": ("fp16", 16), "fp16": ("fp16", 16), "half": ("fp16", 16),
    "fp8": ("fp8", 8), "fp8_e4m3": ("fp8_e4m3", 8), "fp8_e5m2": ("fp8_e5m2", 8),
    "fp32": ("fp32", 32), "float32": ("fp32", 32), "float": ("fp32", 32),
}
_CONFIG_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


def compute_dtype(arch: Architecture, stored_by_dtype: Mapping[str, int] | None = None, *,
                  keep_fp32: bool = False) -> str:
    """The activation dtype vLLM's `--dtype auto` picks on a GPU with bf16: the config's torch_dtype,
    except that float32 models run in bf16 (vllm/config/model.py `_resolve_auto_dtype`: "Downcast
    for float32 models" to the first supported dtype, bf16 on sm80+). Without a torch_dtype: the
    checkpoint's most common float dtype (vLLM >= 0.18 reads the safetensors dtypes), else bf16.
    `keep_fp32`: the checkpoint's own dtype, float32 included (inspector/vllm.py auto_dtype then
    decides per GPU)."""
    name = _CONFIG_DTYPES.get(arch.torch_dtype or "")
    if name in ("bf16", "fp16") or (name == "fp32" and keep_fp32):
        return name
    if name is None and stored_by_dtype:
        kinds = ("BF16", "F16", "F32") if keep_fp32 else ("BF16", "F16")
        floats = Counter({k: v for k, v in stored_by_dtype.items() if k in kinds})
        if floats:
            return {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}[floats.most_common(1)[0][0]]
    return "bf16"


def kv_cache_dtype(value: str, compute: str) -> tuple[str, int]:
    """(name, bits) for a --kv-cache-dtype value; `auto` is the model's compute dtype, as in vLLM."""
    key = value.strip().lower()
    if key == "auto":
        return compute, 32 if compute == "fp32" else 16
    if key not in KV_CACHE_DTYPES:
        allowed = ", ".join(["auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2", "bf16", "fp16", "fp32"])
        raise UsageError(f"--kv-cache-dtype {value!r} is not one of: {allowed}")
    return KV_CACHE_DTYPES[key]


# vLLM falls back to 2048 tokens when a config names no context length
# (vllm/config/model.py _get_and_verify_max_len: default_max_len = 2048).
VLLM_DEFAULT_MAX_LEN = 2048


def context_length(arch: Architecture, max_model_len: int | None) -> tuple[int, str]:
    """(tokens, where it came from): --max-model-len, else the config's own, else vLLM's 2048."""
    if max_model_len is not None:
        if max_model_len <= 0:
            raise UsageError("--max-model-len must be a positive number of tokens")
        return max_model_len, "--max-model-len"
    if arch.max_position_embeddings:
        return arch.max_position_embeddings, "config.json"
    return VLLM_DEFAULT_MAX_LEN, "vLLM's default (config.json names no context length)"


# vLLM allocates the cache in blocks: 16 tokens on CUDA (vllm/platforms/cuda.py, CacheConfig
# DEFAULT_BLOCK_SIZE), 64 for MLA (FlashMLA, the pre-Blackwell default, forces 64:
# vllm/v1/attention/backends/mla/flashmla.py get_supported_kernel_block_sizes).
BLOCK_SIZE = 16
MLA_BLOCK_SIZE = 64


@dataclass(frozen=True)
class KVGroup:
    """The layers of one kind and what they cache for one sequence."""

    kind: str
    layers: int
    bytes_per_token: int  # all layers of this kind together; 0 for fixed-state layers
    tokens: int  # tokens held per sequence (after the window / chunk cap)
    bytes_per_sequence: int  # padding layers included
    block_tokens: int = BLOCK_SIZE  # tokens per block of vLLM's pool (64 for MLA)
    padding_layers: int = 0  # vLLM's hybrid allocator pads this kind to whole groups (below)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "layers": self.layers, "bytes_per_token": self.bytes_per_token,
                "tokens": self.tokens, "bytes_per_sequence": self.bytes_per_sequence,
                "padding_layers": self.padding_layers}


@dataclass(frozen=True)
class KVCache:
    """The KV cache of `batch_size` sequences of `context_tokens`, per GPU at `tensor_parallel_size`."""

    dtype: str
    bytes_per_token: int
    context_tokens: int
    batch_size: int
    bytes: int
    state_bytes_per_sequence: int
    groups: tuple[KVGroup, ...]
    tensor_parallel_size: int = 1
    group_layers: int = 0  # layers per group of vLLM's hybrid allocator (0: one kind, one group)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "bytes_per_token": self.bytes_per_token,
            "context_length": self.context_tokens,
            "batch_size": self.batch_size,
            "bytes": self.bytes,
            "state_bytes_per_sequence": self.state_bytes_per_sequence,
            "tensor_parallel_size": self.tensor_parallel_size,
            "layers": [g.to_dict() for g in self.groups],
        }




def _blocks(tokens: int, block: int) -> int:
    return -(-tokens // block)


def kv_heads_per_gpu(kv_heads: int, tp: int) -> int:
    """vLLM splits KV heads across tensor-parallel ranks, or replicates them when there are fewer
    heads than ranks: each GPU holds max(1, kv_heads // tp) (vllm/config/model.py
    get_num_kv_heads)."""
    return max(1, kv_heads // tp)


def kv_cache(arch: Architecture, context: int, batch: int, dtype: tuple[str, int], *,
             max_num_batched_tokens: int = 8192, tensor_parallel_size: int = 1, state_bits: int = 16) -> KVCache:
    """KV cache bytes, as vLLM V1 lays it out per layer kind (vllm/v1/kv_cache_interface.py).

    - full attention: 2 (K and V) x kv_heads x head_dim per token per layer, for every token,
      in whole blocks of 16 tokens (AttentionSpec.page_size_bytes, FullAttentionSpec);
    - sliding window: the same per token, holding min(context, window - 1 + max_num_batched_tokens)
      tokens plus one block (SlidingWindowSpec.max_memory_usage_bytes: a prefill chunk attends to
      the window behind it, and the window may start mid-block);
    - chunked local attention (Llama 4): min(context, chunk + max_num_batched_tokens) tokens;
    - MLA: one latent of kv_lora_rank + qk_rope_head_dim per token per layer (MLAAttentionSpec, one
      "head", no factor 2), blocks of 64, replicated on every tensor-parallel rank; DeepSeek V3.2
      adds its indexer's keys (mla_layer_token_bytes);
    - linear attention and Mamba: a fixed state per sequence, split across ranks by heads;
    - encoder-decoder: cross-attention K and V over the encoder's tokens, per sequence.

    >>> from inspector.arch import parse_architecture
    >>> a = parse_architecture({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64,
    ...                         "num_attention_heads": 4, "num_key_value_heads": 2})
    >>> kv_cache(a, 16, 1, ("bf16", 16)).bytes   # 2 layers x 2 (K,V) x 2 heads x 16 dims x 2 bytes x 16
    4096
    """
    name, bits = dtype
    tp = tensor_parallel_size
    counts = Counter(arch.layer_kinds)
    kv_heads = kv_heads_per_gpu(arch.num_key_value_heads, tp) if arch.num_key_value_heads else 0
    attn_elems = 2 * kv_heads * arch.head_dim
    latent = (arch.kv_lora_rank or 0) + (arch.qk_rope_head_dim or 0)
    mla_token_bytes = latent * bits // 8
    if arch.index_head_dim:
        mla_token_bytes = mla_layer_token_bytes(arch, name, bits)
    n_state = counts.get(LayerKind.LINEAR, 0) + counts.get(LayerKind.MAMBA, 0) if arch.state else 0
    # Mamba/DeltaNet state is kept in the model dtype, `state_bits` (vLLM's mamba_cache_dtype "auto").
    state_page = -(-arch.state.elements // tp) * state_bits // 8 if arch.state else 0
    kinds = [k for k in (LayerKind.FULL, LayerKind.SLIDING, LayerKind.CHUNKED, LayerKind.MLA) if counts.get(k)]
    mamba_block = 0
    if n_state and kinds:
        first = kinds[0]
        align = MLA_BLOCK_SIZE if first is LayerKind.MLA else BLOCK_SIZE
        mamba_block = max(align, mamba_block_tokens(
            state_page, mla_token_bytes if first is LayerKind.MLA else attn_elems * bits // 8, align))
    groups = []
    for kind in kinds:
        n = counts[kind]
        block = mamba_block or (MLA_BLOCK_SIZE if kind is LayerKind.MLA else BLOCK_SIZE)
        per_token = n * (mla_token_bytes if kind is LayerKind.MLA else attn_elems * bits // 8)
        if kind is LayerKind.FULL and arch.kv_heads_per_layer:  # heads differ by layer (Nemotron-NAS)
            per_token = sum(2 * kv_heads_per_gpu(k, tp) * arch.head_dim * bits // 8
                            for k in arch.kv_heads_per_layer if k)
        tokens = _blocks(context, block) * block
        if kind is LayerKind.SLIDING and arch.sliding_window:
            held = min(context, arch.sliding_window - 1 + max_num_batched_tokens)
            tokens = (_blocks(held, block) + 1) * block  # +1: the window may start mid-block
            tokens = min(tokens, _blocks(context, block) * block)
        elif kind is LayerKind.CHUNKED and arch.attention_chunk_size:
            tokens = _blocks(min(context, arch.attention_chunk_size + max_num_batched_tokens), block) * block
        groups.append(KVGroup(kind.value, n, per_token, tokens, per_token * tokens, block))
    if mamba_block:  # each state layer takes one attention page, the state padded up to it
        state_page = mamba_block * groups[0].bytes_per_token // groups[0].layers
    if n_state and arch.state:
        groups.append(KVGroup(arch.state.kind, n_state, 0, 0, n_state * state_page, mamba_block or BLOCK_SIZE))
    paged = [g for g in groups if g.bytes_per_token or mamba_block]
    size = hybrid_group_layers([g.layers for g in paged]) if len(
        {g.bytes_per_token // g.layers for g in paged if g.bytes_per_token}) == 1 else 0
    if size:  # pad each kind to whole groups: the padding layers' pages are allocated too
        groups = [replace(g, padding_layers=pad, bytes_per_sequence=g.bytes_per_sequence * (g.layers + pad)
                          // g.layers) if g in paged else g for g in groups for pad in [-g.layers % size]]
    state = sum(g.bytes_per_sequence for g in groups if not g.bytes_per_token)
    if arch.encoder_layers:
        per_token = arch.num_hidden_layers * attn_elems * bits // 8
        groups.append(KVGroup("cross_attention", arch.num_hidden_layers, 0, context, per_token * context))
        state += per_token * context
    per_seq = sum(g.bytes_per_sequence for g in groups)
    return KVCache(name, sum(g.bytes_per_token for g in groups), context, batch, per_seq * batch,
                   state, tuple(groups), tp, size)


def mla_layer_token_bytes(arch: Architecture, dtype: str, bits: int) -> int:
    """Bytes one token adds to one MLA layer's cache (vllm/v1/kv_cache_interface.py MLAAttentionSpec):
    the latent (kv_lora_rank + qk_rope_head_dim) at the cache dtype; for DeepSeek V3.2's sparse
    attention, an fp8 cache is FlashMLA's "fp8_ds_mla" layout, 656 bytes a token
    (MLAAttentionSpec.real_page_size_bytes), and the indexer adds its own cache per layer:
    index_head_dim fp8 values plus a 4-byte scale per 128 (DeepseekV32IndexerCache, uint8:
    head_dim + head_dim // 128 * 4 = 132 bytes for DeepSeek's 128).

    >>> from inspector.arch import parse_architecture
    >>> a = parse_architecture({"model_type": "deepseek_v32", "num_hidden_layers": 1, "hidden_size": 64,
    ...                         "num_attention_heads": 4, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
    ...                         "index_topk": 2048, "index_head_dim": 128})
    >>> mla_layer_token_bytes(a, "bf16", 16), mla_layer_token_bytes(a, "fp8", 8)
    (1284, 788)
    """
    latent = (arch.kv_lora_rank or 0) + (arch.qk_rope_head_dim or 0)
    if not arch.index_head_dim:
        return latent * bits // 8
    main = 656 if bits == 8 else latent * bits // 8
    return main + arch.index_head_dim + arch.index_head_dim // 128 * 4


def mamba_block_tokens(state_page_bytes: int, attention_token_bytes: int, align: int) -> int:
    """The attention block vLLM picks for a model with Mamba or linear-attention layers, so that an
    attention page holds at least one layer's state (vllm/model_executor/models/config.py
    HybridAttentionMambaModelConfig, 0.10.2-0.19; vllm/platforms/interface.py from 0.2x, the same
    rule with FlashAttention's 16-token alignment): align x ceil(state / (align x bytes per token)),
    the state then padded to that page. Without prefix caching, which vLLM leaves off for hybrid
    models by default (ModelConfig.is_prefix_caching_supported).

    >>> mamba_block_tokens(548_864, 1024, 16)  # Qwen3-Next at TP 2: "block size to 544 tokens"
    544
    """
    return align * -(-state_page_bytes // (align * attention_token_bytes))


def hybrid_group_layers(layers_per_kind: list[int]) -> int:
    """The layers per group when a model mixes attention kinds of one page size (vllm/v1/core/
    kv_cache_utils.py _get_kv_cache_groups_uniform_page_size, 0.10.0+): the fewest layers of a
    kind, or the most when that is under 1.5 x the fewest; each kind is cut into groups of that
    many layers, the last padded. 0 for a single kind (one group, no padding).

    >>> hybrid_group_layers([5, 29]), hybrid_group_layers([12, 12]), hybrid_group_layers([13, 12])
    (5, 12, 13)
    """
    if len(layers_per_kind) < 2:
        return 0
    low, high = min(layers_per_kind), max(layers_per_kind)
    return high if high < low * 1.5 else low


def capacity_tokens(kv: KVCache, budget_bytes: int) -> int:
    """vLLM's "GPU KV cache size: N tokens" for a KV budget on one GPU (vllm/v1/core/
    kv_cache_utils.py get_kv_cache_config_from_groups and _report_kv_cache_config): blocks of
    `block_tokens` tokens across every layer; with a hybrid allocator the pool holds
    budget // (page x layers per group) blocks, shared by every group (Mamba and linear-attention
    layers' groups too, one page per sequence each), and the line reports blocks // groups x block
    tokens. A model without attention layers has no such line (0 here).

    >>> from inspector.arch import parse_architecture
    >>> a = parse_architecture({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64,
    ...                         "num_attention_heads": 4, "num_key_value_heads": 2})
    >>> capacity_tokens(kv_cache(a, 16, 1, ("bf16", 16)), 10_000)  # 256 bytes a token: 39 -> 32
    32
    """
    attention = [g for g in kv.groups if g.bytes_per_token and g.kind != "cross_attention"]
    if budget_bytes <= 0 or not attention:
        return 0
    if not kv.group_layers:
        per_token = sum(g.bytes_per_token for g in attention)
        block = attention[0].block_tokens
        return budget_bytes // (block * per_token) * block
    block = min(g.block_tokens for g in attention)
    page = attention[0].bytes_per_token // attention[0].layers * attention[0].block_tokens
    blocks = budget_bytes // page // kv.group_layers
    groups = sum((g.layers + g.padding_layers) // kv.group_layers for g in kv.groups if g.kind != "cross_attention")
    return blocks // groups * block
