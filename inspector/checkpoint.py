"""Checkpoint: everything hfmem reads about a model, and the snapshot file that carries it.

A Checkpoint is config.json + the other small JSON files (index, quantization config) + every
safetensors header + the repo's file listing. It is what the Hub reader and the local reader
produce, what fixtures record, and what `--save-snapshot` writes: one JSON file that `hfmem FILE`
reads back with no network, so a model's metadata can be carried to an air-gapped machine.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, EntryNotFound, NoWeightsFound, UnsupportedFormat, UsageError
from .header import Header, header_from_dict

if TYPE_CHECKING:
    from .gguf import GGUFHeader, GGUFModel
    from .params import FileTally, ParameterCount
from .source import SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_GGUF

SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_INDEX = "pytorch_model.bin.index.json"
#: Small JSON files worth reading when present. quantize_config.json is AutoGPTQ's, quant_config.json
#: AutoAWQ's older name; newer repos put `quantization_config` inside config.json.
METADATA_FILES = ("config.json", "quantize_config.json", "quant_config.json")

# Formats we recognise in order to say what a repo holds when it has nothing we can read.
_OTHER_FORMATS = {
    ".gguf": "GGUF",
    ".onnx": "ONNX",
    ".h5": "TensorFlow (.h5)",
    ".msgpack": "Flax (.msgpack)",
    ".pth": "PyTorch (.pth)",
    ".pt": "PyTorch (.pt)",
    ".ckpt": "checkpoint (.ckpt)",
    ".mlmodel": "Core ML",
    ".npz": "NumPy (.npz)",
}


@dataclass(frozen=True)
class WeightPlan:
    """Which files hold the weights: safetensors shards (maybe via an index) or PyTorch .bin files."""

    format: str  # "safetensors" | "pytorch" | "gguf" (files: the chosen model's parts, once chosen)
    index_file: str | None
    files: tuple[str, ...] = ()  # known up front; with an index, known once it is read


def plan_weights(listing: Iterable[str]) -> WeightPlan:
    """Choose the weight files among a repo's top-level files, as transformers would load them.

    >>> plan_weights(["config.json", "model.safetensors"]).files
    ('model.safetensors',)
    """
    names = sorted(n for n in listing if "/" not in n)
    st = [n for n in names if n.endswith(".safetensors")]
    st_indexes = [n for n in names if n.endswith(".safetensors.index.json")]
    if SAFETENSORS_INDEX in names:
        return WeightPlan("safetensors", SAFETENSORS_INDEX)
    if "model.safetensors" in st:
        return WeightPlan("safetensors", None, ("model.safetensors",))
    if len(st_indexes) == 1:
        return WeightPlan("safetensors", st_indexes[0])
    if st:
        return WeightPlan("safetensors", None, tuple(st))
    if PYTORCH_INDEX in names:
        return WeightPlan("pytorch", PYTORCH_INDEX)
    bins = [n for n in names if n.startswith("pytorch_model") and n.endswith(".bin")]
    if bins:
        return WeightPlan("pytorch", None, tuple(bins))
    if any(n.endswith(".gguf") for n in listing):
        return WeightPlan("gguf", None)
    raise _nothing_readable(list(listing))


def gguf_plan(listing: Mapping[str, int | None], *, filename: str | None, quant: str | None,
              repo: str) -> tuple[WeightPlan, str]:
    """A GGUF repo's plan: the parts of the file `--file`/`:TAG` names, else of a probe file whose
    header gives the architecture every quantization shares (the Q4_K_M, the most downloaded, else
    the median size), and the chosen file's name. The caller may read another file's header once
    the fit has picked the row (api.inspect_model)."""
    from .gguf import check_complete, choose_file, gguf_files

    files = gguf_files(listing)
    models = [f for f in files if not f.projector and not f.missing]
    if filename or quant:
        chosen = choose_file(files, filename or quant or "", repo)
    elif not models:
        broken = next((f for f in files if f.missing), None)
        if broken:
            check_complete(broken)
        raise NoWeightsFound(f"{repo}: no GGUF model among its files (only projectors, imatrix or LoRA files)")
    else:
        tagged = [f for f in models if f.label == "Q4_K_M"]
        chosen = tagged[0] if tagged else models[len(models) // 2]
    return WeightPlan("gguf", None, chosen.parts), chosen.name


def _nothing_readable(listing: list[str]) -> Exception:
    found: dict[str, int] = {}
    for n in listing:
        for ext, label in _OTHER_FORMATS.items():
            if n.endswith(ext):
                found[label] = found.get(label, 0) + 1
    if found:
        what = ", ".join(f"{count} {label} file{'s' * (count > 1)}" for label, count in found.items())
        return UnsupportedFormat(
            f"no safetensors or PyTorch weights; found only {what}, which hfmem cannot read yet"
        )
    return NoWeightsFound(f"no weight files (safetensors, PyTorch .bin or GGUF) among {len(listing)} files")


def shards_from_index(index: Any, index_file: str) -> tuple[str, ...]:
    """The shard files an index's weight_map names, refusing names that leave the repo."""
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConfigError(f"{index_file}: no weight_map")
    try:
        shards = set(weight_map.values())  # a few hundred names for ~100,000 tensors: check each once
    except TypeError:  # a list or object as a file name
        shards = {None}
    if not all(isinstance(shard, str) and is_safe_filename(shard) for shard in shards):
        tensor, shard = next((t, s) for t, s in weight_map.items() if not (isinstance(s, str) and is_safe_filename(s)))
        raise ConfigError(f"{index_file}: tensor {tensor!r} maps to an unsafe file name {shard!r}")
    return tuple(sorted(shards))


def is_safe_filename(name: str) -> bool:
    """A plain file name inside the repo: no directory part, no `..`, nothing absolute."""
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
        and not name.startswith(".")
        and ":" not in name
    )


@dataclass(frozen=True)
class Checkpoint:
    """What was read about one model. Sizes in bytes; `files` maps each listed file to its size."""

    name: str
    files: Mapping[str, int | None]
    json_files: Mapping[str, Any]
    headers: Mapping[str, Header]
    plan: WeightPlan
    repo_id: str | None = None
    revision: str | None = None
    sha: str | None = None
    local_path: str | None = None
    warnings: tuple[str, ...] = field(default=())
    #: A GGUF model's headers, by file (the chosen file's parts; see `gguf_plan`).
    gguf: Mapping[str, GGUFHeader] = field(default_factory=dict)

    def gguf_model(self) -> GGUFModel:
        """The chosen GGUF file's parts as one model."""
        from .gguf import merge_parts

        if self.plan.format != "gguf" or not self.plan.files:
            raise UsageError(f"{self.name}: no GGUF file was read")
        missing = [p for p in self.plan.files if p not in self.gguf]
        if missing:
            raise EntryNotFound(f"{self.name}: the header of {missing[0]} was not read")
        return merge_parts(self.plan.files[0], {p: self.gguf[p] for p in self.plan.files}, self.files)

    @property
    def config(self) -> dict[str, Any]:
        config = self.json_files.get("config.json")
        return config if isinstance(config, dict) else {}

    @property
    def quantization_config(self) -> dict[str, Any] | None:
        return quantization_config(self.json_files)

    @property
    def index(self) -> dict[str, Any] | None:
        index = self.json_files.get(self.plan.index_file) if self.plan.index_file else None
        return index if isinstance(index, dict) else None

    @cached_property
    def weight_files(self) -> tuple[str, ...]:
        # Cached: an index of 92,000 tensors is checked once, not at every use.
        if self.plan.files:
            return self.plan.files
        return shards_from_index(self.index, self.plan.index_file or "index")



@dataclass(frozen=True)
class ReadResult:
    """What a reader returns: the Checkpoint, and apart from it what was counted on the way, which
    `params.count_parameters` uses rather than counting again: a digest's counts (a warm run
    parses no header), or each weight file's tally, made as its header arrived."""

    checkpoint: Checkpoint
    counts: ParameterCount | None = None
    tallies: Mapping[str, FileTally] | None = None

def quantization_config(json_files: Mapping[str, Any]) -> dict[str, Any] | None:
    """`quantization_config` from config.json, else a separate quantize_config.json."""
    config = json_files.get("config.json")
    q = config.get("quantization_config") if isinstance(config, dict) else None
    if isinstance(q, dict):
        return q
    for name in METADATA_FILES[1:]:
        q = json_files.get(name)
        if isinstance(q, dict):
            return q
    return None


def load_config_json(text: str | bytes, name: str) -> Any:
    """Parse one of a model's JSON files; ConfigError on anything that is not a JSON object."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ConfigError(f"{name} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} is not a JSON object")
    return value


# --- snapshots -------------------------------------------------------------------------------


def to_snapshot(cp: Checkpoint) -> dict[str, Any]:
    """The snapshot JSON of a checkpoint (format `hfmem-snapshot/1`, or /2 with GGUF headers;
    documented in the README)."""
    out = {**_snapshot_base(cp), "headers": {name: _header_entry(h) for name, h in cp.headers.items()}}
    if cp.gguf:
        from .gguf import header_to_dict

        out["gguf"] = {name: header_to_dict(h) for name, h in cp.gguf.items()}
    return out


def _snapshot_base(cp: Checkpoint) -> dict[str, Any]:
    return {
        "format": SNAPSHOT_FORMAT_GGUF if cp.gguf else SNAPSHOT_FORMAT,
        "source": {"repo_id": cp.repo_id, "revision": cp.revision, "path": cp.local_path},
        "sha": cp.sha,
        "files": dict(cp.files),
        "json": dict(cp.json_files),
    }


def _header_entry(h: Header) -> dict[str, Any]:
    return {"header_size": h.header_bytes, "header": h.to_dict()}


def save_snapshot(cp: Checkpoint, path: str | os.PathLike[str], *, mode: int = 0o644) -> None:
    """Write a snapshot file (atomically: a reader never sees half a file). Only a regular file is
    replaced, or a new one made; anything else, or a disk that refuses the file, is a UsageError
    and leaves nothing behind."""
    target = Path(path)
    check_snapshot_target(target)
    try:
        with SnapshotWriter(target, repo_id=cp.repo_id, revision=cp.revision, sha=cp.sha,
                            local_path=cp.local_path, mode=mode, gguf=bool(cp.gguf)) as writer:
            for name, h in cp.headers.items():
                writer.add(name, h)
            writer.commit(cp.files, cp.json_files, gguf=cp.gguf)
    except OSError as e:
        raise UsageError(f"cannot write the snapshot {target}: {e.strerror or e}") from None


def check_snapshot_target(target: Path) -> None:
    """UsageError unless `target` is a regular file or a new name in an existing folder: a rename
    over a symlink, a device, a FIFO or a folder would replace what the user did not mean to give."""
    import stat

    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        if not target.parent.is_dir():
            raise UsageError(f"cannot write the snapshot {target}: the folder {target.parent} does not exist") from None
        return
    except OSError as e:
        raise UsageError(f"cannot write the snapshot {target}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
                else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket")
        raise UsageError(f"cannot write the snapshot {target}: it is {kind}; give a regular file or a new path")


class SnapshotWriter:
    """Writes a snapshot as compact JSON, one header at a time, so a 92,000-tensor model is never
    held twice over as dicts and text. The Hub reader adds each header as its read completes; a
    header read from a file is written as the file holds it, not encoded again. The JSON files and
    the file list come last (a JSON object's keys have no order). The file appears, atomically, only
    when `commit` is called; `abort` (or leaving the `with` without a commit) leaves nothing. A name
    ending in .gz gets a gzip file: a 160-shard model's headers shrink about tenfold."""

    def __init__(self, path: Path, *, repo_id: str | None, revision: str | None, sha: str | None,
                 local_path: str | None = None, mode: int = 0o600, gguf: bool = False) -> None:
        from .env import temp_path

        self.path = path
        self._tmp = temp_path(path)  # in the same folder: the rename never crosses file systems
        self._raw = open(os.open(self._tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode), "wb")
        self._file: Any = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0) if path.suffix == ".gz" else self._raw
        self._lock = threading.Lock()
        self._count = 0
        self.failed = False  # a write failed (the cache's disk is full): the snapshot is abandoned
        self.error: OSError | None = None  # what failed first, for the run's warning
        self.committed = False
        head = {"format": SNAPSHOT_FORMAT_GGUF if gguf else SNAPSHOT_FORMAT,
                "source": {"repo_id": repo_id, "revision": revision, "path": local_path}, "sha": sha}
        self._write(json.dumps(head, separators=(",", ":"))[:-1].encode() + b',"headers":{')

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.abort()

    def _write(self, data: bytes) -> None:
        if self.failed:
            raise OSError(f"{self._tmp}: the snapshot was abandoned")
        try:
            self._file.write(data)
        except BaseException as e:
            self._failed(e)
            raise

    def add(self, name: str, header: Header) -> None:
        """Write one header (thread-safe)."""
        entry = header.raw if header.raw is not None else json.dumps(header.to_dict(), separators=(",", ":")).encode()
        self.add_text(name, header.header_bytes, entry)

    def add_text(self, name: str, header_bytes: int, entry: bytes) -> None:
        """Write one header given as its JSON text (validated by the caller; thread-safe)."""
        with self._lock:
            comma = b"," if self._count else b""
            self._count += 1
            self._write(comma + json.dumps(name).encode() + b':{"header_size":%d,"header":' % header_bytes
                        + entry + b"}")

    def commit(self, files: Mapping[str, int | None], json_files: Mapping[str, Any],
               json_text: Mapping[str, bytes] | None = None, gguf: Mapping[str, GGUFHeader] | None = None) -> None:
        """The file list and the JSON files (each as read when `json_text` has it and that text can
        stand in a JSON document as it is: a UTF-8 object), then the file is put in place."""
        parts = []
        for name, value in json_files.items():
            text = (json_text or {}).get(name)
            if text is None or text[:1] != b"{" or b"\x00" in text[:4]:
                text = json.dumps(value, separators=(",", ":")).encode()
            parts.append(json.dumps(name).encode() + b":" + text)
        if gguf:
            from .gguf import header_to_dict

            self._write(b'},"gguf":' + json.dumps({n: header_to_dict(h) for n, h in gguf.items()},
                                                  separators=(",", ":")).encode()[:-1])
        self._write(b'},"files":' + json.dumps(dict(files), separators=(",", ":")).encode()
                    + b',"json":{' + b",".join(parts) + b"}}\n")
        try:
            self._close()
            os.replace(self._tmp, self.path)
            self.committed = True
        except BaseException as e:
            self._failed(e)
            raise

    def _failed(self, e: BaseException) -> None:
        if isinstance(e, OSError) and self.error is None:
            self.error = e
        self.abort()

    def _close(self) -> None:
        try:
            self._file.close()  # (a GzipFile writes its trailer here)
        finally:
            self._raw.close()

    def abort(self) -> None:
        self.failed = True
        try:
            self._close()
        except OSError:
            pass  # a full disk refusing the last buffered bytes: the file is removed anyway
        finally:
            try:
                self._tmp.unlink(missing_ok=True)
            except OSError:
                pass  # (a read-only disk where it was made): `cache prune` removes it later


def load_snapshot(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a snapshot file back into a Checkpoint, validating every header again."""
    from .files import read_regular

    path = Path(path)
    try:
        data = read_regular(path, MAX_SNAPSHOT_BYTES, "a snapshot")
        if data[:2] == b"\x1f\x8b":
            data = _gunzip(data, path)
        raw = json.loads(data)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    except (ValueError, RecursionError, EOFError):
        raise ConfigError(f"{path}: not a valid JSON file") from None
    if not isinstance(raw, dict) or raw.get("format") not in (SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_GGUF):
        raise ConfigError(f"{path}: not an hfmem snapshot (expected \"format\": \"{SNAPSHOT_FORMAT}\")")
    return checkpoint_from_snapshot(raw, name=str(path), local_path=str(path))


#: The largest snapshot read, as stored and decompressed alike (our policy: DeepSeek-V3's, 92,000
#: tensors, is 18 MB; a thousand-shard model's a few times that). A gzip bomb stops here.
MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024


def _gunzip(data: bytes, path: Path) -> bytes:
    """The decompressed bytes, never more than MAX_SNAPSHOT_BYTES of them (read in one bounded call)."""
    import io

    with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
        out = f.read(MAX_SNAPSHOT_BYTES + 1)
    if len(out) > MAX_SNAPSHOT_BYTES:
        raise ConfigError(f"{path}: decompresses to more than {MAX_SNAPSHOT_BYTES:,} bytes, hfmem's limit "
                          "for a snapshot; refused")
    return out


def checkpoint_from_snapshot(raw: Mapping[str, Any], *, name: str, local_path: str | None) -> Checkpoint:
    try:
        source = raw.get("source") or {}
        if any(v is not None and not isinstance(v, str)
               for v in (source.get("repo_id"), source.get("revision"), raw.get("sha"))):
            raise TypeError("source.repo_id, source.revision and sha must be strings or null")
        files = {str(k): (int(v) if v is not None else None) for k, v in raw["files"].items()}
        json_files = dict(raw["json"])
        raw_headers = raw["headers"]
        headers = {
            fname: header_from_dict(
                entry["header"], header_bytes=int(entry["header_size"]), file_bytes=files.get(fname)
            )
            for fname, entry in raw_headers.items()
        }
        gguf = _gguf_entries(raw.get("gguf"), name) if raw.get("format") == SNAPSHOT_FORMAT_GGUF else {}
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:  # int(Infinity): Overflow
        raise ConfigError(f"{name}: malformed snapshot ({type(e).__name__}: {e})") from None
    plan = plan_weights(files)
    if gguf:  # the file whose headers were read is the one chosen
        plan = WeightPlan("gguf", None, tuple(gguf))
    cp = Checkpoint(
        name=source.get("repo_id") or name,
        gguf=gguf,
        files=files,
        json_files=json_files,
        headers=headers,
        plan=plan,
        repo_id=source.get("repo_id"),
        revision=source.get("revision"),
        sha=raw.get("sha"),
        local_path=local_path,
    )
    if plan.format == "safetensors":
        missing = [f for f in cp.weight_files if f not in headers]
        if missing:
            raise EntryNotFound(f"{name}: snapshot lacks the header of {missing[0]}")
    return cp


def _gguf_entries(entries: Any, name: str) -> dict[str, GGUFHeader]:
    from .gguf import header_from_dict

    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{name}: a GGUF snapshot without its GGUF headers")
    return {str(f): header_from_dict(e, f"{name}: {f}") for f, e in entries.items()}
