"""safetensors header bytes -> a validated tensor table.

The format (https://huggingface.co/docs/safetensors/index#format, and the reference reader
`safetensors/src/tensor.rs`):

    8 bytes   N, an unsigned little-endian 64-bit integer
    N bytes   a UTF-8 JSON object: {"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets"}}
    rest      the byte buffer; data_offsets are [begin, end) relative to its start

The reference reader refuses N > 100_000_000 (MAX_HEADER_SIZE), requires the offsets, sorted, to
cover the buffer with no hole and no overlap, each `end - begin == prod(shape) * dtype size`, and the
buffer to end exactly at the end of the file. We apply the same rules, so a header we accept is one
`safetensors` would load.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from .errors import HeaderError, UnknownDtype

#: safetensors' MAX_HEADER_SIZE (safetensors/src/tensor.rs).
MAX_HEADER_BYTES = 100_000_000
#: The length prefix: one little-endian u64.
PREFIX_BYTES = 8
#: Shapes and offsets are usize in the reference reader (u64 on every platform it ships for), and a
#: shape whose element or bit count overflows it is refused (tensor.rs: ValidationOverflow).
MAX_U64 = 2**64 - 1

#: Bits per element of every dtype the safetensors spec defines (`Dtype::bitsize` in
#: safetensors/src/tensor.rs since 0.6: F4 and F6 are the OCP Microscaling element types,
#: F8_E8M0 the MX shared scale). Kept in bits because F4 and F6 are not whole bytes.
DTYPE_BITS: Mapping[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

_DTYPE_NAMES = {name: name for name in DTYPE_BITS}


class TensorInfo:
    """One tensor of a safetensors file: its dtype, shape and byte range in the data buffer.

    A plain class with slots, not a dataclass: DeepSeek-V3 has 92,000 of them, and a frozen
    dataclass took twice as long to build and half as much again of memory. `elements` (prod(shape))
    is computed once, by the header's validation when it builds the table.
    """

    __slots__ = ("name", "dtype", "shape", "begin_offset", "end_offset", "elements")

    def __init__(self, name: str, dtype: str, shape: tuple[int, ...], begin_offset: int, end_offset: int,
                 elements: int | None = None) -> None:
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.begin_offset = begin_offset
        self.end_offset = end_offset
        self.elements = math.prod(shape) if elements is None else elements

    def _key(self) -> tuple[str, str, tuple[int, ...], int, int]:
        return (self.name, self.dtype, self.shape, self.begin_offset, self.end_offset)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorInfo) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "TensorInfo(name={!r}, dtype={!r}, shape={!r}, begin_offset={!r}, end_offset={!r})".format(*self._key())

    @property
    def nbytes(self) -> int:
        return self.end_offset - self.begin_offset


@dataclass(frozen=True)
class Header:
    """A parsed, validated safetensors header.

    `header_bytes` is N, the JSON's length; `file_bytes` is the whole file's size when known.
    """

    header_bytes: int
    tensors: tuple[TensorInfo, ...]
    metadata: Mapping[str, str] | None = None
    file_bytes: int | None = None
    #: The header's JSON text as the file holds it, when it was parsed from the file: a snapshot
    #: writes it back as it is instead of encoding 92,000 tensors again.
    raw: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def data_bytes(self) -> int:
        """Size of the data buffer: where the last tensor ends."""
        return self.tensors[-1].end_offset if self.tensors else 0

    def to_dict(self) -> dict[str, Any]:
        """The header as JSON, as the file holds it (used by snapshots)."""
        out: dict[str, Any] = {}
        if self.metadata is not None:
            out["__metadata__"] = dict(self.metadata)
        for t in self.tensors:
            out[t.name] = {
                "dtype": t.dtype,
                "shape": list(t.shape),
                "data_offsets": [t.begin_offset, t.end_offset],
            }
        return out


def read_length_prefix(prefix: bytes) -> int:
    """Return N from a file's first 8 bytes, refusing what no valid file can hold.

    >>> read_length_prefix(b"\\x10" + b"\\x00" * 7)
    16
    """
    if len(prefix) < PREFIX_BYTES:
        raise HeaderError(f"file too short: {len(prefix)} bytes, a safetensors file starts with 8")
    n: int = struct.unpack("<Q", prefix[:PREFIX_BYTES])[0]
    if n > MAX_HEADER_BYTES:
        # Refused before anything is allocated or fetched for it.
        raise HeaderError(f"header length {n:,} bytes exceeds the spec's limit of {MAX_HEADER_BYTES:,}")
    if n < 2:
        raise HeaderError(f"header length {n} is too small to hold a JSON object")
    return n


def parse_header(data: bytes, *, file_bytes: int | None = None, name: str = "file") -> Header:
    """Parse a safetensors file's beginning (prefix + header; more bytes are ignored).

    `file_bytes` is the whole file's size when known, to check that the header and every tensor lie
    inside it. Raises HeaderError (with `name` in the message) for anything the spec forbids.
    """
    try:
        n = read_length_prefix(data)
        if file_bytes is not None and PREFIX_BYTES + n > file_bytes:
            raise HeaderError(f"header length {n:,} runs past the end of the {file_bytes:,}-byte file")
        if len(data) < PREFIX_BYTES + n:
            raise HeaderError(f"truncated: header needs {PREFIX_BYTES + n:,} bytes, got {len(data):,}")
        text = bytes(data[PREFIX_BYTES : PREFIX_BYTES + n])
        return header_from_dict(decode_header_json(text), header_bytes=n, file_bytes=file_bytes, text=text)
    except HeaderError as e:
        raise type(e)(f"{name}: {e}") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise HeaderError(f"duplicate key {key!r}")
        out[key] = value
    return out


def decode_header_json(raw: bytes) -> dict[str, Any]:
    """The header's JSON object; trailing spaces (the spec's 8-byte alignment padding) allowed."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HeaderError("header is not valid UTF-8") from None
    if not text.startswith("{"):
        raise HeaderError("header is not a JSON object (does not start with '{')")
    try:
        obj = json.loads(text)
        # Duplicate keys, refused as the reference reader does, vanish in a plain parse; checking
        # each object in Python triples the cost of a 92,000-tensor model. Without a backslash every
        # `":` ends a key, so when the keys parsed number as many, none was repeated; anything else
        # (escapes, white space before a colon, deeper nesting, or a duplicate) takes the exact path.
        if not (isinstance(obj, dict) and "\\" not in text and not _SPACED_COLON.search(text)
                and _keys(obj) == text.count('":')):
            obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        raise HeaderError("header is not valid JSON") from None
    if not isinstance(obj, dict):
        raise HeaderError("header is not a JSON object")
    return obj


_SPACED_COLON = re.compile(r'"[ \t\n\r]+:')  # a key whose colon `":` would not count


def _keys(obj: dict[str, Any]) -> int:
    """Keys of a header object and of the objects one level inside it."""
    return len(obj) + sum(len(v) for v in obj.values() if type(v) is dict)


def _int_list(value: Any, what: str, tensor: str) -> list[int]:
    # A loop, not all(...): this runs twice per tensor, 184,000 times for DeepSeek-V3.
    if type(value) is list:
        for x in value:
            if type(x) is not int or not 0 <= x <= MAX_U64:  # `type is int`: no bool, no subclass
                break
        else:
            return value
    raise HeaderError(f"tensor {tensor!r}: {what} must be a list of non-negative integers below 2**64")


def _elements(shape: list[int], dtype: str, dtype_bits: int, tensor: str) -> int:
    """prod(shape), refused as soon as a step overflows u64, or when its bit count does, as
    tensor.rs does (`try_fold(1, checked_mul)`): a 2**64 x 2**64 shape is not a tensor, and
    multiplying a hostile header's dims without a bound takes minutes."""
    elements = 1
    for d in shape:
        elements *= d
        if elements > MAX_U64:
            break
    if elements > MAX_U64 or elements * dtype_bits > MAX_U64:
        raise HeaderError(f"tensor {tensor!r}: {dtype} x a {len(shape)}-dim shape overflows a 64-bit size")
    return elements


def header_from_dict(
    raw: Mapping[str, Any], *, header_bytes: int, file_bytes: int | None = None, text: bytes | None = None
) -> Header:
    """Validate a decoded header and build the tensor table, sorted by offset (`text`: the JSON it
    was decoded from, kept for snapshots).

    Raises HeaderError for a field of the wrong type, an unknown dtype, a byte range that does not
    match shape x dtype size, a hole or overlap between tensors, or data outside the file.
    """
    metadata = raw.get("__metadata__")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise HeaderError("__metadata__ must map strings to strings")
    tensors: list[TensorInfo] = []
    append = tensors.append
    bits_of = DTYPE_BITS.get
    # One object per distinct dtype and shape, not one per tensor: DeepSeek-V3's 92,000 tensors
    # have 14 shapes, and the parser makes a new "BF16" string for each of them (~12 MB saved).
    dtypes = _DTYPE_NAMES
    shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
    for name, info in raw.items():
        if name == "__metadata__":
            continue
        if type(info) is not dict:
            raise HeaderError(f"tensor {name!r}: entry is not an object")
        dtype: Any = info.get("dtype")
        # (a list or object is not hashable: the type is checked first)
        dtype_bits = bits_of(dtype) if type(dtype) is str else None
        if dtype_bits is None:
            raise UnknownDtype(f"tensor {name!r}: unknown dtype {dtype!r}")
        shape = _int_list(info.get("shape"), "shape", name)
        offsets = _int_list(info.get("data_offsets"), "data_offsets", name)
        if len(offsets) != 2:
            raise HeaderError(f"tensor {name!r}: data_offsets must be [begin, end] with end >= begin")
        begin, end = offsets
        if end < begin:
            raise HeaderError(f"tensor {name!r}: data_offsets must be [begin, end] with end >= begin")
        elements = _elements(shape, dtype, dtype_bits, name)
        bits = elements * dtype_bits
        if bits % 8:
            raise HeaderError(f"tensor {name!r}: {dtype} x {shape} does not end on a byte boundary")
        if end - begin != bits // 8:
            raise HeaderError(
                f"tensor {name!r}: {dtype} x {shape} needs {bits // 8:,} bytes"
                f" but data_offsets span {end - begin:,}"
            )
        dims = tuple(shape)
        append(TensorInfo(name, dtypes[dtype], shapes.setdefault(dims, dims), begin, end, elements))
    tensors.sort(key=attrgetter("begin_offset", "end_offset"))
    # The buffer must be covered with no hole and no overlap (tensor.rs `Metadata::validate`).
    position = 0
    for t in tensors:
        if t.begin_offset != position:
            kind = "overlaps the previous tensor" if t.begin_offset < position else "leaves a hole"
            raise HeaderError(
                f"tensor {t.name!r}: data_offsets {kind} (starts at {t.begin_offset:,}, expected {position:,})"
            )
        position = t.end_offset
    if file_bytes is not None and PREFIX_BYTES + header_bytes + position != file_bytes:
        raise HeaderError(
            f"tensor data ends at byte {PREFIX_BYTES + header_bytes + position:,}"
            f" but the file has {file_bytes:,} bytes"
        )
    return Header(header_bytes, tuple(tensors), metadata, file_bytes, text)


class LazyHeaders(Mapping[str, Header]):
    """A reader's headers, in the order read: parsed ones, and the first bytes of others, parsed (and
    validated again) only when asked for. A worker process already validated and counted those
    (inspector/workers.py); most runs never need their 92,000 tensors in this process."""

    def __init__(self) -> None:
        self._items: dict[str, Header | tuple[bytes, int | None]] = {}

    def add(self, name: str, header: Header) -> None:
        self._items[name] = header

    def add_bytes(self, name: str, data: bytes, file_bytes: int | None) -> None:
        self._items[name] = (data, file_bytes)

    def __getitem__(self, name: str) -> Header:
        item = self._items[name]
        if isinstance(item, Header):
            return item
        header = self._items[name] = parse_header(item[0], file_bytes=item[1], name=name)
        return header

    def __contains__(self, name: object) -> bool:  # (Mapping's would parse the header)
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
