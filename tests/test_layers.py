"""The package's layering (issue 18): no import circle, no module importing another's private
name. The layers themselves are import-linter contracts in pyproject.toml, run by .ci/run."""

from __future__ import annotations

import ast

import grimp
from conftest import ROOT

PACKAGE = ROOT / "inspector"


def test_no_import_circle() -> None:
    graph = grimp.build_graph("inspector", exclude_type_checking_imports=True)
    circles = sorted((m, n) for m in graph.modules for n in graph.find_modules_directly_imported_by(m)
                     if graph.chain_exists(importer=n, imported=m))
    assert circles == []


def test_no_module_imports_another_modules_private_name() -> None:
    private = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                private += [f"{path.name}: from .{node.module} import {a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []
