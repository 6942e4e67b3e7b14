"""Read a model from disk: a model directory (or a snapshot folder of the HF cache) or one file.

Only headers are read: a 100 GB shard costs one small read, never a full load. Every file is
checked to be a regular file before it is read (a FIFO would block, /dev/zero never end), and no
read is longer than its limit, stated where it is set (issue 16).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

from .cache import MAX_JSON_BYTES  # the largest JSON file read, as from the Hub (no HTTP import)
from .checkpoint import (
    METADATA_FILES,
    Checkpoint,
    WeightPlan,
    gguf_plan,
    load_config_json,
    plan_weights,
    shards_from_index,
)
from .errors import ConfigError, EntryNotFound, HeaderError, UsageError
from .files import file_kind, open_regular, read_regular
from .gguf import GGUFHeader, read_gguf_header
from .header import PREFIX_BYTES, Header, parse_header, read_length_prefix
from .source import Source, SourceKind


def read_header_file(path: Path) -> Header:
    """Parse the header of one local .safetensors file (two small reads)."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
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
        return load_config_json(read_regular(path, MAX_JSON_BYTES, "a JSON file"), path.name)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None


def read_local(source: Source) -> Checkpoint:
    """Read a LOCAL_DIR or LOCAL_FILE source into a Checkpoint."""
    assert source.path is not None
    if source.kind is SourceKind.LOCAL_FILE:
        if source.path.suffix == ".gguf":
            return _read_gguf(source, source.path.parent, source.path.name)
        return _read_file(source.path)
    return _read_dir(source)


def read_gguf_file(path: Path) -> GGUFHeader:
    """One local GGUF file's header, read in growing ranges as from the Hub."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size

            def read(start: int, end: int) -> bytes:
                f.seek(start)
                return f.read(end - start)

            return read_gguf_header(read, file_bytes=size, name=path.name)
    except FileNotFoundError:
        raise EntryNotFound(f"{path}: file not found") from None
    except OSError as e:
        raise EntryNotFound(f"{path}: cannot read ({e.strerror})") from None


def _read_gguf(source: Source, root: Path, filename: str | None, quant: str | None = None) -> Checkpoint:
    """A GGUF file (with the other parts of its split set) or a folder's GGUF files: the chosen
    file's headers; the folder's other GGUF files listed with their sizes."""
    files, others = _scan(root)
    _refuse_needed(root, others)
    if source.kind is SourceKind.LOCAL_DIR:
        files.update(_gguf_in_folders(root))
    if filename is not None and filename not in files:
        raise EntryNotFound(f"{root / filename}: file not found")
    listing = files
    if source.kind is SourceKind.LOCAL_FILE and filename:  # its quantizations: the same name, another label
        stem = _stem(filename)
        listing = {n: s for n, s in files.items() if n.endswith(".gguf") and _stem(n) == stem}
    plan, chosen = gguf_plan(listing, filename=filename, quant=quant, repo=str(root))
    headers = {part: read_gguf_file(root / part) for part in plan.files}
    return Checkpoint(
        name=str(root / chosen) if source.kind is SourceKind.LOCAL_FILE else source.repo_id or source.display,
        files=listing, json_files={}, headers={}, plan=plan, repo_id=source.repo_id, revision=source.revision,
        sha=source.revision, local_path=str(source.path), gguf=headers,
    )


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
    files, others = _scan(root)
    _refuse_needed(root, others)
    if not any(n.endswith((".safetensors", ".bin", ".gguf")) for n in files) and _gguf_in_folders(root):
        # A repo of GGUF files in folders of their own (Unsloth's Q4_K_M/...-00001-of-00003.gguf),
        # as hf download lays it out.
        return _read_gguf(source, root, source.filename, source.quant)
    plan = plan_weights(files)
    if (plan.format == "gguf" or source.filename and source.filename.endswith(".gguf") or source.quant
            or source.prefer_gguf):
        return _read_gguf(source, root, source.filename, source.quant)
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


def _scan(root: Path) -> tuple[dict[str, int | None], dict[str, str]]:
    """The folder's regular files (through symlinks: an HF cache snapshot folder is made of links
    into blobs/) with their sizes, and what the other entries are (a FIFO, a link that loops...)."""
    files: dict[str, int | None] = {}
    others: dict[str, str] = {}
    try:
        entries = list(os.scandir(root))
    except OSError as e:
        raise UsageError(f"{root}: cannot list the folder ({e.strerror})") from None
    for entry in entries:
        try:
            st = entry.stat()  # (follows a symlink)
        except OSError as e:
            if entry.is_symlink():  # a link that loops or leads nowhere: as if absent, unless needed
                others[entry.name] = "a symbolic link that loops" if e.errno == errno.ELOOP else "a broken link"
            continue
        if stat.S_ISREG(st.st_mode):
            files[entry.name] = st.st_size
        else:
            others[entry.name] = file_kind(st.st_mode)
    return files, others


def _refuse_needed(root: Path, others: dict[str, str]) -> None:
    """UsageError when a file the model may need (config, index, weights) is there but is no regular
    file: read as absent, the model would be counted wrong without a word."""
    for name, kind in sorted(others.items()):
        if name in METADATA_FILES or name.endswith((".safetensors", ".index.json", ".bin", ".gguf")):
            raise UsageError(f"{root / name}: {kind}, not a regular file; hfmem reads only files")


def _stem(name: str) -> str:
    """A GGUF file's name without its quantization and split suffix: the model it is of."""
    from .gguf import SPLIT_RE, quant_label

    m = SPLIT_RE.match(name)
    base = m["base"] if m else name.removesuffix(".gguf")
    label = quant_label(name)
    if label:
        i = base.upper().rfind(label)
        base = base[:i] + base[i + len(label):] if i >= 0 else base
    return base.lower().rstrip("-_.")


#: Our policy: the files one level down looked at for GGUF files (a repo's quantization folders).
MAX_FOLDER_FILES = 10_000


def _gguf_in_folders(root: Path) -> dict[str, int | None]:
    """The .gguf files one folder down ("Q4_K_M/model-Q4_K_M-00001-of-00002.gguf"), regular files
    only, at most MAX_FOLDER_FILES looked at; a folder that cannot be listed is passed over."""
    found: dict[str, int | None] = {}
    seen = 0
    try:
        folders = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    except OSError:
        return found
    for folder in sorted(folders, key=lambda e: e.name):
        try:
            entries = list(os.scandir(folder.path))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > MAX_FOLDER_FILES:
                return found
            if not entry.name.endswith(".gguf"):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found[f"{folder.name}/{entry.name}"] = st.st_size
    return found
