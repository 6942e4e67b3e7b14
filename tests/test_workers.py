"""Shard headers parsed in worker processes (inspector/workers.py): the same counts, tables and
errors as parsing in this process, and nothing lost or left behind when a worker fails."""

from __future__ import annotations

import dataclasses
import json
import struct

import pytest

from inspector.api import read_checkpoint
from inspector.cli import run
from inspector.errors import HeaderError
from inspector.header import LazyHeaders, parse_header
from inspector.params import count_parameters
from inspector.source import parse_source
from inspector.workers import WorkerPool, configured_workers, parse_shard

MISTRAL = "mistralai/Mistral-7B-v0.1"


def _read(repo_id: str, workers: int, monkeypatch, tmp_path):
    monkeypatch.setenv("HFMEM_PARSE_WORKERS", str(workers))
    monkeypatch.setenv("HFMEM_CACHE_DIR", str(tmp_path / f"cache-{workers}"))  # each read cold
    return read_checkpoint(parse_source(repo_id))


@pytest.mark.parametrize("repo_id", [MISTRAL, "Qwen/Qwen1.5-110B", "mistralai/Mixtral-8x7B-v0.1",
                                     "openai/gpt-oss-20b", "TheBloke/Llama-2-7B-GPTQ"])
def test_workers_count_and_read_exactly_as_this_process(fake_hub, monkeypatch, tmp_path, repo_id) -> None:
    here = _read(repo_id, 0, monkeypatch, tmp_path)
    there = _read(repo_id, 2, monkeypatch, tmp_path)
    assert count_parameters(there.checkpoint, there.tallies) == count_parameters(here.checkpoint, here.tallies)
    assert there.tallies is not None and set(there.tallies) == set(there.checkpoint.weight_files)
    # The tables a worker validated are parsed here only when asked for, and are the same.
    assert isinstance(there.checkpoint.headers, LazyHeaders)
    assert list(there.checkpoint.headers) == list(here.checkpoint.headers)
    assert dict(there.checkpoint.headers) == dict(here.checkpoint.headers)


def test_the_snapshot_a_worker_read_is_the_same(fake_hub, monkeypatch, tmp_path) -> None:
    from inspector.checkpoint import load_snapshot
    from inspector.store import snapshot_path

    sha = fake_hub.repos[MISTRAL].sha
    saved = []
    for workers in (0, 2):
        _read(MISTRAL, workers, monkeypatch, tmp_path)
        saved.append(load_snapshot(snapshot_path(MISTRAL, sha)))
    assert saved[0].headers == saved[1].headers and saved[0].json_files == saved[1].json_files


def test_a_malformed_header_fails_the_same_in_a_worker(fake_hub, monkeypatch, tmp_path, capsys) -> None:
    """An unknown dtype in the second shard: the same one-line error and exit code 6 either way."""
    repo = fake_hub.repos[MISTRAL]
    shard = sorted(n for n in repo.files if n.endswith(".safetensors"))[1]
    head = repo.files[shard].head
    assert b'"BF16"' in head
    files = {**repo.files, shard: dataclasses.replace(repo.files[shard], head=head.replace(b'"BF16"', b'"BX16"', 1))}
    bad = fake_hub.add(dataclasses.replace(repo, repo_id="test/mistral-bad-dtype", files=files))
    errors = []
    for workers in (0, 2):
        monkeypatch.setenv("HFMEM_PARSE_WORKERS", str(workers))
        monkeypatch.setenv("HFMEM_CACHE_DIR", str(tmp_path / f"cache-{workers}"))
        assert run([bad.repo_id, "--json"]) == 6
        errors.append(capsys.readouterr().err.strip())
    assert errors[0] == errors[1] and "unknown dtype 'BX16'" in errors[0] and shard in errors[0]
    assert len(errors[0].splitlines()) == 1


def _shard_bytes(fake_hub, repo_id: str) -> list[tuple[str, bytes, int]]:
    repo = fake_hub.repos[repo_id]
    out = []
    for name in sorted(n for n in repo.files if n.endswith(".safetensors")):
        f = repo.files[name]
        (n,) = struct.unpack("<Q", f.head[:8])
        out.append((name, f.head[: 8 + n], f.size))
    return out


def test_a_dead_worker_costs_only_speed(fake_hub) -> None:
    """A worker killed mid-read: what it held, and what comes after, is parsed in this process."""
    shards = _shard_bytes(fake_hub, "mistralai/Mixtral-8x7B-v0.1")
    expected = [parse_shard(name, data, size, None) for name, data, size in shards]
    with WorkerPool() as pool:
        pool.start(1)
        assert pool.started
        first = pool.submit(*shards[0], None).result(timeout=60)
        pool._workers[0].proc.kill()
        got = [first] + [pool.submit(*s, None).result(timeout=60) for s in shards[1:]]
    assert [(p.header_bytes, p.file_bytes) for p in got] == [(p.header_bytes, p.file_bytes) for p in expected]
    assert got[0].header is None  # a worker sends sizes and the tally, not the table


def test_a_worker_that_cannot_start_costs_only_speed(fake_hub, monkeypatch) -> None:
    name, data, size = _shard_bytes(fake_hub, MISTRAL)[0]
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    with WorkerPool() as pool:
        pool.start(2)
        assert not pool.started
        parsed = pool.submit(name, data, size, None).result(timeout=60)
    assert parsed.header == parse_header(data, file_bytes=size, name=name)


@pytest.fixture
def started(monkeypatch) -> list:
    """The workers started during the test."""
    import inspector.workers

    workers = []
    real = inspector.workers._Worker.__init__

    def spy(self, pool) -> None:
        real(self, pool)
        workers.append(self)

    monkeypatch.setattr(inspector.workers._Worker, "__init__", spy)
    return workers


def test_workers_end_with_the_read(fake_hub, monkeypatch, tmp_path, started) -> None:
    """Every worker has exited and been waited for when the read returns (no process left behind)."""
    _read(MISTRAL, 2, monkeypatch, tmp_path)
    assert len(started) == 2
    assert all(w.proc.returncode == 0 for w in started)


def test_how_many_workers(monkeypatch) -> None:
    assert configured_workers(2) == 0 and configured_workers(45, 1_000) == 0  # fits between round trips
    assert configured_workers(163) >= 1 and configured_workers(10, 92_000) >= 1
    monkeypatch.setenv("HFMEM_PARSE_WORKERS", "0")
    assert configured_workers(1000) == 0
    monkeypatch.setenv("HFMEM_PARSE_WORKERS", "3")
    assert configured_workers(1) == 3


def test_a_pool_closed_before_its_workers_start_starts_none() -> None:
    """Ctrl-C ends a read while its parsing thread may still be about to start the workers: once the
    pool is closed, a start starts no process (in a library caller's process they would live on)."""
    from inspector.workers import WorkerPool

    pool = WorkerPool()
    pool.close(kill=True)
    try:
        pool.start(2)
        assert not pool.started
    finally:
        for w in pool._workers:
            w.proc.kill()
            w.proc.wait()


def test_lazy_headers_parse_only_when_asked() -> None:
    body = json.dumps({"a": {"dtype": "XX", "shape": [1], "data_offsets": [0, 1]}}).encode()
    lazy = LazyHeaders()
    lazy.add_bytes("bad.safetensors", struct.pack("<Q", len(body)) + body, None)
    assert "bad.safetensors" in lazy and list(lazy) == ["bad.safetensors"] and len(lazy) == 1
    with pytest.raises(HeaderError, match="bad.safetensors: tensor 'a': unknown dtype 'XX'"):
        lazy["bad.safetensors"]


def test_a_failed_read_ends_its_workers_at_once(fake_hub, monkeypatch, tmp_path, started) -> None:
    """A read that fails part-way (here a shard with a malformed header) leaves no worker behind."""
    repo = fake_hub.repos[MISTRAL]
    shard = sorted(n for n in repo.files if n.endswith(".safetensors"))[0]
    head = repo.files[shard].head
    files = {**repo.files, shard: dataclasses.replace(repo.files[shard], head=head.replace(b'"BF16"', b'"BX16"', 1))}
    bad = fake_hub.add(dataclasses.replace(repo, repo_id="test/mistral-bad-first-shard", files=files))
    with pytest.raises(HeaderError, match="unknown dtype 'BX16'"):
        _read(bad.repo_id, 2, monkeypatch, tmp_path)
    assert len(started) == 2 and all(w.proc.returncode is not None for w in started)


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGSTOP"), reason="POSIX signals")
def test_a_hung_worker_is_killed_and_its_shards_parsed_here(fake_hub, monkeypatch) -> None:
    """A worker that stops answering (here: stopped by a signal) does not hang the read: after
    WAIT_S it is killed, and what it held is parsed in this process."""
    import signal

    import inspector.workers

    monkeypatch.setattr(inspector.workers, "WAIT_S", 0.5)
    shards = _shard_bytes(fake_hub, "mistralai/Mixtral-8x7B-v0.1")
    with WorkerPool() as pool:
        pool.start(1)
        worker = pool._workers[0].proc
        worker.send_signal(signal.SIGSTOP)
        futures = [pool.submit(*s, None) for s in shards]
        got = [pool.wait(f) for f in futures]
        assert worker.wait(timeout=10) == -signal.SIGKILL
    assert [(p.header_bytes, p.file_bytes) for p in got] == [
        (p.header_bytes, p.file_bytes) for p in (parse_shard(*s, None) for s in shards)]
