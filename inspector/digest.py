"""A per-commit digest: what a warm run needs, without parsing a model's headers again.

The saved snapshot of a commit (`snapshots/models--org--name/<sha>.json`) holds every header; for
DeepSeek-V3 that is 18 MB and 92,000 tensors, about a second to parse, validate and count. Beside it,
`<sha>.digest.json` keeps the counts (a ParameterCount), the file list, and the small JSON files;
the index and the headers stay in the snapshot and are read only if something asks for them
(`--save-snapshot`). A digest written by another hfmem version is ignored, so a change in how
parameters are counted never serves an old answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint, ReadResult, WeightPlan
from .params import FileCount, ParameterCount, WeightInventory

DIGEST_FORMAT = "hfmem-digest/1"
#: Bump with any change to how parameters are counted: a digest of another value is not used.
COUNTING_VERSION = 2  # 2: WeightInventory.tied_head_params/bytes
#: The largest digest read (our policy: it holds the small JSON files and the file list, tens of KB;
#: a larger one is not ours, and the snapshot beside it is read instead).
MAX_DIGEST_BYTES = 16 * 1024 * 1024


class Deferred(Mapping[str, Any]):
    """A mapping whose `eager` part is at hand and whose other keys come from `load()` on first use."""

    def __init__(self, eager: Mapping[str, Any], keys: tuple[str, ...], load: Callable[[], Mapping[str, Any]]):
        self._eager = dict(eager)
        self._keys = tuple(dict.fromkeys((*self._eager, *keys)))
        self._load = load
        self._loaded: Mapping[str, Any] | None = None

    def __getitem__(self, key: str) -> Any:
        if key in self._eager:
            return self._eager[key]
        if key not in self._keys:
            raise KeyError(key)
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def digest_path(snapshot: Path) -> Path:
    return snapshot.with_name(snapshot.name.removesuffix(".json") + ".digest.json")


def save_digest(snapshot: Path, cp: Checkpoint, params: ParameterCount) -> None:
    """Write the digest beside a saved snapshot (mode 0600, atomically); a failure only costs speed."""
    from .version import __version__

    index = cp.plan.index_file
    record = {
        "format": DIGEST_FORMAT,
        "hfmem": __version__,
        "counting": COUNTING_VERSION,
        "snapshot_bytes": snapshot.stat().st_size if snapshot.is_file() else None,
        "repo_id": cp.repo_id,
        "sha": cp.sha,
        "files": dict(cp.files),
        "plan": asdict(cp.plan),
        "json": {k: v for k, v in cp.json_files.items() if k != index},
        "json_deferred": [index] if index and index in cp.json_files else [],
        "headers": list(cp.headers),
        "parameters": asdict(params),
    }
    from .env import temp_path

    path = digest_path(snapshot)
    tmp = temp_path(path)  # (a name `cache prune` knows, should this process die before the rename)
    try:
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with open(fd, "w") as f:
                json.dump(record, f, separators=(",", ":"))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError:
        pass


def load_digest(snapshot: Path, load_full: Callable[[], Checkpoint]) -> ReadResult | None:
    """The Checkpoint of a digest, with its counts beside it, its headers deferred to `load_full`;
    None when there is no digest, or one that is damaged or from another hfmem version."""
    from .errors import HfmemError
    from .files import read_regular
    from .version import __version__

    try:
        try:
            raw = json.loads(read_regular(digest_path(snapshot), MAX_DIGEST_BYTES, "a digest"))
        except HfmemError:  # too large, or no regular file: not one hfmem wrote
            return None
        if (raw.get("format") != DIGEST_FORMAT or raw.get("hfmem") != __version__
                or raw.get("counting") != COUNTING_VERSION):
            return None
        if raw.get("snapshot_bytes") != snapshot.stat().st_size:
            return None  # the snapshot beside it changed or was damaged: read that instead
        os.utime(snapshot)  # in use: `cache prune` goes by the snapshot's time
        p = raw["parameters"]
        weights = p.get("weights")
        params = ParameterCount(**{
            **p,
            "files": tuple(FileCount(**f) for f in p["files"]),
            "weights": WeightInventory(**weights) if weights else None,
        })
        plan = raw["plan"]
        full: list[Checkpoint] = []

        def once() -> Checkpoint:
            if not full:
                full.append(load_full())
            return full[0]

        return ReadResult(Checkpoint(
            name=raw["repo_id"],
            files={str(k): v for k, v in raw["files"].items()},
            json_files=Deferred(raw["json"], tuple(raw["json_deferred"]), lambda: once().json_files),
            headers=Deferred({}, tuple(raw["headers"]), lambda: once().headers),
            plan=WeightPlan(plan["format"], plan["index_file"], tuple(plan["files"])),
            repo_id=raw["repo_id"],
            sha=raw["sha"],
        ), counts=params)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
