"""The `hfmem` console command. `hfmem --version` is answered here, before typer and the rest of the
CLI are imported (~0.05 s of a 0.1 s start-up); everything else goes to `inspector.cli`."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from .version import version_line

        print(version_line())
        return
    from .cli import main as cli_main

    cli_main()
