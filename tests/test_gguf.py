"""GGUF headers (issue 20, part 1): the parser, ggml's block sizes, and reads in growing ranges."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import ROOT

from inspector.errors import HeaderError, UnknownDtype
from inspector.gguf import GGML_TYPES, MAX_HEADER_BYTES, ArraySummary, NeedMore, parse_gguf, read_gguf_header

FIXTURE = ROOT / "fixtures" / "gguf" / "llama-2-7b.Q4_0.header.gguf"


def test_the_block_sizes_are_gguf_py_s() -> None:
    import gguf  # the dev extra installs it (llama.cpp's gguf-py)

    sizes = gguf.constants.GGML_QUANT_SIZES
    ours = {name: (block, size) for name, block, size in GGML_TYPES.values()}
    theirs = {t.name: sizes[t] for t in gguf.GGMLQuantizationType if t in sizes}
    assert ours == theirs
    assert {v: n for v, (n, _, _) in GGML_TYPES.items()} == {t.value: t.name for t in gguf.GGMLQuantizationType}


def test_llama2_q4_0_header() -> None:
    h = parse_gguf(FIXTURE.read_bytes(), complete=True)
    assert (h.version, h.architecture, len(h.tensors), h.alignment) == (3, "llama", 291, 32)
    assert h.metadata["llama.block_count"] == 32 and h.metadata["llama.attention.head_count_kv"] == 32
    assert sum(t.elements for t in h.tensors) == 6_738_415_616  # Llama-2-7b's parameters
    emb = h.tensors[0]
    # ggml order: ne[0] is the row (4096); Q4_0 is 18 bytes per 32 weights
    assert emb.shape == (4096, 32000) and emb.nbytes == 4096 * 32000 // 32 * 18
    norm = next(t for t in h.tensors if t.name == "blk.0.attn_norm.weight")
    assert (norm.type_name, norm.nbytes) == ("F32", 4096 * 4)
    assert h.data_offset % 32 == 0 and h.data_offset - h.header_bytes < 32
    assert h.data_bytes == sum(t.nbytes for t in h.tensors)  # contiguous, each aligned to 32


def _header(kv: list[tuple[str, int, bytes]], tensors: list[tuple[str, tuple[int, ...], int, int]] = (),
            version: int = 3) -> bytes:
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv))
    for key, vtype, payload in kv:
        out += struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", vtype) + payload
    for name, shape, ttype, offset in tensors:
        out += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in shape) + struct.pack("<IQ", ttype, offset)
    return out


def _string(s: str) -> bytes:
    return struct.pack("<Q", len(s.encode())) + s.encode()


def test_every_value_type_and_nested_arrays() -> None:
    kv = [("u8", 0, b"\x07"), ("i8", 1, b"\xff"), ("u16", 2, struct.pack("<H", 9)), ("i16", 3, struct.pack("<h", -9)),
          ("u32", 4, struct.pack("<I", 10)), ("i32", 5, struct.pack("<i", -10)), ("f32", 6, struct.pack("<f", 0.5)),
          ("bool", 7, b"\x01"), ("str", 8, _string("héllo")), ("u64", 10, struct.pack("<Q", 2**40)),
          ("i64", 11, struct.pack("<q", -(2**40))), ("f64", 12, struct.pack("<d", 0.25)),
          ("ints", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 1, 0, 8)),
          ("nested", 9, struct.pack("<IQ", 9, 2) + struct.pack("<IQ", 8, 1) + _string("a")
           + struct.pack("<IQ", 8, 0)),
          ("vocab", 9, struct.pack("<IQ", 8, 5000) + b"".join(_string("t") for _ in range(5000)))]
    h = parse_gguf(_header(kv), complete=True)
    m = h.metadata
    assert (m["u8"], m["i8"], m["u16"], m["i16"], m["u32"], m["i32"]) == (7, -1, 9, -9, 10, -10)
    assert (m["f32"], m["bool"], m["str"], m["u64"], m["i64"], m["f64"]) == (0.5, True, "héllo", 2**40, -(2**40), 0.25)
    assert m["ints"] == [1, 0, 8] and m["nested"] == [["a"], []]
    assert m["vocab"] == ArraySummary(8, 5000)  # kept as its type and length only


@pytest.mark.parametrize("data, message", [
    (b"GGML" + bytes(20), "not a GGUF file"),
    (b"GGUF" + struct.pack(">I", 3) + bytes(16), "big-endian"),
    (b"GGUF" + struct.pack("<I", 1) + bytes(16), "GGUF version 1"),
    (b"GGUF" + struct.pack("<IQQ", 3, 2**40, 0), "claims"),
    (_header([("k", 13, b"")]), "unknown GGUF metadata value type 13"),
    (_header([("general.alignment", 4, struct.pack("<I", 24))]), "not a power of two"),
    (_header([], [("w", (4096, 2), 2, 3)]), "not a multiple of 32"),
    (_header([], [("w", (40, 2), 2, 0)]), "not a multiple of its block"),
    (_header([], [("w", (1, 1, 1, 1, 1), 0, 0)]), "5 dimensions"),
    (_header([], [("w", (4,), 0, 0), ("w", (4,), 0, 32)]), "duplicate tensor"),
    (_header([("a", 4, bytes(4)), ("a", 4, bytes(4))]), "duplicate GGUF metadata key"),
])
def test_bad_headers_are_header_errors(data: bytes, message: str) -> None:
    with pytest.raises(HeaderError, match=message):
        parse_gguf(data, complete=True)


def test_an_unknown_tensor_type_is_named() -> None:
    with pytest.raises(UnknownDtype, match="ggml type 31"):
        parse_gguf(_header([], [("blk.0.attn_q.weight", (4096, 4096), 31, 0)]), complete=True)


def test_truncated_header() -> None:
    data = FIXTURE.read_bytes()
    with pytest.raises(NeedMore) as more:
        parse_gguf(data[:5000])
    assert more.value.needed > 5000
    with pytest.raises(HeaderError, match="truncated GGUF header"):
        parse_gguf(data[:5000], complete=True)


def test_reads_grow_in_one_pass_and_stop_at_the_cap() -> None:
    kv = [("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 200_000) + b"".join(_string(f"tok{i:06d}")
                                                                            for i in range(200_000)))]
    data = _header(kv, [("w", (32,), 0, 0)]) + bytes(64)
    reads: list[tuple[int, int]] = []

    def read(start: int, end: int) -> bytes:
        reads.append((start, end))
        return data[start:end]

    h = read_gguf_header(read, file_bytes=len(data), first=64 << 10)
    assert h.tensors[0].name == "w" and h.metadata["tokenizer.ggml.tokens"] == ArraySummary(8, 200_000)
    assert [s for s, _ in reads] == [0] + [e for _, e in reads[:-1]]  # each read continues the last
    assert len(reads) <= (len(data) // (64 << 10)).bit_length() + 1  # doubling: a logarithmic count
    # a header claiming more than the cap is refused without reading it
    huge = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 4) + b"long" + struct.pack("<I", 8) + \
        struct.pack("<Q", MAX_HEADER_BYTES + 1)
    with pytest.raises(HeaderError, match="not a GGUF header|cap"):
        read_gguf_header(lambda s, e: huge[s:e], file_bytes=None)


def test_the_fixture_script_is_in_the_repo() -> None:
    assert (ROOT / "fixtures" / "gguf" / "make_gguf.py").exists() and Path(FIXTURE).stat().st_size < 64 << 10
