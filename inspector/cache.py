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
- a damaged database is deleted and rebuilt; an unwritable directory, a full or read-only disk, a
  write lock held past LOCK_WAIT_S or an unreachable Redis means running uncached, with a warning;
- the folder gets a CACHEDIR.TAG when hfmem creates it (bford.info/cachedir: backup tools skip it);
  `cache clear` and `prune` delete only the names hfmem writes, and refuse a folder holding others;
- in a shared Redis, an answer fetched with credentials (a token, a mirror's login) is keyed by a
  hash of them (`_shared_key`): a runner without access never reads it; entries are JSON, never
  pickle (whoever can write to the Redis must not run code in every runner), and are read at most
  MAX_REDIS_ENTRY_BYTES, with GETRANGE, so a poisoned or huge entry is a miss;
- the cache directory is 0700 and its files 0600: it may hold a gated model's metadata;
- every session's HTTPS connections share one SSL context per CA bundle (`tls_context`), read once.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .env import cache_dir
from .errors import HfmemError

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

#: The largest entry read back from a shared Redis: a MAX_JSON_BYTES body in base64 (4/3) plus room
#: for the record around it (URL, headers). Our policy, derived from MAX_JSON_BYTES: a longer entry
#: was never written by hfmem, and is a miss read no further than this.
MAX_REDIS_ENTRY_BYTES = MAX_JSON_BYTES * 4 // 3 + 1024 * 1024

#: Each Redis call (connect, read) gives up after this, and the run goes on uncached: a Redis on
#: the fleet's network answers in milliseconds. Our policy; a `socket_timeout` in HFMEM_REDIS_URL wins.
REDIS_TIMEOUT_S = 5.0
REDIS_NAMESPACE = "hfmem"

#: How long a branch or tag's resolution to a commit is trusted before asking the Hub again.
BRANCH_TTL_S = 10 * 60
#: The longest one SQLite write waits for another process's write lock, whatever the run's deadline
#: (our policy: a write holds it for milliseconds; Python's own sqlite3 default wait is 5 s). Past it
#: the write fails and the run goes on uncached.
LOCK_WAIT_S = 3.0
SHA_RE = re.compile(r"^[0-9a-f]{40}$")


#: The Cache Directory Tagging spec's file (https://bford.info/cachedir/): backup tools skip the
#: folder, and it says whose folder this is.
CACHEDIR_TAG = "CACHEDIR.TAG"
_TAG_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
             "# This file is a cache directory tag created by hfmem.\n"
             "# For information about cache directory tags, see https://bford.info/cachedir/\n")


def _make_root(root: Path) -> None:
    """Create the cache folder, tagged, if it is not there (one failing mkdir when it is)."""
    try:
        root.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        return
    try:
        fd = os.open(root / CACHEDIR_TAG, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with open(fd, "w") as f:
            f.write(_TAG_TEXT)
    except OSError:
        pass  # only a marker: the cache works without it


def _private_dir(path: Path) -> Path:
    root = cache_dir()
    if path == root or root in path.parents:
        _make_root(root)
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


#: The longest a request waits for the cache to open, whatever the run's deadline (our policy: it
#: takes ~0.1 s; two of SQLite's lock waits, LOCK_WAIT_S, mean a stuck lock or disk). Then the run
#: goes on without it.
OPEN_WAIT_S = 2 * LOCK_WAIT_S + 1


def _uncached(pool_size: int, warn: Callable[[str], None] | None, why: Exception) -> tuple[Any, Any]:
    """Plain sessions for a run whose cache cannot be written: slower, never wrong."""
    (warn or _ignore)(disk_warning(why))
    return plain_session(pool_size), plain_session(pool_size)


def disk_warning(why: BaseException) -> str:
    """The one line said when the cache cannot be used (full, read-only, locked, unreachable)."""
    reason = getattr(why, "strerror", None) or str(why) or type(why).__name__
    where = (f"the cache at {cache_dir()}" if not type(why).__module__.startswith("redis")
             else "the Redis cache (HFMEM_REDIS_URL)")  # (the URL may hold a password: never shown)
    first = reason.splitlines()[0] if reason.strip() else type(why).__name__
    return f"cannot use {where} ({first}); running without it"


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
    common: dict[str, Any] = dict(
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
    if shared:
        common["key_fn"] = _shared_key
    meta = requests_cache.CachedSession(
        backend=_backend(db), allowable_codes=(200,), **{**common, "filter_fn": _small_enough if shared else _small}
    )
    # Header reads are cached only in a shared Redis, where another machine of the fleet can use
    # them. Locally the saved snapshot of the commit already holds every header, and caching each
    # Range answer in SQLite serialised the 64 readers on its one writer: DeepSeek-V3 cold spent
    # most of its 3 s waiting on the SQLite lock (sampled), 24 round-trip layers where 7 suffice.
    ranged: Any
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


def _shared_key(request: Any, **kwargs: Any) -> str:
    """The cache key in a shared Redis: requests-cache's own (`Authorization` left out of it), and
    for a request sent with credentials, a hash of them mixed in. A gated repo's answer fetched
    with a token is then found only by a runner sending that token: none without it, none with
    another. The local SQLite cache keeps requests-cache's keys: one user, their own answers.

    >>> import requests
    >>> plain = requests.Request("GET", "https://hf.co/m/resolve/abc/config.json").prepare()
    >>> signed = requests.Request("GET", plain.url, headers={"Authorization": "Bearer hf_x"}).prepare()
    >>> from requests_cache import create_key
    >>> _shared_key(plain) == create_key(plain), _shared_key(signed) == _shared_key(plain)
    (True, False)
    """
    import hashlib

    from requests_cache import create_key

    key: str = create_key(request, **kwargs)
    credential = request.headers.get("Authorization")
    if not credential:
        return key
    # (the credential's hash goes into the key's digest, not beside it: no entry names it)
    secret = hashlib.sha256(credential.encode()).digest()
    return hashlib.blake2b(key.encode() + secret, digest_size=16).hexdigest()


def _small_enough(response: Any, limit: int = MAX_JSON_BYTES) -> bool:
    """requests-cache's filter: only bodies with a Content-Length of at most `limit`."""
    length = response.headers.get("Content-Length", "")
    # ASCII digits only (str.isdigit takes "١٢" and superscripts), and few: int() of 5,000 digits raises.
    return length.isascii() and length.isdigit() and len(length) <= 20 and int(length) <= limit


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
            from requests_cache.backends.sqlite import SQLiteDict
        finally:
            for m in hidden:
                if sys.modules.get(m, 0) is None:
                    del sys.modules[m]
        # NOTE: requests-cache 1.3's SQLiteDict._acquire_sqlite_lock retries `BEGIN IMMEDIATE` forever
        # on any OperationalError (a lock held by a stuck process, a read-only or full disk): the
        # run never ended, whatever --timeout said (issue 16). Ours gives up, and the run goes on
        # uncached (hub catches sqlite3.Error); it also no longer hides a failed write (SQLITE_FULL).
        SQLiteDict._acquire_sqlite_lock = _bounded_sqlite_lock  # type: ignore[method-assign]
        return requests_cache


_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


@contextmanager
def _bounded_sqlite_lock(self: Any) -> Iterator[None]:
    """requests-cache's write transaction, waiting for the lock until LOCK_WAIT_S or the request's
    --timeout deadline, whichever comes first; any other error (full, read-only, I/O) at once."""
    import sqlite3
    import time

    with self._lock:
        until = time.monotonic() + LOCK_WAIT_S
        watchdog = getattr(DEADLINE, "watchdog", None)
        if watchdog is not None:
            until = min(until, watchdog.at)
        while True:
            left_ms = max(1, int((until - time.monotonic()) * 1000))
            try:
                self._connection.execute(f"PRAGMA busy_timeout={left_ms}")  # SQLite's own wait, bounded
                self._connection.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as e:
                busy = (getattr(e, "sqlite_errorcode", 0) & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED)
                if not busy or time.monotonic() >= until:
                    raise
                time.sleep(0.001)  # SQLite answered BUSY without waiting (it does to avoid deadlocks)
        self._active_transaction = True
        try:
            yield
            self._connection.commit()
        except BaseException:
            try:
                self._connection.rollback()
            except sqlite3.Error:
                pass
            raise
        finally:
            self._active_transaction = False


def _backend(db: Path) -> Any:
    """The HTTP cache's backend: SQLite in the cache dir, or the Redis server HFMEM_REDIS_URL names
    (`pip install 'hfmem[redis]'`), which a CI fleet can share. Redis is imported only then."""
    requests_cache = import_requests_cache()
    url = os.environ.get("HFMEM_REDIS_URL", "").strip()
    if not url:
        return requests_cache.SQLiteCache(str(db), wal=True)
    return _redis_backend(url)


def _redis_backend(url: str) -> Any:
    """requests-cache's Redis backend, made safe to share: bounded calls, JSON entries read no
    further than MAX_REDIS_ENTRY_BYTES, no redirect table."""
    requests_cache = import_requests_cache()
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        from requests_cache.backends.redis import RedisCache, RedisDict
    except ImportError:
        from .errors import UsageError

        raise UsageError("HFMEM_REDIS_URL is set but the redis client is not installed: "
                         "pip install 'hfmem[redis]'") from None
    serializer = _json_serializer()

    class BoundedRedisDict(RedisDict):  # type: ignore[misc]
        def __getitem__(self, key: str) -> Any:
            # GETRANGE is inclusive at both ends: at most MAX_REDIS_ENTRY_BYTES + 1 bytes arrive,
            # so a longer entry is seen, and dropped, without being read whole.
            try:
                raw = self.connection.getrange(self._bkey(key), 0, MAX_REDIS_ENTRY_BYTES)
            except redis.ResponseError:  # a key of another type (a hash, a list): not ours
                raise KeyError(key) from None
            if not raw or len(raw) > MAX_REDIS_ENTRY_BYTES:
                raise KeyError(key)
            try:
                response = serializer.loads(raw)
                response.cache_key = key
            except Exception:  # not an entry hfmem wrote (any JSON or cattrs error): a miss
                raise KeyError(key) from None
            return response

    # Retries and their backoff (redis-py's default: 3, up to 10 s apart) would stall each
    # request on a Redis that died; the first failure drops the cache for the run instead (hub).
    connection = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
                                      retry=Retry(NoBackoff(), 0))
    backend = RedisCache(namespace=REDIS_NAMESPACE, connection=connection, serializer=serializer)
    backend.responses = BoundedRedisDict(REDIS_NAMESPACE, connection=connection, serializer=serializer,
                                         decode_content=False)  # (the body kept as sent, byte for byte)
    # hub follows redirects by hand, so requests-cache never records one; a table in this process
    # spares a Redis round trip on every miss (and an unbounded HGET of whatever the hash holds).
    backend.redirects = requests_cache.DictStorage()
    return backend


def _json_serializer() -> Any:
    """requests-cache's JSON serializer (bodies in base64), compact. Not its default, pickle:
    whoever can write to a shared Redis could then run code in every runner that reads it."""
    import json

    from requests_cache.serializers.pipeline import SerializerPipeline, Stage
    from requests_cache.serializers.preconf import json_preconf_stage

    return SerializerPipeline([json_preconf_stage, Stage(dumps=json.dumps, loads=json.loads)],
                              name="json", is_binary=False)


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
        tmp = temp_path(path)
        try:
            _private_file(tmp)
            tmp.write_text(sha)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # (gone already once renamed)
    except OSError:
        pass


def temp_path(path: Path) -> Path:
    """The temporary file written beside `path` and renamed over it: `<name>.<pid>.<thread>.tmp`,
    which `cache prune` and `clear` recognise (and delete once its process is gone)."""
    return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def load_ref(repo_id: str, revision: str, *, max_age_s: float | None = None) -> str | None:
    """The commit a branch or tag last resolved to; with `max_age_s`, only if resolved that recently."""
    import time

    path = _ref_path(repo_id, revision)
    try:
        age = time.time() - path.stat().st_mtime
        if max_age_s is not None and not 0 <= age <= max_age_s:  # a future mtime is not fresh either
            return None
        from .local import read_regular

        sha = read_regular(path, 256, "ref").decode("ascii", "replace").strip()  # (a sha is 40 bytes)
    except (OSError, HfmemError):
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
    """The endpoint's host[:port], one quoted folder name (no user:password: `env.endpoint` drops
    it). An http:// endpoint is apart from an https:// one on the same host (`http+host`): the two
    are different servers as far as hfmem can tell."""
    from urllib.parse import quote, urlsplit

    from .env import endpoint

    parts = urlsplit(endpoint())
    host = parts.netloc or "default"
    return quote(host if parts.scheme != "http" else f"http+{host}", safe="+")


# --- `hfmem cache info|clear|prune` ----------------------------------------------------------
# Only hfmem's own names are ever deleted, and never through a symlink (one is removed as a link):
# HFMEM_CACHE_DIR may name a folder by mistake (`~/.cache`), which is then refused whole (issue 16).

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


def _close_sessions(root: Path) -> None:
    with _BUILD_LOCK:
        for key in [k for k in _SESSIONS if k[0] == str(root)]:
            for session in _SESSIONS.pop(key):
                session.close()


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
    _close_sessions(root)
    before = _bytes(root)
    _remove_ours(root, lambda e, top: False)
    _remove_database(root / "http.sqlite")
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
