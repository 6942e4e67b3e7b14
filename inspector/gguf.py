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

import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import EntryNotFound, HeaderError, UnknownDtype, UsageError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32  # ggml/docs/gguf.md: "general.alignment ... If not present, 32"
#: Our policy: a header (metadata + tensor infos) above this is refused rather than read. The
#: largest seen are tokenizer arrays of 256k-vocabulary models, a few MB.
MAX_HEADER_BYTES = 64 << 20
#: Our policy: bounds on counts a hostile header could make huge (ggml's gguf.cpp checks its own
#: against SIZE_MAX; these are far above any real model: DeepSeek-V3 has 1,025 GGUF tensors).
MAX_TENSORS = 1 << 16
MAX_KV = 1 << 16
MAX_DIMS = 4  # GGML_MAX_DIMS (ggml/include/ggml.h)
#: Our policy: the parts of a split set read at most (gguf-split writes a few dozen for the largest
#: models: DeepSeek-R1 Q8_0 is 15 parts of 46 GB).
MAX_SPLIT_PARTS = 256
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
            start, items, keep = self.pos, [], n <= KEEP_ARRAY
            for i in range(n):
                try:
                    item = self.value(etype, depth + 1)
                    if keep:  # (a long array's elements are walked, never held)
                        items.append(item)
                except NeedMore as more:
                    # A tokenizer's strings run on past these bytes: ask for the whole array at once,
                    # from the mean length so far (a 128k vocabulary's arrays in one more read, not three).
                    whole = (self.pos - start) * n // max(i, 1)
                    guess = start + whole + whole // 8 + 65536
                    raise NeedMore(max(more.needed, min(guess, MAX_HEADER_BYTES))) from None
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


#: The first read (from a local file; the Hub's first is the 64 KiB that locate brings); grown at
#: least fourfold until the header fits (in one pass: each read continues the last).
FIRST_READ = 1 << 20


def read_gguf_header(read: Callable[[int, int], bytes], *, file_bytes: int | None, name: str = "file",
                     first: int = FIRST_READ) -> GGUFHeader:
    """A header read in growing ranges: `read(start, end)` returns bytes [start, end) of the file
    (fewer at its end). Each range continues the last, and grows to at least what the parser
    asked for (an array of strings predicts its own end), at least fourfold, up to MAX_HEADER_BYTES."""
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
            # At least four times what was read: a 128k vocabulary's tokens, then its merges, then
            # the tensor table, in three reads rather than five.
            want = min(max(more.needed, 4 * len(data)), MAX_HEADER_BYTES)


# --- a repo's GGUF files: quantizations, split sets, projectors -------------------------------------

#: llama.cpp's split names (src/llama.cpp llama_split_path: "%s-%05d-of-%05d.gguf").
SPLIT_RE = re.compile(r"^(?P<base>.+)-(?P<no>[0-9]{5})-of-(?P<count>[0-9]{5})\.gguf$")
#: The quantization in a file name, as llama.cpp's quantize names them (tools/quantize/quantize.cpp
#: QUANT_OPTIONS) and as uploaders suffix them (Unsloth's "UD-" dynamic quants): the last match wins.
_QUANT_RE = re.compile(
    r"(?i)(?<![A-Za-z0-9])((?:UD[-_])?(?:IQ[1-4]_(?:XXS|XS|S|M|NL)|Q[2-8]_K(?:_(?:XXL|XL|S|M|L))?|Q[4-8]_[01]"
    r"|TQ[12]_0|MXFP4(?:_MOE)?|BF16|F16|F32))(?![A-Za-z0-9])")


@dataclass(frozen=True)
class GGUFFile:
    """One model file of a repo: a single .gguf, or a split set read as one model."""

    name: str  # the file, or for a split set its first part
    parts: tuple[str, ...]
    label: str  # the quantization in its name ("Q4_K_M"), else the name without .gguf
    bytes: int | None  # all parts together, from the file list
    projector: bool = False  # an mmproj file: a vision projector, not a model of its own
    missing: str | None = None  # a split set's first absent part: the set cannot be read


def quant_label(filename: str) -> str | None:
    """The quantization a file name carries.

    >>> quant_label("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"), quant_label("Q4_K_M/m-UD-Q4_K_XL-00001-of-00002.gguf")
    ('Q4_K_M', 'UD-Q4_K_XL')
    """
    stem = filename.rsplit("/", 1)[-1]
    m = SPLIT_RE.match(stem)
    stem = m["base"] if m else stem.removesuffix(".gguf")
    found = _QUANT_RE.findall(stem)
    return found[-1].upper().replace("UD_", "UD-") if found else None


#: Files that are GGUF but no model to run: llama-imatrix's importance matrices; LoRA adapters
#: (also refused by their general.type when named).
_NOT_MODELS = re.compile(r"(?i)(?:^|[-_.])(?:imatrix|lora)(?:[-_.]|$)")


def gguf_files(listing: Mapping[str, int | None]) -> list[GGUFFile]:
    """The repo's GGUF models (split sets grouped, parts in order), projectors marked, by size; an
    imatrix or LoRA file left out. An incomplete split set is kept, marked `missing`: it is refused
    only when it is the file wanted (`choose_file`, `check_complete`)."""
    singles: list[GGUFFile] = []
    sets: dict[tuple[str, int], dict[int, str]] = {}
    for name in listing:
        if not name.endswith(".gguf"):
            continue
        base = name.rsplit("/", 1)[-1]
        if _NOT_MODELS.search(base.removesuffix(".gguf")):
            continue
        projector = "mmproj" in base.lower()
        m = SPLIT_RE.match(base)
        if m and int(m["count"]) > 1 and not projector:
            folder = name[: len(name) - len(base)]
            sets.setdefault((folder + m["base"], int(m["count"])), {})[int(m["no"])] = name
            continue
        singles.append(GGUFFile(name, (name,), quant_label(name) or base.removesuffix(".gguf"), listing[name],
                                projector))
    for (base, count), parts in sets.items():
        ordered = tuple(parts[i] for i in sorted(parts))
        sizes = [listing[p] for p in ordered]
        total = None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)
        first = ordered[0]
        stem = base.rsplit("/", 1)[-1]
        missing = None
        if count > MAX_SPLIT_PARTS:
            missing = f"{stem}: a split set of {count} parts (hfmem reads at most {MAX_SPLIT_PARTS})"
        elif sorted(parts) != list(range(1, count + 1)):
            odd = next((i for i in sorted(parts) if not 1 <= i <= count), None)
            if odd is not None:
                missing = f"{parts[odd]}: part {odd} of a {count}-part split set, which numbers its parts from 1"
            else:
                gap = next(i for i in range(1, count + 1) if i not in parts)
                missing = (f"{base}: part {gap} of the {count}-part split set is missing "
                           f"({stem}-{gap:05d}-of-{count:05d}.gguf)")
        singles.append(GGUFFile(first, ordered, quant_label(first) or stem, total, False, missing))
    return sorted(singles, key=lambda f: (f.projector, f.missing is not None, f.bytes is None, f.bytes or 0, f.name))


def check_complete(f: GGUFFile) -> GGUFFile:
    """The file, unless it is a split set that cannot be read (EntryNotFound, exit 4)."""
    if f.missing:
        raise EntryNotFound(f.missing)
    return f


def choose_file(files: list[GGUFFile], wanted: str, repo: str) -> GGUFFile:
    """The file a `:TAG` or `--file NAME` names: a file's path (any part of a split set), or its
    quantization, case-insensitive, as llama.cpp's `-hf org/repo:Q4_K_M` and Ollama's tags do."""
    for f in files:
        if wanted in f.parts or wanted == f.name.rsplit("/", 1)[-1]:
            return check_complete(f)
    matches = [f for f in files if not f.projector and f.label.lower() == wanted.lower()]
    if len(matches) == 1:
        return check_complete(matches[0])
    models = [f for f in files if not f.projector]
    if matches:
        raise UsageError(f"{repo}: {len(matches)} files are {wanted}: give one with --file "
                         f"({', '.join(f.name for f in matches[:4])})")
    shown = ", ".join(f.label for f in models[:24]) or "none"
    raise EntryNotFound(f"{repo} has no GGUF file {wanted!r}; its quantizations: {shown}")


@dataclass(frozen=True)
class GGUFModel:
    """A model's GGUF header(s) as one: the first part's metadata, every part's tensors."""

    name: str
    metadata: Mapping[str, Any]
    tensors: tuple[GGUFTensor, ...]
    file_bytes: int | None  # all parts, as the files are (headers, padding and data)
    headers: Mapping[str, GGUFHeader]

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise HeaderError(f"{self.name}: no general.architecture in the GGUF metadata")
        return arch

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def elements(self) -> int:
        return sum(t.elements for t in self.tensors)


def merge_parts(name: str, headers: Mapping[str, GGUFHeader], sizes: Mapping[str, int | None]) -> GGUFModel:
    """One model from a split set's headers (in part order), checked as llama.cpp's loader checks
    them (src/llama-model-loader.cpp: `split.count` parts, each `split.no` in its place, tensor
    names unique across parts, `split.tensors.count` tensors in all)."""
    parts = list(headers)
    first = headers[parts[0]]
    count = first.metadata.get("split.count", 1)
    if len(parts) > 1 or count not in (None, 1):
        if type(count) is not int or count != len(parts):
            raise HeaderError(f"{name}: split.count is {count!r} but {len(parts)} part(s) were found")
        for i, part in enumerate(parts):
            no = headers[part].metadata.get("split.no")
            if no != i:
                raise HeaderError(f"{part}: split.no is {no!r}, expected {i}")
    tensors: list[GGUFTensor] = []
    seen: set[str] = set()
    for part in parts:
        for t in headers[part].tensors:
            if t.name in seen:
                raise HeaderError(f"{part}: tensor {t.name!r} is in two parts")
            seen.add(t.name)
            tensors.append(t)
    total = first.metadata.get("split.tensors.count")
    if total is not None and total != len(tensors):
        raise HeaderError(f"{name}: split.tensors.count is {total!r} but the parts hold {len(tensors)} tensors")
    known = [sizes.get(p) for p in parts]
    file_bytes = None if any(s is None for s in known) else sum(s for s in known if s is not None)
    return GGUFModel(name, first.metadata, tuple(tensors), file_bytes, dict(headers))


# --- snapshots ----------------------------------------------------------------------------------------


def header_to_dict(h: GGUFHeader) -> dict[str, Any]:
    """A header as JSON (a snapshot's "gguf" entry): long arrays as {"array_of": type, "length": n}."""
    def plain(v: Any) -> Any:
        if isinstance(v, ArraySummary):
            return {"array_of": v.type, "length": v.length}
        return [plain(x) for x in v] if isinstance(v, list) else v

    return {"version": h.version, "alignment": h.alignment, "header_size": h.header_bytes,
            "metadata": {k: plain(v) for k, v in h.metadata.items()},
            "tensors": [[t.name, list(t.shape), t.type, t.offset] for t in h.tensors]}


def header_from_dict(d: Mapping[str, Any], name: str) -> GGUFHeader:
    """A snapshot's "gguf" entry back into a header, checked as a file's would be."""
    def value(v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and not -(1 << 63) <= v < 1 << 64:
            raise HeaderError(f"{name}: a metadata integer no GGUF type holds")
        if isinstance(v, dict):
            if set(v) != {"array_of", "length"} or not all(type(x) is int and x >= 0 for x in v.values()):
                raise HeaderError(f"{name}: a metadata value that is no GGUF value")
            return ArraySummary(v["array_of"], v["length"])
        return [value(x) for x in v] if isinstance(v, list) else v

    try:
        version, alignment, size = int(d["version"]), int(d["alignment"]), int(d["header_size"])
        if len(d["tensors"]) > MAX_TENSORS or size > MAX_HEADER_BYTES:
            raise HeaderError(f"{name}: more tensors or header than a GGUF file hfmem reads")
        metadata = {str(k): value(v) for k, v in d["metadata"].items()}
        tensors = []
        for tname, shape, ttype, offset in d["tensors"]:
            if ttype not in GGML_TYPES:
                raise UnknownDtype(f"{name}: tensor {tname!r} has ggml type {ttype}, which hfmem does not know")
            dims = tuple(int(x) for x in shape)
            if not (isinstance(tname, str) and 1 <= len(dims) <= MAX_DIMS and all(0 <= x < 1 << 63 for x in dims)
                    and dims[0] % GGML_TYPES[ttype][1] == 0 and type(offset) is int and offset >= 0):
                raise HeaderError(f"{name}: tensor {str(tname)[:60]!r} is malformed")
            tensors.append(GGUFTensor(tname, dims, ttype, offset))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise HeaderError(f"{name}: malformed GGUF entry ({type(e).__name__})") from None
    if version not in (2, 3) or alignment <= 0 or alignment & (alignment - 1) or size < 0:
        raise HeaderError(f"{name}: malformed GGUF entry (version, alignment or size)")
    return GGUFHeader(version, metadata, tuple(tensors), alignment, size, -(-size // alignment) * alignment)
