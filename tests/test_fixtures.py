"""Every real fixture counted exactly, from its snapshot file and through the fake Hub.

Expected numbers are computed here by hand from each model's published architecture (formulas
below, literal config values), or are public counts; never by calling the code under test.
`weights_bytes` are the real repos' `model.safetensors.index.json` `metadata.total_size`
(see fixtures/README.md), or for GPT-2 the real model.safetensors data size.
"""

from __future__ import annotations

import pytest
from conftest import snapshot_path
from fakehub import VALID_TOKEN

from inspector import inspect_model


def decoder(*, vocab: int, hidden: int, layers: int, inter: int, heads: int, kv_heads: int, head_dim: int,
            tied: bool = False, qkv_bias: bool = False, experts: int = 0, norms_per_layer: int = 2) -> int:
    """A Llama-style decoder: q/k/v/o, gated MLP (3 matrices, per expert for MoE, plus a router),
    RMSNorms per layer (2; Gemma 2 has 4), a final norm, embeddings and (untied) lm_head."""
    q, kv = heads * head_dim, kv_heads * head_dim
    attn = hidden * q + 2 * hidden * kv + q * hidden + ((q + 2 * kv) if qkv_bias else 0)
    mlp = 3 * hidden * inter
    if experts:
        mlp = experts * mlp + hidden * experts
    per_layer = attn + mlp + norms_per_layer * hidden
    return layers * per_layer + vocab * hidden * (1 if tied else 2) + hidden


LLAMA2_7B = decoder(vocab=32000, hidden=4096, layers=32, inter=11008, heads=32, kv_heads=32, head_dim=128)
CLIP_L14_336 = (  # CLIP ViT-L/14 at 336 px: patch conv, class + 577 position embeddings, 24 layers
    1024 * 3 * 14 * 14 + 1024 + 577 * 1024 + 2 * 1024
    + 24 * (4 * (1024 * 1024 + 1024) + (1024 * 4096 + 4096) + (4096 * 1024 + 1024) + 2 * 2 * 1024)
    + 2 * 1024
)
LLAVA_PROJECTOR = (1024 * 4096 + 4096) + (4096 * 4096 + 4096)
GPT_OSS_20B_LAYER = (
    (2880 * 4096 + 4096) + 2 * (2880 * 512 + 512) + (4096 * 2880 + 2880) + 64  # attention + sinks
    + (2880 * 32 + 32)  # router
    + 32 * (2880 * 5760 + 5760) + 32 * (2880 * 2880 + 2880)  # experts, with biases
    + 2 * 2880
)
GPT_OSS_EXPERT_WEIGHTS = 24 * 32 * (2880 * 5760 + 2880 * 2880)
# gpt-oss-120b: the same layer with 128 experts, 36 layers.
GPT_OSS_120B_LAYER = (
    (2880 * 4096 + 4096) + 2 * (2880 * 512 + 512) + (4096 * 2880 + 2880) + 64
    + (2880 * 128 + 128)
    + 128 * (2880 * 5760 + 5760) + 128 * (2880 * 2880 + 2880)
    + 2 * 2880
)
GPT_OSS_120B_EXPERT_WEIGHTS = 36 * 128 * (2880 * 5760 + 2880 * 2880)
# Pixtral vision tower of Mistral Small 3.1 (1540 px, patch 14, 24 layers of 1024, gated MLP of 4096,
# no biases): patch conv, ln_pre, per layer q/k/v/o + gate/up/down + 2 RMSNorms.
PIXTRAL_24 = 1024 * 3 * 14 * 14 + 1024 + 24 * (4 * 1024 * 1024 + 3 * 1024 * 4096 + 2 * 1024)
# Mistral3 projector: RMSNorm(1024), patch merger (2x2 -> 4096 -> 1024), linear_1 1024 -> 5120,
# linear_2 5120 -> 5120; multimodal_projector_bias false.
MISTRAL3_PROJECTOR = 1024 + 4096 * 1024 + 1024 * 5120 + 5120 * 5120

# repo id -> (parameters, stored elements, weights bytes)
EXPECTED = {
    # Public count 6,738,415,616; stored adds 32 layers x 64 rotary inv_freq (head_dim/2) in F32.
    "meta-llama/Llama-2-7b-hf": (6_738_415_616, 6_738_415_616 + 32 * 64, 13_476_839_424),
    "meta-llama/Meta-Llama-3-8B": (
        decoder(vocab=128256, hidden=4096, layers=32, inter=14336, heads=32, kv_heads=8, head_dim=128),
        None, 16_060_522_496,
    ),
    "mistralai/Mistral-7B-v0.1": (
        decoder(vocab=32000, hidden=4096, layers=32, inter=14336, heads=32, kv_heads=8, head_dim=128),
        None, 14_483_464_192,
    ),
    "mistralai/Mixtral-8x7B-v0.1": (
        decoder(vocab=32000, hidden=4096, layers=32, inter=14336, heads=32, kv_heads=8, head_dim=128, experts=8),
        None, 93_405_585_408,
    ),
    "Qwen/Qwen2-7B-Instruct": (
        decoder(vocab=152064, hidden=3584, layers=28, inter=18944, heads=28, kv_heads=4, head_dim=128, qkv_bias=True),
        None, 15_231_233_024,
    ),
    "Qwen/Qwen1.5-110B": (
        decoder(vocab=152064, hidden=8192, layers=80, inter=49152, heads=64, kv_heads=8, head_dim=128, qkv_bias=True),
        None, None,
    ),
    # Phi-3 fuses q/k/v and gate/up, which changes no count.
    "microsoft/Phi-3-mini-4k-instruct": (
        decoder(vocab=32064, hidden=3072, layers=32, inter=8192, heads=32, kv_heads=32, head_dim=96),
        None, 7_642_159_104,
    ),
    # Public count 9,241,705,984 (9.24B); head_dim 256 is not hidden/heads; tied embeddings.
    "google/gemma-2-9b-it": (
        decoder(vocab=256000, hidden=3584, layers=42, inter=14336, heads=16, kv_heads=8, head_dim=256,
                tied=True, norms_per_layer=4),
        None, None,
    ),
    # GPTQ 4-bit: the packed int32 weights count as the 8 weights each holds, so the total is the
    # base model's; qzeros, scales and g_idx are stored but are not parameters.
    "TheBloke/Llama-2-7B-GPTQ": (LLAMA2_7B, None, None),
    # FP8 with 128x128 block scales. The Hub API's per-dtype counts for deepseek-ai/DeepSeek-V3:
    # BF16 3,918,786,560 + F8_E4M3 680,571,043,840 + F32 41,555,600 stored elements; the F32 are
    # one `weight_scale_inv` per FP8 weight plus 59 MoE layers x 256 `e_score_correction_bias`.
    # Bytes: the header byte sum published by simpx/model-inspect (fixtures/README.md).
    "deepseek-ai/DeepSeek-V3": (
        3_918_786_560 + 680_571_043_840 + 59 * 256,
        3_918_786_560 + 680_571_043_840 + 41_555_600,
        688_574_839_360,
    ),
    # Public count 124,439,808; the file also holds 12 causal masks of 1024 x 1024, all F32.
    "openai-community/gpt2": (124_439_808, 124_439_808 + 12 * 1024 * 1024, 137_022_720 * 4),
    "llava-hf/llava-1.5-7b-hf": (
        decoder(vocab=32064, hidden=4096, layers=32, inter=11008, heads=32, kv_heads=32, head_dim=128)
        + CLIP_L14_336 + LLAVA_PROJECTOR,
        None, 14_126_854_144,
    ),
    # MXFP4 experts count 2 weights per stored byte; untied 201,088-token embeddings.
    # Stored: the 24 x 32 experts' 19,110,297,600 weights as half as many bytes, plus one E8M0
    # scale per 32 weights (OCP MX spec).
    "openai/gpt-oss-20b": (
        24 * GPT_OSS_20B_LAYER + 2 * 201088 * 2880 + 2880,
        24 * GPT_OSS_20B_LAYER + 2 * 201088 * 2880 + 2880 - GPT_OSS_EXPERT_WEIGHTS // 2 + GPT_OSS_EXPERT_WEIGHTS // 32,
        13_761_264_768,
    ),
    # Bytes: the real checkpoint's tensor byte sum (15 shards), see fixtures/README.md.
    "openai/gpt-oss-120b": (
        36 * GPT_OSS_120B_LAYER + 2 * 201088 * 2880 + 2880,
        36 * GPT_OSS_120B_LAYER + 2 * 201088 * 2880 + 2880
        - GPT_OSS_120B_EXPERT_WEIGHTS // 2 + GPT_OSS_120B_EXPERT_WEIGHTS // 32,
        65_248_815_744,
    ),
    # Same architecture as Meta-Llama-3-8B; the Hub's index total_size is the same 16,060,522,496.
    "meta-llama/Llama-3.1-8B-Instruct": (
        decoder(vocab=128256, hidden=4096, layers=32, inter=14336, heads=32, kv_heads=8, head_dim=128),
        None, 16_060_522_496,
    ),
    # Qwen3 adds per-head q_norm/k_norm (2 x head_dim per layer). The config ties the embeddings,
    # but the real model.safetensors stores lm_head.weight too: 311 tensors, 751,632,384
    # elements, 1,503,264,768 data bytes (file 1,503,300,328 bytes, header 35,552).
    "Qwen/Qwen3-0.6B": (
        decoder(vocab=151936, hidden=1024, layers=28, inter=3072, heads=16, kv_heads=8, head_dim=128)
        + 28 * 2 * 128,
        751_632_384, 1_503_264_768,
    ),
    "Qwen/Qwen3-32B": (
        decoder(vocab=151936, hidden=5120, layers=64, inter=25600, heads=64, kv_heads=8, head_dim=128)
        + 64 * 2 * 128,
        None, 65_524_246_528,
    ),
    # Text decoder + Pixtral + projector = 24,011,361,280, the published count of Mistral Small 3.1
    # and 3.2 (fixtures/README.md); all BF16, untied head.
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503": (
        decoder(vocab=131072, hidden=5120, layers=40, inter=32768, heads=32, kv_heads=8, head_dim=128)
        + PIXTRAL_24 + MISTRAL3_PROJECTOR,
        24_011_361_280, 2 * 24_011_361_280,
    ),
}


def test_the_formula_reproduces_the_public_llama2_count() -> None:
    assert LLAMA2_7B == 6_738_415_616


def available() -> list[str]:
    return [r for r in EXPECTED if snapshot_path(r).exists()]


def check(report, repo_id: str) -> None:
    total, stored, nbytes = EXPECTED[repo_id]
    p = report.parameters
    assert p.total_params == total
    if stored is not None:
        assert p.stored_elements == stored
    elif not p.quant_method:
        assert p.stored_elements == total + p.buffer_elements
    if nbytes is not None:
        assert p.weights_bytes == nbytes


@pytest.mark.parametrize("repo_id", available())
def test_snapshot_counts(repo_id: str) -> None:
    check(inspect_model(str(snapshot_path(repo_id))), repo_id)


@pytest.mark.parametrize("repo_id", available())
def test_counts_through_the_fake_hub(repo_id: str, fake_hub) -> None:
    report = inspect_model(repo_id, token=VALID_TOKEN)
    check(report, repo_id)
    assert report.checkpoint.sha == fake_hub.repos[repo_id].sha


def test_at_least_twelve_fixture_models() -> None:
    from conftest import SNAPSHOTS

    assert len(list(SNAPSHOTS.glob("*.json*"))) >= 13
