"""The README documents every command, option and exit code, and the command CI runs."""

from __future__ import annotations

import re

import typer
from conftest import ROOT

from inspector.cli import app
from inspector.errors import ExitCode

README = (ROOT / "README.md").read_text()


def all_commands(cmd=None, path="hfmem"):
    cmd = cmd or typer.main.get_command(app)
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from all_commands(sub, f"{path} {name}")


def test_every_command_and_option_is_documented() -> None:
    for path, cmd in all_commands():
        if path != "hfmem":
            assert path in README, path
        for param in cmd.params:
            for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
                if opt.startswith("-"):
                    assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", README), f"{path}: {opt}"


def test_every_exit_code_is_in_the_readme_table() -> None:
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \| ", README, re.M), code


def test_ci_runs_the_readme_test_command() -> None:
    # The same venv, the same extra, the same pytest call as the README's second command.
    command = "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/python -m pytest"
    assert command in README
    assert command in (ROOT / ".ci" / "run").read_text()


def test_readme_first_command_names_a_bundled_snapshot() -> None:
    m = re.search(r"python3 -m venv \.venv && \.venv/bin/pip install \. && \.venv/bin/hfmem (\S+)", README)
    assert m and (ROOT / m[1]).is_file()
