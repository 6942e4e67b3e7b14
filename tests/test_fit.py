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
    (["--precision", "bf16", "--count", "2"], 3, "needs more than 2 x A100 80GB"),
    (["--count", "3"], 3, "3 GPUs cannot split 64 attention heads / 8 KV heads"),
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
