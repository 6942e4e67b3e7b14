"""hfmem's error types and the exit code each one maps to.

Every error a user can cause derives from `HfmemError` and carries a one-line, actionable message;
`cli.main()` turns it into that line on stderr and its `exit_code`. Anything else is a bug (exit 1).

    HfmemError
    ├── InternalError         a bug met while checking one entry of a models file (1)
    ├── UsageError            bad argument that the CLI parser could not catch (2)
    │   └── EntryError        a malformed [[model]] entry of a models file
    ├── NotFoundError         (4)
    │   ├── RepoNotFound
    │   ├── RevisionNotFound
    │   ├── EntryNotFound     a file missing in a repo or on disk
    │   └── NoWeightsFound    a model with no weight files at all
    ├── AuthError             gated or private without a valid token (5)
    │   └── GatedRepo
    ├── DataError             malformed input (6)
    │   ├── HeaderError       a safetensors header that breaks the spec
    │   ├── ConfigError       config.json / index / snapshot that is not what it claims
    │   ├── UnknownDtype      a dtype the safetensors spec does not define
    │   └── UnsupportedFormat weights only in a format hfmem cannot read (GGUF, ...)
    ├── NetworkError          unreachable, timed out, retries exhausted (7)
    └── OfflineMiss           offline and not in the cache (8)

`HubError` is a mixin-free alias kept for readers of huggingface_hub: the Hub-specific errors above
(`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, `GatedRepo`) also derive from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; the README and shared/DESIGN.md carry the same table."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    DOES_NOT_FIT = 3
    NOT_FOUND = 4
    AUTH = 5
    BAD_DATA = 6
    NETWORK = 7
    OFFLINE_MISS = 8
    INTERRUPTED = 130  # Ctrl-C, as shells report a SIGINT (128 + 2)


class HfmemError(Exception):
    """Base class: an error the user can act on; its message is one line."""

    exit_code: ExitCode = ExitCode.INTERNAL


class HubError(HfmemError):
    """An error answered by the Hub (or a mirror) about a repo, revision or file."""


class UsageError(HfmemError):
    """A bad argument: a malformed repo id, a revision given twice, an unreadable option value."""

    exit_code = ExitCode.USAGE


class EntryError(UsageError):
    """A malformed [[model]] entry of a models file, reported by its position and id."""


class InternalError(HfmemError):
    """A bug met while checking one entry of a models file; the others still get their answers."""

    exit_code = ExitCode.INTERNAL


class NotFoundError(HfmemError):
    """Something named does not exist: repo, revision, file or path."""

    exit_code = ExitCode.NOT_FOUND


class RepoNotFound(NotFoundError, HubError):
    """The repo does not exist (or is private and the token cannot see it)."""


class RevisionNotFound(NotFoundError, HubError):
    """The repo exists but not this branch, tag or commit."""


class EntryNotFound(NotFoundError, HubError):
    """A file is missing: in a repo, in an index's weight_map, or on disk."""


class NoWeightsFound(NotFoundError):
    """The model has no weight files (safetensors, PyTorch .bin) at all."""


class AuthError(HfmemError):
    """Authentication failed: gated or private without a valid token."""

    exit_code = ExitCode.AUTH


class GatedRepo(AuthError, HubError):
    """The repo is gated: access must be requested on its page, then a token used."""


class DataError(HfmemError):
    """Malformed or unsupported data."""

    exit_code = ExitCode.BAD_DATA


class HeaderError(DataError):
    """A safetensors header that breaks the format spec."""


class ConfigError(DataError):
    """A config.json, index or snapshot file that is not valid."""


class UnknownDtype(HeaderError):
    """A tensor dtype that the safetensors spec does not define."""


class UnsupportedFormat(DataError):
    """Weights stored only in a format hfmem cannot read (GGUF, ONNX, ...)."""


class NetworkError(HfmemError):
    """The Hub could not be reached: connection refused, timed out, retries exhausted."""

    exit_code = ExitCode.NETWORK


class OfflineMiss(HfmemError):
    """Offline mode is on and what is needed is not in the cache."""

    exit_code = ExitCode.OFFLINE_MISS


def linked_errors(error: BaseException) -> Iterator[BaseException]:
    """`error`, the exceptions it was raised from or while handling, and those it wraps (requests
    and urllib3 keep the error they wrap in `args` or `reason`): each once, nearest first."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (*e.args, getattr(e, "reason", None), e.__cause__, e.__context__)
                 if isinstance(x, BaseException)]
