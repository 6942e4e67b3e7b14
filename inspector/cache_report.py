"""`hfmem cache info`: where hfmem's cache is and what it holds, as lines for people or JSON."""

from __future__ import annotations

import json as json_module

from .report import gib
from .text import terminal_safe


def render_cache_info(info: dict[str, object], *, json: bool = False) -> str:
    """`housekeeping.cache_info()`'s answer as text; the path comes from outside and is made safe."""
    if json:
        return json_module.dumps(info, indent=2) + "\n"
    size = info["bytes"]
    assert isinstance(size, int)
    return (f"path            {terminal_safe(str(info['path']))}\n"
            f"size            {size:,} bytes ({gib(size)})\n"
            f"snapshots       {info['snapshots']}\n"
            f"branch refs     {info['refs']}\n"
            f"HTTP responses  {info['http_responses']}\n")
