"""The CLI: exact output, exit codes, stdout/stderr discipline."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, snapshot_path
from safetensors.numpy import save_file

from inspector import __version__
from inspector.cli import run

QWEN = str(snapshot_path("Qwen/Qwen1.5-110B").relative_to(ROOT))
GPT2 = str(snapshot_path("openai-community/gpt2").relative_to(ROOT))


@pytest.fixture(autouse=True)
def in_root(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)


def test_table_is_exact(capsys) -> None:
    assert run([QWEN]) == 0
    out, err = capsys.readouterr()
    assert out == (
        "Qwen/Qwen1.5-110B @ main (fixtures/snapshots/Qwen--Qwen1.5-110B.json)\n"
        "\n"
        "Parameters       111,209,914,368  111.21 B  BF16\n"
        "Stored elements  111,209,914,368\n"
        "Weights (bytes)  222,419,828,736  207.14 GiB  in 45 safetensors files\n"
        "\n"
        "Architecture  qwen2: 80 layers (80 full attention), hidden 8,192, 64 heads / 8 KV heads x 128,"
        " vocab 152,064\n"
        "KV cache      bf16, 320.0 KiB per token; 10.00 GiB for 1 sequence of 32,768 tokens\n"
        "\n"
        "Memory in GiB (vLLM 0.33.0, 32,768 tokens x 1 sequence; 8,192 batched tokens, 1,024 sequences as on"
        " an H100)\n"
        "precision        weights    KV cache    activations    overhead    total    weights x 1.2\n"
        "-------------  ---------  ----------  -------------  ----------  -------  ---------------\n"
        "stored (BF16)     207.14       10.00           2.75        2.25   222.14           248.57\n"
        "bf16              207.14       10.00           2.75        2.25   222.14           248.57\n"
        "fp8               105.92       10.00           2.75        2.25   120.92           127.10\n"
        "int8              107.48       10.00           2.75        2.25   122.48           128.97\n"
        "int4               57.25       10.00           2.75        2.25    72.25            68.70\n"
        "\n"
        # Usable is 0.92 x CUDA's total: 72.92 GiB on an A100 80GB, 72.87 on an H100. The H100 gets vLLM's
        # larger batch defaults (8192 tokens, 1024 sequences): 2.75 GiB of activations, the forward pass's
        # (the Triton sampler's 2.31 is less), so int4's 72.25 GiB fits one, as on the A100.
        "Fit: GPUs needed at 32,768 tokens x 1 (longest context that fits on them); vLLM 0.33.0's defaults"
        " per GPU, gpu_memory_utilization 0.92\n"
        "GPU              stored (BF16)     bf16       fp8     int8     int4\n"
        "-------------  ---------------  -------  --------  -------  -------\n"
        "RTX 4090 24GB              > 8      > 8   8 (32k)  8 (32k)  4 (32k)\n"
        "L40S 48GB              8 (32k)  8 (32k)   4 (32k)  4 (32k)  2 (32k)\n"
        "A100 80GB              4 (32k)  4 (32k)  2 (32k)*  2 (32k)  1 (32k)\n"
        "H100 80GB              4 (32k)  4 (32k)   2 (32k)  2 (32k)  1 (32k)\n"
        "H200 141GB             2 (32k)  2 (32k)   1 (32k)  1 (32k)  1 (32k)\n"
        "> 8: needs pipeline parallelism across nodes; *: precision not native on that GPU\n"
    )
    assert err == ""


def test_table_with_buffers_and_files(capsys) -> None:
    assert run([GPT2, "--files", "--precision", "bf16"]) == 0
    assert capsys.readouterr().out == (
        "openai-community/gpt2 @ main 607a30d783df (fixtures/snapshots/openai-community--gpt2.json)\n"
        "\n"
        "Parameters                124,439,808  124.44 M  F32\n"
        "Buffers (not parameters)   12,582,912\n"
        "Stored elements           137,022,720\n"
        "Weights (bytes)           548,090,880  0.51 GiB  in 1 safetensors file\n"
        "\n"
        "Architecture  gpt2: 12 layers (12 full attention), hidden 768, 12 heads / 12 KV heads x 64, vocab"
        " 50,257\n"
        "KV cache      bf16, 36.0 KiB per token; 36.0 MiB for 1 sequence of 1,024 tokens\n"
        "\n"
        "Memory in GiB (vLLM 0.33.0, 1,024 tokens x 1 sequence; 8,192 batched tokens, 1,024 sequences as on"
        " an H100)\n"
        "precision      weights    KV cache    activations    overhead    total    weights x 1.2\n"
        "-----------  ---------  ----------  -------------  ----------  -------  ---------------\n"
        "bf16              0.23        0.04           0.72        0.55     1.54             0.28\n"
        "\n"
        "Fit: GPUs needed at 1,024 tokens x 1 (longest context that fits on them); vLLM 0.33.0's defaults"
        " per GPU, gpu_memory_utilization 0.92\n"
        "GPU              bf16\n"
        "-------------  ------\n"
        "RTX 4090 24GB  1 (1k)\n"
        "L40S 48GB      1 (1k)\n"
        "A100 80GB      1 (1k)\n"
        "H100 80GB      1 (1k)\n"
        "H200 141GB     1 (1k)\n"
        "\n"
        "file                 parameters        bytes\n"
        "-----------------  ------------  -----------  --------\n"
        "model.safetensors   124,439,808  548,090,880  0.51 GiB\n"
    )


def test_quantized_table_names_packed_formats(capsys) -> None:
    assert run([str(snapshot_path("openai/gpt-oss-20b"))]) == 0
    out = capsys.readouterr().out
    assert "  MXFP4                    19,110,297,600  19.11 B\n" in out
    assert "Quantization scales/zeros     597,196,800\n" in out
    assert "note: quantized checkpoint (mxfp4)" in out


def test_markdown(capsys) -> None:
    assert run([QWEN, "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### Qwen/Qwen1.5-110B @ main")
    assert "| Parameters      | 111,209,914,368 | 111.21 B  BF16" in out


def test_json_contract(capsys) -> None:
    assert run([GPT2, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "hfmem/1"
    assert doc["tool"] == {"name": "hfmem", "version": __version__}
    assert doc["model"] == "openai-community/gpt2"
    assert doc["revision"] == "607a30d783dfa663caf39e06633721c8d4cfcd7e"
    assert doc["parameters"]["total"] == 124_439_808
    assert doc["parameters"]["by_dtype"] == {"F32": 124_439_808}
    assert doc["parameters"]["stored_elements"] == 137_022_720
    assert doc["weights_bytes"] == 548_090_880
    assert doc["files"] == [
        {"file": "model.safetensors", "parameters": 124_439_808, "stored_elements": 137_022_720,
         "bytes": 548_090_880}
    ]
    assert run([GPT2, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == doc


def test_json_memory_contract(capsys) -> None:
    args = [QWEN, "--json", "--max-model-len", "8192", "--batch-size", "2", "--kv-cache-dtype", "fp8",
            "--gpu-memory-utilization", "0.9", "--max-num-seqs", "256", "-tp", "4"]
    assert run(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["assumptions"] == {
        "engine": "vllm", "gpu_memory_utilization": 0.9, "max_num_batched_tokens": 8192, "max_num_seqs": 256,
        "enforce_eager": False, "tensor_parallel_size": 4, "context_source": "--max-model-len",
        "compute_dtype": "bf16", "vllm_version": "0.33.0", "entrypoint": "serve", "dtype": "bf16",
        "batch_defaults": ">= 70 GiB", "cuda_graphs_in_budget": True, "sampler": "triton",
    }
    arch = doc["architecture"]
    assert (arch["num_hidden_layers"], arch["num_key_value_heads"], arch["head_dim"]) == (80, 8, 128)
    assert arch["layer_kinds"] == {"full_attention": 80}
    kv = doc["kv_cache"]
    # 80 layers x K and V x 8 KV heads x 128 x 1 byte (fp8); per GPU at TP 4: 2 of the 8 heads.
    assert kv["bytes_per_token"] == 80 * 2 * 2 * 128
    assert (kv["context_length"], kv["batch_size"], kv["bytes"]) == (8192, 2, 80 * 2 * 2 * 128 * 8192 * 2)
    assert [e["precision"] for e in doc["estimates"]] == ["stored", "fp32", "bf16", "fp8", "int8", "int4"]
    bf16 = doc["estimates"][2]
    assert bf16["weights_bytes"] == 111_209_914_368 * 2 // 4
    assert bf16["total_bytes"] == sum(bf16[k] for k in ("weights_bytes", "kv_cache_bytes", "activation_bytes",
                                                         "overhead_bytes"))


def test_estimate_options_are_checked(capsys) -> None:
    assert run([QWEN, "--kv-cache-dtype", "int3"]) == 2
    assert "--kv-cache-dtype 'int3' is not one of" in capsys.readouterr().err
    assert run([QWEN, "--batch-size", "0"]) == 2
    assert run([QWEN, "--precision", "int2"]) == 2


def test_no_config_means_no_estimate_and_says_why(tmp_path, capsys) -> None:
    f = tmp_path / "model.safetensors"
    save_file({"w": np.zeros((4, 8), np.float16)}, str(f))
    assert run([str(f), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["architecture"] is None and doc["estimates"] == [] and doc["kv_cache"] is None
    assert any("no config.json" in n for n in doc["notes"])


def test_version(capsys) -> None:
    assert run(["--version"]) == 0
    assert capsys.readouterr().out == f"hfmem {__version__}\n"


def test_help_says_a_path_wins(capsys) -> None:
    assert run(["inspect", "--help"]) == 0
    out = capsys.readouterr().out
    assert "An existing path on disk wins over a repo id" in " ".join(out.split())
    assert run(["--help"]) == 0
    assert "inspect" in capsys.readouterr().out


def test_default_command_takes_options_first(capsys) -> None:
    assert run(["--json", GPT2]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["total"] == 124_439_808


def test_save_snapshot_then_read_it_back(tmp_path, capsys) -> None:
    d = tmp_path / "m"
    d.mkdir()
    save_file({"w": np.zeros((4, 8), np.float16)}, str(d / "model.safetensors"))
    (d / "config.json").write_text('{"model_type": "llama"}')
    snap = tmp_path / "m.json"
    assert run([str(d), "--json", "--save-snapshot", str(snap)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert run([str(snap), "--json", "-q"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["parameters"] == first["parameters"] == {
        "total": 32, "by_dtype": {"F16": 32}, "stored_elements": 32, "stored_by_dtype": {"F16": 32},
        "buffers": 0, "quantization_elements": 0, "derived": False, "active": None,
    }


@pytest.mark.parametrize(
    "make,code,message",
    [
        (lambda d: (d / "model.safetensors").write_bytes(b"\x01\x02"), 6, "file too short"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 16), 6, "exceeds the spec's limit"),
        (lambda d: (d / "x.gguf").write_bytes(b"GGUF"), 6, "truncated GGUF header"),
        (lambda d: (d / "x.gguf").write_bytes(b"GGML" + bytes(60)), 6, "not a GGUF file"),
        (lambda d: (d / "README.md").write_text("x"), 4, "no weight files"),
    ],
)
def test_bad_local_models_exit_codes(tmp_path, capsys, make, code, message) -> None:
    make(tmp_path)
    assert run([str(tmp_path)]) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("hfmem: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "args,code",
    [
        (["--bogus", GPT2], 2),
        ([GPT2, "--format", "xml"], 2),
        (["inspect"], 2),
        (["not a repo!"], 2),
        (["./no/such/dir"], 4),
        ([GPT2, "--revision", "main"], 2),
    ],
)
def test_usage_and_not_found_exit_codes(args, code, capsys) -> None:
    assert run(args) == code
    assert capsys.readouterr().out == ""


def test_internal_errors_are_one_line_and_exit_1(monkeypatch, capsys) -> None:
    def boom(*a, **k):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr("inspector.api.count_parameters", boom)
    assert run([GPT2]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hfmem: error: internal error (ZeroDivisionError: bug)") and err.count("\n") == 1


def test_console_script_and_pipes() -> None:
    # The real entry point, in a subprocess: exit code and stdout as a shell sees them.
    proc = subprocess.run([sys.executable, "-c", "from inspector.console import main; main()", GPT2, "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout)["parameters"]["total"] == 124_439_808
    proc = subprocess.run([sys.executable, "-c", "from inspector.console import main; main()", "nope/../x"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 4 and proc.stdout == ""


def test_version_is_answered_before_typer_is_imported(capsys) -> None:
    """`hfmem --version` (the console command's fast path) prints what the CLI's option does."""
    code = "import sys; from inspector.console import main; main(); print('typer' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.splitlines()[1] == "False"
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == proc.stdout.splitlines()[0] == f"hfmem {__version__}"


def test_import_is_cheap() -> None:
    heavy = "('requests', 'requests_cache', 'typer', 'tabulate')"
    code = f"import sys, inspector; print(sorted(m for m in {heavy} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]"


def test_snapshot_files_are_found_relative_to_cwd(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert run([str(ROOT / GPT2), "-q"]) == 0
    assert "124,439,808" in capsys.readouterr().out
    assert run([GPT2]) == 4  # the relative path means nothing from another folder


def test_no_color_help_has_no_escape_codes(monkeypatch, capsys) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert run(["inspect", "--help"]) == 0
    assert "\x1b[" not in capsys.readouterr().out


def test_help_states_the_engine_defaults_the_estimate_uses(capsys) -> None:
    from inspector.vllm import NEWEST, batch_defaults, default_gpu_memory_utilization, supported_range

    assert run(["inspect", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    big = batch_defaults(NEWEST, "serve", device_total_bytes=None)
    small = batch_defaults(NEWEST, "serve", device_total_bytes=24 << 30)
    assert f"{big.max_num_batched_tokens} for `vllm serve` on a >= 70 GiB GPU other than an A100, else " \
           f"{small.max_num_batched_tokens}" in text
    assert f"{big.max_num_seqs} on a >= 70 GiB GPU other than an A100, else {small.max_num_seqs}" in text
    assert f"{default_gpu_memory_utilization(NEWEST)} from vLLM 0.20" in text
    assert f"hfmem knows {supported_range()}" in text
