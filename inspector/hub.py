"""The only module that builds a Hub URL or sends a request.

Round trips, in layers (each waits only on the one before):
  1. the revision API: the commit sha and the file list (tree API, paginated, if the answer has no
     file list);
  2. `resolve/<sha>/...` for config.json, the index and every shard at once; small files come back
     directly, large ones as a redirect to the CDN, which we follow by hand;
  3. the CDN Range reads, each sized from the index's list of that shard's tensors;
  4. only for a header longer than predicted, the rest of it.

The endpoint comes from `HF_ENDPOINT` at call time (mirrors work); the token from `--token`,
`HF_TOKEN` or huggingface_hub's stored login, and is sent to the endpoint's host only: never to a
CDN host, never into the cache.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit

from .cache import BRANCH_TTL_S, MAX_JSON_BYTES
from .checkpoint import (
    METADATA_FILES,
    Checkpoint,
    load_config_json,
    plan_weights,
    quantization_config,
    shards_from_index,
)
from .env import (
    DEFAULT_ENDPOINT,
    endpoint,
    env_int,
    offline_requested,
    resolve_token,
    split_login,
    timeout_s,
)
from .errors import (
    AuthError,
    EntryNotFound,
    GatedRepo,
    NetworkError,
    OfflineMiss,
    RepoNotFound,
    RevisionNotFound,
)
from .header import PREFIX_BYTES, Header, LazyHeaders, parse_header, read_length_prefix
from .source import Source
from .store import commit_snapshot, from_hf_cache, load_saved, snapshot_writer, with_warnings

if TYPE_CHECKING:
    import requests

    from .checkpoint import SnapshotWriter
    from .params import CountContext, FileTally
    from .workers import Parsed

#: First read of a header whose size nothing predicts: gpt2's header is ~14 KB, most single-file
#: models' under 64 KB; a longer one costs one more read.
SPECULATIVE_HEADER_BYTES = 64 * 1024
#: Shard requests in flight at once (the JSON files have threads of their own): each wave of 64
#: shards costs two round trips (the redirect, then the CDN read). Our policy.
DEFAULT_CONCURRENCY = 64
# Our own policy, not a Hub number: 4 tries (backoff 0.5, 1, 2 s) keep a flaky link usable while a
# CI job still fails within about a minute; a Retry-After beyond 10 s is capped to stay in that
# bound; 5 redirect hops cover a renamed repo plus the CDN with room to spare.
MAX_ATTEMPTS = 4
MAX_RETRY_AFTER_S = 10.0
MAX_REDIRECTS = 5
#: The tree API's pages followed at most (1000 files a page on the Hub): a million files, our policy.
MAX_TREE_PAGES = 1000
#: How long past the --timeout deadline a wait on a stuck thread or worker lasts before the read
#: gives up on it (its request is cut at the deadline; this covers the cut's own round). Our policy.
DEADLINE_SLACK_S = 2.0
#: Content codings we ask for on metadata reads and decode ourselves, within the body's limit
#: (header Range reads ask for none). More layers than this in one answer are refused (our policy).
ACCEPT_ENCODING = "gzip, deflate"
MAX_CODINGS = 4
#: Sizes and byte positions from a server above this (2**63 - 1) are malformed, not a file.
MAX_FILE_BYTES = 2**63 - 1
#: Connections to the Hub opened while the revision call is in flight, beside its own: the second
#: layer (config.json, the index and the first weight files' redirects) then waits on no TCP and TLS
#: handshakes, two round trips on the real Hub (`bench/run.py --connect-latency`). A model of more
#: files opens the others as its requests go. Our policy: Mistral-7B's second layer (2 JSON, 2 shards).
WARM_CONNECTIONS = 4

SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def hub_url(repo_id: str, *, revision: str, filename: str | None = None, api: str | None = None,
            base: str | None = None) -> str:
    """One URL helper for every request. The revision is quoted whole (`refs/pr/1` -> `refs%2Fpr%2F1`).

    >>> hub_url("org/m", revision="refs/pr/1", filename="config.json", base="https://hf.co")
    'https://hf.co/org/m/resolve/refs%2Fpr%2F1/config.json'
    """
    base = (base or endpoint()).rstrip("/")
    rev = quote(revision, safe="")
    if api is not None:
        return f"{base}/api/models/{repo_id}/{api}/{rev}"
    assert filename is not None
    return f"{base}/{repo_id}/resolve/{rev}/{quote(filename, safe='/')}"


@dataclass
class Response:
    """What we keep of an HTTP answer: never the request headers (they may hold the token)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str
    from_cache: bool


class HubClient:
    """HTTP to one endpoint with one token: redirects by hand, retries, Hub errors -> our errors."""

    def __init__(self, *, token: str | None, offline: bool = False, base: str | None = None,
                 refresh: bool = False, concurrency: int = DEFAULT_CONCURRENCY,
                 deadline: float | None = None) -> None:
        from .cache import plain_session

        # A mirror's user:password in HF_ENDPOINT is split off the URL (sent to its host as Basic auth).
        if base is None:
            base, self.login = split_login(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
        else:
            self.login = None
        self.base = base.rstrip("/")
        self.host = urlsplit(self.base).netloc
        # The token (or the mirror's login) goes to this origin only: scheme, host and port alike.
        self.origin = _origin_key(self.base)
        if self.origin is None:
            from .errors import UsageError

            raise UsageError(f"HF_ENDPOINT is not an http:// or https:// URL with a host: {self.base[:80]!r}")
        self.token = token
        self.offline = offline
        self.refresh = refresh
        self.timeout = timeout_s()
        self.deadline = deadline  # time.monotonic() after which nothing more is tried (--timeout)
        from .cache import Watchdog

        self.watchdog = Watchdog(deadline) if deadline is not None else None
        self._redirected: dict[str, str] = {}
        self.warnings: list[str] = []
        self.concurrency = concurrency
        self._proxies: dict[str, dict[str, str]] = {}
        self._routes: dict[tuple[Any, str], tuple[Any, bool]] = {}
        self._lock = threading.Lock()
        # The first round trip (where a revision points) goes out on a plain session, and the
        # cached ones are built while it is in flight: importing requests-cache and opening its
        # database take ~0.1 s of CPU, which, started any earlier, shared the interpreter with the
        # imports that the first request waits on. Offline, it is the cached session that answers,
        # so there is nothing to overlap.
        self._built: list[tuple[Any, Any]] = []
        self._build_error: list[BaseException] = []
        self._builder = threading.Thread(target=self._build, daemon=True)
        self._builder_lock = threading.Lock()
        self.api_session = None if offline else plain_session(concurrency)

    def _start_building(self) -> None:
        with self._builder_lock:
            if self._builder.ident is None:
                self._builder.start()

    def _build(self) -> None:
        from .cache import build_sessions

        try:
            sessions = build_sessions(offline=self.offline, pool_size=self.concurrency, warn=self.warnings.append)
        except BaseException as e:  # raised where a session is first needed
            self._build_error.append(e)
            return
        with self._builder_lock:
            if not self._built:  # (else the run gave up waiting and goes on without the cache)
                self._built.append(sessions)

    def _sessions(self) -> tuple[Any, Any]:
        from .cache import OPEN_WAIT_S, _uncached

        self._start_building()
        left = 0.0
        if self._builder.is_alive():
            # Never waited on past the deadline or OPEN_WAIT_S: a cache stuck on a lock or a disk
            # (issue 16: the run hung there, whatever --timeout said) costs only its speed.
            left = OPEN_WAIT_S if self.deadline is None else min(OPEN_WAIT_S, self.deadline - time.monotonic())
            self._builder.join(max(0.0, left))
        with self._builder_lock:
            if not self._built and not self._build_error:
                self._built.append(_uncached(self.concurrency, self.warnings.append,
                                             TimeoutError(f"it did not open within {max(0.0, left):.3g} s")))
        if self._build_error:
            raise self._build_error[0]
        return self._built[-1]

    @property
    def meta_session(self) -> Any:
        return self._sessions()[0]

    @property
    def range_session(self) -> Any:
        return self._sessions()[1]

    # -- one request -------------------------------------------------------------------------

    def get(self, url: str, *, what: str, byte_range: tuple[int, int] | None = None,
            expire_never: bool = False, force: bool = False, plain: bool = False) -> Response:
        """GET `url`, following redirects by hand; `byte_range` is (first, last), both inclusive."""
        # A pinned file's redirect target was seen by its first read: a second read goes straight there.
        start = url
        url = self._redirected.get(url, url)
        for _ in range(MAX_REDIRECTS + 1):
            r = self._get_once(url, what=what, byte_range=byte_range, expire_never=expire_never, force=force,
                               plain=plain)
            if r.status in (301, 302, 303, 307, 308):
                url = _redirect_target(url, r.headers.get("Location"), what)
                expire_never = True  # a redirect target is content-addressed or pinned
                continue
            if url != start and expire_never and r.status < 400:
                self._redirected[start] = url
            return r
        raise NetworkError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def _get_once(self, url: str, *, what: str, byte_range: tuple[int, int] | None,
                  expire_never: bool, force: bool, plain: bool = False) -> Response:
        import sqlite3

        import requests.exceptions
        import urllib3.exceptions

        from .cache import DEADLINE, import_requests_cache

        headers = {"User-Agent": _user_agent()}
        # The token goes to the endpoint's host only: a CDN host never sees it. A mirror's own
        # user:password (in HF_ENDPOINT) takes its place there, as requests did with it in the URL.
        # Same origin means scheme, host and port: a redirect to http:// on the same host never gets
        # it (one from https:// is refused outright, `_redirect_target`), nor another port's server.
        if (self.login or self.token) and _origin_key(url) == self.origin:
            headers["Authorization"] = self.login or f"Bearer {self.token}"
        # A header read asks for no content coding (its bytes are counted against the Range); the
        # JSON may come compressed. Either way what arrives is decoded within the body's limit.
        headers["Accept-Encoding"] = "identity" if byte_range is not None else ACCEPT_ENCODING
        limit = _body_limit(byte_range)
        if byte_range is not None:
            # HTTP ranges are inclusive at both ends (RFC 9110 14.1.2): bytes=0-7 is 8 bytes.
            headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        if plain and self.api_session is not None:
            session = self.api_session
        else:
            session = self.range_session if byte_range is not None else self.meta_session
        cached = hasattr(session, "settings")  # a requests-cache session, not a plain one
        if self.offline and not cached:
            raise OfflineMiss(f"offline and not in the cache: {what}")
        # (The plain session of the first request needs no requests-cache: it may still be loading.)
        never = import_requests_cache().NEVER_EXPIRE if expire_never and cached else None
        kwargs: dict[str, Any] = {"expire_after": never} if never is not None else {}
        if force and not self.offline and cached:
            kwargs["force_refresh"] = True
        if cached:  # requests-cache reads a body whole to save it: decoded here first, within the limit
            kwargs["hooks"] = {"response": _decode_before_caching(limit, what)}
        delay = 0.5
        host = urlsplit(url).netloc
        for attempt in range(1, MAX_ATTEMPTS + 1):
            timeout = self._remaining(what, host, self.timeout)
            DEADLINE.watchdog, DEADLINE.watched = self.watchdog, []
            try:
                if cached:
                    raw = session.get(url, headers=headers, allow_redirects=False, stream=True,
                                      timeout=timeout, proxies=self.proxies_for(url), **kwargs)
                else:
                    raw = self._send_plain(session, url, headers, timeout)
                from_cache = bool(getattr(raw, "from_cache", False))
                # Offline, every 504 is requests-cache's own "not cached" (a CachedResponse with no
                # body, from_cache true): an answer never cached after a failed or cut read online.
                if raw.status_code == 504 and self.offline:
                    raw.close()
                    raise OfflineMiss(f"offline and not in the cache: {what}")
                if raw.status_code in (429, 500, 502, 503, 504) and attempt < MAX_ATTEMPTS:
                    wait = _retry_after(raw.headers.get("Retry-After"), delay)
                    raw.close()
                    self._sleep(wait, what, host)
                    delay *= 2
                    continue
                body = _read_limited(raw, byte_range, self.deadline, what, limit)
                return Response(raw.status_code, raw.headers, body, url, from_cache)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError, urllib3.exceptions.HTTPError) as e:
                # (requests-cache reads a body to save it straight from urllib3, whose errors then
                # arrive unwrapped.)
                # Refused, reset, timed out, or a body cut short: all worth another try. A certificate
                # that failed verification fails the same way again: said at once, with the remedy.
                untrusted = _untrusted_certificate(e)
                if untrusted:
                    raise NetworkError(f"{what}: the TLS certificate of {host} is not trusted ({untrusted}); "
                                       "for a private CA, set REQUESTS_CA_BUNDLE to its certificates") from None
                if attempt == MAX_ATTEMPTS:
                    timed_out = isinstance(e, requests.Timeout | urllib3.exceptions.TimeoutError)
                    kind = "timed out" if timed_out else (
                        "unreachable" if isinstance(e, requests.ConnectionError) else "sent a broken body")
                    raise NetworkError(f"{what}: {host} {kind} after {attempt} tries") from None
                self._sleep(delay * (1 + random.random() / 4), what, host)
                delay *= 2
            except requests.RequestException as e:
                raise NetworkError(f"{what}: {type(e).__name__} talking to {host}") from None
            except Exception as e:
                if not (isinstance(e, sqlite3.Error) or type(e).__module__.startswith("redis")):
                    raise
                # The cache broke under us (a damaged SQLite page, an unreachable Redis): finish
                # the run without it, and never let offline mode reach the network because of it.
                self._drop_cache(e)
                if self.offline:
                    raise OfflineMiss(f"offline and the cache cannot be read: {what}") from None
                return self._get_once(url, what=what, byte_range=byte_range, expire_never=expire_never,
                                      force=force, plain=plain)
            finally:
                if self.watchdog is not None:
                    for shutdown in DEADLINE.watched:
                        self.watchdog.release(shutdown)
                DEADLINE.watchdog, DEADLINE.watched = None, []
        raise AssertionError("unreachable")

    def _drop_cache(self, error: Exception) -> None:
        """Plain sessions from now on; a damaged SQLite file is removed, so the next run rebuilds it."""
        import sqlite3

        from .cache import _uncached, discard_damaged_cache

        with self._lock:
            if not hasattr(self.meta_session, "settings"):
                return  # another thread got here first (or the cache was never usable)
            warn: Callable[[str], None] | None = self.warnings.append
            if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError):
                self.warnings.append(discard_damaged_cache())
                warn = None  # said already
            self._built.append(_uncached(self.concurrency, warn, error))

    def _send_plain(self, session: Any, url: str, headers: dict[str, str], timeout: float) -> _Plain:
        """GET on an uncached session, sent straight to urllib3's connection pool for the URL's host.

        requests' HTTPAdapter picks that pool once per host (the proxy, TLS verification and CA
        bundle: `_route`); each request is then only urllib3's. What is skipped is what hfmem does not
        use: preparing and re-parsing the URL, cookies, hooks and the requests.Response. That was
        40% of the CPU of a request (0.74-0.87 -> 0.44-0.49 ms, bench/RESULTS.md), most of it on the
        header reads: 2,000 of them for a 1000-shard model. Errors are mapped as the adapter maps them."""
        import requests
        import urllib3
        from urllib3.exceptions import HTTPError, NewConnectionError
        from urllib3.exceptions import TimeoutError as Urllib3Timeout

        from .cache import DEADLINE

        pool, whole_url = self._route(session, url)
        parts = url.split("/", 3)
        target = url if whole_url else "/" + (parts[3] if len(parts) > 3 else "").partition("#")[0]
        try:
            raw = pool.urlopen("GET", target, headers={**session.headers, **headers}, redirect=False,
                               assert_same_host=False, preload_content=False, decode_content=False,
                               retries=False, timeout=urllib3.Timeout(connect=timeout, read=timeout))
        except NewConnectionError as e:  # refused, no such host (a ConnectTimeoutError, historically)
            raise requests.ConnectionError(e) from None
        except Urllib3Timeout as e:
            raise requests.Timeout(e) from None
        except (HTTPError, OSError) as e:  # reset, TLS, proxy
            raise requests.ConnectionError(e) from None
        except ValueError:  # http.client refusing a header value: never shown (it may be the token)
            raise requests.exceptions.InvalidHeader("a request header holds a character HTTP forbids") from None
        watchdog = getattr(DEADLINE, "watchdog", None)
        if watchdog is not None:  # (as cache.DeadlineAdapter does for the cached sessions)
            watchdog.watch(raw.shutdown)
            DEADLINE.watched.append(raw.shutdown)
        return _Plain(raw)

    def _route(self, session: Any, url: str) -> tuple[Any, bool]:
        """(urllib3 pool, whether the request line carries the whole URL: plain HTTP through a proxy)
        for the URL's scheme and host, chosen by the session's requests adapter as for any request.
        (urllib3 2 never closes a pool it evicts from its few per adapter: a pool kept here stays usable.)"""
        origin = _origin(url)
        route = self._routes.get((session, origin))
        if route is None:
            import requests

            probe = requests.PreparedRequest()
            probe.prepare(method="GET", url=origin + "/")
            assert probe.url is not None
            proxies = self.proxies_for(url)
            adapter = session.get_adapter(probe.url)
            pool = adapter.get_connection_with_tls_context(probe, session.verify, proxies=proxies)
            adapter.cert_verify(pool, probe.url, session.verify, None)
            route = self._routes[(session, origin)] = (pool, adapter.request_url(probe, proxies) != "/")
        return route

    def warm(self, session: Any, url: str, n: int) -> None:
        """Open `n` more connections to the URL's host in the session's pool, in the background, for
        the requests about to need them. Only speed depends on it: what goes wrong (refused, timed
        out, untrusted) is left to the requests themselves, which meet it and report it. Not through
        a proxy: urllib3 sets a connection's CONNECT tunnel up in `urlopen`, not in `connect`, and
        a connection opened ahead would speak to the proxy as if it were the Hub."""
        if self.proxies_for(url):
            return
        # NOTE: urllib3 has no public way to open a pool's connections ahead of its requests;
        # `_get_conn` and `_put_conn` are what its own `urlopen` uses. The n are taken at once (no
        # I/O: each is a new, unconnected one, or an idle one), so each thread opens a different one.
        try:
            pool, _ = self._route(session, url)
            conns = [pool._get_conn() for _ in range(n)]
        except Exception:  # noqa: BLE001 - as above; or a closed pool: nothing is warmed
            return
        for i, conn in enumerate(conns):
            try:
                threading.Thread(target=_connect, args=(pool, conn, self.timeout), daemon=True,
                                 name="hfmem-warm").start()
            except RuntimeError:  # no thread to be had: the rest go back unopened
                for idle in conns[i:]:
                    pool._put_conn(idle)
                return

    def proxies_for(self, url: str) -> dict[str, str]:
        """HTTPS_PROXY / HTTP_PROXY / ALL_PROXY for this URL's host unless NO_PROXY exempts it, as
        requests would find them, read once per host (the sessions do not read the environment)."""
        from requests.utils import get_environ_proxies

        host = _origin(url)
        if host not in self._proxies:
            self._proxies[host] = get_environ_proxies(url)
        return self._proxies[host]

    def _remaining(self, what: str, host: str, cap: float) -> float:
        """Seconds left before the deadline, at most `cap`; NetworkError once it has passed."""
        if self.deadline is None:
            return cap
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise NetworkError(f"{what}: gave up on {host} at the --timeout deadline")
        return min(cap, left)

    def _sleep(self, seconds: float, what: str, host: str) -> None:
        """A backoff pause, never past the deadline: one that would end beyond it gives up now."""
        if self.deadline is not None and time.monotonic() + seconds >= self.deadline:
            raise NetworkError(f"{what}: gave up on {host} at the --timeout deadline")
        time.sleep(seconds)

    # -- Hub calls -----------------------------------------------------------------------------

    def revision_info(self, repo_id: str, revision: str, *, warm: bool = True) -> tuple[str, dict[str, int | None]]:
        """Layer 1: the commit sha a revision points at, and the repo's files (sizes when known);
        `warm`: open the second layer's connections meanwhile."""
        url = hub_url(repo_id, revision=revision, api="revision", base=self.base)
        pinned = bool(SHA_RE.match(revision))
        self._start_building()  # (it runs while this request is in flight, as the warming does)
        if warm and self.api_session is not None:
            self.warm(self.api_session, url, WARM_CONNECTIONS)
        r = self.get(url, what=f"{repo_id}@{revision}", expire_never=pinned, force=self.refresh and not pinned,
                     plain=True)
        raise_for_hub_status(r, repo_id=repo_id, revision=revision, authenticated=bool(self.token))
        info = _json_body(r, f"revision info of {repo_id}")
        sha = info.get("sha")
        if not isinstance(sha, str) or not SHA_RE.match(sha):
            raise NetworkError(f"{repo_id}@{revision}: the Hub's answer has no commit sha")
        siblings = info.get("siblings")
        if isinstance(siblings, list):
            files = _file_list(siblings, "rfilename", f"file list of {repo_id}")
        elif siblings is None:
            files = self.tree(repo_id, sha)
        else:
            raise NetworkError(f"file list of {repo_id}: the server's `siblings` is not a list")
        return sha, files

    def tree(self, repo_id: str, sha: str) -> dict[str, int | None]:
        """The tree API, following its `Link: rel="next"` pagination."""
        files: dict[str, int | None] = {}
        what = f"file list of {repo_id}"
        url: str | None = hub_url(repo_id, revision=sha, api="tree", base=self.base)
        seen: set[str] = set()
        while url:
            if url in seen or len(seen) >= MAX_TREE_PAGES:
                raise NetworkError(f"{what}: the server's pages {'loop' if url in seen else 'never end'} "
                                   f"(after {len(seen)} pages)")
            seen.add(url)
            r = self.get(url, what=what, expire_never=True)
            raise_for_hub_status(r, repo_id=repo_id, revision=sha, authenticated=bool(self.token))
            try:
                entries = json.loads(r.body)
            except (ValueError, RecursionError):
                raise NetworkError(f"{what}: not JSON") from None
            if not isinstance(entries, list):
                raise NetworkError(f"{what}: the server's page is not a JSON list")
            files.update(_file_list([e for e in entries if isinstance(e, dict) and e.get("type") == "file"],
                                    "path", what))
            url = _next_link(r.headers.get("Link"), url, what)
        return files

    def read_file(self, repo_id: str, sha: str, filename: str) -> bytes:
        r = self.get(hub_url(repo_id, revision=sha, filename=filename, base=self.base),
                     what=f"{repo_id}/{filename}", expire_never=True)
        raise_for_hub_status(r, repo_id=repo_id, revision=sha, filename=filename, authenticated=bool(self.token))
        return r.body

    def locate(self, repo_id: str, sha: str, filename: str) -> str | tuple[bytes, int | None]:
        """A shard's first round trip, which needs nothing but its name: where the Hub redirects it
        (the CDN URL), or, from a server that answers directly, its first SPECULATIVE_HEADER_BYTES."""
        url = hub_url(repo_id, revision=sha, filename=filename, base=self.base)
        what = f"{repo_id}/{filename}"
        last = SPECULATIVE_HEADER_BYTES - 1
        r = self._get_once(url, what=what, byte_range=(0, last), expire_never=True, force=False)
        if r.status in (301, 302, 303, 307, 308):
            return _redirect_target(url, r.headers.get("Location"), what)
        raise_for_hub_status(r, repo_id=repo_id, revision=sha, filename=filename, authenticated=bool(self.token))
        return _range_body(r, 0, last, what)

    def read_header(self, repo_id: str, sha: str, filename: str, predicted: int,
                    located: str | tuple[bytes, int | None] | None = None) -> Header:
        """One shard's header, read and parsed (see `header_bytes`)."""
        data, file_bytes = self.header_bytes(repo_id, sha, filename, predicted, located)
        return parse_header(data, file_bytes=file_bytes, name=filename)

    def header_bytes(self, repo_id: str, sha: str, filename: str, predicted: int,
                     located: str | tuple[bytes, int | None] | None = None) -> tuple[bytes, int | None]:
        """The rest of one shard: a Range read sized by `predicted` (from where `locate` said), and a
        second only if the header is longer. Returns (the file's first bytes, its size if known)."""
        url = located if isinstance(located, str) else hub_url(repo_id, revision=sha, filename=filename,
                                                               base=self.base)
        what = f"{repo_id}/{filename}"

        def read(first: int, last: int) -> tuple[bytes, int | None]:
            r = self.get(url, what=what, byte_range=(first, last), expire_never=True)
            raise_for_hub_status(r, repo_id=repo_id, revision=sha, filename=filename,
                                 authenticated=bool(self.token))
            return _range_body(r, first, last, what)

        # 1. Prefix and (we hope) the whole header in one read, unless `locate` brought bytes already.
        data, file_bytes = located if isinstance(located, tuple) else read(0, max(predicted, PREFIX_BYTES) - 1)
        n = read_length_prefix(data[:PREFIX_BYTES]) if len(data) >= PREFIX_BYTES else None
        # 2. Compare with the bytes actually received, not the bytes asked for. (Too short a file
        # is refused by the parser, which names it.)
        if n is not None and len(data) < PREFIX_BYTES + n and (file_bytes is None or len(data) < file_bytes):
            rest, _ = read(len(data), PREFIX_BYTES + n - 1)
            data += rest
        return data, file_bytes


def _connect(pool: Any, conn: Any, timeout: float) -> None:
    """Connect one of the pool's connections as a request would (TCP, TLS with the pool's context
    and host name check), unless it is connected already, and put it back in the pool."""
    try:
        if conn.sock is None:
            conn.timeout = timeout
            started = time.monotonic()
            conn.connect()
            if not _read_session_tickets(conn.sock, time.monotonic() - started):
                conn.close()
    except Exception:  # noqa: BLE001 - left to the request that takes this slot: it connects anew
        conn.close()
    pool._put_conn(conn)


def _read_session_tickets(sock: Any, handshake_s: float) -> bool:
    """Read the session tickets a TLS 1.3 server sends after the handshake. Unread, they leave the
    idle connection's socket readable, and urllib3 takes a readable idle connection for one the
    server closed: it would close this one and open another. They arrive about a round trip after
    the handshake; waited for at most as long as the handshake took. False: the server sent data
    or closed the connection, which no request can use."""
    import ssl

    from urllib3.util.wait import wait_for_read  # (poll where there is one: select fails on fds >= 1024)

    if getattr(sock, "version", lambda: None)() != "TLSv1.3":
        return True  # plain TCP, or TLS 1.2: nothing follows the handshake
    # (at least 10 ms, our policy: on loopback the handshake can take less than the tickets' write)
    timeout, wait = sock.gettimeout(), max(handshake_s, 0.01)
    try:
        while wait_for_read(sock, timeout=wait):  # (none at all: a server may send no tickets)
            sock.setblocking(False)
            try:
                sock.recv(1)
            except ssl.SSLWantReadError:  # tickets read, no data: then whatever arrived with them
                wait = 0
                continue
            return False  # application data, or the end of the stream, before any request
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)


class _Plain:
    """A urllib3 response, seen through the few parts of a requests.Response that `_get_once` uses."""

    __slots__ = ("raw",)
    from_cache = False

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    @property
    def status_code(self) -> int:
        return int(self.raw.status)

    @property
    def headers(self) -> Mapping[str, str]:
        return self.raw.headers  # (case-insensitive, as requests' are)

    def iter_content(self, chunk_size: int) -> Any:
        return self.raw.stream(chunk_size, decode_content=False)  # (decoded by `_read_limited`)

    def close(self) -> None:
        # As requests.Response.close: a body read to its end has already given its connection back
        # to the pool; one left unread (a server ignoring the Range) is closed, not reused.
        self.raw.close()
        self.raw.release_conn()


def _untrusted_certificate(error: BaseException) -> str | None:
    """Why the peer's certificate failed verification, when that is what `error` comes from, else None."""
    import ssl

    from .errors import linked_errors

    return next((e.verify_message or str(e) for e in linked_errors(error)
                 if isinstance(e, ssl.SSLCertVerificationError)), None)


def _origin(url: str) -> str:
    """scheme://host[:port] of an absolute URL."""
    return "/".join(url.split("/", 3)[:3])


def _user_agent() -> str:
    from . import __version__

    return f"hfmem/{__version__}"


def _retry_after(value: str | None, default: float) -> float:
    """Retry-After's seconds, within 0..MAX_RETRY_AFTER_S; a date, nan or garbage: `default`."""
    try:
        seconds = float(value) if value else default
    except ValueError:
        return default
    if seconds != seconds:  # nan: no number at all
        return default
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _body_limit(byte_range: tuple[int, int] | None) -> int:
    """The most decoded bytes a request's body is read to: a Range's end (a server may ignore the
    Range and send the file from its start), else MAX_JSON_BYTES and one more, to tell it was over."""
    return byte_range[1] + 1 if byte_range is not None else MAX_JSON_BYTES + 1


def _read_limited(raw: requests.Response | _Plain, byte_range: tuple[int, int] | None, deadline: float | None = None,
                  what: str = "response", limit: int | None = None) -> bytes:
    """The body, but never more than needed: a Range's bytes even when a server ignores the Range
    and starts a multi-GB 200 (the connection is then dropped), and at most MAX_JSON_BYTES of
    anything else, counted after decoding (a few KB of nested gzip can decode to GBs: each layer is
    decoded only as far as the limit). A body still arriving at the deadline is abandoned."""
    limit = limit if limit is not None else _body_limit(byte_range)
    if byte_range is not None and raw.status_code == 206:
        limit = min(limit, byte_range[1] - byte_range[0] + 1)
    try:
        chunks, got = [], 0
        for chunk in _decoded_chunks(raw, limit, what):
            chunks.append(chunk)
            got += len(chunk)
            if got >= limit:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise NetworkError(f"{what}: gave up at the --timeout deadline while the body arrived")
        body = b"".join(chunks)
        if byte_range is None and len(body) > MAX_JSON_BYTES:
            raise NetworkError(f"{what}: the server sent more than {MAX_JSON_BYTES >> 20} MiB of metadata")
        return body[:limit]
    finally:
        raw.close()


def _decoded_chunks(raw: Any, limit: int, what: str) -> Iterator[bytes]:
    """The body's chunks, decoded by us (never by urllib3 or requests, which decode a chunk whole)."""
    if getattr(raw, "from_cache", False) or getattr(raw, "_content_consumed", False):
        content = getattr(raw, "_content", None)  # decoded already, within its limit, or cached so
        yield (content or b"")[: limit + 1]
        return
    stream = raw.raw.stream(64 * 1024, decode_content=False) if not isinstance(raw, _Plain) \
        else raw.iter_content(64 * 1024)
    decoder = _Decoder.of(raw.headers.get("Content-Encoding"), limit, what)
    for chunk in stream:
        yield decoder.feed(chunk) if decoder is not None else chunk
        if decoder is not None and decoder.full:
            return


def _decode_before_caching(limit: int, what: str) -> Callable[..., Any]:
    """A response hook for the cached sessions: requests-cache reads the whole body to save it
    (`response.content`, decoded by urllib3 at once), so a compressed body is read here first,
    decoded within `limit`, and left in the response as its content."""

    def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
        if (getattr(response, "from_cache", False) or response._content_consumed
                or not _codings(response.headers.get("Content-Encoding"))):
            return response  # (a plain body is read as far as its Content-Length, at most the limit)
        try:
            chunks, got = [], 0
            for chunk in _decoded_chunks(response, limit, what):
                chunks.append(chunk)
                got += len(chunk)
                if got >= limit:
                    break
        except BaseException:
            response.close()
            raise
        response._content = b"".join(chunks)[:limit]
        response._content_consumed = True
        response.close()
        return response

    return hook


def _codings(header: str | None) -> list[str]:
    return [c for c in (p.strip().lower() for p in (header or "").split(",")) if c and c != "identity"]


class _Decoder:
    """Content codings undone layer by layer (RFC 9110 8.4: listed in the order applied), each
    layer's output capped at `limit` bytes: a decompression bomb costs `limit` bytes of memory per
    layer at most, never its decoded size. Once a layer reaches the cap, `full` is set and the
    rest of the body is not read."""

    def __init__(self, codings: list[str], limit: int, what: str) -> None:
        import zlib

        self.limit, self.what, self.full = limit, what, False
        self.layers = []
        for c in reversed(codings):
            if c in ("gzip", "x-gzip"):
                self.layers.append([16 + zlib.MAX_WBITS, zlib.decompressobj(16 + zlib.MAX_WBITS), 0, b""])
            elif c == "deflate":
                self.layers.append([zlib.MAX_WBITS, zlib.decompressobj(zlib.MAX_WBITS), 0, b""])
            else:
                raise NetworkError(f"{what}: the server sent the body as {c[:20]!r}, which hfmem did not ask for")

    @classmethod
    def of(cls, header: str | None, limit: int, what: str) -> _Decoder | None:
        codings = _codings(header)
        if len(codings) > MAX_CODINGS:
            raise NetworkError(f"{what}: the server sent the body in {len(codings)} layers of content coding")
        return cls(codings, limit, what) if codings else None

    def feed(self, data: bytes) -> bytes:
        import zlib

        for layer in self.layers:
            try:
                data = self._layer(layer, data, zlib)
            except zlib.error:
                raise NetworkError(f"{self.what}: the server sent a broken compressed body") from None
        return data

    def _layer(self, layer: list[Any], data: bytes, zlib: Any) -> bytes:
        wbits, d, produced, first = layer
        out = []
        while data and not self.full:
            budget = self.limit - produced
            if budget <= 0:
                self.full = True
                break
            try:
                piece = d.decompress(data, budget)
            except zlib.error:
                if wbits != zlib.MAX_WBITS or produced or first:
                    raise
                # A "deflate" body without its zlib header (raw deflate), as some servers send it.
                wbits = layer[0] = -zlib.MAX_WBITS
                d = layer[1] = zlib.decompressobj(wbits)
                continue
            layer[3] = first = first or bool(piece)
            out.append(piece)
            produced += len(piece)
            if d.unconsumed_tail:
                self.full = produced >= self.limit
                data = d.unconsumed_tail
                if not piece and not self.full:
                    break
                continue
            if d.eof and d.unused_data and wbits > 16:  # gzip's next member (concatenated files)
                data = d.unused_data
                d = layer[1] = zlib.decompressobj(wbits)
                continue
            break
        layer[2] = produced
        return b"".join(out)


def _range_body(r: Response, first: int, last: int, what: str) -> tuple[bytes, int | None]:
    """(bytes starting at `first`, file size) from a 206 or a 200 that ignored the Range."""
    if r.status == 206:
        # (19 digits at most: a 400-digit position is no file's; int() of 4,300 digits raises)
        m = re.fullmatch(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)", r.headers.get("Content-Range", ""))
        size = int(m[3]) if m and m[3] != "*" else None
        if (not m or int(m[1]) != first or int(m[2]) > last or int(m[2]) - int(m[1]) + 1 != len(r.body)
                or size is not None and not int(m[2]) < size <= MAX_FILE_BYTES):
            raise NetworkError(f"{what}: the server's Content-Range does not match what it sent")
        return r.body, size
    if r.status == 200:
        length = r.headers.get("Content-Length") or ""
        valid = re.fullmatch(r"[0-9]{1,19}", length) and int(length) <= MAX_FILE_BYTES
        return r.body[first : last + 1], int(length) if valid else None
    if r.status == 416:
        return b"", None  # the file is shorter than the range start
    raise NetworkError(f"{what}: unexpected HTTP {r.status}")


def _next_link(link: str | None, current: str, what: str = "file list") -> str | None:
    if not link:
        return None
    m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    return _checked_url(current, m[1], what, "a next page at") if m else None


def _origin_key(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, the port filled in; None for any other URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _checked_url(current: str, reference: str | None, what: str, named: str) -> str:
    """`reference` (a Location or Link target) made absolute against `current`, refused (one line,
    exit 7) unless it is a well-formed http(s) URL: never a file://, an ftp:// or a malformed one."""
    host = urlsplit(current).netloc
    if not reference or not reference.isprintable() or any(c.isspace() for c in reference):
        raise NetworkError(f"{what}: {host} sent {named} a malformed address; refused")
    try:
        target = urljoin(current, reference)
    except ValueError:
        target = ""
    if _origin_key(target) is None:
        scheme = urlsplit(target).scheme if "://" in target else ""
        kind = f"a {scheme}:// address" if scheme and scheme.isalnum() else "a malformed address"
        raise NetworkError(f"{what}: {host} sent {named} {kind[:40]}; refused")
    return target


def _redirect_target(current: str, location: str | None, what: str) -> str:
    """Where a redirect leads, checked (`_checked_url`); a redirect from https:// to plain http://
    is refused outright: what follows it (the token, a mirror's login, the answer) would travel in
    clear text."""
    target = _checked_url(current, location, what, "a redirect to")
    if urlsplit(current).scheme == "https" and urlsplit(target).scheme == "http":
        raise NetworkError(f"{what}: {urlsplit(current).netloc} redirected from https:// to plain http:// "
                           f"({urlsplit(target).netloc}); refused")
    return target


def _file_list(entries: list[Any], key: str, what: str) -> dict[str, int | None]:
    """{name: size or None} of the API's file entries; a name that is no plain relative path (not
    a string, `..`, absolute, a control character) or a size that is no byte count is a broken
    answer (exit 7): a name goes into URLs and file names."""
    files: dict[str, int | None] = {}
    for e in entries:
        if not isinstance(e, dict) or key not in e:
            continue
        name, size = e[key], e.get("size")
        if not (isinstance(name, str) and name.isprintable() and "\\" not in name and len(name) <= 1000
                and all(p not in ("", ".", "..") for p in name.split("/"))):
            raise NetworkError(f"{what}: the server names a file {str(name)[:60]!r}, which is no file name in a repo")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or not 0 <= size <= MAX_FILE_BYTES):
            raise NetworkError(f"{what}: the server gives {name[:60]!r} the size {str(size)[:30]!r}")
        files[name] = size
    return files


def _json_body(r: Response, what: str) -> dict[str, Any]:
    try:
        value = json.loads(r.body)
    except ValueError:
        raise NetworkError(f"{what}: the server's answer is not JSON") from None
    if not isinstance(value, dict):
        raise NetworkError(f"{what}: the server's answer is not a JSON object")
    return value


def raise_for_hub_status(r: Response, *, repo_id: str, revision: str, filename: str | None = None,
                         authenticated: bool) -> None:
    """The one place that turns the Hub's status and `X-Error-Code` into our error types
    (the codes huggingface_hub's `hf_raise_for_status` reads)."""
    if r.status < 400:
        return
    code = r.headers.get("X-Error-Code", "")
    message = r.headers.get("X-Error-Message", "")
    page = f"{endpoint_of(r.url)}/{repo_id}"
    if code == "GatedRepo":
        if authenticated:
            raise GatedRepo(f"{repo_id} is gated and your token has no access: request it at {page}")
        raise GatedRepo(f"{repo_id} is gated: request access at {page}, then set HF_TOKEN (or run `hf auth login`)")
    if code == "RevisionNotFound":
        raise RevisionNotFound(f"revision {revision!r} not found in {repo_id}")
    if code == "EntryNotFound":
        raise EntryNotFound(f"{repo_id} has no file {filename!r} at {revision}")
    if code == "RepoNotFound" or r.status == 404 and not filename:
        hint = "" if authenticated else " (if it is private, set HF_TOKEN)"
        raise RepoNotFound(f"repo {repo_id} not found on {endpoint_of(r.url)}{hint}")
    if r.status == 401:
        if "Invalid credentials" in message or authenticated:
            raise AuthError("the Hub refused the token (invalid or expired): check HF_TOKEN or run `hf auth login`")
        raise RepoNotFound(f"repo {repo_id} not found on {endpoint_of(r.url)} (if it is private, set HF_TOKEN)")
    if r.status == 403:
        raise AuthError(f"access to {repo_id} denied: {message or 'forbidden'}")
    if r.status == 404:
        raise EntryNotFound(f"{repo_id} has no file {filename!r} at {revision}")
    raise NetworkError(f"{repo_id}: the Hub answered HTTP {r.status}{': ' + message if message else ''}")


def endpoint_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- the whole read ---------------------------------------------------------------------------


def predict_header_bytes(tensor_names: list[str]) -> int:
    """Predict a shard's header length from the names the index lists for it.

    Each entry is `"name":{"dtype":"BF16","shape":[..],"data_offsets":[..,..]},`: the name plus
    about 85 bytes for a 2-D shape of 4-digit dims and 12-digit offsets; plus the `__metadata__` entry and 8 bytes
    of length prefix. Slightly generous so a second read is rare.
    """
    return PREFIX_BYTES + 128 + sum(len(n) + 90 for n in tensor_names)


def read_hub(source: Source, *, token: str | bool | None = None, offline: bool | None = None,
             refresh: bool = False, concurrency: int | None = None,
             progress: Callable[[int, int], None] | None = None, deadline: float | None = None) -> Checkpoint:
    """Read a Hub repo's metadata into a Checkpoint in as few sequential round trips as possible."""
    from . import store

    assert source.repo_id is not None
    repo_id = source.repo_id
    revision = source.revision or "main"
    offline = offline_requested() if offline is None else offline
    warnings: list[str] = []

    # The repo id is checked by huggingface_hub (`validate_repo_id`, whose import is a fifth of a
    # warm run) after the saved snapshots are looked for: one found was saved for an id checked
    # then. An id that could name a path outside the cache is checked before.
    from .source import validate_repo_id

    if not store.is_folder_name(repo_id):
        validate_repo_id(repo_id)
    # 0. Pinned to a sha we have read before: the saved snapshot answers with no request at all.
    pinned = revision if SHA_RE.match(revision) else None
    if offline and not pinned:
        pinned = store.load_ref(repo_id, revision)
        if pinned:
            warnings.append(f"offline: using {revision} as last resolved ({pinned[:12]}); it may be stale")
    if pinned and not refresh and not source.filename:
        saved = load_saved(repo_id, pinned, revision, warnings)
        if saved is not None:
            return with_warnings(saved, warnings)
    if not pinned and not offline and not refresh and not source.filename:
        # A branch resolved within BRANCH_TTL_S, whose commit we have read: no request at all (and
        # no HTTP library imported).
        recent = store.load_ref(repo_id, revision, max_age_s=BRANCH_TTL_S)
        saved = load_saved(repo_id, recent, revision, warnings) if recent else None
        if saved is not None:
            return with_warnings(saved, warnings)
    validate_repo_id(repo_id)  # before the HF cache, and before the Hub
    if offline:
        local = from_hf_cache(repo_id, revision)
        if local is not None:
            return local
        if not pinned:
            raise OfflineMiss(f"offline and {repo_id}@{revision} was never read online: run once without --offline")

    from .workers import Parsed, WorkerPool, configured_workers, parse_shard

    workers = max(1, concurrency or env_int("HFMEM_CONCURRENCY", DEFAULT_CONCURRENCY))
    client = HubClient(token=resolve_token(token), offline=offline, refresh=refresh, concurrency=workers,
                       deadline=deadline)
    warnings += client.warnings
    # 1. sha and file list
    # A branch still pointing at a commit we have read needs no second layer: no connection is
    # opened for one when the branch last pointed at such a commit (most runs past BRANCH_TTL_S).
    last = None if pinned or refresh or source.filename else store.load_ref(repo_id, revision)
    sha, files = client.revision_info(repo_id, pinned or revision,
                                      warm=not (last and store.snapshot_path(repo_id, last).is_file()))
    if not pinned:
        store.save_ref(repo_id, revision, sha)  # (the revision call is never answered from the cache)
        # A branch that still points at a commit we have read: nothing more to fetch.
        if not refresh and not source.filename:
            saved = load_saved(repo_id, sha, revision, warnings)
            if saved is not None:
                return with_warnings(saved, warnings)
    if source.filename:
        if source.filename not in files:
            raise EntryNotFound(f"{repo_id} has no file {source.filename!r} at {revision}")
        listing = {source.filename: files[source.filename]}
        plan = plan_weights(listing)
        wanted_json = [n for n in METADATA_FILES if n in files]
    else:
        listing = dict(files)
        plan = plan_weights(listing)
        wanted_json = [n for n in (*METADATA_FILES, plan.index_file) if n and n in files]

    # The commit's snapshot is written as the headers arrive, and put in place once everything is
    # read and valid. Headers are parsed in one parsing thread or, for a model of more than one wave
    # of shards, in worker processes (inspector/workers.py), while the request threads go on.
    with (snapshot_writer(repo_id, revision, sha, warnings) if not source.filename else nullcontext()) as snapshot, \
            stopping_executor(1, deadline) as parser, WorkerPool(deadline) as processes:
        # The JSON files, and the tasks that parse them, have threads of their own beside the shard
        # readers': on a reader thread, a JSON read put that thread's chain of shards one round trip
        # behind the others, and DeepSeek-V3's 163 shards over 64 threads took 8 layers, not 7.
        with stopping_executor(len(wanted_json) + 2, deadline) as meta, \
                stopping_executor(max(1, workers), deadline) as pool:
            # 2. every small JSON file at once
            json_futures: dict[str, Future[bytes]] = {
                n: meta.submit(client.read_file, repo_id, sha, n) for n in wanted_json
            }
            json_files: dict[str, Any] = {}
            headers = LazyHeaders()
            tallies: dict[str, FileTally] = {}
            sizes: dict[str, int | None] = {}
            grouped: Future[dict[str, list[str]]] | None = None
            if plan.format == "safetensors":
                candidates = list(plan.files) or [
                    n for n in listing if n.endswith(".safetensors") and "/" not in n
                ]
                # The index is parsed and grouped by shard once, by whichever shard task needs it
                # first; it was submitted first, so no task waits on one that cannot start. Worker
                # processes start once it is read (by its shard and tensor counts; without an index,
                # by the listing's), a round trip before the first header arrives: not beside the
                # second layer's requests, whose sending they would slow down (~0.1 s of CPU each).
                if plan.index_file and plan.index_file in json_futures:
                    def group() -> dict[str, list[str]]:
                        assert plan.index_file is not None
                        by_shard = _tensors_by_shard(json_futures[plan.index_file], plan.index_file, json_files)
                        wanted = configured_workers(len(by_shard), sum(map(len, by_shard.values())))
                        if wanted:  # started by the parsing thread, idle until headers arrive: every
                            parser.submit(processes.start, wanted)  # shard task waits on this one
                        return by_shard

                    grouped = meta.submit(group)
                else:
                    parser.submit(processes.start, configured_workers(len(candidates)))

                # How tensors count depends on config.json (and a quantization config): known by the
                # time the first header arrives, so each shard is tallied as it arrives, in the time
                # other reads are in flight, not all 92,000 tensors of DeepSeek-V3 after the last one.
                context = meta.submit(_count_context, json_futures, json_files)

                failed = threading.Event()

                def shard_task(name: str) -> tuple[bytes, Future[Parsed]] | None:
                    # Once one shard has failed the read is over: a thread that picks up the next
                    # shard before the failure reaches this thread (and cancels the queue) sends
                    # nothing. (The failed shard's future still holds its error, raised below.)
                    if failed.is_set():
                        return None
                    try:
                        return read_one_shard(name)
                    except BaseException:
                        failed.set()
                        raise

                def read_one_shard(name: str) -> tuple[bytes, Future[Parsed]] | None:
                    # The redirect needs only the name, so it travels beside config.json and the index;
                    # the CDN read waits for the index, which sizes it. The bytes are handed to the
                    # parsing thread or a worker process, and this thread goes on to its next request
                    # at once. (Parsing in the request thread itself, each wave of 64 DeepSeek-V3
                    # shards queued ~0.3 s of CPU before any thread sent its next request.)
                    located = client.locate(repo_id, sha, name)
                    predicted = SPECULATIVE_HEADER_BYTES
                    if grouped is not None:
                        names = grouped.result().get(name)
                        if not names:
                            return None  # a .safetensors file the index does not use
                        predicted = predict_header_bytes(names)
                    data, file_bytes = client.header_bytes(repo_id, sha, name, predicted, located)
                    if processes.started:
                        return data, processes.submit(name, data, file_bytes, context.result())
                    return data, parser.submit(parse_shard, name, data, file_bytes, context.result())

                shard_futures = {n: pool.submit(shard_task, n) for n in candidates}
                done = 0
                for name, fut in shard_futures.items():
                    task = _result(fut, deadline, repo_id)
                    if task is not None:
                        data, parsing = task
                        parsed = processes.wait(parsing)
                        _keep(headers, snapshot, name, parsed, data)
                        sizes[name] = parsed.file_bytes
                        if parsed.tally is not None:
                            tallies[name] = parsed.tally
                    done += 1
                    if progress:
                        progress(done, len(shard_futures))
            if grouped is not None:
                _result(grouped, deadline, repo_id)  # the index, parsed by the grouping task (its error shows here)
            for name, json_fut in json_futures.items():
                if name not in json_files:
                    json_files[name] = load_config_json(_result(json_fut, deadline, repo_id), name)
            json_files = {n: json_files[n] for n in json_futures}  # in a stable order
            if plan.format == "safetensors" and plan.index_file:
                # A shard the index names but whose name the file list did not suggest: read it now.
                index = json_files[plan.index_file]
                extra = [s for s in shards_from_index(index, plan.index_file) if s not in headers]
                for s in extra:
                    if s not in files:
                        raise EntryNotFound(f"{repo_id}: {plan.index_file} names {s!r}, which is not in the repo")
                def read_extra(shard: str) -> Header:
                    return client.read_header(repo_id, sha, shard, SPECULATIVE_HEADER_BYTES)

                for s, h in zip(extra, pool.map(read_extra, extra), strict=True):
                    _keep(headers, snapshot, s, Parsed(h.header_bytes, h.file_bytes, None, h))
                    sizes[s] = h.file_bytes

        for name, file_bytes in sizes.items():
            listing[name] = file_bytes if file_bytes is not None else listing.get(name)
        cp = Checkpoint(
            name=repo_id if not source.filename else f"{repo_id}/{source.filename}",
            files=listing,
            json_files=json_files,
            headers=headers,
            plan=plan,
            repo_id=repo_id,
            revision=revision,
            sha=sha,
            warnings=tuple(dict.fromkeys([*warnings, *client.warnings])),
            tallies=tallies,
        )
        _ = cp.weight_files  # validates the index before anything is saved
        cp = commit_snapshot(cp, snapshot, {n: f.result() for n, f in json_futures.items()})
    return cp


@contextmanager
def stopping_executor(max_workers: int, deadline: float | None = None) -> Iterator[ThreadPoolExecutor]:
    """A thread pool whose block, when it fails, cancels the tasks not yet started: a failed read
    ends once the requests in flight do, not after every other shard of the model was read (as
    `with ThreadPoolExecutor` would), and Ctrl-C leaves it at once, without waiting for those. (The
    CLI then exits at once; in a library caller's process they end by their own timeouts.)"""
    pool = ThreadPoolExecutor(max_workers=max_workers)
    try:
        yield pool
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    except BaseException:
        # Past the deadline a thread still running (stuck where no timeout reaches) is not waited for.
        late = deadline is not None and time.monotonic() >= deadline
        pool.shutdown(wait=not late, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _result(future: Future[Any], deadline: float | None, what: str) -> Any:
    """A future's result, waited for until the deadline and DEADLINE_SLACK_S more at most: every
    request is cut at the deadline, so a task still running then is stuck (a DNS lookup, a lock)."""
    if deadline is None:
        return future.result()
    from concurrent.futures import TimeoutError as FutureTimeout  # (3.10: not the builtin)

    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()) + DEADLINE_SLACK_S)
    except FutureTimeout:
        raise NetworkError(f"{what}: gave up at the --timeout deadline (a read did not end)") from None


def _tensors_by_shard(index_bytes: Future[bytes], index_file: str, parsed: dict[str, Any]) -> dict[str, list[str]]:
    """The index's tensor names by shard; the parsed index is left in `parsed` (parsed once)."""
    index = parsed[index_file] = load_config_json(index_bytes.result(), index_file)
    by_shard: dict[str, list[str]] = {}
    weight_map = index.get("weight_map")
    for tensor, shard in (weight_map.items() if isinstance(weight_map, dict) else ()):
        by_shard.setdefault(str(shard), []).append(str(tensor))
    return by_shard


def _count_context(json_futures: Mapping[str, Future[bytes]], parsed: dict[str, Any]) -> CountContext | None:
    """The counting context from config.json and any quantization config; None when one of them
    cannot be read (its error is raised where the files are parsed, and nothing is tallied early)."""
    from .params import count_context

    try:
        for name in METADATA_FILES:
            if name in json_futures:
                parsed[name] = load_config_json(json_futures[name].result(), name)
        config = parsed.get("config.json")
        return count_context(config if isinstance(config, dict) else {}, quantization_config(parsed))
    except Exception:  # noqa: BLE001 - raised again, in its place, when the files are parsed
        return None


def _keep(headers: LazyHeaders, snapshot: SnapshotWriter | None, name: str, parsed: Parsed,
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


