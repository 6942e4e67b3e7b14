"""The cache shared through Redis (HFMEM_REDIS_URL), against a real `redis-server` and the fake Hub.

The server is the distribution's (`apt-get install redis-server`; `.ci/run` installs it), started
here on 127.0.0.1 with no persistence. In CI (CI=true) a missing server or client fails these tests;
on a developer's machine they are skipped, saying why.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakehub import VALID_TOKEN

GPT2 = "openai-community/gpt2"
MIXTRAL = "mistralai/Mixtral-8x7B-v0.1"  # an index and 19 shards
LLAMA = "meta-llama/Llama-2-7b-hf"  # gated in the fake Hub (tests/conftest.py)
#: How long a started server may take to answer PING (our bound; it takes milliseconds).
START_TIMEOUT_S = 20.0


def _missing(what: str) -> None:
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI: {what} (.ci/run installs it)")
    pytest.skip(f"{what}: the Redis tests need it (apt-get install redis-server; pip install -e '.[dev]')")


@dataclass
class RedisServer:
    """One `redis-server` process on 127.0.0.1, and a client to it."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):  # noqa: ANN201 (redis.Redis, imported only when the server exists)
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill ends it; returns once the process is gone."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def entries(self) -> dict[bytes, bytes]:
        """Every key and its value, whatever the type (a hash's fields and values joined)."""
        client, out = self.client(), {}
        for key in client.scan_iter("*"):
            kind = client.type(key)
            if kind == b"string":
                out[key] = client.get(key)
            elif kind == b"hash":
                out[key] = b"\n".join(k + b"=" + v for k, v in client.hgetall(key).items())
            else:
                out[key] = repr(kind).encode()
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(directory: Path) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server is not installed")
    try:
        import redis
    except ImportError:
        _missing("the redis client is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # a port taken between _free_port and the bind: another one
        port = _free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(directory), "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = RedisServer(process, port)
        deadline = time.monotonic() + START_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping():
                    return server
            except redis.ConnectionError:
                time.sleep(0.05)  # polled until PING answers, within START_TIMEOUT_S
        server.kill() if process.poll() is None else None
        if time.monotonic() >= deadline:
            break
    pytest.fail(f"redis-server did not answer PING within {START_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """A redis-server for the whole session; each test empties it first (`redis`)."""
    server = _start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    redis_server.client().flushall()
    return redis_server


@pytest.fixture
def doomed_redis(tmp_path) -> Iterator[RedisServer]:
    """A redis-server of its own, for a test to kill."""
    server = _start_redis(tmp_path / "doomed-redis")
    yield server
    server.kill()


def _hfmem(*args: str, cache: Path, redis_url: str | None,
           token: str | None = None) -> subprocess.CompletedProcess[str]:
    """One hfmem process with its own cache dir, against the fake Hub (HF_ENDPOINT)."""
    env = {**os.environ, "HFMEM_CACHE_DIR": str(cache)}
    env.pop("HFMEM_REDIS_URL", None)
    if redis_url:
        env["HFMEM_REDIS_URL"] = redis_url
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-c", "from inspector.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def _uncached(fake_hub, model: str, tmp_path: Path, token: str | None = None) -> tuple[str, int]:
    """(the JSON, the number of requests) of a run with no Redis and an empty cache."""
    fake_hub.log.clear()
    run = _hfmem(model, "--json", cache=tmp_path / "reference", redis_url=None, token=token)
    assert run.returncode == 0, run.stderr
    return run.stdout, len(fake_hub.log)


def _answer(stdout: str) -> dict[str, object]:
    """The JSON less its `warnings` (which say that Redis could not be used)."""
    return {k: v for k, v in json.loads(stdout).items() if k != "warnings"}


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize("model", [GPT2, MIXTRAL])
def test_two_processes_share_answers_through_redis(fake_hub, redis, tmp_path, model) -> None:
    """The second process, with an empty cache dir of its own, reads the JSON files and the
    header Range reads from Redis: it asks the Hub only where the revision points and where each
    shard redirects (never cached), and the CDN nothing."""
    fake_hub.log.clear()
    first = _hfmem(model, "--json", cache=tmp_path / "a", redis_url=redis.url)
    assert first.returncode == 0 and _warnings(first.stderr) == [], first.stderr
    sent_first = list(fake_hub.log)
    fake_hub.log.clear()
    second = _hfmem(model, "--json", cache=tmp_path / "b", redis_url=redis.url)
    assert second.returncode == 0 and _warnings(second.stderr) == [], second.stderr
    assert json.loads(second.stdout) == json.loads(first.stdout)
    sent = list(fake_hub.log)
    assert len(sent) < len(sent_first)
    assert [e for e in sent if e.host == "cdn"] == []  # every header from Redis
    assert all(e.status in (200, 302) for e in sent)
    assert [e.path for e in sent if e.status == 200] == [f"/api/models/{model}/revision/main"]
    assert any(key.startswith(b"hfmem:") for key in redis.entries())


def test_a_redis_that_died_between_runs_means_an_uncached_run(fake_hub, doomed_redis, tmp_path) -> None:
    """Killed after one run filled it: the next run warns once, asks the Hub for everything, and
    answers the same; its snapshot is kept, so a third run needs neither Redis nor the Hub."""
    expected, requests = _uncached(fake_hub, MIXTRAL, tmp_path)
    assert _hfmem(MIXTRAL, "--json", cache=tmp_path / "a", redis_url=doomed_redis.url).returncode == 0
    doomed_redis.kill()
    fake_hub.log.clear()
    run = _hfmem(MIXTRAL, "--json", cache=tmp_path / "b", redis_url=doomed_redis.url)
    assert run.returncode == 0, run.stderr
    assert _answer(run.stdout) == _answer(expected)
    [warning] = _warnings(run.stderr)
    assert warning.startswith("warning: cannot use the Redis cache (HFMEM_REDIS_URL) (")
    assert "running without" in warning
    assert str(doomed_redis.port) in warning and "redis://" not in warning
    assert len(fake_hub.log) == requests
    fake_hub.log.clear()
    again = _hfmem(MIXTRAL, "--json", cache=tmp_path / "b", redis_url=doomed_redis.url)
    assert again.returncode == 0 and _answer(again.stdout) == _answer(expected)
    assert fake_hub.log == [] and _warnings(again.stderr) == []


def test_a_redis_that_dies_during_a_run_means_finishing_it_uncached(fake_hub, doomed_redis, tmp_path,
                                                                    monkeypatch) -> None:
    """Killed while the run is under way (when the fake Hub's CDN gets the first header read, it
    kills the server before answering): the run saves nothing there, finishes without it, warns
    once, and answers as an uncached run does."""
    expected, _ = _uncached(fake_hub, MIXTRAL, tmp_path)
    take_fault = fake_hub._take_fault

    def kill_at_first_header_read(role: str, path: str):  # (in the fake Hub's request thread)
        if role == "cdn":
            doomed_redis.kill()
        return take_fault(role, path)

    monkeypatch.setattr(fake_hub, "_take_fault", kill_at_first_header_read)
    fake_hub.log.clear()
    run = _hfmem(MIXTRAL, "--json", cache=tmp_path / "a", redis_url=doomed_redis.url)
    assert doomed_redis.process.poll() is not None  # it did die under the run
    assert run.returncode == 0, run.stderr
    assert _answer(run.stdout) == _answer(expected)
    [warning] = _warnings(run.stderr)
    assert warning.startswith("warning: cannot use the Redis cache (HFMEM_REDIS_URL)")
    monkeypatch.setattr(fake_hub, "_take_fault", take_fault)
    fake_hub.log.clear()
    again = _hfmem(MIXTRAL, "--json", cache=tmp_path / "a", redis_url=doomed_redis.url)
    assert again.returncode == 0 and _answer(again.stdout) == _answer(expected)
    assert fake_hub.log == []  # the snapshot was written all the same


def test_an_unreachable_redis_at_start_means_an_uncached_run(fake_hub, tmp_path) -> None:
    expected, requests = _uncached(fake_hub, GPT2, tmp_path)
    with socket.socket() as closed:  # bound, never listening: connections to it are refused
        closed.bind(("127.0.0.1", 0))
        fake_hub.log.clear()
        url = f"redis://:s3cret-password@127.0.0.1:{closed.getsockname()[1]}/0"
        run = _hfmem(GPT2, "--json", cache=tmp_path / "a", redis_url=url)
    assert run.returncode == 0, run.stderr
    assert _answer(run.stdout) == _answer(expected) and len(fake_hub.log) == requests
    [warning] = _warnings(run.stderr)
    assert "Redis cache (HFMEM_REDIS_URL)" in warning and "s3cret" not in run.stderr


def test_a_gated_answer_in_redis_is_served_only_with_its_token(fake_hub, redis, tmp_path) -> None:
    """A reads a gated repo with the token and fills Redis; B (no token, or another) is refused
    by the Hub (exit 5); C, with A's token and an empty cache dir, is served from Redis. The token
    is stored nowhere in Redis, nor its hash."""
    fake_hub.log.clear()
    a = _hfmem(LLAMA, "--json", cache=tmp_path / "a", redis_url=redis.url, token=VALID_TOKEN)
    assert a.returncode == 0, a.stderr
    sent_a = len(fake_hub.log)
    for token in (None, "hf_another_users_token"):
        b = _hfmem(LLAMA, "--json", cache=tmp_path / "b", redis_url=redis.url, token=token)
        assert b.returncode == 5 and b.stdout == "" and "gated" in b.stderr.lower(), b.stderr
    fake_hub.log.clear()
    c = _hfmem(LLAMA, "--json", cache=tmp_path / "c", redis_url=redis.url, token=VALID_TOKEN)
    assert c.returncode == 0 and json.loads(c.stdout) == json.loads(a.stdout)
    assert len(fake_hub.log) < sent_a and [e for e in fake_hub.log if e.host == "cdn"] == []
    assert not any(e.path.endswith(".json") and e.status == 200 for e in fake_hub.log)
    stored = b"\n".join(k + b"\n" + v for k, v in redis.entries().items())
    assert b"hfmem:" in stored
    for secret in (VALID_TOKEN, hashlib.sha256(VALID_TOKEN.encode()).hexdigest(),
                   hashlib.sha256(f"Bearer {VALID_TOKEN}".encode()).hexdigest()):
        assert secret.encode() not in stored


def _client(fake_hub, redis: RedisServer, monkeypatch, cache: Path, token: str | None):
    from inspector.hub import HubClient

    monkeypatch.setenv("HFMEM_REDIS_URL", redis.url)
    monkeypatch.setenv("HFMEM_CACHE_DIR", str(cache))
    return HubClient(token=token)


def test_a_client_without_the_token_never_reads_a_gated_answer_from_redis(fake_hub, redis, tmp_path,
                                                                          monkeypatch) -> None:
    """Below the CLI (whose first request, where the revision points, is never cached, and is
    refused without the token): a client asking for a gated file pinned to its commit, which a
    client with the token put in Redis, is answered by the Hub (GatedRepo), never by the cache."""
    from inspector.errors import GatedRepo

    sha = fake_hub.repos[LLAMA].sha
    with_token = _client(fake_hub, redis, monkeypatch, tmp_path / "a", VALID_TOKEN)
    config = with_token.read_file(LLAMA, sha, "config.json")
    for token in (None, "hf_another_users_token"):
        fake_hub.log.clear()
        with pytest.raises(GatedRepo):
            _client(fake_hub, redis, monkeypatch, tmp_path / f"b{token}", token).read_file(LLAMA, sha, "config.json")
        assert [e.path for e in fake_hub.log] == [f"/{LLAMA}/resolve/{sha}/config.json"]
    fake_hub.log.clear()
    assert _client(fake_hub, redis, monkeypatch, tmp_path / "c", VALID_TOKEN).read_file(LLAMA, sha, "config.json") \
        == config
    assert fake_hub.log == []  # from Redis


class _RunsCode:
    """A pickle that, loaded, creates a file: what a poisoned entry would do to a pickle cache."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("poison", ["pickle", "garbage", "json", "hash"])
def test_a_poisoned_entry_in_redis_is_a_miss(fake_hub, redis, tmp_path, monkeypatch, poison) -> None:
    """Whatever a key of hfmem's holds that hfmem did not write (a pickle that runs code, bytes,
    JSON of another shape, another Redis type) is a miss: the Hub answers, no code runs."""
    sha = fake_hub.repos[GPT2].sha
    config = _client(fake_hub, redis, monkeypatch, tmp_path / "a", None).read_file(GPT2, sha, "config.json")
    marker = tmp_path / "pickle-ran"
    client = redis.client()
    [key] = [k for k in client.scan_iter("hfmem:*")]
    client.delete(key)
    if poison == "hash":
        client.hset(key, "field", "value")
    else:
        client.set(key, {"pickle": pickle.dumps(_RunsCode(marker)), "garbage": b"\xff\x00" * 100,
                         "json": b'{"status_code": "x", "url": []}'}[poison])
    fake_hub.log.clear()
    assert _client(fake_hub, redis, monkeypatch, tmp_path / "b", None).read_file(GPT2, sha, "config.json") == config
    assert not marker.exists()
    assert [e.path for e in fake_hub.log] == [f"/{GPT2}/resolve/{sha}/config.json"]


def test_an_entry_longer_than_the_cap_is_a_miss_read_no_further(fake_hub, redis, tmp_path, monkeypatch) -> None:
    """An entry longer than MAX_REDIS_ENTRY_BYTES is a miss, and no more than the cap (+1) of it
    is read. (The cap, ~171 MB, is lowered here so that the test stores kilobytes, not a GB.)"""
    from inspector import cache

    sha = fake_hub.repos[GPT2].sha
    config = _client(fake_hub, redis, monkeypatch, tmp_path / "a", None).read_file(GPT2, sha, "config.json")
    [key] = [k for k in redis.client().scan_iter("hfmem:*")]
    stored = redis.client().strlen(key)
    monkeypatch.setattr(cache, "MAX_REDIS_ENTRY_BYTES", stored - 1, raising=False)
    fake_hub.log.clear()
    assert _client(fake_hub, redis, monkeypatch, tmp_path / "b", None).read_file(GPT2, sha, "config.json") == config
    assert [e.path for e in fake_hub.log] == [f"/{GPT2}/resolve/{sha}/config.json"]
    # (the miss wrote the entry again, its length a few bytes off: elapsed time, dates)
    monkeypatch.setattr(cache, "MAX_REDIS_ENTRY_BYTES", redis.client().strlen(key), raising=False)
    fake_hub.log.clear()
    assert _client(fake_hub, redis, monkeypatch, tmp_path / "c", None).read_file(GPT2, sha, "config.json") == config
    assert fake_hub.log == []  # at the cap exactly: a hit


def test_the_cap_covers_the_largest_body_cached() -> None:
    """A MAX_JSON_BYTES body, base64-encoded in its JSON record, is within the cap."""
    from inspector import cache

    assert cache.MAX_REDIS_ENTRY_BYTES >= (cache.MAX_JSON_BYTES + 2) // 3 * 4 + 64 * 1024
