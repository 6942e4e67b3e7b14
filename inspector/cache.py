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
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .connections import DEADLINE, configure, plain_session
from .env import cache_dir, private_dir, private_file

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
            sessions = uncached(pool_size, warn, e)
        except sqlite3.DatabaseError:  # "file is not a database", malformed: damaged
            remove_database(cache_dir() / "http.sqlite")
            (warn or _ignore)(f"the HTTP cache at {cache_dir() / 'http.sqlite'} was damaged; rebuilt it empty")
            try:
                sessions = _build_sessions(offline=offline, pool_size=pool_size)
            except (OSError, sqlite3.Error) as e:
                sessions = uncached(pool_size, warn, e)
        except (OSError, sqlite3.Error) as e:
            sessions = uncached(pool_size, warn, e)
        _SESSIONS[key] = sessions
        return sessions


def discard_damaged_cache() -> str:
    """Forget this process's sessions over the current cache file and delete it (found damaged
    while in use); the next run starts a new one. Returns the warning to show."""
    db = cache_dir() / "http.sqlite"
    with _BUILD_LOCK:
        for key in [k for k in _SESSIONS if k[0] == str(cache_dir())]:
            del _SESSIONS[key]
    remove_database(db)
    return f"the HTTP cache at {db} was damaged; removed it (it is rebuilt on the next run)"


def _ignore(message: str) -> None:
    pass


def remove_database(db: Path) -> None:
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


#: The longest a request waits for the cache to open, whatever the run's deadline (our policy: it
#: takes ~0.1 s; two of SQLite's lock waits, LOCK_WAIT_S, mean a stuck lock or disk). Then the run
#: goes on without it.
OPEN_WAIT_S = 2 * LOCK_WAIT_S + 1


def uncached(pool_size: int, warn: Callable[[str], None] | None, why: Exception) -> tuple[Any, Any]:
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


def _build_sessions(*, offline: bool, pool_size: int) -> tuple[requests.Session, requests.Session]:
    requests_cache = import_requests_cache()

    directory = private_dir(cache_dir())
    db = directory / "http.sqlite"
    private_file(db)
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
    configure(meta, pool_size)
    if hasattr(ranged, "settings"):
        configure(ranged, pool_size)
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



def close_sessions(root: Path) -> None:
    with _BUILD_LOCK:
        for key in [k for k in _SESSIONS if k[0] == str(root)]:
            for session in _SESSIONS.pop(key):
                session.close()
