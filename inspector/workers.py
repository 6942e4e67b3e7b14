"""Shard headers parsed, validated and counted in worker processes.

DeepSeek-V3's 163 headers hold 92,000 tensors: about a second of CPU to decode, validate and count
in one interpreter. While one interpreter does it, the 64 request threads wait for its lock and send
their next requests late (a 7-layer read measured as 9 to 13 layers). For a model of more than one
wave of shards the Hub reader hands each header's bytes to a few worker processes, fresh
interpreters that import only the parsing modules, and goes on with its requests. A worker answers
with the shard's tally (`params.FileTally`) and sizes; the reader keeps the bytes, to write the
snapshot and to build the tensor table only if something asks for it (`header.LazyHeaders`).

Whatever goes wrong with a worker (it cannot be started, it dies) costs only speed: its shards are
parsed in this process instead. An error in a header is the same error, from either side.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Future

    from .header import Header
    from .params import CountContext, FileTally

# (A worker imports this module too: what only the parent uses, subprocess, threads, futures, is
# imported where it is used, ~25 ms of each worker's start-up.)

#: More shards than one wave of requests (hub.DEFAULT_CONCURRENCY), or this many tensors in the
#: index: parsed in worker processes. Below that, the parse fits between the reader's round trips
#: and a worker's start (~0.05-0.1 s of CPU, a fresh interpreter) is not worth it. Our own policy,
#: from bench/RESULTS.md: Qwen1.5-110B (45 shards, 1,000 tensors) reads in its 3 layers without.
AUTO_SHARDS = 64
AUTO_TENSORS = 20_000
#: At most this many workers, one per CPU this process may use (the reader mostly waits on the network):
#: 163 shards of ~5 ms each are not worth more start-ups (our policy).
MAX_WORKERS = 4
#: HFMEM_PARSE_WORKERS beyond this is taken as this: a typo of 100 must not start 100 interpreters.
#: Our policy.
MAX_ASKED_WORKERS = 16

#: A worker that has not answered a shard after this long is taken for hung (stopped, or stuck):
#: every worker is killed and their shards parsed in this process. A DeepSeek-V3 shard takes ~5 ms
#: and a whole model's backlog well under a second; our policy, with a wide margin for a loaded machine.
WAIT_S = 30.0

_FRAME = struct.Struct("<Q")
# The worker's command: isolated (-I: no PYTHON* variables, no user site, no current directory on
# the path) and without site-packages (-S); the directory holding this package is the one path added.
_BOOT = "import sys; sys.path.append(sys.argv[1]); from inspector.workers import serve; serve()"


@dataclass(frozen=True)
class Parsed:
    """One shard's header, parsed and validated: its sizes, its tally (None when the counting
    context was not known), and the Header itself when it was parsed in this process."""

    header_bytes: int
    file_bytes: int | None
    tally: FileTally | None
    header: Header | None = None


def parse_shard(name: str, data: bytes, file_bytes: int | None, context: CountContext | None,
                keep: bool = True) -> Parsed:
    """Parse, validate and tally one shard's first bytes (HeaderError for anything malformed)."""
    from .header import parse_header
    from .params import FileTally

    header = parse_header(data, file_bytes=file_bytes, name=name)
    tally = FileTally.of(header, context) if context is not None else None
    return Parsed(header.header_bytes, header.file_bytes, tally, header if keep else None)


def configured_workers(shards: int, tensors: int | None = None) -> int:
    """How many worker processes a read of `shards` shards (`tensors` in its index, when known)
    should use: `HFMEM_PARSE_WORKERS` when set (0: none), else by size and the CPUs at hand."""
    raw = os.environ.get("HFMEM_PARSE_WORKERS", "").strip()
    if raw.isdigit():
        return min(int(raw), MAX_ASKED_WORKERS)
    if shards <= AUTO_SHARDS and (tensors or 0) < AUTO_TENSORS:
        return 0
    if getattr(sys, "frozen", False) or not sys.executable:
        return 0  # a bundled app's executable is not a Python that runs `-c`
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


class _Worker:
    """One worker process: a writer thread feeds its stdin (a header's bytes can exceed a pipe's
    buffer, and a request thread must not wait on a busy worker), a reader thread its answers."""

    def __init__(self, pool: WorkerPool) -> None:
        import subprocess
        import threading
        from queue import SimpleQueue

        self.pool = pool
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _BOOT, package_parent],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        self.queue: SimpleQueue[bytes | None] = SimpleQueue()
        self.pending: dict[int, tuple[Future[Parsed], tuple[Any, ...]]] = {}
        self.load = 0  # bytes sent and not answered: new work goes to the least loaded worker
        self.alive = True
        self.threads = [threading.Thread(target=self._write, daemon=True, name="hfmem-worker-write"),
                        threading.Thread(target=self._read, daemon=True, name="hfmem-worker-read")]
        for t in self.threads:
            t.start()

    def _write(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while (frame := self.queue.get()) is not None:
                stdin.write(_FRAME.pack(len(frame)) + frame)
                stdin.flush()
        except (OSError, ValueError):
            pass  # the worker died: its reader hands its shards back
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while (frame := _read_frame(stdout)) is not None:
                seq, ok, value = pickle.loads(frame)
                with self.pool.lock:
                    future, args = self.pending.pop(seq)
                    self.load -= len(args[1])
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except Exception:  # noqa: BLE001 - a garbled answer is a dead worker, handled below
            pass
        with self.pool.lock:
            self.alive = False
            orphans = list(self.pending.values())
            self.pending.clear()
        for future, args in orphans:  # parsed here instead: slower, never lost
            _run_into(future, args)

    def submit(self, seq: int, future: Future[Parsed], args: tuple[Any, ...]) -> None:
        self.pending[seq] = (future, args)
        self.load += len(args[1])
        self.queue.put(pickle.dumps((seq, *args), protocol=pickle.HIGHEST_PROTOCOL))

    def close(self) -> None:
        self.queue.put(None)


class WorkerPool:
    """A few parsing processes, started on first need; `with` ends them (their stdin closes)."""

    def __init__(self, deadline: float | None = None) -> None:
        import threading

        self.deadline = deadline  # time.monotonic() past which no worker is waited for (--timeout)
        self.lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._seq = 0
        self._failed = False
        self._closed = False  # a start still to come (the parsing thread's, after Ctrl-C) starts nothing

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(kill=exc_type is not None)  # a failed read does not wait for the rest of the parsing

    @property
    def started(self) -> bool:
        return bool(self._workers)

    def start(self, n: int) -> None:
        """Start up to `n` workers (no more once started; nothing, and no error, when it cannot)."""
        import subprocess

        with self.lock:
            if self._workers or self._failed or self._closed or n <= 0:
                return
            try:
                for _ in range(n):
                    self._workers.append(_Worker(self))
            except (OSError, ValueError, subprocess.SubprocessError):
                self._failed = not self._workers  # parse in this process instead

    def submit(self, name: str, data: bytes, file_bytes: int | None,
               context: CountContext | None) -> Future[Parsed]:
        """Parse a shard in the least loaded worker (in this thread, when none is alive)."""
        from concurrent.futures import Future

        future: Future[Parsed] = Future()
        args = (name, data, file_bytes, context)
        with self.lock:
            alive = [w for w in self._workers if w.alive]
            if alive:
                self._seq += 1
                min(alive, key=lambda w: w.load).submit(self._seq, future, args)
                return future
        _run_into(future, args)
        return future

    def wait(self, future: Future[Parsed]) -> Parsed:
        """A shard's parse; when it takes over WAIT_S, the workers are killed and what they held
        is parsed in this process (their readers hand it back), this shard included."""
        import time
        from concurrent.futures import TimeoutError as FutureTimeout  # (3.10: not the builtin)

        wait = WAIT_S if self.deadline is None else max(0.0, min(WAIT_S, self.deadline - time.monotonic()))
        try:
            return future.result(timeout=wait)
        except FutureTimeout:
            with self.lock:
                self._failed = True
                for w in self._workers:
                    w.alive = False  # nothing more is sent to it
                    w.proc.kill()
            return future.result()

    def close(self, kill: bool = False) -> None:
        """Close the workers' input and wait for them to exit (they do at once: an idle worker is
        blocked reading its input). A worker still busy after a second is killed; with `kill`, at once."""
        import subprocess

        with self.lock:  # (a start under way finishes first, and its workers are ended here)
            self._closed = True
            workers, self._workers = self._workers, []
        for w in workers:
            w.close()
            if kill:
                w.proc.kill()
        for w in workers:
            try:
                w.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        for w in workers:
            for t in w.threads:
                t.join(timeout=1.0)
            if w.proc.stdout is not None:
                w.proc.stdout.close()


def _run_into(future: Future[Parsed], args: tuple[Any, ...]) -> None:
    try:
        future.set_result(parse_shard(*args))
    except BaseException as e:  # noqa: BLE001 - delivered to whoever waits on the future
        future.set_exception(e)


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (n,) = _FRAME.unpack(head)
    body = stream.read(n)
    if len(body) < n:
        return None
    return body


def serve() -> None:
    """A worker's loop: read (seq, name, bytes, file size, context), answer (seq, ok, Parsed or the
    error), until its input closes. Its stdout carries only answers: anything printed goes to stderr."""
    import gc
    import signal

    # Each shard's tables are made and dropped whole, none in a cycle: the collector would only walk
    # them again and again (as cli.main, which raises its threshold for the same reason).
    gc.disable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes our input
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    while (frame := _read_frame(inp)) is not None:
        seq, name, data, file_bytes, context = pickle.loads(frame)
        answer: tuple[Any, bool, Any]
        try:
            answer = (seq, True, parse_shard(name, data, file_bytes, context, keep=False))
        except Exception as e:  # noqa: BLE001 - sent back and raised in the parent, as if parsed there
            answer = (seq, False, e)
        try:
            body = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            body = pickle.dumps((seq, False, RuntimeError(f"{name}: {answer[2]!r}")))
        out.write(_FRAME.pack(len(body)) + body)
        out.flush()
    out.close()
    os._exit(0)
