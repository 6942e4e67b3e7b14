"""What the user typed -> a Source: a local directory or file, a snapshot, or a Hub repo.

    >>> parse_source("https://huggingface.co/Qwen/Qwen1.5-110B/tree/refs%2Fpr%2F1").revision
    'refs/pr/1'

An existing path on disk always wins over a repo id, so `./gpt2` (a folder) and `gpt2` (the Hub
model) can both be reached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import NotFoundError, UsageError

SNAPSHOT_FORMAT = "hfmem-snapshot/1"
#: A snapshot holding GGUF headers (a "gguf" object beside "headers"): a reader of format 1 would
#: see no weights in it, so it carries its own version.
SNAPSHOT_FORMAT_GGUF = "hfmem-snapshot/2"


class SourceKind(str, Enum):
    HUB = "hub"
    LOCAL_DIR = "local_dir"
    LOCAL_FILE = "local_file"  # one .safetensors or .gguf file
    SNAPSHOT = "snapshot"  # a snapshot written by --save-snapshot


@dataclass(frozen=True)
class Source:
    """Where a model's metadata comes from.

    For the Hub: `repo_id`, `revision` (None: the default branch) and optionally one `filename`.
    For local sources: `path`; `repo_id` and `revision` when the path is a snapshot folder of the
    local HF cache (`models--org--name/snapshots/<sha>`).
    """

    kind: SourceKind
    repo_id: str | None = None
    revision: str | None = None
    filename: str | None = None
    path: Path | None = None
    quant: str | None = None  # a GGUF repo's file by its quantization: `org/repo:Q4_K_M`
    prefer_gguf: bool = False  # --engine llama.cpp: a repo with safetensors and GGUF files read as GGUF

    def with_file(self, filename: str | None) -> Source:
        """The same source with `--file NAME` (a file of a Hub repo or of a local folder)."""
        from dataclasses import replace

        if filename is None:
            return self
        if self.kind not in (SourceKind.HUB, SourceKind.LOCAL_DIR):
            raise UsageError("--file names a file inside a Hub repo or a model folder")
        if self.filename and self.filename != filename or self.quant:
            raise UsageError(f"--file {filename!r} contradicts the file the model argument names")
        if any(p in ("", ".", "..") for p in filename.split("/")) or "\\" in filename or not filename.isprintable():
            raise UsageError(f"--file {filename!r}: not a file path inside the repo")
        return replace(self, filename=filename)

    @property
    def display(self) -> str:
        if self.kind is SourceKind.HUB:
            assert self.repo_id is not None
            return self.repo_id + (f"/{self.filename}" if self.filename else f":{self.quant}" if self.quant else "")
        assert self.path is not None
        if self.filename:
            return f"{self.path}/{self.filename}"
        # "." says nothing in a title: show the folder's real name.
        return str(self.path.resolve()) if self.path.name in ("", ".", "..") else str(self.path)


# huggingface_hub's cache layout: <cache>/models--{org}--{name}/snapshots/{commit}/
_HF_CACHE_SNAPSHOT = re.compile(r"models--(?P<repo>[^/]+)/snapshots/(?P<sha>[0-9a-f]{40})/?$")
_HUB_HOSTS = ("huggingface.co", "hf.co", "www.huggingface.co")


def parse_source(text: str, revision: str | None = None, *, validate: bool = True) -> Source:
    """Parse a model argument: a path, an `org/name` or bare repo id, or a Hub URL.

    `revision` (from `--revision`) may not contradict a revision in a URL. Raises UsageError for
    something that is neither, NotFoundError for a path-looking argument that does not exist.
    `validate=False` leaves the repo id's check (`validate_repo_id`) to the Hub reader, which makes
    it before anything but a look in hfmem's own cache: a warm run then imports no huggingface_hub.
    """
    if not text.strip():
        raise UsageError("empty model argument")
    path = _expand(Path(text))
    if _exists(path):
        return _local_source(path, revision)
    if not text.isprintable():  # a newline or NUL: no repo id or URL, and the message must stay one line
        raise UsageError(f"not a path on disk nor a valid repo id: {text!r}")
    if re.match(r"^https?://", text):
        return _url_source(text, revision, validate)
    quant = None
    # llama.cpp's `-hf org/repo:Q4_K_M` and Ollama's `hf.co/org/repo:Q4_K_M`: a GGUF file by its tag.
    m = _TAGGED.match(text)
    if m:
        # Ollama's `:latest` names no quantization: its default file (Q4_K_M where there is one).
        text, quant = m["repo"], None if m["tag"].lower() == "latest" else m["tag"]
    elif re.match(r"^(?:hf\.co|huggingface\.co)/[^/]+/[^/]+$", text):
        text = text.split("/", 1)[1]  # Ollama's hf.co/org/repo, untagged
    if _looks_like_path(text):
        raise NotFoundError(f"no such file or directory: {text}")
    if validate:
        validate_repo_id(text)
    _validate_revision(revision)
    return Source(SourceKind.HUB, repo_id=text, revision=revision, quant=quant)


_TAGGED = re.compile(r"^(?:(?:hf\.co|huggingface\.co)/)?(?P<repo>[^:/]+/[^:/]+|[^:/]+):(?P<tag>[A-Za-z0-9_.-]{1,64})$")


def _expand(path: Path) -> Path:
    try:
        return path.expanduser()
    except RuntimeError:  # `~someone` with no such user: not a path we can expand
        return path


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the filesystem is no local path either
        return False


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~", "\\"))
        or text.count("/") > 1
        or text.endswith((".safetensors", ".json", ".bin", ".gguf"))
    )


def validate_repo_id(repo_id: str) -> None:
    """UsageError unless huggingface_hub takes `repo_id` for a valid repo id."""
    # NOTE: huggingface_hub's validator is the authority on what the Hub accepts; it also refuses
    # `..`, `--` and characters that could alter a URL.
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        first = str(e).strip().splitlines()[0]
        raise UsageError(f"not a path on disk nor a valid repo id: {repo_id!r} ({first})") from None


def _validate_revision(revision: str | None) -> None:
    # NOTE: hub_url quotes the revision whole, but `.` and `..` survive quoting and are dot segments
    # that HTTP clients remove (RFC 3986 5.2.4): `--revision ..` would read another URL. A byte that is
    # not UTF-8 in argv arrives as a lone surrogate, which quoting cannot encode. git forbids all of them.
    if revision is not None and (revision in (".", "..") or not revision.isprintable()):
        raise UsageError(f"not a valid revision: {revision!r}")


def _local_source(path: Path, revision: str | None) -> Source:
    if path.is_dir():
        m = _HF_CACHE_SNAPSHOT.search(path.resolve().as_posix())
        if m:
            repo_id = m["repo"].replace("--", "/", 1)
            return Source(SourceKind.LOCAL_DIR, repo_id=repo_id, revision=m["sha"], path=path)
        if revision:
            raise UsageError("--revision applies to Hub repos, not to a local directory")
        return Source(SourceKind.LOCAL_DIR, path=path)
    if revision:
        raise UsageError("--revision applies to Hub repos, not to a local file")
    if path.suffix in (".safetensors", ".gguf"):
        return Source(SourceKind.LOCAL_FILE, path=path)
    if path.name.endswith((".json", ".json.gz")):
        return Source(SourceKind.SNAPSHOT, path=path)
    raise UsageError(
        f"{path}: not a .safetensors or .gguf file, a model directory or an hfmem snapshot (.json, .json.gz)"
    )


def _url_source(url: str, revision: str | None, validate: bool = True) -> Source:
    try:
        parts = urlsplit(url)
    except ValueError as e:  # "Invalid IPv6 URL": a stray bracket in the host
        raise UsageError(f"{url}: not a valid URL ({e})") from None
    segments = [unquote(s) for s in parts.path.strip("/").split("/") if s]
    if parts.hostname in _HUB_HOSTS and segments and segments[0] in ("datasets", "spaces"):
        raise UsageError(f"{url}: hfmem reads model repos, not {segments[0]}")
    if len(segments) < 1:
        raise UsageError(f"{url}: no repo in this URL")
    # org/name, or a bare legacy name such as gpt2 followed by tree/blob/resolve
    if len(segments) >= 2 and segments[1] not in ("tree", "blob", "resolve"):
        repo_id, rest = "/".join(segments[:2]), segments[2:]
    else:
        repo_id, rest = segments[0], segments[1:]
    url_revision: str | None = None
    filename: str | None = None
    if rest:
        if rest[0] not in ("tree", "blob", "resolve") or len(rest) < 2:
            raise UsageError(f"{url}: expected .../tree/<revision> or .../blob/<revision>/<file>")
        tail = rest[1:]
        # refs/pr/N and refs/convert/X are revisions with slashes; the Hub links them unquoted too.
        take = 3 if tail[0] == "refs" and len(tail) >= 3 else 1
        url_revision, file_parts = "/".join(tail[:take]), tail[take:]
        if rest[0] in ("blob", "resolve"):
            if not file_parts:
                raise UsageError(f"{url}: a /blob/ URL names a file after the revision")
            filename = "/".join(file_parts)
            # Segments are unquoted: `%2e%2e` and `%2F` arrive here as `..` and `/`.
            if any(p in ("", ".", "..") for p in filename.split("/")):
                raise UsageError(f"{url}: not a file path inside the repo")
            if not filename.endswith((".safetensors", ".gguf")):
                raise UsageError(f"{url}: only a .safetensors or .gguf file, or a whole repo, can be read")
    if revision and url_revision and revision != url_revision:
        raise UsageError(f"--revision {revision!r} contradicts the URL's revision {url_revision!r}")
    if validate:
        validate_repo_id(repo_id)
    _validate_revision(revision or url_revision)
    return Source(SourceKind.HUB, repo_id=repo_id, revision=revision or url_revision, filename=filename)
