"""The Hub reader against the fake Hub: round trips, cache, tokens, errors and exit codes."""

from __future__ import annotations

import os
import select
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
from fakehub import VALID_TOKEN

from inspector import inspect_model
from inspector.api import read_checkpoint
from inspector.cli import run
from inspector.errors import (
    AuthError,
    EntryNotFound,
    GatedRepo,
    NetworkError,
    OfflineMiss,
    RepoNotFound,
    RevisionNotFound,
    UsageError,
)
from inspector.hub import hub_url, predict_header_bytes
from inspector.source import parse_source

LLAMA2 = "meta-llama/Llama-2-7b-hf"
QWEN110 = "Qwen/Qwen1.5-110B"


def test_hub_url_quotes_the_revision_whole() -> None:
    assert hub_url("o/m", revision="refs/pr/1", filename="a b.json", base="http://h") == (
        "http://h/o/m/resolve/refs%2Fpr%2F1/a%20b.json"
    )
    assert hub_url("o/m", revision="main", api="revision", base="http://h/") == "http://h/api/models/o/m/revision/main"


def test_endpoint_is_read_at_call_time(fake_hub, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(NetworkError):
        inspect_model("openai-community/gpt2")
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    assert inspect_model("openai-community/gpt2").parameters.total_params == 124_439_808


def test_llama2_json_through_the_cli(fake_hub, monkeypatch, capsys) -> None:
    import json

    monkeypatch.setenv("HF_TOKEN", VALID_TOKEN)
    assert run([LLAMA2, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parameters"]["total"] == 6_738_415_616
    assert out["revision"] == fake_hub.repos[LLAMA2].sha


def layers(log) -> dict[str, int]:
    kinds = {"api": 0, "resolve": 0, "cdn": 0}
    for e in log:
        kinds["cdn" if e.host == "cdn" else "api" if e.path.startswith("/api/") else "resolve"] += 1
    return kinds


def test_cold_run_is_three_layers_and_warm_runs_send_nothing(fake_hub) -> None:
    repo = fake_hub.repos[QWEN110]
    shards = [n for n in repo.files if n.endswith(".safetensors")]
    inspect_model(QWEN110)
    # 1 revision call; config + 45 shard resolves; 45 CDN reads, each header read whole at once.
    assert layers(fake_hub.log) == {"api": 1, "resolve": 1 + len(shards), "cdn": len(shards)}
    assert all(e.range and e.range.startswith("bytes=0-") for e in fake_hub.log if e.host == "cdn")
    fake_hub.log.clear()
    inspect_model(QWEN110)  # branch, within its expiry: nothing sent
    inspect_model(QWEN110, revision=repo.sha)  # pinned: nothing sent, ever
    assert fake_hub.log == []


def test_connections_are_kept_alive_and_reused(fake_hub, monkeypatch) -> None:
    """On the real Hub each new HTTPS connection costs two round trips (TCP, then TLS 1.3) before its
    request: 45 shards read by 8 threads must reuse 8 connections, not open one per request."""
    monkeypatch.setenv("HFMEM_CONCURRENCY", "8")
    inspect_model(QWEN110)
    assert len(fake_hub.log) == 92
    # (the JSON files and the revision call have threads, and a pool, of their own: a few more)
    opened = [role for role, _ in fake_hub.connections]
    assert opened.count("cdn") <= 8
    assert opened.count("hub") <= 8 + 4


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_the_second_layers_connections_are_opened_during_the_first(tls, monkeypatch) -> None:
    """While the revision call is in flight, the connections the next layer needs are opened
    (hub.WARM_CONNECTIONS): on the real Hub each new one costs a TCP and a TLS handshake, two round
    trips. Over HTTPS the server's session tickets are read first: urllib3 takes an idle connection
    with unread bytes for a closed one, and would open another."""
    from conftest import SNAPSHOTS
    from fakehub import CA_BUNDLE, FakeHub, repo_from_snapshot

    hub = FakeHub(tls=tls)  # (its own ports: no connection of an earlier test is in the pools)
    try:
        hub.add(repo_from_snapshot(SNAPSHOTS / "openai-community--gpt2.json"))
        hub.latency_s = 0.2  # the warming's time, with a wide margin (on loopback it takes milliseconds)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        if tls:
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(CA_BUNDLE))
        inspect_model("openai-community/gpt2")
        revision = next(e for e in hub.log if "/revision/" in e.path)
        second = [e for e in hub.log if e.host == "hub" and e is not revision]
        assert len(second) == 2  # config.json and the weights' redirect, at once
        assert all(e.started_s > revision.ended_s for e in second)
        late = [t for role, t in hub.connections if role == "hub" and t > revision.ended_s]
        assert late == []  # the second layer opened no connection: they were open already
    finally:
        hub.close()



def test_a_read_goes_on_when_no_thread_can_be_started_to_open_connections(fake_hub, monkeypatch) -> None:
    """Opening connections ahead only saves time: when the process can start no more threads for it
    (RuntimeError), the connections taken go back to the pool and the read goes on without them."""
    import inspector.connections

    class NoWarmThread(threading.Thread):
        def start(self) -> None:
            if self.name == "hfmem-warm":
                raise RuntimeError("can't start new thread")
            super().start()

    monkeypatch.setattr(inspector.connections.threading, "Thread", NoWarmThread)
    assert inspect_model("openai-community/gpt2").parameters.total_params == 124_439_808


@pytest.mark.parametrize("then,usable", [(b"", True), (b"HTTP/1.1 200 OK\r\n", False), (None, False)],
                         ids=["tickets", "data", "closed"])
def test_a_warm_connection_is_kept_only_if_the_server_sent_nothing_but_tickets(then, usable) -> None:
    """After the TLS 1.3 handshake the server's session tickets are read (urllib3 would take them for
    a closed connection); a server that sends data before any request, or closes, leaves a
    connection no request can use."""
    import ssl

    from fakehub import CA_BUNDLE, CERTS

    from inspector.connections import read_session_tickets

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(CERTS / "fakehub.pem", CERTS / "fakehub-key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:  # sends its tickets
            if then is None:
                tls.close()
            elif then:
                tls.sendall(then)
            done.wait(5)

    threading.Thread(target=serve, daemon=True).start()
    client_ctx = ssl.create_default_context(cafile=str(CA_BUNDLE))
    with listener, client_ctx.wrap_socket(socket.create_connection(listener.getsockname()),
                                          server_hostname="127.0.0.1") as sock:
        assert sock.version() == "TLSv1.3"
        time.sleep(0.2)  # (whatever the server sends after the handshake has arrived)
        assert read_session_tickets(sock, 0.5) is usable
        if usable:
            assert not select.select([sock], [], [], 0)[0]  # nothing left unread: not taken for closed
        done.set()


def test_refresh_asks_again(fake_hub) -> None:
    inspect_model("openai-community/gpt2")
    fake_hub.log.clear()
    inspect_model("openai-community/gpt2", refresh=True)
    assert any(e.path.startswith("/api/") for e in fake_hub.log)


def test_prediction_reads_each_header_in_one_range(fake_hub) -> None:
    inspect_model("mistralai/Mixtral-8x7B-v0.1")
    cdn = [e for e in fake_hub.log if e.host == "cdn"]
    assert cdn and all(e.status == 206 for e in cdn)
    assert len(cdn) == len({e.path for e in cdn})  # no second read of any shard


def test_long_header_gets_exactly_one_more_read(fake_hub, monkeypatch) -> None:
    import inspector.hub as hub

    monkeypatch.setattr(hub, "SPECULATIVE_HEADER_BYTES", 1024)  # gpt2's header is ~14 KB
    report = inspect_model("openai-community/gpt2")
    assert report.parameters.total_params == 124_439_808
    ranges = [e.range for e in fake_hub.log if e.host == "cdn"]
    assert ranges[0] == "bytes=0-1023"
    assert len(ranges) == 2 and ranges[1].startswith("bytes=1024-")
    # The second read goes straight to the CDN URL the first one was redirected to.
    assert len([e for e in fake_hub.log if e.path.endswith("/model.safetensors")]) == 1


def test_predicted_size_covers_real_headers() -> None:
    names = [f"model.layers.{i}.self_attn.q_proj.weight" for i in range(100)]
    # A real entry: "name":{"dtype":"BF16","shape":[8192,8192],"data_offsets":[123456789012,123456789013]},
    entry = len('"":{"dtype":"BF16","shape":[8192,8192],"data_offsets":[123456789012,123456789013]},')
    assert predict_header_bytes(names) >= 8 + sum(len(n) + entry for n in names)


def test_server_ignoring_range_still_gives_the_exact_count(fake_hub) -> None:
    fake_hub.ignore_range = True
    assert inspect_model("openai-community/gpt2").parameters.total_params == 124_439_808


def test_token_goes_to_the_hub_only_and_never_into_the_cache(fake_hub, tmp_path) -> None:
    report = inspect_model(LLAMA2, token=VALID_TOKEN)
    assert report.parameters.total_params == 6_738_415_616
    hub_requests = [e for e in fake_hub.log if e.host == "hub"]
    cdn_requests = [e for e in fake_hub.log if e.host == "cdn"]
    assert hub_requests and all(e.authorized for e in hub_requests)
    assert cdn_requests and not any(e.authorized for e in cdn_requests)
    cache = Path(os.environ["HFMEM_CACHE_DIR"])
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert VALID_TOKEN.encode() not in p.read_bytes(), p
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_a_token_with_white_space_around_is_trimmed_and_one_with_a_line_break_inside_refused(fake_hub, capsys) -> None:
    """`--token "$(cat token.txt)"` of a CRLF file keeps a carriage return: dropped, as huggingface_hub
    drops it from HF_TOKEN. A control character inside a token is refused (exit 2) and never shown;
    one that reached a request anyway fails it without showing it either."""
    from inspector.hub import HubClient

    assert run([LLAMA2, "--token", f" {VALID_TOKEN}\r\n", "--json", "-q"]) == 0
    capsys.readouterr()
    assert run(["meta-llama/Meta-Llama-3-8B", "--token", "hf_SECRET\rpart", "-q"]) == 2  # (not read yet)
    err = capsys.readouterr().err
    assert "control character" in err and "SECRET" not in err
    client = HubClient(token="hf_SECRET\rpart")
    with pytest.raises(NetworkError) as caught:
        client.revision_info(LLAMA2, "main")
    assert "SECRET" not in str(caught.value)


def test_gated_without_token(fake_hub) -> None:
    with pytest.raises(GatedRepo, match="request access at .*meta-llama/Llama-2-7b-hf, then set HF_TOKEN"):
        inspect_model(LLAMA2)


def test_gated_with_a_token_that_has_no_access(fake_hub) -> None:
    with pytest.raises(GatedRepo, match="your token has no access"):
        inspect_model(LLAMA2, token="hf_someone_else")


def test_token_from_hf_token_variable_and_from_stored_login(fake_hub, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_TOKEN", VALID_TOKEN)
    assert inspect_model(LLAMA2).parameters.total_params == 6_738_415_616
    monkeypatch.delenv("HF_TOKEN")
    import huggingface_hub.constants as c

    Path(c.HF_TOKEN_PATH).parent.mkdir(parents=True, exist_ok=True)
    Path(c.HF_TOKEN_PATH).write_text(VALID_TOKEN)
    assert inspect_model("meta-llama/Meta-Llama-3-8B").parameters.total_params == 8_030_261_248


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["nobody/nothing"], 4, "repo nobody/nothing not found on http://127.0.0.1"),
        (["openai-community/gpt2", "--revision", "v9"], 4, "revision 'v9' not found in openai-community/gpt2"),
        ([LLAMA2], 5, "meta-llama/Llama-2-7b-hf is gated: request access"),
    ],
)
def test_error_exit_codes(fake_hub, capsys, args, code, message) -> None:
    assert run(args) == code
    err = capsys.readouterr().err
    assert err.startswith("hfmem: error: ") and message in err
    assert err.count("\n") == 1


def test_missing_file_in_a_blob_url(fake_hub) -> None:
    with pytest.raises(EntryNotFound, match="no file 'nope.safetensors'"):
        inspect_model(f"{fake_hub.endpoint}/openai-community/gpt2/blob/main/nope.safetensors")


def test_single_file_from_a_blob_url(fake_hub) -> None:
    r = inspect_model(f"{fake_hub.endpoint}/openai-community/gpt2/blob/main/model.safetensors")
    assert r.parameters.total_params == 124_439_808


def test_unreachable_hub_exits_7(monkeypatch, capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr("inspector.transport.time.sleep", lambda s: None)
    assert run(["openai-community/gpt2"]) == 7
    assert "unreachable" in capsys.readouterr().err


def test_hung_server_is_abandoned_within_the_timeout(monkeypatch) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts, never answers
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:  # closed at the end of the test
                return

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "0.5")
    monkeypatch.setattr("inspector.transport.time.sleep", lambda s: None)
    start = time.monotonic()
    with pytest.raises(NetworkError, match="timed out"):
        inspect_model("openai-community/gpt2")
    assert time.monotonic() - start < 4 * 0.5 + 5  # every attempt times out; a wide margin
    listener.close()
    for conn in accepted:
        conn.close()


def test_retries_5xx_and_429_with_retry_after(fake_hub, monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("inspector.transport.time.sleep", slept.append)
    fake_hub.fail_next += [(503, {}), (429, {"Retry-After": "2"})]
    assert inspect_model("openai-community/gpt2").parameters.total_params == 124_439_808
    assert 2.0 in slept


def test_retries_are_bounded(fake_hub, monkeypatch, capsys) -> None:
    monkeypatch.setattr("inspector.transport.time.sleep", lambda s: None)
    fake_hub.fail_next += [(502, {})] * 10
    assert run(["openai-community/gpt2"]) == 7
    assert "HTTP 502" in capsys.readouterr().err


def test_tree_api_pagination_when_no_file_list(fake_hub) -> None:
    fake_hub.omit_siblings = True
    fake_hub.tree_page_size = 10
    report = inspect_model(QWEN110)
    assert report.parameters.total_params == 111_209_914_368
    pages = [e for e in fake_hub.log if "/tree/" in e.path]
    assert len(pages) == 5  # 45 shards + config.json = 46 files, 10 a page


def test_offline_uses_last_resolved_branch_with_a_warning(fake_hub, monkeypatch, capsys) -> None:
    inspect_model("openai-community/gpt2")
    fake_hub.log.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run(["openai-community/gpt2"]) == 0
    assert "may be stale" in capsys.readouterr().err
    assert fake_hub.log == []


def test_offline_miss_exits_8(fake_hub, capsys) -> None:
    assert run(["openai-community/gpt2", "--offline"]) == 8
    err = capsys.readouterr().err
    assert "offline" in err and "openai-community/gpt2" in err
    assert fake_hub.log == []


def test_offline_reads_the_local_hf_cache(tmp_path, monkeypatch, capsys) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    sha = "b" * 40
    repo = Path(os.environ["HF_HOME"]) / "hub" / "models--someone--tiny"
    (repo / "snapshots" / sha).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    save_file({"w": np.zeros((3, 4), np.float16)}, str(repo / "snapshots" / sha / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert inspect_model("someone/tiny").parameters.total_params == 12


def test_revision_with_slashes_reaches_the_hub_quoted(fake_hub) -> None:
    repo = fake_hub.repos["openai-community/gpt2"]
    repo.refs["refs/pr/1"] = repo.sha
    try:
        assert inspect_model("openai-community/gpt2", revision="refs/pr/1").checkpoint.sha == repo.sha
        assert any("/revision/refs%2Fpr%2F1" in e.path for e in fake_hub.log)
    finally:
        del repo.refs["refs/pr/1"]


def test_invalid_token_is_reported_as_auth_error() -> None:
    from inspector.hub import Response, raise_for_hub_status

    r = Response(401, {"X-Error-Message": "Invalid credentials in Authorization header"}, b"", "http://h/x", False)
    with pytest.raises(AuthError, match="refused the token"):
        raise_for_hub_status(r, repo_id="o/m", revision="main", authenticated=True)


@pytest.mark.parametrize(
    "error,code",
    [(RepoNotFound, 4), (RevisionNotFound, 4), (EntryNotFound, 4), (GatedRepo, 5), (AuthError, 5),
     (NetworkError, 7), (OfflineMiss, 8)],
)
def test_error_types_carry_shared_design_exit_codes(error, code) -> None:
    # shared/DESIGN.md's exit-code table, row by row.
    assert error.exit_code == code


def test_cache_info_clear_prune(fake_hub, capsys) -> None:
    import json

    inspect_model("openai-community/gpt2")
    assert run(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == os.environ["HFMEM_CACHE_DIR"]
    assert info["snapshots"] == 1 and info["refs"] == 1 and info["http_responses"] >= 1 and info["bytes"] > 0
    assert run(["cache", "prune", "--older-than", "0"]) == 0
    capsys.readouterr()
    assert run(["cache", "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["snapshots"] == 0
    assert run(["cache", "clear"]) == 0
    assert "removed" in capsys.readouterr().err
    assert not Path(os.environ["HFMEM_CACHE_DIR"]).exists()
    assert run(["cache", "info"]) == 0
    assert "snapshots       0" in capsys.readouterr().out


def test_warm_runs_answer_from_the_digest_exactly_as_cold(fake_hub, tmp_path) -> None:
    """A pinned warm run reads the counts from `<sha>.digest.json`, never the 45 headers, and
    reports exactly what the cold run did; --save-snapshot from it still writes every header."""
    from inspector.checkpoint import to_snapshot
    from inspector.store import snapshot_path

    repo = fake_hub.repos[QWEN110]
    cold = inspect_model(QWEN110, revision=repo.sha)
    digest = snapshot_path(QWEN110, repo.sha).with_name(f"{repo.sha}.digest.json")
    assert digest.is_file() and stat.S_IMODE(digest.stat().st_mode) == 0o600
    fake_hub.log.clear()
    warm = inspect_model(QWEN110, revision=repo.sha)
    assert fake_hub.log == [] and read_checkpoint(parse_source(QWEN110, repo.sha)).counts is not None
    assert warm.to_dict() == cold.to_dict()
    assert to_snapshot(warm.checkpoint) == to_snapshot(cold.checkpoint)  # headers loaded on demand


@pytest.mark.parametrize("damage", ["garbage", "other-version", "missing"])
def test_a_bad_or_foreign_digest_falls_back_to_the_snapshot(fake_hub, damage) -> None:
    import json

    from inspector.store import snapshot_path

    repo = fake_hub.repos[QWEN110]
    cold = inspect_model(QWEN110, revision=repo.sha)
    digest = snapshot_path(QWEN110, repo.sha).with_name(f"{repo.sha}.digest.json")
    if damage == "garbage":
        digest.write_bytes(b"\x00{not json")
    elif damage == "other-version":
        digest.write_text(json.dumps({**json.loads(digest.read_text()), "hfmem": "0.0.0-other"}))
    else:
        digest.unlink()
    fake_hub.log.clear()
    assert read_checkpoint(parse_source(QWEN110, repo.sha)).counts is None  # counted again from the headers
    warm = inspect_model(QWEN110, revision=repo.sha)
    assert fake_hub.log == []
    assert warm.to_dict() == cold.to_dict()
    assert digest.is_file()  # and a good digest is written again


def test_redis_is_imported_only_when_configured(fake_hub, tmp_path) -> None:
    """A stand-in `redis` package first on the path leaves a marker when imported: a run without
    HFMEM_REDIS_URL must not import it; with it set, the run imports it (and, as this one refuses
    to load, says to install the extra)."""
    import subprocess
    import sys

    fake = tmp_path / "site" / "redis"
    fake.mkdir(parents=True)
    marker = tmp_path / "redis-imported"
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('stand-in')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    cmd = [sys.executable, "-c", "from inspector.cli import main; main()", "openai-community/gpt2", "--json", "-q"]
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=60).returncode == 0
    assert not marker.exists()
    out = subprocess.run([*cmd, "--refresh"], env={**env, "HFMEM_REDIS_URL": "redis://127.0.0.1:1/0"},
                         capture_output=True, text=True, timeout=60)
    assert marker.exists() and out.returncode == 2 and "pip install 'hfmem[redis]'" in out.stderr


def test_proxies_come_from_the_environment_once_per_host(monkeypatch) -> None:
    from inspector.hub import HubClient

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "cdn.example")
    client = HubClient(token=None, base="https://hub.example")
    assert client.connections.proxies_for("https://hub.example/api/models/x")["https"] == "http://proxy.example:3128"
    assert client.connections.proxies_for("https://cdn.example/file") == {}  # NO_PROXY
    assert client.meta_session.trust_env is False and client.range_session.trust_env is False


@pytest.mark.parametrize("no_proxy,proxied", [("", {"hub", "cdn"}), ("127.0.0.2", {"hub"})])
def test_requests_go_through_the_environments_proxy(fake_hub, capsys, monkeypatch, no_proxy, proxied) -> None:
    """HTTP_PROXY carries every request (the whole URL in the request line, as a forward proxy
    needs), except to a host NO_PROXY names; the answer is the same."""
    import json

    from fakehub import ForwardProxy

    hosts = {fake_hub.endpoint.split("//")[1]: "hub", fake_hub.cdn_base.split("//")[1]: "cdn"}
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", no_proxy)
        assert run([QWEN110, "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["total"] == 111_209_914_368
    assert {hosts[h] for h in proxy.log} == proxied
    assert len(proxy.log) == sum(1 for e in fake_hub.log if e.host in proxied)


@pytest.fixture
def tls_hub(monkeypatch):
    """A fake Hub whose hub and CDN hosts speak HTTPS, with a certificate from a test CA."""
    from conftest import SNAPSHOTS
    from fakehub import FakeHub, repo_from_snapshot

    hub = FakeHub(tls=True)
    hub.add(repo_from_snapshot(SNAPSHOTS / "Qwen--Qwen1.5-110B.json"))
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    yield hub
    hub.close()


def test_https_hub_and_cdn_with_the_ca_bundle_requests_reads(tls_hub, capsys, monkeypatch) -> None:
    import json

    from fakehub import CA_BUNDLE

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(CA_BUNDLE))
    assert run([QWEN110, "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["total"] == 111_209_914_368
    assert {e.host for e in tls_hub.log} == {"hub", "cdn"}


@pytest.mark.parametrize("proxy_tls", [False, True], ids=["http-proxy", "https-proxy"])
def test_https_through_a_proxys_connect_tunnels(tls_hub, capsys, monkeypatch, proxy_tls) -> None:
    """HTTPS_PROXY, as behind a company's proxy: every connection to the Hub and its CDN is a CONNECT
    tunnel, inside which TLS is verified against the host's own certificate. Nothing reaches the
    proxy that it cannot read as a request (a connection opened ahead of its request would send it
    a TLS handshake: connections.Connections.warm opens none through a proxy). An https:// proxy's own
    certificate is checked against REQUESTS_CA_BUNDLE too (a company's proxy, a company's CA)."""
    import json

    from fakehub import CA_BUNDLE, ForwardProxy

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(CA_BUNDLE))
    hosts = {tls_hub.endpoint.split("//")[1]: "hub", tls_hub.cdn_base.split("//")[1]: "cdn"}
    with ForwardProxy(tls=proxy_tls) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        assert run([QWEN110, "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["total"] == 111_209_914_368
    assert proxy.bad == []
    assert {hosts[h] for h in proxy.log} == {"hub", "cdn"}
    # the fake Hub was reached through tunnels only (in one loaded full run, by 50 of the 63 opened)
    assert len(tls_hub.connections) <= len(proxy.log)


@pytest.mark.parametrize("trusted_by", ["REQUESTS_CA_BUNDLE", "default"])
def test_the_ca_bundle_is_read_once_for_all_connections(tls_hub, capsys, monkeypatch, tmp_path, trusted_by) -> None:
    """requests gives urllib3 the bundle's path, which it reads again for each new connection (20-40
    ms for certifi's); here one SSL context per bundle serves every connection of the process,
    whether the bundle is the environment's or requests' default (certifi's)."""
    import ssl

    import requests.adapters
    import requests.utils
    from fakehub import CA_BUNDLE

    import inspector.connections

    bundle = tmp_path / "bundle.pem"  # certifi's certificates and the test CA, as a company's bundle is
    bundle.write_bytes(Path(requests.utils.DEFAULT_CA_BUNDLE_PATH).read_bytes() + CA_BUNDLE.read_bytes())
    if trusted_by == "default":  # what requests trusts when nothing says otherwise
        monkeypatch.setattr(requests.utils, "DEFAULT_CA_BUNDLE_PATH", str(bundle))
        monkeypatch.setattr(requests.adapters, "DEFAULT_CA_BUNDLE_PATH", str(bundle))
    else:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    monkeypatch.setattr(inspector.connections, "_TLS_CONTEXTS", {}, raising=False)
    loads = []
    original = ssl.SSLContext.load_verify_locations
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations",
                        lambda self, *a, **k: loads.append(a or k) or original(self, *a, **k))
    assert run([QWEN110, "--json", "-q"]) == 0
    assert sum(e.host == "cdn" for e in tls_hub.log) == 45 and len(loads) == 1


def test_an_unreadable_ca_bundle_is_a_one_line_usage_error(tls_hub, capsys, monkeypatch, tmp_path) -> None:
    import inspector.connections

    monkeypatch.setattr(inspector.connections, "_TLS_CONTEXTS", {}, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    assert run([QWEN110, "--json", "-q"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "missing.pem" in err and "REQUESTS_CA_BUNDLE" in err


def test_an_untrusted_certificate_is_refused_at_once_with_the_remedy(tls_hub, capsys) -> None:
    """Certificates are verified on every path (the plain urllib3 one too); a failed verification
    is not retried, and the one line names REQUESTS_CA_BUNDLE."""
    assert run([QWEN110, "--json", "-q"]) == 7
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "TLS certificate of 127.0.0.1" in err and "not trusted" in err and "REQUESTS_CA_BUNDLE" in err
    assert tls_hub.log == []  # no request got past the handshake


def test_header_names_in_any_case_are_understood(fake_hub, capsys) -> None:
    """HTTP header names are case-insensitive (RFC 9110 5.1): a server sending `content-range` and
    `location` in lower case gives the same answer."""
    import json

    fake_hub.lowercase_headers = True
    assert run([QWEN110, "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["total"] == 111_209_914_368
    assert {e.status for e in fake_hub.log} == {200, 206, 302}


def test_warm_runs_and_start_up_import_no_http_or_table_library(fake_hub) -> None:
    """--version, --help and a warm pinned or recent-branch run need neither requests(-cache) nor
    tabulate (JSON output), nor huggingface_hub (the repo id was checked when its snapshot was
    saved); a fresh interpreter shows what each imports."""
    import subprocess
    import sys

    sha = fake_hub.repos[QWEN110].sha
    inspect_model(QWEN110)  # cold: the snapshot, digest and branch ref are saved
    probe = ("import sys; from inspector.cli import run; run({args!r}); "
             "print(sorted(m for m in ('requests', 'requests_cache', 'tabulate', 'urllib3', 'huggingface_hub') "
             "if m in sys.modules))")
    for args in (["--version"], ["--help"], [QWEN110, "--revision", sha, "--json"], [QWEN110, "--json"]):
        out = subprocess.run([sys.executable, "-c", probe.format(args=args)], capture_output=True, text=True,
                             env=os.environ, timeout=60)
        assert out.stdout.splitlines()[-1] == "[]", (args, out.stdout[-300:], out.stderr[-300:])



@pytest.mark.parametrize("repo_id", ["not a repo id!", "org/na..me", "org/name--x", "a/..\\..\\b"])
def test_an_invalid_repo_id_is_refused_before_any_request(fake_hub, repo_id) -> None:
    """The repo id is checked by huggingface_hub after hfmem's own cache is looked in (a warm run
    then imports no huggingface_hub), and still before the HF cache or the Hub."""
    with pytest.raises(UsageError, match="not a path on disk nor a valid repo id"):
        inspect_model(repo_id)
    with pytest.raises(UsageError, match="not a path on disk nor a valid repo id"):
        inspect_model(repo_id, offline=True)
    assert fake_hub.log == []


def test_an_invalid_repo_id_is_not_answered_by_another_ids_snapshot(fake_hub) -> None:
    """`a--b` names the same cache folder as `a/b`, and a very long id no file at all: neither is
    answered from the cache of `a/b`, online, pinned or offline; both are refused as before."""
    repo = fake_hub.repos["openai-community/gpt2"]
    inspect_model("openai-community/gpt2")
    fake_hub.log.clear()
    for kwargs in ({}, {"revision": repo.sha}, {"offline": True}):
        with pytest.raises(UsageError, match="valid repo id"):
            inspect_model("openai-community--gpt2", **kwargs)
        with pytest.raises(UsageError, match="valid repo id"):
            inspect_model("a" * 300, **kwargs)
    assert fake_hub.log == []


def test_no_connection_is_opened_ahead_when_the_branch_last_pointed_at_a_saved_commit(fake_hub) -> None:
    """Past the branch's 10 minutes the revision call is asked again; when the branch still points
    at the commit read before, that one request is the whole run: nothing is opened for a second
    layer. (A fresh process: no connection of this one's pools.)"""
    import subprocess
    import sys

    import inspector.store

    inspect_model("openai-community/gpt2")
    ref = inspector.store.ref_path("openai-community/gpt2", "main")
    os.utime(ref, (time.time() - 3600, time.time() - 3600))
    fake_hub.log.clear()
    fake_hub.connections.clear()
    probe = "from inspector.cli import run; import sys; sys.exit(run(['openai-community/gpt2', '--json', '-q']))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, env=os.environ, timeout=60)
    assert done.returncode == 0, done.stderr[-300:]
    assert [e.path for e in fake_hub.log] == ["/api/models/openai-community/gpt2/revision/main"]
    assert len(fake_hub.connections) == 1

@pytest.mark.parametrize("repo_id", ["openai/gpt-oss-20b", "TheBloke/Llama-2-7B-GPTQ", "mistralai/Mixtral-8x7B-v0.1"])
def test_shards_tallied_as_they_arrive_count_as_a_count_afterwards(fake_hub, repo_id) -> None:
    """The Hub reader tallies each shard while other reads are in flight; the merged count is
    exactly the one made from the headers afterwards (MXFP4 + fused experts, GPTQ's padding biases
    from the config, Mixtral's per-expert tensors)."""
    from inspector.params import count_parameters

    report = inspect_model(repo_id)
    read = read_checkpoint(parse_source(repo_id), refresh=True)  # (read again from the Hub, tallied)
    assert read.tallies is not None and set(read.tallies) == set(read.checkpoint.weight_files)
    assert report.parameters == count_parameters(read.checkpoint, read.tallies) == count_parameters(read.checkpoint)


def test_a_tally_made_under_another_config_is_not_used(fake_hub) -> None:
    """Tallies depend on config.json (here DeepSeek's multi-token-prediction layer count): with
    another config, they are counted again rather than reused."""
    from dataclasses import replace

    from inspector.params import count_parameters

    read = read_checkpoint(parse_source("deepseek-ai/DeepSeek-V3"))
    cp = read.checkpoint
    config = {**cp.config, "num_nextn_predict_layers": 0}
    other = replace(cp, json_files={**cp.json_files, "config.json": config})
    fresh = count_parameters(other)
    assert count_parameters(other, read.tallies) == fresh
    assert fresh.weights.mtp_params == 0 < count_parameters(cp, read.tallies).weights.mtp_params


def test_the_saved_snapshot_holds_each_header_as_the_file_does(fake_hub) -> None:
    """The commit's snapshot is written as the headers arrive, each header's JSON text as the file
    holds it (not encoded again, and not kept in memory after); reading it back gives the same
    tensor tables and JSON files."""
    import struct

    from inspector.checkpoint import load_snapshot, to_snapshot
    from inspector.store import snapshot_path

    repo = fake_hub.repos[QWEN110]
    cold = inspect_model(QWEN110, revision=repo.sha).checkpoint
    path = snapshot_path(QWEN110, repo.sha)
    text = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not list(path.parent.glob("*.tmp"))
    for name in cold.weight_files:
        (n,) = struct.unpack("<Q", repo.files[name].head[:8])
        assert b':{"header_size":%d,"header":' % n + repo.files[name].head[8 : 8 + n] + b"}" in text
        assert cold.headers[name].raw is None
    saved = load_snapshot(path)
    assert saved.headers == cold.headers and saved.json_files == cold.json_files
    assert to_snapshot(saved)["headers"] == to_snapshot(cold)["headers"]


def test_a_failed_read_leaves_no_snapshot_behind(fake_hub) -> None:
    """The snapshot being written is dropped when the read fails part-way (a shard the Hub
    will not serve): no file, no temporary file."""
    import hashlib

    from fakehub import Fault

    from inspector.store import snapshot_path

    repo = fake_hub.repos[QWEN110]
    shard = sorted(n for n in repo.files if n.endswith(".safetensors"))[7]
    key = hashlib.sha256(f"{QWEN110}/{shard}".encode()).hexdigest()  # its CDN path (fakehub)
    fake_hub.faults.append(Fault("wrong_range", role="cdn", path=key, times=100))
    with pytest.raises(NetworkError):
        inspect_model(QWEN110, revision=repo.sha)
    folder = snapshot_path(QWEN110, repo.sha).parent
    assert not folder.exists() or list(folder.iterdir()) == []


def test_a_large_index_is_kept_in_the_snapshot_not_the_local_http_cache(fake_hub) -> None:
    """An index of DeepSeek-V3's 92,000 tensors (8.9 MB, as the real repo's) is in the commit's
    snapshot; SQLite keeps the small JSON answers only (writing the index there took ~0.1 s on the
    read's critical path)."""
    import dataclasses
    import json

    from fakehub import VirtualFile

    from inspector.cache import LOCAL_JSON_BYTES, build_sessions
    from inspector.checkpoint import SAFETENSORS_INDEX, load_snapshot
    from inspector.store import snapshot_path

    repo = fake_hub.repos["deepseek-ai/DeepSeek-V3"]  # its snapshot has no index: one built from its headers
    weight_map = {}
    for name, f in repo.files.items():
        if name.endswith(".safetensors"):
            n = int.from_bytes(f.head[:8], "little")
            weight_map.update((t, name) for t in json.loads(f.head[8 : 8 + n]) if t != "__metadata__")
    body = json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2).encode()
    indexed = fake_hub.add(dataclasses.replace(repo, repo_id="test/deepseek-v3-indexed",
                                               files={**repo.files, SAFETENSORS_INDEX: VirtualFile(body, len(body))}))
    cp = inspect_model(indexed.repo_id).checkpoint
    assert cp.plan.index_file == SAFETENSORS_INDEX and len(body) > LOCAL_JSON_BYTES > repo.files["config.json"].size
    cache = build_sessions()[0].cache
    url = lambda f: hub_url(indexed.repo_id, revision=indexed.sha, filename=f, base=fake_hub.endpoint)  # noqa: E731
    assert not cache.contains(url=url(SAFETENSORS_INDEX)) and cache.contains(url=url("config.json"))
    assert load_snapshot(snapshot_path(indexed.repo_id, indexed.sha)).json_files[SAFETENSORS_INDEX] == json.loads(body)


# --- issue 16: the token's origin, snapshots per endpoint -----------------------------------------


def test_an_https_redirect_to_plain_http_is_refused_and_the_token_never_sent(tls_hub, capsys, monkeypatch) -> None:
    from fakehub import CA_BUNDLE

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(CA_BUNDLE))
    monkeypatch.setenv("HF_TOKEN", VALID_TOKEN)
    port = tls_hub.hub.server_address[1]

    def downgrade(role, path, status, headers, body):  # the same host and port, in clear text
        if role == "hub" and path.endswith("config.json"):
            return 302, {"Location": f"http://127.0.0.1:{port}{path}"}, b""
        return status, headers, body

    tls_hub.rewrite = downgrade
    assert run([QWEN110, "--json", "-q"]) == 7
    err = capsys.readouterr().err
    assert "from https:// to plain http:// (127.0.0.1:" in err and err.count("\n") == 1
    assert VALID_TOKEN not in err


def test_the_token_goes_to_the_endpoints_origin_only_relative_redirects_included(fake_hub, monkeypatch) -> None:
    from fakehub import FakeHub

    other = FakeHub()  # the same host (127.0.0.1), another port: another server
    other.add(fake_hub.repos["openai-community/gpt2"])
    try:
        monkeypatch.setenv("HF_TOKEN", VALID_TOKEN)

        def elsewhere(role, path, status, headers, body):
            if role == "hub" and path.endswith("/config.json"):
                return 302, {"Location": f"{other.endpoint}{path}"}, b""
            if role == "hub" and "/revision/" in path and "moved=1" not in path:
                return 302, {"Location": path + "?moved=1"}, b""  # relative: same origin
            return status, headers, body

        fake_hub.rewrite = elsewhere
        assert inspect_model("openai-community/gpt2").parameters.total_params == 124_439_808
        assert [e.authorized for e in other.log] == [False]
        assert [e.authorized for e in fake_hub.log if "/revision/" in e.path] == [True, True]
    finally:
        other.close()


def test_a_snapshot_read_from_one_endpoint_is_never_served_for_another(fake_hub, monkeypatch) -> None:
    from fakehub import FakeHub, Repo, VirtualFile, safetensors_head

    gpt2 = fake_hub.repos["openai-community/gpt2"]
    assert inspect_model("openai-community/gpt2", revision=gpt2.sha).parameters.total_params == 124_439_808
    mirror = FakeHub()  # the same repo and commit sha, another answer
    head = safetensors_head({"w": {"dtype": "F16", "shape": [10, 10], "data_offsets": [0, 200]}})
    files = {n: f for n, f in gpt2.files.items() if n.endswith(".json")}
    mirror.add(Repo(gpt2.repo_id, gpt2.sha, {**files, "model.safetensors": VirtualFile(head, len(head) + 200)},
                    refs={"main": gpt2.sha}))
    try:
        monkeypatch.setenv("HF_ENDPOINT", mirror.endpoint)
        assert inspect_model("openai-community/gpt2", revision=gpt2.sha).parameters.total_params == 100
        assert mirror.log  # asked, not answered from the other endpoint's snapshot
        monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
        fake_hub.log.clear()
        assert inspect_model("openai-community/gpt2", revision=gpt2.sha).parameters.total_params == 124_439_808
        assert fake_hub.log == []  # each endpoint's snapshot answers its own warm runs
    finally:
        mirror.close()
