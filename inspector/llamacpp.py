"""llama.cpp's memory for a GGUF model, laid out as its loader and context lay it out.

Pure: a GGUFModel (inspector/gguf.py) and LlamaCppSettings in, frozen records out. Each rule names
llama.cpp's file and function; they are read from ggml-org/llama.cpp at LLAMA_CPP_COMMIT
(`LLAMA_CPP_BUILD`), and hold for the builds RULES_HOLD_FOR names.

The terms, as llama.cpp prints them at start-up:
  load_tensors:   <dev> model buffer size   the tensors of the layers on that device; the token
                                            embeddings stay in host memory (with mmap, page cache)
  llama_kv_cache: <dev> KV buffer size      per layer on the layer's device: K and V rows of
                                            n_embd_k_gqa / n_embd_v_gqa elements per cell
  llama_context:  <dev> compute buffer size the worst-case graph's tensors (a model of it here,
                                            checked against logs in tests/data/llamacpp_ledger.json)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConfigError, UnsupportedFormat, UsageError
from .gguf import GGML_TYPES, ArraySummary, GGUFFile, GGUFModel, GGUFTensor

#: The llama.cpp snapshot these rules were read from (`fetch github:ggml-org/llama.cpp`).
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
RULES_SOURCE = "llama.cpp b11312 (0c1e570, 2026-10-01); docs/research/llamacpp-rules.md"

MIB = 1 << 20

#: --cache-type-k / --cache-type-v values (common/arg.cpp kv_cache_types) -> ggml type ids.
CACHE_TYPES: Mapping[str, int] = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3,
                                  "iq4_nl": 20, "q5_0": 6, "q5_1": 7}
#: vLLM's --kv-cache-dtype names, mapped onto llama.cpp's (fp8 has no llama.cpp cache type).
KV_DTYPE_NAMES: Mapping[str, str] = {"auto": "f16", "float16": "f16", "fp16": "f16", "half": "f16",
                                     "bfloat16": "bf16", "bf16": "bf16", "float32": "f32", "fp32": "f32"}

#: Architectures whose layers keep a recurrent state, not (only) a KV cache (src/llama-arch.cpp
#: llm_arch_is_recurrent / llm_arch_is_hybrid): their state is not laid out here yet.
RECURRENT_ARCHS = frozenset({
    "mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "jamba", "falcon-h1", "granitehybrid",
    "nemotron_h", "plamo2", "lfm2", "lfm2moe", "qwen3next", "minimax-m2-linear", "kimi-linear",
})

#: Our policy: bounds past which a GGUF's hyperparameter is no model's (the largest today: 128
#: layers + MTP, 262,144-token vocabularies, 1M-token contexts, 16k-wide embeddings).
MAX_LAYERS = 4096
MAX_VOCAB = 1 << 24
MAX_WIDTH = 1 << 20
MAX_CONTEXT = 1 << 26

#: Sliding-window layers by architecture where the GGUF has no per-layer pattern: llama.cpp's
#: src/llama-model.cpp load_hparams (`set_swa_pattern(n, dense_first)`, src/llama-hparams.cpp): every
#: n-th layer is global and the others slide (il % n < n - 1; dense_first: il % n != 0).
SWA_PATTERNS: Mapping[str, tuple[int, bool]] = {
    "gemma2": (2, False), "gemma3": (6, False), "gemma3n": (5, False), "gemma-embedding": (6, False),
    "cohere2": (4, False), "cohere2moe": (4, True), "llama4": (4, False), "gpt-oss": (2, False),
    "olmo2": (4, False), "mellum": (4, False), "afmoe": (4, False), "exaone-moe": (4, False), "exaone4": (4, False),
    "laguna": (4, True), "smallthinker": (4, True), "plamo3": (8, False),
}
#: llama4's chunked attention when the GGUF gives no window (src/llama-model.cpp: n_chunk 8192).
LLAMA4_CHUNK = 8192


@dataclass(frozen=True)
class LlamaCppSettings:
    """llama.cpp's options, by its own names (llama-server / llama-cli)."""

    ctx_size: int | None = None  # -c: total cells shared by the --parallel slots; None: the model's,
    #                                which --fit may shorten; 0 (as llama.cpp's -c 0): the model's, kept
    parallel: int = 1  # --parallel (-np): sequences; hfmem's --batch-size maps here
    kv_unified: bool = False  # --kv-unified (-kvu): one cache the slots share (common/common.h: off;
    #                           llama-server without -np runs 4 slots with it on)
    cache_type_k: str | None = None  # None: from kv_cache_dtype (vLLM's name; auto: f16)
    cache_type_v: str | None = None
    kv_cache_dtype: str = "auto"
    flash_attn: str = "auto"  # --flash-attn on|off|auto
    ubatch_size: int = 512  # --ubatch-size (-ub)
    batch_size: int = 2048  # --batch-size (-b): logical batch; the graph is built for the ubatch
    n_gpu_layers: int | None = None  # --n-gpu-layers; None: all (what -ngl auto / --fit give when it fits)
    n_cpu_moe: int = 0  # --n-cpu-moe: the first N layers' experts in host memory
    swa_full: bool = False  # --swa-full: full-size cache for the sliding-window layers
    repack: bool = True  # the CPU's repacked weights (llama.cpp's default; --no-repack turns it off)
    tensor_split: tuple[float, ...] = ()  # --tensor-split: the share of layers per GPU (identical GPUs;
    #                                     empty: one GPU); llama.cpp's default is by free memory: equal
    fit_target_mib: int = 1024  # --fit-target: memory left free on each device
    allow_offload: bool = False  # `check`: a fit with layers in host memory still passes

    @property
    def type_k(self) -> str:
        return self.cache_type_k or kv_cache_type(self.kv_cache_dtype)

    @property
    def type_v(self) -> str:
        return self.cache_type_v or kv_cache_type(self.kv_cache_dtype)

    def validate(self) -> LlamaCppSettings:
        """UsageError for what llama.cpp would refuse (its cache types; a quantized V without flash
        attention: src/llama-context.cpp)."""
        for what, value in (("--cache-type-k", self.cache_type_k), ("--cache-type-v", self.cache_type_v)):
            if value is not None and value not in CACHE_TYPES:
                raise UsageError(f"{what} {value!r}: llama.cpp's cache types are {', '.join(CACHE_TYPES)}")
        if self.flash_attn not in ("on", "off", "auto"):
            raise UsageError(f"--flash-attn {self.flash_attn!r}: on, off or auto")
        if self.cache_type_v is not None and self.cache_type_v not in ("f32", "f16", "bf16") \
                and self.flash_attn == "off":
            raise UsageError(f"--cache-type-v {self.cache_type_v} needs flash attention (llama.cpp refuses a "
                             "quantized V cache with --flash-attn off)")
        return self

    def resolved(self) -> LlamaCppSettings:
        """With the cache types named (from --kv-cache-dtype where not given: fp8 is refused here,
        once the model is known to be GGUF) and checked."""
        return replace(self, cache_type_k=self.type_k, cache_type_v=self.type_v).validate()


def kv_cache_type(kv_cache_dtype: str) -> str:
    """vLLM's --kv-cache-dtype as llama.cpp's cache type; fp8 is refused (llama.cpp has none)."""
    name = kv_cache_dtype.lower()
    if name in CACHE_TYPES:
        return name
    if name in KV_DTYPE_NAMES:
        return KV_DTYPE_NAMES[name]
    if name.startswith("fp8"):
        raise UsageError("--kv-cache-dtype fp8: llama.cpp has no fp8 KV cache; use --cache-type-k/-v q8_0 "
                         "(or q4_0)")
    raise UsageError(f"--kv-cache-dtype {kv_cache_dtype!r}: for llama.cpp give --cache-type-k/-v "
                     f"({', '.join(CACHE_TYPES)})")


# --- the architecture, from the GGUF metadata --------------------------------------------------------


@dataclass(frozen=True)
class LlamaModel:
    """A GGUF model's hyperparameters as llama.cpp's llama_hparams holds them (per layer where
    llama.cpp allows arrays: head counts, feed-forward widths)."""

    arch: str
    name: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    n_embd_head_k: int
    n_embd_head_v: int
    n_ff: tuple[int, ...]
    n_expert: int
    n_expert_used: int
    n_ff_exp: int  # one routed expert's width ({arch}.expert_feed_forward_length)
    n_ff_shexp: int  # the shared experts' width
    n_swa: int
    swa_layers: tuple[bool, ...]
    kv_lora_rank: int  # MLA (deepseek2 and its kin): the latent's width
    is_mla: bool  # both *_length_mla keys set: K holds key_length (latent + rope), no V is stored
    n_rot: int
    n_layer_kv: int  # layers from the first with a KV cache of their own (gemma3n, gemma4 share the rest)
    n_nextn: int  # trailing MTP / NextN layers: loaded, but no KV cache in the main context
    n_embd_head_k_swa: int
    n_embd_head_v_swa: int
    params: int
    file_type: str  # the tensors' most common quantized type, as a label ("Q4_K")
    tensors: tuple[GGUFTensor, ...] = field(repr=False, default=())

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0

    def n_embd_k_gqa(self, il: int) -> int:
        """K elements per cell of layer il (src/llama-hparams.cpp n_embd_k_gqa: head dim x KV heads;
        a sliding-window layer's own head dim where the model has one)."""
        head = self.n_embd_head_k_swa if self.swa_layers[il] else self.n_embd_head_k
        return head * self.n_head_kv[il]

    def n_embd_v_gqa(self, il: int) -> int:
        if self.is_mla:
            return 0  # V is read as a view of K (src/llama-kv-cache.cpp: has_v = !is_mla, since #19067)
        head = self.n_embd_head_v_swa if self.swa_layers[il] else self.n_embd_head_v
        return head * self.n_head_kv[il]

    def has_kv(self, il: int) -> bool:
        """llama_hparams::has_kv, and the main context's filter il < n_layer() (MTP layers have none)."""
        return il < self.n_layer_kv and il < self.n_layer - self.n_nextn and self.n_head_kv[il] > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.arch, "block_count": self.n_layer, "embedding_length": self.n_embd,
            "vocab_size": self.n_vocab, "context_length": self.n_ctx_train,
            "head_count": _scalar(self.n_head), "head_count_kv": _scalar(self.n_head_kv),
            "key_length": self.n_embd_head_k, "value_length": self.n_embd_head_v,
            "feed_forward_length": _scalar(self.n_ff), "expert_count": self.n_expert,
            "expert_used_count": self.n_expert_used, "sliding_window": self.n_swa or None,
            "sliding_window_layers": sum(self.swa_layers), "kv_lora_rank": self.kv_lora_rank or None,
            "mla": self.is_mla, "nextn_predict_layers": self.n_nextn,
            "parameters": self.params, "file_type": self.file_type,
        }


def _scalar(values: tuple[int, ...]) -> int | list[int]:
    return values[0] if len(set(values)) == 1 else list(values)


def _per_layer(meta: Mapping[str, Any], key: str, n_layer: int, default: int | None, name: str) -> tuple[int, ...]:
    """A key llama.cpp reads as a scalar or a per-layer array (llama_model_loader::get_key_or_arr)."""
    value = meta.get(key, default)
    if isinstance(value, ArraySummary):
        raise ConfigError(f"{name}: {key} is an array of {value.length} values, not one per layer")
    if isinstance(value, list):
        if len(value) != n_layer or not all(type(v) is int and v >= 0 for v in value):
            raise ConfigError(f"{name}: {key} has {len(value)} values for {n_layer} layers")
        return tuple(value)
    if type(value) is not int or value < 0:
        raise ConfigError(f"{name}: {key} is {value!r}, not a count")
    return (value,) * n_layer


def _int(meta: Mapping[str, Any], key: str, name: str, default: int | None = None) -> int:
    value = meta.get(key, default)
    if type(value) is not int or value < 0:
        if value is None:
            raise ConfigError(f"{name}: the GGUF metadata lacks {key}")
        raise ConfigError(f"{name}: {key} is {value!r}, not a count")
    return value


def llama_model(model: GGUFModel) -> LlamaModel:
    """The hyperparameters llama.cpp reads (src/llama-model.cpp load_hparams) from `{arch}.*` keys.
    A recurrent or hybrid architecture is refused: its state is not laid out here."""
    meta, name = model.metadata, model.name
    arch = model.architecture
    if arch in RECURRENT_ARCHS or any(k.startswith(f"{arch}.ssm.") or k.startswith(f"{arch}.wkv.") for k in meta):
        raise UnsupportedFormat(f"{name}: {arch} keeps a recurrent state; hfmem does not lay out llama.cpp's "
                                "memory for it yet")
    kind = meta.get("general.type", "model")
    if arch == "clip" or kind == "mmproj":
        raise UsageError(f"{name}: a multimodal projector (mmproj), not a model: name the model's file")
    if kind != "model":
        raise UnsupportedFormat(f"{name}: a GGUF {str(kind)[:40]!r} file (general.type), not a model llama.cpp runs "
                                "on its own")
    p = f"{arch}."
    n_layer = _int(meta, p + "block_count", name)
    if not 0 < n_layer <= MAX_LAYERS:
        raise ConfigError(f"{name}: {p}block_count {n_layer} is no layer count")
    n_embd = _int(meta, p + "embedding_length", name)
    n_head = _per_layer(meta, p + "attention.head_count", n_layer, None, name)
    if not 0 < max(n_head):
        raise ConfigError(f"{name}: {p}attention.head_count is 0: no attention layer hfmem can size")
    # llama_model::load_hparams: head_count_kv defaults to head_count (per layer), the head size to
    # n_embd / head_count of the first layer
    kv_default: Any = list(n_head) if len(set(n_head)) > 1 else n_head[0]
    n_head_kv = _per_layer(meta, p + "attention.head_count_kv", n_layer, kv_default, name)
    head = n_embd // n_head[0] if n_head[0] else 0
    n_embd_head_k = _int(meta, p + "attention.key_length", name, head)
    n_embd_head_v = _int(meta, p + "attention.value_length", name, head)
    n_ff = _per_layer(meta, p + "feed_forward_length", n_layer, 0, name)
    tokens = meta.get("tokenizer.ggml.tokens")
    emb = next((t for t in model.tensors if t.name == "token_embd.weight"), None)
    n_vocab = meta.get(p + "vocab_size")
    if type(n_vocab) is not int:
        n_vocab = (tokens.length if isinstance(tokens, ArraySummary) else len(tokens) if isinstance(tokens, list)
                   else emb.shape[1] if emb is not None and len(emb.shape) > 1 else 0)
    for what, value, high in (("vocab_size", n_vocab, MAX_VOCAB), ("embedding_length", n_embd, MAX_WIDTH),
                              ("head_count", max(n_head), MAX_WIDTH), ("head_count_kv", max(n_head_kv), MAX_WIDTH),
                              ("key_length", n_embd_head_k, MAX_WIDTH), ("value_length", n_embd_head_v, MAX_WIDTH),
                              ("feed_forward_length", max(n_ff), MAX_WIDTH << 4),
                              ("context_length", _int(meta, p + "context_length", name, 0), MAX_CONTEXT)):
        if not 0 <= value <= high:
            raise ConfigError(f"{name}: {p}{what} {value:,} is out of any model's range (0 to {high:,})")
    n_swa = 0 if arch == "phi3" else _int(meta, p + "attention.sliding_window", name,
                                           LLAMA4_CHUNK if arch == "llama4" else 0)  # phi3: SWA off
    swa_layers = _swa_layers(meta, arch, n_layer, n_swa, name)
    kv_lora_rank = _int(meta, p + "attention.kv_lora_rank", name, 0)
    is_mla = bool(_int(meta, p + "attention.key_length_mla", name, 0)
                  and _int(meta, p + "attention.value_length_mla", name, 0))
    n_rot = _int(meta, p + "rope.dimension_count", name, n_embd_head_k)
    n_nextn = _int(meta, p + "nextn_predict_layers", name, 0)
    if n_nextn >= n_layer:
        raise ConfigError(f"{name}: {p}nextn_predict_layers {n_nextn} leaves no layer of the {n_layer}")
    for t in model.tensors:
        m = _LAYER_RE.match(t.name)
        if m and int(m[1]) >= n_layer:
            raise ConfigError(f"{name}: tensor {t.name!r} is past the {n_layer} layers {p}block_count gives")
    n_layer_kv = n_layer
    if arch == "gemma3n":  # src/models/gemma3n.cpp: n_layer_kv_from_start = 20
        n_layer_kv = min(n_layer, 20)
    elif arch.startswith("gemma4"):  # src/models/gemma4.cpp: n_layer - shared_kv_layers
        n_layer_kv = n_layer - _int(meta, p + "attention.shared_kv_layers", name, 0)
    return LlamaModel(
        arch=arch, name=str(meta.get("general.name") or name), n_layer=n_layer, n_embd=n_embd, n_vocab=n_vocab,
        n_ctx_train=_int(meta, p + "context_length", name, 0), n_head=n_head, n_head_kv=n_head_kv,
        n_embd_head_k=n_embd_head_k, n_embd_head_v=n_embd_head_v, n_ff=n_ff,
        n_expert=_int(meta, p + "expert_count", name, 0), n_expert_used=_int(meta, p + "expert_used_count", name, 0),
        n_ff_exp=_int(meta, p + "expert_feed_forward_length", name, max(n_ff)),
        n_ff_shexp=_int(meta, p + "expert_shared_feed_forward_length", name,
                        _int(meta, p + "expert_shared_count", name, 0) * _int(meta, p + "expert_feed_forward_length",
                                                                                name, max(n_ff))),
        n_swa=n_swa, swa_layers=swa_layers, kv_lora_rank=kv_lora_rank, is_mla=is_mla, n_rot=n_rot,
        n_layer_kv=n_layer_kv, n_nextn=n_nextn,
        n_embd_head_k_swa=_int(meta, p + "attention.key_length_swa", name, n_embd_head_k),
        n_embd_head_v_swa=_int(meta, p + "attention.value_length_swa", name, n_embd_head_v),
        params=sum(t.elements for t in model.tensors if not t.name.startswith(_BUFFERS)),
        file_type=_file_type(model.tensors), tensors=model.tensors,
    )


#: Tensors that are buffers, not parameters: Llama 3.1's rope_freqs (its rope scaling's factors,
#: written by convert_hf_to_gguf.py; transformers computes them) and Phi-3's rope_factors_*.
_BUFFERS = ("rope_freqs", "rope_factors")


def _swa_layers(meta: Mapping[str, Any], arch: str, n_layer: int, n_swa: int, name: str) -> tuple[bool, ...]:
    if not n_swa:
        return (False,) * n_layer
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list):  # written per layer by newer converters (bool per layer)
        if len(pattern) != n_layer or not all(isinstance(v, int) for v in pattern):
            raise ConfigError(f"{name}: {arch}.attention.sliding_window_pattern has {len(pattern)} values "
                              f"for {n_layer} layers")
        return tuple(bool(v) for v in pattern)
    known = SWA_PATTERNS.get(arch)
    if known is None:
        raise UnsupportedFormat(f"{name}: {arch} has a sliding window ({n_swa}) but no layer pattern hfmem "
                                "knows; refused rather than guessed")
    n, dense_first = known
    if type(pattern) is int and pattern >= 0:
        n = pattern
    if n == 0:
        return (True,) * n_layer
    return tuple(il % n != 0 if dense_first else il % n < n - 1 for il in range(n_layer))


def _file_type(tensors: Sequence[GGUFTensor]) -> str:
    counts: dict[str, int] = {}
    for t in tensors:
        if len(t.shape) > 1:
            counts[t.type_name] = counts.get(t.type_name, 0) + t.nbytes
    return max(counts, key=lambda k: counts[k]) if counts else "F32"


# --- where each tensor lives --------------------------------------------------------------------------

_LAYER_RE = re.compile(r"^blk\.([0-9]+)\.")
_EXPERTS_RE = re.compile(r"^blk\.[0-9]+\.ffn_(?:up|down|gate|gate_up)_exps\.")
#: CUDA pads a quantized tensor's last row to MATRIX_ROW_PADDING elements (ggml/src/ggml-cuda/
#: ggml-cuda.cu ggml_backend_cuda_buffer_type_get_alloc_size; MATRIX_ROW_PADDING in common.cuh).
MATRIX_ROW_PADDING = 512
#: Each tensor in a CUDA buffer starts at a multiple of 128 bytes (ggml-cuda.cu get_alignment).
CUDA_ALIGNMENT = 128


def tensor_layer(name: str, n_layer: int) -> int:
    """The layer a tensor belongs to: 0..n_layer-1 for blk.N, n_layer for the output layer
    (output, output_norm), -1 for the input layer (token embeddings), which stays in host memory."""
    m = _LAYER_RE.match(name)
    if m:
        return int(m[1])
    if name.startswith(("output", "cls")):
        return n_layer
    if name.startswith(_BUFFERS):  # created with layer 0 (and duplicated for the others): src/llama-model.cpp
        return 0
    return -1


def gpu_alloc_bytes(t: GGUFTensor) -> int:
    """A tensor's size in a CUDA buffer: ggml_nbytes plus the padding of its last row."""
    _, block, size = GGML_TYPES[t.type]
    quantized = block > 1
    pad = (MATRIX_ROW_PADDING - t.shape[0] % MATRIX_ROW_PADDING) % MATRIX_ROW_PADDING if quantized else 0
    return -(-(t.nbytes + pad // block * size) // CUDA_ALIGNMENT) * CUDA_ALIGNMENT


def offloaded_layers(n_layer: int, n_gpu_layers: int | None) -> tuple[int, int]:
    """(the first layer on the GPU, how many layers counted as llama.cpp counts them: the output
    layer is one more): src/llama-model.cpp load_tensors, i_gpu_start = max(n_layer + 1 - ngl, 0)
    ... "offloaded %d/%d layers to GPU" of n_layer + 1."""
    ngl = n_layer + 1 if n_gpu_layers is None or n_gpu_layers < 0 else min(n_gpu_layers, n_layer + 1)
    return max(n_layer + 1 - ngl, 0), ngl


@dataclass(frozen=True)
class Placement:
    """Bytes per place: model weights, KV cache and compute buffers on the GPU and in host memory."""

    n_gpu_layers: int  # as llama.cpp counts them (of n_layer + 1)
    model_gpu: int
    model_host: int
    kv_gpu: int
    kv_host: int
    compute_gpu: int
    compute_host: int
    repack_host: int = 0  # CPU-resident weights repacked into a CPU_REPACK buffer: a second, allocated copy
    device_bytes: tuple[int, ...] = ()  # with --tensor-split: each GPU's model + KV + compute

    @property
    def gpu_bytes(self) -> int:
        return self.model_gpu + self.kv_gpu + self.compute_gpu

    @property
    def peak_device_bytes(self) -> int:
        """What the fullest GPU holds: the one GPU's whole, or the largest of a split's."""
        return max(self.device_bytes) if self.device_bytes else self.gpu_bytes

    @property
    def host_bytes(self) -> int:
        return self.model_host + self.repack_host + self.kv_host + self.compute_host


# --- the KV cache --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KVLayout:
    """llama.cpp's KV cache (src/llama-kv-cache.cpp), per layer: cells x row bytes of K and of V."""

    n_ctx: int  # -c as llama.cpp resolves it (padded)
    n_ctx_seq: int  # cells a sequence may use
    cells: int  # cells of a full-attention layer's cache (all streams)
    swa_cells: int  # cells of a sliding-window layer's cache
    k_bytes: tuple[int, ...]  # per layer (0: no cache)
    v_bytes: tuple[int, ...]
    type_k: str
    type_v: str
    flash_attn: bool

    @property
    def bytes(self) -> int:
        return sum(self.k_bytes) + sum(self.v_bytes)

    def layer_bytes(self, il: int) -> int:
        return self.k_bytes[il] + self.v_bytes[il]

    def to_dict(self) -> dict[str, Any]:
        return {"n_ctx": self.n_ctx, "n_ctx_seq": self.n_ctx_seq, "cells": self.cells,
                "swa_cells": self.swa_cells, "type_k": self.type_k, "type_v": self.type_v,
                "flash_attn": self.flash_attn, "k_bytes": sum(self.k_bytes), "v_bytes": sum(self.v_bytes),
                "bytes": self.bytes}


def row_bytes(type_name: str, n: int) -> int:
    """ggml_row_size: n elements of a cache type, which must be whole blocks (ggml.c asserts it:
    llama.cpp aborts on a head size a quantized cache type cannot hold)."""
    _, block, size = GGML_TYPES[CACHE_TYPES[type_name]]
    if n % block:
        raise UsageError(f"a {type_name} cache stores rows of {block} values; this model's K/V rows have {n} "
                         "(llama.cpp refuses it): use f16, bf16 or f32")
    return n // block * size


#: llama_context pads n_ctx to a multiple of 256 (src/llama-context.cpp: GGML_PAD(n_ctx, 256)).
N_CTX_PAD = 256
#: --fit-ctx: the shortest context llama.cpp's fit reduces -c to (common/common.h, b11312), and the
#: context hfmem assumes where a GGUF gives none.
FIT_CTX = 4096


def pad(n: int, to: int) -> int:
    return -(-n // to) * to


def flash_attn_on(settings: LlamaCppSettings) -> bool:
    """--flash-attn auto counts as on where the cache is made (src/llama-context.cpp: flash_attn =
    type != DISABLED) and resolves on in the graph where the backend runs it (CUDA, Metal, Vulkan,
    the CPU on current builds); only --flash-attn off turns it off."""
    return settings.flash_attn != "off"


def kv_layout(m: LlamaModel, s: LlamaCppSettings) -> KVLayout:
    """src/llama-context.cpp: n_ctx = pad(-c or the training context, 256); a unified cache is one
    stream of n_ctx cells, else --parallel streams of pad(n_ctx / n_seq, 256). src/llama-kv-cache.cpp:
    per layer with a cache, K = row(type_k, n_embd_k_gqa) x cells, V likewise (none for MLA; with
    --flash-attn off, V is transposed and every layer's padded to the widest). Sliding-window layers
    (src/llama-kv-cache-iswa.cpp): pad(min(cells, n_swa x (n_seq if unified else 1) + n_ubatch), 256)
    per stream, or the full size with --swa-full; the same cache types."""
    n_seq = max(1, s.parallel)
    n_ctx = pad(s.ctx_size or m.n_ctx_train or FIT_CTX, N_CTX_PAD)
    if s.ctx_size is None and not s.kv_unified:  # --fit's default: the training context per stream
        n_ctx *= n_seq
    if s.kv_unified or n_seq == 1:
        n_ctx_seq, streams = n_ctx, 1
    else:
        n_ctx_seq, streams = pad(n_ctx // n_seq, N_CTX_PAD), n_seq
        n_ctx = n_ctx_seq * n_seq
    n_ub = min(s.ubatch_size, s.batch_size, n_ctx)
    swa_seq = n_ctx_seq if s.swa_full or not m.n_swa else pad(
        min(n_ctx_seq, m.n_swa * (n_seq if s.kv_unified else 1) + n_ub), N_CTX_PAD)
    fa = flash_attn_on(s)
    v_max = max((m.n_embd_v_gqa(il) for il in range(m.n_layer) if m.has_kv(il)), default=0)
    k: list[int] = []
    v: list[int] = []
    for il in range(m.n_layer):
        if not m.has_kv(il):
            k.append(0)
            v.append(0)
            continue
        cells = (swa_seq if m.swa_layers[il] else n_ctx_seq) * streams
        width_v = m.n_embd_v_gqa(il) if fa or m.is_mla else v_max
        k.append(row_bytes(s.type_k, m.n_embd_k_gqa(il)) * cells)
        v.append(row_bytes(s.type_v, width_v) * cells)
    return KVLayout(n_ctx, n_ctx_seq, n_ctx_seq * streams, swa_seq * streams, tuple(k), tuple(v),
                    s.type_k, s.type_v, fa)


# --- the compute buffer ------------------------------------------------------------------------------


def compute_buffers(m: LlamaModel, kv: KVLayout, s: LlamaCppSettings, *, layers_on_gpu: int,
                    copies: tuple[int, int, int] = (0, 0, 0), output: bool = True) -> tuple[int, int]:
    """(GPU, host) compute buffers. llama.cpp sizes them by reserving the worst-case graph: one
    ubatch of min(n_ctx, --ubatch-size) tokens, all of them outputs, at a full cache
    (src/llama-context.cpp sched_reserve / graph_reserve), and ggml-alloc frees each tensor after its
    last use, so the buffer is the peak of the tensors live at once. Its phases run one after
    another; the peak is the largest of (E = n_embd x n_ub x 4 bytes, one F32 activation):
      attention  without flash attention: KQ (n_kv x n_ub x n_head F32) + the F32 mask + 4E;
                 with it: the F16 mask + 4E
      FFN        3 x n_ff x n_ub x 4 + 2E; MoE: (3 x n_ff_exp + n_embd) x n_expert_used x n_ub x 4 + 2E
                 (+ the shared experts' 3 x n_ff_shexp x n_ub x 4)
      output     the logits, n_vocab x n_ub x 4 + E
    `copies`: what the GPU copies in, per phase, to run a CPU-resident layer's ops (ggml-cuda's
    offload_op for a batch of 32+ tokens): one CPU layer's K and V (attention), the largest CPU-side
    FFN or expert matrix (FFN), the output matrix when the output layer stays on the CPU (output).
    The host buffer (CUDA_Host) holds the inputs: the embeddings' rows (token_embd stays on the CPU)
    and the masks. Without a GPU, the CPU buffer is the peak itself.
    The formula: docs/research/llamacpp-rules.md; checked against logs in tests/data/llamacpp_ledger.json."""
    n_kv = kv.n_ctx_seq  # the graph attends over one stream's cells
    n_ub = min(s.ubatch_size, s.batch_size, kv.n_ctx)
    f32 = 4
    e = m.n_embd * n_ub * f32
    n_head = max(m.n_head)
    mask = 2 if kv.flash_attn else 4
    attn = n_kv * n_ub * mask + 4 * e
    if not kv.flash_attn:
        attn += n_kv * n_ub * n_head * f32
    if m.n_expert:
        ffn = (3 * m.n_ff_exp + m.n_embd) * m.n_expert_used * n_ub * f32 + 2 * e + 3 * m.n_ff_shexp * n_ub * f32
    else:
        ffn = 3 * max(m.n_ff) * n_ub * f32 + 2 * e
    out = m.n_vocab * n_ub * f32 + e
    swa_mask = kv.swa_cells * kv.n_ctx_seq // kv.cells * n_ub * mask if m.n_swa else 0  # the iSWA input's own
    # + the token ids, positions and output ids (~0.01 MiB: the logs' host buffers end in .01, e.g.
    # "CUDA_Host compute buffer size = 24.01 MiB" for E 8 + mask 16 MiB, tests/data/llamacpp_ledger.json)
    host = e + n_kv * n_ub * mask + swa_mask + 10 * 1024
    if not layers_on_gpu:
        # Without a GPU the inputs share the one CPU buffer: the embeddings' rows (E) stay beside the
        # peak (b11312 CPU build on the fixtures: Llama-3.1 266.50, gemma-2 509.00, Qwen2.5 311.00,
        # Qwen3-30B 304.75 MiB: each the peak + E exactly; bench/llamacpp_cpu.sh).
        return 0, max(attn, ffn, out) + e
    attn_copy, ffn_copy, out_copy = copies
    if not output:  # a GPU of a split that holds no output layer: its layers' phases only
        return max(attn + attn_copy, ffn + ffn_copy), host
    return max(attn + attn_copy, ffn + ffn_copy, out + out_copy), host


# --- the whole estimate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerBytes:
    """The tensors' bytes per layer, summed once per model: as CUDA allocates them (GPU) and as
    stored (host), the routed experts apart (what --n-cpu-moe keeps in host memory), and each
    layer's largest matrix (what the GPU copies in when that layer runs on the CPU)."""

    gpu: tuple[int, ...]  # index n_layer: the output layer
    host: tuple[int, ...]
    experts_gpu: tuple[int, ...]
    experts_host: tuple[int, ...]
    largest: tuple[int, ...]
    largest_expert: tuple[int, ...]
    input_bytes: int  # token embeddings and what else has no layer: host memory always
    input_largest: int
    repack: tuple[int, ...] = ()  # the layer's matrices the CPU repacks (`repacked`)
    repack_experts: tuple[int, ...] = ()


#: The types llama.cpp's CPU backend repacks on x86-64 with AVX2 when it runs without a GPU
#: (ggml/src/ggml-cpu/repack.cpp
#: ggml_repack_get_optimal_repack_type, b11312: Q4_0, Q4_K, IQ4_NL and MXFP4 matrices of a multiple
#: of 8 rows; Q2_K needs AVX-512; ARM repacks more types, not modelled here), into an allocated
#: CPU_REPACK buffer beside the mapped file, for the matrices a matmul reads (not token_embd, read by
#: get_rows). Checked: the five fixtures' CPU_REPACK sizes on a b11312 CPU build (bench/llamacpp_cpu.sh)
#: are these tensors' bytes exactly (Llama-3.1-8B Q4_K_M 3204.00 MiB, gpt-oss-20b 9682.03 MiB).
REPACKED_AVX2 = frozenset({2, 12, 20, 39})  # Q4_0, Q4_K, IQ4_NL, MXFP4


def repacked(t: GGUFTensor) -> bool:
    return (t.type in REPACKED_AVX2 and len(t.shape) > 1 and t.shape[1] % 8 == 0
            and not t.name.startswith("token_embd"))


def layer_bytes(m: LlamaModel) -> LayerBytes:
    n = m.n_layer + 1
    gpu, host, eg, eh, big, big_e = [0] * n, [0] * n, [0] * n, [0] * n, [0] * n, [0] * n
    rp, rpe = [0] * n, [0] * n
    inp = inp_big = 0
    for t in m.tensors:
        il = tensor_layer(t.name, m.n_layer)
        if il < 0:
            inp += t.nbytes
            inp_big = max(inp_big, t.nbytes)
            continue
        gpu[il] += gpu_alloc_bytes(t)
        host[il] += t.nbytes
        if len(t.shape) > 1:
            big[il] = max(big[il], t.nbytes)
        if repacked(t):
            rp[il] += t.nbytes
        if _EXPERTS_RE.match(t.name):
            eg[il] += gpu_alloc_bytes(t)
            eh[il] += t.nbytes
            big_e[il] = max(big_e[il], t.nbytes)
            if repacked(t):
                rpe[il] += t.nbytes
    emb = next((t for t in m.tensors if t.name == "token_embd.weight"), None)
    if emb is not None and not any(t.name == "output.weight" for t in m.tensors):
        # Tied embeddings: llama.cpp loads token_embd a second time as the output layer's matrix
        # (src/llama-model.cpp: create_tensor(TOKEN_EMBD, TENSOR_DUPLICATED) where output.weight is
        # absent), in the output layer's buffer: on the GPU a copy, on the CPU the same mapped bytes.
        gpu[m.n_layer] += gpu_alloc_bytes(emb)
        big[m.n_layer] = emb.nbytes
    return LayerBytes(tuple(gpu), tuple(host), tuple(eg), tuple(eh), tuple(big), tuple(big_e), inp, inp_big,
                      tuple(rp), tuple(rpe))


@dataclass(frozen=True)
class LlamaCppEstimate:
    model: LlamaModel
    settings: LlamaCppSettings
    kv: KVLayout
    placement: Placement
    model_bytes: int  # every tensor, as stored

    def to_dict(self) -> dict[str, Any]:
        p = self.placement
        return {
            "engine": "llama.cpp", "rules": RULES_SOURCE, "n_gpu_layers": p.n_gpu_layers,
            "layers": self.model.n_layer + 1, "n_cpu_moe": self.settings.n_cpu_moe,
            "ctx_size": self.kv.n_ctx, "parallel": self.settings.parallel,
            "ubatch_size": min(self.settings.ubatch_size, self.settings.batch_size, self.kv.n_ctx),
            "gpu": {"model_bytes": p.model_gpu, "kv_bytes": p.kv_gpu, "compute_bytes": p.compute_gpu,
                    "total_bytes": p.gpu_bytes},
            "host": {"model_bytes": p.model_host, "repack_bytes": p.repack_host, "kv_bytes": p.kv_host,
                     "compute_bytes": p.compute_host, "total_bytes": p.host_bytes},
            "kv_cache": self.kv.to_dict(),
        }


def estimate(m: LlamaModel, s: LlamaCppSettings, *, gpu: bool = True, layers: LayerBytes | None = None,
             kv: KVLayout | None = None) -> LlamaCppEstimate:
    """Bytes per place at the settings' --n-gpu-layers (None: every layer on the GPU), each layer's
    KV on the device of its layer (llama.cpp's --kv-offload default)."""
    layers = layers or layer_bytes(m)
    kv = kv or kv_layout(m, s)
    start, ngl = offloaded_layers(m.n_layer, s.n_gpu_layers) if gpu else (m.n_layer + 1, 0)
    if s.n_cpu_moe and not m.is_moe:
        s = replace(s, n_cpu_moe=0)  # a dense model has no experts to keep on the CPU
    model_gpu = model_host = repack = 0
    ffn_copy = 0
    for il in range(m.n_layer + 1):
        if il >= start:
            moved = il < s.n_cpu_moe
            model_gpu += layers.gpu[il] - (layers.experts_gpu[il] if moved else 0)
            model_host += layers.experts_host[il] if moved else 0
            if moved:
                ffn_copy = max(ffn_copy, layers.largest_expert[il])
                repack += layers.repack_experts[il] if layers.repack_experts else 0
        else:
            model_host += layers.host[il]
            repack += layers.repack[il] if layers.repack else 0
            if il < m.n_layer:
                ffn_copy = max(ffn_copy, layers.largest[il])
    model_host += layers.input_bytes
    kv_gpu = sum(kv.layer_bytes(il) for il in range(m.n_layer) if il >= start)
    attn_copy = max((kv.layer_bytes(il) for il in range(min(start, m.n_layer))), default=0)
    out_copy = layers.largest[m.n_layer] if start > m.n_layer else 0
    compute_gpu, compute_host = compute_buffers(m, kv, s, layers_on_gpu=ngl, copies=(attn_copy, ffn_copy, out_copy))
    # With a GPU, the CPU's weights go to the GPU backend's host buffer type, listed before the
    # repacked one (src/llama-model.cpp make_cpu_buft_list): only a run without a GPU repacks.
    devices: tuple[int, ...] = ()
    if gpu and len(s.tensor_split) > 1 and ngl:
        devices, compute_gpu = _split_devices(m, s, layers, kv, start, ngl)
    placement = Placement(ngl, model_gpu, model_host, kv_gpu, kv.bytes - kv_gpu, compute_gpu, compute_host,
                          repack if s.repack and not gpu else 0, devices)
    return LlamaCppEstimate(m, s, kv, placement, sum(layers.host) + layers.input_bytes)


def layer_devices(n_layer: int, split: Sequence[float], start: int, ngl: int) -> list[int]:
    """The GPU of each layer (index n_layer: the output layer; -1: the CPU) with --split-mode layer:
    src/llama-model.cpp load_tensors, b11312: the split's cumulative shares, and for a layer on the
    GPUs the first whose share passes (il - i_gpu_start) / n_gpu_layers (std::upper_bound)."""
    total = sum(split)
    cuts, acc = [], 0.0
    for share in split:
        acc += share
        cuts.append(acc / total)
    out = []
    for il in range(n_layer + 1):
        if il < start:
            out.append(-1)
            continue
        x = (il - start) / ngl
        out.append(min(next((d for d, c in enumerate(cuts) if c > x), len(cuts) - 1), len(cuts) - 1))
    return out


def _split_devices(m: LlamaModel, s: LlamaCppSettings, layers: LayerBytes, kv: KVLayout, start: int,
                   ngl: int) -> tuple[tuple[int, ...], int]:
    """Each GPU's model + KV + compute bytes for a layer split, and the compute buffers' sum: a GPU
    reserves the phases of its own layers, the one with the output layer the logits too. (With every
    layer on the GPUs llama.cpp also pipelines: 4 copies of the inputs, a few MiB, not counted.)"""
    where = layer_devices(m.n_layer, s.tensor_split, start, ngl)
    n = len(s.tensor_split)
    model, cache = [0] * n, [0] * n
    for il, d in enumerate(where):
        if d < 0:
            continue
        moved = il < s.n_cpu_moe and il < m.n_layer
        model[d] += layers.gpu[il] - (layers.experts_gpu[il] if moved else 0)
        if il < m.n_layer:
            cache[d] += kv.layer_bytes(il)
    out_dev = where[m.n_layer]
    compute = [0] * n
    for d in range(n):
        if model[d] or d == out_dev:
            compute[d] = compute_buffers(m, kv, s, layers_on_gpu=ngl, output=d == out_dev)[0]
    return tuple(model[d] + cache[d] + compute[d] for d in range(n)), sum(compute)


def row_settings(s: LlamaCppSettings) -> LlamaCppSettings:
    """The settings a repo's quantizations are compared at: every layer on the GPU, at -c, or where
    none was given at --fit-ctx (the shortest context llama.cpp's fit shortens to: a file that fits
    there runs, --fit choosing how long a context)."""
    streams = 1 if s.kv_unified else max(1, s.parallel)
    return replace(s, ctx_size=s.ctx_size if s.ctx_size is not None else FIT_CTX * streams, n_gpu_layers=None,
                   n_cpu_moe=0)


def pick_file(m: LlamaModel, s: LlamaCppSettings, files: Sequence[GGUFFile], budget: int) -> GGUFFile | None:
    """The largest file whose every layer fits `budget` at `row_settings`, else the smallest; the
    weights of each from its size (`file_gpu_bytes`), the rest from the model read."""
    sized = [f for f in files if f.bytes and not f.projector and not f.missing]
    if not sized:
        return None
    rs = row_settings(s)
    full = estimate(m, rs)
    total = budget * max(1, len(s.tensor_split))  # (a split's GPUs together)
    fitting = [f for f in sized if f.bytes and file_gpu_bytes(m, rs, f.bytes, full=full) <= total]
    return max(fitting, key=lambda f: f.bytes or 0) if fitting else min(sized, key=lambda f: f.bytes or 0)


def file_gpu_bytes(m: LlamaModel, s: LlamaCppSettings, file_bytes: int, *, full: LlamaCppEstimate | None = None) -> int:
    """Another quantization of the same model with every layer on the GPU, from its file's size:
    the weights in the share this model's file keeps on the GPU (all but the token embeddings),
    the KV cache and compute buffers as this model's (they do not depend on the weights' type)."""
    full = full or estimate(m, replace(s, n_gpu_layers=None, n_cpu_moe=0))
    share = full.placement.model_gpu / max(1, full.model_bytes)
    return int(file_bytes * share) + full.placement.kv_gpu + full.placement.compute_gpu


#: What a discrete GPU does not have free when llama.cpp loads a model on an idle card: its CUDA
#: context and the driver's reservations. Measured: an RTX 3070 (nvidia-smi 8192 MiB) logged
#: "using device CUDA0 (NVIDIA GeForce RTX 3070) - 7672 MiB free" at b6699
#: (https://github.com/ikawrakow/ik_llama.cpp/issues/822, the mainline log); a desktop on the card
#: takes more (an RTX 3060 12GB logged 10958 MiB free). llama.cpp's --fit measures this free memory.
CUDA_NOT_FREE_BYTES = 520 * MIB


def device_free_bytes(vendor: str, memory_bytes: int) -> int:
    """The free memory llama.cpp's --fit starts from on an idle device: a GPU's total less its
    context; a Mac's Metal working set whole (an M4 16 GB logged "using device Metal (Apple M4) -
    10922 MiB free", its recommendedMaxWorkingSetSize: ggml-org/ci, build 4862)."""
    return memory_bytes if vendor == "apple" else max(0, memory_bytes - CUDA_NOT_FREE_BYTES)


# --- where it fits -----------------------------------------------------------------------------------



@dataclass(frozen=True)
class DeviceFit:
    """One GPU (or unified-memory Mac): what llama.cpp's --fit would run with on it."""

    device: str
    budget_bytes: int  # the device's free memory less --fit-target
    estimate: LlamaCppEstimate  # at the context, layers and experts the fit chose
    all_layers: bool  # every layer, its experts and its KV on the device, within the budget
    longest_ctx: int | None  # the longest -c with every layer on the device (None: not even 256)

    @property
    def fits(self) -> bool:
        return self.all_layers

    def to_dict(self) -> dict[str, Any]:
        p = self.estimate.placement
        return {"gpu": self.device, "devices": max(1, len(self.estimate.settings.tensor_split)),
                "per_device_bytes": list(p.device_bytes) or [p.gpu_bytes],
                "budget_bytes": self.budget_bytes, "all_layers_on_gpu": self.all_layers,
                "ctx_size": self.estimate.kv.n_ctx, "n_gpu_layers": p.n_gpu_layers,
                "layers": self.estimate.model.n_layer + 1, "n_cpu_moe": self.estimate.settings.n_cpu_moe,
                "gpu_bytes": p.gpu_bytes, "host_bytes": p.host_bytes, "longest_ctx_size": self.longest_ctx}


def fit_device(m: LlamaModel, s: LlamaCppSettings, device: str, free_bytes: int,
               layers: LayerBytes | None = None) -> DeviceFit:
    """What llama.cpp's --fit (on by default since ~b74xx; common/fit.cpp common_params_fit_impl at
    b11312) runs with on one device, changing only what the user left at its default:
      1. everything at -c (default: the training context) within memory - --fit-target: done;
      2. no -c given: the context, interpolated between --fit-ctx (4096) and the training context
         by the memory left, rounded down to 256: done if every layer then fits;
      3. at --fit-ctx: an MoE's experts go to host memory, the first layers' first (hfmem counts it
         as --n-cpu-moe; the fit writes the same as -ot patterns), else the first layers go whole.
    A user's -ngl or --n-cpu-moe stands (llama.cpp's fit then only shortens the context)."""
    layers = layers or layer_bytes(m)
    budget = max(0, free_bytes - s.fit_target_mib * MIB)
    longest = longest_ctx(m, s, budget, layers)
    train = pad(m.n_ctx_train or FIT_CTX, N_CTX_PAD)

    def at(ctx: int | None, **change: Any) -> LlamaCppEstimate:
        return estimate(m, replace(s, ctx_size=ctx, **change), layers=layers)

    def result(e: LlamaCppEstimate) -> DeviceFit:
        whole = (e.placement.n_gpu_layers == m.n_layer + 1 and not e.settings.n_cpu_moe
                 and e.placement.peak_device_bytes <= budget)
        return DeviceFit(device, budget, e, whole, longest)

    if s.n_cpu_moe and not m.is_moe:
        s = replace(s, n_cpu_moe=0)
    user_placed = s.n_gpu_layers is not None or s.n_cpu_moe > 0
    ctx = s.ctx_size
    full = at(ctx, n_gpu_layers=s.n_gpu_layers, n_cpu_moe=s.n_cpu_moe)
    if full.placement.peak_device_bytes <= budget:
        return result(full)
    streams = 1 if s.kv_unified else max(1, s.parallel)
    top, floor, step = train * streams, FIT_CTX * streams, N_CTX_PAD * streams  # common/fit.cpp: per stream
    if s.ctx_size is None and top > floor:
        low = at(floor, n_gpu_layers=s.n_gpu_layers, n_cpu_moe=s.n_cpu_moe)
        lo, hi = low.placement.peak_device_bytes, full.placement.peak_device_bytes
        if budget > lo:
            n = floor + (top - floor) * (budget - lo) // max(1, hi - lo)
            n = max(n - n % step, floor)
            # Memory is linear in -c but for sliding-window caches, which stop growing: where the
            # interpolation overshoots, step down (llama.cpp measures the result the same way).
            placed = {"n_gpu_layers": s.n_gpu_layers, "n_cpu_moe": s.n_cpu_moe}
            while n > floor and at(n, **placed).placement.peak_device_bytes > budget:
                n -= step
            return result(at(n, n_gpu_layers=s.n_gpu_layers, n_cpu_moe=s.n_cpu_moe))
        ctx = floor
    if user_placed:
        return result(at(ctx, n_gpu_layers=s.n_gpu_layers, n_cpu_moe=s.n_cpu_moe))
    if m.is_moe and at(ctx, n_cpu_moe=m.n_layer).placement.peak_device_bytes <= budget:
        lo_n, hi_n = 1, m.n_layer  # the fewest layers whose experts stay in host memory
        while lo_n < hi_n:
            mid = (lo_n + hi_n) // 2
            if at(ctx, n_cpu_moe=mid).placement.peak_device_bytes <= budget:
                hi_n = mid
            else:
                lo_n = mid + 1
        return result(at(ctx, n_cpu_moe=lo_n))
    # The most layers that fit (n_layer + 1 did not); an MoE's keep their experts in host memory
    # (common/fit.cpp step 3: the layers it fills are "dense-only").
    experts = m.n_layer if m.is_moe else 0
    lo_l, hi_l = 0, m.n_layer
    while lo_l < hi_l:
        mid = (lo_l + hi_l + 1) // 2
        if at(ctx, n_gpu_layers=mid, n_cpu_moe=experts).placement.peak_device_bytes <= budget:
            lo_l = mid
        else:
            hi_l = mid - 1
    return result(at(ctx, n_gpu_layers=lo_l, n_cpu_moe=experts))


def longest_ctx(m: LlamaModel, s: LlamaCppSettings, budget: int, layers: LayerBytes | None = None) -> int | None:
    """The longest -c (a multiple of 256, up to the training context) with every layer on the device."""
    layers = layers or layer_bytes(m)
    streams = 1 if s.kv_unified else max(1, s.parallel)
    top = max(N_CTX_PAD, pad(m.n_ctx_train or FIT_CTX, N_CTX_PAD)) * streams

    def fits(n_ctx: int) -> bool:
        t = replace(s, ctx_size=n_ctx, n_gpu_layers=None, n_cpu_moe=0)
        return estimate(m, t, layers=layers).placement.peak_device_bytes <= budget

    if not fits(N_CTX_PAD):
        return None
    lo, hi = 1, top // N_CTX_PAD
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid * N_CTX_PAD):
            lo = mid
        else:
            hi = mid - 1
    return lo * N_CTX_PAD
