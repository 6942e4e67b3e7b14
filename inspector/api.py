"""The library API: `inspect_model("org/name")` -> a ModelReport of frozen records.

    >>> report = inspect_model("fixtures/snapshots/openai-community--gpt2.json")
    >>> report.parameters.total_params
    124439808
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .checkpoint import Checkpoint, load_snapshot
from .params import ParameterCount, count_parameters, quant_scheme
from .source import Source, SourceKind, parse_source

JSON_SCHEMA = "hfmem/1"


@dataclass(frozen=True)
class ModelReport:
    """Everything hfmem knows about one model; `to_dict()` is the `--json` contract (hfmem/1)."""

    source: Source
    checkpoint: Checkpoint
    parameters: ParameterCount

    def to_dict(self) -> dict[str, Any]:
        from . import __version__

        cp, p = self.checkpoint, self.parameters
        scheme = quant_scheme(cp.quantization_config)
        return {
            "schema": JSON_SCHEMA,
            "tool": {"name": "hfmem", "version": __version__},
            "model": cp.name,
            "revision": cp.sha,
            "source": {
                "kind": self.source.kind.value,
                "repo_id": cp.repo_id,
                "requested_revision": cp.revision,
                "path": cp.local_path,
            },
            "parameters": p.to_dict(),
            "weights_bytes": p.weights_bytes,
            "weights_format": cp.plan.format,
            "quantization": {"method": scheme.method, "bits": scheme.bits} if scheme else None,
            "files": [f.to_dict() for f in p.files],
            "notes": [n for n in (p.derived_note,) if n],
            "warnings": list(cp.warnings),
        }


def read_checkpoint(
    source: Source,
    *,
    token: str | bool | None = None,
    offline: bool | None = None,
    refresh: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Checkpoint:
    """Read what a Source points at: a snapshot file, a local model, or a Hub repo."""
    if source.kind is SourceKind.SNAPSHOT:
        assert source.path is not None
        return load_snapshot(source.path)
    if source.kind in (SourceKind.LOCAL_DIR, SourceKind.LOCAL_FILE):
        from .local import read_local

        return read_local(source)
    from .hub import read_hub

    return read_hub(source, token=token, offline=offline, refresh=refresh, progress=progress)


def inspect_model(
    model: str | Source,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    offline: bool | None = None,
    refresh: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ModelReport:
    """Read a model's metadata and count it exactly.

    `model` is what a user would type: a path (directory, .safetensors file, snapshot .json), an
    `org/name` repo id or a Hub URL. `token`: a Hub token, False to send none, None to use
    `HF_TOKEN` or the stored login. `offline` (None: `HF_HUB_OFFLINE`) answers from the cache
    alone; `refresh` asks the Hub again where a branch points; `progress(done, total)` is called
    as shard headers arrive. Raises an `inspector.errors.HfmemError` subclass on bad input.
    """
    source = model if isinstance(model, Source) else parse_source(model, revision)
    checkpoint = read_checkpoint(source, token=token, offline=offline, refresh=refresh, progress=progress)
    return ModelReport(source, checkpoint, count_parameters(checkpoint))
