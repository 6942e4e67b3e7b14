"""hfmem's own files: where a branch pointed (refs), the snapshots of commits read before and their
digests, the HF cache looked in offline, and `hfmem cache info|clear|prune`. Refs and snapshots
are kept per endpoint (scheme and host): a mirror's answer never stands for another's.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .cache import build_sessions, close_sessions, import_requests_cache, remove_database
from .checkpoint import Checkpoint
from .env import CACHEDIR_TAG, cache_dir, private_dir, private_file, temp_path
from .errors import HfmemError, NotFoundError
from .source import Source

if TYPE_CHECKING:
    from .checkpoint import SnapshotWriter
    from .params import ParameterCount

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
        from .local import read_regular

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


#: What hfmem writes at the top of its cache folder, and nothing else.
_TOP_NAMES = frozenset({"http.sqlite", "http.sqlite-wal", "http.sqlite-shm", "http.sqlite-journal",
                        CACHEDIR_TAG, "snapshots", "refs"})


#: snapshots/<endpoint>/models--org--name/: a commit's snapshot and digest (snapshots/models--org--name/
#: before they were kept per endpoint: such a cache still clears).
_SNAPSHOT_FILE = re.compile(r"^[0-9a-f]{40}\.(?:digest\.)?json$")


#: refs/<host>/models--org--name/<revision>: a quoted revision (urllib's `quote(..., safe="")`).
_REF_FILE = re.compile(r"^[A-Za-z0-9_.~%-]+$")


#: `temp_path`'s names, and the digest's of hfmem 0.1 (`.digest-XXXXXXXX`, tempfile's).
_TEMP_FILE = re.compile(r"^(?:.+\.(?P<pid>\d+)\.\d+\.tmp|\.digest-[A-Za-z0-9_]{8})$")


#: A temporary file older than this is a leftover even if a process of its pid is alive (the pid
#: may be another's by now). Our policy: a write takes seconds, the longest run minutes.
TEMP_MAX_AGE_S = 24 * 3600


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _walk(folder: Path) -> Iterator[tuple[os.DirEntry[str], int]]:
    """(entry, depth below `folder`) for every entry, never entering a symlink (no loop can trap it)."""
    todo = [(folder, 1)]
    while todo:
        here, depth = todo.pop()
        for entry in _entries(here):
            yield entry, depth
            if entry.is_dir(follow_symlinks=False):
                todo.append((Path(entry.path), depth + 1))


def _size(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_size if not entry.is_dir(follow_symlinks=False) else 0
    except OSError:
        return 0


def _bytes(root: Path) -> int:
    return sum(_size(e) for e, _ in _walk(root))


def _is_leftover(entry: os.DirEntry[str], now: float) -> bool:
    """A temporary file of hfmem's whose writer is gone: its process has ended, or it is old."""
    m = _TEMP_FILE.match(entry.name)
    if m is None:
        return False
    try:
        if now - entry.stat(follow_symlinks=False).st_mtime > TEMP_MAX_AGE_S:
            return True
    except OSError:
        return False
    pid = m["pid"]
    if pid is None or os.name == "nt":  # (os.kill on Windows ends the process: age alone decides there)
        return pid is None
    try:
        os.kill(int(pid), 0)  # signal 0: is there such a process (on this machine)?
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False  # alive (another user's), or not a pid at all
    return False


def _ours(entry: os.DirEntry[str], top: str, depth: int, now: float) -> bool:
    """Whether a file (or link) below the cache's `top` folder is one hfmem wrote and may delete."""
    if _TEMP_FILE.match(entry.name):
        return _is_leftover(entry, now)
    if top == "snapshots":
        return depth in (2, 3) and bool(_SNAPSHOT_FILE.match(entry.name))
    return top == "refs" and bool(_REF_FILE.match(entry.name))


def _check_ours(root: Path) -> bool:
    """Whether `root` is there; UsageError when it is not a folder that hfmem's cache could be."""
    from .errors import UsageError

    try:
        mode = root.stat().st_mode
    except FileNotFoundError:
        return False
    except OSError as e:
        raise UsageError(f"cannot read the cache folder {root}: {e.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise UsageError(f"{root} (HFMEM_CACHE_DIR) is not a folder; nothing deleted")
    foreign = sorted(e.name for e in _entries(root) if e.name not in _TOP_NAMES)
    if foreign:
        raise UsageError(f"{root} does not look like hfmem's cache: it holds {foreign[0]!r}, which hfmem "
                         "never creates; nothing deleted (check HFMEM_CACHE_DIR)")
    return True


def _unlink(path: Path | str) -> None:
    try:
        os.unlink(path)  # a symlink itself, never what it points at
    except FileNotFoundError:
        pass


def _remove_ours(root: Path, keep: Callable[[os.DirEntry[str], str], bool]) -> None:
    """Delete hfmem's files below snapshots/ and refs/ (those `keep` spares aside), then the folders
    left empty; anything else stays where it is."""
    import time

    now = time.time()
    for top in ("snapshots", "refs"):
        entry = next((e for e in _entries(root) if e.name == top), None)
        if entry is None:
            continue
        if not entry.is_dir(follow_symlinks=False):
            _unlink(entry.path)  # a link or file where hfmem keeps a folder
            continue
        folders = []
        for e, depth in _walk(Path(entry.path)):
            if e.is_dir(follow_symlinks=False):
                folders.append(e.path)
            elif _ours(e, top, depth, now) and not keep(e, top):
                _unlink(e.path)
        for folder in [*sorted(folders, key=len, reverse=True), entry.path]:  # the deepest first
            try:
                os.rmdir(folder)
            except OSError:
                pass  # not empty: something hfmem did not write, or spared


def cache_info() -> dict[str, object]:
    """What the cache holds: its folder, total bytes, HTTP responses, snapshots and branch refs."""
    root = cache_dir()
    snapshots = [e for e, depth in _walk(root / "snapshots")
                 if depth in (2, 3) and e.name.endswith(".json") and not e.name.endswith(".digest.json")]
    info: dict[str, object] = {
        "path": str(root),
        "bytes": _bytes(root),
        "snapshots": len(snapshots),
        "refs": len([e for e, _ in _walk(root / "refs") if not e.is_dir(follow_symlinks=False)]),
        "http_responses": 0,
    }
    db = root / "http.sqlite"
    if db.is_file():
        import sqlite3

        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                (info["http_responses"],) = conn.execute("SELECT COUNT(*) FROM responses").fetchone()
        except sqlite3.Error:
            info["http_responses"] = None  # not created yet, or damaged: `cache clear` rebuilds it
    return info


def clear_cache() -> int:
    """Delete everything hfmem cached, by name; returns the bytes freed. The folder itself goes only
    when nothing else is left in it; the HF cache is never touched. UsageError, with nothing
    deleted, for a folder holding what hfmem never writes."""
    root = cache_dir()
    if not _check_ours(root):
        return 0
    close_sessions(root)
    before = _bytes(root)
    _remove_ours(root, lambda e, top: False)
    remove_database(root / "http.sqlite")
    _unlink(root / "http.sqlite-journal")
    _unlink(root / CACHEDIR_TAG)
    try:
        os.rmdir(root)
    except OSError:
        pass  # a writer's temporary file still there (its process is alive)
    return max(0, before - _bytes(root))


def prune_cache(older_than_days: float) -> int:
    """Drop expired HTTP responses, snapshots not used for `older_than_days` and leftover temporary
    files; returns bytes freed. UsageError as for `clear_cache`."""
    import sqlite3
    import time

    root = cache_dir()
    if not _check_ours(root):
        return 0
    before = _bytes(root)
    cutoff = time.time() - older_than_days * 86400

    def keep(e: os.DirEntry[str], top: str) -> bool:
        if _TEMP_FILE.match(e.name):
            return False  # a leftover (`_ours` spares a live writer's)
        if top == "refs":
            return True
        # A digest goes with its snapshot, whose time says when a warm run last used either.
        snapshot = Path(e.path[: -len(".digest.json")] + ".json") if e.name.endswith(".digest.json") else Path(e.path)
        try:
            st = snapshot.stat(follow_symlinks=False)
        except OSError:
            return False
        return max(st.st_atime, st.st_mtime) >= cutoff

    _remove_ours(root, keep)
    if (root / "http.sqlite").is_file():
        try:
            if os.environ.get("HFMEM_REDIS_URL", "").strip():
                # Redis expires a branch's answer by itself (its TTL); what is pruned here is the
                # SQLite database of runs made without Redis, never the fleet's shared cache.
                local = import_requests_cache().SQLiteCache(str(root / "http.sqlite"), wal=True)
                try:
                    local.delete(expired=True)
                finally:
                    local.close()
            else:
                for s in build_sessions():  # shared with this process's reads: left open
                    if hasattr(s, "cache"):
                        s.cache.delete(expired=True)
        except (OSError, sqlite3.Error):
            pass  # a locked, full or read-only database: its expired answers wait for the next prune
    return max(0, before - _bytes(root))





def load_saved(repo_id: str, sha: str, revision: str, warnings: list[str] | None = None) -> Checkpoint | None:
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
    cp = load_digest(path, lambda: load_snapshot(path))
    if cp is None:
        try:
            cp = load_snapshot(path)
        except HfmemError:
            if warnings is not None:
                warnings.append(f"the cached snapshot of {repo_id}@{sha[:12]} was damaged; reading it again")
            for damaged in (path, digest_path(path)):
                damaged.unlink(missing_ok=True)
            return None
    if cp.repo_id != repo_id:
        return None
    return replace(cp, name=repo_id, revision=revision, local_path=None)


def save_counts(cp: Checkpoint, params: ParameterCount) -> None:
    """Keep a digest of the counts beside the commit's saved snapshot, for the next warm run."""
    from .digest import save_digest

    # Only counts read from the Hub itself: a folder of the HF cache (offline) may hold a partial
    # download of the same commit, whose counts must never stand for the commit's.
    if cp.counted is None and cp.local_path is None and cp.repo_id and cp.sha:
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


def with_warnings(cp: Checkpoint, warnings: list[str]) -> Checkpoint:
    return replace(cp, warnings=(*cp.warnings, *warnings)) if warnings else cp


def from_hf_cache(repo_id: str, revision: str) -> Checkpoint | None:
    """A model already in huggingface_hub's cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`)."""
    from pathlib import Path

    from .local import read_local, read_regular
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
