#!/usr/bin/env python3
"""The bytes autograd saves in one forward pass of a transformers decoder with PEFT LoRA, on the
meta device (no weights, no compute): the activations term of `hfmem train`, measured.

Not part of CI (it needs torch, transformers and peft). Usage, from the repo root:

    GENVENV/bin/python bench/fake_activations.py CONFIG_DIR q_proj,v_proj eager SEQ LAYERS

prints {"bytes": ..., "tensors": ...}: every distinct tensor saved for the backward, parameters
(and views of them) left out. bench/fake_activations_compare.py runs it at 1 and 2 layers and
sets the difference (one layer, per token) beside hfmem's figure.
"""
import json
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

cfg_path, targets, impl, seq, layers = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4]), int(
    sys.argv[5])
cfg = AutoConfig.from_pretrained(cfg_path)
cfg.num_hidden_layers = layers
cfg._attn_implementation = impl
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
model = get_peft_model(model, LoraConfig(r=8, target_modules=targets, lora_dropout=0.0))
params = {id(p) for p in model.parameters()}
seen: dict[int, int] = {}


def pack(t: torch.Tensor) -> torch.Tensor:
    if id(t) in params or (t._base is not None and id(t._base) in params):
        return t
    key = id(t._base) if t._base is not None else id(t)
    seen.setdefault(key, t.numel() * t.element_size())
    return t


ids = torch.zeros((1, seq), dtype=torch.long, device="meta")
with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
    model(input_ids=ids)
print(json.dumps({"bytes": sum(seen.values()), "tensors": len(seen)}))
