"""Hostile command lines (issue 16, bullets 7 and 8): every option's value, the models file's and the
GPU file's numbers, drawn by Hypothesis. The contract: an exit code the README documents, never 1;
at most one line on stderr for hfmem's own errors (click's usage errors keep click's form); no
traceback. Everything is local (a snapshot file), so each case takes milliseconds.

Budget: about 600 cases in all, a few seconds on two cores.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import ROOT, snapshot_path
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from inspector.cli import run
from inspector.errors import ExitCode
from inspector.text import terminal_safe

GPT2 = str(snapshot_path("openai-community/gpt2").relative_to(ROOT))
DOCUMENTED = {int(c) for c in ExitCode} - {int(ExitCode.INTERNAL)}

NUMERIC_OPTIONS = ["--max-model-len", "--batch-size", "-tp", "--max-num-batched-tokens", "--max-num-seqs",
                   "--gpu-memory-utilization", "--timeout"]
CHECK_OPTIONS = ["--count", "--max-model-len", "--batch-size", "--gpu-memory-utilization", "--timeout"]

# The values people mistype and the values an attacker picks.
NASTY = st.sampled_from([
    "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e309", "-0", "0", "0.0", "1e3", "0x10", "1_000", " 8 ",
    "9" * 400, "-" + "9" * 400, "1" + "0" * 30, "2147483647", "2147483648", "4096", "4097", "١٢", "８",
    "", " ", "1.5", "1e-320", "\x1b[2J", "12\n34", "1\x00", "--json",
])
VALUES = st.one_of(
    NASTY,
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def in_root(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)


def _contract(code: int, err: str) -> None:
    assert code in DOCUMENTED, err
    assert "internal error" not in err and "Traceback" not in err, err
    for line in err.split("\n"):
        assert terminal_safe(line) == line, f"unescaped control character on stderr: {line!r}"
    if err.startswith("hfmem: error:"):
        assert err.count("\n") == 1, err


@FAST
@given(option=st.sampled_from(NUMERIC_OPTIONS), value=VALUES)
@example(option="--max-model-len", value="9" * 400)  # was OverflowError, exit 1
@example(option="--gpu-memory-utilization", value="nan")  # was ValueError, exit 1
@example(option="--timeout", value="nan")  # was accepted: a NaN deadline
@example(option="--timeout", value="inf")
def test_inspect_options(option: str, value: str, capsys) -> None:
    code = run([GPT2, option, value, "--precision", "bf16"])
    _contract(code, capsys.readouterr().err)


@FAST
@given(option=st.sampled_from(CHECK_OPTIONS), value=VALUES)
@example(option="--count", value="9" * 400)
def test_check_options(option: str, value: str, capsys) -> None:
    code = run(["check", GPT2, "--gpu", "h100", option, value])
    _contract(code, capsys.readouterr().err)


@FAST
@given(value=VALUES)
def test_prune_older_than(value: str, capsys) -> None:
    _contract(run(["cache", "prune", "--older-than", value]), capsys.readouterr().err)


# TOML numbers: integers of any size, and floats including nan and inf.
TOML_NUMBERS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "+nan", "9" * 400, "-1", "0", "1e400", "0.5", "true", '"8"']),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f) if math.isfinite(f) else "nan"),
)


@FAST
@given(key=st.sampled_from(["count", "max_model_len", "batch_size", "gpu_memory_utilization"]), value=TOML_NUMBERS)
@example(key="max_model_len", value="9" * 400)
@example(key="gpu_memory_utilization", value="nan")
def test_models_file_numbers(key: str, value: str, tmp_path: Path, capsys) -> None:
    models = tmp_path / "models.toml"
    models.write_text(f'[[model]]\nid = "{GPT2}"\ngpu = "h100"\n{key} = {value}\n')
    code = run(["check", "--models", str(models)])
    _contract(code, capsys.readouterr().err)


@FAST
@given(key=st.sampled_from(["memory_bytes", "bandwidth_bytes_per_s"]), value=TOML_NUMBERS)
@example(key="memory_bytes", value="inf")  # was OverflowError, exit 1
@example(key="memory_bytes", value="9" * 400)
def test_gpu_file_numbers(key: str, value: str, tmp_path: Path, capsys) -> None:
    row = {"memory_bytes": "25757220864", "bandwidth_bytes_per_s": "1008000000000", key: value}
    gpus = tmp_path / "gpus.toml"
    gpus.write_text('[[gpu]]\nname = "Mine"\n' + "".join(f"{k} = {v}\n" for k, v in row.items()))
    code = run(["check", GPT2, "--gpu", "Mine", "--gpus-file", str(gpus)])
    _contract(code, capsys.readouterr().err)
