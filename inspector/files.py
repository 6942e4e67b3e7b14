"""Regular files read within bounds: never a FIFO, device or socket (a read that would block
forever), never more than a stated limit (whatever the file claims or grows to)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO

from .errors import ConfigError, UsageError


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, for a message: "a directory", "a FIFO", ..."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: Path) -> IO[bytes]:
    """`path` opened for reading if it is a regular file (through any symlinks); UsageError for a
    FIFO, a device, a socket, a directory or a symlink loop, none of them opened. OSError otherwise."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UsageError(f"{path}: a symbolic link that loops") from None
        raise
    if not stat.S_ISREG(mode):
        raise UsageError(f"{path}: {file_kind(mode)}, not a regular file; hfmem reads only files")
    # O_NONBLOCK: were it swapped for a FIFO since, opening it still returns at once (no effect on a file's reads).
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                 | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(f"{path}: {file_kind(mode)}, not a regular file; hfmem reads only files")
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, refused (ConfigError, exit 6) when longer than `limit`: no more than
    limit + 1 bytes are ever read, whatever the file claims or grows to."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{path}: {what} larger than {limit:,} bytes, hfmem's limit; refused")
    return data
