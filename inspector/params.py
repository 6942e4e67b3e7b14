"""Exact parameter counts from tensor tables.

Three numbers, as shared/DESIGN.md defines them:
- `total_params`: the model's parameters. Packed quantized weights count as the logical weights
  they hold; quantization scales, zeros and group indices are not parameters; neither are the
  non-parameter buffers some checkpoints carry (rotary `inv_freq`, GPT-2's causal masks).
- `stored_elements`: every element in the files (what the Hub's API reports as its count).
- `weights_bytes`: every byte of tensor data in the files (an index's `metadata.total_size`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .checkpoint import Checkpoint, is_safe_filename
from .errors import ConfigError
from .header import DTYPE_BITS, Header, TensorInfo


class TensorKind(str, Enum):
    PARAMETER = "parameter"
    BUFFER = "buffer"  # non-parameter state saved with the weights
    QUANT_AUX = "quantization"  # scales, zeros, group indices, quant maps


@dataclass(frozen=True)
class FileCount:
    """Counts for one weight file."""

    file: str
    params: int
    stored_elements: int
    tensor_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "parameters": self.params,
            "stored_elements": self.stored_elements,
            "bytes": self.tensor_bytes,
        }


@dataclass(frozen=True)
class ParameterCount:
    """Exact counts over all weight files. `derived` is true when no header could be read and the
    count was computed from file sizes and the config's dtype (PyTorch .bin checkpoints)."""

    total_params: int
    by_dtype_params: Mapping[str, int]
    stored_elements: int
    stored_by_dtype_elements: Mapping[str, int]
    weights_bytes: int
    buffer_elements: int
    quantization_elements: int
    files: tuple[FileCount, ...]
    quant_method: str | None = None
    derived: bool = False
    derived_note: str | None = None
    weights: WeightInventory | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total_params,
            "by_dtype": dict(self.by_dtype_params),
            "stored_elements": self.stored_elements,
            "stored_by_dtype": dict(self.stored_by_dtype_elements),
            "buffers": self.buffer_elements,
            "quantization_elements": self.quantization_elements,
            "derived": self.derived,
        }


@dataclass(frozen=True)
class WeightInventory:
    """What the memory estimate needs from the tensor tables.

    `linear_params`: the logical elements of the decoder blocks' linear weights, the ones a "what
    if" precision quantizes (shared/DESIGN.md); everything else (embeddings, lm_head, norms, biases,
    routers, vision towers) stays 16-bit. `linear_groups`: their groups of 128 along the input dim
    (rows x ceil(cols / 128)); `linear_blocks`: their 128x128 blocks. `expert_params`: routed-expert
    parameters (shared experts excluded) and `num_experts` how many experts a MoE layer holds, both
    read from the tensor names. `loaded_bytes`: the bytes a serving engine loads (parameters,
    scales and zeros; buffers such as rotary caches and causal masks are rebuilt, not loaded).
    `mtp_params`: DeepSeek's multi-token-prediction layers (`num_nextn_predict_layers`, stored after
    the last decoder layer), which vLLM loads only for speculative decoding: they are parameters of
    the checkpoint but are left out of every other field here. `tied_head_params` / `_bytes`: an
    `lm_head.weight` stored although the config ties it to the embeddings (Qwen3-0.6B's file has
    one); vLLM's loaders skip it (vllm/model_executor/models/qwen3.py, llama.py: AutoWeightsLoader
    skip_prefixes ["lm_head."] when tie_word_embeddings), so it is not in `loaded_bytes`.
    """

    linear_params: int
    linear_groups: int
    linear_blocks: int
    expert_params: int
    num_experts: int
    loaded_bytes: int
    mtp_params: int = 0
    tied_head_params: int = 0
    tied_head_bytes: int = 0


@dataclass(frozen=True)
class QuantScheme:
    """How a quantized checkpoint stores its weights (from its quantization config)."""

    method: str
    bits: int | None = None
    bnb_4bit_type: str | None = None  # "nf4" | "fp4"


def quant_scheme(qc: Mapping[str, Any] | None) -> QuantScheme | None:
    """Read the method and bit width from a quantization config (config.json's
    `quantization_config`, or AutoGPTQ's quantize_config.json which has no `quant_method`)."""
    if not qc:
        return None
    method = str(qc.get("quant_method") or "").lower()
    if not method and "bits" in qc and "group_size" in qc:
        method = "gptq"
    if not method:
        return None
    bits = qc.get("bits", qc.get("w_bit"))
    if method == "bitsandbytes":
        four = qc.get("load_in_4bit") or qc.get("_load_in_4bit")
        return QuantScheme(method, 4 if four else 8, str(qc.get("bnb_4bit_quant_type", "fp4")) if four else None)
    if method == "compressed-tensors":
        # compressed-tensors: config_groups.<group>.weights.num_bits (4 for packed int4 "W4A16")
        groups = qc.get("config_groups")
        for group in groups.values() if isinstance(groups, dict) else ():
            weights = group.get("weights") if isinstance(group, dict) else None
            if isinstance(weights, dict) and type(weights.get("num_bits")) is int:
                bits = weights["num_bits"]
                break
    if bits is not None and (type(bits) is not int or not 1 <= bits <= 32):  # `type is`: no bool
        raise ConfigError(f"quantization config: bits must be an integer from 1 to 32, got {bits!r}")
    return QuantScheme(method, bits)


# Rotary caches, GPT-2/GPT-J/GPT-NeoX causal masks, BERT-style position ids: state_dict buffers
# that older transformers versions saved with the weights.
_BUFFER_SUFFIXES = (".inv_freq", ".masked_bias", ".position_ids", "._float_tensor")
_MASK_NAMES = re.compile(r"(^|\.)(attn|attention)\.bias$")
_QUANT_AUX_SUFFIXES = {
    "gptq": (".qzeros", ".scales", ".g_idx"),  # and padding biases, see is_gptq_padding_bias
    "awq": (".qzeros", ".scales"),
    # (`_scale_inv`: fused MoE experts store `experts.gate_up_proj_scale_inv` beside `gate_up_proj`)
    "fp8": (".weight_scale_inv", "_scale_inv", ".weight_scale", ".input_scale", ".k_scale", ".v_scale"),
    "compressed-tensors": (
        ".weight_scale", ".weight_zero_point", ".weight_g_idx", ".weight_shape", ".input_scale",
        ".weight_global_scale", ".input_global_scale", ".k_scale", ".v_scale",
    ),
    "mxfp4": ("_scales",),
    "bitsandbytes": (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".SCB", ".weight_format"),
}


# AutoGPTQ's make_quant builds every QuantLinear with bias=True (auto_gptq/utils/import_utils +
# nn_modules/qlinear), so GPTQ checkpoints of bias-free architectures store an all-zero F16 bias per
# quantized linear. Those are padding, not the model's parameters. Which Llama-style projections
# really have a bias is in the config: `attention_bias` / `mlp_bias` (LlamaConfig), and Qwen2's
# q/k/v projections always have one (Qwen2Attention: bias=True for q/k/v only).
_LLAMA_STYLE_BIAS = re.compile(r"\.(self_attn\.(?P<attn>[qkvo])_proj|mlp\.(?P<mlp>gate|up|down)_proj)\.bias$")
_QKV_BIAS_MODEL_TYPES = ("qwen2", "qwen2_moe", "qwen2_vl", "qwen2_5_vl")


def is_gptq_padding_bias(name: str, config: Mapping[str, Any]) -> bool:
    """True for the all-zero bias AutoGPTQ stores beside a quantized linear that has none.

    >>> is_gptq_padding_bias("model.layers.0.mlp.down_proj.bias", {"model_type": "llama"})
    True
    """
    m = _LLAMA_STYLE_BIAS.search(name)
    if not m:
        return False
    if m["mlp"]:
        return not config.get("mlp_bias", False)
    if config.get("attention_bias", False):
        return False
    return not (m["attn"] in "qkv" and config.get("model_type") in _QKV_BIAS_MODEL_TYPES)


def classify(t: TensorInfo, scheme: QuantScheme | None,
             config: Mapping[str, Any] | None = None) -> tuple[TensorKind, int, str]:
    """(kind, logical parameters, dtype label) of one tensor.

    >>> classify(TensorInfo("h.0.attn.bias", "F32", (1, 1, 4, 4), 0, 64), None)[0]
    <TensorKind.BUFFER: 'buffer'>
    """
    name = t.name
    if name.endswith(_BUFFER_SUFFIXES):
        return TensorKind.BUFFER, 0, t.dtype
    # A causal mask [1, 1, n, n] registered as `attn.bias`; GPT-2's real bias is `attn.c_attn.bias`.
    shape = t.shape
    if name.endswith("bias") and _MASK_NAMES.search(name) and len(shape) == 4 and shape[:2] == (1, 1) \
            and shape[2] == shape[3]:
        return TensorKind.BUFFER, 0, t.dtype
    if scheme is None:
        if name.endswith("_scale_inv"):  # DeepSeek-style FP8 (fused experts too) without a readable config
            return TensorKind.QUANT_AUX, 0, t.dtype
        return TensorKind.PARAMETER, t.elements, t.dtype
    method = scheme.method
    aux = _QUANT_AUX_SUFFIXES.get(method, ())
    if method == "bitsandbytes" and ".quant_state." in name:
        return TensorKind.QUANT_AUX, 0, t.dtype
    if name.endswith(aux):
        return TensorKind.QUANT_AUX, 0, t.dtype
    bits = scheme.bits or 4
    if method == "gptq" and is_gptq_padding_bias(name, config or {}):
        return TensorKind.QUANT_AUX, 0, t.dtype
    if method in ("gptq", "awq") and name.endswith(".qweight"):
        # GPTQ packs 32/bits weights into each int32 along the input dim, AWQ along the output dim.
        return TensorKind.PARAMETER, t.elements * DTYPE_BITS[t.dtype] // bits, f"INT{bits}"
    if method == "compressed-tensors" and name.endswith(".weight_packed"):
        return TensorKind.PARAMETER, t.elements * DTYPE_BITS[t.dtype] // bits, f"INT{bits}"
    if method == "mxfp4" and name.endswith("_blocks"):
        # OCP MX: FP4 (E2M1) elements, two per byte, with an E8M0 scale per block of 32.
        return TensorKind.PARAMETER, t.elements * DTYPE_BITS[t.dtype] // 4, "MXFP4"
    if method == "bitsandbytes" and scheme.bits == 4 and t.dtype == "U8" and len(t.shape) <= 2:
        # bitsandbytes Params4bit: two 4-bit codes per uint8, shape [n/2, 1]; its quant_state
        # tensors sit beside it. Other uint8 tensors (none in practice) would be miscounted.
        return TensorKind.PARAMETER, t.elements * 2, (scheme.bnb_4bit_type or "fp4").upper()
    return TensorKind.PARAMETER, t.elements, t.dtype


@dataclass(frozen=True)
class CountContext:
    """What counting a tensor depends on besides the tensor itself: the quantization scheme, the
    config's bias flags (GPTQ's padding biases) and the first multi-token-prediction layer. A
    file's tally is reused only under an equal context."""

    scheme: QuantScheme | None
    bias_config: tuple[tuple[str, Any], ...]
    first_mtp: int | None

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.bias_config)


_BIAS_KEYS = ("model_type", "attention_bias", "mlp_bias")


def count_context(config: Mapping[str, Any], quantization_config: Mapping[str, Any] | None) -> CountContext:
    """The context of a checkpoint's counts (ConfigError for an unreadable quantization config)."""
    mtp = config.get("num_nextn_predict_layers")
    first_mtp = config.get("num_hidden_layers") if isinstance(mtp, int) and mtp > 0 else None
    bias = tuple((k, config[k]) for k in _BIAS_KEYS if k in config)
    return CountContext(quant_scheme(quantization_config), bias,
                        first_mtp if isinstance(first_mtp, int) else None)


class FileTally:
    """One weight file's counts, accumulated tensor by tensor; tallies of several files merge.
    The Hub reader tallies each shard as its header arrives, while other reads are in flight."""

    def __init__(self, context: CountContext) -> None:
        self.context = context
        self.params = self.elements = self.data_bytes = 0
        self.by_dtype: Counter[str] = Counter()
        self.stored_by_dtype: Counter[str] = Counter()
        self.buffers = self.buffer_bytes = self.quant = 0
        self.linear = self.groups = self.blocks = self.experts = self.mtp = self.mtp_bytes = 0
        self.expert_ids: set[tuple[str, int]] = set()
        self.fused_experts = 0

    @classmethod
    def of(cls, header: Header, context: CountContext, *, grouped: bool = True) -> FileTally:
        """A file's tally. Tensors whose names differ only in their numbers (layer, expert) and
        that share a dtype and shape count alike, but for the numbers themselves (which layer is a
        multi-token-prediction one, which expert this is): each such group is classified once, on
        its first tensor, and added up by count. DeepSeek-V3's 92,000 tensors form a few hundred
        groups; classifying each tensor took ~5 us, half of a worker's time. With `grouped` off,
        each tensor is its own group (`of_each`, the reference the grouping is tested against)."""
        tally = cls(context)
        scheme, config, first_mtp = context.scheme, context.config, context.first_mtp
        groups: dict[tuple[str, str, tuple[int, ...]], _Group] = {}
        counts: Counter[tuple[_Group, bool]] = Counter()
        expert_ids = tally.expert_ids
        # Digits masked: a group's names differ only in their numbers, digit for digit, so each
        # number sits at the same place in all of them. Masked all at once (1.5 us a name one by one).
        tensors = header.tensors
        if not grouped:  # names are unique in a header: one group a tensor
            masked = [t.name for t in tensors]
        else:
            masked = "\n".join([t.name for t in tensors]).translate(_MASK_DIGITS).split("\n")
            if len(masked) != len(tensors):  # a name with a line break in it
                masked = [t.name.translate(_MASK_DIGITS) for t in tensors]
        for t, template in zip(tensors, masked, strict=True):
            name = t.name
            key = (template, t.dtype, t.shape)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(t, scheme, config)
            mtp = first_mtp is not None and group.layer is not None and int(name[group.layer]) >= first_mtp
            counts[group, mtp] += 1
            if group.expert is not None and not mtp:
                expert_ids.add((name[: group.prefix], int(name[group.expert])))
        for (group, mtp), n in counts.items():
            tally._add_group(group, mtp, n)
        tally.data_bytes = header.data_bytes
        return tally

    @classmethod
    def of_each(cls, header: Header, context: CountContext) -> FileTally:
        """The same tally, each tensor classified on its own (the reference for `of`)."""
        return cls.of(header, context, grouped=False)

    def _add_group(self, g: _Group, mtp: bool, n: int) -> None:
        """Add n tensors of one group (`mtp`: in a multi-token-prediction layer, not the model's)."""
        elements, nbytes = g.elements * n, g.nbytes * n
        self.stored_by_dtype[g.dtype] += elements
        self.elements += elements
        if g.kind is TensorKind.PARAMETER:
            logical = g.logical * n
            self.by_dtype[g.label] += logical
            self.params += logical
            if mtp:
                self.mtp += logical
                self.mtp_bytes += nbytes
                return
            if g.is_expert:
                self.experts += logical
                self.fused_experts = max(self.fused_experts, g.fused)
            if g.linear:
                self.linear += logical
                self.groups += g.groups * n
                self.blocks += g.blocks * n
        elif mtp:
            self.mtp_bytes += nbytes
        elif g.kind is TensorKind.BUFFER:
            self.buffers += elements
            self.buffer_bytes += nbytes
        else:
            self.quant += elements


_MASK_DIGITS = str.maketrans("0123456789", "##########")


class _Group:
    """How any tensor of a group counts (the same name digit for digit but
    for the digits' values, the same dtype and shape), worked out on its first tensor. `layer` and
    `expert` are the slices of the name that hold its layer and expert numbers (None: none), `prefix`
    the length of what precedes `.experts.`."""

    __slots__ = ("dtype", "elements", "nbytes", "kind", "logical", "label", "layer", "expert", "prefix",
                 "is_expert", "fused", "linear", "groups", "blocks")

    def __init__(self, t: TensorInfo, scheme: QuantScheme | None, config: Mapping[str, Any]) -> None:
        name = t.name
        self.dtype, self.elements, self.nbytes = t.dtype, t.elements, t.nbytes
        self.kind, self.logical, self.label = classify(t, scheme, config)
        m = _LAYER_INDEX.search(name)
        self.layer = slice(*m.span(1)) if m else None
        m = _EXPERT.search(name)
        self.is_expert = bool(m) and "shared_expert" not in name
        numbered = self.is_expert and m and m.group(1) and self.kind is TensorKind.PARAMETER
        self.expert = slice(m.start(1), m.end(1) - 1) if numbered and m else None
        self.prefix = m.start() if m else 0
        self.fused = t.shape[0] if self.is_expert and self.expert is None and len(t.shape) >= 2 else 0
        logical = self.logical
        self.linear = (name.endswith(_LINEAR_SUFFIXES) and bool(BLOCK.search(name)) and not _KEEP_16BIT.search(name)
                       and not (len(t.shape) < 2 and logical == t.elements))
        self.groups = self.blocks = 0
        if self.linear:
            rows, cols = logical_matrix(t, logical, scheme)
            self.groups = rows * -(-cols // _GROUP)
            self.blocks = -(-rows // _GROUP) * -(-cols // _GROUP)


def count_parameters(cp: Checkpoint, tallies: Mapping[str, FileTally] | None = None) -> ParameterCount:
    """Count a checkpoint's parameters, stored elements and bytes, in total and per file (from the
    `tallies` the reader made as headers arrived, when they were made in the same context)."""
    context = count_context(cp.config, cp.quantization_config)
    scheme = context.scheme
    if cp.plan.format == "pytorch":
        return _derived_count(cp, scheme)
    per_file: list[FileTally] = []
    for fname in cp.weight_files:
        tally = tallies.get(fname) if tallies else None
        per_file.append(tally if tally is not None and tally.context == context
                       else FileTally.of(cp.headers[fname], context))
    by_dtype: Counter[str] = Counter()
    stored_by_dtype: Counter[str] = Counter()
    expert_ids: set[tuple[str, int]] = set()
    for tally in per_file:
        by_dtype.update(tally.by_dtype)
        stored_by_dtype.update(tally.stored_by_dtype)
        expert_ids |= tally.expert_ids
    files = tuple(FileCount(f, t.params, t.elements, t.data_bytes) for f, t in zip(cp.weight_files, per_file,
                                                                                    strict=True))
    weights_bytes = sum(f.tensor_bytes for f in files)
    per_layer = Counter(prefix for prefix, _ in expert_ids)
    head_params, head_bytes = _tied_head(cp)
    loaded = weights_bytes - sum(t.buffer_bytes + t.mtp_bytes for t in per_file) - head_bytes
    return ParameterCount(
        total_params=sum(f.params for f in files),
        by_dtype_params=dict(sorted(by_dtype.items())),
        stored_elements=sum(f.stored_elements for f in files),
        stored_by_dtype_elements=dict(sorted(stored_by_dtype.items())),
        weights_bytes=weights_bytes,
        buffer_elements=sum(t.buffers for t in per_file),
        quantization_elements=sum(t.quant for t in per_file),
        files=files,
        quant_method=scheme.method if scheme else None,
        weights=WeightInventory(
            sum(t.linear for t in per_file), sum(t.groups for t in per_file), sum(t.blocks for t in per_file),
            sum(t.experts for t in per_file),
            max(per_layer.values(), default=0) or max((t.fused_experts for t in per_file), default=0),
            loaded, sum(t.mtp for t in per_file), head_params, head_bytes,
        ),
    )


def ties_embeddings(config: Mapping[str, Any]) -> bool:
    """Whether the config (or its text_config) says tie_word_embeddings: true. Only an explicit
    true counts: the default differs by model class."""
    text = config.get("text_config")
    return config.get("tie_word_embeddings") is True or (
        isinstance(text, dict) and text.get("tie_word_embeddings") is True)


def _tied_head(cp: Checkpoint) -> tuple[int, int]:
    """(params, bytes) of the `lm_head.weight` a checkpoint stores although its config (or its
    text_config) says tie_word_embeddings: true. Only an explicit true counts: the default differs
    by model class."""
    if not ties_embeddings(cp.config):
        return 0, 0
    params = nbytes = 0
    for header in cp.headers.values():
        for t in header.tensors:
            if t.name == "lm_head.weight" or t.name.endswith(".lm_head.weight"):
                params += t.elements
                nbytes += t.nbytes
    return params, nbytes


# The decoder stack: `model.layers.N.`, GPT-2's `h.N.`, T5's `block.N.`, Falcon/BLOOM's `h.N.`;
# group 1 is the layer's number.
BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks|block|layer)\.(\d+)\.")
# Not quantized by the "what if" rule: norms, embeddings and heads, convolutions, MoE routers,
# T5's relative position table, and everything in a vision tower or projector.
_KEEP_16BIT = re.compile(
    r"norm|embed|(^|\.)ln_|conv|lm_head|shared_head\.head|\.gate\.weight$|router|shared_expert_gate"
    r"|relative_attention_bias|vision|visual|multi_modal_projector|mm_projector"
)
_LINEAR_SUFFIXES = ("weight", "_proj", "_blocks", ".qweight", ".weight_packed")
_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_EXPERT = re.compile(r"\.experts\.(\d+\.)?")
_GROUP = 128  # shared/DESIGN.md: group size 128 along the input dim; FP8 blocks of 128x128


def logical_matrix(t: TensorInfo, logical: int, scheme: QuantScheme | None) -> tuple[int, int]:
    """(rows, cols) of the logical weight matrix a stored tensor holds; cols is the input dim.

    >>> logical_matrix(TensorInfo("q.qweight", "I32", (512, 4096), 0, 0), 4096 * 4096, QuantScheme("gptq", 4))
    (4096, 4096)
    """
    shape = t.shape
    method = scheme.method if scheme else None
    if method == "gptq" and t.name.endswith(".qweight") and len(shape) == 2:
        return shape[1], logical // shape[1]  # [in * bits / 32, out]
    if method == "awq" and t.name.endswith(".qweight") and len(shape) == 2:
        return logical // shape[0], shape[0]  # [in, out * bits / 32]
    if method == "mxfp4" and t.name.endswith("_blocks") and len(shape) >= 3:
        cols = shape[-2] * 32  # [..., out, in / 32, 16]: 32 FP4 values per block
        return logical // cols, cols
    if len(shape) < 2 or logical != t.elements and not t.name.endswith(".weight_packed"):
        return 1, logical  # bitsandbytes' flat [n / 2, 1] keeps no matrix shape
    cols = logical // _prod(shape[:-1])
    return logical // cols, cols


def _prod(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


# torch dtype names in config.json -> safetensors names and bits.
TORCH_DTYPES = {
    "float32": "F32", "float": "F32", "float16": "F16", "half": "F16", "bfloat16": "BF16",
    "float64": "F64", "int8": "I8", "uint8": "U8",
}


def _derived_count(cp: Checkpoint, scheme: QuantScheme | None) -> ParameterCount:
    """PyTorch .bin checkpoints have no header to read without downloading: derive the count from
    the bytes (the index's total_size, else the file sizes) and the config's dtype."""
    index = cp.index or {}
    metadata = index.get("metadata")
    total_size = metadata.get("total_size") if isinstance(metadata, dict) else None
    if cp.plan.index_file:
        weight_map = index.get("weight_map")
        names = weight_map.values() if isinstance(weight_map, dict) else ()
        if not all(isinstance(n, str) and is_safe_filename(n) for n in names):
            raise ConfigError(f"{cp.plan.index_file}: weight_map names a file that is not a plain file name")
        shards = sorted(set(names))
    else:
        shards = list(cp.plan.files)
    sizes = [cp.files.get(s) for s in shards]
    if isinstance(total_size, int) and total_size > 0:
        nbytes, how = total_size, f"{cp.plan.index_file} total_size"
    elif sizes and all(isinstance(s, int) for s in sizes):
        nbytes, how = sum(s for s in sizes if s), "the .bin file sizes"
    else:
        raise ConfigError(f"{cp.name}: PyTorch weights of unknown size")
    config = cp.config
    torch_dtype = config.get("torch_dtype") or config.get("dtype")
    if isinstance(torch_dtype, str) and torch_dtype.removeprefix("torch.") in TORCH_DTYPES:
        dtype, assumed = TORCH_DTYPES[torch_dtype.removeprefix("torch.")], ""
    else:
        dtype, assumed = "F32", " (no torch_dtype in config.json; float32 assumed)"
    elements = nbytes * 8 // DTYPE_BITS[dtype]
    note = f"derived from {how} at {dtype}{assumed}: no safetensors header to count from"
    per_file = [(s, (size or 0) * 8 // DTYPE_BITS[dtype], size or 0) for s, size in zip(shards, sizes, strict=True)]
    files = tuple(FileCount(s, n, n, size) for s, n, size in per_file)
    return ParameterCount(
        total_params=elements,
        by_dtype_params={dtype: elements},
        stored_elements=elements,
        stored_by_dtype_elements={dtype: elements},
        weights_bytes=nbytes,
        buffer_elements=0,
        quantization_elements=0,
        files=files,
        quant_method=scheme.method if scheme else None,
        derived=True,
        derived_note=note,
    )
