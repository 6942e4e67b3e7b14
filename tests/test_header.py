"""safetensors header parsing: the spec's rules, each broken once."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from inspector.errors import HeaderError, UnknownDtype
from inspector.header import MAX_HEADER_BYTES, parse_header
from inspector.local import read_header_file


def encode(header: dict, data_bytes: int = 0, *, pad: bool = True) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"\0" * data_bytes


def t(dtype: str, shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_real_file_written_by_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file(
        {"b": np.zeros((3, 5), np.float16), "a": np.zeros(7, np.float32), "c": np.zeros((2, 2), np.int8)},
        str(path),
        metadata={"format": "pt"},
    )
    h = read_header_file(path)
    assert h.metadata == {"format": "pt"}
    assert {x.name: (x.dtype, x.shape, x.nbytes) for x in h.tensors} == {
        "a": ("F32", (7,), 28),
        "b": ("F16", (3, 5), 30),
        "c": ("I8", (2, 2), 4),
    }
    assert 8 + h.header_bytes + h.data_bytes == path.stat().st_size == h.file_bytes


def test_sub_byte_dtypes_sizes_in_bits() -> None:
    # F4: 4 bits, so 6 elements fill 3 bytes; F6: 4 elements fill 3 bytes.
    h = parse_header(encode({"x": t("F4", [6], 0, 3), "y": t("F6_E2M3", [4], 3, 6)}, 6))
    assert [x.nbytes for x in h.tensors] == [3, 3]


def test_scalar_and_empty_tensors() -> None:
    h = parse_header(encode({"s": t("F32", [], 0, 4), "e": t("F32", [0, 3], 4, 4)}, 4))
    assert [(x.name, x.elements) for x in h.tensors] == [("e", 0), ("s", 1)] or [
        (x.name, x.elements) for x in h.tensors
    ] == [("s", 1), ("e", 0)]


def test_unpadded_header_and_extra_bytes_after_header_are_accepted() -> None:
    data = encode({"x": t("U8", [3], 0, 3)}, 3, pad=False)
    assert parse_header(data).tensors[0].name == "x"
    assert parse_header(data + b"more bytes than needed").tensors[0].nbytes == 3


MALFORMED = [
    ("too short", b"\x01\x00", None, "too short"),
    ("empty", b"", None, "too short"),
    ("huge length prefix", struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", None, "exceeds the spec's limit"),
    ("u64 max prefix", b"\xff" * 8, None, "exceeds the spec's limit"),
    ("length past end of file", struct.pack("<Q", 64) + b"{}", 10, "runs past the end"),
    ("truncated body", struct.pack("<Q", 64) + b'{"a":', None, "truncated"),
    ("not json", encode({}).replace(b"{}", b"{]"), None, "not valid JSON"),
    ("not an object", struct.pack("<Q", 8) + b"[1,2,3] ", None, "not a JSON object"),
    ("not utf-8", struct.pack("<Q", 8) + b'{"\xff":1}  ', None, "not valid UTF-8"),
    ("duplicate key", struct.pack("<Q", 16) + b'{"a":{},"a":{}} ', None, "duplicate key"),
    ("unknown dtype", encode({"x": t("F12", [1], 0, 2)}, 2), None, "unknown dtype"),
    ("missing dtype", encode({"x": {"shape": [1], "data_offsets": [0, 1]}}, 1), None, "unknown dtype"),
    ("negative shape", encode({"x": t("U8", [-1], 0, 1)}, 1), None, "non-negative integers"),
    ("float shape", encode({"x": t("U8", [1.5], 0, 1)}, 1), None, "non-negative integers"),
    ("bool in offsets", encode({"x": t("U8", [1], 0, True)}, 1), None, "non-negative integers"),
    ("offsets reversed", encode({"x": t("U8", [0], 4, 0)}), None, "end >= begin"),
    ("size mismatch", encode({"x": t("F32", [2, 2], 0, 15)}, 15), None, "needs 16 bytes"),
    ("sub-byte not aligned", encode({"x": t("F4", [3], 0, 2)}, 2), None, "byte boundary"),
    ("hole", encode({"x": t("U8", [2], 0, 2), "y": t("U8", [2], 3, 5)}, 5), None, "leaves a hole"),
    ("overlap", encode({"x": t("U8", [4], 0, 4), "y": t("U8", [2], 2, 4)}, 4), None, "overlaps"),
    ("not starting at 0", encode({"x": t("U8", [2], 2, 4)}, 4), None, "leaves a hole"),
    ("metadata not strings", encode({"__metadata__": {"a": 1}}), None, "__metadata__"),
    ("entry not object", encode({"x": [1, 2]}), None, "not an object"),
]


@pytest.mark.parametrize("data,file_bytes,message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_headers_are_refused(data: bytes, file_bytes: int | None, message: str) -> None:
    with pytest.raises(HeaderError, match=message) as info:
        parse_header(data, file_bytes=file_bytes, name="shard.safetensors")
    assert str(info.value).startswith("shard.safetensors: ")
    assert "\n" not in str(info.value)


def test_unknown_dtype_is_its_own_type() -> None:
    with pytest.raises(UnknownDtype):
        parse_header(encode({"x": t("Q4_K", [1], 0, 1)}, 1))


def test_data_must_end_exactly_at_end_of_file() -> None:
    data = encode({"x": t("U8", [4], 0, 4)}, 4)
    assert parse_header(data, file_bytes=len(data)).file_bytes == len(data)
    for wrong in (len(data) - 1, len(data) + 1):
        with pytest.raises(HeaderError, match="file has"):
            parse_header(data, file_bytes=wrong)


def test_to_dict_round_trips() -> None:
    raw = {"__metadata__": {"format": "pt"}, "w": t("BF16", [2, 3], 0, 12), "v": t("F32", [1], 12, 16)}
    h = parse_header(encode(raw, 16))
    assert h.to_dict() == raw


@pytest.mark.parametrize("data", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_files_exit_6_with_one_line(tmp_path: Path, data: bytes, capsys) -> None:
    from inspector.cli import run

    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    assert run([str(path)]) == 6
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("hfmem: error: model.safetensors: ") and err.count("\n") == 1
