"""A fake Hugging Face Hub on 127.0.0.1 with its CDN on 127.0.0.2, serving fixture snapshots.

It answers the endpoints the real Hub has, the way it has them:
- `GET /api/models/{repo}/revision/{rev}`: {"id", "sha", "siblings": [{"rfilename", "size"}]}
- `GET /api/models/{repo}/tree/{rev}?cursor=N`: a page of {"type", "path", "size"}, `Link: <...>; rel="next"`
- `GET /{repo}/resolve/{rev}/{file}`: small files directly (Range honoured), `.safetensors` files as
  a 302 to the CDN host, as the Hub redirects LFS files
- errors with the Hub's `X-Error-Code`: RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo
The CDN serves `/cdn/{key}` with Range (206 + Content-Range). Safetensors files are virtual: the
header bytes are built from the snapshot and the data section reads as zeros, so a 100 GB model
costs nothing. Every request is logged (host, path, Range, whether Authorization came, status, start
and end times, body bytes written). `FakeHub(tls=True)` serves both hosts over HTTPS with a
certificate from the test CA in tests/certs; `ForwardProxy` is a plain-HTTP forward proxy to put in
front of it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

VALID_TOKEN = "hf_fake_valid_token_0123456789"
#: Test-only TLS material (tests/certs/make.sh): CA_BUNDLE signs the certificate both hosts serve.
CERTS = Path(__file__).parent / "certs"
CA_BUNDLE = CERTS / "ca.pem"


@dataclass
class VirtualFile:
    """A file whose first bytes are `head` and whose remaining `size - len(head)` bytes are zeros."""

    head: bytes
    size: int

    def read(self, first: int, last: int) -> bytes:
        last = min(last, self.size - 1)
        if first > last:
            return b""
        out = self.head[first : last + 1]
        return out + b"\0" * (last + 1 - first - len(out))


def safetensors_head(header: dict[str, Any]) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw


@dataclass
class Repo:
    repo_id: str
    sha: str
    files: dict[str, VirtualFile]
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False


class _QuietServer(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a client opening 16+ connections at once then
    # waits out TCP's 1 s SYN retransmit, which a real Hub or CDN never makes it do.
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-body is expected in these tests


@dataclass
class Logged:
    host: str
    path: str
    range: str | None
    authorized: bool
    status: int = 0
    # Set by the handler, for timing and byte counts (bench/run.py): time.monotonic() when the
    # request line was parsed and when the last body byte was written, and body bytes written.
    started_s: float = 0.0
    ended_s: float = 0.0
    body_bytes: int = 0


def repo_from_snapshot(path: Path, repo_id: str | None = None, *, gated: bool = False) -> Repo:
    data = path.read_bytes()
    snap = json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)
    repo_id = repo_id or snap["source"]["repo_id"]
    files: dict[str, VirtualFile] = {}
    for name, obj in snap["json"].items():
        body = json.dumps(obj, indent=2).encode()
        files[name] = VirtualFile(body, len(body))
    for name, entry in snap["headers"].items():
        head = safetensors_head(entry["header"])
        data_end = max((t["data_offsets"][1] for k, t in entry["header"].items() if k != "__metadata__"), default=0)
        files[name] = VirtualFile(head, len(head) + data_end)
    sha = snap.get("sha") or hashlib.sha1(repo_id.encode()).hexdigest()
    return Repo(repo_id, sha, files, refs={"main": sha}, gated=gated)


@dataclass
class Fault:
    """A fault the fake servers inject into the next `times` requests whose host role (`hub`,
    `cdn` or `any`) and path (containing `path`) match:
    - `hang`: accept, never answer (until the client gives up);
    - `reset`: send the headers and half the body, then reset the connection (RST);
    - `truncate`: announce the whole Content-Length, send half, close cleanly;
    - `wrong_range`: answer a Range with a Content-Range for other bytes;
    - `slow`: answer after `seconds` (a latency spike);
    - `trickle`: send the body one byte every `seconds`."""

    kind: str
    role: str = "any"
    path: str = ""
    times: int = 1
    seconds: float = 0.0

    def matches(self, role: str, path: str) -> bool:
        return self.times > 0 and self.role in (role, "any") and self.path in path


class FakeHub:
    """Both servers, the repos they serve, the request log and the knobs tests turn."""

    def __init__(self, *, tls: bool = False) -> None:
        """`tls`: both hosts speak HTTPS, with a certificate that CA_BUNDLE signs."""
        self.scheme = "https" if tls else "http"
        self.repos: dict[str, Repo] = {}
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        self.latency_s = 0.0
        self.connect_latency_s = 0.0  # before a new connection's first request: TCP and TLS handshakes
        self.connections: list[tuple[str, float]] = []  # (host role, time.monotonic()) of each accepted
        self.tree_page_size = 1000
        self.omit_siblings = False
        self.ignore_range = False
        self.lowercase_headers = False  # header names as some servers and HTTP/2 gateways send them
        self.fail_next: list[tuple[int, dict[str, str]]] = []  # (status, headers) answered first
        self.faults: list[Fault] = []
        # A hostile or broken server: (role, path, status, headers, body) -> what is sent instead.
        # A Content-Length it sets is sent as given (the connection is then closed after the body).
        self.rewrite: Callable[[str, str, int, dict[str, str], Any], tuple[int, dict[str, str], Any]] | None = None
        self._cdn_files: dict[str, VirtualFile] = {}
        self.hub = _QuietServer(("127.0.0.1", 0), self._handler("hub"))
        self.cdn = _QuietServer(("127.0.0.2", 0), self._handler("cdn"))
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(CERTS / "fakehub.pem", CERTS / "fakehub-key.pem")
            for server in (self.hub, self.cdn):  # (each handshake is done by its request's thread)
                server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        for server in (self.hub, self.cdn):
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.hub.server_address[1]}"

    @property
    def cdn_base(self) -> str:
        return f"{self.scheme}://127.0.0.2:{self.cdn.server_address[1]}"

    def add(self, repo: Repo) -> Repo:
        self.repos[repo.repo_id] = repo
        return repo

    def reset(self) -> None:
        with self.lock:
            self.log.clear()
            self.connections.clear()
        self.latency_s = 0.0
        self.connect_latency_s = 0.0
        self.tree_page_size = 1000
        self.omit_siblings = False
        self.ignore_range = False
        self.lowercase_headers = False
        self.fail_next.clear()
        self.faults.clear()
        self.rewrite = None

    def close(self) -> None:
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()

    # -- request handling ------------------------------------------------------------------------

    def _handler(self, role: str) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as real HTTP servers set it (nginx's `tcp_nodelay on` default; CDNs):
            # with Nagle's algorithm the body, written after the headers, waited for the client's
            # delayed ACK of them, ~10-40 ms a response on a kept-alive connection.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    # (TCP_NODELAY from the start, as servers set it on accept: the handshake's last
                    # writes, the session tickets, then leave together, not one per delayed ACK)
                    self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
                    self.request.do_handshake()  # a client refusing the certificate ends it here
                with hub.lock:
                    hub.connections.append((role, time.monotonic()))
                if hub.connect_latency_s:
                    time.sleep(hub.connect_latency_s)
                super().setup()

            def do_GET(self) -> None:  # noqa: N802
                entry = Logged(role, self.path, self.headers.get("Range"), "Authorization" in self.headers,
                               started_s=time.monotonic())
                with hub.lock:
                    hub.log.append(entry)
                if hub.latency_s:
                    time.sleep(hub.latency_s)
                fault = hub._take_fault(role, self.path)
                if fault and fault.kind == "hang":
                    time.sleep(fault.seconds or 3600)
                    self.close_connection = True
                    return
                if fault and fault.kind == "slow":
                    time.sleep(fault.seconds)
                status, headers, body = hub._answer(role, self)
                if hub.rewrite is not None:
                    status, headers, body = hub.rewrite(role, self.path, status, dict(headers), body)
                    self.close_connection = "Content-Length" in headers
                if fault and fault.kind == "wrong_range" and status == 206:
                    first, last, size = map(int, re.findall(r"\d+", headers["Content-Range"]))
                    headers["Content-Range"] = f"bytes {first + 8}-{last + 8}/{size}"
                entry.status = status
                self.send_response(status)
                size = body.size if isinstance(body, VirtualFile) else len(body)
                for k, v in {"Content-Length": str(size), **headers}.items():
                    self.send_header(k.lower() if hub.lowercase_headers else k, v)
                self.end_headers()
                if fault and fault.kind == "trickle":
                    data = body.read(0, size - 1) if isinstance(body, VirtualFile) else body
                    try:
                        for i in range(len(data)):
                            self.wfile.write(data[i : i + 1])
                            self.wfile.flush()
                            time.sleep(fault.seconds)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                if fault and fault.kind in ("reset", "truncate"):
                    data = body.read(0, size // 2 - 1) if isinstance(body, VirtualFile) else body[: size // 2]
                    self.wfile.write(data)
                    self.wfile.flush()
                    if fault.kind == "reset":  # SO_LINGER 0: close() sends RST, not FIN
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                try:
                    if isinstance(body, VirtualFile):
                        # Stream a whole (virtual) file, as a server ignoring Range would; stops
                        # when the client hangs up.
                        for start in range(0, body.size, 1 << 20):
                            chunk = body.read(start, start + (1 << 20) - 1)
                            self.wfile.write(chunk)
                            entry.body_bytes += len(chunk)
                    else:
                        self.wfile.write(body)
                        entry.body_bytes += len(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                entry.ended_s = time.monotonic()

        return Handler

    def _take_fault(self, role: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(role, path):
                    fault.times -= 1
                    return fault
        return None

    def _answer(self, role: str, req: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            if self.fail_next:
                status, headers = self.fail_next.pop(0)
                return status, headers, b""
        url = urlsplit(req.path)
        if role == "cdn":
            return self._cdn(url.path, req.headers.get("Range"))
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        auth = req.headers.get("Authorization", "")
        if parts[:2] == ["api", "models"]:
            # /api/models/{org}/{name}/{revision|tree}/{rev}
            if len(parts) >= 6 and parts[4] in ("revision", "tree"):
                repo_id, kind, rev = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
            elif len(parts) >= 5 and parts[3] in ("revision", "tree"):
                repo_id, kind, rev = parts[2], parts[3], "/".join(parts[4:])
            else:
                return 404, {}, b"not an endpoint"
            repo, err = self._repo(repo_id, rev, auth)
            if err:
                return err
            if kind == "revision":
                return self._revision(repo)
            return self._tree(repo, parse_qs(url.query))
        # /{org}/{name}/resolve/{rev}/{file} or /{name}/resolve/{rev}/{file}
        i = parts.index("resolve") if "resolve" in parts else -1
        if i not in (1, 2) or len(parts) < i + 3:
            return 404, {}, b"not an endpoint"
        repo_id, rev, filename = "/".join(parts[:i]), parts[i + 1], "/".join(parts[i + 2 :])
        repo, err = self._repo(repo_id, rev, auth)
        if err:
            return err
        f = repo.files.get(filename)
        if f is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}, b""
        if filename.endswith((".safetensors", ".gguf")):  # LFS files: to the CDN
            key = hashlib.sha256(f"{repo.repo_id}/{filename}".encode()).hexdigest()
            location = f"{self.cdn_base}/cdn/{key}?X-Amz-Signature=fake"
            self._cdn_files[key] = f
            return 302, {"Location": location}, b""
        return self._ranged(f, req.headers.get("Range"))

    def _cdn(self, path: str, range_header: str | None) -> tuple[int, dict[str, str], bytes]:
        key = path.rsplit("/", 1)[-1]
        f = self._cdn_files.get(key)
        if f is None:
            return 403, {}, b"signature expired"
        return self._ranged(f, range_header)

    def _ranged(self, f: VirtualFile, range_header: str | None) -> tuple[int, dict[str, str], bytes]:
        if range_header and not self.ignore_range:
            spec = range_header.removeprefix("bytes=")
            first_s, _, last_s = spec.partition("-")
            first, last = int(first_s), int(last_s) if last_s else f.size - 1
            if first >= f.size:
                return 416, {"Content-Range": f"bytes */{f.size}"}, b""
            last = min(last, f.size - 1)
            return 206, {"Content-Range": f"bytes {first}-{last}/{f.size}"}, f.read(first, last)
        return 200, {}, f  # streamed lazily: a multi-GB body is never built in memory

    def _repo(self, repo_id: str, rev: str, auth: str) -> tuple[Repo, None] | tuple[None, tuple]:
        repo = self.repos.get(repo_id)
        if repo is None:
            # The Hub answers 401 for a repo that does not exist (or is private) when anonymous.
            return None, (401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b"")
        if repo.gated and auth != f"Bearer {VALID_TOKEN}":
            msg = "Access to model is restricted. You must have access to it and be authenticated."
            return None, (401, {"X-Error-Code": "GatedRepo", "X-Error-Message": msg}, b"")
        if rev not in repo.refs and rev != repo.sha:
            return None, (404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b"")
        return repo, None

    def _revision(self, repo: Repo) -> tuple[int, dict[str, str], bytes]:
        info: dict[str, Any] = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.sha,
                                "gated": "auto" if repo.gated else False}
        if not self.omit_siblings:
            info["siblings"] = [{"rfilename": n, "size": f.size} for n, f in sorted(repo.files.items())]
        return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()

    def _tree(self, repo: Repo, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        names = sorted(repo.files)
        start = int(query.get("cursor", ["0"])[0])
        page = names[start : start + self.tree_page_size]
        entries = [{"type": "file", "path": n, "size": repo.files[n].size, "oid": "0" * 40} for n in page]
        headers = {"Content-Type": "application/json"}
        if start + self.tree_page_size < len(names):
            nxt = f"/api/models/{repo.repo_id}/tree/{quote(repo.sha)}?cursor={start + self.tree_page_size}"
            headers["Link"] = f'<{self.endpoint}{nxt}>; rel="next"'
        return 200, headers, json.dumps(entries).encode()


class ForwardProxy:
    """A plain-HTTP forward proxy on 127.0.0.1 (as HTTP_PROXY and HTTPS_PROXY name one): for http://
    it takes the whole URL in the request line and relays the request and the answer; for https://
    it opens a CONNECT tunnel and relays bytes both ways. It logs each request's host:port (a
    tunnel's once) and any request it could not read as one. With the block."""

    def __init__(self, *, tls: bool = False) -> None:
        """`tls`: the proxy itself speaks HTTPS (an https:// proxy), with a certificate CA_BUNDLE signs."""
        self.log: list[str] = []  # host:port of each request relayed, or tunnel opened
        self.bad: list[str] = []  # the first line of each request that was neither
        self.scheme = "https" if tls else "http"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.do_handshake()
                super().setup()

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                proxy.bad.append(self.raw_requestline[:60].decode("latin-1", "replace"))
                super().send_error(code, message, explain)

            def do_CONNECT(self) -> None:  # noqa: N802
                import selectors

                proxy.log.append(self.path)
                host, _, port = self.path.rpartition(":")
                try:
                    upstream = socket.create_connection((host, int(port)), timeout=30)
                except (OSError, ValueError):
                    self.send_error(502)
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                # (a selector, not select.select: select fails on descriptors >= 1024, which a
                # whole suite's process reaches, and each tunnel then broke as the client connected)
                ends = selectors.DefaultSelector()
                ends.register(self.connection, selectors.EVENT_READ)
                ends.register(upstream, selectors.EVENT_READ)
                try:
                    while True:
                        readable = [key.fileobj for key, _ in ends.select(30)]
                        if not readable:
                            break
                        for end in readable:
                            data = end.recv(65536)  # type: ignore[union-attr]
                            if not data:
                                return
                            (upstream if end is self.connection else self.connection).sendall(data)
                except OSError:
                    pass
                finally:
                    ends.close()
                    upstream.close()
                    self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802
                import http.client

                url = urlsplit(self.path)
                if not url.scheme:  # an origin-form target: not a proxy request
                    self.send_error(400, "a proxy needs the whole URL")
                    return
                proxy.log.append(url.netloc)
                hop = {"connection", "keep-alive", "proxy-authorization", "proxy-connection"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                upstream = http.client.HTTPConnection(url.netloc, timeout=30)
                try:
                    upstream.request("GET", url.path + (f"?{url.query}" if url.query else ""), headers=headers)
                    answer = upstream.getresponse()
                    body = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in hop | {"transfer-encoding", "content-length"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(CERTS / "fakehub.pem", CERTS / "fakehub-key.pem")
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                     do_handshake_on_connect=False)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ForwardProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
