"""GGUF models under llama.cpp (issue 20): exact bytes and parameters from real tensor tables, the KV
cache by llama.cpp's formula worked by hand, placement and --fit, and the GGUF read end to end:
local files and split sets, the fake Hub's Range reads, snapshots, `check`, and every bad input's
exit code. The fixtures are written by fixtures/gguf/make_gguf.py (the `gguf_files` fixture)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from fakehub import Repo, VirtualFile

from inspector import llamacpp as lc
from inspector.cli import run
from inspector.gguf import GGUFModel, GGUFTensor, gguf_files, parse_gguf, quant_label
from inspector.local import read_gguf_file

MIB = 1 << 20
GIB = 1 << 30
LLAMA31 = "llama-3.1-8b-instruct-Q4_K_M"
GEMMA2 = "gemma-2-2b-it-Q4_K_M"
GPTOSS = "gpt-oss-20b-mxfp4"
QWEN_SPLIT = "qwen2.5-7b-instruct-q4_k_m-split"
QWEN3_MOE = "qwen3-30b-a3b-Q4_K_M"


def model_of(paths: list[Path]) -> lc.LlamaModel:
    from inspector.gguf import merge_parts

    headers = {p.name: read_gguf_file(p) for p in paths}
    return lc.llama_model(merge_parts(paths[0].name, headers, {}))


@pytest.fixture(scope="module")
def models(gguf_files: dict[str, list[Path]]) -> dict[str, lc.LlamaModel]:
    return {name: model_of(paths) for name, paths in gguf_files.items()}


# --- exact bytes and parameters ---------------------------------------------------------------------


def test_tensor_bytes_are_the_real_files(models) -> None:
    """Each table's tensor bytes, from ggml's block sizes, are the real file's: the buffer sizes
    llama.cpp logged (gemma 1623.67 MiB, gpt-oss 11536.18 MiB) and the printed GiB."""
    data = {name: sum(t.nbytes for t in m.tensors) for name, m in models.items()}
    assert data[GEMMA2] == 1_702_536_192  # CPU_Mapped model buffer size = 1623.67 MiB
    assert round(data[GEMMA2] / MIB, 2) == 1623.67
    assert round(data[GPTOSS] / MIB, 2) == 11536.18
    assert round(data[LLAMA31] / GIB, 2) == 4.58 and round(data[QWEN3_MOE] / GIB, 2) == 17.28
    emb = next(t for t in models[LLAMA31].tensors if t.name == "token_embd.weight")
    assert (emb.type_name, emb.nbytes) == ("Q4_K", 128256 * 4096 // 256 * 144)  # 281.81 MiB, as logged
    out = next(t for t in models[LLAMA31].tensors if t.name == "output.weight")
    assert (out.type_name, out.nbytes) == ("Q6_K", 128256 * 4096 // 256 * 210)
    moe = next(t for t in models[GPTOSS].tensors if t.name == "blk.0.ffn_down_exps.weight")
    assert moe.type_name == "MXFP4" and moe.nbytes == moe.elements // 32 * 17


def test_parameters_are_exact(models) -> None:
    assert models[LLAMA31].params == 8_030_261_248  # Llama-3.1-8B's safetensors total
    assert models[QWEN_SPLIT].params == 7_615_616_512  # Qwen2.5-7B-Instruct's
    assert round(models[GPTOSS].params / 1e9, 2) == 20.91  # "model params = 20.91 B"
    assert round(models[QWEN3_MOE].params / 1e9, 2) == 30.53


def test_a_split_set_reads_as_one_model_and_its_second_part_is_the_real_size(gguf_files) -> None:
    first, second = gguf_files[QWEN_SPLIT]
    h1, h2 = read_gguf_file(first), read_gguf_file(second)
    assert (h1.metadata["split.count"], h2.metadata["split.no"], len(h1.tensors) + len(h2.tensors)) == (2, 1, 339)
    assert "general.architecture" not in h2.metadata
    # part 2 on the Hub is 689,872,288 bytes: its header, padding, then its tensors each padded to 32
    padded = sum(-(-t.nbytes // 32) * 32 for t in h2.tensors)
    assert h2.data_offset + padded == 689_872_288


# --- the KV cache, by hand -----------------------------------------------------------------------------


def _kv(m: lc.LlamaModel, **settings) -> int:
    return lc.kv_layout(m, lc.LlamaCppSettings(**settings).resolved()).bytes


def test_kv_by_hand_for_f16_q8_0_and_q4_0(models) -> None:
    m = models[LLAMA31]  # 32 layers, 8 KV heads x 128
    cells, layers, width = 8192, 32, 8 * 128
    assert _kv(m, ctx_size=8192) == layers * cells * width * 2 * 2  # K and V, 2 bytes each: 1 GiB
    assert _kv(m, ctx_size=8192, cache_type_k="q8_0", cache_type_v="q8_0") == layers * cells * (width // 32 * 34) * 2
    assert _kv(m, ctx_size=8192, cache_type_k="q4_0", cache_type_v="q4_0") == layers * cells * (width // 32 * 18) * 2
    assert _kv(m, ctx_size=8192, cache_type_k="q8_0", cache_type_v="q8_0") == 544 * MIB  # the worked example
    assert _kv(m, ctx_size=8192, kv_cache_dtype="float16") == GIB  # vLLM's name maps onto f16


def test_kv_pads_the_context_and_splits_streams(models) -> None:
    m = models[LLAMA31]
    per_cell = 32 * 8 * 128 * 2 * 2
    assert _kv(m, ctx_size=1000) == 1024 * per_cell  # n_ctx padded to 256
    # not unified: --parallel 3 streams of pad(10240 / 3, 256) = 3584 cells: 10752 in all
    layout = lc.kv_layout(m, lc.LlamaCppSettings(ctx_size=10000, parallel=3).resolved())
    assert (layout.n_ctx, layout.n_ctx_seq, layout.cells, layout.bytes) == (10752, 3584, 10752, 10752 * per_cell)
    unified = lc.kv_layout(m, lc.LlamaCppSettings(ctx_size=10000, parallel=3, kv_unified=True).resolved())
    assert (unified.n_ctx, unified.n_ctx_seq, unified.cells) == (10240, 10240, 10240)
    assert _kv(m) == 131072 * per_cell  # no -c: the training context


def test_sliding_window_layers_keep_their_own_cache(models) -> None:
    m = models[GEMMA2]  # 26 layers, every other one slides over 4096; 4 KV heads x 256
    assert (m.n_swa, sum(m.swa_layers), m.swa_layers[:2]) == (4096, 13, (True, False))
    row = 4 * 256 * 2  # f16 bytes per cell per layer, K or V
    full = 13 * 8192 * row * 2
    swa = 13 * 4608 * row * 2  # pad(min(8192, 4096 + 512), 256) cells
    assert _kv(m, ctx_size=8192) == full + swa == 650 * MIB
    assert _kv(m, ctx_size=8192, swa_full=True) == 2 * full
    # 4 unified slots: pad(min(8192, 4 x 4096 + 512), 256) = the full 8192 (the b7445 log: 416 + 416 MiB)
    assert _kv(m, ctx_size=8192, parallel=4, kv_unified=True) == 832 * MIB
    oss = models[GPTOSS]  # window 128: 768 cells for the sliding half, as the b6699 log prints
    layout = lc.kv_layout(oss, lc.LlamaCppSettings(ctx_size=131072).resolved())
    assert layout.swa_cells == 768 and layout.bytes == (3072 + 18) * MIB


def test_mla_stores_k_only_and_mtp_layers_none() -> None:
    meta = {"general.architecture": "deepseek2", "deepseek2.block_count": 62, "deepseek2.embedding_length": 7168,
            "deepseek2.attention.head_count": 128, "deepseek2.attention.head_count_kv": 1,
            "deepseek2.attention.key_length": 576, "deepseek2.attention.value_length": 512,
            "deepseek2.attention.key_length_mla": 192, "deepseek2.attention.value_length_mla": 128,
            "deepseek2.attention.kv_lora_rank": 512, "deepseek2.rope.dimension_count": 64,
            "deepseek2.context_length": 163840, "deepseek2.nextn_predict_layers": 1, "deepseek2.vocab_size": 129280}
    m = lc.llama_model(GGUFModel("ds", meta, (), None, {}))
    assert m.is_mla and not m.has_kv(61)  # the MTP layer
    layout = lc.kv_layout(m, lc.LlamaCppSettings(ctx_size=8192).resolved())
    assert sum(layout.v_bytes) == 0 and layout.bytes == 61 * 8192 * 576 * 2  # 549 MiB, K only


def test_a_quantized_v_needs_flash_attention_and_fp8_is_refused(models, capsys, gguf_files) -> None:
    path = str(gguf_files[GEMMA2][0])
    assert run([path, "-ctv", "q8_0", "-fa", "off"]) == 2
    assert "needs flash attention" in capsys.readouterr().err
    assert run([path, "--kv-cache-dtype", "fp8"]) == 2
    assert "no fp8 KV cache" in capsys.readouterr().err
    assert run([path, "-ctk", "q3_k"]) == 2
    assert "llama.cpp's cache types are" in capsys.readouterr().err


# --- placement, compute and --fit -------------------------------------------------------------------------


def test_layers_offload_from_the_output_layer(models) -> None:
    m = models[LLAMA31]
    s = lc.LlamaCppSettings(ctx_size=4096).resolved()
    full = lc.estimate(m, s)
    emb = 128256 * 4096 // 256 * 144
    assert (full.placement.n_gpu_layers, full.placement.model_host) == (33, emb)  # token_embd stays on the host
    one = lc.estimate(m, lc.LlamaCppSettings(ctx_size=4096, n_gpu_layers=1).resolved())
    out = next(t for t in m.tensors if t.name == "output.weight")
    assert one.placement.kv_gpu == 0 and one.placement.model_gpu == lc.gpu_alloc_bytes(out) + lc.gpu_alloc_bytes(
        next(t for t in m.tensors if t.name == "output_norm.weight"))
    none = lc.estimate(m, lc.LlamaCppSettings(ctx_size=4096, n_gpu_layers=0).resolved())
    assert none.placement.gpu_bytes == 0 and none.placement.model_host == sum(t.nbytes for t in m.tensors)


def test_tied_embeddings_are_loaded_again_for_the_output_layer(models) -> None:
    m = models[GEMMA2]
    emb = next(t for t in m.tensors if t.name == "token_embd.weight")
    e = lc.estimate(m, lc.LlamaCppSettings(ctx_size=8192).resolved())
    assert e.placement.model_host == emb.nbytes
    assert e.placement.model_gpu == sum(lc.gpu_alloc_bytes(t) for t in m.tensors)


def test_compute_buffer_phases(models) -> None:
    m = models[LLAMA31]
    e = lc.estimate(m, lc.LlamaCppSettings(ctx_size=8192).resolved())  # flash attention: the logits win
    assert e.placement.compute_gpu == 128256 * 512 * 4 + 4096 * 512 * 4  # 258.50 MiB
    off = lc.estimate(m, lc.LlamaCppSettings(ctx_size=8192, flash_attn="off").resolved())
    assert off.placement.compute_gpu == 560 * MIB  # KQ 512 MiB + the mask + 4E: the b-era logs' 560.00
    assert off.placement.compute_host == 4096 * 512 * 4 + 8192 * 512 * 4 + 10 * 1024  # 24.01 MiB


def test_fit_shortens_the_context_first(models) -> None:
    m = models[LLAMA31]
    fit = lc.fit_device(m, lc.LlamaCppSettings().resolved(), "RTX 3060 12GB", 12_288 * MIB)
    ctx = fit.estimate.kv.n_ctx
    assert fit.all_layers and 4096 <= ctx < 131072 and ctx % 256 == 0
    assert fit.estimate.placement.gpu_bytes <= fit.budget_bytes == 11 * GIB
    # a -c the user gave stands: layers go to the host instead
    given = lc.fit_device(m, lc.LlamaCppSettings(ctx_size=131072).resolved(), "RTX 3060 12GB", 12_288 * MIB)
    assert not given.all_layers and given.estimate.kv.n_ctx == 131072
    assert 0 < given.estimate.placement.n_gpu_layers < 33
    assert given.estimate.placement.gpu_bytes <= given.budget_bytes
    more = lc.estimate(m, lc.LlamaCppSettings(ctx_size=131072, n_gpu_layers=given.estimate.placement.n_gpu_layers + 1)
                       .resolved())
    assert more.placement.gpu_bytes > given.budget_bytes  # the most layers that fit


def test_fit_moves_an_moe_s_experts_before_its_layers(models) -> None:
    m = models[QWEN3_MOE]
    fit = lc.fit_device(m, lc.LlamaCppSettings(ctx_size=8192).resolved(), "RTX 4060 Ti 16GB", 16 * GIB)
    s = fit.estimate.settings
    assert not fit.all_layers and fit.estimate.placement.n_gpu_layers == 49 and 0 < s.n_cpu_moe < 48
    assert fit.estimate.placement.gpu_bytes <= fit.budget_bytes
    fewer = lc.estimate(m, lc.LlamaCppSettings(ctx_size=8192, n_cpu_moe=s.n_cpu_moe - 1).resolved())
    assert fewer.placement.gpu_bytes > fit.budget_bytes


# --- names and files ----------------------------------------------------------------------------------


def test_quantization_labels_and_groups() -> None:
    assert quant_label("Q4_K_M/m-UD-Q4_K_XL-00001-of-00002.gguf") == "UD-Q4_K_XL"
    assert quant_label("gemma-2-2b-it-IQ4_XS.gguf") == "IQ4_XS" and quant_label("x-f16.gguf") == "F16"
    assert quant_label("gpt-oss-20b-mxfp4.gguf") == "MXFP4" and quant_label("model.gguf") is None
    files = gguf_files({"a-Q8_0.gguf": 20, "a-Q4_K_M.gguf": 10, "mmproj-a-f16.gguf": 1,
                        "b/a-Q2_K-00002-of-00002.gguf": 4, "b/a-Q2_K-00001-of-00002.gguf": 3})
    assert [(f.label, f.bytes, f.projector) for f in files] == [
        ("Q2_K", 7, False), ("Q4_K_M", 10, False), ("Q8_0", 20, False), ("F16", 1, True)]
    assert files[0].parts == ("b/a-Q2_K-00001-of-00002.gguf", "b/a-Q2_K-00002-of-00002.gguf")


def test_the_model_argument_names_a_gguf_file() -> None:
    from inspector.source import parse_source

    s = parse_source("bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", validate=False)
    assert (s.repo_id, s.quant, s.display) == ("bartowski/Llama-3.2-1B-Instruct-GGUF", "Q4_K_M",
                                               "bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M")
    assert parse_source("hf.co/org/x-GGUF:q8_0", validate=False).quant == "q8_0"
    blob = parse_source("https://huggingface.co/org/x-GGUF/blob/main/x-Q4_0.gguf", validate=False)
    assert (blob.filename, blob.revision) == ("x-Q4_0.gguf", "main")


@pytest.mark.parametrize("name", ["../etc/passwd", "a/../../b.gguf", "a\\b.gguf"])
def test_a_file_outside_the_repo_is_refused(name: str, capsys) -> None:
    assert run(["org/x-GGUF", "--file", name, "--offline"]) == 2
    assert "not a file path inside the repo" in capsys.readouterr().err


# --- bad input ----------------------------------------------------------------------------------------


def _write(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def _header(tensors: list[tuple[str, tuple[int, ...], int]], version: int = 3) -> bytes:
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), 1)
    key, value = b"general.architecture", b"llama"
    out += struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(value)) + value
    for name, shape, ttype in tensors:
        out += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in shape) + struct.pack("<IQ", ttype, 0)
    return out


@pytest.mark.parametrize("data,message", [
    (b"GGUF\x03\x00\x00\x00" + bytes(6), "truncated GGUF header"),
    (b"GGML" + bytes(60), "not a GGUF file"),
    (b"GGUF" + struct.pack(">I", 3) + bytes(56), "big-endian GGUF"),
    (_header([("blk.0.attn_q.weight", (4096, 4096), 99)]), "ggml type 99"),
    (_header([("blk.0.attn_q.weight", (4096, 4096), 12)], version=1), "GGUF version 1"),
])
def test_bad_gguf_files_exit_6(tmp_path: Path, capsys, data: bytes, message: str) -> None:
    assert run([_write(tmp_path, "m-Q4_K_M.gguf", data)]) == 6
    out, err = capsys.readouterr()
    assert out == "" and message in err and "Traceback" not in err and err.count("\n") == 1


def test_a_header_past_the_cap_is_refused(gguf_files, monkeypatch, capsys) -> None:
    import inspector.gguf as g

    monkeypatch.setattr(g, "MAX_HEADER_BYTES", 1 << 20)  # the Llama-3.1 header is ~4 MB of tokenizer
    assert run([str(gguf_files[LLAMA31][0])]) == 6
    assert "larger than hfmem's 1 MiB cap" in capsys.readouterr().err


def test_a_split_set_missing_a_part_is_exit_4(gguf_files, tmp_path: Path, capsys) -> None:
    first = gguf_files[QWEN_SPLIT][0]
    shutil.copy(first, tmp_path / first.name)
    assert run([str(tmp_path / first.name)]) == 4
    assert "part 2 of the 2-part split set is missing" in capsys.readouterr().err
    assert run([str(tmp_path)]) == 4


def test_a_recurrent_model_is_refused_not_guessed(capsys, tmp_path: Path) -> None:
    meta = {"general.architecture": "mamba", "mamba.block_count": 64, "mamba.embedding_length": 2560}
    with pytest.raises(Exception, match="recurrent state"):
        lc.llama_model(GGUFModel("m", meta, (), None, {}))


def test_an_unknown_sliding_window_layout_is_refused() -> None:
    meta = {"general.architecture": "newarch", "newarch.block_count": 4, "newarch.embedding_length": 512,
            "newarch.attention.head_count": 8, "newarch.attention.sliding_window": 1024}
    with pytest.raises(Exception, match="refused rather than guessed"):
        lc.llama_model(GGUFModel("m", meta, (), None, {}))


# --- the command, local ------------------------------------------------------------------------------


def test_local_file_json_and_markdown(gguf_files, capsys) -> None:
    path = str(gguf_files[LLAMA31][0])
    assert run([path, "--json", "-c", "8192", "--gpu", "rtx 3060"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["engine"] == "llama.cpp" and doc["weights_format"] == "gguf"
    assert doc["parameters"]["total"] == 8_030_261_248
    assert doc["llama_cpp"]["kv_cache"]["bytes"] == GIB and doc["llama_cpp"]["host"]["model_bytes"] == 295_501_824
    assert doc["fit"][0]["gpu"] == "RTX 3060 12GB" and doc["fit"][0]["all_layers_on_gpu"]
    assert run([path, "--format", "markdown", "-c", "8192"]) == 0
    md = capsys.readouterr().out
    rows = [line for line in md.splitlines() if line.startswith("| KV cache")]
    assert len(rows) == 1 and "1.00 GiB" in rows[0]


def test_engine_choice_is_checked(gguf_files, capsys) -> None:
    assert run([str(gguf_files[GEMMA2][0]), "--engine", "vllm"]) == 2
    assert "use --engine llama.cpp" in capsys.readouterr().err
    assert run(["fixtures/snapshots/openai-community--gpt2.json", "--engine", "llama.cpp"]) == 2
    assert "reads a GGUF file" in capsys.readouterr().err


def test_snapshot_round_trip(gguf_files, tmp_path: Path, capsys) -> None:
    path = str(gguf_files[QWEN_SPLIT][0])
    snap = tmp_path / "qwen.json.gz"
    assert run([path, "--json", "--save-snapshot", str(snap), "-c", "4096"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert run([str(snap), "--json", "-c", "4096"]) == 0
    second = json.loads(capsys.readouterr().out)
    for doc in (first, second):
        doc.pop("source"), doc.pop("model")
    assert first == second
    import gzip

    assert json.loads(gzip.decompress(snap.read_bytes()))["format"] == "hfmem-snapshot/2"


# --- the Hub ----------------------------------------------------------------------------------------------

REPO = "lmstudio-community/Meta-Llama-3.1-8B-Instruct-GGUF"
SIZES = {"Q3_K_L": 4_321_956_416, "Q4_K_M": 4_920_734_272, "Q6_K": 6_596_006_464, "Q8_0": 8_540_770_880}


@pytest.fixture
def gguf_hub(fake_hub, gguf_files):
    """A repo of four quantizations: each file the Llama-3.1 header, sized as the quantization's
    file (the row estimates read only the sizes); and the Qwen split set."""
    head = gguf_files[LLAMA31][0].read_bytes()
    files = {f"Meta-Llama-3.1-8B-Instruct-{q}.gguf": VirtualFile(head, size) for q, size in SIZES.items()}
    files["README.md"] = VirtualFile(b"# gguf\n", 7)
    fake_hub.add(Repo(REPO, "a" * 40, files, refs={"main": "a" * 40}))
    parts = gguf_files[QWEN_SPLIT]
    fake_hub.add(Repo("Qwen/Qwen2.5-7B-Instruct-GGUF", "b" * 40, {
        p.name: VirtualFile(p.read_bytes(), size) for p, size in zip(parts, (3_993_201_344, 689_872_288), strict=True)},
        refs={"main": "b" * 40}))
    return fake_hub


def test_hub_repo_lists_every_quantization_and_picks_what_fits(gguf_hub, capsys) -> None:
    assert run([REPO, "--json", "-c", "8192", "--gpu", "rtx 3060 12gb"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {q["quantization"]: q for q in doc["quantizations"]}
    assert set(rows) == set(SIZES) and rows["Q8_0"]["file_bytes"] == SIZES["Q8_0"]
    assert [q for q in rows.values() if q["chosen"]] == [rows["Q8_0"]]  # 8.5 GB fits 12 GB at 8k
    assert rows["Q8_0"]["fits_first_gpu"] and doc["file"]["name"].endswith("Q8_0.gguf")
    assert run([REPO, "--json", "-c", "8192", "--gpu", "rtx 3070"]) == 0  # 8 GB: the Q6_K does not fit
    doc = json.loads(capsys.readouterr().out)
    assert doc["file"]["name"].endswith("Q4_K_M.gguf")


def test_hub_file_by_tag_and_by_name(gguf_hub, capsys) -> None:
    assert run([f"{REPO}:q6_k", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"]["name"] == "Meta-Llama-3.1-8B-Instruct-Q6_K.gguf"
    assert run([REPO, "--file", "Meta-Llama-3.1-8B-Instruct-Q3_K_L.gguf", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"]["name"].endswith("Q3_K_L.gguf")
    assert run([f"{REPO}:IQ2_XS"]) == 4
    err = capsys.readouterr().err
    assert "no GGUF file 'IQ2_XS'" in err and "Q4_K_M" in err


def test_hub_reads_the_header_by_growing_ranges(gguf_hub, capsys) -> None:
    assert run([f"{REPO}:Q4_K_M", "--json"]) == 0
    reads = [e for e in gguf_hub.log if e.path.startswith("/cdn/")]
    # the header is ~4.2 MB: 64 KiB, then the tokens' array predicted whole, then the merges and the
    # tensor table; each read continues the last (no byte is asked for twice)
    assert 2 <= len(reads) <= 3
    starts = [int(e.range.split("=")[1].split("-")[0]) for e in reads]
    ends = [int(e.range.split("-")[1]) for e in reads]
    assert starts[0] == 0 and all(s == e + 1 for s, e in zip(starts[1:], ends, strict=False))


def test_hub_split_set_and_offline(gguf_hub, capsys) -> None:
    assert run(["Qwen/Qwen2.5-7B-Instruct-GGUF", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["file"]["parts"] == ["qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf",
                                    "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf"]
    assert doc["file"]["bytes"] == 3_993_201_344 + 689_872_288 and doc["parameters"]["total"] == 7_615_616_512
    gguf_hub.log.clear()
    assert run(["Qwen/Qwen2.5-7B-Instruct-GGUF", "--json", "--offline"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == doc["parameters"]
    assert gguf_hub.log == []


def test_check_a_gguf_repo(gguf_hub, tmp_path: Path, capsys) -> None:
    assert run(["check", REPO, "--gpu", "rtx 3060 12gb", "-c", "8192"]) == 0
    assert "Q8_0.gguf on RTX 3060 12GB" in capsys.readouterr().out
    # (each file of this repo holds the Q4_K_M's header: a named file is checked by its own tensors)
    assert run(["check", f"{REPO}:Q8_0", "--gpu", "rtx 3070", "-c", "65536"]) == 3
    out = capsys.readouterr().out
    assert out.startswith("does not fit") and "--allow-offload passes this" in out
    assert run(["check", f"{REPO}:Q8_0", "--gpu", "rtx 3070", "-c", "65536", "--allow-offload"]) == 0
    assert capsys.readouterr().out.startswith("fits with offload")
    assert run(["check", f"{REPO}:Q8_0", "--gpu", "rtx 3070", "-c", "65536", "--allow-offload",
                "--host-memory", "0.5"]) == 3
    capsys.readouterr()
    models = tmp_path / "models.toml"
    models.write_text(f'[defaults]\ngpu = "rtx 3060 12gb"\nctx_size = 8192\n[[model]]\nid = "{REPO}"\n'
                      f'file = "Meta-Llama-3.1-8B-Instruct-Q3_K_L.gguf"\n[[model]]\nid = "{REPO}"\n')
    assert run(["check", "--models", str(models), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["fit"]["file"] for r in doc["results"]] == ["Meta-Llama-3.1-8B-Instruct-Q3_K_L.gguf",
                                                         "Meta-Llama-3.1-8B-Instruct-Q8_0.gguf"]


def test_gguf_json_validates_against_the_schema(gguf_hub, gguf_files, tmp_path: Path, capsys) -> None:
    from jsonschema import Draft202012Validator

    from inspector.api import __file__ as api_file

    schema = json.loads((Path(api_file).parent / "data" / "hfmem-1.schema.json").read_text())
    validator = Draft202012Validator(schema)
    models = tmp_path / "models.toml"
    models.write_text(f'[[model]]\nid = "{REPO}"\ngpu = "rtx 3070"\nctx_size = 65536\nallow_offload = true\n')
    for args in ([REPO, "--json"], [str(gguf_files[GPTOSS][0]), "--json"],
                 ["check", f"{REPO}:Q8_0", "--gpu", "rtx 3070", "--json"],
                 ["check", "--models", str(models), "--json"]):
        run(args)
        doc = json.loads(capsys.readouterr().out)
        assert not list(validator.iter_errors(doc)), args
    assert {"inspect_gguf", "check_gguf", "gguf_fit"} <= set(schema["$defs"])


def test_tensor_table_fixture_parses_with_gguf_py(gguf_files, tmp_path: Path) -> None:
    """Our parser and llama.cpp's gguf-py read a fixture the same: the header-only file made whole
    as a sparse file of the real length (its data reads as zeros)."""
    from gguf import GGUFReader

    path = tmp_path / gguf_files[GEMMA2][0].name
    shutil.copy(gguf_files[GEMMA2][0], path)
    ours = parse_gguf(path.read_bytes(), complete=True)
    with open(path, "r+b") as f:
        f.truncate(ours.data_offset + ours.data_bytes)
    theirs = GGUFReader(path)
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    assert [t.type for t in ours.tensors] == [int(t.tensor_type) for t in theirs.tensors]
    assert [t.shape for t in ours.tensors] == [tuple(int(d) for d in t.shape) for t in theirs.tensors]
    assert [t.nbytes for t in ours.tensors] == [int(t.n_bytes) for t in theirs.tensors]


def test_a_tensor_s_bytes_are_whole_blocks() -> None:
    assert GGUFTensor("x", (32,), 8, 0).nbytes == 34  # one Q8_0 block: 32 weights in 34 bytes
    assert GGUFTensor("x", (256, 3), 12, 0).nbytes == 3 * 144  # three Q4_K rows of one block each


def test_streams_attend_over_their_own_cells(models) -> None:
    """--parallel 4 without --kv-unified: each stream's graph sees n_ctx / 4 cells (the KQ and mask);
    with no -c, --fit's default context is the training context per stream."""
    m = models[LLAMA31]
    split = lc.estimate(m, lc.LlamaCppSettings(ctx_size=32768, parallel=4, flash_attn="off").resolved())
    one = lc.estimate(m, lc.LlamaCppSettings(ctx_size=8192, flash_attn="off").resolved())
    assert split.kv.n_ctx_seq == 8192 and split.placement.compute_gpu == one.placement.compute_gpu
    assert split.kv.bytes == 4 * one.kv.bytes
    assert lc.kv_layout(m, lc.LlamaCppSettings(parallel=2).resolved()).n_ctx == 2 * 131072


def test_an_moe_too_big_for_its_dense_part_offloads_whole_layers_without_experts(models) -> None:
    m = models[QWEN3_MOE]
    # (its dense part alone, 0.8 GB with 0.4 GB of KV and 0.3 GB of compute, is more than 1.2 GiB)
    fit = lc.fit_device(m, lc.LlamaCppSettings(ctx_size=4096).resolved(), "small", GIB + GIB * 6 // 5)
    p, s = fit.estimate.placement, fit.estimate.settings
    assert not fit.all_layers and s.n_cpu_moe == m.n_layer and 0 < p.n_gpu_layers < m.n_layer + 1
    assert p.gpu_bytes <= fit.budget_bytes


def test_check_engine_key(gguf_hub, tmp_path: Path, capsys) -> None:
    models = tmp_path / "models.toml"
    models.write_text(f'[defaults]\ngpu = "rtx 4090"\n[[model]]\nid = "{REPO}:Q4_K_M"\nengine = "vllm"\n'
                      '[[model]]\nid = "fixtures/snapshots/openai-community--gpt2.json"\nengine = "llama.cpp"\n'
                      f'[[model]]\nid = "{REPO}:Q4_K_M"\nengine = "llama.cpp"\n'
                      '[[model]]\nid = "x"\nengine = "sglang"\n')
    assert run(["check", "--models", str(models), "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    status = [(r["status"], r["exit_code"]) for r in doc["results"]]
    assert status == [("error", 2), ("error", 2), ("fits", 0), ("error", 2)]
    assert "engine must be auto, vllm or llama.cpp" in doc["results"][3]["error"]


def test_vllm_options_and_training_are_refused_for_gguf(gguf_files, capsys) -> None:
    path = str(gguf_files[GEMMA2][0])
    assert run([path, "-tp", "2"]) == 2
    assert "give --tensor-split 1,1" in capsys.readouterr().err
    assert run([path, "--max-num-seqs", "8"]) == 2
    assert run(["train", path]) == 6
    assert "hfmem train sizes a training step from a safetensors checkpoint" in capsys.readouterr().err


def test_mutated_headers_never_crash() -> None:
    """Every byte of a real header flipped, and every truncation: a HeaderError (or UnknownDtype),
    never another exception, and never a model that llama_model then trips over."""
    import random

    from inspector.errors import HfmemError
    from inspector.gguf import merge_parts

    base = (Path(__file__).parent.parent / "fixtures" / "gguf" / "llama-2-7b.Q4_0.header.gguf").read_bytes()
    rng = random.Random(20)
    cases = [base[:n] for n in range(0, 600, 7)]
    for _ in range(600):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data) if rng.random() < 0.5 else 800)] = rng.randrange(256)
        cases.append(bytes(data))
    for data in cases:
        try:
            h = parse_gguf(data, complete=True)
            m = lc.llama_model(merge_parts("x", {"x": h}, {}))
            lc.estimate(m, lc.LlamaCppSettings(ctx_size=512, cache_type_k="q8_0").resolved())
        except HfmemError:
            pass


def test_free_memory_at_load_is_the_logged_one() -> None:
    """llama.cpp's --fit starts from the device's free memory: an idle RTX 3070 logged 7672 MiB of
    its 8192, an M4 16 GB its whole Metal working set (10922 MiB)."""
    from inspector.gpus import builtin_gpus, find_gpu

    rtx, m4 = find_gpu("rtx 3070", builtin_gpus()), find_gpu("M4 16GB", builtin_gpus())
    assert lc.device_free_bytes(rtx.vendor, rtx.memory_bytes) == 7672 * MIB
    assert lc.device_free_bytes(m4.vendor, m4.memory_bytes) // MIB == 10922


# --- what the review found ------------------------------------------------------------------------------


def _gguf(folder: Path, name: str, meta: dict, tensors: list[tuple[str, tuple[int, ...]]]) -> Path:
    """A small header-only GGUF file written with gguf-py: F32 tensors, the metadata given."""
    import numpy as np
    from gguf import GGUFWriter

    path = folder / name
    w = GGUFWriter(str(path), meta.pop("general.architecture", "llama"))
    for key, value in meta.items():
        w.add_key_value(key, value, _vt(value))
    for tname, shape in tensors:
        w.add_tensor_info(tname, tuple(reversed(shape)), np.dtype(np.float32), int(np.prod(shape)) * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path


def _vt(value):
    from gguf import GGUFValueType as VT

    return VT.STRING if isinstance(value, str) else VT.UINT32 if isinstance(value, int) else VT.FLOAT32


TINY = {"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
        "llama.attention.head_count": 4, "llama.context_length": 2048, "llama.vocab_size": 100}


def test_a_tensor_past_the_layers_is_refused(tmp_path: Path, capsys) -> None:
    path = _gguf(tmp_path, "t-F32.gguf", dict(TINY),
                 [("blk.0.attn_q.weight", (64, 64)), ("blk.7.attn_q.weight", (64, 64))])
    assert run([str(path)]) == 6
    assert "past the 2 layers" in capsys.readouterr().err


def test_adapters_and_imatrix_are_no_models(tmp_path: Path, capsys) -> None:
    lora = _gguf(tmp_path, "adapter-F32.gguf", {**TINY, "general.type": "adapter"}, [("blk.0.attn_q.weight", (64, 64))])
    assert run([str(lora)]) == 6
    assert "'adapter' file (general.type)" in capsys.readouterr().err
    files = gguf_files({"m-Q4_K_M.gguf": 10, "imatrix.gguf": 1, "m-Q8_0.gguf": 20, "m-lora-F16.gguf": 2})
    assert [f.name for f in files] == ["m-Q4_K_M.gguf", "m-Q8_0.gguf"]


def test_a_broken_split_set_spoils_only_itself() -> None:
    from inspector.errors import EntryNotFound
    from inspector.gguf import choose_file

    listing = {"a-Q4_K_M.gguf": 10, "big-Q8_0-00001-of-00003.gguf": 5, "big-Q8_0-00003-of-00003.gguf": 5,
               "z-00000-of-00002.gguf": 1, "z-00001-of-00002.gguf": 1, "z-00002-of-00002.gguf": 1}
    files = gguf_files(listing)
    assert choose_file(files, "a-Q4_K_M.gguf", "r").name == "a-Q4_K_M.gguf"
    with pytest.raises(EntryNotFound, match="part 2 of the 3-part split set is missing"):
        choose_file(files, "Q8_0", "r")
    with pytest.raises(EntryNotFound, match="part 0 of a 2-part split set, which numbers its parts from 1"):
        choose_file(files, "z-00001-of-00002.gguf", "r")


def test_out_of_range_metadata_is_refused() -> None:
    from inspector.errors import ConfigError

    for key, value in (("llama.context_length", 1 << 60), ("llama.attention.head_count", 0),
                       ("llama.vocab_size", 1 << 40)):
        with pytest.raises(ConfigError):
            lc.llama_model(GGUFModel("m", {**TINY, key: value}, (), None, {}))


def test_head_defaults_follow_llama_cpp() -> None:
    """head_count_kv defaults to head_count per layer, the head size to n_embd / head_count[0]."""
    m = lc.llama_model(GGUFModel("m", {**TINY, "llama.attention.head_count": [4, 0]}, (), None, {}))
    assert m.n_head_kv == (4, 0) and m.n_embd_head_k == 16 and not m.has_kv(1)


def test_the_fit_steps_down_where_sliding_windows_bend_the_line(models) -> None:
    m = models[GEMMA2]
    s = lc.LlamaCppSettings().resolved()
    for gib_tenths in range(20, 60, 3):
        memory = lc.MIB * 1024 + GIB * gib_tenths // 10
        fit = lc.fit_device(m, s, "x", memory)
        p = fit.estimate.placement
        if p.n_gpu_layers == m.n_layer + 1:
            assert fit.all_layers == (p.gpu_bytes <= fit.budget_bytes)
        assert p.gpu_bytes <= fit.budget_bytes or fit.estimate.kv.n_ctx == 4096


def test_n_cpu_moe_on_a_dense_model_moves_nothing(models) -> None:
    m = models[LLAMA31]
    e = lc.estimate(m, lc.LlamaCppSettings(ctx_size=8192, n_cpu_moe=4).resolved())
    assert e.settings.n_cpu_moe == 0 and e.placement.model_host == 128256 * 4096 // 256 * 144
    fit = lc.fit_device(m, lc.LlamaCppSettings(ctx_size=8192, n_cpu_moe=4).resolved(), "H100", 80 * GIB)
    assert fit.all_layers


def test_the_quantizations_are_compared_where_fit_can_shorten_the_context(gguf_hub, capsys) -> None:
    """No -c: the 128k training context fits no 12 GB card, but --fit runs it shorter; the rows
    are compared at --fit-ctx (4096) and the largest that runs there is the one shown."""
    assert run([REPO, "--json", "--gpu", "rtx 3060 12gb"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["quantizations_ctx_size"] == 4096
    assert doc["file"]["name"].endswith("Q8_0.gguf") and doc["fit"][0]["all_layers_on_gpu"]
    assert 4096 < doc["fit"][0]["ctx_size"] < 131072


def test_llama_cpp_spellings(gguf_files, capsys) -> None:
    path = str(gguf_files[LLAMA31][0])
    assert run([path, "-c", "0", "-ngl", "-2", "--json", "--gpu", "rtx 3060 12gb"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["llama_cpp"]["ctx_size"] == 131072 and doc["fit"][0]["ctx_size"] == 131072  # -c 0: kept
    assert run([path, "-ub", "4096", "--json", "-c", "8192"]) == 0
    assert json.loads(capsys.readouterr().out)["llama_cpp"]["ubatch_size"] == 2048  # min(-ub, -b)
    from inspector.source import parse_source

    assert parse_source("hf.co/org/x-GGUF:latest", validate=False).quant is None
    assert parse_source("hf.co/org/x-GGUF", validate=False).repo_id == "org/x-GGUF"


def test_options_of_the_other_engine_are_refused(gguf_hub, capsys) -> None:
    assert run(["fixtures/snapshots/openai-community--gpt2.json", "-ngl", "3"]) == 2
    assert "--n-gpu-layers is a llama.cpp option" in capsys.readouterr().err
    assert run(["check", f"{REPO}:Q4_K_M", "--gpu", "rtx 4090", "--precision", "fp8"]) == 2
    assert "precision is a vLLM setting" in capsys.readouterr().err


def test_a_local_file_lists_only_its_own_quantizations(gguf_files, tmp_path: Path, capsys) -> None:
    for name in ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Meta-Llama-3.1-8B-Instruct-Q8_0.gguf",
                 "gemma-2-2b-it-Q4_K_M.gguf"):
        shutil.copy(gguf_files[LLAMA31][0], tmp_path / name)
    assert run([str(tmp_path / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"), "--json"]) == 0
    rows = [q["file"] for q in json.loads(capsys.readouterr().out)["quantizations"]]
    assert sorted(rows) == ["Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Meta-Llama-3.1-8B-Instruct-Q8_0.gguf"]


def test_engine_llama_cpp_reads_the_gguf_of_a_mixed_folder(gguf_files, tmp_path: Path, capsys) -> None:
    shutil.copy(gguf_files[GEMMA2][0], tmp_path / "gemma-2-2b-it-Q4_K_M.gguf")
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    assert run([str(tmp_path), "--engine", "llama.cpp", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"]["name"] == "gemma-2-2b-it-Q4_K_M.gguf"


def test_the_cpu_keeps_a_repacked_copy(models) -> None:
    """On x86-64 with AVX2 the CPU backend repacks its Q4_0/Q4_K/IQ4_NL/MXFP4 matrices into a buffer
    of their own: b11312 on the sparse fixtures logged CPU_REPACK 3204.00 MiB for Llama-3.1-8B Q4_K_M
    (bench/llamacpp_cpu.sh)."""
    m = models[LLAMA31]
    cpu = lc.estimate(m, lc.LlamaCppSettings(ctx_size=4096).resolved(), gpu=False)
    assert cpu.placement.repack_host == 3204 * MIB
    assert lc.estimate(m, lc.LlamaCppSettings(ctx_size=4096, repack=False).resolved(), gpu=False
                       ).placement.repack_host == 0
    assert lc.estimate(m, lc.LlamaCppSettings(ctx_size=4096).resolved()).placement.repack_host == 0  # all on GPU


def test_the_report_says_what_a_cpu_only_run_takes(gguf_files, capsys) -> None:
    assert run([str(gguf_files[LLAMA31][0]), "-c", "4096", "--json"]) == 0
    cpu = json.loads(capsys.readouterr().out)["cpu_only"]
    # b11312 on this fixture, CPU build: CPU_Mapped 4685.30 + CPU_REPACK 3204.00 + KV 512.00 MiB
    assert (cpu["model_bytes"], cpu["repack_bytes"], cpu["kv_bytes"]) == (4_912_898_304, 3204 * MIB, 512 * MIB)
    assert run([str(gguf_files[LLAMA31][0]), "-c", "4096"]) == 0
    assert "Without a GPU (a CPU build, x86-64 with AVX2)" in capsys.readouterr().out


def test_a_tensor_split_places_layers_as_llama_cpp(models) -> None:
    """--split-mode layer over two cards: layers 0-16 on the first, 17-31 and the output on the
    second (upper_bound of (il - start) / n_gpu_layers over the shares 0.5, 1.0)."""
    assert lc.layer_devices(32, (1, 1), 0, 33) == [0] * 17 + [1] * 16
    assert lc.layer_devices(32, (3, 1), 0, 33)[24:26] == [0, 1]
    m = models[LLAMA31]
    one = lc.estimate(m, lc.LlamaCppSettings(ctx_size=8192).resolved())
    two = lc.estimate(m, lc.LlamaCppSettings(ctx_size=8192, tensor_split=(1.0, 1.0)).resolved())
    d0, d1 = two.placement.device_bytes
    assert d0 + d1 == two.placement.gpu_bytes and two.placement.model_gpu == one.placement.model_gpu
    assert two.placement.kv_gpu == one.placement.kv_gpu  # each layer's KV on its own card
    ffn = 3 * 14336 * 512 * 4 + 2 * 4096 * 512 * 4  # the first card reserves no logits
    assert two.placement.compute_gpu == ffn + one.placement.compute_gpu


def test_a_split_fits_what_one_card_cannot(gguf_files, capsys) -> None:
    path = str(gguf_files[QWEN3_MOE][0])
    assert run(["check", path, "--gpu", "rtx 3060 12gb", "-c", "16384"]) == 3
    capsys.readouterr()
    assert run(["check", path, "--gpu", "rtx 3060 12gb", "-c", "16384", "--count", "2"]) == 0
    assert "on 2 x RTX 3060 12GB" in capsys.readouterr().out
    assert run([path, "--gpu", "rtx 3060 12gb", "-c", "16384", "-ts", "1,1", "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)["fit"][0]
    assert fit["devices"] == 2 and fit["all_layers_on_gpu"] and max(fit["per_device_bytes"]) <= fit["budget_bytes"]
    assert run([path, "-ts", "1,x"]) == 2


def test_offline_answers_with_the_files_read_before(gguf_hub, capsys) -> None:
    assert run([f"{REPO}:Q4_K_M", "--json"]) == 0  # online: the Q4_K_M's header is read and kept
    capsys.readouterr()
    gguf_hub.log.clear()
    assert run([f"{REPO}:Q4_K_M", "--json", "--offline"]) == 0
    assert run([REPO, "--json", "--offline", "-c", "8192", "--gpu", "rtx 3060 12gb"]) == 0
    out, err = capsys.readouterr()
    assert "Q8_0.gguf fits RTX 3060 12GB better but was never read" in err
    assert run([f"{REPO}:Q6_K", "--offline"]) == 8
    assert "read before: Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf" in capsys.readouterr().err
    assert gguf_hub.log == []


def test_a_local_repo_of_quantization_folders(gguf_files, tmp_path: Path, capsys) -> None:
    """hf download of a repo that keeps each quantization in a folder of its own."""
    (tmp_path / "Q4_K_M").mkdir()
    for p in gguf_files[QWEN_SPLIT]:
        shutil.copy(p, tmp_path / "Q4_K_M" / p.name)
    (tmp_path / "README.md").write_text("x")
    assert run([str(tmp_path), "--json", "-c", "4096"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["file"]["parts"][0] == "Q4_K_M/qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf"
    assert doc["parameters"]["total"] == 7_615_616_512
    assert run([str(tmp_path), "--file", "Q4_K_M/qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf", "--json"]) == 0
