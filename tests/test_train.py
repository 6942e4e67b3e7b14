"""hfmem train (issue 19): trainable parameters from the real shapes, the per-parameter terms, the
QLoRA base as bitsandbytes stores it, sharding, the fit, the CLI, `check --method` and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, SNAPSHOTS

from inspector.api import TrainSettings, train_model
from inspector.cli import run
from inspector.errors import ConfigError, UsageError
from inspector.train import NF4_MODULE_BYTES, modules_of, nf4_bytes

LLAMA2 = str((SNAPSHOTS / "meta-llama--Llama-2-7b-hf.json").relative_to(ROOT))
LLAMA3 = str((SNAPSHOTS / "meta-llama--Meta-Llama-3-8B.json").relative_to(ROOT))
LLAMA32 = str((SNAPSHOTS / "meta-llama--Llama-3.2-3B-Instruct.json").relative_to(ROOT))
PHI3 = str((SNAPSHOTS / "microsoft--Phi-3-mini-4k-instruct.json").relative_to(ROOT))
MIXTRAL = str((SNAPSHOTS / "mistralai--Mixtral-8x7B-v0.1.json").relative_to(ROOT))
QWEN1 = str((SNAPSHOTS / "Qwen--Qwen-7B-Chat.json").relative_to(ROOT))
GIB = 2**30


@pytest.fixture(autouse=True)
def in_root(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)


def train(model: str, **kw) -> object:
    return train_model(model, TrainSettings(**kw), gpus=())


def test_llama2_lora_r8_on_q_and_v_trains_exactly_4194304_parameters() -> None:
    # 32 layers x 2 modules x r (4096 + 4096), by hand: 32 * 2 * 8 * 8192 = 4,194,304
    r = train(LLAMA2, lora_r=8, lora_target=("q_proj", "v_proj"))
    assert r.training.trainable_params == 4_194_304 == 32 * 2 * 8 * 8192
    assert r.training.all_params == 6_738_415_616
    assert r.training.trainable_line == ("trainable params: 4,194,304 || all params: 6,738,415,616 || "
                                         "trainable%: 0.0622")


def test_peft_defaults_and_all_linear() -> None:
    assert train(LLAMA2).training.targets == ("q_proj", "v_proj")  # PEFT's mapping for llama
    # all-linear: the 7 projections of every layer, not lm_head; by hand per layer at r=16:
    # q, k, v, o: 4 x 16 x 8192; gate, up: 2 x 16 x (4096 + 11008); down: 16 x (11008 + 4096)
    per_layer = 4 * 16 * 8192 + 3 * 16 * (4096 + 11008)
    r = train(LLAMA2, lora_target=("all-linear",))
    assert r.training.trainable_params == 32 * per_layer
    assert "lm_head" not in r.training.targets
    # Phi-3 stores a fused qkv_proj [9216, 3072] and gate_up_proj [16384, 3072]: r x (in + out) each
    phi = train(PHI3, lora_r=8, lora_target=("qkv_proj", "gate_up_proj"))
    assert phi.training.trainable_params == 32 * 8 * ((3072 + 9216) + (3072 + 16384))
    # Mixtral's experts are Linear modules: all-linear adapts w1/w2/w3 of each of the 8 experts and the router
    mix = train(MIXTRAL, lora_r=1, lora_target=("w1",))
    assert mix.training.trainable_params == 32 * 8 * (4096 + 14336)


def test_tied_embeddings_count_once() -> None:
    r = train(LLAMA32, method="full")
    assert r.training.all_params == 3_212_749_824  # meta-llama/Llama-3.2-3B: num_trainable_params of PEFT's
    # full fine-tuning run (method_comparison/MetaMathQA results, peft@0a179c1e)


def test_32_true_full_fine_tuning_with_adamw_holds_16_bytes_per_parameter() -> None:
    r = train(LLAMA2, method="full", train_precision="32-true")
    t, n = r.training, r.training.all_params
    assert t.term("trainable_weights") + t.term("gradients") + t.term("optimizer_states") == 16 * n
    assert t.term("frozen_weights") == t.term("master_weights") == 0
    # bf16-true: 2 + 2 + 2 x 2 (torch keeps AdamW's states in the parameter's dtype)
    b = train(LLAMA2, method="full", train_precision="bf16-true").training
    assert b.term("trainable_weights") + b.term("gradients") + b.term("optimizer_states") == 8 * n
    # ZeRO over 8 GPUs with mixed precision: 2 + 2 + (4 + 8) / 8 per parameter (DeepSpeed's layout)
    z = train(LLAMA2, method="full", count=8, zero=2).training
    assert z.term("trainable_weights") == 2 * n and z.term("gradients") == -(-2 * n // 8)
    assert z.term("master_weights") + z.term("optimizer_states") == -(-4 * n // 8) + -(-8 * n // 8)
    z3 = train(LLAMA2, method="full", count=8, zero=3).training
    assert z3.term("trainable_weights") == -(-2 * n // 8) and z3.term("zero3_gathered") > 0


def test_8bit_adamw_keeps_small_tensors_in_32_bits() -> None:
    r = train(LLAMA2, method="freeze", optimizer="adamw-8bit").training
    matrices = 2 * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # the last 2 layers'
    norms = 2 * 2 * 4096  # 4096 elements each: not under bitsandbytes' min_8bit_size, so 8-bit too
    assert r.trainable_params == matrices + norms
    assert r.term("optimizer_states") == int(2 * (1 + 4 / 256) * (matrices + norms))
    sgd = train(LLAMA2, method="freeze", optimizer="sgd").training
    assert sgd.term("optimizer_states") == 0


def test_qlora_base_is_what_bitsandbytes_stores() -> None:
    """bitsandbytes 0.49.2's own NF4 + double-quant output for one Llama-3-8B layer
    (fixtures/bnb/bnb_layer_probe.py): its tensors but for the quant_state JSON blob, which is a
    file-only record."""
    probe = json.loads((ROOT / "fixtures" / "bnb" / "bnb_llama3_8b_layer0_tensors.json").read_text())
    stored = sum(b for name, (_, _, b) in probe["tensors"].items() if not name.endswith("bitsandbytes__nf4"))
    from inspector.api import read_checkpoint
    from inspector.source import parse_source

    cp = read_checkpoint(parse_source(LLAMA3, None, validate=False)).checkpoint
    layer0 = [m for m in modules_of(cp) if m.layer == 0 and m.linear]
    assert len(layer0) == 7 and nf4_bytes(layer0) == stored == 112_520_640
    assert NF4_MODULE_BYTES == 16 * 4 + 256 * 4
    q = train(LLAMA3, method="qlora").training
    blocks = 32 * stored
    others = q.all_params - 32 * sum(m.params for m in layer0)
    assert q.term("frozen_weights") == blocks + others * 2


def test_checkpointing_keeps_layer_inputs_and_cuts_activations() -> None:
    off = train(LLAMA2, seq_len=4096).training
    on = train(LLAMA2, seq_len=4096, gradient_checkpointing=True).training
    assert on.term("activations") == 32 * 2 * 4096 * 4096 + 4 * 4096 * 4096  # 32 layer inputs + the final norm
    assert on.total_bytes < off.total_bytes
    fused = train(LLAMA2, seq_len=4096, fused_cross_entropy=True).training
    assert fused.term("logits") < off.term("logits") == 12 * 4096 * 32000


def test_fit_names_the_longest_sequence_and_largest_batch() -> None:
    from inspector.gpus import builtin_gpus, find_gpu

    r = train_model(LLAMA2, TrainSettings(seq_len=4096), gpus=[find_gpu("rtx 4090", builtin_gpus())])
    f = r.fit[0]
    assert not f.fits and f.fits_with_checkpointing
    assert 0 < f.max_seq_len < 4096
    at = train(LLAMA2, seq_len=f.max_seq_len).training.total_bytes
    beyond = train(LLAMA2, seq_len=f.max_seq_len + 1).training.total_bytes
    assert at <= f.usable_bytes < beyond


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match=r"--lora-target qq_proj names no module.*down_proj, gate_proj, k_proj"):
        train(LLAMA2, lora_target=("qq_proj",))
    with pytest.raises(UsageError, match="--count 2 or more"):
        TrainSettings(zero=3)
    with pytest.raises(UsageError, match="PEFT has no default LoRA target for model type 'qwen'"):
        train(QWEN1)


def test_an_attention_free_model_with_q_proj(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    config = json.loads((ROOT / "fixtures" / "configs" / "AntonV--mamba2-130m-hf.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({"backbone.layers.0.mixer.in_proj.weight": np.zeros((8, 4), np.float16)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(UsageError, match="no attention layers"):
        train(str(tmp_path), lora_target=("q_proj",))
    with pytest.raises(ConfigError, match="does not model the activations of mamba"):
        train(str(tmp_path), lora_target=("in_proj",))


def test_cli_train(capsys) -> None:
    assert run(["train", LLAMA2, "--lora-r", "8", "--gpu", "a100", "-q"]) == 0
    out = capsys.readouterr().out
    assert "trainable params: 4,194,304 || all params: 6,738,415,616" in out and "A100 80GB" in out
    assert run(["train", LLAMA2, "--json", "--gpu", "h100", "--method", "qlora"]) == 0
    doc = json.loads(capsys.readouterr().out)
    t = doc["training"]
    assert doc["command"] == "train" and doc["assumptions"]["method"] == "qlora"
    assert t["total_bytes"] == sum(t["terms"].values()) and doc["fit"][0]["gpu"] == "H100 80GB"
    assert run(["train", LLAMA2, "--format", "markdown", "--gpu", "h100"]) == 0
    assert capsys.readouterr().out.startswith("### ")
    assert run(["train", LLAMA2, "--max-model-len", "4096"]) == 2
    assert run(["train", LLAMA2, "--zero", "3"]) == 2
    assert run(["train", LLAMA2, "--fsdp", "--zero", "2", "--count", "2"]) == 2
    assert run(["train", LLAMA2, "--lora-target", "nope"]) == 2
    assert "names no module of this model" in capsys.readouterr().err


def test_check_method_is_a_ci_gate(tmp_path: Path, capsys) -> None:
    assert run(["check", LLAMA2, "--gpu", "rtx4090", "--method", "lora", "--seq-len", "4096"]) == 3
    assert "it fits with --gradient-checkpointing" in capsys.readouterr().out
    assert run(["check", LLAMA2, "--gpu", "rtx4090", "--method", "lora", "--seq-len", "4096",
                "--gradient-checkpointing"]) == 0
    assert run(["check", LLAMA2, "--gpu", "rtx4090", "--method", "lora", "--max-model-len", "4096"]) == 2
    assert run(["check", LLAMA2, "--gpu", "rtx4090", "--seq-len", "4096"]) == 2
    capsys.readouterr()
    models = tmp_path / "models.toml"
    models.write_text(f'[defaults]\ngpu = "rtx 4090"\nmethod = "lora"\nseq_len = 4096\n'
                      f'gradient_checkpointing = true\n[[model]]\nid = "{LLAMA2}"\n'
                      f'[[model]]\nid = "{LLAMA2}"\nmethod = "full"\n[[model]]\nid = "{LLAMA2}"\nbatch_size = 2\n')
    code = run(["check", "--models", str(models), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in doc["results"]] == ["fits", "does not fit", "error"]
    assert "serving (vLLM) setting" in doc["results"][2]["error"] and code == 2


def test_mxfp4_is_trained_dequantized_and_experts_see_top_k_tokens() -> None:
    oss = train(str((SNAPSHOTS / "openai--gpt-oss-20b.json").relative_to(ROOT)), lora_target=("all-linear",))
    assert oss.training.term("frozen_weights") == 2 * oss.training.all_params
    qwen_moe = str((SNAPSHOTS / "Qwen--Qwen3-30B-A3B.json").relative_to(ROOT))
    attention_only = train(qwen_moe, lora_target=("q_proj", "v_proj")).training.term("activations")
    every_expert = train(qwen_moe, lora_target=("all-linear",)).training.term("activations")
    # all-linear adds each adapted module's 16-bit input copy; an expert's copy holds only the
    # tokens routed to it (8 of 128 experts per token), not every token: by hand, per token and layer,
    # the 128 experts' gate/up/down copies are 128 x (2048 + 2048 + 768) x 2 B x 8 / 128
    tokens_layers = 2048 * 48
    experts = 128 * (2048 + 2048 + 768) * 2 * 8 // 128
    # k_proj's and o_proj's copies (q and v are adapted in both), and o_proj's input itself, which
    # SDPA's path copies (transpose + reshape) and a trained o_proj keeps: 32 heads x 128
    attention = (2048 + 4096) * 2 + 32 * 128 * 2
    router = 2048 * 2
    assert every_expert - attention_only == tokens_layers * (experts + attention + router)
