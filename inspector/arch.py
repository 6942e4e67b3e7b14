"""config.json -> Architecture: the shape of a model, with the attention kind of every layer.

A config is data, never code: `auto_map` and custom classes are ignored. Keys differ by family
(GPT-2's `n_layer`, Falcon's `multi_query`, ChatGLM's `kv_channels`, T5's `d_kv`), so each field is
read from an ordered list of aliases. Fields a config leaves out are filled from the defaults of
the transformers config class (the same values transformers itself would use), and every field
that had to be assumed is named in `Architecture.guessed`.

Per-layer kinds follow transformers' own `layer_types` rules (cited beside each), because vLLM
allocates its KV cache per layer kind (vllm/v1/kv_cache_interface.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import ConfigError


class LayerKind(str, Enum):
    """What a decoder layer keeps per sequence, in vLLM's terms."""

    FULL = "full_attention"  # K and V for every token
    SLIDING = "sliding_attention"  # K and V for the last `sliding_window` tokens
    CHUNKED = "chunked_attention"  # Llama 4: K and V within the current chunk
    MLA = "mla"  # DeepSeek: one compressed latent + rope key per token
    LINEAR = "linear_attention"  # Qwen3-Next gated DeltaNet: a fixed state per sequence
    MAMBA = "mamba"  # state-space layer: a fixed conv + SSM state per sequence
    NONE = "none"  # no sequence state (Nemotron-H MLP/MoE-only layers)


ATTENTION_KINDS = (LayerKind.FULL, LayerKind.SLIDING, LayerKind.CHUNKED, LayerKind.MLA)


@dataclass(frozen=True)
class StateDims:
    """A fixed-size recurrent state (Mamba 1/2 or gated DeltaNet), as vLLM's
    MambaStateShapeCalculator shapes it (vllm/model_executor/layers/mamba/mamba_utils.py)."""

    kind: str  # "mamba1" | "mamba2" | "gated_delta_net"
    conv_kernel: int
    conv_channels: int  # channels of the causal conv state, which holds conv_kernel - 1 steps
    ssm_elements: int  # elements of the recurrent (SSM / delta-rule) state

    @property
    def elements(self) -> int:
        return (self.conv_kernel - 1) * self.conv_channels + self.ssm_elements


@dataclass(frozen=True)
class Architecture:
    """The text (language) model of a config; multimodal configs keep their vision tower aside."""

    model_type: str
    architectures: tuple[str, ...]
    num_hidden_layers: int
    hidden_size: int
    intermediate_size: int | None
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int | None
    max_position_embeddings: int | None  # the model's own context length (None: the config has none)
    torch_dtype: str | None
    layer_kinds: tuple[LayerKind, ...]
    sliding_window: int | None = None
    attention_chunk_size: int | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    # DeepSeek V3.2's sparse-attention indexer (`index_topk` in the config): its key width per layer
    index_head_dim: int | None = None
    # KV heads of each layer when they differ (Nemotron-NAS block_configs): 0 for a layer without
    # attention; None when every attention layer has num_key_value_heads
    kv_heads_per_layer: tuple[int, ...] | None = None
    num_experts: int | None = None
    num_experts_per_tok: int | None = None
    num_shared_experts: int | None = None
    moe_intermediate_size: int | None = None
    state: StateDims | None = None
    encoder_layers: int = 0  # encoder-decoder: the decoder's layers also cross-attend the encoder output
    text_config_key: str | None = None  # "text_config" when the language model is nested
    has_vision: bool = False
    guessed: tuple[str, ...] = field(default=())
    # rope scaling as vLLM reads it for the context limit: (rope_type, factor, original_max_position)
    rope_scaling: tuple[str, float, int | None] | None = None
    model_max_length: int | None = None  # config.json's own override (Command-R), vLLM honours it

    @property
    def kind_counts(self) -> dict[str, int]:
        return {k.value: n for k, n in Counter(self.layer_kinds).items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "architectures": list(self.architectures),
            "num_hidden_layers": self.num_hidden_layers,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "torch_dtype": self.torch_dtype,
            "layer_kinds": self.kind_counts,
            "sliding_window": self.sliding_window,
            "attention_chunk_size": self.attention_chunk_size,
            "kv_lora_rank": self.kv_lora_rank,
            "index_head_dim": self.index_head_dim,
            "kv_heads_per_layer": list(self.kv_heads_per_layer) if self.kv_heads_per_layer else None,
            "qk_rope_head_dim": self.qk_rope_head_dim,
            "num_experts": self.num_experts,
            "num_experts_per_tok": self.num_experts_per_tok,
            "num_shared_experts": self.num_shared_experts,
            "moe_intermediate_size": self.moe_intermediate_size,
            "state": None if self.state is None else {
                "kind": self.state.kind, "conv_kernel": self.state.conv_kernel,
                "conv_channels": self.state.conv_channels, "ssm_elements": self.state.ssm_elements,
            },
            "encoder_layers": self.encoder_layers,
            "text_config": self.text_config_key,
            "vision": self.has_vision,
            "guessed": list(self.guessed),
        }


# Where multimodal configs nest their language model.
_TEXT_KEYS = ("text_config", "llm_config", "language_config")
_VISION_KEYS = ("vision_config", "visual", "vision_tower_config")

# Aliases, most specific first. Sources: the attribute_map / fields of transformers' config classes
# (GPT2Config: n_layer/n_head/n_embd/n_positions; BloomConfig: n_layer/n_head/n_embed; FalconConfig:
# num_kv_heads/multi_query; T5Config: d_model/d_kv/d_ff/num_heads/num_layers; ChatGLM's remote config:
# num_layers/kv_channels/multi_query_group_num/ffn_hidden_size/padded_vocab_size/seq_length).
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_HIDDEN = ("hidden_size", "n_embd", "n_embed", "d_model", "model_dim")
_HEADS = ("num_attention_heads", "n_head", "num_heads", "n_heads", "decoder_attention_heads")
_INTERMEDIATE = ("intermediate_size", "ffn_hidden_size", "n_inner", "d_ff", "ffn_dim")
_VOCAB = ("vocab_size", "padded_vocab_size", "n_vocab")
# shared/DESIGN.md's order, then the other keys vLLM's _get_and_verify_max_len reads
# (vllm/config/model.py: possible_keys), then Jamba's n_ctx.
_CONTEXT = ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length",
            "max_seq_len", "max_seq_length", "seq_len", "model_max_length", "n_ctx")
_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_EXPERTS_PER_TOK = ("num_experts_per_tok", "experts_per_token", "moe_top_k", "num_experts_per_token")

# Defaults of transformers' config classes for keys their Hub configs often leave out
# (transformers/models/<type>/configuration_<type>.py, read in transformers 5.23).
# Llava-1.5's text_config, for one, holds only max_position_embeddings/vocab_size and relies on
# LlamaConfig for the rest.
_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008,
              "num_attention_heads": 32, "max_position_embeddings": 2048, "vocab_size": 32000},
    "mistral": {"num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336,
                "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
                "vocab_size": 32000, "sliding_window": 4096},
    "falcon": {"max_position_embeddings": 2048},
    "gemma3_text": {"num_hidden_layers": 26, "hidden_size": 2304, "intermediate_size": 9216,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208,
                    "max_position_embeddings": 131072, "sliding_window": 4096, "sliding_window_pattern": 6},
    "qwen3_next": {"full_attention_interval": 4},
    "t5": {"num_heads": 8, "d_kv": 64, "num_layers": 6},
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: transformers, torch and vLLM hold these sizes in int64: a larger number is no real config, and
#: would only make the estimate's integers too large to print.
MAX_CONFIG_INT = 2**63 - 1
#: The per-layer table is built from num_hidden_layers; the deepest published models have a few
#: hundred layers. A bound keeps a hostile `"num_hidden_layers": 1e12` from exhausting memory.
MAX_LAYERS = 100_000


def _check_int(key: str, v: Any, *, positive: bool = False) -> int:
    low = 1 if positive else 0
    if not _is_int(v) or not low <= v <= MAX_CONFIG_INT:
        kind = "a positive" if positive else "a non-negative"
        raise ConfigError(f"config.json: {key} must be {kind} integer, got {_short(v)}")
    return int(v)


def _short(v: Any) -> str:
    """repr() of a config value, cut short: a message stays one readable line."""
    try:
        text = repr(v)
    except ValueError:  # an int past Python's 4300-digit limit (only from a dict, never from JSON)
        return "an integer too long to print"
    return text if len(text) <= 40 else text[:37] + "..."


class _Reader:
    """Reads fields from a text config (falling back to the outer config, then to class defaults)
    and remembers which fields were assumed."""

    def __init__(self, cfg: Mapping[str, Any], outer: Mapping[str, Any], model_type: str):
        self.cfg, self.outer, self.model_type = cfg, outer, model_type
        self.defaults = _CLASS_DEFAULTS.get(model_type, {})
        self.guessed: list[str] = []

    def raw(self, key: str) -> Any:
        if key in self.cfg:
            return self.cfg[key]
        return self.outer.get(key)

    def int(self, name: str, aliases: Sequence[str], *, required: bool = False,
            default: int | None = None, why: str = "", positive: bool = False) -> int | None:
        for key in aliases:
            v = self.raw(key)
            if v is None:
                continue
            return _check_int(key, v, positive=positive)
        for key in aliases:
            if key in self.defaults:
                self.guessed.append(f"{name}: {self.defaults[key]} (transformers' {self.model_type} default)")
                value: int | None = self.defaults[key]
                return value
        if default is not None:
            self.guessed.append(f"{name}: {default} ({why})" if why else f"{name}: {default}")
            return default
        if required:
            raise ConfigError(f"config.json has no {name} (looked for {', '.join(aliases)})")
        return None


def text_config(config: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    """The language model's config and the key it sits under (None when it is not nested)."""
    for key in _TEXT_KEYS:
        nested = config.get(key)
        if isinstance(nested, Mapping):
            return nested, key
    return config, None


def parse_architecture(config: Mapping[str, Any]) -> Architecture:
    """Read an Architecture from a config.json mapping.

    >>> a = parse_architecture({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12})
    >>> (a.num_hidden_layers, a.num_key_value_heads, a.head_dim, a.layer_kinds[0].value)
    (12, 12, 64, 'full_attention')
    """
    if not isinstance(config, Mapping):
        raise ConfigError("config.json is not a JSON object")
    cfg, nested_key = text_config(config)
    model_type = str(cfg.get("model_type") or config.get("model_type") or "")
    r = _Reader(cfg, config, model_type)
    archs = config.get("architectures") or cfg.get("architectures") or ()
    if model_type not in KNOWN_MODEL_TYPES:
        r.guessed.append(f"model_type {model_type or '(none)'!r} is not one hfmem knows: fields read by common aliases")

    pattern = cfg.get("hybrid_override_pattern")
    layers_default = len(pattern) if isinstance(pattern, str) else None
    layers = r.int("num_hidden_layers", _LAYERS, required=layers_default is None, default=layers_default,
                   positive=True)
    encoder_layers = 0
    if model_type in ("t5", "mt5", "umt5", "longt5") or cfg.get("is_encoder_decoder"):
        encoder_layers = layers or 0
        layers = r.int("num_decoder_layers", ("num_decoder_layers", "decoder_layers"), default=encoder_layers,
                       why="same as the encoder (T5Config)", positive=True)
    if not layers or layers > MAX_LAYERS:  # layers_default: an empty hybrid_override_pattern
        raise ConfigError(f"config.json: {layers} layers; hfmem reads models of 1 to {MAX_LAYERS:,} layers")
    hidden = r.int("hidden_size", _HIDDEN, required=True, positive=True)
    assert hidden is not None
    if model_type in _ATTENTION_FREE:
        heads = kv_heads = head_dim = 0
    else:
        heads = r.int("num_attention_heads", _HEADS, required=True, positive=True) or 0
        kv_heads = _kv_heads(cfg, r, heads)
        # No head_dim key means hidden_size / heads, as every config class without one computes it.
        given_dim = r.int("head_dim", ("head_dim", "kv_channels", "d_kv", "attention_head_dim"))
        head_dim = given_dim if given_dim is not None else (hidden // heads if heads else 0)

    kinds, window, chunk = _layer_kinds(cfg, r, model_type, layers)
    per_layer_kv = None
    if isinstance(cfg.get("block_configs"), list):
        kinds, per_layer_kv = _block_configs(cfg["block_configs"], heads, layers)
        kv_heads = next((k for k in per_layer_kv if k), kv_heads)  # vLLM: the first attention layer's
        if len(set(per_layer_kv) - {0}) <= 1:
            per_layer_kv = None
    kv_lora = cfg.get("kv_lora_rank")
    rope_dim = None
    if kv_lora is not None:
        kv_lora = r.int("kv_lora_rank", ("kv_lora_rank",), positive=True)
        rope_dim = r.int("qk_rope_head_dim", ("qk_rope_head_dim",), required=True)
        kinds = tuple(LayerKind.MLA if k in (LayerKind.FULL, LayerKind.SLIDING) else k for k in kinds)
        # DeepseekV3Config.qk_head_dim: queries and keys are qk_nope_head_dim + qk_rope_head_dim wide.
        nope = r.int("qk_nope_head_dim", ("qk_nope_head_dim",))
        head_dim = (nope or 0) + (rope_dim or 0)
    # vLLM's DeepseekV2 model: is_v32 = hasattr(config, "index_topk"); the indexer caches one key of
    # index_head_dim per token per layer (vllm/model_executor/models/deepseek_v2.py Indexer).
    index_dim = r.int("index_head_dim", ("index_head_dim",), required=True, positive=True) if (
        kv_lora is not None and "index_topk" in cfg) else None

    experts = r.int("num_experts", _EXPERTS)
    experts_per_tok = r.int("num_experts_per_tok", _EXPERTS_PER_TOK) if experts else None
    shared = r.int("num_shared_experts", ("n_shared_experts", "num_shared_experts")) if experts else None
    if experts and shared is None and cfg.get("shared_expert_intermediate_size"):
        shared = 1  # Qwen2-MoE / Qwen3-Next: one shared expert of that width
    context = r.int("max_position_embeddings", _CONTEXT)
    dtype = cfg.get("torch_dtype") or cfg.get("dtype") or config.get("torch_dtype") or config.get("dtype")
    if head_dim <= 0 and set(kinds) & {LayerKind.FULL, LayerKind.SLIDING, LayerKind.CHUNKED}:
        # head_dim 0, or more heads than hidden_size and no head_dim key: every K and V would be empty.
        raise ConfigError(f"config.json: attention heads of {head_dim} dimensions (head_dim, or hidden_size"
                          f" {hidden} / num_attention_heads {heads})")
    return Architecture(
        model_type=model_type,
        architectures=tuple(str(a) for a in archs) if isinstance(archs, list) else (),
        num_hidden_layers=layers,
        hidden_size=hidden,
        intermediate_size=r.int("intermediate_size", _INTERMEDIATE),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=r.int("vocab_size", _VOCAB),
        max_position_embeddings=context,
        torch_dtype=str(dtype).removeprefix("torch.") if isinstance(dtype, str) else None,
        layer_kinds=kinds,
        sliding_window=window,
        attention_chunk_size=chunk,
        kv_lora_rank=kv_lora,
        qk_rope_head_dim=rope_dim,
        index_head_dim=index_dim,
        kv_heads_per_layer=per_layer_kv,
        num_experts=experts or None,
        num_experts_per_tok=experts_per_tok,
        num_shared_experts=shared,
        moe_intermediate_size=r.int("moe_intermediate_size", ("moe_intermediate_size",)) if experts else None,
        state=_state_dims(cfg, r, model_type, hidden, kinds),
        encoder_layers=encoder_layers,
        text_config_key=nested_key,
        has_vision=any(isinstance(config.get(k), Mapping) for k in _VISION_KEYS),
        guessed=tuple(r.guessed),
        rope_scaling=_rope_scaling(cfg),
        model_max_length=cfg["model_max_length"] if _is_int(cfg.get("model_max_length")) and
        0 < cfg["model_max_length"] <= MAX_CONFIG_INT else None,
    )


def _rope_scaling(cfg: Mapping[str, Any]) -> tuple[str, float, int | None] | None:
    """`rope_scaling` (or transformers 5's `rope_parameters`) as (type, factor, original length);
    None when absent or not a number vLLM could use."""
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if not isinstance(rope, Mapping):
        return None
    kind = rope.get("rope_type", rope.get("type"))
    factor = rope.get("factor", 1.0)
    original: Any = rope.get("original_max_position_embeddings")
    if not isinstance(kind, str) or isinstance(factor, bool) or not isinstance(factor, int | float) \
            or not 0 < factor <= 1e6:
        return None
    return kind, float(factor), original if _is_int(original) and 0 < original <= MAX_CONFIG_INT else None


def _kv_heads(cfg: Mapping[str, Any], r: _Reader, heads: int) -> int:
    """KV heads as vLLM counts them (vllm/config/model.py ModelConfig.get_total_num_kv_heads,
    0.6.6-0.13.0; the same rules in transformers_utils/model_arch_config_convertor.py from 0.14.0):
    - multi-query (`multi_query`: GPT-BigCode, Falcon-7B): one head, except for a Falcon of the
      new decoder architecture (`new_decoder_architecture`: Falcon-40B/180B), whose `num_kv_heads`
      holds even when `multi_query` is set;
    - MPT and DBRX: `attn_config.kv_n_heads`, else every attention head;
    - else the first of `n_head_kv`, `num_kv_heads`, `num_key_value_heads`, `multi_query_group_num`
      (ChatGLM), in vLLM's order; none of them: multi-head attention."""
    falcon = r.model_type in ("falcon", "RefinedWeb", "RefinedWebModel")
    if not (falcon and cfg.get("new_decoder_architecture")) and cfg.get("multi_query"):
        return 1
    if r.model_type in ("mpt", "dbrx"):
        attn = cfg.get("attn_config")
        n = attn.get("kv_n_heads") if isinstance(attn, Mapping) else None
        return heads if n is None else _check_int("attn_config.kv_n_heads", n, positive=True)
    for key in ("n_head_kv", "num_kv_heads", "num_key_value_heads", "multi_query_group_num"):
        # (num_key_value_heads through the reader: a config class's default counts, as vLLM reads
        # the transformers config object)
        n = r.int(key, (key,), positive=True) if key == "num_key_value_heads" else cfg.get(key)
        if n is not None:
            return _check_int(key, n, positive=True)
    return heads  # no key: multi-head attention (LlamaConfig's own default)


# Model types whose layers are all state-space: no attention heads required.
_ATTENTION_FREE = ("mamba", "mamba2", "falcon_mamba")
_LAYER_TYPE_NAMES = {
    "full_attention": LayerKind.FULL, "attention": LayerKind.FULL, "global": LayerKind.FULL,
    "sliding_attention": LayerKind.SLIDING, "local": LayerKind.SLIDING,
    "chunked_attention": LayerKind.CHUNKED,
    "linear_attention": LayerKind.LINEAR, "mamba": LayerKind.MAMBA, "mamba2": LayerKind.MAMBA,
    "mlp": LayerKind.NONE, "moe": LayerKind.NONE,
}


def _layer_kinds(cfg: Mapping[str, Any], r: _Reader, model_type: str,
                 n: int) -> tuple[tuple[LayerKind, ...], int | None, int | None]:
    """Per-layer kinds, the sliding window and the attention chunk, by transformers' rules."""
    window = cfg.get("sliding_window", r.defaults.get("sliding_window"))
    if cfg.get("use_sliding_window") is False:
        window = None  # Qwen2/Qwen3: sliding_window is ignored unless use_sliding_window
    if window is not None:
        _check_int("sliding_window", window, positive=True)
    chunk = None
    types = cfg.get("layer_types")
    if model_type == "nemotron_h" and isinstance(cfg.get("hybrid_override_pattern"), str):
        # NemotronHConfig._pattern_to_list: M = Mamba-2, * = attention, - = MLP, E = MoE.
        mapping = {"M": LayerKind.MAMBA, "*": LayerKind.FULL, "-": LayerKind.NONE, "E": LayerKind.NONE}
        pattern = cfg["hybrid_override_pattern"]
        if set(pattern) - set(mapping):
            raise ConfigError(f"config.json: unknown layer in hybrid_override_pattern {_short(pattern)}")
        if len(pattern) != n:  # NemotronHConfig: one character per layer
            raise ConfigError(f"config.json: hybrid_override_pattern names {len(pattern)} layers, not {n}")
        return tuple(mapping[c] for c in pattern), window, chunk
    if isinstance(types, list) and types:
        if len(types) != n:
            raise ConfigError(f"config.json: layer_types has {len(types)} entries for {n} layers")
        unknown = sorted({str(t) for t in types} - set(_LAYER_TYPE_NAMES))
        if unknown:
            raise ConfigError(f"config.json: unknown layer type {unknown[0]!r} in layer_types")
        kinds = tuple(_LAYER_TYPE_NAMES[t] for t in types)
    elif model_type == "gemma2":
        # Gemma2Config: sliding on even layers, "sliding_attention" if bool((i + 1) % 2).
        kinds = tuple(LayerKind.SLIDING if (i + 1) % 2 else LayerKind.FULL for i in range(n))
    elif model_type in ("gemma3", "gemma3_text"):
        # Gemma3TextConfig: sliding unless (i + 1) % sliding_window_pattern == 0 (default 6).
        p = r.int("sliding_window_pattern", ("sliding_window_pattern",))
        kinds = tuple(LayerKind.SLIDING if (i + 1) % (p or 6) else LayerKind.FULL for i in range(n))
    elif model_type == "qwen3_next":
        # Qwen3NextConfig: linear attention unless (i + 1) % full_attention_interval == 0 (default 4).
        p = r.int("full_attention_interval", ("full_attention_interval",)) or 4
        kinds = tuple(LayerKind.LINEAR if (i + 1) % p else LayerKind.FULL for i in range(n))
    elif model_type == "jamba":
        # JambaConfig.layers_block_type: attention if i % attn_layer_period == attn_layer_offset.
        period = r.int("attn_layer_period", ("attn_layer_period",), default=8, why="JambaConfig default",
                       positive=True)
        offset = r.int("attn_layer_offset", ("attn_layer_offset",), default=4, why="JambaConfig default")
        assert period and offset is not None
        kinds = tuple(LayerKind.FULL if i % period == offset else LayerKind.MAMBA for i in range(n))
    elif model_type in _ATTENTION_FREE:
        kinds = (LayerKind.MAMBA,) * n
    elif model_type in ("llama4", "llama4_text"):
        # Llama4TextConfig: layers with RoPE (no_rope_layers[i] == 1) use chunked attention;
        # by default every 4th layer is a global NoPE layer.
        chunk = cfg.get("attention_chunk_size", 8192)
        if chunk is not None:
            _check_int("attention_chunk_size", chunk)
        no_rope = cfg.get("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(n)]
        if not isinstance(no_rope, list) or len(no_rope) != n or not all(x in (0, 1) for x in no_rope):
            raise ConfigError(f"config.json: no_rope_layers must be {n} entries of 0 or 1, got {_short(no_rope)}")
        kinds = tuple(LayerKind.CHUNKED if chunk and x else LayerKind.FULL for x in no_rope)
    elif window is not None and model_type in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe"):
        # Qwen2Config: sliding for layers i >= max_window_layers when use_sliding_window.
        mwl = r.int("max_window_layers", ("max_window_layers",), default=n)
        kinds = tuple(LayerKind.SLIDING if i >= (mwl or 0) else LayerKind.FULL for i in range(n))
    else:
        # Mistral, Phi-3, Starcoder2...: one window for every layer when the config sets one.
        kinds = ((LayerKind.SLIDING if window is not None else LayerKind.FULL),) * n
    if LayerKind.SLIDING in kinds and window is None:
        raise ConfigError("config.json: sliding-window layers but no sliding_window")
    return kinds, (window if LayerKind.SLIDING in kinds else None), chunk


def _block_configs(blocks: list[Any], heads: int, n: int) -> tuple[tuple[LayerKind, ...], tuple[int, ...]]:
    """Nemotron-NAS (DeciLM) layers from `block_configs`, as vLLM builds them (vllm/model_executor/
    models/nemotron_nas.py DeciLMDecoderLayer): `attention.no_op` layers have no attention and no
    KV cache; the others have num_attention_heads // `attention.n_heads_in_group` KV heads. Layers
    that replace attention with a linear map or a windowed sink attention are refused: vLLM builds
    no such layer."""
    if len(blocks) != n:
        raise ConfigError(f"config.json: block_configs has {len(blocks)} entries for {n} layers")
    kinds, kv = [], []
    for i, block in enumerate(blocks):
        attn = block.get("attention") if isinstance(block, Mapping) else None
        if not isinstance(attn, Mapping):
            raise ConfigError(f"config.json: block_configs[{i}] has no attention object")
        if attn.get("replace_with_linear") or attn.get("window_length") is not None or attn.get("sparsify"):
            raise ConfigError(f"config.json: block_configs[{i}].attention is a linear, windowed or sparse "
                              "replacement, which hfmem cannot size")
        if attn.get("no_op") is True:
            kinds.append(LayerKind.NONE)
            kv.append(0)
            continue
        group = _check_int(f"block_configs[{i}].attention.n_heads_in_group", attn.get("n_heads_in_group"),
                           positive=True)
        if heads % group:
            raise ConfigError(f"config.json: block_configs[{i}]: {heads} heads do not split into groups of {group}")
        kinds.append(LayerKind.FULL)
        kv.append(heads // group)
    return tuple(kinds), tuple(kv)


def _state_dims(cfg: Mapping[str, Any], r: _Reader, model_type: str, hidden: int,
                kinds: tuple[LayerKind, ...]) -> StateDims | None:
    """State shapes after vLLM's MambaStateShapeCalculator (mamba1/mamba2/gated_delta_net)."""
    if LayerKind.LINEAR in kinds:
        kernel = r.int("linear_conv_kernel_dim", ("linear_conv_kernel_dim",), required=True, positive=True)
        kh = r.int("linear_num_key_heads", ("linear_num_key_heads",), required=True, positive=True)
        kd = r.int("linear_key_head_dim", ("linear_key_head_dim",), required=True, positive=True)
        vh = r.int("linear_num_value_heads", ("linear_num_value_heads",), required=True, positive=True)
        vd = r.int("linear_value_head_dim", ("linear_value_head_dim",), required=True, positive=True)
        assert kernel and kh and kd and vh and vd
        # conv over q, k and v: 2 * key_dim + value_dim channels; delta-rule state [vh, kd, vd].
        return StateDims("gated_delta_net", kernel, 2 * kh * kd + vh * vd, vh * kd * vd)
    if LayerKind.MAMBA not in kinds:
        return None
    if model_type in ("mamba2", "nemotron_h") or r.raw("mamba_num_heads") or r.raw("n_groups"):
        nheads = r.int("mamba_num_heads", ("mamba_num_heads", "num_heads"), required=True, positive=True)
        head = r.int("mamba_head_dim", ("mamba_head_dim", "head_dim"), required=True, positive=True)
        groups = r.int("n_groups", ("n_groups", "mamba_n_groups"), default=1, why="Mamba2Config default",
                       positive=True)
        d_state = r.int("ssm_state_size", ("ssm_state_size", "state_size", "mamba_d_state"), required=True,
                        positive=True)
        kernel = r.int("conv_kernel", ("conv_kernel", "mamba_d_conv"), default=4, why="Mamba2Config default",
                       positive=True)
        assert nheads and head and groups and d_state and kernel
        inner = nheads * head
        return StateDims("mamba2", kernel, inner + 2 * groups * d_state, nheads * head * d_state)
    expand = r.int("expand", ("mamba_expand", "expand"), default=2, why="MambaConfig default", positive=True)
    inner = r.int("intermediate_size", ("mamba_d_inner", "d_inner") if model_type == "jamba"
                  else ("intermediate_size", "d_inner"), default=(expand or 2) * hidden, why="expand * hidden_size",
                  positive=True) or (expand or 2) * hidden
    d_state = r.int("state_size", ("mamba_d_state", "state_size"), default=16, why="MambaConfig default",
                    positive=True)
    kernel = r.int("conv_kernel", ("mamba_d_conv", "conv_kernel"), default=4, why="MambaConfig default",
                   positive=True)
    assert inner and d_state and kernel
    return StateDims("mamba1", kernel, inner, inner * d_state)


KNOWN_MODEL_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen3_next", "gemma", "gemma2",
    "gemma3", "gemma3_text", "gpt_oss", "phi3", "gpt2", "gpt_neox", "falcon", "bloom", "deepseek_v2",
    "deepseek_v3", "jamba", "nemotron_h", "mamba", "mamba2", "falcon_mamba", "t5", "mt5", "umt5",
    "llava", "qwen2_vl", "qwen2_5_vl", "llama4", "llama4_text", "chatglm", "gpt_bigcode",
})
