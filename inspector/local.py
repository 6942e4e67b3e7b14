"""Read a model from disk: a model directory (or a snapshot folder of the HF cache) or one file.

Only headers are read: a 100 GB shard costs one small read, never a full load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .checkpoint import (
    METADATA_FILES,
    Checkpoint,
    WeightPlan,
    load_config_json,
    plan_weights,
    shards_from_index,
)
from .errors import ConfigError, EntryNotFound, HeaderError
from .header import PREFIX_BYTES, Header, parse_header, read_length_prefix
from .source import Source, SourceKind


def read_header_file(path: Path) -> Header:
    """Parse the header of one local .safetensors file (two small reads)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(PREFIX_BYTES)
            try:
                n = read_length_prefix(prefix)
            except HeaderError as e:
                raise HeaderError(f"{path.name}: {e}") from None
            # Never more than the file holds: read(n) allocates n bytes first, and a 10-byte file may
            # claim a 100 MB header. parse_header then says the header runs past the end.
            body = f.read(min(n, max(0, size - PREFIX_BYTES)))
    except FileNotFoundError:
        raise EntryNotFound(f"{path}: file not found") from None
    except OSError as e:
        raise EntryNotFound(f"{path}: cannot read ({e.strerror})") from None
    return parse_header(prefix + body, file_bytes=size, name=path.name)


def _read_json(path: Path) -> Any:
    try:
        return load_config_json(path.read_bytes(), path.name)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None


def read_local(source: Source) -> Checkpoint:
    """Read a LOCAL_DIR or LOCAL_FILE source into a Checkpoint."""
    assert source.path is not None
    if source.kind is SourceKind.LOCAL_FILE:
        return _read_file(source.path)
    return _read_dir(source)


def _read_file(path: Path) -> Checkpoint:
    header = read_header_file(path)
    json_files: dict[str, Any] = {}
    # A config.json beside the file describes it (a single-file model folder).
    sibling = path.parent / "config.json"
    if sibling.is_file():
        json_files["config.json"] = _read_json(sibling)
    return Checkpoint(
        name=str(path),
        files={path.name: header.file_bytes},
        json_files=json_files,
        headers={path.name: header},
        plan=WeightPlan("safetensors", None, (path.name,)),
        local_path=str(path),
    )


def _read_dir(source: Source) -> Checkpoint:
    root = source.path
    assert root is not None
    files: dict[str, int | None] = {}
    for entry in os.scandir(root):
        # HF cache snapshot folders hold symlinks into blobs/: follow them.
        if entry.is_file():
            files[entry.name] = entry.stat().st_size
    plan = plan_weights(files)
    json_files: dict[str, Any] = {}
    for name in (*METADATA_FILES, plan.index_file):
        if name and name in files:
            json_files[name] = _read_json(root / name)
    headers: dict[str, Header] = {}
    if plan.format == "safetensors":
        shards = plan.files or shards_from_index(json_files.get(plan.index_file or ""), plan.index_file or "index")
        for name in shards:
            if name not in files:
                raise EntryNotFound(f"{root}: {plan.index_file} names {name!r}, which is not there")
            headers[name] = read_header_file(root / name)
    return Checkpoint(
        name=source.repo_id or source.display,
        files=files,
        json_files=json_files,
        headers=headers,
        plan=plan,
        repo_id=source.repo_id,
        revision=source.revision,
        sha=source.revision,
        local_path=str(root),
        warnings=() if "config.json" in files else (f"{root}: no config.json; counting tensors only",),
    )
