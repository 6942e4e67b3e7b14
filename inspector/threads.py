"""Thread pools that stop with the work they serve: a failure or Ctrl-C cancels the tasks not yet
started instead of waiting for every one of them (the Hub read's shards, `check --models`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager


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
