"""The GPU catalog (inspector/data/gpus.toml, every row with its source) and name matching.

Users add their own rows with `--gpus-file FILE` or `HFMEM_GPUS_FILE`, in the same format; a row
of theirs with the name of a built-in one replaces it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ConfigError, HfmemError, UsageError

CATALOG = Path(__file__).parent / "data" / "gpus.toml"


#: Our policy where the catalog has no measured CUDA total: the lowest ratio of CUDA's total to
#: nvidia-smi's among the measured rows (L4: deviceQuery 23,570,219,008 bytes against nvidia-smi's
#: 23034 MiB, github.com/thamada/nvidia-smi gls/L4_deviceQuery.py; the others run 0.976-0.996), so
#: that the budget is never overstated.
CUDA_TOTAL_FALLBACK_RATIO = 23_570_219_008 / (23_034 << 20)


@dataclass(frozen=True)
class GPU:
    """One GPU model: memory as the driver reports it, and what it runs natively."""

    name: str
    memory_bytes: int
    bandwidth_bytes_per_s: int
    vendor: str = "nvidia"
    compute_capability: str = ""
    bf16: bool = True
    fp8: bool = False
    fp4: bool = False
    aliases: tuple[str, ...] = ()
    memory_note: str | None = None
    cuda_total_bytes: int | None = None  # what CUDA (torch total_memory, cudaMemGetInfo) reports

    @property
    def cuda_bytes(self) -> int:
        """The total vLLM multiplies by gpu_memory_utilization: CUDA's, a few hundred MiB below
        nvidia-smi's; where no measurement is cited, memory_bytes x CUDA_TOTAL_FALLBACK_RATIO."""
        if self.cuda_total_bytes:
            return self.cuda_total_bytes
        if self.vendor != "nvidia":  # ROCm's total is rocm-smi's (MI300X: both 206,141,652,992 B); Apple's is Metal's
            return self.memory_bytes
        return int(self.memory_bytes * CUDA_TOTAL_FALLBACK_RATIO)

    def native(self, precision: str) -> bool:
        """Whether the GPU computes in this precision natively (bf16 needs sm80+, fp8 sm89+)."""
        if precision == "bf16":
            return self.bf16
        if precision == "fp8":
            return self.fp8
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "memory_bytes": self.memory_bytes, "cuda_total_bytes": self.cuda_bytes,
                "cuda_total_measured": self.cuda_total_bytes is not None, "vendor": self.vendor,
                "compute_capability": self.compute_capability, "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s}


def read_toml(path: Path, what: str, bad: type[HfmemError] = ConfigError,
              skip: re.Pattern[str] | None = None) -> dict[str, Any]:
    """A TOML file as a dict; unreadable -> UsageError, invalid -> `bad` naming the line (tomli on 3.10).
    `skip`: lines left unparsed (each a whole key = value or comment: the line numbers stay)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with path.open("rb") as f:
            if skip is None:
                data: dict[str, Any] = tomllib.load(f)
                return data
            text = f.read().decode("utf-8")
            data = tomllib.loads("\n".join("" if skip.match(line) else line for line in text.split("\n")))
            return data
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:  # its message names the line and column
        raise bad(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise bad(f"{path}: not valid TOML: not UTF-8 text") from None


def _rows(doc: Mapping[str, Any], where: Path) -> list[GPU]:
    rows = doc.get("gpu")
    if not isinstance(rows, list):
        raise ConfigError(f"{where}: expected [[gpu]] tables")
    out = []
    for i, row in enumerate(rows, 1):
        try:
            out.append(GPU(
                name=str(row["name"]), memory_bytes=_positive(row["memory_bytes"]),
                bandwidth_bytes_per_s=_positive(row.get("bandwidth_bytes_per_s", 1)),
                vendor=str(row.get("vendor", "nvidia")), compute_capability=str(row.get("compute_capability", "")),
                bf16=bool(row.get("bf16", True)), fp8=bool(row.get("fp8", False)), fp4=bool(row.get("fp4", False)),
                aliases=tuple(str(a) for a in row.get("aliases", ())),
                memory_note=None if row.get("memory_note") is None else str(row["memory_note"]),
                cuda_total_bytes=None if row.get("cuda_total_bytes") is None else _positive(row["cuda_total_bytes"]),
            ))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: [[gpu]] number {i}: missing or invalid {e}") from None
    return out


#: Our bound on a GPU's bytes and bytes per second (an exbibyte): far above any device, and low
#: enough that every sum and ratio of them stays an exact float. NaN, inf and 400 digits are refused.
MAX_GPU_NUMBER = 1 << 60


def _positive(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= MAX_GPU_NUMBER:  # (NaN fails too)
        raise ValueError("value (a positive number of at most 2**60)")
    return int(v)


#: The catalog's lines hfmem does not read: comments and each number's source (two thirds of its
#: 60 kB; tomllib takes ~8 ms for the whole file, ~4 ms without them, on every run that fits).
_UNREAD = re.compile(r"^\s*(?:#|[a-z_]*source\s*=\s*\"[^\n]*\"\s*$)")


@lru_cache(maxsize=1)
def builtin_gpus() -> tuple[GPU, ...]:
    return tuple(_rows(read_toml(CATALOG, "the GPU catalog", skip=_UNREAD), CATALOG))


def load_gpus(extra: str | os.PathLike[str] | None = None) -> tuple[GPU, ...]:
    """The built-in catalog plus a user file (the argument, else HFMEM_GPUS_FILE)."""
    path = extra or os.environ.get("HFMEM_GPUS_FILE")
    gpus = {g.name: g for g in builtin_gpus()}
    if path:
        for g in _rows(read_toml(Path(path), "the GPU file"), Path(path)):
            gpus[g.name] = g
    return tuple(gpus.values())


def _norm(name: str) -> str:
    """'NVIDIA H100-80G' -> 'h10080g': case, spaces, dashes, 'nvidia'/'geforce' and a trailing B dropped."""
    s = name.lower()
    s = re.sub(r"\b(nvidia|geforce|amd|instinct|tesla|apple)\b", "", s)
    s = re.sub(r"(\d+)\s*gb?\b", r"\1g", s)
    return re.sub(r"[^a-z0-9]", "", s)


def find_gpu(name: str, gpus: Sequence[GPU] | None = None) -> GPU:
    """The catalog row a user's GPU name means; forgiving about case, spacing and 'GB'.

    >>> find_gpu("a100-80g").name, find_gpu("H100").name, find_gpu("h100 80gb").name
    ('A100 80GB', 'H100 80GB', 'H100 80GB')
    """
    gpus = gpus or load_gpus()
    want = _norm(name)
    for g in gpus:
        if want in {_norm(g.name), *(_norm(a) for a in g.aliases)}:
            return g
    close = [g.name for g in gpus if want and want in _norm(g.name)]
    hint = f"; did you mean {', '.join(close[:3])}?" if close else "; add yours with --gpus-file"
    raise UsageError(f"unknown GPU {name!r}{hint}")


# shared/DESIGN.md: the fit shown when --gpu names none.
DEFAULT_GPUS = ("RTX 4090 24GB", "L40S 48GB", "A100 80GB", "H100 80GB", "H200 141GB")
