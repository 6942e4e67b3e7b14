"""Connections: shared pools and adapters (one per process, so every session reuses a host's
connections), TLS contexts read once per CA bundle, the proxies of each host, connections opened
ahead of the requests that need them, and the deadline watchdog that cuts a body still arriving
at --timeout.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any


def plain_session(pool_size: int) -> Any:
    """A requests session with no cache, configured as the cached ones are."""
    import requests

    session = requests.Session()
    configure(session, pool_size)
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


def configure(session: Any, pool_size: int) -> None:
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


def connect(pool: Any, conn: Any, timeout: float) -> None:
    """Connect one of the pool's connections as a request would (TCP, TLS with the pool's context
    and host name check), unless it is connected already, and put it back in the pool."""
    try:
        if conn.sock is None:
            conn.timeout = timeout
            started = time.monotonic()
            conn.connect()
            if not read_session_tickets(conn.sock, time.monotonic() - started):
                conn.close()
    except Exception:  # noqa: BLE001 - left to the request that takes this slot: it connects anew
        conn.close()
    pool._put_conn(conn)


def read_session_tickets(sock: Any, handshake_s: float) -> bool:
    """Read the session tickets a TLS 1.3 server sends after the handshake. Unread, they leave the
    idle connection's socket readable, and urllib3 takes a readable idle connection for one the
    server closed: it would close this one and open another. They arrive about a round trip after
    the handshake; waited for at most as long as the handshake took. False: the server sent data
    or closed the connection, which no request can use."""
    import ssl

    from urllib3.util.wait import wait_for_read  # (poll where there is one: select fails on fds >= 1024)

    if getattr(sock, "version", lambda: None)() != "TLSv1.3":
        return True  # plain TCP, or TLS 1.2: nothing follows the handshake
    # At least 50 ms, our policy: on loopback the handshake takes a few ms and a busy server's
    # ticket write can come later (a fresh-clone CI run once saw a warmed connection dropped for
    # tickets that arrived after a 10 ms wait, and the second layer open another). Over a real link
    # the handshake's own round trips are longer, and the revision call the warming runs beside too.
    timeout, wait = sock.gettimeout(), max(handshake_s, 0.05)
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


class PlainResponse:
    """A urllib3 response, seen through the few parts of a requests.Response that the transport uses."""

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


def origin(url: str) -> str:
    """scheme://host[:port] of an absolute URL."""
    return "/".join(url.split("/", 3)[:3])


class Connections:
    """The connections of one read: which urllib3 pool serves a host (its proxy, TLS context and
    CA bundle, chosen once per host as requests would), connections opened ahead of the requests
    that need them, and the proxies the environment names for each host."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._proxies: dict[str, dict[str, str]] = {}
        self._routes: dict[tuple[Any, str], tuple[Any, bool]] = {}

    def send_plain(self, session: Any, url: str, headers: dict[str, str], timeout: float) -> PlainResponse:
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

        pool, whole_url = self.route(session, url)
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
        return PlainResponse(raw)

    def route(self, session: Any, url: str) -> tuple[Any, bool]:
        """(urllib3 pool, whether the request line carries the whole URL: plain HTTP through a proxy)
        for the URL's scheme and host, chosen by the session's requests adapter as for any request.
        (urllib3 2 never closes a pool it evicts from its few per adapter: a pool kept here stays usable.)"""
        origin_ = origin(url)
        route = self._routes.get((session, origin_))
        if route is None:
            import requests

            probe = requests.PreparedRequest()
            probe.prepare(method="GET", url=origin_ + "/")
            assert probe.url is not None
            proxies = self.proxies_for(url)
            adapter = session.get_adapter(probe.url)
            pool = adapter.get_connection_with_tls_context(probe, session.verify, proxies=proxies)
            adapter.cert_verify(pool, probe.url, session.verify, None)
            route = self._routes[(session, origin_)] = (pool, adapter.request_url(probe, proxies) != "/")
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
            pool, _ = self.route(session, url)
            conns = [pool._get_conn() for _ in range(n)]
        except Exception:  # noqa: BLE001 - as above; or a closed pool: nothing is warmed
            return
        for i, conn in enumerate(conns):
            try:
                threading.Thread(target=connect, args=(pool, conn, self.timeout), daemon=True,
                                 name="hfmem-warm").start()
            except RuntimeError:  # no thread to be had: the rest go back unopened
                for idle in conns[i:]:
                    pool._put_conn(idle)
                return

    def proxies_for(self, url: str) -> dict[str, str]:
        """HTTPS_PROXY / HTTP_PROXY / ALL_PROXY for this URL's host unless NO_PROXY exempts it, as
        requests would find them, read once per host (the sessions do not read the environment)."""
        from requests.utils import get_environ_proxies

        host = origin(url)
        if host not in self._proxies:
            self._proxies[host] = get_environ_proxies(url)
        return self._proxies[host]
