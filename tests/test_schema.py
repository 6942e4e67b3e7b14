"""The JSON Schema that ships with the package (inspector/data/hfmem-1.schema.json, issue 17 item 5):
every JSON hfmem prints validates against it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, SNAPSHOTS
from jsonschema import Draft202012Validator

from inspector.cli import run

SCHEMA = json.loads((ROOT / "inspector" / "data" / "hfmem-1.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
MODELS = sorted(str(p.relative_to(ROOT)) for p in SNAPSHOTS.glob("*.json*"))


@pytest.fixture(autouse=True)
def in_root(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)


def _valid(doc: object) -> None:
    errors = sorted(VALIDATOR.iter_errors(doc), key=lambda e: e.path)
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def test_the_schema_is_a_valid_json_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("model", MODELS)
def test_inspect_json_of_every_fixture(model: str, capsys) -> None:
    assert run([model, "--json", "--gpu", "rtx 4090", "--gpu", "h100"]) == 0
    _valid(json.loads(capsys.readouterr().out))


@pytest.mark.parametrize("args", [["--gpu", "h100"], ["--gpu", "t4", "--count", "1"], ["--gpu", "h100",
                                                                                          "--max-model-len", "auto"]])
def test_check_json(args: list[str], capsys) -> None:
    code = run(["check", MODELS[0], *args, "--json"])
    assert code in (0, 3)
    _valid(json.loads(capsys.readouterr().out))


def test_check_models_json(tmp_path: Path, capsys) -> None:
    models = tmp_path / "models.toml"
    models.write_text(f'[defaults]\ngpu = "h100"\n[[model]]\nid = "{MODELS[0]}"\n[[model]]\nid = "nobody/none"\n'
                      '[[model]]\nid = "x"\ncount = "two"\n')
    run(["check", "--models", str(models), "--json", "--offline"])
    _valid(json.loads(capsys.readouterr().out))


def test_the_schema_ships_with_the_package() -> None:
    assert 'inspector = ["data/*.toml", "data/*.json"]' in (ROOT / "pyproject.toml").read_text()


def test_the_schema_refuses_what_breaks_the_contract(capsys) -> None:
    assert run([MODELS[0], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for broken in ({**doc, "weights_bytes": "12"}, {k: v for k, v in doc.items() if k != "fit"},
                   {**doc, "fit": [{**doc["fit"][0], "max_context_tokens": -1}]}):
        assert list(VALIDATOR.iter_errors(broken))


@pytest.mark.parametrize("args", [["--method", "lora"], ["--method", "qlora", "--gpu", "t4"],
                                  ["--method", "full", "--count", "8", "--zero", "3", "--offload", "optimizer"]])
def test_train_json(args: list[str], capsys) -> None:
    llama = str(SNAPSHOTS.relative_to(ROOT) / "meta-llama--Llama-2-7b-hf.json")
    assert run(["train", llama, *args, "--json"]) == 0
    _valid(json.loads(capsys.readouterr().out))
    code = run(["check", llama, "--gpu", "rtx4090", *args[:2], "--json"])
    assert code in (0, 3)
    _valid(json.loads(capsys.readouterr().out))
