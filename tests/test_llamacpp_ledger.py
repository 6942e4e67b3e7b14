"""hfmem's llama.cpp terms held against published llama.cpp start-up logs (tests/data/llamacpp_ledger.json).

Each row is a log of a named GGUF file: its metadata as the log printed it, the settings it ran with
(n_ctx, n_ubatch, cache types, flash attention, offload) and the buffers it reported. hfmem's
numbers come from the same metadata (and the fixture tensor table where the row names one):
model and KV buffers within 1%, compute buffers within 15%, or the row explains the miss.
"""

from __future__ import annotations

import json
import sys

import pytest
from conftest import ROOT

from inspector import llamacpp as lc
from inspector.gguf import GGML_TYPES, GGUFModel, GGUFTensor

LEDGER = json.loads((ROOT / "tests" / "data" / "llamacpp_ledger.json").read_text())["rows"]
TABLES = ROOT / "fixtures" / "gguf" / "tables"
MIB = 1 << 20
TARGETS = {"kv": 0.01, "model_gpu": 0.01, "model_host": 0.01, "repack_host": 0.01, "compute_gpu": 0.15,
           "compute_host": 0.15, "compute_cpu": 0.15}
_TYPE = {name: value for value, (name, _, _) in GGML_TYPES.items()}


def _tensors(rows: list[list]) -> tuple[GGUFTensor, ...]:
    return tuple(GGUFTensor(name, tuple(shape), _TYPE[t.upper()], 0) for name, t, shape in rows)


def _value(v):
    """A table's metadata value: an array as its type and length (as the parser keeps a long one)."""
    from inspector.gguf import ArraySummary

    return ArraySummary(0, v["len"]) if isinstance(v, dict) and "len" in v else v


def _model(row: dict) -> lc.LlamaModel:
    tensors: tuple[GGUFTensor, ...] = ()
    meta = row.get("metadata")
    if row.get("table"):
        table = json.loads((TABLES / f"{row['table']}.json").read_text())
        tensors = _tensors(table["tensors"])
        meta = meta or {k: _value(v) for k, v in table["metadata"].items()}
    tensors += _tensors(row.get("tensors", []))
    return lc.llama_model(GGUFModel(row["file"], meta, tensors, None, {}))


def ours(row: dict) -> dict[str, float]:
    """hfmem's terms for a row, in MiB, under the names the row's `logged_mib` uses."""
    s = row["settings"]
    settings = lc.LlamaCppSettings(
        ctx_size=s["ctx_size"], parallel=s["parallel"], kv_unified=s.get("kv_unified", False),
        ubatch_size=s["ubatch_size"], flash_attn=s["flash_attn"], cache_type_k=s["cache_type_k"],
        cache_type_v=s["cache_type_v"], swa_full=s.get("swa_full", False), n_cpu_moe=s.get("n_cpu_moe", 0))
    gpu = bool(s["offloaded"]) and not str(s["offloaded"]).startswith("0/")
    e = lc.estimate(_model(row), settings, gpu=gpu)
    p = e.placement
    out = {"kv": e.kv.bytes / MIB}
    if gpu:
        out |= {"compute_gpu": p.compute_gpu / MIB, "compute_host": p.compute_host / MIB,
                "model_gpu": p.model_gpu / MIB, "model_host": p.model_host / MIB}
    else:
        out |= {"compute_cpu": p.compute_host / MIB, "model_host": p.model_host / MIB,
                "repack_host": p.repack_host / MIB}
    return out


def logged(row: dict) -> dict[str, float]:
    out = {k: v for k, v in row["logged_mib"].items() if k != "model" and v is not None}
    if row.get("table") and isinstance(row["logged_mib"].get("model"), dict):
        model = row["logged_mib"]["model"]
        host = sum(v for k, v in model.items() if k.startswith("CPU"))
        out |= {"model_host": host, "model_gpu": sum(model.values()) - host}
    return out


def errors(row: dict) -> dict[str, float]:
    mine, theirs = ours(row), logged(row)
    return {k: (mine[k] - v) / v for k, v in theirs.items() if k in mine and v}


def test_every_row_has_its_source_and_settings() -> None:
    assert len(LEDGER) >= 20
    for row in LEDGER:
        measured = row["source"] == "bench/llamacpp_cpu.sh"  # run here, on a fixture: the script says how
        assert row["source"].startswith("https://") or measured and (ROOT / row["source"]).is_file(), row["id"]
        assert row["build"] and row["file"] and (row.get("metadata") or row.get("table"))
        assert {"ctx_size", "ubatch_size", "flash_attn", "cache_type_k", "cache_type_v"} <= set(row["settings"])
        assert logged(row), row["id"]


@pytest.mark.parametrize("row", LEDGER, ids=[r["id"] for r in LEDGER])
def test_row_within_its_targets(row: dict) -> None:
    explained = row.get("explained", {})
    for term, err in errors(row).items():
        if term in explained:
            continue
        assert abs(err) <= TARGETS[term], f"{row['id']}: {term} off by {err:+.1%}"


def test_the_kv_cache_is_exact_in_every_row() -> None:
    """The KV buffers are llama.cpp's formula: every row to the hundredth of a MiB it prints."""
    for row in LEDGER:
        assert ours(row)["kv"] == pytest.approx(logged(row)["kv"], abs=0.01), row["id"]


def test_an_explained_miss_is_still_a_miss() -> None:
    """An explanation stays only while it is needed: a term back within its target loses it."""
    for row in LEDGER:
        errs = errors(row)
        for term in row.get("explained", {}):
            assert term in errs and abs(errs[term]) > TARGETS[term], f"{row['id']}: {term} no longer misses"


def table() -> str:
    """The README's table (python tests/test_llamacpp_ledger.py)."""
    lines = ["| log (source) | build | KV | model GPU (host) | compute GPU (CPU) | compute host (repack) |",
             "|---|---|---|---|---|---|"]
    for row in LEDGER:
        errs, theirs, explained = errors(row), logged(row), row.get("explained", {})
        cells = {t: f"{theirs[t]:,.2f} MiB {errs[t]:+.1%}{'*' * (t in explained)}" if t in errs else "-"
                 for t in ("kv", "model_gpu", "model_host", "repack_host", "compute_gpu", "compute_cpu",
                           "compute_host")}
        compute = cells["compute_gpu"] if "compute_gpu" in errs else cells["compute_cpu"] + " (CPU)"
        name = row["file"] + (f" `{row['command'].split(' ', 3)[3].split(' -n 1')[0].split(' -npp')[0]}`"
                              if row.get("command") else "")
        host = cells["compute_host"] if "compute_host" in errs else cells.get("repack_host", "-") + " (repack)"
        lines.append(f"| [{name}]({row['source']}) | {row['build'].split()[0]} | {cells['kv']} | "
                     f"{cells['model_gpu'] if 'model_gpu' in errs else cells['model_host'] + ' (host)'} | "
                     f"{compute} | {host} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    print(table())
