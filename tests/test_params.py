"""Exact counts: small real safetensors files in each stored layout, then every real fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from inspector import inspect_model
from inspector.errors import ConfigError, NoWeightsFound, UnsupportedFormat


def model_dir(tmp_path: Path, tensors: dict[str, np.ndarray], config: dict | None = None, **extra_json) -> Path:
    save_file(tensors, str(tmp_path / "model.safetensors"))
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    for name, obj in extra_json.items():
        (tmp_path / name).write_text(json.dumps(obj))
    return tmp_path


def counts(path: Path) -> tuple[int, int, int]:
    p = inspect_model(str(path)).parameters
    return p.total_params, p.stored_elements, p.weights_bytes


def test_plain_model_counts_every_element(tmp_path: Path) -> None:
    d = model_dir(tmp_path, {"w": np.zeros((4, 8), np.float16), "b": np.zeros(8, np.float32)}, {})
    assert counts(d) == (40, 40, 4 * 8 * 2 + 8 * 4)
    assert inspect_model(str(d)).parameters.by_dtype_params == {"F16": 32, "F32": 8}


def test_buffers_are_stored_but_not_parameters(tmp_path: Path) -> None:
    d = model_dir(
        tmp_path,
        {
            "model.layers.0.self_attn.rotary_emb.inv_freq": np.zeros(64, np.float32),
            "h.0.attn.bias": np.zeros((1, 1, 16, 16), np.float32),  # GPT-2 causal mask
            "h.0.attn.masked_bias": np.zeros((), np.float32),
            "h.0.attn.c_attn.bias": np.zeros(96, np.float32),  # a real parameter
            "h.0.attn.c_attn.weight": np.zeros((32, 96), np.float32),
        },
    )
    p = inspect_model(str(d)).parameters
    assert p.total_params == 96 + 32 * 96
    assert p.buffer_elements == 64 + 256 + 1
    assert p.stored_elements == p.total_params + p.buffer_elements


@pytest.mark.parametrize("tied", [True, False, None])
def test_a_stored_head_the_config_ties_is_not_loaded(tmp_path: Path, tied: bool | None) -> None:
    """Qwen3-0.6B's file stores lm_head.weight although tie_word_embeddings is true; vLLM skips it."""
    config = {} if tied is None else {"tie_word_embeddings": tied}
    d = model_dir(tmp_path, {"model.embed_tokens.weight": np.zeros((10, 4), np.float16),
                             "lm_head.weight": np.zeros((10, 4), np.float16)}, config)
    p = inspect_model(str(d)).parameters
    assert p.total_params == 80 and p.weights_bytes == 160  # a parameter of the checkpoint all the same
    assert p.weights is not None
    assert (p.weights.tied_head_params, p.weights.loaded_bytes) == ((40, 80) if tied else (0, 160))


def test_gptq_packed_weights_count_as_logical_weights(tmp_path: Path) -> None:
    # AutoGPTQ layout (auto_gptq/nn_modules/qlinear): qweight int32 [in/8, out], qzeros int32
    # [in/group, out/8], scales fp16 [in/group, out], g_idx int32 [in], for in=256, out=128, group 128.
    d = model_dir(
        tmp_path,
        {
            "l.qweight": np.zeros((256 // 8, 128), np.int32),
            "l.qzeros": np.zeros((2, 128 // 8), np.int32),
            "l.scales": np.zeros((2, 128), np.float16),
            "l.g_idx": np.zeros(256, np.int32),
            "l.bias": np.zeros(128, np.float16),
            "embed.weight": np.zeros((10, 256), np.float16),
        },
        {"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}},
    )
    p = inspect_model(str(d)).parameters
    assert p.total_params == 256 * 128 + 128 + 10 * 256
    assert p.by_dtype_params == {"F16": 128 + 2560, "INT4": 256 * 128}
    assert p.quantization_elements == 2 * 16 + 2 * 128 + 256
    assert p.quant_method == "gptq"


def test_gptq_3bit_from_quantize_config_json(tmp_path: Path) -> None:
    d = model_dir(
        tmp_path,
        {"l.qweight": np.zeros((3 * 4, 64), np.int32)},  # 3-bit: 32 weights per 3 int32 rows
        {},
        **{"quantize_config.json": {"bits": 3, "group_size": 128, "desc_act": False}},
    )
    assert inspect_model(str(d)).parameters.total_params == 32 * 4 * 64


def test_mxfp4_blocks_hold_two_weights_per_byte(tmp_path: Path) -> None:
    # gpt-oss layout: *_blocks uint8 [experts, out, in/32, 16], *_scales uint8 [experts, out, in/32]
    d = model_dir(
        tmp_path,
        {
            "e.gate_up_proj_blocks": np.zeros((2, 8, 2, 16), np.uint8),
            "e.gate_up_proj_scales": np.zeros((2, 8, 2), np.uint8),
            "e.gate_up_proj_bias": np.zeros((2, 8), np.float16),
        },
        {"quantization_config": {"quant_method": "mxfp4"}},
    )
    p = inspect_model(str(d)).parameters
    assert p.by_dtype_params == {"F16": 16, "MXFP4": 2 * 8 * 64}
    assert p.quantization_elements == 32


def test_bitsandbytes_4bit(tmp_path: Path) -> None:
    # bitsandbytes Params4bit saved by transformers: weight uint8 [n/2, 1] plus quant_state tensors.
    d = model_dir(
        tmp_path,
        {
            "l.weight": np.zeros((64 * 32 // 2, 1), np.uint8),
            "l.weight.absmax": np.zeros(32, np.float32),
            "l.weight.quant_map": np.zeros(16, np.float32),
            "l.weight.quant_state.bitsandbytes__nf4": np.zeros(100, np.uint8),
            "norm.weight": np.zeros(64, np.float16),
        },
        {"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}},
    )
    p = inspect_model(str(d)).parameters
    assert p.by_dtype_params == {"F16": 64, "NF4": 64 * 32}
    assert p.quantization_elements == 32 + 16 + 100


def test_fp8_block_scales_are_not_parameters(tmp_path: Path) -> None:
    d = model_dir(
        tmp_path,
        {"l.weight": np.zeros((256, 384), np.uint8), "l.weight_scale_inv": np.zeros((2, 3), np.float32)},
        {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}},
    )
    p = inspect_model(str(d)).parameters
    assert (p.total_params, p.quantization_elements) == (256 * 384, 6)


def test_sharded_directory_reads_shards_through_the_index(tmp_path: Path) -> None:
    save_file({"a": np.zeros(10, np.float16)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b": np.zeros(6, np.float16)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    save_file({"stale": np.zeros(1000, np.float16)}, str(tmp_path / "consolidated.safetensors"))
    index = {
        "metadata": {"total_size": 32},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    report = inspect_model(str(tmp_path))
    assert report.parameters.total_params == 16
    assert [f.params for f in report.parameters.files] == [10, 6]


@pytest.mark.parametrize("shard", ["../evil.safetensors", "/etc/passwd", "sub/x.safetensors", "..", ".hidden"])
def test_index_naming_files_outside_the_repo_is_refused(tmp_path: Path, shard: str) -> None:
    index = {"weight_map": {"a": shard}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="unsafe file name"):
        inspect_model(str(tmp_path))


def test_pytorch_bin_count_is_derived_and_flagged(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    index = {"metadata": {"total_size": 2000}, "weight_map": {"a": "pytorch_model-00001-of-00001.bin"}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (tmp_path / "pytorch_model-00001-of-00001.bin").write_bytes(b"\0" * 2100)
    p = inspect_model(str(tmp_path)).parameters
    assert (p.total_params, p.weights_bytes, p.derived) == (1000, 2000, True)
    assert "total_size" in (p.derived_note or "")


def test_single_pytorch_bin_without_dtype_assumes_float32(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 4000)
    p = inspect_model(str(tmp_path)).parameters
    assert (p.total_params, p.derived) == (1000, True)
    assert "float32 assumed" in (p.derived_note or "")


def test_other_formats_say_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(UnsupportedFormat, match="found only 1 ONNX file, 1 TensorFlow"):
        inspect_model(str(tmp_path))


def test_no_weights_at_all(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(NoWeightsFound, match="no weight files"):
        inspect_model(str(tmp_path))


def test_malformed_config_json(tmp_path: Path) -> None:
    save_file({"a": np.zeros(1, np.float16)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        inspect_model(str(tmp_path))


def test_snapshot_round_trip_plain_and_gzip(tmp_path: Path) -> None:
    from inspector.checkpoint import save_snapshot

    d = model_dir(tmp_path, {"w": np.zeros((4, 8), np.float16)}, {"model_type": "llama"})
    report = inspect_model(str(d))
    for name in ("s.json", "s.json.gz"):
        save_snapshot(report.checkpoint, tmp_path / name)
        again = inspect_model(str(tmp_path / name))
        assert again.parameters == report.parameters
        assert again.checkpoint.config == {"model_type": "llama"}
    assert (tmp_path / "s.json.gz").read_bytes()[:2] == b"\x1f\x8b"


@pytest.mark.parametrize(
    "content,message",
    [
        (b"{not json", "not a valid JSON file"),
        (b'{"format": "something-else"}', "not an hfmem snapshot"),
        (b'{"format": "hfmem-snapshot/1", "files": {}}', "malformed snapshot"),
        (
            b'{"format": "hfmem-snapshot/1", "files": {"model.safetensors": 100}, "json": {}, "headers": {}}',
            "lacks the header",
        ),
    ],
)
def test_bad_snapshot_files(tmp_path: Path, content: bytes, message: str) -> None:
    from inspector.errors import DataError, NotFoundError

    (tmp_path / "snap.json").write_bytes(content)
    with pytest.raises((DataError, NotFoundError), match=message):
        inspect_model(str(tmp_path / "snap.json"))


@pytest.mark.parametrize("qc,bits", [
    ({"quant_method": "compressed-tensors", "config_groups": [1]}, None),  # not a table: no bits read
    ({"quant_method": "compressed-tensors", "config_groups": {"g": 1}}, None),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": [4]}}}, None),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 4}}}}, 4),
])
def test_malformed_quantization_groups_are_read_safely(qc, bits) -> None:
    from inspector.params import quant_scheme

    assert quant_scheme(qc).bits == bits


def test_quantization_bits_true_is_refused() -> None:
    from inspector.params import quant_scheme

    with pytest.raises(ConfigError, match="bits must be an integer"):
        quant_scheme({"quant_method": "gptq", "bits": True})


@pytest.mark.parametrize("index,refused", [
    ({"metadata": [1], "weight_map": {"a": "pytorch_model-00001-of-00001.bin"}}, False),  # sizes count
    ({"weight_map": {"a": ["pytorch_model-00001-of-00001.bin"]}}, True),  # a list as a file name
    ({"weight_map": {"a": "../pytorch_model-00001-of-00001.bin"}}, True),
])
def test_a_malformed_pytorch_index_is_bad_data_not_a_crash(tmp_path: Path, index, refused) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (tmp_path / "pytorch_model-00001-of-00001.bin").write_bytes(b"\0" * 2000)
    if refused:
        with pytest.raises(ConfigError, match="weight_map names a file that is not a plain file name"):
            inspect_model(str(tmp_path))
    else:  # no total_size to trust: counted from the .bin file's 2000 bytes at float16
        p = inspect_model(str(tmp_path)).parameters
        assert (p.total_params, p.derived) == (1000, True) and "file sizes" in (p.derived_note or "")


def _tally_fields(tally) -> dict:
    return {k: (sorted(v.items()) if hasattr(v, "items") else v) for k, v in vars(tally).items()}


SNAPSHOTS = sorted((Path(__file__).resolve().parent.parent / "fixtures" / "snapshots").glob("*.json*"))


@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=lambda p: p.name.split(".json")[0])
def test_grouped_tally_equals_tensor_by_tensor(snapshot: Path) -> None:
    """FileTally.of classifies one tensor per group of names that differ only in their numbers;
    it must add up to exactly what classifying every tensor does, on every real fixture."""
    from inspector.checkpoint import load_snapshot
    from inspector.params import FileTally, count_context

    cp = load_snapshot(snapshot)
    context = count_context(cp.config, cp.quantization_config)
    for header in cp.headers.values():
        assert _tally_fields(FileTally.of(header, context)) == _tally_fields(FileTally.of_each(header, context))


def test_grouped_tally_with_awkward_names() -> None:
    """Numbers of different lengths, a leading number, a line break in a name, MTP layers past the
    model's last, an expert number at the very end: grouping changes nothing."""
    from inspector.header import header_from_dict
    from inspector.params import FileTally, count_context

    names = ["model.layers.9.mlp.experts.10.down_proj.weight", "model.layers.10.mlp.experts.2.down_proj.weight",
             "model.layers.61.mlp.experts.0.down_proj.weight", "model.layers.61.mlp.experts.1.down_proj.weight",
             "0.weight", "model.layers.3.self_attn.q_proj\n1.weight", "model.layers.3.mlp.experts.7",
             "model.layers.2.mlp.shared_experts.gate_proj.weight", "lm_head.weight",
             "model.layers.12.self_attn.rotary_emb.inv_freq", "model.layers.1.mlp.experts.5.up_proj.weight_scale_inv"]
    raw, offset = {}, 0
    for name in names:
        raw[name] = {"dtype": "BF16", "shape": [4, 256], "data_offsets": [offset, offset + 2048]}
        offset += 2048
    header = header_from_dict(raw, header_bytes=1000)
    for config, qc in [({"num_hidden_layers": 61, "num_nextn_predict_layers": 1}, {"quant_method": "fp8"}),
                       ({"model_type": "llama"}, {"quant_method": "gptq", "bits": 4, "group_size": 128}), ({}, None)]:
        context = count_context(config, qc)
        assert _tally_fields(FileTally.of(header, context)) == _tally_fields(FileTally.of_each(header, context))
