"""GGUF headers: bytes -> metadata and a tensor table, without the tensor data.

The format (ggml/docs/gguf.md; gguf-py's gguf_reader.py reads it the same way): the magic "GGUF",
a uint32 version (2 and 3 are read; 1 used 32-bit counts and is refused), uint64 tensor and
metadata counts, the metadata key/value pairs, the tensor infos (name, n_dims, dims, ggml type,
offset), then padding to `general.alignment` (default 32) and the data. Everything is
little-endian here (a big-endian file, which llama.cpp can also write, is refused by name).

A header is read without the file: `parse_gguf` raises `NeedMore(n)` when the bytes it was given
end before the tensor table does, so a reader can fetch growing ranges in one pass
(`read_gguf_header`) up to a stated cap; a 256k-vocabulary model's tokenizer arrays take several MB
before the tensor table starts.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import HeaderError, UnknownDtype

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32  # ggml/docs/gguf.md: "general.alignment ... If not present, 32"
#: Our policy: a header (metadata + tensor infos) above this is refused rather than read. The
#: largest seen are tokenizer arrays of 256k-vocabulary models, a few MB.
MAX_HEADER_BYTES = 64 << 20
#: Our policy: bounds on counts a hostile header could make huge (ggml's gguf.cpp checks its own
#: against SIZE_MAX; these are far above any real model: DeepSeek-V3 has 1,025 GGUF tensors).
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 16
MAX_DIMS = 4  # GGML_MAX_DIMS (ggml/include/ggml.h)
#: Arrays longer than this keep their type and length only (tokenizer vocabularies); the
#: per-layer arrays the architecture needs (head_count_kv, sliding-window patterns) are shorter.
KEEP_ARRAY = 4096

# ggml's types: (name, elements per block, bytes per block), keyed by enum ggml_type's value
# (ggml/include/ggml.h). Block sizes from ggml/src/ggml.c type_traits (blck_size, type_size), as
# gguf-py 0.19.0 lists them (gguf/constants.py GGML_QUANT_SIZES). Values 4, 5, 31-33 and 36-38 are
# types ggml removed (Q4_2, Q4_3, the Q4_0_4_4-style repacks); a file holding one is refused.
GGML_TYPES: Mapping[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}

# enum gguf_type (ggml/include/gguf.h): the metadata value types.
_SCALARS: Mapping[int, str] = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                               10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class NeedMore(Exception):  # noqa: N818 - a signal to the reader, not an error
    """The bytes given end inside the header: at least `needed` bytes from the start are wanted."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


@dataclass(frozen=True)
class ArraySummary:
    """A metadata array too long to keep (a tokenizer's vocabulary): its element type and length."""

    type: int
    length: int


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # ggml's order: ne[0] (the row length) first
    type: int
    offset: int  # from the start of the data section

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.type][0]

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """ggml_nbytes: whole blocks along each row (ggml/src/ggml.c: ne[0] / blck_size x type_size)."""
        _, block, size = GGML_TYPES[self.type]
        return self.elements // block * size


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: Mapping[str, Any]
    tensors: tuple[GGUFTensor, ...]
    alignment: int
    header_bytes: int  # where the tensor infos end
    data_offset: int  # where the data starts: header_bytes rounded up to the alignment

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    @property
    def data_bytes(self) -> int:
        """The data section's size as the tensor table lays it out (the last tensor's end)."""
        return max((t.offset + t.nbytes for t in self.tensors), default=0)


class _Cursor:
    __slots__ = ("data", "pos", "name")

    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.pos, self.name = data, 0, name

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise NeedMore(end)
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > MAX_HEADER_BYTES:
            raise HeaderError(f"{self.name}: a GGUF string of {n:,} bytes at byte {self.pos}: not a GGUF header")
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise HeaderError(f"{self.name}: a GGUF string that is not UTF-8 at byte {self.pos - n}") from None

    def value(self, vtype: int, depth: int = 0) -> Any:
        fmt = _SCALARS.get(vtype)
        if fmt is not None:
            return self.unpack(fmt)
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            if depth >= 4:
                raise HeaderError(f"{self.name}: GGUF arrays nested more than 4 deep")
            etype, n = self.unpack("<I"), self.unpack("<Q")
            if n > MAX_HEADER_BYTES:
                raise HeaderError(f"{self.name}: a GGUF array of {n:,} elements: not a GGUF header")
            fmt = _SCALARS.get(etype)
            if fmt is not None:  # a run of scalars: one slice, no per-element loop
                size = struct.calcsize(fmt)
                raw = self.take(size * n)
                if n > KEEP_ARRAY:
                    return ArraySummary(etype, n)
                return list(struct.unpack("<" + fmt[1] * n, raw))
            items = [self.value(etype, depth + 1) for _ in range(n)]
            return ArraySummary(etype, n) if n > KEEP_ARRAY else items
        raise HeaderError(f"{self.name}: unknown GGUF metadata value type {vtype} at byte {self.pos - 4}")


def parse_gguf(data: bytes, *, name: str = "file", complete: bool = False) -> GGUFHeader:
    """Parse a GGUF header from the first bytes of a file. Raises NeedMore when `data` ends inside
    the header (unless `complete`: then the file itself is truncated, a HeaderError), HeaderError
    for anything that is not a GGUF v2/v3 header, UnknownDtype for a tensor type ggml lacks."""
    try:
        return _parse(data, name)
    except NeedMore as more:
        if complete:
            raise HeaderError(f"{name}: truncated GGUF header ({len(data):,} bytes, at least {more.needed:,} "
                              "needed)") from None
        if more.needed > MAX_HEADER_BYTES:
            raise HeaderError(f"{name}: GGUF header larger than hfmem's {MAX_HEADER_BYTES >> 20} MiB cap") from None
        raise


def _parse(data: bytes, name: str) -> GGUFHeader:
    c = _Cursor(data, name)
    magic = c.take(4)
    if magic != MAGIC:
        raise HeaderError(f"{name}: not a GGUF file (starts with {magic!r}, not b'GGUF')")
    version = c.unpack("<I")
    if version not in (2, 3):
        if version & 0xFFFF == 0 and (version >> 24) in (2, 3):
            raise HeaderError(f"{name}: a big-endian GGUF file: llama.cpp on x86/ARM reads little-endian ones")
        raise HeaderError(f"{name}: GGUF version {version} (hfmem reads versions 2 and 3)")
    n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise HeaderError(f"{name}: GGUF header claims {n_tensors:,} tensors and {n_kv:,} metadata keys")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = c.string()
        vtype = c.unpack("<I")
        if key in metadata:
            raise HeaderError(f"{name}: duplicate GGUF metadata key {key!r}")
        metadata[key] = c.value(vtype)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        raise HeaderError(f"{name}: general.alignment {alignment!r} is not a power of two")
    tensors: list[GGUFTensor] = []
    seen: set[str] = set()
    for _ in range(n_tensors):
        tname = c.string()
        n_dims = c.unpack("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise HeaderError(f"{name}: tensor {tname!r} has {n_dims} dimensions (ggml allows 1 to {MAX_DIMS})")
        shape = tuple(c.unpack("<Q") for _ in range(n_dims))
        ttype, offset = c.unpack("<I"), c.unpack("<Q")
        if ttype not in GGML_TYPES:
            raise UnknownDtype(f"{name}: tensor {tname!r} has ggml type {ttype}, which hfmem does not know "
                               "(a newer llama.cpp type, or a repacked one ggml removed)")
        if tname in seen:
            raise HeaderError(f"{name}: duplicate tensor {tname!r}")
        seen.add(tname)
        block = GGML_TYPES[ttype][1]
        if shape[0] % block or any(d < 0 for d in shape):
            raise HeaderError(f"{name}: tensor {tname!r} of type {GGML_TYPES[ttype][0]}: row length {shape[0]} "
                              f"is not a multiple of its block ({block})")
        if offset % alignment:
            raise HeaderError(f"{name}: tensor {tname!r} at data offset {offset}, not a multiple of {alignment}")
        tensors.append(GGUFTensor(tname, shape, ttype, offset))
    header_bytes = c.pos
    data_offset = -(-header_bytes // alignment) * alignment
    return GGUFHeader(version, metadata, tuple(tensors), alignment, header_bytes, data_offset)


#: The first read; doubled until the header fits (in one pass: each read continues the last).
FIRST_READ = 1 << 20


def read_gguf_header(read: Callable[[int, int], bytes], *, file_bytes: int | None, name: str = "file",
                     first: int = FIRST_READ) -> GGUFHeader:
    """A header read in growing ranges: `read(start, end)` returns bytes [start, end) of the file
    (fewer at its end). Each range continues the last, and grows to at least what the parser
    asked for, doubling, up to MAX_HEADER_BYTES."""
    data = b""
    want = first
    while True:
        end = want if file_bytes is None else min(want, file_bytes)
        if end > len(data):
            chunk = read(len(data), end)
            if not chunk and file_bytes is None:
                return parse_gguf(data, name=name, complete=True)
            data += chunk
        complete = file_bytes is not None and len(data) >= file_bytes or len(data) < end
        try:
            return parse_gguf(data, name=name, complete=complete)
        except NeedMore as more:
            want = min(max(more.needed, 2 * len(data)), MAX_HEADER_BYTES)
