"""GPU fit: the tensor-parallel rule, the Qwen1.5-110B claims against the fake Hub, `check`'s exit codes."""

from __future__ import annotations

import pytest

from inspector.cli import run
from inspector.errors import UsageError
from inspector.fit import tp_allowed
from inspector.gpus import find_gpu, load_gpus


@pytest.mark.parametrize("heads,kv,tp,ok", [
    (40, 8, 2, True), (40, 8, 4, True), (40, 8, 8, True), (40, 8, 3, False), (40, 8, 16, False),
    (64, 8, 16, True),  # KV heads replicated: each GPU holds max(1, 8 // 16) = 1
    (64, 8, 3, False), (71, 1, 2, False), (32, 2, 4, True),
])
def test_tensor_parallel_rule(heads, kv, tp, ok) -> None:
    assert tp_allowed(tp, heads, kv) is ok


@pytest.mark.parametrize("typed,row", [
    ("h100", "H100 80GB"), ("H100 80GB", "H100 80GB"), ("a100-80g", "A100 80GB"), ("RTX 4090", "RTX 4090 24GB"),
    ("mi300x", "MI300X 192GB"),
])
def test_forgiving_gpu_names(typed, row) -> None:
    assert find_gpu(typed).name == row


def test_unknown_gpu_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown GPU"):
        find_gpu("h1000")


def test_user_gpus_file(tmp_path, monkeypatch) -> None:
    f = tmp_path / "gpus.toml"
    f.write_text('[[gpu]]\nname = "Lab Card 40GB"\nmemory_bytes = 42_949_672_960\nbandwidth_bytes_per_s = 1e12\n')
    monkeypatch.setenv("HFMEM_GPUS_FILE", str(f))
    assert find_gpu("lab card 40gb", load_gpus()).memory_bytes == 42_949_672_960


def test_qwen_110b_through_the_fake_hub(fake_hub, capsys) -> None:
    # bf16 needs 4 x A100 80GB at its default context (32,768); int4 fits on one at 8k.
    assert run(["check", "Qwen/Qwen1.5-110B", "--gpu", "A100 80GB", "--precision", "bf16"]) == 0
    assert "on 4 x A100 80GB (tensor parallel 4)" in capsys.readouterr().out
    assert run(["check", "Qwen/Qwen1.5-110B", "--gpu", "a100-80g", "--precision", "int4",
                "--max-model-len", "8192", "--count", "1"]) == 0
    assert "on 1 x A100 80GB" in capsys.readouterr().out


@pytest.mark.parametrize("args,code,text", [
    (["--precision", "bf16", "--count", "2"], 3, "needs 112.9 GiB per GPU on 2 x A100 80GB, 72.9 GiB usable"),
    # --count is the GPUs available: 3 is searched as 1 and 2 (3 cannot split 64 heads), and the
    # answer says how many would fit (it was "3 GPUs cannot split", though 4 fit).
    (["--count", "3"], 3, "on 2 x A100 80GB, 72.9 GiB usable; 4 GPUs would fit it"),
    (["--gpu", "h1000"], 2, "unknown GPU"),
])
def test_check_exit_codes(fake_hub, capsys, args, code, text) -> None:
    base = ["check", "Qwen/Qwen1.5-110B", "--gpu", "a100"]
    assert run(base + args) == code
    out, err = capsys.readouterr()
    assert text in out + err


def test_check_errors_keep_their_codes(fake_hub, capsys) -> None:
    assert run(["check", "nobody/nothing", "--gpu", "a100"]) == 4
    assert run(["check", "meta-llama/Llama-2-7b-hf", "--gpu", "a100"]) == 5  # gated, no token


def test_a_precision_not_native_on_the_gpu_is_noted(capsys) -> None:
    from conftest import snapshot_path

    qwen = str(snapshot_path("Qwen/Qwen1.5-110B"))  # stored in bf16, which a T4 (sm75) lacks
    # vLLM runs a bf16 model in fp16 on a GPU without bf16 (--dtype auto), and says so.
    assert run(["check", qwen, "--gpu", "t4"]) == 3
    assert "vLLM's --dtype auto runs this bf16 model in fp16 on T4 16GB" in capsys.readouterr().err
    # Forced to bf16, it is not native there.
    assert run(["check", qwen, "--gpu", "t4", "--dtype", "bfloat16"]) == 3
    assert "bf16 is not native on T4 16GB" in capsys.readouterr().err
    llama2 = str(snapshot_path("meta-llama/Llama-2-7b-hf"))  # float16 runs natively on a V100
    assert run(["check", llama2, "--gpu", "v100"]) == 0
    assert "not native" not in capsys.readouterr().err


def test_every_catalog_row_names_its_sources() -> None:
    from inspector.gpus import CATALOG, DEFAULT_GPUS, read_toml

    rows = read_toml(CATALOG, "the catalog")["gpu"]
    for row in rows:
        assert row.get("memory_source") and row.get("source"), row["name"]
        assert row["memory_bytes"] > 0 and row["bandwidth_bytes_per_s"] > 0, row["name"]
    names = {r["name"] for r in rows}
    assert set(DEFAULT_GPUS) <= names
    for wanted in ("V100 16GB", "V100 32GB", "T4 16GB", "A10 24GB", "A10G 24GB", "L4 24GB", "A100 40GB",
                   "H100 PCIe 80GB", "B200", "RTX 3060 12GB", "RTX 3070 8GB", "RTX 3080 10GB", "RTX 3090 24GB",
                   "RTX 4060 Ti 16GB", "RTX 4070 Ti 12GB", "RTX 4080 16GB", "RTX 5090 32GB", "MI300X 192GB",
                   "MI325X 256GB"):
        assert wanted in names


def test_longest_context_and_largest_batch_by_hand() -> None:
    """Llama-2-7B in fp16: 32 layers x 32 KV heads x 128 x 2 (K and V) x 2 bytes = 512 KiB per token,
    allocated in vLLM blocks of 16 tokens; everything else does not grow with the context."""
    from conftest import snapshot_path

    from inspector.api import inspect_model
    from inspector.estimate import Precision, Settings, estimate_memory
    from inspector.fit import fit, usable_bytes
    from inspector.gpus import GPU

    report = inspect_model(str(snapshot_path("meta-llama/Llama-2-7b-hf")))
    arch, params = report.architecture, report.parameters
    small = GPU("Lab", memory_bytes=18 << 30, bandwidth_bytes_per_s=10**12)  # vLLM's small tier
    m = estimate_memory(arch, params, Settings(precisions=(Precision.STORED,)), small)
    e = m.estimates[0]  # as stored, at its own 4,096 tokens
    assert m.kv_cache.bytes_per_token == 32 * 32 * 128 * 2 * 2 == 524_288
    fixed = e.weights_bytes + e.activation_bytes + e.overhead_bytes
    block = 16 * 524_288
    # A card with room for the fixed part and 100.5 blocks: the longest context is 100 blocks.
    usable = fixed + 100 * block + block // 2
    total = int(usable / 0.92)
    while usable_bytes(GPU("x", total, 1, cuda_total_bytes=total), m.engine) < usable:
        total += 1
    gpu = GPU("Lab 17GB", memory_bytes=total, bandwidth_bytes_per_s=10**12, cuda_total_bytes=total)
    assert usable_bytes(gpu, m.engine) == usable
    f = fit(arch, params, Precision.STORED, gpu, Settings(max_model_len=1024), count=1)
    assert f.fits and f.max_context_tokens == 1600
    # At 1,024 tokens (64 blocks) per sequence: 100.5 // 64 = 1 sequence.
    assert f.max_batch_size == 1
    # At 96 tokens (6 blocks): 100 // 6 = 16 sequences.
    f = fit(arch, params, Precision.STORED, gpu, Settings(max_model_len=96), count=1)
    assert f.max_batch_size == 16
    # Decode reads every weight and one sequence's cache per token: a bound, bandwidth / bytes.
    assert f.decode_tokens_per_s_bound == 10**12 / (e.weights_bytes + 6 * block)
    # At the model's own 4,096 tokens (256 blocks) it does not fit; it says by how much, how many
    # GPUs would, and what does fit on this one: 1,600 tokens, one sequence, a 1,600-token KV pool.
    f = fit(arch, params, Precision.STORED, gpu, Settings(), count=1)
    assert not f.fits and f.reason.startswith("needs ")
    assert (f.max_context_tokens, f.max_batch_size, f.kv_cache_capacity_tokens, f.gpus_needed) == (1600, 1, 1600, 2)
    assert f.reason.endswith("; 2 GPUs would fit it; the longest context that fits there is 1,600 tokens")
    # --max-model-len auto: the longest context is the request, and it fits.
    f = fit(arch, params, Precision.STORED, gpu, Settings(max_model_len=-1), count=1)
    assert f.fits and f.context_tokens == f.max_context_tokens == 1600


def test_the_catalog_read_without_its_sources_is_the_whole_catalog() -> None:
    """builtin_gpus skips comments and *_source lines before parsing (speed): nothing it reads is lost."""
    from inspector.gpus import CATALOG, _rows, builtin_gpus, read_toml

    assert builtin_gpus() == tuple(_rows(read_toml(CATALOG, "the GPU catalog"), CATALOG))
