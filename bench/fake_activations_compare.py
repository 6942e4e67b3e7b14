#!/usr/bin/env python3
"""bench/fake_activations.py (torch on the meta device) beside `hfmem train`'s activations, per
token per layer. Run from the repo root with hfmem's venv; GENVENV (default /work/genvenv) holds
torch, transformers and peft. Results: docs/research/activation-crosscheck.md."""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.getcwd())
from inspector.api import TrainSettings, train_model  # noqa: E402

GENVENV = os.environ.get("GENVENV", "/work/genvenv")
ALL = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
CASES = [("meta-llama--Llama-2-7b-hf", "q_proj,v_proj", "eager"), ("meta-llama--Llama-2-7b-hf", ALL, "eager"),
         ("meta-llama--Meta-Llama-3-8B", "q_proj,v_proj", "eager"),
         ("meta-llama--Llama-2-7b-hf", "q_proj,v_proj", "sdpa")]


def measured(raw: str, targets: str, impl: str, seq: int) -> float:
    out = []
    for layers in (1, 2):
        cmd = [f"{GENVENV}/bin/python", "bench/fake_activations.py", raw, targets, impl, str(seq), str(layers)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out.append(json.loads(r.stdout.strip().splitlines()[-1])["bytes"])
    return (out[1] - out[0]) / seq


for snap, targets, impl in CASES:
    seq = 64
    m = measured(f"fixtures/raw/{snap}", targets, impl, seq)
    t = train_model(f"fixtures/snapshots/{snap}.json", TrainSettings(
        lora_r=8, lora_target=tuple(targets.split(",")), attn_implementation=impl, seq_len=seq), gpus=())
    formula = next(x.formula for x in t.training.terms if x.key == "activations")
    found = re.search(r"x ([\d,]+) B per token", formula)
    assert found
    per = int(found.group(1).replace(",", ""))
    print(f"{snap:30} {targets[:20]:20} {impl:6} measured {m:10,.0f} hfmem {per:10,} B  {100 * (per - m) / m:+.2f}%")
