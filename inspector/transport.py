"""One GET, done right: redirects followed by hand (the token never reaches another origin, and
https:// never falls back to http://), retries with backoff for refused, reset, cut and 5xx
answers, every wait bounded by the --timeout deadline, bodies read within bounds (`bodies`), and
a cache that breaks mid-run traded for plain sessions. Nothing here knows the Hub's protocol.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from .bodies import ACCEPT_ENCODING, body_limit, decode_before_caching, read_limited
from .connections import DEADLINE, Connections, Watchdog, plain_session
from .env import DEFAULT_ENDPOINT, split_login, timeout_s
from .errors import NetworkError, OfflineMiss

#: Shard requests in flight at once (the JSON files have threads of their own): each wave of 64
#: shards costs two round trips (the redirect, then the CDN read). Our policy.
DEFAULT_CONCURRENCY = 64


@dataclass
class Response:
    """What we keep of an HTTP answer: never the request headers (they may hold the token)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str
    from_cache: bool


# Our own policy, not a Hub number: 4 tries (backoff 0.5, 1, 2 s) keep a flaky link usable while a
# CI job still fails within about a minute; a Retry-After beyond 10 s is capped to stay in that
# bound; 5 redirect hops cover a renamed repo plus the CDN with room to spare.
MAX_ATTEMPTS = 4


MAX_RETRY_AFTER_S = 10.0


MAX_REDIRECTS = 5


def _user_agent() -> str:
    from .version import __version__

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


def origin_key(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, the port filled in; None for any other URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def checked_url(current: str, reference: str | None, what: str, named: str) -> str:
    """`reference` (a Location or Link target) made absolute against `current`, refused (one line,
    exit 7) unless it is a well-formed http(s) URL: never a file://, an ftp:// or a malformed one."""
    host = urlsplit(current).netloc
    if not reference or not reference.isprintable() or any(c.isspace() for c in reference):
        raise NetworkError(f"{what}: {host} sent {named} a malformed address; refused")
    try:
        target = urljoin(current, reference)
    except ValueError:
        target = ""
    if origin_key(target) is None:
        scheme = urlsplit(target).scheme if "://" in target else ""
        kind = f"a {scheme}:// address" if scheme and scheme.isalnum() else "a malformed address"
        raise NetworkError(f"{what}: {host} sent {named} {kind[:40]}; refused")
    return target


def redirect_target(current: str, location: str | None, what: str) -> str:
    """Where a redirect leads, checked (`checked_url`); a redirect from https:// to plain http://
    is refused outright: what follows it (the token, a mirror's login, the answer) would travel in
    clear text."""
    target = checked_url(current, location, what, "a redirect to")
    if urlsplit(current).scheme == "https" and urlsplit(target).scheme == "http":
        raise NetworkError(f"{what}: {urlsplit(current).netloc} redirected from https:// to plain http:// "
                           f"({urlsplit(target).netloc}); refused")
    return target


def _untrusted_certificate(error: BaseException) -> str | None:
    """Why the peer's certificate failed verification, when that is what `error` comes from, else None."""
    import ssl

    from .errors import linked_errors

    return next((e.verify_message or str(e) for e in linked_errors(error)
                 if isinstance(e, ssl.SSLCertVerificationError)), None)


class Transport:
    """HTTP to one endpoint with one token: one GET at a time (`get`), redirects followed by hand,
    retries with backoff, the --timeout deadline on every wait, bodies read within bounds; the
    token (or a mirror's login) sent to the endpoint's origin only. The cached sessions are built
    while the first request is in flight."""

    def __init__(self, *, token: str | None, offline: bool = False, base: str | None = None,
                 refresh: bool = False, concurrency: int = DEFAULT_CONCURRENCY,
                 deadline: float | None = None) -> None:
        # A mirror's user:password in HF_ENDPOINT is split off the URL (sent to its host as Basic auth).
        if base is None:
            base, self.login = split_login(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
        else:
            self.login = None
        self.base = base.rstrip("/")
        self.host = urlsplit(self.base).netloc
        # The token (or the mirror's login) goes to this origin only: scheme, host and port alike.
        self.origin = origin_key(self.base)
        if self.origin is None:
            from .errors import UsageError

            raise UsageError(f"HF_ENDPOINT is not an http:// or https:// URL with a host: {self.base[:80]!r}")
        self.token = token
        self.offline = offline
        self.refresh = refresh
        self.timeout = timeout_s()
        self.deadline = deadline  # time.monotonic() after which nothing more is tried (--timeout)
        self.watchdog = Watchdog(deadline) if deadline is not None else None
        self._redirected: dict[str, str] = {}
        self.warnings: list[str] = []
        self.concurrency = concurrency
        self.connections = Connections(self.timeout)
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
        from .cache import OPEN_WAIT_S, uncached

        self._start_building()
        left = 0.0
        if self._builder.is_alive():
            # Never waited on past the deadline or OPEN_WAIT_S: a cache stuck on a lock or a disk
            # (issue 16: the run hung there, whatever --timeout said) costs only its speed.
            left = OPEN_WAIT_S if self.deadline is None else min(OPEN_WAIT_S, self.deadline - time.monotonic())
            self._builder.join(max(0.0, left))
        with self._builder_lock:
            if not self._built and not self._build_error:
                self._built.append(uncached(self.concurrency, self.warnings.append,
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

    def get(self, url: str, *, what: str, byte_range: tuple[int, int] | None = None,
            expire_never: bool = False, force: bool = False, plain: bool = False) -> Response:
        """GET `url`, following redirects by hand; `byte_range` is (first, last), both inclusive."""
        # A pinned file's redirect target was seen by its first read: a second read goes straight there.
        start = url
        url = self._redirected.get(url, url)
        for _ in range(MAX_REDIRECTS + 1):
            r = self.get_once(url, what=what, byte_range=byte_range, expire_never=expire_never, force=force,
                               plain=plain)
            if r.status in (301, 302, 303, 307, 308):
                url = redirect_target(url, r.headers.get("Location"), what)
                expire_never = True  # a redirect target is content-addressed or pinned
                continue
            if url != start and expire_never and r.status < 400:
                self._redirected[start] = url
            return r
        raise NetworkError(f"{what}: more than {MAX_REDIRECTS} redirects")

    def get_once(self, url: str, *, what: str, byte_range: tuple[int, int] | None,
                  expire_never: bool, force: bool, plain: bool = False) -> Response:
        import sqlite3

        import requests.exceptions
        import urllib3.exceptions

        from .cache import import_requests_cache

        headers = {"User-Agent": _user_agent()}
        # The token goes to the endpoint's host only: a CDN host never sees it. A mirror's own
        # user:password (in HF_ENDPOINT) takes its place there, as requests did with it in the URL.
        # Same origin means scheme, host and port: a redirect to http:// on the same host never gets
        # it (one from https:// is refused outright, `redirect_target`), nor another port's server.
        if (self.login or self.token) and origin_key(url) == self.origin:
            headers["Authorization"] = self.login or f"Bearer {self.token}"
        # A header read asks for no content coding (its bytes are counted against the Range); the
        # JSON may come compressed. Either way what arrives is decoded within the body's limit.
        headers["Accept-Encoding"] = "identity" if byte_range is not None else ACCEPT_ENCODING
        limit = body_limit(byte_range)
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
            kwargs["hooks"] = {"response": decode_before_caching(limit, what)}
        delay = 0.5
        host = urlsplit(url).netloc
        for attempt in range(1, MAX_ATTEMPTS + 1):
            timeout = self._remaining(what, host, self.timeout)
            DEADLINE.watchdog, DEADLINE.watched = self.watchdog, []
            try:
                if cached:
                    raw = session.get(url, headers=headers, allow_redirects=False, stream=True,
                                      timeout=timeout, proxies=self.connections.proxies_for(url), **kwargs)
                else:
                    raw = self.connections.send_plain(session, url, headers, timeout)
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
                body = read_limited(raw, byte_range, self.deadline, what, limit)
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
                return self.get_once(url, what=what, byte_range=byte_range, expire_never=expire_never,
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

        from .cache import discard_damaged_cache, uncached

        with self._lock:
            if not hasattr(self.meta_session, "settings"):
                return  # another thread got here first (or the cache was never usable)
            warn: Callable[[str], None] | None = self.warnings.append
            if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError):
                self.warnings.append(discard_damaged_cache())
                warn = None  # said already
            self._built.append(uncached(self.concurrency, warn, error))

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
