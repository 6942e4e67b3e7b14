"""The examples in the docstrings run: they are documentation, so they must stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest
from conftest import ROOT

MODULES = ["api", "arch", "estimate", "header", "kvcache", "params", "report", "source", "checkpoint", "hub", "checks",
           "fit", "gpus", "cache", "text", "vllm"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # examples use paths relative to the repository
    module = importlib.import_module(f"inspector.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
