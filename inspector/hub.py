"""The Hub protocol: the only module that builds a Hub URL (requests go out through `transport`).

Round trips, in layers (each waits only on the one before):
  1. the revision API: the commit sha and the file list (tree API, paginated, if the answer has no
     file list);
  2. `resolve/<sha>/...` for config.json, the index and every shard at once; small files come back
     directly, large ones as a redirect to the CDN, which we follow by hand;
  3. the CDN Range reads, each sized from the index's list of that shard's tensors;
  4. only for a header longer than predicted, the rest of it.

The endpoint comes from `HF_ENDPOINT` at call time (mirrors work); the token from `--token`,
`HF_TOKEN` or huggingface_hub's stored login, and is sent to the endpoint's host only: never to a
CDN host, never into the cache.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from .env import (
    endpoint,
)
from .errors import (
    AuthError,
    EntryNotFound,
    GatedRepo,
    NetworkError,
    RepoNotFound,
    RevisionNotFound,
)
from .header import PREFIX_BYTES, Header, parse_header, read_length_prefix
from .transport import Response, Transport, checked_url, redirect_target

if TYPE_CHECKING:
    from .gguf import GGUFHeader

#: First read of a header whose size nothing predicts: gpt2's header is ~14 KB, most single-file
#: models' under 64 KB; a longer one costs one more read.
SPECULATIVE_HEADER_BYTES = 64 * 1024

#: The tree API's pages followed at most (1000 files a page on the Hub): a million files, our policy.
MAX_TREE_PAGES = 1000
#: Sizes and byte positions from a server above this (2**63 - 1) are malformed, not a file.
MAX_FILE_BYTES = 2**63 - 1
#: Connections to the Hub opened while the revision call is in flight, beside its own: the second
#: layer (config.json, the index and the first weight files' redirects) then waits on no TCP and TLS
#: handshakes, two round trips on the real Hub (`bench/run.py --connect-latency`). A model of more
#: files opens the others as its requests go. Our policy: Mistral-7B's second layer (2 JSON, 2 shards).
WARM_CONNECTIONS = 4

SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def hub_url(repo_id: str, *, revision: str, filename: str | None = None, api: str | None = None,
            base: str | None = None) -> str:
    """One URL helper for every request. The revision is quoted whole (`refs/pr/1` -> `refs%2Fpr%2F1`).

    >>> hub_url("org/m", revision="refs/pr/1", filename="config.json", base="https://hf.co")
    'https://hf.co/org/m/resolve/refs%2Fpr%2F1/config.json'
    """
    base = (base or endpoint()).rstrip("/")
    rev = quote(revision, safe="")
    if api is not None:
        return f"{base}/api/models/{repo_id}/{api}/{rev}"
    assert filename is not None
    return f"{base}/{repo_id}/resolve/{rev}/{quote(filename, safe='/')}"


class HubClient(Transport):
    """The Hub protocol over one Transport: where a revision points, the file list, a file, a
    shard's header by Range reads; the Hub's answers mapped to our errors (`raise_for_hub_status`)."""

    # -- Hub calls -----------------------------------------------------------------------------

    def revision_info(self, repo_id: str, revision: str, *, warm: bool = True) -> tuple[str, dict[str, int | None]]:
        """Layer 1: the commit sha a revision points at, and the repo's files (sizes when known);
        `warm`: open the second layer's connections meanwhile."""
        url = hub_url(repo_id, revision=revision, api="revision", base=self.base)
        pinned = bool(SHA_RE.match(revision))
        self._start_building()  # (it runs while this request is in flight, as the warming does)
        if warm and self.api_session is not None:
            self.connections.warm(self.api_session, url, WARM_CONNECTIONS)
        r = self.get(url, what=f"{repo_id}@{revision}", expire_never=pinned, force=self.refresh and not pinned,
                     plain=True)
        raise_for_hub_status(r, repo_id=repo_id, revision=revision, authenticated=bool(self.token))
        info = _json_body(r, f"revision info of {repo_id}")
        sha = info.get("sha")
        if not isinstance(sha, str) or not SHA_RE.match(sha):
            raise NetworkError(f"{repo_id}@{revision}: the Hub's answer has no commit sha")
        siblings = info.get("siblings")
        if isinstance(siblings, list):
            files = _file_list(siblings, "rfilename", f"file list of {repo_id}")
        elif siblings is None:
            files = self.tree(repo_id, sha)
        else:
            raise NetworkError(f"file list of {repo_id}: the server's `siblings` is not a list")
        return sha, files

    def tree(self, repo_id: str, sha: str) -> dict[str, int | None]:
        """The tree API, following its `Link: rel="next"` pagination."""
        files: dict[str, int | None] = {}
        what = f"file list of {repo_id}"
        url: str | None = hub_url(repo_id, revision=sha, api="tree", base=self.base)
        seen: set[str] = set()
        while url:
            if url in seen or len(seen) >= MAX_TREE_PAGES:
                raise NetworkError(f"{what}: the server's pages {'loop' if url in seen else 'never end'} "
                                   f"(after {len(seen)} pages)")
            seen.add(url)
            r = self.get(url, what=what, expire_never=True)
            raise_for_hub_status(r, repo_id=repo_id, revision=sha, authenticated=bool(self.token))
            try:
                entries = json.loads(r.body)
            except (ValueError, RecursionError):
                raise NetworkError(f"{what}: not JSON") from None
            if not isinstance(entries, list):
                raise NetworkError(f"{what}: the server's page is not a JSON list")
            files.update(_file_list([e for e in entries if isinstance(e, dict) and e.get("type") == "file"],
                                    "path", what))
            url = _next_link(r.headers.get("Link"), url, what)
        return files

    def read_file(self, repo_id: str, sha: str, filename: str) -> bytes:
        r = self.get(hub_url(repo_id, revision=sha, filename=filename, base=self.base),
                     what=f"{repo_id}/{filename}", expire_never=True)
        raise_for_hub_status(r, repo_id=repo_id, revision=sha, filename=filename, authenticated=bool(self.token))
        return r.body

    def locate(self, repo_id: str, sha: str, filename: str) -> str | tuple[bytes, int | None]:
        """A shard's first round trip, which needs nothing but its name: where the Hub redirects it
        (the CDN URL), or, from a server that answers directly, its first SPECULATIVE_HEADER_BYTES."""
        url = hub_url(repo_id, revision=sha, filename=filename, base=self.base)
        what = f"{repo_id}/{filename}"
        last = SPECULATIVE_HEADER_BYTES - 1
        r = self.get_once(url, what=what, byte_range=(0, last), expire_never=True, force=False)
        if r.status in (301, 302, 303, 307, 308):
            return redirect_target(url, r.headers.get("Location"), what)
        raise_for_hub_status(r, repo_id=repo_id, revision=sha, filename=filename, authenticated=bool(self.token))
        return _range_body(r, 0, last, what)

    def read_header(self, repo_id: str, sha: str, filename: str, predicted: int,
                    located: str | tuple[bytes, int | None] | None = None) -> Header:
        """One shard's header, read and parsed (see `header_bytes`)."""
        data, file_bytes = self.header_bytes(repo_id, sha, filename, predicted, located)
        return parse_header(data, file_bytes=file_bytes, name=filename)

    def header_bytes(self, repo_id: str, sha: str, filename: str, predicted: int,
                     located: str | tuple[bytes, int | None] | None = None) -> tuple[bytes, int | None]:
        """The rest of one shard: a Range read sized by `predicted` (from where `locate` said), and a
        second only if the header is longer. Returns (the file's first bytes, its size if known)."""
        url = located if isinstance(located, str) else hub_url(repo_id, revision=sha, filename=filename,
                                                               base=self.base)
        what = f"{repo_id}/{filename}"

        def read(first: int, last: int) -> tuple[bytes, int | None]:
            r = self.get(url, what=what, byte_range=(first, last), expire_never=True)
            raise_for_hub_status(r, repo_id=repo_id, revision=sha, filename=filename,
                                 authenticated=bool(self.token))
            return _range_body(r, first, last, what)

        # 1. Prefix and (we hope) the whole header in one read, unless `locate` brought bytes already.
        data, file_bytes = located if isinstance(located, tuple) else read(0, max(predicted, PREFIX_BYTES) - 1)
        n = read_length_prefix(data[:PREFIX_BYTES]) if len(data) >= PREFIX_BYTES else None
        # 2. Compare with the bytes actually received, not the bytes asked for. (Too short a file
        # is refused by the parser, which names it.)
        if n is not None and len(data) < PREFIX_BYTES + n and (file_bytes is None or len(data) < file_bytes):
            rest, _ = read(len(data), PREFIX_BYTES + n - 1)
            data += rest
        return data, file_bytes


    def gguf_header(self, repo_id: str, sha: str, filename: str) -> GGUFHeader:
        """A GGUF file's header: the redirect, then Range reads that grow, each continuing the last,
        to the tensor table's end (gguf.read_gguf_header: one read for most models, two for a
        128k-256k vocabulary's tokenizer arrays), never past gguf.MAX_HEADER_BYTES."""
        from .gguf import read_gguf_header

        what = f"{repo_id}/{filename}"
        located = self.locate(repo_id, sha, filename)
        url = located if isinstance(located, str) else hub_url(repo_id, revision=sha, filename=filename,
                                                               base=self.base)
        size: list[int | None] = [located[1] if isinstance(located, tuple) else None]
        given = located[0] if isinstance(located, tuple) else b""

        def read(start: int, end: int) -> bytes:
            if end <= len(given):
                return given[start:end]
            r = self.get(url, what=what, byte_range=(start, end - 1), expire_never=True)
            raise_for_hub_status(r, repo_id=repo_id, revision=sha, filename=filename, authenticated=bool(self.token))
            body, size[0] = _range_body(r, start, end - 1, what)
            return body

        return read_gguf_header(read, file_bytes=size[0], name=filename)


def _range_body(r: Response, first: int, last: int, what: str) -> tuple[bytes, int | None]:
    """(bytes starting at `first`, file size) from a 206 or a 200 that ignored the Range."""
    if r.status == 206:
        # (19 digits at most: a 400-digit position is no file's; int() of 4,300 digits raises)
        m = re.fullmatch(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)", r.headers.get("Content-Range", ""))
        size = int(m[3]) if m and m[3] != "*" else None
        if (not m or int(m[1]) != first or int(m[2]) > last or int(m[2]) - int(m[1]) + 1 != len(r.body)
                or size is not None and not int(m[2]) < size <= MAX_FILE_BYTES):
            raise NetworkError(f"{what}: the server's Content-Range does not match what it sent")
        return r.body, size
    if r.status == 200:
        length = r.headers.get("Content-Length") or ""
        valid = re.fullmatch(r"[0-9]{1,19}", length) and int(length) <= MAX_FILE_BYTES
        return r.body[first : last + 1], int(length) if valid else None
    if r.status == 416:
        return b"", None  # the file is shorter than the range start
    raise NetworkError(f"{what}: unexpected HTTP {r.status}")


def _next_link(link: str | None, current: str, what: str = "file list") -> str | None:
    if not link:
        return None
    m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    return checked_url(current, m[1], what, "a next page at") if m else None


def _file_list(entries: list[Any], key: str, what: str) -> dict[str, int | None]:
    """{name: size or None} of the API's file entries; a name that is no plain relative path (not
    a string, `..`, absolute, a control character) or a size that is no byte count is a broken
    answer (exit 7): a name goes into URLs and file names."""
    files: dict[str, int | None] = {}
    for e in entries:
        if not isinstance(e, dict) or key not in e:
            continue
        name, size = e[key], e.get("size")
        if not (isinstance(name, str) and name.isprintable() and "\\" not in name and len(name) <= 1000
                and all(p not in ("", ".", "..") for p in name.split("/"))):
            raise NetworkError(f"{what}: the server names a file {str(name)[:60]!r}, which is no file name in a repo")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or not 0 <= size <= MAX_FILE_BYTES):
            raise NetworkError(f"{what}: the server gives {name[:60]!r} the size {str(size)[:30]!r}")
        files[name] = size
    return files


def _json_body(r: Response, what: str) -> dict[str, Any]:
    try:
        value = json.loads(r.body)
    except ValueError:
        raise NetworkError(f"{what}: the server's answer is not JSON") from None
    if not isinstance(value, dict):
        raise NetworkError(f"{what}: the server's answer is not a JSON object")
    return value


def raise_for_hub_status(r: Response, *, repo_id: str, revision: str, filename: str | None = None,
                         authenticated: bool) -> None:
    """The one place that turns the Hub's status and `X-Error-Code` into our error types
    (the codes huggingface_hub's `hf_raise_for_status` reads)."""
    if r.status < 400:
        return
    code = r.headers.get("X-Error-Code", "")
    message = r.headers.get("X-Error-Message", "")
    page = f"{endpoint_of(r.url)}/{repo_id}"
    if code == "GatedRepo":
        if authenticated:
            raise GatedRepo(f"{repo_id} is gated and your token has no access: request it at {page}")
        raise GatedRepo(f"{repo_id} is gated: request access at {page}, then set HF_TOKEN (or run `hf auth login`)")
    if code == "RevisionNotFound":
        raise RevisionNotFound(f"revision {revision!r} not found in {repo_id}")
    if code == "EntryNotFound":
        raise EntryNotFound(f"{repo_id} has no file {filename!r} at {revision}")
    if code == "RepoNotFound" or r.status == 404 and not filename:
        hint = "" if authenticated else " (if it is private, set HF_TOKEN)"
        raise RepoNotFound(f"repo {repo_id} not found on {endpoint_of(r.url)}{hint}")
    if r.status == 401:
        if "Invalid credentials" in message or authenticated:
            raise AuthError("the Hub refused the token (invalid or expired): check HF_TOKEN or run `hf auth login`")
        raise RepoNotFound(f"repo {repo_id} not found on {endpoint_of(r.url)} (if it is private, set HF_TOKEN)")
    if r.status == 403:
        raise AuthError(f"access to {repo_id} denied: {message or 'forbidden'}")
    if r.status == 404:
        raise EntryNotFound(f"{repo_id} has no file {filename!r} at {revision}")
    raise NetworkError(f"{repo_id}: the Hub answered HTTP {r.status}{': ' + message if message else ''}")


def endpoint_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- the whole read ---------------------------------------------------------------------------


def predict_header_bytes(tensor_names: list[str]) -> int:
    """Predict a shard's header length from the names the index lists for it.

    Each entry is `"name":{"dtype":"BF16","shape":[..],"data_offsets":[..,..]},`: the name plus
    about 85 bytes for a 2-D shape of 4-digit dims and 12-digit offsets; plus the `__metadata__` entry and 8 bytes
    of length prefix. Slightly generous so a second read is rare.
    """
    return PREFIX_BYTES + 128 + sum(len(n) + 90 for n in tensor_names)


