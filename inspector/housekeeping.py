"""`hfmem cache info|clear|prune`: what hfmem's cache folder holds, and deleting from it.

Only hfmem's own names are ever deleted, and never through a symlink (one is removed as a link):
HFMEM_CACHE_DIR may name a folder by mistake (`~/.cache`), which is then refused whole (issue 16).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from .cache import build_sessions, close_sessions, import_requests_cache, remove_database
from .env import CACHEDIR_TAG, cache_dir

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
