"""What hfmem reads from the environment, read at call time (never at import): the Hub endpoint
and a mirror's login (`HF_ENDPOINT`), the token (`--token`, `HF_TOKEN`, huggingface_hub's login),
offline mode (`HF_HUB_OFFLINE`), the request timeout (`HF_HUB_DOWNLOAD_TIMEOUT`) and hfmem's cache
folder (`HFMEM_CACHE_DIR`, `HF_HOME`). huggingface_hub's own `constants` are read at its import, so
these are read here instead.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
#: huggingface_hub's default HF_HUB_DOWNLOAD_TIMEOUT (constants.py: DEFAULT_DOWNLOAD_TIMEOUT = 10).
DEFAULT_TIMEOUT_S = 10.0
#: HF_HUB_DOWNLOAD_TIMEOUT beyond this is taken as this (a socket refuses an inf or 1e308 timeout).
MAX_TIMEOUT_S = 3600.0


def endpoint() -> str:
    """The Hub endpoint, read at call time: `HF_ENDPOINT` (a mirror) or huggingface.co, less any
    `user:password@` in it (`endpoint_login`): no URL, cache key, file name or message holds that."""
    return split_login(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)[0].rstrip("/")


def endpoint_login() -> str | None:
    """`Authorization: Basic ...` for a mirror whose HF_ENDPOINT carries `user:password@`, else None."""
    return split_login(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)[1]


def split_login(url: str) -> tuple[str, str | None]:
    import base64
    from urllib.parse import unquote

    parts = urlsplit(url)
    login, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = login.partition(":")
    credentials = f"{unquote(user)}:{unquote(password)}".encode()
    return parts._replace(netloc=hostport).geturl(), "Basic " + base64.b64encode(credentials).decode()


def resolve_token(token: str | bool | None) -> str | None:
    """`--token`, else `HF_TOKEN`, else huggingface_hub's stored login; False sends none. White
    space around a given token is dropped (`--token "$(cat file)"` of a CRLF file), as
    huggingface_hub drops it from HF_TOKEN; a control character inside is refused, and not shown."""
    if token is False:
        return None
    if isinstance(token, str) and token.strip():
        token = token.strip()
        if not token.isprintable():
            from .errors import UsageError

            raise UsageError("the token given (--token) holds a line break or another control character")
        return token
    from huggingface_hub import get_token

    return get_token()


def offline_requested() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


def timeout_s() -> float:
    """HF_HUB_DOWNLOAD_TIMEOUT in seconds; a value that is no positive finite number (nan, inf, -1,
    abc) is ignored, as huggingface_hub would fail on it, and one beyond MAX_TIMEOUT_S is capped."""
    raw = os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        return DEFAULT_TIMEOUT_S
    if not 0 < value < float("inf"):  # (False for nan too)
        return DEFAULT_TIMEOUT_S
    return min(value, MAX_TIMEOUT_S)


def cache_dir() -> Path:
    """`$HFMEM_CACHE_DIR`, else `$HF_HOME/hfmem`, else `~/.cache/huggingface/hfmem` (read at call time)."""
    explicit = os.environ.get("HFMEM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(hf_home).expanduser() / "hfmem"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hfmem"


# --- hfmem's own files: a private folder (0700), files 0600, temporary names ---------------


#: The Cache Directory Tagging spec's file (https://bford.info/cachedir/): backup tools skip the
#: folder, and it says whose folder this is.
CACHEDIR_TAG = "CACHEDIR.TAG"


TAG_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
             "# This file is a cache directory tag created by hfmem.\n"
             "# For information about cache directory tags, see https://bford.info/cachedir/\n")


def make_root(root: Path) -> None:
    """Create the cache folder, tagged, if it is not there (one failing mkdir when it is)."""
    try:
        root.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        return
    try:
        fd = os.open(root / CACHEDIR_TAG, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with open(fd, "w") as f:
            f.write(TAG_TEXT)
    except OSError:
        pass  # only a marker: the cache works without it


def private_dir(path: Path) -> Path:
    root = cache_dir()
    if path == root or root in path.parents:
        make_root(root)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    return path


def private_file(path: Path) -> None:
    """Create the file 0600 before anything else opens it (SQLite's journal inherits the mode)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def temp_path(path: Path) -> Path:
    """The temporary file written beside `path` and renamed over it: `<name>.<pid>.<thread>.tmp`,
    which `cache prune` and `clear` recognise (and delete once its process is gone)."""
    return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
