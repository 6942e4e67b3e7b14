"""Fine-tuning memory: full, LoRA, QLoRA and freeze tuning, from the checkpoint's real tensor shapes.

Pure: a Checkpoint's tensor tables and its Architecture in, a TrainingEstimate of named terms out,
each in bytes per GPU with the formula and source it stands on. The layout mirrors what PyTorch's
autograd keeps for a Hugging Face decoder (transformers + PEFT, the stack most users train with):

- frozen weights at the dtype they are loaded in (QLoRA: every linear of the decoder blocks in
  bitsandbytes NF4 with double quantization, the rest 16-bit);
- per trainable parameter: its weight, its gradient, an fp32 master copy where DeepSpeed keeps one,
  and the optimizer's states;
- the activations autograd saves for the backward pass, from the real dimensions of each layer
  (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
  adapted to RMSNorm, SwiGLU, grouped-query and flash attention, frozen weights and LoRA);
- the logits and the cross-entropy's fp32 buffers;
- ZeRO / FSDP sharding over `--count` GPUs (Rajbhandari et al. 2020; DeepSpeed's estimators);
- the CUDA context apart.

Gradients are counted as held at the peak: with gradient accumulation (and in loops that zero the
gradients at the start of a step) they live through the next forward pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from .arch import ATTENTION_KINDS, Architecture, LayerKind
from .checkpoint import Checkpoint
from .errors import ConfigError, UsageError
from .gpus import GPU
from .params import BLOCK, TensorKind, classify, logical_matrix, quant_scheme, ties_embeddings

GIB = 1 << 30
MIB = 1 << 20

METHODS = ("full", "lora", "qlora", "freeze")
OPTIMIZERS = ("adamw", "adamw-8bit", "paged-adamw-8bit", "adafactor", "sgd", "sgd-momentum")
#: Lightning's `precision` values (lightning/fabric/connector.py _PRECISION_INPUT).
TRAIN_PRECISIONS = ("bf16-mixed", "fp16-mixed", "bf16-true", "fp16-true", "32-true")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
OFFLOADS = ("none", "optimizer", "optimizer+params")
ALL_LINEAR = "all-linear"

# PEFT's default LoRA targets per model_type, used when target_modules is not given
# (src/peft/utils/constants.py TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, PEFT v0.20.0, the entries
# for decoder models; a type it does not list makes PEFT raise, lora/model.py).
PEFT_DEFAULT_TARGETS: Mapping[str, tuple[str, ...]] = {
    "t5": ("q", "v"), "mt5": ("q", "v"), "bart": ("q_proj", "v_proj"), "gpt2": ("c_attn",),
    "bloom": ("query_key_value",), "blip-2": ("q", "v", "q_proj", "v_proj"), "opt": ("q_proj", "v_proj"),
    "gptj": ("q_proj", "v_proj"), "gpt_neox": ("query_key_value",), "gpt_neo": ("q_proj", "v_proj"),
    "bert": ("query", "value"), "roberta": ("query", "value"), "xlm-roberta": ("query", "value"),
    "electra": ("query", "value"), "deberta-v2": ("query_proj", "value_proj"), "deberta": ("in_proj",),
    "layoutlm": ("query", "value"), "llama": ("q_proj", "v_proj"), "chatglm": ("query_key_value",),
    "gpt_bigcode": ("c_attn",), "mpt": ("Wqkv",), "RefinedWebModel": ("query_key_value",),
    "RefinedWeb": ("query_key_value",), "falcon": ("query_key_value",), "btlm": ("c_proj", "c_attn"),
    "codegen": ("qkv_proj",), "mistral": ("q_proj", "v_proj"), "mixtral": ("q_proj", "v_proj"),
    "stablelm": ("q_proj", "v_proj"), "phi": ("q_proj", "v_proj", "fc1", "fc2"), "gemma": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"), "gemma3_text": ("q_proj", "v_proj"), "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
}


@dataclass(frozen=True)
class TrainSettings:
    """What the user asked for, in PEFT's, transformers', Lightning's and DeepSpeed's names."""

    method: str = "lora"
    lora_r: int = 16
    lora_target: tuple[str, ...] | None = None  # None: PEFT's default for the model type
    lora_dropout: float = 0.0
    train_embeddings: bool = False
    optimizer: str = "adamw"
    train_precision: str | None = None  # None: bf16-mixed where the GPU has bf16, else fp16-mixed
    seq_len: int = 2048
    micro_batch_size: int = 1
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"
    fused_cross_entropy: bool = False
    count: int = 1
    zero: int = 0
    offload: str = "none"

    def __post_init__(self) -> None:
        for what, value, allowed in (("--method", self.method, METHODS), ("--optimizer", self.optimizer, OPTIMIZERS),
                                     ("--attn-implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS),
                                     ("--offload", self.offload, OFFLOADS)):
            if value not in allowed:
                raise UsageError(f"{what} {value!r} is not one of {', '.join(allowed)}")
        if self.train_precision is not None and self.train_precision not in TRAIN_PRECISIONS:
            raise UsageError(f"--train-precision {self.train_precision!r} is not one of {', '.join(TRAIN_PRECISIONS)}")
        if self.zero not in (0, 1, 2, 3):
            raise UsageError(f"--zero {self.zero} is not a DeepSpeed ZeRO stage (0, 1, 2 or 3)")
        if self.zero and self.count == 1:
            raise UsageError(f"--zero {self.zero} shards over data-parallel GPUs: give --count 2 or more")
        if self.offload == "optimizer+params" and self.zero != 3:
            raise UsageError("--offload optimizer+params needs --zero 3 (DeepSpeed offloads parameters only at "
                             "stage 3)")
        if self.offload != "none" and self.zero == 0:
            raise UsageError("--offload needs DeepSpeed ZeRO: give --zero 1, 2 or 3 (and --count 2 or more)")
        if not 0 <= self.lora_dropout < 1:
            raise UsageError(f"--lora-dropout {self.lora_dropout} is not from 0 to below 1")
        if self.method in ("full", "freeze") and self.lora_target is not None:
            raise UsageError(f"--lora-target applies to --method lora or qlora, not {self.method}")

    def precision_for(self, gpu: GPU | None) -> str:
        """Lightning's precision as run: the user's, else bf16-mixed where the GPU computes bf16."""
        if self.train_precision:
            return self.train_precision
        return "bf16-mixed" if gpu is None or gpu.bf16 else "fp16-mixed"

    def to_dict(self, gpu: GPU | None = None) -> dict[str, Any]:
        return {
            "method": self.method, "lora_r": self.lora_r if self.method in ("lora", "qlora") else None,
            "lora_target": list(self.lora_target) if self.lora_target else None,
            "lora_dropout": self.lora_dropout, "train_embeddings": self.train_embeddings,
            "optimizer": self.optimizer, "train_precision": self.precision_for(gpu), "seq_len": self.seq_len,
            "micro_batch_size": self.micro_batch_size, "gradient_checkpointing": self.gradient_checkpointing,
            "attn_implementation": self.attn_implementation, "fused_cross_entropy": self.fused_cross_entropy,
            "count": self.count, "zero": self.zero, "offload": self.offload,
        }


# --- the modules of a checkpoint ---------------------------------------------------------------

@dataclass(frozen=True)
class Module:
    """A parameter-holding module of the checkpoint, as PEFT names it (`model.layers.0.self_attn.q_proj`)."""

    name: str
    params: int
    stored_bytes: int  # its tensors as stored, quantization scales included
    in_features: int = 0  # a Linear's input and output widths (0: not a Linear)
    out_features: int = 0
    layer: int | None = None  # the decoder block it sits in

    @cached_property
    def short(self) -> str:
        return self.name.rpartition(".")[2]

    @property
    def linear(self) -> bool:
        return self.in_features > 0


_WEIGHT_LEAVES = ("weight", "qweight", "weight_packed")
_EMBEDDING = re.compile(r"embed|^wte$|^wpe$|^word_embeddings$|^tok_embeddings$")
_HEAD = ("lm_head", "output", "embed_out")
_ROPE_OR_MASK = re.compile(r"\.(inv_freq|masked_bias|position_ids)$")
_VISION = re.compile(r"vision|visual|multi_modal_projector|mm_projector|image_newline")


def modules_of(cp: Checkpoint) -> tuple[Module, ...]:
    """Every parameter-holding module of a checkpoint with its logical size and stored bytes; a
    Linear carries its (in, out) widths, read from the tensor's shape (packed quantized weights
    unpacked). A tied `lm_head.weight` stored beside the embeddings is left out, as transformers
    ties it on load."""
    if cp.plan.format != "safetensors":
        raise ConfigError(f"{cp.name}: no tensor table to read (PyTorch .bin weights): hfmem train needs "
                          "safetensors headers")
    config = cp.config
    scheme = quant_scheme(cp.quantization_config)
    tied = ties_embeddings(config)
    params: dict[str, int] = {}
    stored: dict[str, int] = {}
    shape: dict[str, tuple[int, int]] = {}
    for fname in cp.weight_files:
        for t in cp.headers[fname].tensors:
            name = t.name
            if tied and (name == "lm_head.weight" or name.endswith(".lm_head.weight")):
                continue
            kind, logical, _ = classify(t, scheme, config)
            if kind is TensorKind.BUFFER:
                continue
            module, _, leaf = name.rpartition(".")
            if kind is TensorKind.QUANT_AUX:
                base = module
                for tail in (".quant_state", ".weight"):  # bitsandbytes: q_proj.weight.absmax
                    base = base.removesuffix(tail)
                stored[base] = stored.get(base, 0) + t.nbytes
                continue
            if not module or leaf not in (*_WEIGHT_LEAVES, "bias"):
                module = name  # a bare parameter (gpt-oss's fused experts, a norm's scale)
            params[module] = params.get(module, 0) + logical
            stored[module] = stored.get(module, 0) + t.nbytes
            if leaf in _WEIGHT_LEAVES and logical > 0:
                rows, cols = logical_matrix(t, logical, scheme)
                flat = rows == 1 and cols == logical and len(t.shape) <= 2
                if len(t.shape) >= 2 or flat:
                    shape[module] = (cols, rows) if not flat else _config_shape(module, config, logical)
    out = []
    for name, n in params.items():
        short = name.rpartition(".")[2]
        layer = BLOCK.search(name)
        dims = (0, 0) if _EMBEDDING.search(short) else shape.get(name, (0, 0))
        out.append(Module(name, n, stored.get(name, 0), dims[0], dims[1], int(layer.group(1)) if layer else None))
    return tuple(out)


def _config_shape(module: str, config: Mapping[str, Any], logical: int) -> tuple[int, int]:
    """(in, out) of a bitsandbytes 4-bit weight, whose stored shape [n/2, 1] keeps none: from the
    config's widths for the Llama-style projection names, else unknown (0, 0)."""
    nested = config.get("text_config")
    text: Mapping[str, Any] = nested if isinstance(nested, dict) else config
    h = text.get("hidden_size")
    inter = text.get("intermediate_size")
    heads = text.get("num_attention_heads")
    kv = text.get("num_key_value_heads", heads)
    if not (isinstance(h, int) and isinstance(inter, int) and isinstance(heads, int) and isinstance(kv, int)
            and min(h, inter, heads, kv) > 0):
        return 0, 0
    d = text.get("head_dim") or h // heads
    widths = {"q_proj": (h, heads * d), "k_proj": (h, kv * d), "v_proj": (h, kv * d), "o_proj": (heads * d, h),
              "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    dims = widths.get(module.rpartition(".")[2], (0, 0))
    return dims if dims[0] * dims[1] == logical else (0, 0)


def linear_modules(modules: Iterable[Module]) -> list[Module]:
    """The Linear layers PEFT can target (not embeddings, not vision towers)."""
    return [m for m in modules if m.linear and not _VISION.search(m.name)]


def resolve_targets(modules: Sequence[Module], arch: Architecture, settings: TrainSettings) -> list[Module]:
    """The modules LoRA adapts, matched as PEFT matches `target_modules`: a module whose name is
    the target or ends with `.target` (peft/tuners/tuners_utils.py check_target_module_exists);
    `all-linear`: every Linear but the output layer (_maybe_include_all_linear_layers)."""
    linears = linear_modules(modules)
    targets = settings.lora_target
    if targets is None:
        default = PEFT_DEFAULT_TARGETS.get(arch.model_type)
        if default is None:
            raise UsageError(f"PEFT has no default LoRA target for model type {arch.model_type!r}: give "
                             "--lora-target (module names, or all-linear)")
        targets = default
    if ALL_LINEAR in targets:
        chosen = [m for m in linears if m.short not in _HEAD and m.layer is not None]
    else:
        wanted = set(targets)
        chosen = [m for m in linears if m.short in wanted or m.name in wanted]
        missing = sorted(t for t in wanted if not any(m.short == t or m.name == t for m in linears))
        if missing:
            names = sorted({m.short for m in linears if m.layer is not None})
            no_attention = not any(k in ATTENTION_KINDS for k in arch.layer_kinds)
            why = " (the model has no attention layers)" if no_attention else ""
            raise UsageError(f"--lora-target {','.join(missing)} names no module of this model{why}; its linear "
                             f"modules are: {', '.join(names) or 'none'} (or all-linear)")
    return chosen


# --- the estimate -----------------------------------------------------------------------------

# bitsandbytes NF4 with double quantization (transformers' bnb_4bit_use_double_quant, QLoRA's
# recipe): two 4-bit codes per byte; one absmax per block of 64, itself quantized to 8 bits in
# blocks of 256 with an fp32 absmax each (bitsandbytes/functional.py quantize_4bit, blocksize=64;
# compress_statistics: quantize_blockwise(absmax, blocksize=256)); Dettmers et al. 2023 §3 give the
# same 0.127 bits per parameter (8/64 + 32/(64*256)).
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)
# ... and per quantized Linear, its two fp32 code books: quant_map [16] and nested_quant_map [256]
# (QuantState.as_dict; bitsandbytes 0.49.2 run on one Llama-3-8B layer, fixtures/bnb/).
NF4_MODULE_BYTES = 16 * 4 + 256 * 4
# bitsandbytes' 8-bit optimizers keep 32-bit states for tensors under 4096 elements
# (bitsandbytes/optim/optimizer.py Optimizer8bit: min_8bit_size=4096) and quantize the rest blockwise,
# one fp32 absmax per 256 elements (functional.py optimizer_update_8bit_blockwise, blocksize 256).
BNB_MIN_8BIT_SIZE = 4096
BNB_8BIT_BYTES = 1 + 4 / 256
# The CUDA context of a PyTorch process: "around 400MB if CUDA >= 11.7 is used and lazy module
# loading enabled" (pytorch/pytorch#109888, a PyTorch maintainer). It is in nvidia-smi's figure,
# not in torch.cuda.max_memory_allocated's.
CUDA_CONTEXT_BYTES = 400 * MIB
# Cross-entropy over the logits, as transformers computes it (src/transformers/loss/loss_utils.py
# ForCausalLMLoss, 4.46 on: `logits = logits.float()` then cross_entropy): the 16-bit logits, their
# fp32 copy and log_softmax's fp32 output (saved for the backward) in the forward; in the backward
# the saved output, nll_loss's fp32 gradient and log_softmax_backward's fp32 result: 12 bytes per
# logit at the peak.
LOGIT_BYTES = 12
# Liger / Unsloth / torchtune's fused or chunked linear cross-entropy never holds the logits. Liger
# (src/liger_kernel/ops/fused_linear_cross_entropy.py fused_linear_cross_entropy_forward) takes
# chunks of next_pow2(ceil(BT / ceil(V / H))) rows, "to achieve the same memory consumption as
# BT x H": one chunk's logits are about BT x H elements (counted at 4 B, an upper bound if they stay
# 16-bit), and it keeps grad_input = torch.zeros_like(_input), BT x H at the 16-bit input's 2 B.
FUSED_CE_BYTES_PER_HIDDEN = 4 + 2
# LLaMA-Factory's freeze tuning trains the last 2 decoder layers by default
# (src/llamafactory/hparams/finetuning_args.py FreezeArguments.freeze_trainable_layers = 2).
FREEZE_TRAINABLE_LAYERS = 2
# HF Trainer's gradient checkpointing saves each decoder layer's input and recomputes one layer at a time.


@dataclass(frozen=True)
class Term:
    """One line of the estimate: bytes per GPU, and how they were worked out."""

    key: str
    label: str
    bytes: int
    formula: str


@dataclass(frozen=True)
class TrainingEstimate:
    settings: TrainSettings
    precision: str  # Lightning's precision as run
    all_params: int
    trainable_params: int
    targets: tuple[str, ...]  # the short names LoRA adapts
    terms: tuple[Term, ...]
    host_bytes: int  # what --offload moves to host memory
    gpu: GPU | None = None

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.terms)

    @property
    def peak_allocated_bytes(self) -> int:
        """What torch.cuda.max_memory_allocated() would report: everything but the CUDA context."""
        return sum(t.bytes for t in self.terms if t.key != "cuda_context")

    def term(self, key: str) -> int:
        return next((t.bytes for t in self.terms if t.key == key), 0)

    @property
    def trainable_line(self) -> str:
        """As PEFT's print_trainable_parameters (peft/peft_model.py) prints it."""
        pct = 100 * self.trainable_params / self.all_params if self.all_params else 0.0
        return (f"trainable params: {self.trainable_params:,d} || all params: {self.all_params:,d} || "
                f"trainable%: {pct:.4f}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.settings.method,
            "train_precision": self.precision,
            "trainable_params": self.trainable_params,
            "all_params": self.all_params,
            "lora_targets": list(self.targets),
            "terms": {t.key + "_bytes": t.bytes for t in self.terms},
            "formulas": {t.key: t.formula for t in self.terms},
            "host_bytes": self.host_bytes,
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "total_bytes": self.total_bytes,
        }


@dataclass(frozen=True)
class _Layout:
    """Bytes per element of each kind of tensor under one precision and method."""

    act: int  # activations (the compute dtype)
    frozen: int  # frozen 16/32-bit weights
    weight: int  # a trainable parameter's weight
    grad: int
    master: int  # DeepSpeed's fp32 master copy
    state: int  # the dtype the optimizer keeps its states in (torch: the parameter's)


def _layout(precision: str, method: str, zero: int) -> _Layout:
    if precision == "32-true":
        return _Layout(4, 4, 4, 4, 0, 4)
    if precision.endswith("-true"):  # pure 16-bit: weights, gradients and torch's optimizer states
        return _Layout(2, 2, 2, 2, 0, 2)
    # Mixed precision. Full fine-tuning under PyTorch AMP keeps fp32 parameters and gradients
    # (torch.autocast casts per op); DeepSpeed keeps 16-bit parameters and gradients plus an fp32
    # master copy: 2 + 2 + 4, the ZeRO paper's 2 + 2 + K with K = 12 for Adam. PEFT keeps adapters in
    # fp32 over a 16-bit base (LoraModel autocast_adapter_dtype=True, PEFT >= 0.12).
    if zero and method in ("full", "freeze"):
        return _Layout(2, 2, 2, 2, 4, 4)
    frozen = 4 if method in ("full", "freeze") else 2
    return _Layout(2, frozen, 4, 4, 0, 4)


@dataclass(frozen=True)
class Prepared:
    """What an estimate needs from the modules, worked out once for a method and its targets: the
    fit's searches then vary only the sequence, batch, GPU count and ZeRO stage."""

    all_params: int
    targets: tuple[Module, ...]
    trainable: tuple[tuple[int, int, bool], ...]  # (params, a tensor's elements, in the base's dtype)
    first_layer: tuple[Module, ...]  # the linears of the first decoder block
    largest_layer_params: int
    block_linear_params: int
    nf4_bytes: int  # the block linears in NF4 (QLoRA)
    stored_bytes: int  # every tensor as stored (a quantized checkpoint's frozen base)
    modules: tuple[Module, ...]  # the trained modules (Adafactor's factored states)


def prepare(modules: Sequence[Module], arch: Architecture, settings: TrainSettings) -> Prepared:
    method = settings.method
    targets: list[Module] = resolve_targets(modules, arch, settings) if method in ("lora", "qlora") else []
    trained: list[Module] = []
    if method == "full":
        trained = list(modules)
    elif method == "freeze":
        last = max((m.layer for m in modules if m.layer is not None), default=-1)
        trained = [m for m in modules if m.layer is not None and m.layer > last - FREEZE_TRAINABLE_LAYERS]
    groups: dict[tuple[bool, bool], int] = {}

    def add(params: int, elements: int, base: bool) -> None:
        key = (elements < BNB_MIN_8BIT_SIZE, base)
        groups[key] = groups.get(key, 0) + params

    for m in trained:
        add(m.params, m.params, False)
    r = settings.lora_r
    for m in targets:
        add(r * m.in_features, r * m.in_features, False)
        add(r * m.out_features, r * m.out_features, False)
    if method in ("lora", "qlora") and settings.train_embeddings:
        # PEFT modules_to_save: a trainable deep copy beside the frozen original, in the base's
        # dtype (peft/utils/other.py ModulesToSaveWrapper: copy.deepcopy(self.original_module));
        # autocast_adapter_dtype upcasts only the adapters.
        for m in modules:
            if _EMBEDDING.search(m.short) or m.short in _HEAD and m.layer is None:
                add(m.params, m.params, True)
    first = min((m.layer for m in modules if m.layer is not None and m.linear), default=None)
    per_layer: dict[int, int] = {}
    for m in modules:
        if m.layer is not None:
            per_layer[m.layer] = per_layer.get(m.layer, 0) + m.params
    blocks = [m for m in linear_modules(modules) if m.layer is not None] if method == "qlora" else []
    return Prepared(
        all_params=sum(m.params for m in modules), targets=tuple(targets),
        trainable=tuple((p, 0 if small else BNB_MIN_8BIT_SIZE, base) for (small, base), p in groups.items()),
        first_layer=tuple(m for m in modules if m.layer == first and m.linear),
        largest_layer_params=max(per_layer.values(), default=0),
        block_linear_params=sum(m.params for m in blocks), nf4_bytes=nf4_bytes(blocks),
        stored_bytes=sum(m.stored_bytes for m in modules), modules=tuple(trained))


def estimate_training(cp: Checkpoint, arch: Architecture, settings: TrainSettings, gpu: GPU | None = None,
                      modules: Sequence[Module] | None = None, prepared: Prepared | None = None
                      ) -> TrainingEstimate:
    """The peak memory per GPU of one training step (`prepared`: `prepare`'s answer for these
    modules and this method, targets and embeddings setting, when the caller has it)."""
    _refuse_unmodelled(arch, settings)
    modules = modules_of(cp) if modules is None else modules
    scheme = quant_scheme(cp.quantization_config)
    if scheme and scheme.method == "mxfp4":
        # No training kernels read MXFP4: transformers dequantizes it to bf16 for fine-tuning
        # (Mxfp4Config(dequantize=True); "no MXFP4 training support in the community for GPT-OSS",
        # NVIDIA ModelOpt team, lmsys.org blog "Fine-tune and deploy gpt-oss MXFP4", Aug 2025).
        scheme = None
    if scheme and settings.method in ("full", "freeze"):
        raise UsageError(f"{settings.method} fine-tuning needs float weights; this checkpoint is {scheme.method}-"
                         "quantized (use --method lora on it, or the unquantized model)")
    if scheme and settings.method == "qlora":
        raise UsageError(f"this checkpoint is already {scheme.method}-quantized: use --method lora (hfmem counts "
                         "its stored weights as the frozen base)")
    precision = settings.precision_for(gpu)
    lay = _layout(precision, settings.method, settings.zero)
    method = settings.method
    prep = prepared if prepared is not None else prepare(modules, arch, settings)
    all_params = prep.all_params
    targets = prep.targets
    # (params, elements of its tensor, bytes per element), grouped: adapters / trained weights at the
    # trainable dtype, PEFT modules_to_save copies at the base's
    trainable = [(p, e, lay.frozen if base else lay.weight) for p, e, base in prep.trainable]
    trainable_params = sum(t[0] for t in trainable)

    # Frozen weights.
    if method == "qlora":
        nf4 = prep.block_linear_params
        frozen = prep.nf4_bytes + (all_params - nf4) * lay.act
        frozen_formula = (f"{nf4:,} block linear params x {NF4_BYTES_PER_PARAM:.4f} B (NF4 + double-quantized "
                          f"absmax) + {all_params - nf4:,} others x {lay.act} B")
    elif scheme:
        frozen = prep.stored_bytes
        frozen_formula = f"the {scheme.method} checkpoint's tensors as stored"
    elif method == "full":
        frozen, frozen_formula = 0, "none: every parameter trains"
    else:
        n_frozen = all_params - (trainable_params if method == "freeze" else 0)
        frozen = n_frozen * lay.frozen
        frozen_formula = f"{n_frozen:,} params x {lay.frozen} B"
    if method in ("lora", "qlora") and settings.train_embeddings:
        frozen_formula += " (the embeddings' frozen originals included)"

    # Per trainable parameter: weight, gradient, master, optimizer states.
    n = trainable_params
    opt_bytes, opt_formula = _optimizer_bytes(settings.optimizer, trainable, lay, prep.modules)
    weight_b = grad_b = sum(p * b for p, _, b in trainable)  # gradients in the parameters' dtype
    master_b = n * lay.master
    per_param = " + ".join(f"{sum(p for p, _, x in trainable if x == b):,} x {b} B"
                           for b in sorted({b for _, _, b in trainable}, reverse=True)) or "0"
    # ZeRO sharding over the data-parallel GPUs (DeepSpeed stage 1: optimizer states and master
    # weights; 2: + gradients; 3 / FSDP full shard: + parameters, frozen ones included).
    dp, zero = settings.count, settings.zero
    host = 0
    if zero >= 1:
        opt_bytes, master_b = _ceil_div(opt_bytes, dp), _ceil_div(master_b, dp)
    if zero >= 2:
        grad_b = _ceil_div(grad_b, dp)
    gathered = 0
    if zero == 3:
        weight_b, frozen = _ceil_div(weight_b, dp), _ceil_div(frozen, dp)
        # DeepSpeed gathers one layer's parameters at a time, and prefetches the next
        # (deepspeed/runtime/zero/stage3.py estimate_zero3_model_states_mem_needs: largest_layer_memory =
        # 4 x largest_layer_params, 16-bit parameters and gradients).
        gathered = 4 * prep.largest_layer_params
    if settings.offload != "none":
        host += opt_bytes * dp + master_b * dp
        opt_bytes = master_b = 0
        if settings.offload == "optimizer+params":
            host += (weight_b + frozen) * dp
            weight_b = frozen = 0

    acts, act_formula = activation_bytes(arch, prep.first_layer, targets, settings, lay)
    logits, logit_formula = logits_bytes(arch, settings, lay)
    peak_transient = max(logits, acts.transient)
    terms = [
        Term("frozen_weights", "frozen weights", frozen, frozen_formula),
        Term("trainable_weights", "trainable weights", weight_b,
             per_param + (f" / {dp} GPUs" if zero == 3 else "")),
        Term("gradients", "gradients", grad_b, per_param + (f" / {dp} GPUs" if zero >= 2 else "")),
        Term("master_weights", "fp32 master weights", master_b,
             f"{n:,} x {lay.master} B" + (f" / {dp} GPUs" if zero else "")),
        Term("optimizer_states", "optimizer states", opt_bytes, opt_formula + (f" / {dp} GPUs" if zero else "")),
        Term("activations", "activations", acts.saved, act_formula),
        Term("logits", "logits and loss (peak)" if peak_transient == logits else "backward of one layer (peak)",
             peak_transient, logit_formula if peak_transient == logits else acts.transient_formula),
    ]
    if zero == 3:
        terms.append(Term("zero3_gathered", "gathered layer (ZeRO-3)", gathered, "4 B x the largest layer's params"))
    terms.append(Term("cuda_context", "CUDA context", CUDA_CONTEXT_BYTES, "PyTorch's, CUDA >= 11.7 lazy loading"))
    return TrainingEstimate(settings, precision, all_params, trainable_params,
                            tuple(sorted({m.short for m in targets})), tuple(terms), host, gpu)


def nf4_bytes(linears: Iterable[Module]) -> int:
    """bitsandbytes' NF4 with double quantization, as it stores each Linear's weight: two codes per
    byte, a uint8 absmax per 64, an fp32 absmax per 256 of those, and the two code books."""
    total = 0
    for m in linears:
        n = m.in_features * m.out_features
        blocks = -(-n // 64)
        total += -(-n // 2) + blocks + 4 * -(-blocks // 256) + NF4_MODULE_BYTES
    return total


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _optimizer_bytes(optimizer: str, trainable: Sequence[tuple[int, int, int]], lay: _Layout,
                     modules: Sequence[Module]) -> tuple[int, str]:
    """The optimizer's states for the trainable tensors (each given as (params, elements, bytes per
    element)): torch's optimizers keep them in the parameter's dtype (torch/optim/adamw.py _init_group:
    torch.zeros_like(p, memory_format=torch.preserve_format)); DeepSpeed's run on its fp32 master copy."""
    n = sum(t[0] for t in trainable)
    state = 4 if lay.master else lay.state
    per_state = sum(p * (4 if lay.master else b) for p, _, b in trainable)
    if optimizer == "adamw":
        return 2 * per_state, f"{n:,} params x 2 states (torch.optim.AdamW: exp_avg, exp_avg_sq) in their dtype"
    if optimizer == "sgd":
        return 0, "none (plain SGD)"
    if optimizer == "sgd-momentum":
        return per_state, f"{n:,} params x 1 state (momentum_buffer) in their dtype"
    if optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        small = sum(p for p, e, _ in trainable if e < BNB_MIN_8BIT_SIZE)
        big = n - small
        b = int(2 * BNB_8BIT_BYTES * big) + 2 * 4 * small
        return b, (f"{big:,} x 2 x {BNB_8BIT_BYTES:.4f} B (8-bit blockwise) + {small:,} in tensors under "
                   f"{BNB_MIN_8BIT_SIZE} elements x 2 x 4 B")
    # Adafactor (transformers.optimization.Adafactor, beta1=None): a factored second moment, one row
    # and one column vector per matrix, a full one for vectors; no first moment.
    if modules:
        b = 0
        for m in modules:
            if m.linear:
                b += (m.in_features + m.out_features) * state + (m.params - m.in_features * m.out_features) * state
            else:
                b += m.params * state
        return b, f"factored second moments (rows + columns per matrix) x {state} B"
    return n * state, f"{n:,} x {state} B (LoRA factors are small: counted unfactored)"


@dataclass(frozen=True)
class _Activations:
    saved: int
    transient: int
    transient_formula: str


def _norm_bytes(arch_config_rms: bool, act: int) -> int:
    """Bytes a norm saves per hidden element: transformers' RMSNorm upcasts its input to fp32 and
    `pow` saves it (LlamaRMSNorm.forward); LayerNorm saves its input at the compute dtype."""
    return 4 if arch_config_rms else act


def activation_bytes(arch: Architecture, first_layer: Sequence[Module], targets: Sequence[Module],
                     settings: TrainSettings, lay: _Layout) -> tuple[_Activations, str]:
    """The activations autograd saves per GPU for a micro-batch, and the backward's largest
    transient; `first_layer`: the linears of the first decoder block, whose widths every block has."""
    T = settings.micro_batch_size * settings.seq_len
    s = settings.seq_len
    a = lay.act
    h, heads, kv, d = arch.hidden_size, arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim
    method = settings.method
    full_weights = method in ("full", "freeze")
    targeted = {m.name for m in targets}
    layer_modules = list(first_layer)
    roles = {m.name: _role(m, h) for m in layer_modules}
    adapted = [m for m in layer_modules if m.name in targeted]

    def trains(role: str) -> bool:
        return full_weights or any(roles[m.name] == role for m in adapted)

    def lora_copies(*role: str) -> int:
        """Each adapted module's own saved input: PEFT casts the input to the adapter's dtype
        (peft/tuners/lora/layer.py Linear.forward, `x = self._cast_input_dtype(x, lora_A.weight.dtype)`),
        and autocast casts it back for the matmul, so lora_A saves a 16-bit copy; with dropout it
        saves the dropped input and the mask (1 B) instead."""
        n = 0.0
        for m in adapted:
            if roles[m.name] not in role:
                continue
            # a routed expert sees top-k of the experts' tokens: k / E of every token on average
            share = (arch.num_experts_per_tok or 1) / arch.num_experts if ".experts." in m.name and \
                arch.num_experts else 1.0
            if settings.lora_dropout > 0:
                n += share * m.in_features * (a + 1)
            elif lay.weight != a and not full_weights:  # fp32 adapters over a 16-bit base
                n += share * m.in_features * a
        return int(n)

    norm = 4 if arch.model_type not in _LAYERNORM_MODELS and a == 2 else a
    # The MLP's width and whether it is gated, from the first layer's real shapes: two input-side
    # projections (gate and up; Qwen's w1 and w2) or a fused gate_up_proj make a gated MLP.
    up_side = [m for m in layer_modules if roles[m.name] in ("gate", "up")]
    fused = any(m.short == "gate_up_proj" for m in up_side)
    gated = fused or len(up_side) >= 2
    widths = [m.out_features // (2 if m.short == "gate_up_proj" else 1) for m in up_side]
    inter = max(widths, default=0) or arch.intermediate_size or 4 * h
    # Attention (per token): the norm's saved input; q/k/v's shared input when they train; what
    # the attention kernel saves: q, k, v, its output and the fp32 logsumexp per head (flash
    # attention 2 and SDPA's flash / memory-efficient kernels); SDPA's path in transformers repeats
    # k and v to every head first (integrations/sdpa_attention.py repeat_kv) and copies the
    # output before o_proj (transpose + reshape); eager keeps the fp32 softmax and its 16-bit copy.
    attn = norm * h + (a * h if full_weights else 0)
    if trains("qkv"):
        attn += a * h
    attn += lora_copies("qkv")
    impl = settings.attn_implementation
    kv_width = heads * d if impl != "flash_attention_2" else kv * d
    attn += a * heads * d + 2 * a * kv_width + a * heads * d + 4 * heads
    if impl == "eager":
        attn += (4 + a) * heads * s if a == 2 else 4 * heads * s
    if trains("o") and impl != "flash_attention_2":
        attn += a * heads * d
    attn += lora_copies("o")
    # The MLP: the norm's input; gate/up's shared input when they train; SiLU's input and the
    # product's two factors (SwiGLU), or the activation's input (plain MLP); down's input when it trains.
    mlp = norm * h + (a * h if full_weights else 0)
    moe = arch.num_experts or 0
    if moe:
        k = arch.num_experts_per_tok or 1
        mi = arch.moe_intermediate_size or inter
        mlp += 4 * moe  # the router's fp32 logits
        expert = (3 * a * mi if gated else a * mi) + (a * mi + a * h if full_weights else 0)
        mlp += k * expert
        if arch.num_shared_experts:
            si = mi * arch.num_shared_experts
            mlp += 3 * a * si + (a * si if full_weights else 0)
    else:
        if trains("up") or trains("gate"):
            mlp += a * h
        mlp += 3 * a * inter if gated else a * inter
        if trains("down"):
            mlp += a * inter
    mlp += lora_copies("gate", "up", "down")
    per_token_layer = attn + mlp
    layers = arch.num_hidden_layers
    # Freeze tuning: the frozen layers below the first trainable one save nothing.
    # The backward's largest transient besides the logits is hfmem's own model, not a measured
    # constant: with checkpointing, one layer recomputed (its whole saved set) plus the incoming and
    # outgoing gradients of the hidden state; without, the gradients of the widest activation of
    # one layer (and eager attention's fp32 score gradient). The logits' peak is larger in every
    # ledger row, so these have not been checked against a measurement on their own.
    grad_layers = min(layers, FREEZE_TRAINABLE_LAYERS) if method == "freeze" else layers
    if settings.gradient_checkpointing:
        saved = grad_layers * a * h * T
        formula = (f"{grad_layers} layers' inputs x {a * h:,} B x {T:,} tokens (gradient checkpointing), "
                   f"one layer recomputed in the backward")
        transient = per_token_layer * T + 2 * a * h * T
        transient_formula = f"one layer recomputed: {per_token_layer:,} B x {T:,} tokens + its gradients"
    else:
        saved = grad_layers * per_token_layer * T
        formula = f"{grad_layers} layers x {per_token_layer:,} B per token x {T:,} tokens"
        transient = 2 * a * max(h, inter) * T + (4 * heads * s * T if impl == "eager" else 0)
        transient_formula = f"one layer's gradients: {transient // T:,} B x {T:,} tokens"
    final = norm * h * T  # the final norm's saved input
    return _Activations(saved + final, transient, transient_formula), formula + " + the final norm"


def logits_bytes(arch: Architecture, settings: TrainSettings, lay: _Layout) -> tuple[int, str]:
    T = settings.micro_batch_size * settings.seq_len
    vocab = arch.vocab_size or 0
    if settings.fused_cross_entropy:
        b = FUSED_CE_BYTES_PER_HIDDEN * T * arch.hidden_size
        return b, f"fused linear cross-entropy: {T:,} tokens x {arch.hidden_size:,} x {FUSED_CE_BYTES_PER_HIDDEN} B"
    return LOGIT_BYTES * T * vocab, (f"{T:,} tokens x {vocab:,} vocab x {LOGIT_BYTES} B (fp32 log-softmax and its "
                                     "gradient)")


# Model types whose decoders use nn.LayerNorm (saves its input at the compute dtype) rather than an
# RMSNorm that upcasts to fp32 (transformers' modeling_gpt2/gpt_neox/falcon/phi/bloom/opt/gptj/
# gpt_bigcode/mpt/stablelm: self.ln_1 / input_layernorm = nn.LayerNorm).
_LAYERNORM_MODELS = ("gpt2", "gpt_neox", "falcon", "phi", "bloom", "opt", "gptj", "gpt_bigcode", "mpt", "stablelm")
_ATTN_PARENT = re.compile(r"attn|attention")
_QKV_NAMES = ("q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "c_attn", "W_pack", "Wqkv",
              "query", "key", "value", "q", "k", "v")
_GATE_NAMES = ("gate_proj", "w1", "gate_up_proj")


def _role(m: Module, hidden: int) -> str:
    """What a Linear does in its block, from its name and its real shape: qkv (reads the hidden
    state into attention), o (attention's output), gate / up (the MLP's input side, reading the
    hidden state) or down (the MLP's output). Qwen (v1)'s w1 and w2 both read the hidden state and
    its mlp.c_proj writes it; Mixtral's w1 / w3 read it and w2 writes it: the shapes tell them apart."""
    parent = m.name.rpartition(".")[0]
    in_attention = bool(_ATTN_PARENT.search(parent.rpartition(".")[2] or parent))
    if in_attention:
        return "qkv" if m.short in _QKV_NAMES else "o"
    if m.in_features == hidden and m.out_features != hidden:
        return "gate" if m.short in _GATE_NAMES else "up"
    return "down"


def _refuse_unmodelled(arch: Architecture, settings: TrainSettings) -> None:
    """Layouts whose activations are not modelled are refused, not guessed."""
    kinds = set(arch.layer_kinds)
    odd = kinds - {LayerKind.FULL, LayerKind.SLIDING}
    if arch.encoder_layers:
        raise ConfigError("hfmem train models decoder-only language models; this is an encoder-decoder model")
    if odd:
        names = ", ".join(sorted(k.value for k in odd))
        if settings.lora_target and not any(k in ATTENTION_KINDS for k in kinds) and \
                any(t in ("q_proj", "k_proj", "v_proj", "o_proj") for t in settings.lora_target):
            raise UsageError(f"--lora-target {','.join(settings.lora_target)}: this model has no attention "
                             f"layers ({names})")
        raise ConfigError(f"hfmem train does not model the activations of {names} layers yet")
    if arch.vocab_size is None:
        raise ConfigError("config.json has no vocab_size: the logits cannot be sized")


# --- rules of thumb and fit ---------------------------------------------------------------------

def rules_of_thumb(est: TrainingEstimate, weights_bytes: int) -> list[tuple[str, int]]:
    """The rules people quote, computed for this model, shown beside the estimate (never instead)."""
    p = est.all_params
    rules = [
        ("training needs 3-4x the inference memory (inference ~1.2x the weights; shown at 3.5x)",
         int(3.5 * 1.2 * weights_bytes)),
        ("full fine-tuning: about 16 bytes per parameter plus activations", 16 * p),
    ]
    if est.settings.method in ("lora", "qlora"):
        rules.append(("LoRA: about 2 bytes per parameter", 2 * p))
    if est.settings.method == "qlora":
        # QLoRA paper: "finetune a 65B parameter model on a single 48GB GPU" (Dettmers et al. 2023, abstract)
        rules.append(("QLoRA: a 65B model on one 48 GB GPU", int(48e9 * p / 65e9)))
    return rules


@dataclass(frozen=True)
class TrainFit:
    gpu: GPU
    count: int
    zero: int
    estimate: TrainingEstimate
    usable_bytes: int
    max_seq_len: int  # 0: not even one token's batch fits
    max_micro_batch_size: int
    gpus_needed: int | None  # at ZeRO-3 when the asked stage cannot, None: no count up to the cap
    gpus_needed_zero: int = 3
    fits_with_checkpointing: bool = False  # does not fit, but would with --gradient-checkpointing

    @property
    def fits(self) -> bool:
        return self.estimate.total_bytes <= self.usable_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu.name, "count": self.count, "zero": self.zero,
            "train_precision": self.estimate.precision, "fits": self.fits,
            "total_bytes": self.estimate.total_bytes, "usable_bytes": self.usable_bytes,
            "max_seq_len": self.max_seq_len, "max_micro_batch_size": self.max_micro_batch_size,
            "gpus_needed": self.gpus_needed, "gpus_needed_zero": self.gpus_needed_zero,
            "fits_with_gradient_checkpointing": self.fits_with_checkpointing,
        }


#: Our policy: the searches' upper ends (GPUs at ZeRO-3; sequences per micro-batch).
MAX_TRAIN_GPUS = 1024
MAX_MICRO_BATCH = 1 << 16


def train_fit(cp: Checkpoint, arch: Architecture, settings: TrainSettings, gpu: GPU,
              modules: Sequence[Module] | None = None, seq_cap: int | None = None) -> TrainFit:
    """Whether one training step fits each GPU of `settings.count` (the whole of CUDA's memory:
    training has no utilization cap), the longest --seq-len and largest --micro-batch-size that fit,
    and how many GPUs it needs (at the asked ZeRO stage when it shards, else at ZeRO-3)."""
    modules = modules_of(cp) if modules is None else modules
    usable = gpu.cuda_bytes
    prep = prepare(modules, arch, settings)

    def total(s: TrainSettings) -> int:
        return estimate_training(cp, arch, s, gpu, modules, prep).total_bytes

    est = estimate_training(cp, arch, settings, gpu, modules, prep)
    cap = seq_cap or arch.max_position_embeddings or 1 << 20
    max_seq = _largest(lambda n: total(replace(settings, seq_len=n)) <= usable, cap)
    max_mb = _largest(lambda n: total(replace(settings, micro_batch_size=n)) <= usable, MAX_MICRO_BATCH)
    stage = settings.zero if settings.zero else 3
    needed: int | None = settings.count if est.total_bytes <= usable else None
    if needed is None:
        def fits_on(n: int) -> bool:
            return n >= 2 and total(replace(settings, count=n, zero=stage)) <= usable
        if fits_on(MAX_TRAIN_GPUS):
            lo, hi = 2, MAX_TRAIN_GPUS
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if fits_on(mid) else (mid + 1, hi)
            needed = lo
    with_gc = (est.total_bytes > usable and not settings.gradient_checkpointing
               and total(replace(settings, gradient_checkpointing=True)) <= usable)
    return TrainFit(gpu, settings.count, settings.zero, est, usable, max_seq, max_mb, needed,
                    settings.zero if needed == settings.count else stage, with_gc)


def _largest(ok: Any, cap: int) -> int:
    """The largest n in 1..cap with ok(n) (ok is monotone), 0 when none."""
    if not ok(1):
        return 0
    lo, hi = 1, cap
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


