"""`hfmem check --models FILE`: the CI gate over a file of models, against the fake Hub."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from inspector.cli import run

FOUR = """\
[defaults]
gpu = "A100 80GB"
precision = "bf16"
max_model_len = 8192

[[model]]
id = "Qwen/Qwen2-7B-Instruct"          # fits: 15 GB of bf16 weights

[[model]]
id = "Qwen/Qwen1.5-110B"               # does not fit on one: 207 GiB of bf16 weights
count = 1

[[model]]
id = "nobody/nothing"                  # no such repo

[[model]]
id = "mistralai/Mistral-7B-v0.1"       # malformed
count = "two"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return str(path)


def check_json(args: list[str], capsys) -> tuple[int, dict]:
    code = run(["check", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_fitting_non_fitting_missing_and_malformed(fake_hub, tmp_path, capsys) -> None:
    code, out = check_json(["--models", write(tmp_path, FOUR)], capsys)
    assert code == 4 == out["exit_code"]  # the highest error code: 4 (not found) over 2 (usage)
    fits, big, missing, bad = out["results"]
    assert (fits["position"], fits["status"], fits["exit_code"]) == (1, "fits", 0)
    assert fits["fit"]["tensor_parallel_size"] == 1 and fits["context_tokens"] == 8192
    assert (big["status"], big["exit_code"]) == ("does not fit", 3)
    need = re.match(r"needs ([\d.]+) GiB per GPU on 1 x A100 80GB, 72.9 GiB usable", big["fit"]["reason"])
    assert need and float(need[1]) > 111_210_000_000 * 2 / 2**30  # more than its bf16 weights alone
    assert (missing["status"], missing["exit_code"], missing["model"]) == ("error", 4, "nobody/nothing")
    assert "repo nobody/nothing not found" in missing["error"]
    assert (bad["status"], bad["exit_code"], bad["requested"]) == ("error", 2, None)
    assert bad["error"] == ("model 4 (mistralai/Mistral-7B-v0.1): count must be a whole number from 1 to 4,096, "
                            "not 'two'")


def test_the_table_names_each_entry_and_the_exit_code(fake_hub, tmp_path, capsys) -> None:
    assert run(["check", "--models", write(tmp_path, FOUR)]) == 4
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[2:6]}
    assert "fits" in rows["1"] and "does not fit" in rows["2"]
    assert "error" in rows["3"] and "error" in rows["4"] and "model 4 (mistralai/Mistral-7B-v0.1)" in rows["4"]
    assert lines[-1] == "1 fit, 1 do not fit, 2 errors: exit 4"


def test_markdown_for_a_pull_request_comment(fake_hub, tmp_path, capsys) -> None:
    assert run(["check", "--models", write(tmp_path, FOUR), "--format", "markdown"]) == 4
    out = capsys.readouterr().out
    assert out.startswith("### hfmem check\n\n| #")
    assert "| ✅ fits" in out and "| ❌ does not fit" in out and out.count("| ⚠️ error") == 2


@pytest.mark.parametrize("entries,code", [
    ('[[model]]\nid = "Qwen/Qwen2-7B-Instruct"\n', 0),
    ('[[model]]\nid = "Qwen/Qwen2-7B-Instruct"\n[[model]]\nid = "Qwen/Qwen1.5-110B"\ncount = 1\n', 3),
])
def test_exit_code_without_errors(fake_hub, tmp_path, capsys, entries, code) -> None:
    text = '[defaults]\ngpu = "a100-80g"\nprecision = "bf16"\n' + entries
    assert run(["check", "--models", write(tmp_path, text), "-q"]) == code


def test_each_distinct_model_is_read_once(fake_hub, tmp_path, capsys) -> None:
    text = '[defaults]\ngpu = "h100"\n' + '[[model]]\nid = "Qwen/Qwen2-7B-Instruct"\n' * 2 + (
        '[[model]]\nid = "Qwen/Qwen2-7B-Instruct"\nprecision = "int4"\ngpu = "rtx 4090"\n')
    code, out = check_json(["--models", write(tmp_path, text)], capsys)
    assert code == 0 and [r["fit"]["gpu"] for r in out["results"]] == ["H100 80GB", "H100 80GB", "RTX 4090 24GB"]
    assert sum("/revision/" in e.path for e in fake_hub.log) == 1


def test_options_replace_defaults_and_entries_win(fake_hub, tmp_path, capsys) -> None:
    text = ('[defaults]\ngpu = "a100"\nprecision = "bf16"\n[[model]]\nid = "Qwen/Qwen2-7B-Instruct"\n'
            '[[model]]\nid = "Qwen/Qwen2-7B-Instruct"\nprecision = "int4"\n')
    code, out = check_json(["--models", write(tmp_path, text), "--gpu", "l4", "--precision", "fp8"], capsys)
    assert code == 0
    assert [(r["fit"]["gpu"], r["fit"]["precision"]) for r in out["results"]] == [
        ("L4 24GB", "fp8"), ("L4 24GB", "int4")]


def test_pinned_revision_per_entry(fake_hub, tmp_path, capsys) -> None:
    sha = fake_hub.repos["Qwen/Qwen2-7B-Instruct"].sha
    text = f'[[model]]\nid = "Qwen/Qwen2-7B-Instruct"\nrevision = "{sha}"\ngpu = "h100"\n' \
           '[[model]]\nid = "Qwen/Qwen2-7B-Instruct"\nrevision = "no-such-branch"\ngpu = "h100"\n'
    code, out = check_json(["--models", write(tmp_path, text)], capsys)
    assert code == 4
    assert out["results"][0]["revision"] == sha and out["results"][1]["exit_code"] == 4


@pytest.mark.parametrize("text,message", [
    ('[defaults]\ngpu = "a100"\n[[model]]\nid = "x/y"\ncount = \n', "line 5"),  # TOML syntax, by line
    ('[defaults]\ngpus = "a100"\n[[model]]\nid = "x/y"\n', "[defaults]: unknown key 'gpus'"),
    ('[defaults]\ngpu = "a100"\n', "no [[model]] entries"),
    ('[default]\ngpu = "a100"\n[[model]]\nid = "x/y"\n', "unknown table 'default'"),
    ('[defaults]\nrevision = "main"\n[[model]]\nid = "x/y"\n', "[defaults]: unknown key 'revision'"),
])
def test_a_broken_file_is_a_usage_error_naming_where(tmp_path, capsys, text, message) -> None:
    assert run(["check", "--models", write(tmp_path, text)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hfmem: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("entry,message", [
    ('id = "Qwen/Qwen2-7B-Instruct"\ngpus = "a100"', "model 1 (Qwen/Qwen2-7B-Instruct): unknown key 'gpus'"),
    ('name = "Qwen/Qwen2-7B-Instruct"', "model 1: has no id"),
    ('id = "Qwen/Qwen2-7B-Instruct"\nprecision = "int3"', "precision must be one of stored, fp32"),
    ('id = "Qwen/Qwen2-7B-Instruct"\ngpu_memory_utilization = 1.5', "a number in (0, 1]"),
    ('id = "Qwen/Qwen2-7B-Instruct"\nkv_cache_dtype = "int2"', "kv_cache_dtype must be auto or one of"),
    ('id = "Qwen/Qwen2-7B-Instruct"\ngpu = "h1000"', "unknown GPU 'h1000'"),
    ('id = "Qwen/Qwen2-7B-Instruct"', "no GPU named"),
    ('id = "not a repo id!"\ngpu = "h100"', "nor a valid repo id"),
])
def test_a_malformed_entry_is_reported_by_position_and_id(fake_hub, tmp_path, capsys, entry, message) -> None:
    text = f'[[model]]\n{entry}\n[[model]]\nid = "Qwen/Qwen2-7B-Instruct"\ngpu = "h100"\n'
    code, out = check_json(["--models", write(tmp_path, text)], capsys)
    first, second = out["results"]
    assert code == 2 and first["exit_code"] == 2 and message in first["error"]
    assert second["status"] == "fits"  # one bad entry stops nothing else


@pytest.mark.parametrize("args,message", [
    ([], "give either a MODEL or --models FILE"),
    (["Qwen/Qwen2-7B-Instruct", "--models", "m.toml"], "give either a MODEL or --models FILE"),
    (["Qwen/Qwen2-7B-Instruct"], "--gpu is required"),
    (["--models", "does-not-exist.toml"], "cannot read the models file"),
])
def test_usage_errors(tmp_path, capsys, monkeypatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["check", *args]) == 2
    assert message in capsys.readouterr().err


def test_the_readme_example_file_is_valid(tmp_path) -> None:
    from conftest import ROOT

    from inspector.checks import CheckSpec, load_models_file

    readme = (ROOT / "README.md").read_text()
    text = re.search(r"```toml\n# models.toml\n(.*?)```", readme, re.S)[1]
    entries = load_models_file(write(tmp_path, text))
    assert all(isinstance(e, CheckSpec) for e in entries)
    assert [(e.id, e.gpu, e.precision, e.count) for e in entries] == [
        ("Qwen/Qwen2-7B-Instruct", "H100 80GB", "bf16", 1), ("Qwen/Qwen1.5-110B", "H100 80GB", "int4", 1),
        ("meta-llama/Llama-3.1-70B-Instruct", "H100 80GB", "bf16", 4)]


def test_one_model_as_markdown_and_json(fake_hub, capsys) -> None:
    assert run(["check", "Qwen/Qwen2-7B-Instruct", "--gpu", "h100", "--format", "markdown"]) == 0
    assert "| ✅ fits" in capsys.readouterr().out
    code, out = check_json(["Qwen/Qwen2-7B-Instruct", "--gpu", "h100"], capsys)
    assert code == 0 == out["exit_code"] and out["gpu"] == "H100 80GB" and out["tensor_parallel_size"] == 1


def test_a_bad_option_with_models_is_one_usage_error(tmp_path, capsys) -> None:
    text = '[[model]]\nid = "x/y"\n[[model]]\nid = "z/w"\n'
    assert run(["check", "--models", write(tmp_path, text), "--gpu", "h100", "--kv-cache-dtype", "int2"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "command line: kv_cache_dtype must be auto or one of" in err
