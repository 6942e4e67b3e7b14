"""Architecture and KV cache for every real config: fields read by hand from each config.json,
KV bytes per token computed here from those fields, never by calling the code under test."""

from __future__ import annotations

import gzip
import json

import pytest
from conftest import ROOT

from inspector.arch import LayerKind, parse_architecture
from inspector.errors import ConfigError
from inspector.kvcache import kv_cache

CONFIGS = ROOT / "fixtures" / "configs"
SNAPSHOTS = ROOT / "fixtures" / "snapshots"


def load(name: str) -> dict:
    path = CONFIGS / name if (CONFIGS / name).exists() else SNAPSHOTS / name
    if path.suffix == ".gz":
        return json.loads(gzip.decompress(path.read_bytes()))["json"]["config.json"]
    doc = json.loads(path.read_text())
    return doc["json"]["config.json"] if "json" in doc else doc


def attn(layers: int, kv_heads: int, head_dim: int, nbytes: int = 2) -> int:
    """K and V per token: 2 x kv_heads x head_dim elements per attention layer."""
    return layers * 2 * kv_heads * head_dim * nbytes


# file -> (model_type, layers, hidden, heads, kv_heads, head_dim, vocab, context, {kind: layers},
#          sliding_window, bf16 KV bytes per token). Every value is read from the config by hand;
# where a config leaves a key out, the transformers class default is written with its class.
EXPECTED = {
    "meta-llama--Llama-2-7b-hf.json": ("llama", 32, 4096, 32, 32, 128, 32000, 4096, {"full_attention": 32}, None,
                                       attn(32, 32, 128)),
    "TheBloke--Llama-2-7B-GPTQ.json": ("llama", 32, 4096, 32, 32, 128, 32000, 4096, {"full_attention": 32}, None,
                                       attn(32, 32, 128)),
    "meta-llama--Meta-Llama-3-8B.json": ("llama", 32, 4096, 32, 8, 128, 128256, 8192, {"full_attention": 32}, None,
                                         attn(32, 8, 128)),
    "meta-llama--Llama-3.1-70B-Instruct.json": ("llama", 80, 8192, 64, 8, 128, 128256, 131072,
                                                {"full_attention": 80}, None, attn(80, 8, 128)),
    "mistralai--Mistral-7B-v0.1.json": ("mistral", 32, 4096, 32, 8, 128, 32000, 32768,
                                        {"sliding_attention": 32}, 4096, attn(32, 8, 128)),
    "dmayboroda--42_mistral_0.1.json": ("mistral", 32, 4096, 32, 8, 128, 32000, 32768,
                                        {"sliding_attention": 32}, 4096, attn(32, 8, 128)),
    "mistralai--Mixtral-8x7B-v0.1.json": ("mixtral", 32, 4096, 32, 8, 128, 32000, 32768, {"full_attention": 32},
                                          None, attn(32, 8, 128)),
    # use_sliding_window false: Qwen2's sliding_window 131072 is ignored.
    "Qwen--Qwen2-7B-Instruct.json": ("qwen2", 28, 3584, 28, 4, 128, 152064, 32768, {"full_attention": 28}, None,
                                     attn(28, 4, 128)),
    "Qwen--Qwen1.5-110B.json": ("qwen2", 80, 8192, 64, 8, 128, 152064, 32768, {"full_attention": 80}, None,
                                attn(80, 8, 128)),
    "Qwen--Qwen3-8B.json": ("qwen3", 36, 4096, 32, 8, 128, 151936, 40960, {"full_attention": 36}, None,
                            attn(36, 8, 128)),
    "Qwen--Qwen3-0.6B.json": ("qwen3", 28, 1024, 16, 8, 128, 151936, 40960, {"full_attention": 28}, None,
                              attn(28, 8, 128)),
    "Qwen--Qwen3-32B.json": ("qwen3", 64, 5120, 64, 8, 128, 151936, 40960, {"full_attention": 64}, None,
                             attn(64, 8, 128)),
    "meta-llama--Llama-3.1-8B-Instruct.json": ("llama", 32, 4096, 32, 8, 128, 128256, 131072,
                                               {"full_attention": 32}, None, attn(32, 8, 128)),
    "Qwen--Qwen3-30B-A3B.json": ("qwen3_moe", 48, 2048, 32, 4, 128, 151936, 40960, {"full_attention": 48}, None,
                                 attn(48, 4, 128)),
    # head_dim 256 while hidden / heads is 224; Gemma2Config: sliding on even layers.
    "google--gemma-2-9b-it.json": ("gemma2", 42, 3584, 16, 8, 256, 256000, 8192,
                                   {"sliding_attention": 21, "full_attention": 21}, 4096, attn(42, 8, 256)),
    # Gemma 3 4B's text_config leaves heads, KV heads, head_dim, vocab and context to Gemma3TextConfig
    # (8, 4, 256, 262208, 131072); sliding_window_pattern 6: 34 layers -> layers 6, 12, ..., 30 are full.
    "mlx-community--gemma-3-4b-it-bf16.json": ("gemma3_text", 34, 2560, 8, 4, 256, 262208, 131072,
                                               {"sliding_attention": 29, "full_attention": 5}, 1024,
                                               attn(34, 4, 256)),
    "google--gemma-3-4b-it.json": ("gemma3_text", 34, 2560, 8, 4, 256, 262208, 131072,
                                   {"sliding_attention": 29, "full_attention": 5}, 1024, attn(34, 4, 256)),
    "Codingstark--gemma3-270m-leetcode.json": ("gemma3_text", 18, 640, 4, 1, 256, 262144, 32768,
                                               {"sliding_attention": 15, "full_attention": 3}, 512, attn(18, 1, 256)),
    "openai--gpt-oss-20b.json": ("gpt_oss", 24, 2880, 64, 8, 64, 201088, 131072,
                                 {"sliding_attention": 12, "full_attention": 12}, 128, attn(24, 8, 64)),
    "openai--gpt-oss-120b.json": ("gpt_oss", 36, 2880, 64, 8, 64, 201088, 131072,
                                  {"sliding_attention": 18, "full_attention": 18}, 128, attn(36, 8, 64)),
    # Phi-3-mini-4k: sliding_window 2047 on every layer.
    "microsoft--Phi-3-mini-4k-instruct.json": ("phi3", 32, 3072, 32, 32, 96, 32064, 4096,
                                               {"sliding_attention": 32}, 2047, attn(32, 32, 96)),
    "openai-community--gpt2.json": ("gpt2", 12, 768, 12, 12, 64, 50257, 1024, {"full_attention": 12}, None,
                                    attn(12, 12, 64)),
    "EleutherAI--pythia-6.9b.json": ("gpt_neox", 32, 4096, 32, 32, 128, 50432, 2048, {"full_attention": 32}, None,
                                     attn(32, 32, 128)),
    # Falcon-7B: multi_query and not new_decoder_architecture -> one KV head; no context key:
    # FalconConfig's max_position_embeddings 2048.
    "tiiuae--falcon-7b-instruct.json": ("falcon", 32, 4544, 71, 1, 64, 65024, 2048, {"full_attention": 32}, None,
                                        attn(32, 1, 64)),
    "tiiuae--falcon-40b.json": ("falcon", 60, 8192, 128, 8, 64, 65024, 2048, {"full_attention": 60}, None,
                                attn(60, 8, 64)),
    # BLOOM: n_layer, n_embed; ALiBi, no context key in the config.
    "bigscience--bloom.json": ("bloom", 70, 14336, 112, 112, 128, 250880, None, {"full_attention": 70}, None,
                               attn(70, 112, 128)),
    # ChatGLM2: num_layers, kv_channels 128, multi_query_group_num 2, padded_vocab_size, seq_length.
    "THUDM--chatglm2-6b.json": ("chatglm", 28, 4096, 32, 2, 128, 65024, 32768, {"full_attention": 28}, None,
                                attn(28, 2, 128)),
    # MLA: kv_lora_rank 512 + qk_rope_head_dim 64 per token per layer, no factor 2 (one latent).
    "deepseek-ai--DeepSeek-V3.json": ("deepseek_v3", 61, 7168, 128, 128, 128 + 64, 129280, 163840, {"mla": 61},
                                      None, 61 * (512 + 64) * 2),
    "deepseek-ai--DeepSeek-V3.json.gz": ("deepseek_v3", 61, 7168, 128, 128, 128 + 64, 129280, 163840,
                                         {"mla": 61}, None, 61 * (512 + 64) * 2),
    # DeepSeek-V2-Lite: MLA without q_lora; 16 heads of 128 + 64 (qk_nope + qk_rope), 27 layers.
    "deepseek-ai--DeepSeek-V2-Lite-Chat.json": ("deepseek_v2", 27, 2048, 16, 16, 128 + 64, 102400, 163840,
                                                {"mla": 27}, None, 27 * (512 + 64) * 2),
    # Nemotron-NAS (DeciLM): 31 of 80 blocks have no attention (no_op); the other 49 have 64 / 8 KV heads.
    "nvidia--Llama-3_3-Nemotron-Super-49B-v1.json": ("nemotron-nas", 80, 8192, 64, 8, 128, 128256, 131072,
                                                     {"full_attention": 49, "none": 31}, None, attn(49, 8, 128)),
    # Jamba: attention where i % 8 == 4 (4 layers of 32), Mamba elsewhere; only attention is per token.
    "jondurbin--airoboros-jamba-3-3.json": ("jamba", 32, 4096, 32, 8, 128, 65536, 262144,
                                            {"mamba": 28, "full_attention": 4}, None, attn(4, 8, 128)),
    # Qwen3-Next: full attention every 4th layer (full_attention_interval 4), gated DeltaNet elsewhere.
    "Qwen--Qwen3-Next-80B-A3B-Thinking.json": ("qwen3_next", 48, 2048, 16, 2, 256, 151936, 262144,
                                               {"linear_attention": 36, "full_attention": 12}, None,
                                               attn(12, 2, 256)),
    "RandomNameAnd6--DharMamba.json": ("mamba", 24, 768, 0, 0, 0, 50280, None, {"mamba": 24}, None, 0),
    "AntonV--mamba2-130m-hf.json": ("mamba2", 24, 768, 0, 0, 0, 50288, None, {"mamba": 24}, None, 0),
    "llava-hf--llava-1.5-7b-hf.json": ("llama", 32, 4096, 32, 32, 128, 32064, 4096, {"full_attention": 32}, None,
                                       attn(32, 32, 128)),
    # Mistral3: text_config is a Mistral decoder with head_dim 128 (not 5120 / 32 = 160) and
    # sliding_window null -> full attention on all 40 layers.
    "mistralai--Mistral-Small-3.1-24B-Instruct-2503.json": ("mistral", 40, 5120, 32, 8, 128, 131072, 131072,
                                                            {"full_attention": 40}, None, attn(40, 8, 128)),
    "huihui-ai--Qwen2.5-VL-3B-Instruct-abliterated.json": ("qwen2_5_vl", 36, 2048, 16, 2, 128, 151936, 128000,
                                                            {"full_attention": 36}, None, attn(36, 2, 128)),
    # T5-base (original config): 12 decoder layers as the encoder, d_kv 64, n_positions 512.
    "Sachinkelenjaguri--sa_T5_Table_to_text.json": ("t5", 12, 768, 12, 12, 64, 32128, 512, {"full_attention": 12},
                                                    None, attn(12, 12, 64)),
    # T5-11B: d_kv 128 although d_model / num_heads is 8.
    # Qwen (v1), remote code: n_embd / n_layer / n_head / kv_channels read by their aliases; context
    # n_positions 6144.
    "Qwen--Qwen-7B-Chat.json": ("qwen", 32, 4096, 32, 32, 128, 151936, 6144, {"full_attention": 32}, None,
                                attn(32, 32, 128)),
    "meta-llama--Llama-3.2-3B-Instruct.json": ("llama", 28, 3072, 24, 8, 128, 128256, 131072,
                                               {"full_attention": 28}, None, attn(28, 8, 128)),
    "philschmid--t5-11b-sharded.json": ("t5", 24, 1024, 128, 128, 128, 32128, 512, {"full_attention": 24}, None,
                                        attn(24, 128, 128)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_architecture_and_kv_bytes_per_token(name: str) -> None:
    mtype, layers, hidden, heads, kv_heads, head_dim, vocab, context, kinds, window, per_token = EXPECTED[name]
    a = parse_architecture(load(name))
    assert (a.model_type, a.num_hidden_layers, a.hidden_size) == (mtype, layers, hidden)
    assert (a.num_attention_heads, a.num_key_value_heads, a.head_dim) == (heads, kv_heads, head_dim)
    assert (a.vocab_size, a.max_position_embeddings) == (vocab, context)
    assert a.kind_counts == kinds
    assert a.sliding_window == window
    assert kv_cache(a, 1024, 1, ("bf16", 16)).bytes_per_token == per_token


def test_every_config_fixture_is_covered() -> None:
    names = {p.name for p in CONFIGS.glob("*.json")} | {p.name for p in SNAPSHOTS.glob("*.json*")}
    missing = names - set(EXPECTED) - {"EleutherAI--pythia-160m.json", "lintang--t5-v1_1-base-flan.json",
                                       "Molbap--code2.json"}
    assert not missing


def test_moe_fields() -> None:
    mixtral = parse_architecture(load("mistralai--Mixtral-8x7B-v0.1.json"))
    assert (mixtral.num_experts, mixtral.num_experts_per_tok, mixtral.num_shared_experts) == (8, 2, None)
    ds = parse_architecture(load("deepseek-ai--DeepSeek-V3.json"))
    assert (ds.num_experts, ds.num_experts_per_tok, ds.num_shared_experts, ds.moe_intermediate_size) == (
        256, 8, 1, 2048)
    nxt = parse_architecture(load("Qwen--Qwen3-Next-80B-A3B-Thinking.json"))
    assert (nxt.num_experts, nxt.num_experts_per_tok, nxt.num_shared_experts) == (512, 10, 1)
    oss = parse_architecture(load("openai--gpt-oss-120b.json"))
    assert (oss.num_experts, oss.num_experts_per_tok) == (128, 4)  # num_local_experts, experts_per_token


def test_gemma2_alternates_starting_with_sliding() -> None:
    a = parse_architecture(load("google--gemma-2-9b-it.json"))
    assert a.layer_kinds[:3] == (LayerKind.SLIDING, LayerKind.FULL, LayerKind.SLIDING)


def test_state_dims_follow_vllm_shapes() -> None:
    # Mamba-130m: intermediate 1536, state 16, conv 4: conv (4-1) x 1536 + ssm 1536 x 16 elements.
    m = parse_architecture(load("RandomNameAnd6--DharMamba.json")).state
    assert m is not None and (m.kind, m.elements) == ("mamba1", 3 * 1536 + 1536 * 16)
    # Mamba2-130m: 24 heads x 64, 1 group, state 128: conv 3 x (1536 + 2 x 128) + ssm 24 x 64 x 128.
    m2 = parse_architecture(load("AntonV--mamba2-130m-hf.json")).state
    assert m2 is not None and (m2.kind, m2.elements) == ("mamba2", 3 * (1536 + 2 * 128) + 24 * 64 * 128)
    # Qwen3-Next DeltaNet: 16 key heads x 128, 32 value heads x 128, kernel 4.
    g = parse_architecture(load("Qwen--Qwen3-Next-80B-A3B-Thinking.json")).state
    assert g is not None and g.elements == 3 * (2 * 16 * 128 + 32 * 128) + 32 * 128 * 128
    # Jamba: mamba_expand 2 x hidden 4096, d_state 16, d_conv 4.
    j = parse_architecture(load("jondurbin--airoboros-jamba-3-3.json")).state
    assert j is not None and j.elements == 3 * 8192 + 8192 * 16


def test_nested_text_config_and_vision() -> None:
    a = parse_architecture(load("llava-hf--llava-1.5-7b-hf.json"))
    assert a.text_config_key == "text_config" and a.has_vision
    # Llava-1.5's text_config leaves the layer shape to LlamaConfig; each default is named.
    assert any(g.startswith("hidden_size: 4096") for g in a.guessed)


def test_unknown_architecture_falls_back_and_says_so() -> None:
    a = parse_architecture({"model_type": "brand_new", "n_layer": 4, "d_model": 256, "n_heads": 8})
    assert (a.num_hidden_layers, a.hidden_size, a.num_attention_heads, a.num_key_value_heads, a.head_dim) == (
        4, 256, 8, 8, 32)
    assert a.guessed and "brand_new" in a.guessed[0]


@pytest.mark.parametrize("config,message", [
    ({"model_type": "brand_new", "hidden_size": 64}, "no num_hidden_layers"),
    ({"num_hidden_layers": 2, "hidden_size": "4096", "num_attention_heads": 2}, "hidden_size must be"),
    ({"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "layer_types": ["full_attention"]},
     "layer_types has 1 entries for 2 layers"),
    ({"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 2, "layer_types": ["warp"]},
     "unknown layer type"),
    ({"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 2, "sliding_window": -5}, "sliding_window"),
    ([1, 2], "not a JSON object"),
])
def test_bad_configs_are_config_errors(config, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_architecture(config)


def test_config_is_data_not_code(tmp_path, monkeypatch) -> None:
    # auto_map names a module to import; a module that leaves a mark when imported sits right
    # where Python would find it. Reading the model must not import it.
    import numpy as np
    from safetensors.numpy import save_file

    from inspector import inspect_model

    mark = tmp_path / "imported"
    (tmp_path / "evil_config.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = load("jondurbin--airoboros-jamba-3-3.json")
    cfg["auto_map"] = {"AutoConfig": "evil_config.JambaConfig", "AutoModelForCausalLM": "evil_config.Model"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file({"w": np.zeros((2, 2), np.float16)}, str(tmp_path / "model.safetensors"))
    report = inspect_model(str(tmp_path))
    assert report.architecture is not None and report.architecture.model_type == "jamba"
    assert not mark.exists()


def test_nemotron_nas_kv_heads_by_block() -> None:
    """vLLM's DeciLMDecoderLayer: num_attention_heads // n_heads_in_group KV heads per attention block,
    none for a no-op block; the total it reports is the first attention block's."""
    block = {"ffn": {"ffn_mult": 2.0, "no_op": False}}
    cfg = {"model_type": "nemotron-nas", "num_hidden_layers": 3, "hidden_size": 1024, "num_attention_heads": 16,
           "block_configs": [{**block, "attention": {"n_heads_in_group": 8, "no_op": False}},
                             {**block, "attention": {"n_heads_in_group": None, "no_op": True}},
                             {**block, "attention": {"n_heads_in_group": 4, "no_op": False}}]}
    a = parse_architecture(cfg)
    assert (a.num_key_value_heads, a.kv_heads_per_layer) == (2, (2, 0, 4))
    assert kv_cache(a, 1024, 1, ("bf16", 16)).bytes_per_token == 2 * (2 + 4) * 64 * 2
    assert kv_cache(a, 1024, 1, ("bf16", 16), tensor_parallel_size=4).bytes_per_token == 2 * (1 + 1) * 64 * 2
    for bad in ({"n_heads_in_group": 8, "replace_with_linear": True}, {"n_heads_in_group": 3},
                {"n_heads_in_group": 8, "window_length": 4096}):
        with pytest.raises(ConfigError):
            parse_architecture({**cfg, "block_configs": [{**block, "attention": bad}] * 3})
