"""Tables defined once, as columns of (header, alignment, value), and written as a terminal table
or a GitHub Markdown table by the same code: no output keeps its own header list or picks its
cells by position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Column(Generic[T]):
    """One column: its header, its alignment ("left" or "right") and how a row's item shows in it.

    >>> from inspector.columns import table
    >>> print(table([Column("n", "right", str), Column("square", "right", lambda n: str(n * n))],
    ...             [3, 12], markdown=False, escape=str))
      n    square
    ---  --------
      3         9
     12       144
    """

    header: str
    align: str
    value: Callable[[T], str]


def table(columns: Sequence[Column[T]], items: Iterable[T], *, markdown: bool, escape: Callable[[str], str],
          numbers: bool = False, align_markdown: bool = True) -> str:
    """The rows of `items` under `columns`, every header and cell through `escape` (a name from
    outside renders as itself). `numbers`: let tabulate align numeric-looking cells as numbers;
    `align_markdown`: write the alignment row of a Markdown table (`|:---|---:|`)."""
    from tabulate import tabulate

    rows = [[escape(c.value(item)) for c in columns] for item in items]
    aligned = not markdown or align_markdown
    return tabulate(rows, headers=[escape(c.header) for c in columns], tablefmt="github" if markdown else "simple",
                    disable_numparse=not numbers,
                    colalign=tuple(c.align for c in columns) if aligned else None)
