"""Hostile input (issue 7): property-based fuzzing of everything hfmem parses from a stranger.

One contract everywhere: an input gives a consistent record, or raises an `HfmemError` subclass
whose message is one line. Any other exception (KeyError, TypeError, RecursionError, OverflowError,
MemoryError...) is a bug: a user would see exit 1 and a traceback. Every bug these properties found
is pinned below as an `@example` or a plain test, so it stays fixed whatever Hypothesis draws.

Budget: a few thousand cases in all, well under a minute on two cores.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import math
import ntpath
import os
import posixpath
import struct
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as save_safetensors

from inspector.api import ModelReport, inspect_model
from inspector.arch import KNOWN_MODEL_TYPES, Architecture, LayerKind, parse_architecture
from inspector.checkpoint import Checkpoint, WeightPlan, is_safe_filename, load_config_json, shards_from_index
from inspector.errors import ConfigError, ExitCode, HeaderError, HfmemError, NotFoundError, UsageError
from inspector.estimate import Settings, estimate_memory
from inspector.header import (
    DTYPE_BITS,
    MAX_HEADER_BYTES,
    PREFIX_BYTES,
    Header,
    decode_header_json,
    header_from_dict,
    parse_header,
    read_length_prefix,
)
from inspector.hub import hub_url
from inspector.local import read_header_file
from inspector.params import count_parameters
from inspector.report import render_json, render_table
from inspector.source import Source, SourceKind, parse_source

# No example database (nothing written into the checkout), no per-example deadline (CI machines
# vary); the autouse `clean_env` fixture runs once per test, not per example, which is what we want.
FUZZ = settings(
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# HFMEM_FUZZ_SCALE=20 multiplies every example count, for a long local run.
SCALE = max(1, int(os.environ.get("HFMEM_FUZZ_SCALE", "1")))


def cases(n: int) -> settings:
    return settings(FUZZ, max_examples=n * SCALE)


U64_MAX = 2**64 - 1


def one_line(error: HfmemError) -> None:
    """A refusal a user can read: an HfmemError with a non-empty one-line message."""
    message = str(error)
    assert message and "\n" not in message and "\r" not in message, repr(message)


# --- 1. safetensors headers ----------------------------------------------------------------------


def check_header(h: Header, file_bytes: int | None) -> None:
    """What a parsed header promises: byte sizes equal offset spans, contiguous, inside the file."""
    assert 2 <= h.header_bytes <= MAX_HEADER_BYTES
    assert len({t.name for t in h.tensors}) == len(h.tensors)
    position = 0
    for t in h.tensors:
        assert t.dtype in DTYPE_BITS
        assert all(type(d) is int and 0 <= d <= U64_MAX for d in t.shape)
        assert t.begin_offset == position <= t.end_offset <= U64_MAX
        assert t.nbytes * 8 == math.prod(t.shape) * DTYPE_BITS[t.dtype]
        position = t.end_offset
    assert h.data_bytes == position
    if file_bytes is not None:
        assert PREFIX_BYTES + h.header_bytes + h.data_bytes == file_bytes == h.file_bytes


def parse_or_refuse(data: bytes, file_bytes: int | None = None) -> Header | None:
    try:
        h = parse_header(data, file_bytes=file_bytes, name="shard.safetensors")
    except HeaderError as e:  # UnknownDtype is a HeaderError too
        one_line(e)
        assert str(e).startswith("shard.safetensors: ")
        return None
    check_header(h, file_bytes)
    return h


def frame(body: bytes, data_bytes: int = 0) -> bytes:
    return struct.pack("<Q", len(body)) + body + b"\0" * data_bytes


DTYPES = st.sampled_from(sorted(DTYPE_BITS))
TENSOR_NAMES = st.text(min_size=1, max_size=10).filter(lambda s: s != "__metadata__")
BIG_INTS = st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**65, 10**30, 10**400, -1, -(2**63)])
HOSTILE_INTS = st.one_of(st.integers(-3, 70), st.integers(-(2**70), 2**70), BIG_INTS)
JUNK = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=6) | HOSTILE_INTS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
# Values a hostile header puts where dtype, shape or data_offsets belong.
HOSTILE_FIELD = st.one_of(
    JUNK,
    DTYPES.map(str.lower),
    st.lists(HOSTILE_INTS, max_size=4),
    st.lists(BIG_INTS, min_size=1, max_size=3),
    st.lists(st.floats(allow_nan=True), max_size=3),
)


@st.composite
def tensor_tables(draw: st.DrawFn, max_tensors: int = 6) -> dict:
    """A valid header as a dict: unique names, data laid out in an order unrelated to key order."""
    names = draw(st.lists(TENSOR_NAMES, max_size=max_tensors, unique=True))
    sized = []
    for name in names:
        dtype = draw(DTYPES)
        shape = draw(st.lists(st.integers(0, 6), max_size=3))
        if math.prod(shape) * DTYPE_BITS[dtype] % 8:
            shape.append(8)  # F4 / F6: whole bytes only
        sized.append((name, dtype, shape, math.prod(shape) * DTYPE_BITS[dtype] // 8))
    header: dict = {}
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3))
    position = 0
    offsets = {}
    for i in draw(st.permutations(range(len(sized)))):
        offsets[i] = [position, position + sized[i][3]]
        position += sized[i][3]
    for i, (name, dtype, shape, _) in enumerate(sized):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets[i]}
    return header


def data_size(header: dict) -> int:
    return max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)


def encode(header: dict, *, ascii_only: bool = True, pad: bool = True) -> bytes:
    raw = json.dumps(header, ensure_ascii=ascii_only).encode()
    return raw + b" " * ((8 - len(raw) % 8) % 8 if pad else 0)


HUGE_DIMS = st.lists(st.sampled_from([0, 1, 3, 2**16, 2**31, 2**32, 2**33, 2**58, 2**61, 2**62, 2**63, U64_MAX]),
                    min_size=1, max_size=4)


@st.composite
def hostile_headers(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """A valid header, then a few corruptions of its JSON, its length prefix, its data or the file size."""
    header = draw(tensor_tables())
    names = [k for k in header if k != "__metadata__"]
    data_len = max(0, data_size(header) + draw(st.sampled_from([0, 0, 0, 0, 0, -1, 1])))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["field", "field", "del", "entry", "shift", "metadata", "drop", "copy", "huge",
                                   "huge", "subbyte"]))
        name = draw(st.sampled_from(names)) if names else None
        if op == "metadata":
            header["__metadata__"] = draw(JUNK | st.dictionaries(st.text(max_size=3), st.text(max_size=3)))
        elif name is None or name not in header:
            continue
        elif op in ("field", "del", "shift", "subbyte") and not isinstance(header[name], dict):
            continue
        elif op == "field":
            header[name][draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(HOSTILE_FIELD)
        elif op == "del":
            header[name].pop(draw(st.sampled_from(["dtype", "shape", "data_offsets"])), None)
        elif op == "entry":
            header[name] = draw(JUNK)
        elif op == "shift" and isinstance(header[name].get("data_offsets"), list) and len(
            header[name]["data_offsets"]
        ) == 2:
            which = draw(st.integers(0, 1))
            header[name]["data_offsets"][which] += draw(st.integers(-3, 3) | BIG_INTS)
        elif op == "huge":  # a shape near or past u64, with offsets that agree with it (or almost)
            dtype, shape = draw(DTYPES), draw(HUGE_DIMS)
            end = math.prod(shape) * DTYPE_BITS[dtype] // 8 + draw(st.sampled_from([0, 0, 1]))
            end = draw(st.sampled_from([end, min(end, U64_MAX), 0]))
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [0, end]}
        elif op == "subbyte":  # F4 / F6 elements that do not fill whole bytes
            header[name]["dtype"] = draw(st.sampled_from(["F4", "F6_E2M3", "F6_E3M2"]))
            header[name]["shape"] = [draw(st.sampled_from([1, 3, 5, 6, 7]))]
        elif op == "drop":
            del header[name]
        elif op == "copy":
            header[draw(TENSOR_NAMES)] = copy.deepcopy(header[name])
    try:
        body = encode(header, ascii_only=draw(st.booleans()), pad=draw(st.booleans()))
    except (TypeError, ValueError):  # a value json.dumps refuses (an int of 5000 digits): not a header
        body = b"{}      "
    claimed = len(body)
    # At most one corruption of the frame, and rarely: most cases should reach the tensor table.
    frame_op = draw(st.sampled_from(["none"] * 8 + ["duplicate", "utf8", "prefix", "prefix", "truncate"]))
    if frame_op == "duplicate" and names and body.rstrip().endswith(b"}"):  # json.dumps never writes one
        body = body.rstrip()[:-1] + b"," + json.dumps(names[0]).encode() + b":{}}"
        claimed = len(body)
    elif frame_op == "utf8":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\x00"])) + body[at:]
        claimed = len(body)
    elif frame_op == "prefix":
        claimed = draw(st.integers(-3, 3).map(lambda d: max(0, len(body) + d)) | st.integers(0, U64_MAX))
    data = struct.pack("<Q", claimed) + body + b"\0" * data_len
    if frame_op == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    size = draw(st.sampled_from(["none", "exact", "exact", "exact", "other"]))
    file_bytes = {"none": None, "exact": len(data)}.get(size, draw(st.integers(0, 2**40)))
    return data, file_bytes


@cases(1200)
@given(hostile_headers())
# Regressions: an unhashable dtype was a TypeError; shapes whose element or bit count overflows u64
# were accepted (safetensors refuses them: ValidationOverflow).
@example((frame(b'{"x":{"dtype":["F32"],"shape":[1],"data_offsets":[0,4]}}', 4), None))
@example((frame(b'{"x":{"dtype":{},"shape":[1],"data_offsets":[0,4]}}', 4), None))
@example((frame(json.dumps({"x": {"dtype": "U8", "shape": [2**64, 2**64], "data_offsets": [0, 2**128]}}).encode()),
          None))
@example((frame(json.dumps({"x": {"dtype": "U8", "shape": [2**33, 2**31, 0], "data_offsets": [0, 0]}}).encode()),
          None))
@example((frame(json.dumps({"x": {"dtype": "F64", "shape": [2**58], "data_offsets": [0, 2**61]}}).encode()), None))
def test_hostile_headers_parse_consistently_or_raise_header_error(case: tuple[bytes, int | None]) -> None:
    parse_or_refuse(*case)


@cases(300)
@given(st.binary(max_size=80), st.one_of(st.none(), st.integers(0, 200)))
@example(b"", None)
@example(b"\xff" * 8, None)
@example(b"\x02" + b"\0" * 7 + b"{}", 10)
def test_random_bytes(data: bytes, file_bytes: int | None) -> None:
    parse_or_refuse(data, file_bytes)


@cases(300)
@given(st.binary(max_size=60), st.booleans())
def test_random_bytes_behind_a_correct_prefix(body: bytes, brace: bool) -> None:
    body = (b"{" + body) if brace else body
    parse_or_refuse(frame(body))
    parse_or_refuse(frame(body), file_bytes=PREFIX_BYTES + len(body))


@cases(300)
@given(st.one_of(st.integers(0, U64_MAX), st.integers(MAX_HEADER_BYTES - 2, MAX_HEADER_BYTES + 2), st.integers(0, 9)))
def test_length_prefix_alone_decides(n: int) -> None:
    """8 bytes are enough to refuse a header over the spec's cap (or too small to hold `{}`)."""
    prefix = struct.pack("<Q", n)
    try:
        assert read_length_prefix(prefix) == n
    except HeaderError as e:
        one_line(e)
        assert n > MAX_HEADER_BYTES or n < 2
        return
    assert 2 <= n <= MAX_HEADER_BYTES
    # A prefix claiming more than the file holds is refused before the header is read.
    with pytest.raises(HeaderError, match="runs past the end"):
        parse_header(prefix, file_bytes=PREFIX_BYTES + n - 1)


def test_huge_prefix_allocates_nothing(tmp_path: Path) -> None:
    """A 10-byte file claiming a header at the cap: refused from its size, not after a 100 MB read."""
    path = tmp_path / "bomb.safetensors"
    path.write_bytes(struct.pack("<Q", MAX_HEADER_BYTES) + b"{}")
    tracemalloc.start()
    try:
        with pytest.raises(HeaderError, match="runs past the end"):
            read_header_file(path)
        with pytest.raises(HeaderError, match="exceeds the spec's limit"):
            parse_header(struct.pack("<Q", U64_MAX))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_many_huge_dims_are_refused_fast() -> None:
    """300k dims of 2**64 - 1 in a 6 MB header: multiplying them all took minutes, then formatting
    the byte count raised ValueError (more than 4300 digits)."""
    body = ('{"x":{"dtype":"U8","shape":[' + ",".join([str(U64_MAX)] * 300_000) + '],"data_offsets":[0,1]}}').encode()
    started = time.monotonic()
    with pytest.raises(HeaderError, match="overflows a 64-bit size"):
        parse_header(frame(body))
    assert time.monotonic() - started < 10


@cases(40)
@given(st.integers(1, 100_000), st.sampled_from(["[", '{"a":']))
@example(100_000, "[")
@example(100_000, '{"a":')
def test_deep_nesting(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = '{"x":' + opener * depth + "1" * (opener == '{"a":') + closer * depth + "}"
    parse_or_refuse(frame(text.encode()))
    try:
        load_config_json(text, "config.json")
    except ConfigError as e:
        one_line(e)


@cases(200)
@given(tensor_tables(), st.booleans(), st.booleans())
def test_round_trip_of_valid_tables(header: dict, ascii_only: bool, pad: bool) -> None:
    body = encode(header, ascii_only=ascii_only, pad=pad)
    data = frame(body, data_size(header))
    h = parse_header(data, file_bytes=len(data))
    check_header(h, len(data))
    assert h.to_dict() == header
    assert decode_header_json(body) == header
    assert header_from_dict(header, header_bytes=len(body)).tensors == h.tensors


# Every dtype numpy has and safetensors writes.
NUMPY_DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16, "F16": np.float16,
    "I32": np.int32, "U32": np.uint32, "F32": np.float32, "F64": np.float64, "I64": np.int64, "U64": np.uint64,
}


# At least one tensor: safetensors 0.8 writes `{},"__metadata__":{}}` for no tensors and metadata {}.
NUMPY_TABLES = st.dictionaries(
    TENSOR_NAMES, st.tuples(st.sampled_from(sorted(NUMPY_DTYPES)), st.lists(st.integers(0, 4), max_size=3)),
    min_size=1, max_size=6,
)


@cases(150)
@given(
    tensors=NUMPY_TABLES,
    metadata=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2)),
)
def test_round_trip_through_the_safetensors_library(tmp_path: Path, tensors: dict, metadata: dict | None) -> None:
    arrays = {name: np.zeros(shape, NUMPY_DTYPES[dtype]) for name, (dtype, shape) in tensors.items()}
    data = save_safetensors(arrays, metadata=metadata)
    h = parse_header(data, file_bytes=len(data))
    check_header(h, len(data))
    assert {t.name: (t.dtype, list(t.shape), t.nbytes) for t in h.tensors} == {
        name: (dtype, shape, arrays[name].nbytes) for name, (dtype, shape) in tensors.items()
    }
    raw = json.loads(data[PREFIX_BYTES : PREFIX_BYTES + h.header_bytes])
    assert {t.name: [t.begin_offset, t.end_offset] for t in h.tensors} == {
        k: v["data_offsets"] for k, v in raw.items() if k != "__metadata__"
    }
    assert h.metadata == metadata
    path = tmp_path / "m.safetensors"
    path.write_bytes(data)
    assert read_header_file(path) == h


# --- 2. config.json ------------------------------------------------------------------------------

CONFIGS = ROOT / "fixtures" / "configs"
SNAPSHOTS = ROOT / "fixtures" / "snapshots"


def _snapshot_json(path: Path) -> dict:
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)["json"]


FIXTURE_CONFIGS = {p.stem: json.loads(p.read_text()) for p in sorted(CONFIGS.glob("*.json"))}
FIXTURE_CONFIGS.update(
    {f"snapshot:{p.name}": _snapshot_json(p)["config.json"] for p in sorted(SNAPSHOTS.glob("*.json*"))}
)
# Families no fixture covers, from the fields of their transformers config classes.
SEED_CONFIGS = {
    **FIXTURE_CONFIGS,
    "llama4_text": {"model_type": "llama4_text", "num_hidden_layers": 8, "hidden_size": 64, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "head_dim": 16, "attention_chunk_size": 8192,
                    "no_rope_layers": [1, 1, 1, 0, 1, 1, 1, 0], "num_local_experts": 4, "num_experts_per_tok": 1,
                    "intermediate_size": 128, "vocab_size": 1000},
    "nemotron_h": {"model_type": "nemotron_h", "hybrid_override_pattern": "M-M*-ME", "hidden_size": 64,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "mamba_num_heads": 4,
                   "mamba_head_dim": 16, "n_groups": 2, "ssm_state_size": 16, "conv_kernel": 4, "vocab_size": 1000},
    "gpt_bigcode": {"model_type": "gpt_bigcode", "n_layer": 2, "n_embd": 64, "n_head": 4, "multi_query": True,
                    "n_positions": 2048, "vocab_size": 1000},
    "mamba": {"model_type": "mamba", "num_hidden_layers": 2, "hidden_size": 64, "state_size": 16, "expand": 2,
              "conv_kernel": 4, "vocab_size": 1000},
}
_NESTED = ("text_config", "llm_config", "language_config")
# Every key the fixtures use, at the top and in a nested text config, plus keys that switch
# branches of the reader (layer patterns, MLA, state-space dimensions).
CONFIG_KEYS = sorted(
    {k for c in SEED_CONFIGS.values() for k in c}
    | {k for c in SEED_CONFIGS.values() for n in _NESTED if isinstance(c.get(n), dict) for k in c[n]}
    | {
        "layer_types", "no_rope_layers", "attention_chunk_size", "hybrid_override_pattern", "multi_query",
        "multi_query_attention", "multi_query_group_num", "new_decoder_architecture", "attn_layer_period",
        "attn_layer_offset", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "sliding_window",
        "use_sliding_window", "max_window_layers", "sliding_window_pattern", "full_attention_interval",
        "linear_conv_kernel_dim", "linear_num_key_heads", "linear_key_head_dim", "linear_num_value_heads",
        "linear_value_head_dim", "mamba_num_heads", "mamba_head_dim", "n_groups", "ssm_state_size",
        "conv_kernel", "expand", "state_size", "mamba_d_state", "mamba_d_conv", "mamba_expand",
        "num_experts", "num_experts_per_tok", "n_shared_experts", "moe_intermediate_size",
        "num_decoder_layers", "is_encoder_decoder", "head_dim", "num_key_value_heads", "text_config",
        "num_nextn_predict_layers", "quantization_config", "torch_dtype",
    }
)
ABSURD = st.sampled_from([0, -1, -(2**63), 1, 2, 3, 10**6, 10**12, 10**30, 2**63, 2**64, 10**400, 10**4000])
CONFIG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 130),
    ABSURD,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["full_attention", "sliding_attention", "linear_attention", "mamba", "M*-E", "M", "", "bfloat16"]),
    st.text(alphabet="M*-EX", max_size=9),
    st.lists(st.one_of(st.integers(-1, 2), st.none(), st.sampled_from(
        ["full_attention", "sliding_attention", "chunked_attention", "linear_attention", "mamba", "mlp", "x"])),
        max_size=8),
    st.dictionaries(st.sampled_from(CONFIG_KEYS), st.integers(-1, 64) | st.none() | st.text(max_size=3),
                    max_size=4),
)


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict:
    """A real config, then keys dropped, retyped, made absurd, its model_type swapped or its text
    config replaced."""
    config = copy.deepcopy(SEED_CONFIGS[draw(st.sampled_from(sorted(SEED_CONFIGS)))])
    for _ in range(draw(st.integers(1, 5))):
        target = config
        nested = [k for k in _NESTED if isinstance(config.get(k), dict)]
        if nested and draw(st.booleans()):
            target = config[nested[0]]
        op = draw(st.sampled_from(["drop", "set", "set", "set", "model_type", "nest"]))
        if op == "drop" and target:
            target.pop(draw(st.sampled_from(sorted(target))))
        elif op == "set":  # half the time a key the config has, half any key the reader knows
            target[draw(st.sampled_from(sorted(target) or CONFIG_KEYS) | st.sampled_from(CONFIG_KEYS))] = draw(
                CONFIG_VALUES)
        elif op == "model_type":
            target["model_type"] = draw(st.sampled_from(sorted(KNOWN_MODEL_TYPES)) | st.text(max_size=4))
        elif op == "nest":
            other = copy.deepcopy(SEED_CONFIGS[draw(st.sampled_from(sorted(SEED_CONFIGS)))])
            config[draw(st.sampled_from(_NESTED))] = draw(st.just(other) | CONFIG_VALUES)
    return config


def _tiny_header() -> Header:
    """A small real header with decoder-style names, so the estimate has an inventory to work on."""
    names = ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
             "model.layers.0.mlp.experts.0.down_proj.weight", "model.norm.weight", "lm_head.weight")
    data = save_safetensors({n: np.zeros((4, 8), np.float16) for n in names}, metadata={"format": "pt"})
    return parse_header(data, file_bytes=len(data))


TINY = _tiny_header()
INT_FIELDS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
              "head_dim", "vocab_size", "max_position_embeddings", "sliding_window", "attention_chunk_size",
              "kv_lora_rank", "qk_rope_head_dim", "num_experts", "num_experts_per_tok", "num_shared_experts",
              "moe_intermediate_size", "encoder_layers")


def check_architecture(a: Architecture) -> None:
    assert isinstance(a, Architecture)
    for name in INT_FIELDS:
        v = getattr(a, name)
        assert v is None or (type(v) is int and v >= 0), (name, v)
    assert a.num_hidden_layers > 0 and a.hidden_size > 0
    assert len(a.layer_kinds) == a.num_hidden_layers
    kinds = set(a.layer_kinds)
    if kinds & {LayerKind.FULL, LayerKind.SLIDING, LayerKind.CHUNKED}:
        assert a.num_attention_heads > 0 and a.num_key_value_heads > 0 and a.head_dim > 0
    if LayerKind.SLIDING in kinds:
        assert a.sliding_window and a.sliding_window > 0
    if LayerKind.MLA in kinds:
        assert a.kv_lora_rank and a.kv_lora_rank > 0
    if kinds & {LayerKind.LINEAR, LayerKind.MAMBA}:
        assert a.state is not None and a.state.conv_kernel > 0 and a.state.elements > 0
    json.dumps(a.to_dict())


def run_estimate(config: dict, arch: Architecture) -> None:
    """The rest of `inspect_model` on the architecture: counts, estimate, JSON and the table."""
    cp = Checkpoint(name="fuzz", files={"model.safetensors": TINY.file_bytes}, json_files={"config.json": config},
                    headers={"model.safetensors": TINY}, plan=WeightPlan("safetensors", None, ("model.safetensors",)))
    try:
        params = count_parameters(cp)
        memory = estimate_memory(arch, params, Settings())
    except HfmemError as e:
        one_line(e)
        return
    for e in memory.estimates:
        assert min(e.weights_bytes, e.kv_cache_bytes, e.activation_bytes, e.overhead_bytes) >= 0
    report = ModelReport(Source(SourceKind.LOCAL_DIR, path=Path("fuzz")), cp, params, arch, memory)
    json.loads(render_json(report))
    render_table(report)


def architecture_or_refusal(config: object) -> Architecture | None:
    try:
        a = parse_architecture(config)  # type: ignore[arg-type]
    except ConfigError as e:
        one_line(e)
        return None
    check_architecture(a)
    return a


def test_every_fixture_json_entry() -> None:
    """Every JSON file of every snapshot (configs, indexes, quantize configs) read as a config."""
    for path in sorted(SNAPSHOTS.glob("*.json*")):
        for value in _snapshot_json(path).values():
            architecture_or_refusal(value)
    for config in FIXTURE_CONFIGS.values():
        a = architecture_or_refusal(config)
        assert a is not None
        run_estimate(config, a)


@cases(500)
@given(mutated_configs())
# Regressions, each an AssertionError, ZeroDivisionError or TypeError before, or an Architecture
# with a negative or zero count, or a per-layer table for 10**12 layers.
@example({"model_type": "jamba", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
          "attn_layer_period": 0})
@example({"model_type": "mamba", "num_hidden_layers": 4, "hidden_size": 64, "conv_kernel": 0})
@example({"model_type": "mamba", "num_hidden_layers": 4, "hidden_size": 64, "state_size": 0})
@example({"model_type": "qwen3_next", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
          "linear_conv_kernel_dim": 0, "linear_num_key_heads": 1, "linear_key_head_dim": 1,
          "linear_num_value_heads": 1, "linear_value_head_dim": 1})
@example({"model_type": "llama4_text", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
          "attention_chunk_size": "8192"})
@example({"model_type": "llama4_text", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
          "no_rope_layers": 5})
@example({"model_type": "llama4_text", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
          "no_rope_layers": [1]})
@example({"model_type": "chatglm", "num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
          "multi_query_attention": True, "multi_query_group_num": -3})
@example({"model_type": "llama", "num_hidden_layers": 0, "hidden_size": 0, "num_attention_heads": 0})
@example({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
          "num_key_value_heads": 0})
@example({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 4, "num_attention_heads": 8})
@example({"model_type": "nemotron_h", "hybrid_override_pattern": "", "hidden_size": 64, "num_attention_heads": 4})
@example({"model_type": "nemotron_h", "num_hidden_layers": 4, "hybrid_override_pattern": "M*",
          "hidden_size": 64, "num_attention_heads": 4, "mamba_num_heads": 2, "mamba_head_dim": 8,
          "ssm_state_size": 4})
@example({"model_type": "gemma2", "num_hidden_layers": 10**12, "hidden_size": 64, "num_attention_heads": 4,
          "sliding_window": 8})
@example({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 10**4000, "num_attention_heads": 1})
def test_mutated_configs(config: dict) -> None:
    a = architecture_or_refusal(config)
    if a is not None:
        run_estimate(config, a)


@cases(300)
@given(mutated_configs(), st.sampled_from(["keep", "truncate", "byte", "nan"]), st.data())
def test_mutated_config_text(config: dict, how: str, data: st.DataObject) -> None:
    """The same through JSON text: NaN and Infinity tokens, truncation, stray bytes."""
    try:
        text = json.dumps(config).encode()
    except ValueError:  # an int json.dumps will not write: nothing to read back
        return
    if how == "truncate":
        text = text[: data.draw(st.integers(0, len(text)))]
    elif how == "byte":
        at = data.draw(st.integers(0, len(text)))
        stray = data.draw(st.sampled_from([b"\xff", b"\x00", b"NaN", b"}", b"[", b'"', b"\xc3("]))
        text = text[:at] + stray + text[at:]
    elif how == "nan":
        key = data.draw(st.sampled_from(CONFIG_KEYS)).encode()
        text = text.replace(b'"' + key + b'": ', b'"' + key + b'": ' + data.draw(
            st.sampled_from([b"NaN", b"-Infinity", b"1e400", b"1.0", b"-0"])) + b", \"_was\": ", 1)
    try:
        value = load_config_json(text, "config.json")
    except ConfigError as e:
        one_line(e)
        return
    a = architecture_or_refusal(value)
    if a is not None:
        run_estimate(value, a)


# Snapshot files (`hfmem FILE`) are the other JSON a stranger can hand over: a small one, and one
# with an index.
SNAPSHOT_BASES = [json.loads((SNAPSHOTS / n).read_text())
                  for n in ("openai-community--gpt2.json", "microsoft--Phi-3-mini-4k-instruct.json")]
SNAPSHOT_VALUES = CONFIG_VALUES | JUNK | st.sampled_from([float("inf"), float("-inf"), float("nan"), "", {}, []])


@st.composite
def mutated_snapshots(draw: st.DrawFn) -> dict:
    """A real snapshot with a few values, anywhere in it, dropped or replaced."""
    doc = copy.deepcopy(draw(st.sampled_from(SNAPSHOT_BASES)))
    for _ in range(draw(st.integers(1, 3))):
        node = doc
        for _ in range(draw(st.integers(0, 4))):  # walk down a random path
            keys = sorted(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            child = node[draw(st.sampled_from(keys))]
            if not isinstance(child, (dict, list)):
                break
            node = child
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if draw(st.booleans()):
                del node[key]
            else:
                node[key] = draw(SNAPSHOT_VALUES)
        elif isinstance(node, list) and node:
            node[draw(st.integers(0, len(node) - 1))] = draw(SNAPSHOT_VALUES)
    return doc


@cases(150)
@given(doc=mutated_snapshots())
# Regressions: `Infinity` as a size was an OverflowError; a source that is not an object an
# AttributeError; a repo_id or revision that is not a string a TypeError when the table was drawn.
@example(doc={**SNAPSHOT_BASES[0], "files": {**SNAPSHOT_BASES[0]["files"], "model.safetensors": float("inf")}})
@example(doc={**SNAPSHOT_BASES[0], "headers": {"model.safetensors": {
    **SNAPSHOT_BASES[0]["headers"]["model.safetensors"], "header_size": float("inf")}}})
@example(doc={**SNAPSHOT_BASES[0], "source": [1]})
@example(doc={**SNAPSHOT_BASES[0], "source": {"repo_id": 5, "revision": None, "path": None}})
@example(doc={**SNAPSHOT_BASES[0], "source": {"repo_id": "a/b", "revision": {"a": 1}, "path": None}})
def test_mutated_snapshots(doc: dict, tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    try:
        path.write_text(json.dumps(doc))
    except ValueError:  # an int json.dumps will not write
        return
    try:
        report = inspect_model(str(path))
    except HfmemError as e:
        one_line(e)
        return
    json.loads(render_json(report))
    render_table(report)


# --- 3. an index whose weight_map leaves the model's folder ----------------------------------------

INDEX = "model.safetensors.index.json"
SHARD = "model-00001-of-00001.safetensors"
HOSTILE_NAMES = [
    "../x.safetensors", "../outside.safetensors", "/etc/passwd", "a/../../b.safetensors", "..\\x.safetensors",
    "..\\..\\outside.safetensors", "C:\\x.safetensors", "C:x.safetensors", "%2e%2e/outside.safetensors",
    "%2e%2e%2foutside.safetensors", "..%2Foutside.safetensors", "x.safetensors\x00.txt", "\x00", "..", ".", "",
    "~/.ssh/id_rsa", "\\\\server\\share\\x.safetensors", "sub/x.safetensors", ".hidden.safetensors",
    "file:///etc/passwd", SHARD + "/", "．．/x.safetensors", "..\u2215x.safetensors", " ../x.safetensors",
    "con.safetensors", "config.json", SHARD,
]
NAME_PARTS = st.sampled_from(["..", ".", "", "x.safetensors", "outside.safetensors", "etc", "%2e%2e", "%2f",
                              "~", "C:", "\x00", "\n", "..\u2215", SHARD])
SHARD_NAMES = st.one_of(
    st.sampled_from(HOSTILE_NAMES),
    st.builds(lambda parts, sep: sep.join(parts), st.lists(NAME_PARTS, min_size=1, max_size=4),
              st.sampled_from(["/", "\\", "", "%2f", "%5c", "/./"])),
    st.text(max_size=10),
)


def stays_inside(name: str) -> bool:
    """A single path component under both POSIX and Windows rules."""
    return (
        name not in ("", ".", "..")
        and posixpath.basename(name) == name
        and ntpath.basename(name) == name
        and not ntpath.splitdrive(name)[0]
        and "\x00" not in name
    )


@cases(800)
@given(SHARD_NAMES, st.one_of(st.just(None), JUNK))
def test_index_shard_names(name: str, junk: object) -> None:
    value = name if junk is None else junk
    safe = isinstance(value, str) and is_safe_filename(value)
    try:
        shards = shards_from_index({"weight_map": {"a.weight": SHARD, "b.weight": value}}, INDEX)
    except ConfigError as e:
        one_line(e)
        assert e.exit_code == ExitCode.BAD_DATA and not safe
        return
    assert safe and all(stays_inside(s) for s in shards)


@pytest.mark.parametrize("index", [None, [], "x", {"weight_map": []}, {"weight_map": {}}, {"weight_map": None}])
def test_index_without_a_weight_map(index: object) -> None:
    with pytest.raises(ConfigError, match="no weight_map"):
        shards_from_index(index, INDEX)


# sys.addaudithook cannot be removed: one hook for the session, recording only while a test asks.
_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event in ("open", "os.scandir", "os.listdir"):
        path = args[0]
        if isinstance(path, (str, bytes, os.PathLike)):
            _OPENED.append(os.fsdecode(path))


sys.addaudithook(_audit)


def opened_during(fn: Callable[[], object]) -> list[str]:
    global _OPENED
    _OPENED = []
    try:
        fn()
    finally:
        opened, _OPENED = _OPENED, None
    return opened


def _model_dir(base: Path, name: str) -> Path:
    """base/model: a real one-shard model whose index names `name` too; base/outside.*: bait."""
    (base / "outside.safetensors").write_bytes(save_safetensors({"secret": np.zeros(3, np.float32)}))
    (base / "passwd").write_text("root:x:0:0\n")
    root = base / "model"
    root.mkdir()
    (root / SHARD).write_bytes(save_safetensors({"a.weight": np.zeros((2, 2), np.float16)}))
    (root / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 2}))
    (root / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": {"a.weight": SHARD, "b.weight": name}}))
    return root


@functools.cache
def _warm_up() -> None:
    """Read an honest folder once, unwatched: lazy imports and the GPU table load here, not later."""
    with tempfile.TemporaryDirectory() as tmp:
        inspect_model(str(_model_dir(Path(tmp), SHARD)))


@cases(120)
@given(SHARD_NAMES)
@example("../outside.safetensors")
@example("/etc/passwd")
@example("a/../../b.safetensors")
@example("..\\outside.safetensors")
@example("%2e%2e/outside.safetensors")
@example("x.safetensors\x00")
def test_local_index_never_opens_outside_the_folder(name: str) -> None:
    _warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        root = _model_dir(Path(tmp), name).resolve()
        outcome: list[object] = []

        def read() -> None:
            try:
                outcome.append(inspect_model(str(root)))
            except HfmemError as e:
                outcome.append(e)

        opened = opened_during(read)
        for path in opened:
            assert Path(path).resolve().is_relative_to(root), (name, path)
        (result,) = outcome
        if not is_safe_filename(name):
            assert isinstance(result, ConfigError) and result.exit_code == ExitCode.BAD_DATA, result
            assert "unsafe file name" in str(result)
        if isinstance(result, HfmemError):
            one_line(result)


def test_local_index_honest_folder_reads_inside(tmp_path: Path) -> None:
    """The same folder with an honest index reads fine, and only from inside."""
    _warm_up()
    root = _model_dir(tmp_path, SHARD).resolve()
    opened = opened_during(lambda: inspect_model(str(root)))
    assert opened and all(Path(p).resolve().is_relative_to(root) for p in opened)


# --- 4. repo ids and URLs --------------------------------------------------------------------------

URL_SPECIALS = list("?#%/\\@: \n\t\r\x00.~-_+&=;'\"<>|*[]{}^`") + ["..", "%2F", "%2e%2e", "é", "中", "\u2028", "ｏ"]
ID_TEXT = st.lists(st.sampled_from(URL_SPECIALS) | st.sampled_from(["org", "name", "gpt2", "a", "1"])
                   | st.characters(), min_size=1, max_size=8).map("".join)
REPO_TEXTS = st.one_of(
    ID_TEXT,
    ID_TEXT.map(lambda t: "org/" + t),
    ID_TEXT.map(lambda t: t + "/name"),
    ID_TEXT.map(lambda t: "https://huggingface.co/" + t),
    ID_TEXT.map(lambda t: "https://huggingface.co/org/" + t),
    ID_TEXT.map(lambda t: "https://huggingface.co/org/name/tree/" + t),
    ID_TEXT.map(lambda t: "https://huggingface.co/org/name/blob/main/" + t + ".safetensors"),
    ID_TEXT.map(lambda t: "https://" + t + "/org/name"),
)
# Characters that would change a URL's path, query or authority if they reached it unquoted.
URL_ALTERING = set("?#%/\\@: \t\n\r\x00;&=+<>\"'|[]{}^`")


def check_hub_source(s: Source) -> None:
    rid = s.repo_id
    assert rid is not None and rid.isascii() and rid.isprintable()
    parts = rid.split("/")
    assert 1 <= len(parts) <= 2 and all(p not in ("", ".", "..") for p in parts), rid
    assert not set("".join(parts)) & URL_ALTERING, rid
    revision = s.revision or "main"
    filename = s.filename or "config.json"
    assert all(p not in ("", ".", "..") for p in filename.split("/")), filename
    url = urlsplit(hub_url(rid, revision=revision, filename=filename, base="https://hub.example"))
    assert (url.scheme, url.netloc, url.query, url.fragment) == ("https", "hub.example", "", "")
    segments = url.path.split("/")[1:]
    # No dot segment: HTTP clients and servers remove them (RFC 3986 5.2.4), moving the request elsewhere.
    assert not set(segments) & {"", ".", ".."}, url.path
    assert segments[: len(parts) + 1] == [*parts, "resolve"]
    assert unquote(segments[len(parts) + 1]) == revision
    assert unquote("/".join(segments[len(parts) + 2 :])) == filename


@cases(600)
@given(text=REPO_TEXTS)
@example(text="~nosuchuser-hfmem/model")
@example(text="a" * 5000)
@example(text="https://[::1/org/name")
@example(text="https://huggingface.co/org/name/blob/main/%2e%2e/x.safetensors")
@example(text="https://huggingface.co/org/name/blob/main/../../other/x.safetensors")
@example(text="./missing\nline")
@example(text="https://huggingface.co/org/na\nme")
@example(text="https://huggingface.co/org/name/blob/main/%2F.safetensors")
@example(text="https://huggingface.co/org/name/tree/..")
def test_repo_ids_cannot_alter_a_url(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # an empty folder: nothing typed here names a local path by accident
    try:
        s = parse_source(text)
    except (UsageError, NotFoundError) as e:
        one_line(e)
        return
    if s.kind is SourceKind.HUB:
        check_hub_source(s)


@cases(200)
@given(ID_TEXT)
@example("..")
@example(".")
@example("\ud800")  # a byte that is not UTF-8 in argv: quote() raised UnicodeEncodeError
@example("main\n")
def test_revisions_are_quoted_whole(revision: str) -> None:
    try:
        s = parse_source("org/name", revision)
    except UsageError as e:
        one_line(e)
        return
    check_hub_source(s)


# --- the Hub's JSON answers (issue 16): whatever the revision and tree APIs say, a documented exit ---

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                      st.text(max_size=12), st.sampled_from(["config.json", "model.safetensors", "../x",
                                                             "a/../../b.safetensors", "/etc/passwd", ""]))
JSON_ANY = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                        max_leaves=8)
SIBLING = st.fixed_dictionaries({}, optional={"rfilename": JSON_ANY, "size": JSON_ANY, "type": JSON_ANY,
                                              "path": JSON_ANY})
API_ANSWER = st.fixed_dictionaries({}, optional={
    "sha": st.one_of(JSON_ANY, st.just("ab" * 20)),
    "siblings": st.one_of(JSON_ANY, st.lists(SIBLING, max_size=4)),
})
LINK = st.one_of(st.none(), st.sampled_from(['<{page}>; rel="next"', "<http://[::1>; rel=next",
                                             '<file:///x>; rel="next"', "<\x00>; rel=next", "garbage",
                                             '<?cursor=1>; rel="next"']))


@cases(60)
@given(answer=API_ANSWER, tree=st.one_of(JSON_ANY, st.lists(SIBLING, max_size=4)), link=LINK)
@example(answer={"sha": "ab" * 20, "siblings": [{"rfilename": 5}]}, tree=[], link=None)
@example(answer={"sha": "ab" * 20}, tree=[{"type": "file", "path": "../../x", "size": -1}], link='<{page}>; rel="next"')
def test_the_hubs_json_answers_end_in_a_documented_exit(fake_hub, capsys, monkeypatch, answer, tree, link) -> None:
    from inspector.cli import run

    monkeypatch.setattr("inspector.transport.time.sleep", lambda s: None)

    def hostile(role, path, status, headers, body):
        if "/api/models/" not in path:
            return status, headers, body
        extra = {"Link": link.format(page=fake_hub.endpoint + path)} if link else {}
        payload = answer if "/revision/" in path else tree
        return 200, {"Content-Type": "application/json", **extra}, json.dumps(payload).encode()

    fake_hub.rewrite = hostile
    code = run(["openai-community/gpt2", "--json", "--refresh"])
    err = capsys.readouterr().err
    assert code in (0, 2, 4, 5, 6, 7, 8), err
    assert "Traceback" not in err and err.count("\n") <= 1 + err.count("warning"), err
