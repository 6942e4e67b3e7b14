"""The only module that builds a Hub URL or sends a request.

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
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from .cache import BRANCH_TTL_S
from .checkpoint import (
    METADATA_FILES,
    Checkpoint,
    load_config_json,
    plan_weights,
    quantization_config,
    shards_from_index,
)
from .env import (
    endpoint,
    env_int,
    offline_requested,
    resolve_token,
)
from .errors import (
    AuthError,
    EntryNotFound,
    GatedRepo,
    NetworkError,
    OfflineMiss,
    RepoNotFound,
    RevisionNotFound,
)
from .header import PREFIX_BYTES, Header, LazyHeaders, parse_header, read_length_prefix
from .source import Source
from .store import commit_snapshot, from_hf_cache, load_saved, snapshot_writer, with_warnings
from .transport import DEFAULT_CONCURRENCY, Response, Transport, checked_url, redirect_target

if TYPE_CHECKING:

    from .checkpoint import SnapshotWriter
    from .params import CountContext, FileTally
    from .workers import Parsed

#: First read of a header whose size nothing predicts: gpt2's header is ~14 KB, most single-file
#: models' under 64 KB; a longer one costs one more read.
SPECULATIVE_HEADER_BYTES = 64 * 1024

#: The tree API's pages followed at most (1000 files a page on the Hub): a million files, our policy.
MAX_TREE_PAGES = 1000
#: How long past the --timeout deadline a wait on a stuck thread or worker lasts before the read
#: gives up on it (its request is cut at the deadline; this covers the cut's own round). Our policy.
DEADLINE_SLACK_S = 2.0
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


def read_hub(source: Source, *, token: str | bool | None = None, offline: bool | None = None,
             refresh: bool = False, concurrency: int | None = None,
             progress: Callable[[int, int], None] | None = None, deadline: float | None = None) -> Checkpoint:
    """Read a Hub repo's metadata into a Checkpoint in as few sequential round trips as possible."""
    from . import store

    assert source.repo_id is not None
    repo_id = source.repo_id
    revision = source.revision or "main"
    offline = offline_requested() if offline is None else offline
    warnings: list[str] = []

    # The repo id is checked by huggingface_hub (`validate_repo_id`, whose import is a fifth of a
    # warm run) after the saved snapshots are looked for: one found was saved for an id checked
    # then. An id that could name a path outside the cache is checked before.
    from .source import validate_repo_id

    if not store.is_folder_name(repo_id):
        validate_repo_id(repo_id)
    # 0. Pinned to a sha we have read before: the saved snapshot answers with no request at all.
    pinned = revision if SHA_RE.match(revision) else None
    if offline and not pinned:
        pinned = store.load_ref(repo_id, revision)
        if pinned:
            warnings.append(f"offline: using {revision} as last resolved ({pinned[:12]}); it may be stale")
    if pinned and not refresh and not source.filename:
        saved = load_saved(repo_id, pinned, revision, warnings)
        if saved is not None:
            return with_warnings(saved, warnings)
    if not pinned and not offline and not refresh and not source.filename:
        # A branch resolved within BRANCH_TTL_S, whose commit we have read: no request at all (and
        # no HTTP library imported).
        recent = store.load_ref(repo_id, revision, max_age_s=BRANCH_TTL_S)
        saved = load_saved(repo_id, recent, revision, warnings) if recent else None
        if saved is not None:
            return with_warnings(saved, warnings)
    validate_repo_id(repo_id)  # before the HF cache, and before the Hub
    if offline:
        local = from_hf_cache(repo_id, revision)
        if local is not None:
            return local
        if not pinned:
            raise OfflineMiss(f"offline and {repo_id}@{revision} was never read online: run once without --offline")

    from .workers import Parsed, WorkerPool, configured_workers, parse_shard

    workers = max(1, concurrency or env_int("HFMEM_CONCURRENCY", DEFAULT_CONCURRENCY))
    client = HubClient(token=resolve_token(token), offline=offline, refresh=refresh, concurrency=workers,
                       deadline=deadline)
    warnings += client.warnings
    # 1. sha and file list
    # A branch still pointing at a commit we have read needs no second layer: no connection is
    # opened for one when the branch last pointed at such a commit (most runs past BRANCH_TTL_S).
    last = None if pinned or refresh or source.filename else store.load_ref(repo_id, revision)
    sha, files = client.revision_info(repo_id, pinned or revision,
                                      warm=not (last and store.snapshot_path(repo_id, last).is_file()))
    if not pinned:
        store.save_ref(repo_id, revision, sha)  # (the revision call is never answered from the cache)
        # A branch that still points at a commit we have read: nothing more to fetch.
        if not refresh and not source.filename:
            saved = load_saved(repo_id, sha, revision, warnings)
            if saved is not None:
                return with_warnings(saved, warnings)
    if source.filename:
        if source.filename not in files:
            raise EntryNotFound(f"{repo_id} has no file {source.filename!r} at {revision}")
        listing = {source.filename: files[source.filename]}
        plan = plan_weights(listing)
        wanted_json = [n for n in METADATA_FILES if n in files]
    else:
        listing = dict(files)
        plan = plan_weights(listing)
        wanted_json = [n for n in (*METADATA_FILES, plan.index_file) if n and n in files]

    # The commit's snapshot is written as the headers arrive, and put in place once everything is
    # read and valid. Headers are parsed in one parsing thread or, for a model of more than one wave
    # of shards, in worker processes (inspector/workers.py), while the request threads go on.
    with (snapshot_writer(repo_id, revision, sha, warnings) if not source.filename else nullcontext()) as snapshot, \
            stopping_executor(1, deadline) as parser, WorkerPool(deadline) as processes:
        # The JSON files, and the tasks that parse them, have threads of their own beside the shard
        # readers': on a reader thread, a JSON read put that thread's chain of shards one round trip
        # behind the others, and DeepSeek-V3's 163 shards over 64 threads took 8 layers, not 7.
        with stopping_executor(len(wanted_json) + 2, deadline) as meta, \
                stopping_executor(max(1, workers), deadline) as pool:
            # 2. every small JSON file at once
            json_futures: dict[str, Future[bytes]] = {
                n: meta.submit(client.read_file, repo_id, sha, n) for n in wanted_json
            }
            json_files: dict[str, Any] = {}
            headers = LazyHeaders()
            tallies: dict[str, FileTally] = {}
            sizes: dict[str, int | None] = {}
            grouped: Future[dict[str, list[str]]] | None = None
            if plan.format == "safetensors":
                candidates = list(plan.files) or [
                    n for n in listing if n.endswith(".safetensors") and "/" not in n
                ]
                # The index is parsed and grouped by shard once, by whichever shard task needs it
                # first; it was submitted first, so no task waits on one that cannot start. Worker
                # processes start once it is read (by its shard and tensor counts; without an index,
                # by the listing's), a round trip before the first header arrives: not beside the
                # second layer's requests, whose sending they would slow down (~0.1 s of CPU each).
                if plan.index_file and plan.index_file in json_futures:
                    def group() -> dict[str, list[str]]:
                        assert plan.index_file is not None
                        by_shard = _tensors_by_shard(json_futures[plan.index_file], plan.index_file, json_files)
                        wanted = configured_workers(len(by_shard), sum(map(len, by_shard.values())))
                        if wanted:  # started by the parsing thread, idle until headers arrive: every
                            parser.submit(processes.start, wanted)  # shard task waits on this one
                        return by_shard

                    grouped = meta.submit(group)
                else:
                    parser.submit(processes.start, configured_workers(len(candidates)))

                # How tensors count depends on config.json (and a quantization config): known by the
                # time the first header arrives, so each shard is tallied as it arrives, in the time
                # other reads are in flight, not all 92,000 tensors of DeepSeek-V3 after the last one.
                context = meta.submit(_count_context, json_futures, json_files)

                failed = threading.Event()

                def shard_task(name: str) -> tuple[bytes, Future[Parsed]] | None:
                    # Once one shard has failed the read is over: a thread that picks up the next
                    # shard before the failure reaches this thread (and cancels the queue) sends
                    # nothing. (The failed shard's future still holds its error, raised below.)
                    if failed.is_set():
                        return None
                    try:
                        return read_one_shard(name)
                    except BaseException:
                        failed.set()
                        raise

                def read_one_shard(name: str) -> tuple[bytes, Future[Parsed]] | None:
                    # The redirect needs only the name, so it travels beside config.json and the index;
                    # the CDN read waits for the index, which sizes it. The bytes are handed to the
                    # parsing thread or a worker process, and this thread goes on to its next request
                    # at once. (Parsing in the request thread itself, each wave of 64 DeepSeek-V3
                    # shards queued ~0.3 s of CPU before any thread sent its next request.)
                    located = client.locate(repo_id, sha, name)
                    predicted = SPECULATIVE_HEADER_BYTES
                    if grouped is not None:
                        names = grouped.result().get(name)
                        if not names:
                            return None  # a .safetensors file the index does not use
                        predicted = predict_header_bytes(names)
                    data, file_bytes = client.header_bytes(repo_id, sha, name, predicted, located)
                    if processes.started:
                        return data, processes.submit(name, data, file_bytes, context.result())
                    return data, parser.submit(parse_shard, name, data, file_bytes, context.result())

                shard_futures = {n: pool.submit(shard_task, n) for n in candidates}
                done = 0
                for name, fut in shard_futures.items():
                    task = _result(fut, deadline, repo_id)
                    if task is not None:
                        data, parsing = task
                        parsed = processes.wait(parsing)
                        _keep(headers, snapshot, name, parsed, data)
                        sizes[name] = parsed.file_bytes
                        if parsed.tally is not None:
                            tallies[name] = parsed.tally
                    done += 1
                    if progress:
                        progress(done, len(shard_futures))
            if grouped is not None:
                _result(grouped, deadline, repo_id)  # the index, parsed by the grouping task (its error shows here)
            for name, json_fut in json_futures.items():
                if name not in json_files:
                    json_files[name] = load_config_json(_result(json_fut, deadline, repo_id), name)
            json_files = {n: json_files[n] for n in json_futures}  # in a stable order
            if plan.format == "safetensors" and plan.index_file:
                # A shard the index names but whose name the file list did not suggest: read it now.
                index = json_files[plan.index_file]
                extra = [s for s in shards_from_index(index, plan.index_file) if s not in headers]
                for s in extra:
                    if s not in files:
                        raise EntryNotFound(f"{repo_id}: {plan.index_file} names {s!r}, which is not in the repo")
                def read_extra(shard: str) -> Header:
                    return client.read_header(repo_id, sha, shard, SPECULATIVE_HEADER_BYTES)

                for s, h in zip(extra, pool.map(read_extra, extra), strict=True):
                    _keep(headers, snapshot, s, Parsed(h.header_bytes, h.file_bytes, None, h))
                    sizes[s] = h.file_bytes

        for name, file_bytes in sizes.items():
            listing[name] = file_bytes if file_bytes is not None else listing.get(name)
        cp = Checkpoint(
            name=repo_id if not source.filename else f"{repo_id}/{source.filename}",
            files=listing,
            json_files=json_files,
            headers=headers,
            plan=plan,
            repo_id=repo_id,
            revision=revision,
            sha=sha,
            warnings=tuple(dict.fromkeys([*warnings, *client.warnings])),
            tallies=tallies,
        )
        _ = cp.weight_files  # validates the index before anything is saved
        cp = commit_snapshot(cp, snapshot, {n: f.result() for n, f in json_futures.items()})
    return cp


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


def _result(future: Future[Any], deadline: float | None, what: str) -> Any:
    """A future's result, waited for until the deadline and DEADLINE_SLACK_S more at most: every
    request is cut at the deadline, so a task still running then is stuck (a DNS lookup, a lock)."""
    if deadline is None:
        return future.result()
    from concurrent.futures import TimeoutError as FutureTimeout  # (3.10: not the builtin)

    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()) + DEADLINE_SLACK_S)
    except FutureTimeout:
        raise NetworkError(f"{what}: gave up at the --timeout deadline (a read did not end)") from None


def _tensors_by_shard(index_bytes: Future[bytes], index_file: str, parsed: dict[str, Any]) -> dict[str, list[str]]:
    """The index's tensor names by shard; the parsed index is left in `parsed` (parsed once)."""
    index = parsed[index_file] = load_config_json(index_bytes.result(), index_file)
    by_shard: dict[str, list[str]] = {}
    weight_map = index.get("weight_map")
    for tensor, shard in (weight_map.items() if isinstance(weight_map, dict) else ()):
        by_shard.setdefault(str(shard), []).append(str(tensor))
    return by_shard


def _count_context(json_futures: Mapping[str, Future[bytes]], parsed: dict[str, Any]) -> CountContext | None:
    """The counting context from config.json and any quantization config; None when one of them
    cannot be read (its error is raised where the files are parsed, and nothing is tallied early)."""
    from .params import count_context

    try:
        for name in METADATA_FILES:
            if name in json_futures:
                parsed[name] = load_config_json(json_futures[name].result(), name)
        config = parsed.get("config.json")
        return count_context(config if isinstance(config, dict) else {}, quantization_config(parsed))
    except Exception:  # noqa: BLE001 - raised again, in its place, when the files are parsed
        return None


def _keep(headers: LazyHeaders, snapshot: SnapshotWriter | None, name: str, parsed: Parsed,
          data: bytes = b"") -> None:
    """Keep a parsed shard's header: written to the snapshot being saved (as the file holds it; an
    unwritable cache only costs speed), and in `headers`, as the Header when it was parsed here, else
    as its bytes (`data`, parsed here again only if asked for)."""
    h = parsed.header
    if snapshot is not None and not snapshot.failed:
        text = h.raw if h is not None and h.raw is not None else None
        if text is None and data:
            text = data[PREFIX_BYTES : PREFIX_BYTES + parsed.header_bytes]
        try:
            if text is not None:
                snapshot.add_text(name, parsed.header_bytes, text)
            elif h is not None:
                snapshot.add(name, h)
        except OSError:
            pass
    if h is not None:
        headers.add(name, replace(h, raw=None) if h.raw is not None else h)
    else:
        headers.add_bytes(name, data, parsed.file_bytes)


