"""The persistent HTTP cache (requests-cache) and the small stores beside it.

Settings, all explicit (see shared/STYLE.md habit 8):
- the key includes `Range` (`match_headers`), so two different reads of a file never collide;
- `Authorization` is never part of a key and never stored (requests-cache redacts it from the saved
  request); redirects are followed by hand in `hub`, so no redirect history carries it either;
- responses to URLs pinned to a commit sha, and CDN responses (content-addressed), never expire;
  a branch's resolution expires after BRANCH_TTL_S;
- the metadata session caches 200s (JSON files, API answers) that state a Content-Length of at
  most 1 MiB in SQLite (write-ahead log; a larger index is in the commit's snapshot), or of at most
  128 MiB in a shared Redis (HFMEM_REDIS_URL);
- header Range reads (206) are cached only in Redis, for the fleet; locally the commit's saved
  snapshot holds them. A 200 answering a Range (a server ignoring it) is never cached, so a
  multi-GB body is never read to its end;
- redirects are never cached (the Hub's point at expiring signed CDN URLs);
- refs (where a branch points), snapshots and digests are kept per endpoint (scheme and host);
- a damaged database is deleted and rebuilt, an unwritable directory means running uncached,
  each with a warning;
- the cache directory is 0700 and its files 0600: it may hold a gated model's metadata;
- every session's HTTPS connections share one SSL context per CA bundle (`tls_context`), read once.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

#: The largest metadata body read (config, index, API answers), and the largest cached: the biggest
#: index we know, a 1000-shard MoE's, is tens of MB; a server sending more is refused rather than
#: buffered. requests-cache reads a whole body to save it, so only answers that say how long they
#: are, and are no longer than this, are cached. (Our policy, not a Hub number.)
MAX_JSON_BYTES = 128 * 1024 * 1024

#: The largest JSON answer kept in the local SQLite cache. A larger one (a big model's index:
#: DeepSeek-V3's is 8.9 MB) is in the commit's snapshot already, and writing it to SQLite took
#: ~0.1 s on the read's critical path (the index sizes every header read). Our policy; a shared
#: Redis keeps answers up to MAX_JSON_BYTES, for the machines that have no snapshot.
LOCAL_JSON_BYTES = 1024 * 1024

#: How long a branch or tag's resolution to a commit is trusted before asking the Hub again.
BRANCH_TTL_S = 10 * 60
SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def cache_dir() -> Path:
    """`$HFMEM_CACHE_DIR`, else `$HF_HOME/hfmem`, else `~/.cache/huggingface/hfmem` (read at call time)."""
    explicit = os.environ.get("HFMEM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser() / "hfmem"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hfmem"


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    return path


def _private_file(path: Path) -> None:
    """Create the file 0600 before anything else opens it (SQLite's journal inherits the mode)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


# One pair of sessions per cache file and mode, shared by every read in the process: each
# requests-cache backend holds its own SQLite connections, and a pair per model read (check --models
# reads several at once) let their write transactions wait on one another up to SQLite's 5 s busy
# timeout.
_SESSIONS: dict[tuple[str, bool, str], tuple[requests.Session, requests.Session]] = {}
_BUILD_LOCK = threading.Lock()


def build_sessions(*, offline: bool = False, pool_size: int = 64,
                   warn: Callable[[str], None] | None = None) -> tuple[requests.Session, requests.Session]:
    """(metadata session, range session) sharing one SQLite cache at `cache_dir()/http.sqlite`.

    A damaged cache file is deleted and rebuilt; a cache dir that cannot be written gives sessions
    without a cache. Either way `warn` hears why, once per process."""
    import sqlite3

    key = (str(cache_dir()), offline, os.environ.get("HFMEM_REDIS_URL", ""))
    with _BUILD_LOCK:
        if key in _SESSIONS:
            return _SESSIONS[key]
        try:
            try:
                sessions = _build_sessions(offline=offline, pool_size=pool_size)
            except sqlite3.DatabaseError:
                # Busy (another process creating or writing the file) or unreadable for a moment:
                # look again before deciding anything.
                import time

                time.sleep(0.25)
                sessions = _build_sessions(offline=offline, pool_size=pool_size)
        except sqlite3.OperationalError as e:  # locked, read-only, I/O: not damage, never deleted
            sessions = _uncached(pool_size, warn, e)
        except sqlite3.DatabaseError:  # "file is not a database", malformed: damaged
            _remove_database(cache_dir() / "http.sqlite")
            (warn or _ignore)(f"the HTTP cache at {cache_dir() / 'http.sqlite'} was damaged; rebuilt it empty")
            try:
                sessions = _build_sessions(offline=offline, pool_size=pool_size)
            except (OSError, sqlite3.Error) as e:
                sessions = _uncached(pool_size, warn, e)
        except (OSError, sqlite3.Error) as e:
            sessions = _uncached(pool_size, warn, e)
        _SESSIONS[key] = sessions
        return sessions


def discard_damaged_cache() -> str:
    """Forget this process's sessions over the current cache file and delete it (found damaged
    while in use); the next run starts a new one. Returns the warning to show."""
    db = cache_dir() / "http.sqlite"
    with _BUILD_LOCK:
        for key in [k for k in _SESSIONS if k[0] == str(cache_dir())]:
            del _SESSIONS[key]
    _remove_database(db)
    return f"the HTTP cache at {db} was damaged; removed it (it is rebuilt on the next run)"


def _ignore(message: str) -> None:
    pass


def _remove_database(db: Path) -> None:
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _uncached(pool_size: int, warn: Callable[[str], None] | None, why: Exception) -> tuple[Any, Any]:
    """Plain sessions for a run whose cache cannot be written: slower, never wrong."""
    reason = getattr(why, "strerror", None) or str(why)
    (warn or _ignore)(f"cannot use the cache at {cache_dir()} ({reason}); running without it")
    return plain_session(pool_size), plain_session(pool_size)


def plain_session(pool_size: int) -> Any:
    """A requests session with no cache, configured as the cached ones are."""
    import requests

    session = requests.Session()
    _configure(session, pool_size)
    return session


class Watchdog:
    """Cuts the connections of responses still open at a deadline (--timeout): a server that
    trickles a body (a byte every few seconds) never trips a per-read timeout. One timer thread
    per deadline, however many responses it watches."""

    def __init__(self, at: float) -> None:
        self.at = at
        self._live: set[Callable[[], None]] = set()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._fired = False

    def watch(self, shutdown: Callable[[], None]) -> None:
        import time

        with self._lock:
            if not self._fired:
                self._live.add(shutdown)
                if self._timer is None:
                    self._timer = threading.Timer(max(0.0, self.at - time.monotonic()), self._fire)
                    self._timer.daemon = True
                    self._timer.start()
                return
        _quietly(shutdown)  # already past the deadline

    def release(self, shutdown: Callable[[], None]) -> None:
        with self._lock:
            self._live.discard(shutdown)

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            live, self._live = list(self._live), set()
        for shutdown in live:
            _quietly(shutdown)


#: Per thread: the Watchdog of the request being sent, and the responses it watches (hub sets it).
DEADLINE = threading.local()


_ADAPTERS: dict[int, Any] = {}
_ADAPTER_LOCK = threading.Lock()  # (not _BUILD_LOCK: sessions are configured while it is held)


def _shared_adapter(pool_size: int) -> Any:
    with _ADAPTER_LOCK:
        if pool_size not in _ADAPTERS:
            _ADAPTERS[pool_size] = _deadline_adapter(pool_size)
        return _ADAPTERS[pool_size]


def _deadline_adapter(pool_size: int) -> Any:
    from requests.adapters import HTTPAdapter

    class DeadlineAdapter(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            response = super().send(request, *args, **kwargs)
            watchdog = getattr(DEADLINE, "watchdog", None)
            shutdown = getattr(response.raw, "shutdown", None)  # urllib3 >= 2.3
            if watchdog is not None and shutdown is not None:
                watchdog.watch(shutdown)
                DEADLINE.watched.append(shutdown)
            return response

        # HTTPS pools share one SSL context per CA bundle (`tls_context`), in place of the bundle's
        # path, which urllib3 reads again for each new connection.
        def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
            host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
            if host_params.get("scheme") == "https" and verify is not False:
                pool_kwargs.pop("ca_certs", None)
                pool_kwargs.pop("ca_cert_dir", None)
                pool_kwargs["ssl_context"] = tls_context(verify)
            return host_params, pool_kwargs

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            super().cert_verify(conn, url, verify, cert)  # (checks the bundle exists; sets its path)
            # The shared context holds the bundle already; but an https:// proxy's own certificate
            # is checked against the pool's bundle path (urllib3 has no context of ours for it),
            # so such a pool keeps the path, and reads the bundle for each connection.
            proxy = getattr(conn, "proxy", None)
            if (verify is not False and getattr(conn, "conn_kw", {}).get("ssl_context") is not None
                    and getattr(proxy, "scheme", None) != "https"):
                conn.ca_certs = conn.ca_cert_dir = None

    # (room beside the header reads for the JSON files' threads and the revision call, our policy: a
    # connection returned to a full pool is closed, and the next request pays a new one's handshakes;
    # and pools for the Hub, its CDN hosts and a mirror at once, for every session of the process)
    return DeadlineAdapter(pool_connections=16, pool_maxsize=pool_size + 8)


_TLS_CONTEXTS: dict[Any, Any] = {}
_TLS_LOCK = threading.Lock()


def tls_context(verify: bool | str) -> Any:
    """The SSL context of every HTTPS connection that trusts `verify` (True: requests' default
    bundle, certifi's; else a bundle file or folder), its certificates read once per process.
    requests hands urllib3 the bundle's path, and urllib3 then reads and parses it for each new
    connection: certifi's 230 KB took 20-40 ms of CPU every time, 4-5 s of a 45-shard model's ~90
    connections (bench/RESULTS.md). Verification is unchanged: certificates and host names both."""
    with _TLS_LOCK:
        if verify not in _TLS_CONTEXTS:
            import ssl

            from requests.utils import DEFAULT_CA_BUNDLE_PATH
            from urllib3.util.ssl_ import create_urllib3_context

            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            where = DEFAULT_CA_BUNDLE_PATH if verify is True else str(verify)
            try:
                if os.path.isdir(where):
                    context.load_verify_locations(capath=where)
                else:
                    context.load_verify_locations(cafile=where)
            except (OSError, ssl.SSLError) as e:  # (ssl.SSLError: not PEM certificates)
                from .errors import UsageError

                named = "" if verify is True else " (REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE)"
                raise UsageError(f"cannot read the CA bundle {where}{named}: {e.strerror or e}") from None
            _TLS_CONTEXTS[verify] = context
        return _TLS_CONTEXTS[verify]


def _quietly(shutdown: Callable[[], None]) -> None:
    try:
        shutdown()
    except Exception:  # the response may already be closed
        pass


def _configure(session: Any, pool_size: int) -> None:
    """One connection per request in flight (not urllib3's pool of 10 per host), and the
    environment read once: with `trust_env` requests rescans os.environ for proxies and stats
    ~/.netrc on every request, a third of its CPU time over DeepSeek-V3's 329 requests. The Hub
    client passes each host's proxies itself (HubClient.proxies_for); CA bundles are read here.

    Every session of the process shares one adapter, so one pool of connections per host: the
    revision call's connection, and those opened while it was in flight (HubClient.warm), then
    carry the JSON files (cached session) and the redirects and header reads (plain session)."""
    adapter = _shared_adapter(pool_size)
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    session.trust_env = False  # also: a ~/.netrc password is never sent to the Hub or its CDN
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


def _build_sessions(*, offline: bool, pool_size: int) -> tuple[requests.Session, requests.Session]:
    requests_cache = import_requests_cache()

    directory = _private_dir(cache_dir())
    db = directory / "http.sqlite"
    _private_file(db)
    common = dict(
        allowable_methods=("GET",),
        match_headers=["Range"],
        ignored_parameters=["Authorization"],
        expire_after=BRANCH_TTL_S,
        cache_control=False,
        stale_if_error=False,
        filter_fn=_small_enough,
    )
    # Redirects are never cached: the Hub's point at signed CDN URLs that expire, and a cached one
    # would later be refused (403). Each run follows them afresh; one process remembers them.
    # NOTE: requests-cache keeps settings on the backend object, so each session gets its own
    # backend instance over the same SQLite file. Write-ahead logging lets readers and one writer
    # work at once: with SQLite's default rollback journal, concurrent reads of several models
    # (check --models, two hfmem processes) stalled for seconds on "database is locked".
    shared = bool(os.environ.get("HFMEM_REDIS_URL", "").strip())
    meta = requests_cache.CachedSession(
        backend=_backend(db), allowable_codes=(200,), **{**common, "filter_fn": _small_enough if shared else _small}
    )
    # Header reads are cached only in a shared Redis, where another machine of the fleet can use
    # them. Locally the saved snapshot of the commit already holds every header, and caching each
    # Range answer in SQLite serialised the 64 readers on its one writer: DeepSeek-V3 cold spent
    # most of its 3 s waiting on the SQLite lock (sampled), 24 round-trip layers where 7 suffice.
    ranged: requests.Session
    if shared:
        ranged = requests_cache.CachedSession(
            backend=_backend(db), allowable_codes=(206,), **common
        )
        ranged.settings.only_if_cached = offline
    else:
        ranged = plain_session(pool_size)
    meta.settings.only_if_cached = offline
    _configure(meta, pool_size)
    if hasattr(ranged, "settings"):
        _configure(ranged, pool_size)
    return meta, ranged




def _small_enough(response: Any, limit: int = MAX_JSON_BYTES) -> bool:
    """requests-cache's filter: only bodies with a Content-Length of at most `limit`."""
    length = response.headers.get("Content-Length", "")
    return length.isdigit() and int(length) <= limit


def _small(response: Any) -> bool:
    """The local filter: at most LOCAL_JSON_BYTES (the commit's snapshot holds larger ones)."""
    return _small_enough(response, LOCAL_JSON_BYTES)


# requests_cache.backends tries to import every optional backend's client on import (redis,
# pymongo, boto3): with the redis extra installed, every run paid for importing redis. They are
# hidden while requests_cache loads; `_backend` imports the Redis backend itself when configured.
_OPTIONAL_CLIENTS = ("redis", "pymongo", "bson", "gridfs", "boto3", "botocore")
_IMPORT_LOCK = threading.Lock()


def import_requests_cache() -> Any:
    """The requests_cache module, loaded without the clients of backends hfmem does not use."""
    import sys

    with _IMPORT_LOCK:
        if "requests_cache" in sys.modules:
            return sys.modules["requests_cache"]
        hidden = [m for m in _OPTIONAL_CLIENTS if m not in sys.modules]
        for m in hidden:
            sys.modules[m] = None  # type: ignore[assignment]  # `import m` now raises ImportError
        try:
            import requests_cache
        finally:
            for m in hidden:
                if sys.modules.get(m, 0) is None:
                    del sys.modules[m]
        return requests_cache


def _backend(db: Path) -> Any:
    """The HTTP cache's backend: SQLite in the cache dir, or the Redis server HFMEM_REDIS_URL names
    (`pip install 'hfmem[redis]'`), which a CI fleet can share. Redis is imported only then."""
    requests_cache = import_requests_cache()
    url = os.environ.get("HFMEM_REDIS_URL", "").strip()
    if not url:
        return requests_cache.SQLiteCache(str(db), wal=True)
    try:
        import redis
        from requests_cache.backends.redis import RedisCache
    except ImportError:
        from .errors import UsageError

        raise UsageError("HFMEM_REDIS_URL is set but the redis client is not installed: "
                         "pip install 'hfmem[redis]'") from None
    return RedisCache(namespace="hfmem", connection=redis.Redis.from_url(url))


# --- refs and snapshots: what lets a warm or offline run skip the network --------------------


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
        path = _ref_path(repo_id, revision)
        _private_dir(path.parent)
        tmp = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}.tmp")
        _private_file(tmp)
        tmp.write_text(sha)
        os.replace(tmp, path)
    except OSError:
        pass


def load_ref(repo_id: str, revision: str, *, max_age_s: float | None = None) -> str | None:
    """The commit a branch or tag last resolved to; with `max_age_s`, only if resolved that recently."""
    import time

    path = _ref_path(repo_id, revision)
    try:
        age = time.time() - path.stat().st_mtime
        if max_age_s is not None and not 0 <= age <= max_age_s:  # a future mtime is not fresh either
            return None
        sha = path.read_text().strip()
    except OSError:
        return None
    return sha if SHA_RE.match(sha) else None


def _ref_path(repo_id: str, revision: str) -> Path:
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
    """The endpoint's host[:port], one quoted folder name (no user:password: `hub.endpoint` drops
    it). An http:// endpoint is apart from an https:// one on the same host (`http+host`): the two
    are different servers as far as hfmem can tell."""
    from urllib.parse import quote, urlsplit

    from .hub import endpoint

    parts = urlsplit(endpoint())
    host = parts.netloc or "default"
    return quote(host if parts.scheme != "http" else f"http+{host}", safe="+")


# --- `hfmem cache info|clear|prune` ----------------------------------------------------------


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


def cache_info() -> dict[str, object]:
    """What the cache holds: its folder, total bytes, HTTP responses, snapshots and branch refs."""
    root = cache_dir()
    info: dict[str, object] = {
        "path": str(root),
        "bytes": sum(p.stat().st_size for p in _files(root)),
        "snapshots": len([p for p in (root / "snapshots").rglob("*.json") if not p.name.endswith(".digest.json")])
        if root.is_dir() else 0,
        "refs": len(_files(root / "refs")),
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
    """Delete everything hfmem cached; returns the bytes freed. The HF cache is never touched."""
    import shutil

    root = cache_dir()
    with _BUILD_LOCK:
        for key in [k for k in _SESSIONS if k[0] == str(root)]:
            for session in _SESSIONS.pop(key):
                session.close()
    freed = sum(p.stat().st_size for p in _files(root))
    if root.is_dir():
        shutil.rmtree(root)
    return freed


def prune_cache(older_than_days: float) -> int:
    """Drop expired HTTP responses and snapshots not used for `older_than_days`; returns bytes freed."""
    import time

    root = cache_dir()
    before = sum(p.stat().st_size for p in _files(root))
    cutoff = time.time() - older_than_days * 86400
    for p in (root / "snapshots").rglob("*.json") if root.is_dir() else []:
        if max(p.stat().st_atime, p.stat().st_mtime) < cutoff:
            p.unlink(missing_ok=True)
    if (root / "http.sqlite").is_file():
        for s in build_sessions():  # shared with this process's reads: left open
            if hasattr(s, "cache"):
                s.cache.delete(expired=True)
    return max(0, before - sum(p.stat().st_size for p in _files(root)))
