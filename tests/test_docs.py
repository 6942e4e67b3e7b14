"""The README documents every command, option and exit code, and the command CI runs."""

from __future__ import annotations

import re

import typer
from conftest import ROOT

from inspector.cli import app
from inspector.errors import ExitCode

README = (ROOT / "README.md").read_text()


def all_commands():
    group = typer.main.get_command(app)
    yield group
    yield from group.commands.values()


def test_every_command_and_option_is_documented() -> None:
    for cmd in all_commands():
        if cmd.name and cmd.name != "hfmem":
            assert f"hfmem {cmd.name}" in README or f"`{cmd.name}`" in README, cmd.name
        for param in cmd.params:
            for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
                if opt.startswith("-"):
                    assert f"`{opt}" in README or f" {opt}" in README, f"{cmd.name}: {opt}"


def test_every_exit_code_is_in_the_readme_table() -> None:
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \| ", README, re.M), code


def test_ci_runs_the_readme_test_command() -> None:
    assert "python -m pytest" in README
    assert ".venv/bin/python -m pytest" in (ROOT / ".ci" / "run").read_text()


def test_readme_first_command_names_a_bundled_snapshot() -> None:
    m = re.search(r"pip install \. && hfmem (\S+)", README)
    assert m and (ROOT / m[1]).is_file()
