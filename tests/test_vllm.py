"""vLLM's rules per release and per GPU (inspector/vllm.py), and the defects of issue 17 they fix."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, snapshot_path

from inspector.api import inspect_model
from inspector.cli import run
from inspector.estimate import Assumptions, Precision, Settings, estimate_memory
from inspector.fit import fit, usable_bytes
from inspector.gpus import find_gpu
from inspector.vllm import NEWEST, batch_defaults, cuda_graph_count, parse_release

GIB = 2**30


@pytest.fixture(autouse=True)
def in_root(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)


def _path(repo: str) -> str:
    return str(snapshot_path(repo).relative_to(ROOT))


@pytest.mark.parametrize(("gpu", "tokens", "seqs"), [
    ("RTX 4090 24GB", 2048, 256), ("L40S 48GB", 2048, 256), ("A100 80GB", 2048, 256),  # "a100" is excluded
    ("H100 80GB", 8192, 1024), ("H200 141GB", 8192, 1024),
])
def test_each_gpu_gets_vllms_batch_defaults(gpu: str, tokens: int, seqs: int) -> None:
    report = inspect_model(_path("Qwen/Qwen2-7B-Instruct"))
    assert report.architecture is not None
    f = fit(report.architecture, report.parameters, Precision.STORED, find_gpu(gpu), Settings())
    assert f.engine is not None
    assert (f.engine.max_num_batched_tokens, f.engine.max_num_seqs) == (tokens, seqs)


def test_a_consumer_gpu_is_no_longer_charged_the_h100s_sampler() -> None:
    # Qwen2-7B (152,064 vocabulary) on an RTX 4090 under vLLM 0.16 (PyTorch's sort sampler): 256
    # sampler rows, not 1024, so the memory left for the KV cache (what vLLM's "Available KV cache
    # memory" says) is about twice as large.
    report = inspect_model(_path("Qwen/Qwen2-7B-Instruct"))
    a, p = report.architecture, report.parameters
    assert a is not None
    gpu = find_gpu("rtx 4090")
    small = fit(a, p, Precision.STORED, gpu, Settings(max_model_len=1024, assumptions=Assumptions(vllm_version="0.16")))
    big = fit(a, p, Precision.STORED, gpu, Settings(max_model_len=1024, assumptions=Assumptions(
        vllm_version="0.16", max_num_batched_tokens=8192, max_num_seqs=1024)))
    assert small.per_gpu and big.per_gpu
    assert small.per_gpu.activation_bytes < big.per_gpu.activation_bytes / 3

    def kv_budget(f) -> int:
        return f.usable_bytes - (f.per_gpu.total_bytes - f.per_gpu.kv_cache_bytes)

    assert kv_budget(small) > 1.9 * kv_budget(big)


def test_batch_defaults_by_release_and_entrypoint() -> None:
    b200 = 192_265_846_784
    assert batch_defaults((0, 27, 1), "serve", device_total_bytes=b200).max_num_batched_tokens == 8192
    assert batch_defaults((0, 28, 0), "serve", device_total_bytes=b200).max_num_batched_tokens == 16384
    assert batch_defaults((0, 33, 0), "llm", device_total_bytes=85 << 30, device_name="H100").max_num_batched_tokens \
        == 16384
    # From 0.11.1 the tokens are capped at sequences x context.
    assert batch_defaults((0, 11, 1), "serve", device_total_bytes=None, max_model_len=4).max_num_batched_tokens == 4096
    assert batch_defaults((0, 11, 0), "serve", device_total_bytes=None, max_model_len=4).max_num_batched_tokens == 8192
    # GB10 (DGX Spark, cc 12.1) has the memory of the large tier but not from 0.33.
    spark = dict(device_total_bytes=119 << 30, device_name="NVIDIA GB10", compute_capability="12.1")
    assert batch_defaults((0, 32, 0), "serve", **spark).max_num_seqs == 1024
    assert batch_defaults((0, 33, 0), "serve", **spark).max_num_seqs == 256


def test_cuda_graphs_per_release() -> None:
    assert cuda_graph_count((0, 10, 0), 8192, 1024) == 67  # piecewise only, step 8 to 512
    assert cuda_graph_count((0, 11, 1), 8192, 1024) == 102  # full and piecewise, step 16 above 256
    assert cuda_graph_count((0, 33, 0), 2048, 256) == 86


@pytest.mark.parametrize(("text", "release"), [("0.19", (0, 19, 1)), ("0.11.1", (0, 11, 1)), (None, NEWEST)])
def test_vllm_version(text: str | None, release: tuple[int, int, int]) -> None:
    assert parse_release(text) == release


@pytest.mark.parametrize(("value", "says"), [
    ("0.34", "sized after warm-up"), ("0.15.0", "0.15.1 is known"), ("0.8.5", "it knows 0.9.1 to"),
    ("latest", "not a release like 0.19"), ("0.19.7", "not a release hfmem knows"),
])
def test_an_unknown_vllm_version_is_a_usage_error(value: str, says: str, capsys) -> None:
    assert run([_path("openai-community/gpt2"), "--vllm-version", value]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_the_json_says_which_release_and_each_fit_row_its_defaults(capsys) -> None:
    assert run([_path("openai-community/gpt2"), "--json", "--vllm-version", "0.19", "--gpu", "rtx 4090",
                "--gpu", "h100"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["assumptions"]["vllm_version"] == "0.19.1"
    assert doc["assumptions"]["gpu_memory_utilization"] == 0.9  # 0.92 only from 0.20
    rows = {f["gpu"]: f["engine"] for f in doc["fit"] if f["precision"] == "stored"}
    assert rows["RTX 4090 24GB"]["max_num_batched_tokens"] == 2048
    assert rows["H100 80GB"]["max_num_batched_tokens"] == 8192
    assert rows["H100 80GB"]["cuda_graphs_in_budget"] is False


def test_a_float32_checkpoint_loads_in_16_bits_under_dtype_auto(capsys) -> None:
    gpt2 = _path("openai-community/gpt2")  # F32 on disk
    report = inspect_model(gpt2)
    a, p = report.architecture, report.parameters
    assert a is not None
    auto = estimate_memory(a, p, Settings(precisions=(Precision.STORED,))).estimates[0]
    assert auto.weights_bytes == p.total_params * 2
    fp32 = estimate_memory(a, p, Settings(precisions=(Precision.STORED,), assumptions=Assumptions(dtype="float32")))
    assert fp32.estimates[0].weights_bytes == p.total_params * 4 and fp32.engine.dtype == "fp32"
    # On a GPU without bf16 (a T4) auto picks fp16; `check` says which.
    assert run(["check", gpt2, "--gpu", "t4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["engine"]["dtype"] == "fp16"


def test_the_budget_is_the_utilization_of_cudas_total() -> None:
    h100 = find_gpu("h100")
    assert h100.cuda_bytes == 85_045_477_376 < h100.memory_bytes
    report = inspect_model(_path("openai-community/gpt2"))
    assert report.architecture is not None
    m = estimate_memory(report.architecture, report.parameters, Settings(), h100)
    assert usable_bytes(h100, m.engine) == -(-85_045_477_376 * 92 // 100)


def test_the_cuda_context_must_fit_beyond_the_budget(capsys) -> None:
    # At utilization 1.0 nothing is left for the CUDA context: vLLM refuses to start.
    assert run(["check", _path("openai-community/gpt2"), "--gpu", "h100", "--gpu-memory-utilization", "1"]) == 3
    assert "beyond its budget (the CUDA context)" in capsys.readouterr().out


@pytest.mark.parametrize("release", [[], ["--vllm-version", "0.10.1"]])
def test_gpt_oss_120b_does_not_fit_one_h100_at_its_full_context(release: list[str], capsys) -> None:
    # vLLM 0.10.1 fails to start there ("Available KV cache memory: -2.14 GiB", vllm#23278).
    code = run(["check", _path("openai/gpt-oss-120b"), "--gpu", "h100", "--count", "1", *release])
    assert code == 3, capsys.readouterr().out


def _falcon_40b() -> dict:
    return json.loads((ROOT / "fixtures" / "configs" / "tiiuae--falcon-40b.json").read_text())


@pytest.mark.parametrize(("change", "kv_heads"), [
    ({}, 8),  # the real Falcon-40B config
    ({"multi_query": True}, 8),  # new decoder architecture: num_kv_heads holds (was taken as 1: KV 8x small)
    ({"new_decoder_architecture": False, "multi_query": True}, 1),  # Falcon-7B's layout
])
def test_falcons_three_layouts(change: dict, kv_heads: int) -> None:
    from inspector.arch import parse_architecture

    assert parse_architecture({**_falcon_40b(), **change}).num_key_value_heads == kv_heads


def test_kv_heads_of_mpt_dbrx_and_chatglm() -> None:
    from inspector.arch import parse_architecture

    base = {"num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 8}
    assert parse_architecture({**base, "model_type": "mpt", "attn_config": {"kv_n_heads": 2}}).num_key_value_heads == 2
    assert parse_architecture({**base, "model_type": "mpt", "attn_config": {}}).num_key_value_heads == 8
    assert parse_architecture({**base, "model_type": "dbrx", "attn_config": {"kv_n_heads": 4}}).num_key_value_heads \
        == 4
    # vLLM reads multi_query_group_num whatever multi_query_attention says.
    assert parse_architecture({**base, "model_type": "chatglm", "multi_query_group_num": 2}).num_key_value_heads == 2


@pytest.mark.parametrize("scheme", [None, "fp8"])
def test_fused_experts_fp8_scales_are_not_parameters(scheme: str | None) -> None:
    from inspector.header import TensorInfo
    from inspector.params import TensorKind, classify, quant_scheme

    t = TensorInfo("model.layers.0.mlp.experts.gate_up_proj_scale_inv", "F32", (128, 48, 16), 0, 128 * 48 * 16 * 4)
    q = quant_scheme({"quant_method": scheme}) if scheme else None
    assert classify(t, q)[0] is TensorKind.QUANT_AUX


def test_an_impossible_tensor_parallel_size_is_a_usage_error(capsys) -> None:
    assert run([_path("Qwen/Qwen2-7B-Instruct"), "-tp", "3"]) == 2  # was a table of "-" and exit 0
    out, err = capsys.readouterr()
    assert out == "" and "--tensor-parallel-size 3 cannot split 28 attention heads / 4 KV heads" in err


@pytest.mark.parametrize("length", ["65536", "1000000000000"])
def test_a_context_beyond_the_models_is_refused_as_vllm_does(length: str, monkeypatch, capsys) -> None:
    qwen = _path("Qwen/Qwen2-7B-Instruct")  # max_position_embeddings 32768, no rope scaling
    assert run([qwen, "--max-model-len", length]) == 2
    if length == "65536":
        assert "beyond the model's 32,768 tokens" in capsys.readouterr().err
        monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
        assert run([qwen, "--max-model-len", length, "--json"]) == 0


def test_the_limit_follows_the_rope_scaling_by_release() -> None:
    from inspector.arch import parse_architecture
    from inspector.vllm import derived_max_model_len

    cfg = {"model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 8,
           "max_position_embeddings": 32768,
           "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    a = parse_architecture(cfg)
    assert derived_max_model_len((0, 29, 0), a) == 131072  # original x factor
    assert derived_max_model_len((0, 30, 0), a) == 32768  # YaRN is no longer scaled again
    linear = parse_architecture({**cfg, "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert derived_max_model_len((0, 33, 0), linear) == 65536
    llama3 = parse_architecture({**cfg, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    assert derived_max_model_len((0, 33, 0), llama3) == 32768


def test_check_max_model_len_auto_answers_the_longest_context(capsys) -> None:
    # The "done when": a consumer GPU, one of it, the longest context.
    code = run(["check", _path("meta-llama/Llama-3.1-8B-Instruct"), "--gpu", "RTX 4090 24GB", "--count", "1",
                "--max-model-len", "auto", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["fits"]
    assert 0 < doc["context_tokens"] == doc["max_context_tokens"] < 131072  # the longest that fits, not the model's
    assert doc["kv_cache_capacity_tokens"] >= doc["context_tokens"]


@pytest.mark.parametrize(("release", "path", "per_logit"), [("0.16.0", "pytorch", 38.2), ("0.19.0", "triton", 14.7)])
def test_the_sampler_peak_follows_vllm_use_flashinfer_sampler(monkeypatch, release, path, per_logit) -> None:
    report = inspect_model(_path("meta-llama/Llama-3.1-8B-Instruct"))
    assert report.architecture is not None
    settings = Settings(precisions=(Precision.STORED,), assumptions=Assumptions(vllm_version=release))
    native = estimate_memory(report.architecture, report.parameters, settings)
    monkeypatch.setenv("VLLM_USE_FLASHINFER_SAMPLER", "1")
    flash = estimate_memory(report.architecture, report.parameters,
                            Settings(precisions=(Precision.STORED,), assumptions=Assumptions(vllm_version=release)))
    assert native.engine.sampler == path and flash.engine.sampler == "flashinfer"
    rows, vocab = 1024, 128256
    assert native.estimates[0].activation_bytes - flash.estimates[0].activation_bytes == \
        int(8192 * 4096 * 2.69 + rows * vocab * per_logit) - int(8192 * 4096 * 2.69 + rows * vocab * 16.1)
