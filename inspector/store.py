"""hfmem's own files: where a branch pointed (refs), the snapshots of commits read before and their
digests, and the HF cache looked in offline (`housekeeping` lists and deletes them). Refs and
snapshots are kept per endpoint (scheme and host): a mirror's answer never stands for another's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint import Checkpoint, ReadResult
from .env import cache_dir, private_dir, private_file, temp_path
from .errors import HfmemError, NotFoundError
from .header import PREFIX_BYTES, LazyHeaders
from .source import Source

if TYPE_CHECKING:
    from .checkpoint import SnapshotWriter
    from .params import ParameterCount
    from .workers import Parsed

SHA_RE = re.compile(r"^[0-9a-f]{40}$")

def repo_folder(repo_id: str) -> str:
    """huggingface_hub's folder name for a model repo: `models--{org}--{name}`."""
    return "models--" + repo_id.replace("/", "--")


def is_folder_name(repo_id: str) -> bool:
    """Whether `repo_folder(repo_id)` is one plain folder name, so that the cache may be looked in
    for a repo id not validated yet: no separator, `..`, NUL or drive colon in either part.

    >>> is_folder_name("Qwen/Qwen1.5-110B"), is_folder_name("org/.."), is_folder_name("a/b/c")
    (True, False, False)
    """
    from .checkpoint import is_safe_filename

    parts = repo_id.split("/")
    return len(parts) <= 2 and all(is_safe_filename(p) for p in parts)


def save_ref(repo_id: str, revision: str, sha: str) -> None:
    """Remember which commit a branch or tag resolved to (read back offline); an unwritable cache
    only costs that."""
    try:
        path = ref_path(repo_id, revision)
        private_dir(path.parent)
        tmp = temp_path(path)
        try:
            private_file(tmp)
            tmp.write_text(sha)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # (gone already once renamed)
    except OSError:
        pass


def load_ref(repo_id: str, revision: str, *, max_age_s: float | None = None) -> str | None:
    """The commit a branch or tag last resolved to; with `max_age_s`, only if resolved that recently."""
    import time

    path = ref_path(repo_id, revision)
    try:
        age = time.time() - path.stat().st_mtime
        if max_age_s is not None and not 0 <= age <= max_age_s:  # a future mtime is not fresh either
            return None
        from .files import read_regular

        sha = read_regular(path, 256, "ref").decode("ascii", "replace").strip()  # (a sha is 40 bytes)
    except (OSError, HfmemError):
        return None
    return sha if SHA_RE.match(sha) else None


def ref_path(repo_id: str, revision: str) -> Path:
    """refs/<endpoint>/models--org--name/<revision>: where a branch points depends on which Hub or
    mirror answered (HF_ENDPOINT), so each keeps its own."""
    from urllib.parse import quote

    return cache_dir() / "refs" / _endpoint_folder() / repo_folder(repo_id) / (quote(revision, safe="") or "main")


def snapshot_path(repo_id: str, sha: str) -> Path:
    """snapshots/<endpoint>/models--org--name/<sha>.json: a commit's snapshot as one endpoint
    served it. A mirror can answer anything for a sha (a stale copy, a hostile one): its answer is
    never served for another endpoint (issue 16)."""
    return cache_dir() / "snapshots" / _endpoint_folder() / repo_folder(repo_id) / f"{sha}.json"


def _endpoint_folder() -> str:
    """The endpoint's host[:port], one quoted folder name (no user:password: `env.endpoint` drops
    it). An http:// endpoint is apart from an https:// one on the same host (`http+host`): the two
    are different servers as far as hfmem can tell."""
    from urllib.parse import quote, urlsplit

    from .env import endpoint

    parts = urlsplit(endpoint())
    host = parts.netloc or "default"
    return quote(host if parts.scheme != "http" else f"http+{host}", safe="+")


def load_saved(repo_id: str, sha: str, revision: str, warnings: list[str] | None = None) -> ReadResult | None:
    """The saved snapshot of a commit: its digest (counts, no headers) when there is one. A damaged
    snapshot is deleted (and `warnings` told), so that the Hub's answer replaces it. Only one saved
    for this very repo id answers: `repo_id` may not be validated yet (read_hub), and another id can
    name the same file (`a--b` and `a/b`; `a/b.` on Windows, which drops trailing dots)."""
    from .checkpoint import load_snapshot
    from .digest import digest_path, load_digest

    path = snapshot_path(repo_id, sha)
    try:
        if not path.is_file():
            return None
    except OSError:  # a name too long for the file system: no snapshot of it, and the id is checked next
        return None
    read = load_digest(path, lambda: load_snapshot(path))
    if read is None:
        try:
            read = ReadResult(load_snapshot(path))
        except HfmemError:
            if warnings is not None:
                warnings.append(f"the cached snapshot of {repo_id}@{sha[:12]} was damaged; reading it again")
            for damaged in (path, digest_path(path)):
                damaged.unlink(missing_ok=True)
            return None
    if read.checkpoint.repo_id != repo_id:
        return None
    return replace(read, checkpoint=replace(read.checkpoint, name=repo_id, revision=revision, local_path=None))


def save_counts(cp: Checkpoint, params: ParameterCount) -> None:
    """Keep a digest of the counts beside the commit's saved snapshot, for the next warm run (the
    caller's counts made from the headers, not read from a digest)."""
    from .digest import save_digest

    # Only counts read from the Hub itself: a folder of the HF cache (offline) may hold a partial
    # download of the same commit, whose counts must never stand for the commit's.
    if cp.local_path is None and cp.repo_id and cp.sha:
        path = snapshot_path(cp.repo_id, cp.sha)
        if path.is_file():
            save_digest(path, cp, params)


def snapshot_writer(repo_id: str, revision: str, sha: str,
                     warnings: list[str]) -> AbstractContextManager[SnapshotWriter | None]:
    """The writer of a commit's snapshot in the cache, or None (and a warning) where the cache
    cannot be written."""
    from .cache import disk_warning
    from .checkpoint import SnapshotWriter

    path = snapshot_path(repo_id, sha)
    try:
        private_dir(path.parent)
        return SnapshotWriter(path, repo_id=repo_id, revision=revision, sha=sha)
    except OSError as e:
        warnings.append(disk_warning(e))
        return nullcontext()


def commit_snapshot(cp: Checkpoint, snapshot: SnapshotWriter | None, json_text: Mapping[str, bytes]) -> Checkpoint:
    """Put the commit's snapshot in place; a disk that refused it (now or mid-run: full, read-only)
    only costs the next run's speed, and is said in one warning."""
    from .cache import disk_warning

    if snapshot is None:
        return cp
    if not snapshot.failed:
        try:
            snapshot.commit(cp.files, cp.json_files, json_text)
        except OSError:
            pass  # (recorded as snapshot.error)
    return with_warnings(cp, [disk_warning(snapshot.error)]) if snapshot.error is not None else cp


def save_gguf(cp: Checkpoint, warnings: list[str]) -> Checkpoint:
    """Save a GGUF commit's snapshot: the file list and the headers read, with those a snapshot
    saved before holds (each run may read another quantization). A repo that also has safetensors
    weights keeps its safetensors snapshot. A disk that refuses costs the next run's speed."""
    from .cache import disk_warning
    from .checkpoint import WeightPlan, load_snapshot, plan_weights, save_snapshot

    if not (cp.repo_id and cp.sha) or plan_weights(cp.files).format != "gguf":
        return cp
    path = snapshot_path(cp.repo_id, cp.sha)
    headers = dict(cp.gguf)
    try:
        if path.is_file():
            before = load_snapshot(path)
            headers = {**before.gguf, **headers}
    except (OSError, HfmemError):
        pass  # a damaged or unreadable one is replaced
    whole = replace(cp, gguf=headers, plan=WeightPlan("gguf", None, tuple(headers)), name=cp.repo_id,
                    revision=cp.revision, warnings=())
    try:
        private_dir(path.parent)
        save_snapshot(whole, path, mode=0o600)
    except (OSError, HfmemError) as e:
        return with_warnings(cp, [disk_warning(e if isinstance(e, OSError) else OSError(str(e)))])
    return cp


def with_warnings(cp: Checkpoint, warnings: list[str]) -> Checkpoint:
    return replace(cp, warnings=(*cp.warnings, *warnings)) if warnings else cp


def from_hf_cache(repo_id: str, revision: str) -> Checkpoint | None:
    """A model already in huggingface_hub's cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`)."""
    from pathlib import Path

    from .files import read_regular
    from .local import read_local
    from .source import SourceKind

    hub_cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "hub"
    )
    repo_dir = Path(hub_cache) / repo_folder(repo_id)
    sha = revision if SHA_RE.match(revision) else None
    if sha is None:
        try:  # a regular file of at most a line (a FIFO there would block a plain read forever)
            sha = read_regular(repo_dir / "refs" / revision, 256, "ref").decode("ascii").strip()
        except (OSError, HfmemError, UnicodeDecodeError):
            return None
        if not SHA_RE.match(sha):  # never a path: the ref file's text becomes a folder name
            return None
    folder = repo_dir / "snapshots" / sha
    if not folder.is_dir():
        return None
    try:
        cp = read_local(Source(SourceKind.LOCAL_DIR, repo_id=repo_id, revision=sha, path=folder))
    except NotFoundError:
        return None
    return replace(cp, revision=revision, warnings=(*cp.warnings, f"offline: read from the HF cache at {folder}"))


def keep_header(headers: LazyHeaders, snapshot: SnapshotWriter | None, name: str, parsed: Parsed,
         data: bytes = b"") -> None:
    """Keep a parsed shard's header: written to the snapshot being saved (as the file holds it; an
    unwritable cache only costs speed), and in `headers`, as the Header when it was parsed here, else
    as its bytes (`data`, parsed here again only if asked for)."""
    h = parsed.header
    if snapshot is not None and not snapshot.failed:
        text = h.raw if h is not None and h.raw is not None else None
        if text is None and data:
            text = data[PREFIX_BYTES : PREFIX_BYTES + parsed.header_bytes]
        try:
            if text is not None:
                snapshot.add_text(name, parsed.header_bytes, text)
            elif h is not None:
                snapshot.add(name, h)
        except OSError:
            pass
    if h is not None:
        headers.add(name, replace(h, raw=None) if h.raw is not None else h)
    else:
        headers.add_bytes(name, data, parsed.file_bytes)
