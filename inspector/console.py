"""The `hfmem` console command. `hfmem --version` is answered here, before typer and the rest of the
CLI are imported (~0.05 s of a 0.1 s start-up); everything else goes to `inspector.cli`."""

from __future__ import annotations

import sys


def version_line() -> str:
    from . import __version__

    return f"hfmem {__version__}"


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        print(version_line())
        return
    from .cli import main as cli_main

    cli_main()
