"""The disk (issue 16): what hfmem deletes, what it writes, what it reads, and a disk that fails.

A full or read-only disk is faked (no root, no real mounts): SQLite's own SQLITE_FULL through
`PRAGMA max_page_count`, and a file object or os.open raising ENOSPC / EROFS. Every wait on a run
that could hang is bounded by a thread join or a subprocess timeout, never by a sleep.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, snapshot_path
from safetensors.numpy import save_file

from inspector.cli import run

GPT2 = "openai-community/gpt2"
QWEN = str(snapshot_path("Qwen/Qwen1.5-110B"))


def cache() -> Path:
    return Path(os.environ["HFMEM_CACHE_DIR"])


def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "m"
    d.mkdir()
    save_file({"w": np.zeros((4, 8), np.float16)}, str(d / "model.safetensors"))
    (d / "config.json").write_text('{"model_type": "llama"}')
    return d


def run_bounded(args: list[str], seconds: float = 60) -> int:
    """run(args) in a thread: a read that blocks (a FIFO, a lock) fails the test instead of hanging it."""
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(run(args)), daemon=True)
    t.start()
    t.join(seconds)
    assert result, f"hfmem {' '.join(args)} was still running after {seconds} s"
    return result[0]


# --- cache clear / prune: hfmem's names only ------------------------------------------------------


def test_cache_clear_and_prune_refuse_a_folder_of_other_tools(tmp_path, monkeypatch, capsys) -> None:
    home_cache = tmp_path / "dot-cache"  # HFMEM_CACHE_DIR=~/.cache, a typo
    (home_cache / "pip" / "wheels").mkdir(parents=True)
    (home_cache / "pip" / "wheels" / "w.whl").write_bytes(b"x" * 100)
    (home_cache / "notes.txt").write_text("mine")
    (home_cache / "http.sqlite").write_bytes(b"")  # hfmem ran there once
    monkeypatch.setenv("HFMEM_CACHE_DIR", str(home_cache))
    for command in (["cache", "clear"], ["cache", "prune", "--older-than", "0"]):
        assert run(command) == 2
        err = capsys.readouterr().err
        assert "does not look like hfmem's cache" in err and "'notes.txt'" in err and "nothing deleted" in err
        assert len(err.strip().splitlines()) == 1
    assert (home_cache / "pip" / "wheels" / "w.whl").read_bytes() == b"x" * 100
    assert (home_cache / "notes.txt").read_text() == "mine" and (home_cache / "http.sqlite").exists()


def test_cache_clear_deletes_by_name_and_never_through_a_symlink(fake_hub, tmp_path, capsys) -> None:
    assert run([GPT2, "-q"]) == 0
    assert (cache() / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    (cache() / "CACHEDIR.TAG").unlink()  # a cache made by an earlier hfmem: no marker
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    repo = next((cache() / "snapshots").iterdir())  # (the endpoint's folder: its repos' are below)
    (repo / ("0" * 40 + ".json")).symlink_to(outside / "keep.txt")  # one of hfmem's names, as a link
    (repo / "linked-folder").symlink_to(outside, target_is_directory=True)
    (repo / ("1" * 40 + ".json.999999999.1.tmp")).write_text("{")  # a dead process's temporary file
    assert run(["cache", "clear"]) == 0
    assert "removed hfmem's files" in capsys.readouterr().err
    assert (outside / "keep.txt").read_text() == "mine"
    # Everything hfmem wrote is gone; what it did not write (the folder link) is left, and so the folder.
    assert sorted(p.name for p in cache().rglob("*")) == sorted(["linked-folder", repo.name, "snapshots"])


def test_prune_and_clear_remove_leftover_temporary_files_only(tmp_path, monkeypatch) -> None:
    folder = cache() / "snapshots" / "models--org--name"
    folder.mkdir(parents=True)
    refs = cache() / "refs" / "host" / "models--org--name"
    refs.mkdir(parents=True)
    dead = folder / ("a" * 40 + ".json.999999999.7.tmp")  # no such process
    old = refs / f"main.{os.getpid()}.7.tmp"  # a live pid (reused by now), but two days old
    live = folder / ("b" * 40 + f".digest.json.{os.getpid()}.8.tmp")  # being written right now
    legacy = folder / ".digest-abcd1234"  # hfmem 0.1's digest temporary file
    for p in (dead, old, live, legacy):
        p.write_text("{")
    for p in (old, legacy):
        os.utime(p, (time.time() - 2 * 86400,) * 2)
    assert run(["cache", "prune", "-q"]) == 0
    assert [p.exists() for p in (dead, old, live, legacy)] == [False, False, True, False]
    assert run(["cache", "clear", "-q"]) == 0
    assert live.exists()  # its writer is alive; it renames or removes it itself
    live.unlink()
    assert run(["cache", "clear", "-q"]) == 0 and not cache().exists()


# --- a lock that never frees, a cache that never opens, a full disk -----------------------------


def test_a_write_lock_held_forever_does_not_hang_the_run(fake_hub, tmp_path) -> None:
    """The reported hang: requests-cache retried `BEGIN IMMEDIATE` forever while another process
    (here: this test) held the database's write lock; the run never ended."""
    cache().mkdir(parents=True)
    holder = sqlite3.connect(cache() / "http.sqlite", isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")  # held for the whole run
    try:
        env = {**os.environ, "HF_ENDPOINT": fake_hub.endpoint}
        cmd = [sys.executable, "-c", "from inspector.cli import main; main()", GPT2, "--json"]
        done = subprocess.run(cmd, env=env, capture_output=True, timeout=90, cwd=ROOT)
    finally:
        holder.rollback()
        holder.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["parameters"]["total"] == 124_439_808
    assert b"database is locked); running without it" in done.stderr


@pytest.fixture
def never_opening_cache(monkeypatch):
    """A cache whose opening never ends (until the test is over)."""
    import inspector.cache

    release = threading.Event()
    real = inspector.cache._build_sessions

    def stuck(**kwargs):
        release.wait()
        return real(**kwargs)

    monkeypatch.setattr(inspector.cache, "_build_sessions", stuck)
    yield
    release.set()


def test_a_cache_that_never_opens_is_waited_for_no_longer_than_its_cap(fake_hub, never_opening_cache,
                                                                       monkeypatch, capsys) -> None:
    monkeypatch.setattr("inspector.cache.OPEN_WAIT_S", 0.2)
    assert run_bounded([GPT2, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["parameters"]["total"] == 124_439_808
    assert "did not open within 0.2 s); running without it" in err


def test_a_cache_that_never_opens_is_waited_for_no_longer_than_the_timeout(fake_hub, never_opening_cache,
                                                                           capsys) -> None:
    started = time.monotonic()
    assert run_bounded([GPT2, "--timeout", "1"]) == 7
    assert "--timeout deadline" in capsys.readouterr().err
    assert time.monotonic() - started < 30  # (OPEN_WAIT_S is 7 s; the deadline came first)


@pytest.fixture
def full_database(monkeypatch):
    """SQLite's own SQLITE_FULL ("database or disk is full") once the database would grow: every
    connection opened from now on may not add a page to the file (`PRAGMA max_page_count`)."""
    real = sqlite3.connect

    class Full(sqlite3.Connection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.execute("PRAGMA max_page_count=1")  # (SQLite keeps it at the current size)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, **{**k, "factory": Full}))


def test_a_full_disk_inside_sqlites_writes_mid_run_degrades_with_a_warning(fake_hub, monkeypatch, capsys,
                                                                            request) -> None:
    import inspector.cache

    assert run([QWEN, "-q"]) == 0  # (a local read: the cache's database is not made yet)
    inspector.cache.build_sessions()  # the database made, its tables created
    inspector.cache.close_sessions(cache())
    capsys.readouterr()
    # The pages there are filled to the brim (the next answer needs a new page), then no page is added.
    with sqlite3.connect(cache() / "http.sqlite", isolation_level=None) as filler:
        filler.execute("PRAGMA max_page_count=1")
        with pytest.raises(sqlite3.OperationalError, match="full"):
            for i in range(10_000):
                filler.execute("INSERT INTO responses VALUES (?, ?, NULL)", (f"filler-{i}", b"x" * 64))
    filler.close()
    request.getfixturevalue("full_database")
    assert run_bounded([GPT2, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["parameters"]["total"] == 124_439_808
    assert err.count("(database or disk is full); running without it") == 1, err


class FullFile:
    """A file on a disk that fills up after `room` bytes: write raises ENOSPC, as the kernel's does."""

    def __init__(self, f, room: int) -> None:
        self._f, self._room = f, room

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


def fill_disk_after(monkeypatch, room: int) -> None:
    import inspector.checkpoint

    monkeypatch.setattr(inspector.checkpoint, "open", lambda *a, **k: FullFile(open(*a, **k), room), raising=False)


def test_a_full_disk_under_the_snapshot_writer_degrades_with_a_warning(fake_hub, monkeypatch, capsys) -> None:
    fill_disk_after(monkeypatch, 200)  # the snapshot's head fits, its header does not
    assert run([GPT2, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["parameters"]["total"] == 124_439_808
    assert "(No space left on device); running without it" in err
    assert [p for p in cache().rglob("*") if p.is_file() and "snapshots" in p.parts] == []


# --- --save-snapshot: a regular file or a new path, atomically ----------------------------------


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo"])
def test_save_snapshot_refuses_what_is_not_a_regular_file(tmp_path, capsys, kind) -> None:
    target = tmp_path / "out.json"
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    if kind == "symlink":
        target.symlink_to(precious)
    elif kind == "directory":
        target.mkdir()
    else:
        os.mkfifo(target)
    assert run_bounded([QWEN, "--save-snapshot", str(target), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"it is a {'symbolic link' if kind == 'symlink' else kind.replace('fifo', 'FIFO')}" in err
    assert "give a regular file or a new path" in err
    assert precious.read_text() == "mine"
    assert target.is_symlink() if kind == "symlink" else (target.is_dir() if kind == "directory" else target.exists())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "precious.txt"]


def test_save_snapshot_into_a_missing_folder_is_a_usage_error(tmp_path, capsys) -> None:
    assert run([QWEN, "--save-snapshot", str(tmp_path / "no" / "s.json"), "-q"]) == 2
    assert "the folder" in capsys.readouterr().err and not (tmp_path / "no").exists()


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_save_snapshot_on_a_refusing_disk_is_a_usage_error_and_leaves_no_temp(tmp_path, monkeypatch, capsys,
                                                                              fault) -> None:
    target = tmp_path / "s.json"
    target.write_text("the old snapshot")
    if fault == "full":
        fill_disk_after(monkeypatch, 1000)
    else:
        real_open = os.open

        def read_only(path, flags, *args, **kwargs):
            if str(path).startswith(str(tmp_path)) and flags & (os.O_WRONLY | os.O_RDWR):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
    assert run([QWEN, "--save-snapshot", str(target), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the snapshot {target}: {'No space left' if fault == 'full' else 'Read-only'}" in err
    assert target.read_text() == "the old snapshot"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


# --- every byte read locally is bounded, and only from regular files ----------------------------


def test_a_snapshot_that_decompresses_past_the_cap_is_refused(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("inspector.checkpoint.MAX_SNAPSHOT_BYTES", 1024 * 1024)
    bomb = tmp_path / "bomb.json.gz"
    bomb.write_bytes(gzip.compress(b'{"format":"hfmem-snapshot/1",' + b" " * (8 * 1024 * 1024) + b"}"))
    assert bomb.stat().st_size < 64 * 1024
    assert run([str(bomb)]) == 6
    assert "decompresses to more than 1,048,576 bytes" in capsys.readouterr().err


def test_a_local_config_of_absurd_size_is_refused(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("inspector.local.MAX_JSON_BYTES", 1024 * 1024)
    d = model_dir(tmp_path)
    (d / "config.json").write_bytes(b'{"model_type": "llama"' + b" " * (2 * 1024 * 1024) + b"}")
    assert run([str(d)]) == 6
    assert "config.json: a JSON file larger than 1,048,576 bytes" in capsys.readouterr().err


def test_a_fifo_given_as_model_is_refused_without_blocking(tmp_path, capsys) -> None:
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    assert run_bounded([str(fifo)], 30) == 2
    assert "a FIFO, not a regular file" in capsys.readouterr().err


def test_a_link_to_a_device_given_as_snapshot_is_refused_without_reading_it(tmp_path, capsys) -> None:
    link = tmp_path / "snap.json.gz"
    link.symlink_to("/dev/urandom")
    assert run_bounded([str(link)], 30) == 2
    assert "a device, not a regular file" in capsys.readouterr().err


def test_a_fifo_inside_a_model_folder_is_refused_without_blocking(tmp_path, capsys) -> None:
    d = model_dir(tmp_path)
    (d / "config.json").unlink()
    os.mkfifo(d / "config.json")
    assert run_bounded([str(d)], 30) == 2
    assert "config.json: a FIFO, not a regular file" in capsys.readouterr().err


def test_symlink_loops_in_a_model_folder_are_skipped_or_refused(tmp_path, capsys) -> None:
    # An HF-cache-like folder: every file a link into blobs/; plus two links that point at each other.
    blobs = tmp_path / "blobs"
    d = model_dir(tmp_path)
    blobs.mkdir()
    for f in list(d.iterdir()):
        f.rename(blobs / f.name)
        f.symlink_to(blobs / f.name)
    (d / "a").symlink_to(d / "b")
    (d / "b").symlink_to(d / "a")
    assert run([str(d), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["total"] == 32
    (d / "model-00002.safetensors").symlink_to(d / "model-00002.safetensors")  # a weight file that loops
    assert run([str(d)]) == 2
    assert "model-00002.safetensors: a symbolic link that loops" in capsys.readouterr().err


@pytest.mark.parametrize("ref", ["fifo", "../../../elsewhere", "b" * 40 + "\n" + "x" * 5000])
def test_an_hf_cache_ref_that_is_not_a_sha_file_is_ignored_offline(tmp_path, monkeypatch, capsys, ref) -> None:
    # The HF cache's refs/main names the snapshot folder: a FIFO there must not block the run, and
    # its text must never become a path outside the cache.
    repo = Path(os.environ["HF_HOME"]) / "hub" / "models--someone--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "snapshots" / ("b" * 40)).mkdir(parents=True)
    save_file({"w": np.zeros((3, 4), np.float16)}, str(repo / "snapshots" / ("b" * 40) / "model.safetensors"))
    if ref == "fifo":
        os.mkfifo(repo / "refs" / "main")
    else:
        (repo / "refs" / "main").write_text(ref)
    elsewhere = repo / "snapshots" / "../../../elsewhere"
    elsewhere.mkdir(parents=True, exist_ok=True)
    save_file({"w": np.zeros((3, 4), np.float16)}, str(elsewhere / "model.safetensors"))
    assert run(["someone/tiny", "--offline", "--timeout", "5"]) == 8
    assert "offline" in capsys.readouterr().err


def test_content_lengths_that_are_not_ascii_digits_are_never_cached() -> None:
    from requests.structures import CaseInsensitiveDict

    from inspector.cache import _small_enough

    class Answer:  # (what requests-cache's filter is handed: a response's headers)
        def __init__(self, length: str) -> None:
            self.headers = CaseInsensitiveDict({"Content-Length": length})

    assert _small_enough(Answer("1024"))
    for length in ["", "-1", "١٢", "²", "1e3", "9" * 5000, str(10**30)]:
        assert not _small_enough(Answer(length)), length


def test_prune_with_an_unreachable_redis_prunes_the_local_database(fake_hub, monkeypatch, capsys) -> None:
    assert run(["openai-community/gpt2", "--json"]) == 0  # fills the local SQLite cache
    capsys.readouterr()
    monkeypatch.setenv("HFMEM_REDIS_URL", "redis://127.0.0.1:1/0")  # (nothing listens on port 1)
    started = time.monotonic()
    assert run(["cache", "prune", "--older-than", "0"]) == 0
    assert time.monotonic() - started < 10
    assert "freed" in capsys.readouterr().err
