"""hfmem: will this model run on my GPUs? Exact counts from config.json and safetensors headers.

The library API (the CLI is a thin layer over it):

    import inspector
    report = inspector.inspect_model("Qwen/Qwen1.5-110B")   # or a path, a URL, a snapshot file
    report.parameters.total_params, report.to_dict()

Importing this package stays cheap: no HTTP library, typer or tabulate is imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AuthError,
    ConfigError,
    DataError,
    EntryNotFound,
    ExitCode,
    GatedRepo,
    HeaderError,
    HfmemError,
    HubError,
    NetworkError,
    NotFoundError,
    NoWeightsFound,
    OfflineMiss,
    RepoNotFound,
    RevisionNotFound,
    UnknownDtype,
    UnsupportedFormat,
    UsageError,
)
from .version import __version__

if TYPE_CHECKING:
    from .api import ModelReport, inspect_model
    from .checkpoint import Checkpoint
    from .header import Header, TensorInfo
    from .params import ParameterCount
    from .source import Source

_LAZY = {
    "inspect_model": "api",
    "ModelReport": "api",
    "Checkpoint": "checkpoint",
    "Header": "header",
    "TensorInfo": "header",
    "ParameterCount": "params",
    "Source": "source",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AuthError", "Checkpoint", "ConfigError", "DataError", "EntryNotFound", "ExitCode", "GatedRepo",
    "Header", "HeaderError", "HfmemError", "HubError", "ModelReport", "NetworkError",
    "NoWeightsFound", "NotFoundError", "OfflineMiss", "ParameterCount", "RepoNotFound",
    "RevisionNotFound", "Source", "TensorInfo", "UnknownDtype", "UnsupportedFormat", "UsageError",
    "__version__", "inspect_model",
]
